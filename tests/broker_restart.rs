//! RabbitMQ itself restarted under load (`rabbitmqctl stop_app` /
//! `start_app`): durable queues and persistent messages come back, the
//! service reconnects on its own, and every event is delivered.
//!
//! Alone in its test binary because it stops the broker every test shares;
//! cargo runs test binaries one after another.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use common::receiver::Receiver;
use common::{Producer, TestService, eventually};
use serde_json::json;

/// `rabbitmqctl` on this machine, or inside the Compose service.
fn rabbitmqctl(args: &[&str]) {
    let local = ["/usr/sbin/rabbitmqctl", "rabbitmqctl"]
        .into_iter()
        .find(|c| Command::new(c).arg("--help").output().is_ok());
    let status = match local {
        Some(ctl) => Command::new(ctl).args(args).output(),
        None => Command::new("docker")
            .args(["compose", "exec", "-T", "rabbitmq", "rabbitmqctl"])
            .args(args)
            .output(),
    }
    .expect("rabbitmqctl (local or in the Compose service) is needed for this test");
    assert!(
        status.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_under_load_loses_nothing() {
    let svc = TestService::start(&[("WF_RETRY_SCHEDULE", "200ms")]).await;
    let rx = Receiver::start(200).await;
    svc.webhook("app_rr", &rx.url("/rr"), &["item.refreshed"])
        .await;
    let ids: Vec<String> = (0..200).map(|i| format!("ev-rr-{i}")).collect();

    let producer = Producer::connect(&svc.ns).await;
    for id in &ids[..150] {
        producer
            .event(id, "app_rr", "item.refreshed", json!({}))
            .await;
    }
    producer.close().await;
    rx.wait_for("/rr", 1).await;
    rabbitmqctl(&["stop_app"]);
    eventually(
        Duration::from_secs(20),
        "not ready while the broker is down",
        || async { (svc.call("GET", "/readyz", None, None).await.0 == 503).then_some(()) },
    )
    .await;
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
    svc.wait_ready().await;

    let producer = Producer::connect(&svc.ns).await;
    for id in &ids[150..] {
        producer
            .event(id, "app_rr", "item.refreshed", json!({}))
            .await;
    }
    eventually(Duration::from_secs(60), "every event delivered", || async {
        let got: HashSet<String> = rx
            .at("/rr")
            .iter()
            .map(|r| r.header("webhook-id"))
            .collect();
        ids.iter().all(|id| got.contains(id)).then_some(())
    })
    .await;

    producer.close().await;
    svc.stop().await;
}
