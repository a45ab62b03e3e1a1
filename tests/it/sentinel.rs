//! Redis through Sentinel: the primary is killed in the middle of a stream
//! that two service processes deliver to three webhooks on one host; a
//! Sentinel promotes the replica, and the service follows without a restart. The
//! primary, replica and three Sentinels are started on loopback by
//! `scripts/redis-sentinel.sh` and stopped again.

use std::time::Duration;

use std::collections::HashSet;

use deadpool_redis::redis::{self, AsyncCommands};
use serde_json::{Value, json};

use crate::common::receiver::Receiver;
use crate::common::servers::Servers;
use crate::common::{Namespace, OPERATOR, Producer, binary, eventually};

/// The primary, replica and Sentinels of `scripts/redis-sentinel.sh`
/// (primary on `port`, replica on `port + 1`).
struct Harness(Servers);

impl Harness {
    /// Starts the servers (the test fails where they cannot; see [`Servers::start`]).
    fn start() -> Option<Harness> {
        Servers::start("redis-sentinel.sh", 20_000, 5, None).map(Harness)
    }

    fn sentinels(&self) -> &str {
        self.0.printed("WF_REDIS_SENTINELS")
    }

    /// SIGKILL of the primary.
    fn kill_primary(&self) {
        self.0.kill(&format!("redis-{}.pid", self.0.port));
    }

    fn replica_url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.0.port + 1)
    }
}

async fn ready(base: &str) -> bool {
    reqwest::get(format!("{base}/readyz"))
        .await
        .is_ok_and(|r| r.status() == 200)
}

/// Polls `/readyz` from now on: (when it turned 503, when it turned 200
/// again), from the start of the watch.
async fn watch_readiness(base: String) -> (Duration, Duration) {
    let start = std::time::Instant::now();
    let down = eventually(Duration::from_secs(20), "/readyz 503", || async {
        (!ready(&base).await).then(|| start.elapsed())
    })
    .await;
    let up = eventually(Duration::from_secs(30), "/readyz 200 again", || async {
        ready(&base).await.then(|| start.elapsed())
    })
    .await;
    (down, up)
}

async fn create(base: &str, url: &str) -> Option<Value> {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/applications/app_s/webhooks"))
        .bearer_auth(OPERATOR)
        .body(json!({"url": url, "events": ["item.created"]}).to_string())
        .send()
        .await
        .ok()?;
    match r.status().as_u16() {
        201 => r.json().await.ok(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_primary_is_replaced_and_followed_without_a_restart() {
    let Some(h) = Harness::start() else {
        return;
    };
    let ns = Namespace::new();
    // The webhooks, hence the backlogs to delete, are in the Sentinel set
    // (the replica is the primary by the end).
    crate::common::note_redis(&ns, &h.replica_url());
    let extra = [
        ("WF_REDIS_SENTINELS", h.sentinels()),
        ("WF_REDIS_SENTINEL_MASTER", "wfmaster"),
        ("WF_RETRY_SCHEDULE", "300ms"),
    ];
    let procs = [binary::spawn(&ns, &extra), binary::spawn(&ns, &extra)];
    binary::wait_ready(&procs[0].base).await;
    binary::wait_ready(&procs[1].base).await;
    let api = procs[0].base.clone();
    let rx = Receiver::start(200).await;
    let mut before = Vec::new();
    for path in ["/0", "/1", "/2"] {
        before.push(create(&api, &rx.url(path)).await.expect("webhook created"));
    }
    let producer = Producer::connect(&ns).await;

    // 3,000 events to three webhooks; the primary dies after the first 1,000.
    const EVENTS: usize = 3_000;
    let ids: Vec<String> = (0..EVENTS).map(|i| format!("ev-s-{i}")).collect();
    let mut readiness = None;
    for (n, id) in ids.iter().enumerate() {
        if n == 1_000 {
            h.kill_primary();
            readiness = Some(tokio::spawn(watch_readiness(api.clone())));
        }
        producer
            .event(id, "app_s", "item.created", json!({"n": n}))
            .await;
    }
    let (down, up) = readiness.unwrap().await.unwrap();
    println!("Redis primary killed: /readyz 503 after {down:?}, 200 again after {up:?}");
    for path in ["/0", "/1", "/2"] {
        eventually(
            Duration::from_secs(120),
            "every event at every webhook",
            || async {
                let got: HashSet<String> =
                    rx.at(path).iter().map(|r| r.header("webhook-id")).collect();
                ids.iter().all(|id| got.contains(id)).then_some(())
            },
        )
        .await;
        let received = rx.at(path).len();
        println!(
            "webhook {path}: {EVENTS} events, {received} deliveries, {} duplicates",
            received - EVENTS
        );
    }

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
        create(&procs[1].base, &rx.url("/after")).await
    })
    .await;
    let key = format!("{ns}:webhooks:app_s");
    for hook in before.iter().chain([&after]) {
        let stored: bool = replica
            .hexists(&key, hook["id"].as_str().unwrap())
            .await
            .unwrap();
        assert!(stored, "{} is on the new primary", hook["id"]);
    }
    // The webhook created after the failover delivers too.
    producer
        .event("ev-s-after", "app_s", "item.created", json!({}))
        .await;
    let got = rx.wait_for("/after", 1).await;
    assert_eq!(got[0].header("webhook-id"), "ev-s-after");
    producer.close().await;
}
