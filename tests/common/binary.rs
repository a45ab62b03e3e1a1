//! The real binary as a child process, configured like the in-process
//! service of `TestService` (test defaults, real RabbitMQ and Redis).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{OPERATOR, amqp_url, eventually, redis_url};

/// A free local TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary's environment for namespace `ns`: test defaults, then `extra`.
pub fn env(ns: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = [
        ("WF_NAMESPACE", ns),
        ("WF_ADMIN_TOKEN", OPERATOR),
        ("WF_ALLOW_HTTP", "true"),
        ("WF_ALLOW_PRIVATE_TARGETS", "true"),
        ("WF_SHUTDOWN_TIMEOUT", "5s"),
        ("RUST_LOG", "warn"),
        // Breakers get their own tests; a test's failing receiver must not trip one.
        ("WF_CIRCUIT_BREAKER_THRESHOLD", "10000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    vars.push(("WF_AMQP_URL".into(), amqp_url()));
    vars.push(("WF_REDIS_URL".into(), redis_url()));
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    vars
}

/// Starts `webhook-fanout serve` on `port`; its logs go to `stderr`.
pub fn spawn(ns: &str, port: u16, extra: &[(&str, &str)], stderr: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_webhook-fanout"))
        .arg("serve")
        .envs(env(ns, extra))
        .env("WF_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Waits until the process at `base` answers `/readyz` with 200.
pub async fn wait_ready(base: &str) {
    let http = reqwest::Client::new();
    eventually(
        Duration::from_secs(20),
        "the binary to be ready",
        || async {
            let r = http.get(format!("{base}/readyz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
}

/// The value of one sample in a Prometheus text exposition; 0 when absent.
pub fn sample(exposition: &str, sample: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map_or(0.0, |v| v.trim().parse().unwrap())
}
