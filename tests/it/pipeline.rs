//! End to end through real RabbitMQ and Redis: events in, signed deliveries out.

use crate::common::receiver::{Received, Receiver};
use crate::common::sign::{bridge, standard};
use crate::common::{Fixture, Producer};
use serde_json::json;

fn secret(webhook: &serde_json::Value) -> String {
    webhook["secret"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_carries_every_contract_field() {
    let f = Fixture::start(&[]).await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    let hook = svc
        .webhook("app_42", &rx.url("/hook"), &["item.refreshed"])
        .await;

    let envelope = r#"{"id":"0b8f6f0e-6a55-4c1e-9a1f-4c0f6f1f2a10","application_id":"app_42","type":"item.refreshed","timestamp":1611681789,
        "content": {"item_id": 1234567890, "status": 0, "user_uuid": "9a95b38f-f98b-417a-988b-9d0d584893e7"}}"#;
    let before = webhook_fanout::clock::unix_secs();
    producer.raw("item.refreshed", envelope.as_bytes()).await;
    let got: Vec<Received> = rx.wait_for("/hook", 1).await;
    let r = &got[0];

    let expected = br#"{"content":{"item_id":1234567890,"status":0,"user_uuid":"9a95b38f-f98b-417a-988b-9d0d584893e7"},"timestamp":1611681789,"type":"item.refreshed"}"#;
    assert_eq!(r.body.as_ref(), expected.as_slice(), "exact body bytes");
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(
        r.header("user-agent"),
        format!("webhook-fanout/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        r.header("webhook-id"),
        "0b8f6f0e-6a55-4c1e-9a1f-4c0f6f1f2a10"
    );
    assert_eq!(r.header("webhook-attempt"), "1");
    let ts = r.header("webhook-timestamp");
    let ts_num: i64 = ts.parse().unwrap();
    assert!(
        (before - 5..=before + 60).contains(&ts_num),
        "timestamp of this attempt"
    );
    let s = secret(&hook);
    assert_eq!(r.header("bridgeapi-signature"), bridge(&s, &r.body));
    assert_eq!(
        r.header("webhook-signature"),
        standard(&s, "0b8f6f0e-6a55-4c1e-9a1f-4c0f6f1f2a10", &ts, &r.body)
    );
    // The receiver sees the request before the service has read the answer.
    svc.metric_reaches(r#"webhooks_deliveries_total{outcome="success"}"#, 1.0)
        .await;

    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_fans_out_to_every_subscribed_webhook_of_its_application_only() {
    let f = Fixture::start(&[]).await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    svc.webhook(
        "app_a",
        &rx.url("/a1"),
        &["transfer.created", "transfer.updated"],
    )
    .await;
    svc.webhook("app_a", &rx.url("/a2"), &["transfer.created"])
        .await;
    svc.webhook("app_a", &rx.url("/a3"), &["item.created"])
        .await;
    svc.webhook("app_b", &rx.url("/b1"), &["transfer.created"])
        .await;

    producer
        .event("ev-fan-1", "app_a", "transfer.created", json!({"n": 1}))
        .await;
    rx.wait_for("/a1", 1).await;
    rx.wait_for("/a2", 1).await;
    svc.metric_reaches("webhooks_jobs_enqueued_total", 2.0)
        .await;
    assert_eq!(
        svc.metric("webhooks_jobs_enqueued_total").await,
        2.0,
        "exactly two jobs"
    );
    assert!(rx.at("/a3").is_empty(), "not subscribed to the type");
    assert!(rx.at("/b1").is_empty(), "another application's webhook");

    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribed_types_and_unknown_applications_deliver_nothing() {
    let f = Fixture::start(&[]).await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    svc.webhook("app_u", &rx.url("/u"), &["item.created"]).await;

    producer
        .event("ev-u-1", "app_u", "payment.link.updated", json!({}))
        .await;
    producer
        .event("ev-u-2", "app_nobody", "item.created", json!({}))
        .await;
    svc.metric_reaches(
        r#"webhooks_events_consumed_total{type="payment.link.updated"}"#,
        1.0,
    )
    .await;
    svc.metric_reaches(
        r#"webhooks_events_consumed_total{type="item.created"}"#,
        1.0,
    )
    .await;
    assert_eq!(svc.metric("webhooks_jobs_enqueued_total").await, 0.0);
    assert!(rx.received().is_empty());

    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_event_id_is_delivered_once() {
    let f = Fixture::start(&[]).await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    svc.webhook("app_d", &rx.url("/d"), &["item.created"]).await;

    producer
        .event("ev-dup", "app_d", "item.created", json!({"copy": 1}))
        .await;
    rx.wait_for("/d", 1).await;
    producer
        .event("ev-dup", "app_d", "item.created", json!({"copy": 2}))
        .await;
    svc.metric_reaches("webhooks_events_duplicate_total", 1.0)
        .await;
    assert_eq!(rx.at("/d").len(), 1);
    assert_eq!(svc.metric("webhooks_jobs_enqueued_total").await, 1.0);

    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_run_concurrently_so_a_hanging_endpoint_does_not_block_others() {
    let svc = Fixture::service(&[("WF_DELIVERY_TIMEOUT", "10s")]).await;
    let hang = Receiver::start(0).await;
    let ok = Receiver::start(200).await;
    svc.webhook("app_c", &hang.url("/hang"), &["item.created"])
        .await;
    svc.webhook("app_c", &ok.url("/ok"), &["item.created"])
        .await;
    let producer = Producer::connect(&svc.ns).await;

    for i in 0..5 {
        producer
            .event(
                &format!("ev-c-{i}"),
                "app_c",
                "item.created",
                json!({"i": i}),
            )
            .await;
    }
    // All five reach the healthy endpoint while the other hangs for 10 s each.
    let got = ok.wait_for("/ok", 5).await;
    assert_eq!(got.len(), 5);
    assert!(
        svc.metric("webhooks_inflight_deliveries").await >= 1.0,
        "hanging deliveries in flight"
    );

    producer.close().await;
    svc.stop().await;
}

/// An event near the 256 KiB limit spans many AMQP frames (the service
/// proposes 32 KiB frames) on every hop: in from `{ns}.events`, out as jobs,
/// back from a retry tier. It arrives whole and verifiable at each webhook
/// of one host, the failed one included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_of_many_frames_arrives_whole_through_a_retry() {
    let f = Fixture::start(&[("WF_RETRY_SCHEDULE", "200ms")]).await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    let first = svc
        .webhook("app_big", &rx.url("/big/1"), &["item.created"])
        .await;
    let second = svc
        .webhook("app_big", &rx.url("/big/2"), &["item.created"])
        .await;
    rx.then_at("/big/2", &[500]);

    // Not one repeated byte: a frame boundary that dropped or doubled a
    // chunk would change the body.
    let pad: String = (0..240 * 1024)
        .map(|i| char::from(b'a' + (i % 23) as u8))
        .collect();
    producer
        .event("ev-big", "app_big", "item.created", json!({"pad": pad}))
        .await;

    let one = rx.wait_for("/big/1", 1).await;
    let two = rx.wait_for("/big/2", 2).await;
    for (hook, r) in [(&first, &one[0]), (&second, &two[1])] {
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["content"]["pad"].as_str(), Some(pad.as_str()));
        assert_eq!(
            r.header("bridgeapi-signature"),
            bridge(&secret(hook), &r.body)
        );
    }
    assert_eq!(two[1].header("webhook-attempt"), "2", "the retry");
    assert_eq!(rx.at("/big/1").len(), 1, "once");

    f.stop().await;
}
