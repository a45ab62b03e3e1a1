//! Rate limits per webhook (`rate_limit`): set, shown, changed and cleared
//! through the API, refused with a clear error when malformed, and held by
//! two processes together, as the receiver counts in a sliding window.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::receiver::Receiver;
use crate::common::{Fixture, OPERATOR, Producer, TestService, eventually};

/// Creates a webhook of `app` with `body`'s fields besides the URL and
/// events; the status and the answer.
async fn create(svc: &TestService, app: &str, url: &str, extra: Value) -> (u16, Value) {
    let mut body = json!({"url": url, "events": ["item.created"]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let path = format!("/v1/applications/{app}/webhooks");
    svc.call("POST", &path, Some(OPERATOR), Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_set_shown_changed_cleared_and_validated() {
    let svc = Fixture::service(&[]).await;
    let (status, plain) = create(&svc, "app_r", "http://127.0.0.1:9/a", json!({})).await;
    assert_eq!(status, 201);
    assert_eq!(plain["rate_limit"], Value::Null, "no limit by default");

    let limit = json!({"requests": 100, "per": "1m"});
    let (status, hook) = create(
        &svc,
        "app_r",
        "http://127.0.0.1:9/b",
        json!({"rate_limit": limit}),
    )
    .await;
    assert_eq!((status, &hook["rate_limit"]), (201, &limit));
    let path = format!(
        "/v1/applications/app_r/webhooks/{}",
        hook["id"].as_str().unwrap()
    );
    let (_, shown) = svc.call("GET", &path, Some(OPERATOR), None).await;
    assert_eq!(shown["rate_limit"], limit);
    let (_, listed) = svc
        .call(
            "GET",
            "/v1/applications/app_r/webhooks",
            Some(OPERATOR),
            None,
        )
        .await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["rate_limit"] == limit)
    );

    for bad in [
        json!({"requests": 0, "per": "1s"}),
        json!({"requests": 100_001, "per": "1s"}),
        json!({"requests": 10, "per": "10s"}),
        json!({"requests": 10}),
        json!({"requests": 10, "per": "1s", "burst": 5}),
        json!("10/s"),
    ] {
        for (method, target) in [
            ("POST", "/v1/applications/app_r/webhooks"),
            ("PATCH", path.as_str()),
        ] {
            let body = json!({"url": "http://127.0.0.1:9/c", "events": ["item.created"], "rate_limit": bad});
            let body = if method == "PATCH" {
                json!({"rate_limit": bad})
            } else {
                body
            };
            let (status, error) = svc.call(method, target, Some(OPERATOR), Some(body)).await;
            assert_eq!(status, 400, "{method} {bad}: {error}");
            assert_eq!(
                (&error["error"]["code"], &error["error"]["field"]),
                (&json!("invalid_rate_limit"), &json!("rate_limit")),
                "{method} {bad}"
            );
        }
    }

    let faster = json!({"requests": 5, "per": "1s"});
    let (status, changed) = svc
        .call(
            "PATCH",
            &path,
            Some(OPERATOR),
            Some(json!({"rate_limit": faster})),
        )
        .await;
    assert_eq!((status, &changed["rate_limit"]), (200, &faster));
    let (status, cleared) = svc
        .call(
            "PATCH",
            &path,
            Some(OPERATOR),
            Some(json!({"rate_limit": null})),
        )
        .await;
    assert_eq!((status, &cleared["rate_limit"]), (200, &Value::Null));
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_together_keep_a_webhook_within_its_rate_limit() {
    const EVENTS: usize = 30;
    let a = Fixture::service(&[]).await;
    let b = Fixture::join(&a.ns, &[]).await;
    let rx = Receiver::start(200).await;
    let limit = json!({"requests": 5, "per": "1s"});
    let (status, _) = create(
        &a,
        "app_l",
        &rx.url("/limited"),
        json!({"rate_limit": limit}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = create(&a, "app_l", &rx.url("/free"), json!({})).await;
    assert_eq!(status, 201);
    let producer = Producer::connect(&a.ns).await;
    let ids: Vec<String> = (0..EVENTS).map(|i| format!("ev-l-{i}")).collect();
    producer.burst("app_l", "item.created", &ids).await;

    // The unlimited neighbour gets everything at once; the limited one
    // about 5 a second, all of them, each once.
    rx.wait_for("/free", EVENTS).await;
    eventually(
        Duration::from_secs(30),
        "every limited delivery",
        || async { (rx.at("/limited").len() >= EVENTS).then_some(()) },
    )
    .await;
    let got = rx.at("/limited");
    let distinct: BTreeSet<String> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!((distinct.len(), got.len()), (EVENTS, EVENTS), "each once");
    let mut at: Vec<_> = got.iter().map(|r| r.at).collect();
    at.sort();
    let busiest = (0..at.len())
        .map(|i| {
            at[i..]
                .iter()
                .take_while(|t| **t < at[i] + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    let took = at[EVENTS - 1] - at[0];
    println!("{EVENTS} requests in {took:?}; at most {busiest} in any 1 s window (limit 5 per 1s)");
    // The contract's bound: N + max(2, N / 10) in any window of `per`.
    assert!(busiest <= 7, "{busiest} requests within one second");
    let mut waited = 0.0;
    let mut sent = Vec::new();
    for svc in [&a, &b] {
        waited += svc.metric("webhooks_rate_limited_total").await;
        sent.push(
            svc.metric(r#"webhooks_deliveries_total{outcome="success"}"#)
                .await,
        );
    }
    println!("deliveries per process (both webhooks): {sent:?}; jobs that waited: {waited}");
    assert!(waited > 0.0, "jobs waited for the limit");
    // Which process takes a backlog's jobs is the broker's choice (the
    // first consumer may hold them all); the limit holds either way.
    producer.close().await;
    b.stop().await;
    a.stop().await;
}
