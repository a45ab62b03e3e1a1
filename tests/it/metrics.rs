//! /metrics after a scripted run: the counters match what happened, and no
//! label carries an unbounded value.

use std::time::Duration;

use crate::common::receiver::Receiver;
use crate::common::{Fixture, Producer, eventually};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_match_a_scripted_run() {
    let svc = Fixture::service(&[
        ("WF_RETRY_SCHEDULE", "100ms,200ms"),
        ("WF_MAX_EVENT_AGE", "1h"),
    ])
    .await;
    let receivers = [
        Receiver::start(200).await,
        Receiver::start(200).await,
        Receiver::start(200).await,
    ];
    for rx in &receivers {
        svc.webhook(
            "app_metrics_7f",
            &rx.url("/m"),
            &["payment.transaction.created"],
        )
        .await;
    }
    receivers[2].then(&[503]); // one failure, retried in the 100ms tier
    let producer = Producer::connect(&svc.ns).await;
    for i in 0..10 {
        producer
            .event(
                &format!("ev-m-{i}"),
                "app_metrics_7f",
                "payment.transaction.created",
                json!({"i": i}),
            )
            .await;
    }
    producer.raw("item.created", b"not json").await;
    for rx in &receivers {
        rx.wait_for("/m", 10).await;
    }
    svc.metric_reaches(r#"webhooks_deliveries_total{outcome="success"}"#, 30.0)
        .await;

    let m = |s: &'static str| svc.metric(s);
    assert_eq!(
        m(r#"webhooks_events_consumed_total{type="payment.transaction.created"}"#).await,
        10.0
    );
    assert_eq!(
        m("webhooks_jobs_enqueued_total").await,
        30.0,
        "10 events x 3 webhooks"
    );
    assert_eq!(
        m(r#"webhooks_deliveries_total{outcome="success"}"#).await,
        30.0
    );
    assert_eq!(
        m(r#"webhooks_deliveries_total{outcome="http_error"}"#).await,
        1.0
    );
    assert_eq!(
        m(r#"webhooks_retries_scheduled_total{tier="100ms"}"#).await,
        1.0
    );
    assert_eq!(
        m(r#"webhooks_events_rejected_total{reason="invalid_json"}"#).await,
        1.0
    );
    assert_eq!(m("webhooks_delivery_duration_seconds_count").await, 31.0);
    assert_eq!(m("webhooks_end_to_end_seconds_count").await, 30.0);
    assert_eq!(m("webhooks_dead_lettered_total").await, 0.0);
    assert_eq!(m("webhooks_inflight_deliveries").await, 0.0);
    let lookups = m(r#"webhooks_subscription_cache_lookups_total{result="hit"}"#).await
        + m(r#"webhooks_subscription_cache_lookups_total{result="miss"}"#).await;
    assert!(
        lookups >= 41.0,
        "one lookup per event and per attempt: {lookups}"
    );
    eventually(Duration::from_secs(15), "queue depths reported", || async {
        let text = svc.metrics_text().await;
        (text.contains(r#"webhooks_queue_depth{queue="ingest"} 0"#)
            && text.contains(r#"webhooks_queue_depth{queue="retry.200ms"}"#))
        .then_some(())
    })
    .await;

    let text = svc.metrics_text().await;
    for unbounded in ["app_metrics_7f", "127.0.0.1", "ev-m-", "wh_"] {
        assert!(!text.contains(unbounded), "`{unbounded}` in a metric label");
    }

    producer.close().await;
    svc.stop().await;
}
