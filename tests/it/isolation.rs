//! Isolation: a hanging endpoint's jobs wait in its own backlog, and a
//! failing one is short-circuited until a probe succeeds.

use std::time::Duration;

use crate::common::receiver::Receiver;
use crate::common::{Fixture, Producer, eventually};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_is_capped_and_the_others_keep_flowing() {
    let svc = Fixture::service(&[
        ("WF_ENDPOINT_CONCURRENCY", "2"),
        ("WF_DELIVERY_CONCURRENCY", "16"),
        ("WF_DELIVERY_TIMEOUT", "20s"),
        ("WF_SHUTDOWN_TIMEOUT", "1s"),
    ])
    .await;
    let hang = Receiver::start(0).await;
    let ok = Receiver::start(200).await;
    svc.webhook("app_i", &hang.url("/hang"), &["item.created"])
        .await;
    svc.webhook("app_i", &ok.url("/ok"), &["item.created"])
        .await;
    let producer = Producer::connect(&svc.ns).await;
    for i in 0..30 {
        producer
            .event(&format!("ev-i-{i}"), "app_i", "item.created", json!({}))
            .await;
    }
    let got = ok.wait_for("/ok", 30).await;
    assert_eq!(got.len(), 30, "every event reached the healthy endpoint");
    assert!(
        hang.received().len() <= 2,
        "at most the cap in flight: {}",
        hang.received().len()
    );
    // The hanging webhook's other jobs wait in its own backlog (counted
    // every 5 s), not in a delay tier and not in the healthy one's way.
    eventually(
        Duration::from_secs(15),
        "the hanging webhook's backlog counted",
        || async { (svc.metric("webhooks_backlog_jobs").await >= 20.0).then_some(()) },
    )
    .await;
    let deferred = svc
        .metric(r#"webhooks_jobs_deferred_total{reason="backlog"}"#)
        .await;
    assert_eq!(deferred, 0.0, "no job went round a delay tier");

    producer.close().await;
    svc.stop().await;
}

/// Jobs waiting for the webhook's one slot while the request ahead of
/// them fails: once the circuit opens they are not sent, though they were
/// admitted while it was closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_waiting_for_a_slot_when_the_circuit_opens_are_not_sent() {
    let svc = Fixture::service(&[
        ("WF_CIRCUIT_BREAKER_THRESHOLD", "1"),
        ("WF_CIRCUIT_BREAKER_COOLDOWN", "1h"),
        ("WF_ENDPOINT_CONCURRENCY", "1"),
        ("WF_RETRY_SCHEDULE", "100ms"),
        ("WF_MAX_EVENT_AGE", "1h"),
    ])
    .await;
    let rx = Receiver::start(500).await;
    // Slow enough that the other jobs are in hand, waiting, when it fails.
    rx.set_path_delay("/slow", Duration::from_millis(500));
    svc.webhook("app_ws", &rx.url("/slow"), &["item.created"])
        .await;
    let producer = Producer::connect(&svc.ns).await;
    for i in 0..4 {
        producer
            .event(&format!("ev-ws-{i}"), "app_ws", "item.created", json!({}))
            .await;
    }
    svc.metric_reaches("webhooks_circuit_breakers_open", 1.0)
        .await;
    // Every job has been tried (sent or short-circuited) at least twice.
    svc.metric_reaches(
        r#"webhooks_jobs_deferred_total{reason="circuit_open"}"#,
        8.0,
    )
    .await;
    let requests = rx.received().len();
    assert_eq!(requests, 1, "only the first job was sent");

    producer.close().await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_short_circuited_until_a_probe_succeeds() {
    let svc = Fixture::service(&[
        ("WF_CIRCUIT_BREAKER_THRESHOLD", "3"),
        ("WF_CIRCUIT_BREAKER_COOLDOWN", "1s"),
        ("WF_RETRY_SCHEDULE", "100ms"),
        ("WF_MAX_EVENT_AGE", "1h"),
    ])
    .await;
    let rx = Receiver::start(500).await;
    svc.webhook("app_cb", &rx.url("/cb"), &["item.created"])
        .await;
    let producer = Producer::connect(&svc.ns).await;
    for i in 0..10 {
        producer
            .event(&format!("ev-cb-{i}"), "app_cb", "item.created", json!({}))
            .await;
    }
    svc.metric_reaches(
        r#"webhooks_jobs_deferred_total{reason="circuit_open"}"#,
        30.0,
    )
    .await;
    assert_eq!(svc.metric("webhooks_circuit_breakers_open").await, 1.0);
    let requests = rx.received().len();
    assert!(
        requests < 20,
        "short-circuited jobs send no request: {requests} requests for 30+ attempts"
    );

    rx.set_status(200);
    eventually(
        Duration::from_secs(20),
        "all ten delivered after a good probe",
        || async {
            (svc.metric(r#"webhooks_deliveries_total{outcome="success"}"#)
                .await
                >= 10.0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(svc.metric("webhooks_circuit_breakers_open").await, 0.0);

    producer.close().await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_endpoint_keeps_its_latency_beside_one_hanging_30s() {
    let svc = Fixture::service(&[
        ("WF_DELIVERY_TIMEOUT", "30s"),
        ("WF_SHUTDOWN_TIMEOUT", "1s"),
    ])
    .await;
    let hang = Receiver::start(0).await;
    let ok = Receiver::start(200).await;
    svc.webhook("app_l", &hang.url("/hang"), &["item.created"])
        .await;
    svc.webhook("app_l", &ok.url("/ok"), &["item.created"])
        .await;
    let producer = Producer::connect(&svc.ns).await;
    let mut published = Vec::new();
    for i in 0..200 {
        producer
            .event(&format!("ev-l-{i}"), "app_l", "item.created", json!({}))
            .await;
        published.push((format!("ev-l-{i}"), std::time::Instant::now()));
        tokio::time::sleep(Duration::from_millis(10)).await; // a steady stream, ~100 events/s
    }
    let got = ok.wait_for("/ok", 200).await;
    let mut latencies: Vec<Duration> = published
        .iter()
        .map(|(id, at)| {
            got.iter()
                .find(|r| &r.header("webhook-id") == id)
                .unwrap()
                .at
                - *at
        })
        .collect();
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100 - 1];
    println!(
        "healthy endpoint beside one hanging 30 s: publish-to-delivery p50 {:?}, p99 {:?}, max {:?}",
        latencies[latencies.len() / 2],
        p99,
        latencies.last().unwrap()
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");

    producer.close().await;
    svc.stop().await;
}
