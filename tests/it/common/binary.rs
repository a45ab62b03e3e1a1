//! The real binary as a child process, configured like the in-process
//! service of `TestService` (test defaults, real RabbitMQ and Redis).

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{OPERATOR, amqp_url, eventually, redis_url};

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
    if let Some((_, schedule)) = vars.iter().rev().find(|(k, _)| k == "WF_RETRY_SCHEDULE") {
        super::note_schedule(ns, schedule);
    }
    vars
}

/// A child process that is killed when dropped, so a failing test never
/// leaves a service running (it would hold its namespace's queues).
pub struct Process(Child);

impl std::ops::Deref for Process {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Process {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A running `webhook-fanout serve`.
pub struct Spawned {
    pub child: Process,
    /// `http://127.0.0.1:<port>`, the port the process bound itself.
    pub base: String,
    /// Every line it wrote to stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
    pub tail: LogTail,
}

/// Prints what a process logged last when the test holding it fails
/// (without `WF_TEST_LOG`, nothing else would show it).
pub struct LogTail {
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for LogTail {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let all = self.log.lock().unwrap_or_else(|e| e.into_inner());
        // A standby's refused hold is logged by lapin every second and
        // would fill the tail.
        let lines: Vec<&String> = all
            .iter()
            .filter(|l| !l.contains("RESOURCE_LOCKED"))
            .collect();
        let from = lines.len().saturating_sub(LOG_TAIL);
        eprintln!(
            "--- the last {} lines of {} (refused holds left out) ---",
            lines.len() - from,
            self.base
        );
        for line in &lines[from..] {
            eprintln!("{line}");
        }
    }
}

/// How many of a process's last lines a failing test prints.
const LOG_TAIL: usize = 150;

/// Starts `webhook-fanout serve` on a port it binds itself (port 0: no
/// probe-and-release race between parallel tests) and learns the port from
/// its "listening on" line. Its stderr is kept in `log` (and echoed when
/// `WF_TEST_LOG` is set).
pub fn spawn(ns: &str, extra: &[(&str, &str)]) -> Spawned {
    let mut child = Command::new(env!("CARGO_BIN_EXE_webhook-fanout"))
        .arg("serve")
        .env("WF_HTTP_ADDR", "127.0.0.1:0")
        .envs(env(ns, extra))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, addr) = std::sync::mpsc::channel();
    let lines = log.clone();
    let echo = std::env::var_os("WF_TEST_LOG").is_some();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(at) = line.split("listening on http://").nth(1) {
                let addr: String = at
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || ".:[]".contains(*c))
                    .collect();
                let _ = tx.send(addr);
            }
            if echo {
                eprintln!("[child] {line}");
            }
            lines.lock().unwrap().push(line);
        }
    });
    let addr = addr
        .recv_timeout(Duration::from_secs(20))
        .expect("the binary says where it listens");
    let base = format!("http://{addr}");
    Spawned {
        child: Process(child),
        tail: LogTail {
            base: base.clone(),
            log: log.clone(),
        },
        base,
        log,
    }
}

/// One sample of the `/metrics` of the process at `base` (0 when absent).
pub async fn metric(base: &str, sample: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    self::sample(&text, sample)
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
