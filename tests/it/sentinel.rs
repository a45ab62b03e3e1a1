//! Redis through Sentinel: the primary is killed under traffic, a Sentinel
//! promotes the replica, and the service follows without a restart. The
//! primary, replica and three Sentinels are started on loopback by
//! `scripts/redis-sentinel.sh` and stopped again.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use deadpool_redis::redis::{self, AsyncCommands};
use serde_json::json;

use crate::common::{Fixture, OPERATOR, TestService, eventually};

/// The servers of `scripts/redis-sentinel.sh`, stopped when dropped.
struct Harness {
    dir: PathBuf,
    port: u16,
    sentinels: String,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/redis-sentinel.sh")
}

/// Five consecutive loopback ports nobody listens on, from a random start.
fn free_ports() -> u16 {
    loop {
        let base = 20_000 + rand::random_range(0..2_000u16) * 5;
        let free = (0..5).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return base;
        }
    }
}

impl Harness {
    /// Starts the servers; none (with the reason printed) where they cannot.
    fn start() -> Option<Harness> {
        let port = free_ports();
        let dir = std::env::temp_dir().join(format!("wf-sentinel-{port}"));
        let out = Command::new(script())
            .args(["start", dir.to_str().unwrap(), &port.to_string()])
            .output()
            .expect("run scripts/redis-sentinel.sh");
        if out.status.code() == Some(3) {
            println!("SKIPPED: redis-server is not installed, the Sentinel test cannot run");
            return None;
        }
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "the Sentinel harness starts: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sentinels = stdout
            .lines()
            .find_map(|l| l.strip_prefix("WF_REDIS_SENTINELS="))
            .expect("the harness names its Sentinels")
            .to_string();
        Some(Harness {
            dir,
            port,
            sentinels,
        })
    }

    /// SIGKILL of the primary.
    fn kill_primary(&self) {
        let pid =
            std::fs::read_to_string(self.dir.join(format!("redis-{}.pid", self.port))).unwrap();
        let killed = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        assert!(killed.success());
    }

    fn replica_url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port + 1)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .args(["stop", self.dir.to_str().unwrap()])
            .status();
    }
}

async fn ready(svc: &TestService) -> bool {
    reqwest::get(format!("{}/readyz", svc.base))
        .await
        .is_ok_and(|r| r.status() == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_primary_is_replaced_and_followed_without_a_restart() {
    let Some(h) = Harness::start() else {
        return;
    };
    let f = Fixture::start(&[
        ("WF_REDIS_SENTINELS", &h.sentinels),
        ("WF_REDIS_SENTINEL_MASTER", "wfmaster"),
    ])
    .await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    let before = svc
        .webhook("app_s", &rx.url("/before"), &["item.created"])
        .await;
    producer
        .event("ev-s-0", "app_s", "item.created", json!({}))
        .await;
    rx.wait_for("/before", 1).await;

    let killed = std::time::Instant::now();
    h.kill_primary();
    eventually(Duration::from_secs(20), "/readyz 503", || async {
        (!ready(svc).await).then_some(())
    })
    .await;
    eventually(Duration::from_secs(30), "/readyz 200 again", || async {
        ready(svc).await.then_some(())
    })
    .await;
    println!(
        "Redis primary killed: ready again after {:?}",
        killed.elapsed()
    );

    // The replica is the primary now, and takes the service's writes.
    let mut replica = redis::Client::open(h.replica_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut replica).await.unwrap();
    assert_eq!(
        role[0],
        redis::Value::BulkString(b"master".to_vec()),
        "{role:?}"
    );
    let after = eventually(Duration::from_secs(20), "a webhook created", || async {
        let (status, body) = svc
            .call(
                "POST",
                "/v1/applications/app_s/webhooks",
                Some(OPERATOR),
                Some(json!({"url": rx.url("/after"), "events": ["item.created"]})),
            )
            .await;
        (status == 201).then_some(body)
    })
    .await;
    let key = format!("{}:webhooks:app_s", svc.ns);
    let stored: bool = replica
        .hexists(&key, after["id"].as_str().unwrap())
        .await
        .unwrap();
    assert!(
        stored,
        "the webhook created after the failover is on the new primary"
    );
    assert!(
        replica
            .hexists::<_, _, bool>(&key, before["id"].as_str().unwrap())
            .await
            .unwrap(),
        "the one from before was replicated"
    );

    // Both webhooks deliver: the one from before the failover, and the new one.
    producer
        .event("ev-s-1", "app_s", "item.created", json!({}))
        .await;
    rx.wait_for("/after", 1).await;
    let got = rx.wait_for("/before", 2).await;
    assert_eq!(got[1].header("webhook-id"), "ev-s-1");
    f.stop().await;
}
