//! Delivery history and health (issue 16): every attempt of a webhook is
//! recorded, newest first, filterable, bounded; health sums it up. The
//! webhooks share one receiver host and port, answering per path.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Fixture, OPERATOR, TestService, eventually};

fn base(hook: &Value) -> String {
    format!(
        "/v1/applications/{}/webhooks/{}",
        hook["application_id"].as_str().unwrap(),
        hook["id"].as_str().unwrap()
    )
}

/// Every recorded attempt of `hook` (following cursors), newest first.
async fn all_attempts(svc: &TestService, hook: &Value, query: &str, token: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!("{}/attempts?limit=7&{query}&cursor={cursor}", base(hook));
        let (status, page) = svc.call("GET", &path, Some(token), None).await;
        assert_eq!(status, 200, "{page}");
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => return items,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_are_recorded_in_order_with_status_and_error_class() {
    let f = Fixture::start(&[
        ("WF_RETRY_SCHEDULE", "100ms"),
        ("WF_MAX_EVENT_AGE", "1h"),
        ("WF_DELIVERY_TIMEOUT", "500ms"),
    ])
    .await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    let hook = svc
        .webhook("app_hist", &rx.url("/h"), &["item.created"])
        .await;
    let other = svc
        .webhook("app_hist", &rx.url("/other"), &["item.created"])
        .await;
    producer
        .event("ev-h-1", "app_hist", "item.created", json!({}))
        .await;
    rx.wait_for("/h", 1).await;
    // The next event: 500, then no answer in time, then 200.
    rx.then_at("/h", &[500, 0, 200]);
    producer
        .event("ev-h-2", "app_hist", "item.created", json!({}))
        .await;
    let items = eventually(Duration::from_secs(20), "4 attempts", || async {
        let items = all_attempts(svc, &hook, "", OPERATOR).await;
        (items.len() >= 4).then_some(items)
    })
    .await;
    let oldest_first: Vec<(String, u64, Value, Value)> = items
        .iter()
        .rev()
        .map(|a| {
            (
                a["event_id"].as_str().unwrap().to_string(),
                a["attempt"].as_u64().unwrap(),
                a["status"].clone(),
                a["error_class"].clone(),
            )
        })
        .collect();
    assert_eq!(
        oldest_first,
        [
            ("ev-h-1".to_string(), 1, json!(200), Value::Null),
            ("ev-h-2".to_string(), 1, json!(500), json!("http_error")),
            ("ev-h-2".to_string(), 2, Value::Null, json!("timeout")),
            ("ev-h-2".to_string(), 3, json!(200), Value::Null),
        ]
    );
    for a in &items {
        assert_eq!(
            (&a["kind"], &a["sent"], &a["type"]),
            (&json!("delivery"), &json!(true), &json!("item.created"))
        );
        assert!(humantime::parse_rfc3339(a["at"].as_str().unwrap()).is_ok());
        assert!(!a.to_string().contains("whsec_"));
    }
    assert_eq!(items[2]["error"], "HTTP 500");
    assert!(items[1]["error"].as_str().unwrap().contains("no response"));
    assert!(items[1]["duration_ms"].as_u64().unwrap() >= 500);

    // Filters: one event's attempts across its retries; failures only.
    let two = all_attempts(svc, &hook, "event_id=ev-h-2", OPERATOR).await;
    assert_eq!(two.len(), 3);
    assert!(two.iter().all(|a| a["event_id"] == "ev-h-2"));
    let failures = all_attempts(svc, &hook, "status=failure", OPERATOR).await;
    assert_eq!(failures.len(), 2);
    assert_eq!(
        all_attempts(svc, &hook, "status=success", OPERATOR)
            .await
            .len(),
        2
    );
    // The neighbour's history is its own.
    let theirs = all_attempts(svc, &other, "", OPERATOR).await;
    assert_eq!(theirs.len(), 2, "{theirs:?}");

    // A member of the application may read; another application may not.
    let member = svc.token("app_hist", "member").await;
    assert_eq!(all_attempts(svc, &hook, "", &member).await.len(), 4);
    let stranger = svc.token("app_else", "admin").await;
    let path = format!("{}/attempts", base(&hook));
    assert_eq!(svc.call("GET", &path, Some(&stranger), None).await.0, 404);
    let health = format!("{}/health", base(&hook));
    assert_eq!(svc.call("GET", &health, Some(&stranger), None).await.0, 404);
    let (status, body) = svc
        .call("GET", &format!("{path}?status=maybe"), Some(OPERATOR), None)
        .await;
    assert_eq!((status, &body["error"]["field"]), (400, &json!("status")));

    // Health: 2 of 4 requests succeeded.
    let (status, h) = svc.call("GET", &health, Some(&member), None).await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(
        (&h["requests_1h"], &h["requests_24h"]),
        (&json!(4), &json!(4))
    );
    assert_eq!(h["success_ratio_1h"], 0.5);
    assert_eq!(h["breaker"], "closed");
    assert!(h["last_success_at"].is_string() && h["last_failure_at"].is_string());
    assert!(h["duration_p99_ms_1h"].as_u64().unwrap() >= 500);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_keeps_its_cap_and_health_shows_a_failing_streak() {
    let f = Fixture::start(&[
        ("WF_ATTEMPT_HISTORY", "20"),
        ("WF_RETRY_SCHEDULE", "10m"),
        ("WF_CIRCUIT_BREAKER_THRESHOLD", "3"),
    ])
    .await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    let busy = svc
        .webhook("app_cap", &rx.url("/busy"), &["item.created"])
        .await;
    let down = svc
        .webhook("app_cap", &rx.url("/down"), &["item.account.updated"])
        .await;
    rx.set_path_status("/down", 500);
    for i in 0..120 {
        producer
            .event(&format!("ev-cap-{i}"), "app_cap", "item.created", json!({}))
            .await;
    }
    rx.wait_for("/busy", 120).await;
    let items = eventually(Duration::from_secs(10), "the newest attempt", || async {
        let items = all_attempts(svc, &busy, "", OPERATOR).await;
        items
            .iter()
            .any(|a| a["event_id"] == "ev-cap-119")
            .then_some(items)
    })
    .await;
    assert_eq!(items.len(), 20, "the cap, not 120");

    for i in 0..6 {
        producer
            .event(
                &format!("ev-down-{i}"),
                "app_cap",
                "item.account.updated",
                json!({}),
            )
            .await;
    }
    let health = format!("{}/health", base(&down));
    let h = eventually(Duration::from_secs(10), "the failing streak", || async {
        let (_, h) = svc.call("GET", &health, Some(OPERATOR), None).await;
        (h["breaker"] == "open" && h["waiting_in_retry"].as_u64() >= Some(6)).then_some(h)
    })
    .await;
    assert_eq!(h["success_ratio_1h"], 0.0);
    assert_eq!(h["last_error"], "HTTP 500");
    assert_eq!(h["last_success_at"], Value::Null);
    let requests = h["requests_1h"].as_u64().unwrap();
    assert!((3..=6).contains(&requests), "{h}");
    let down_items = all_attempts(svc, &down, "", OPERATOR).await;
    assert_eq!(down_items.len(), 6);
    let unsent: Vec<&Value> = down_items.iter().filter(|a| a["sent"] == false).collect();
    assert_eq!(
        unsent.len() as u64,
        6 - requests,
        "short-circuited ones appear as such"
    );
    assert!(unsent.iter().all(|a| a["error_class"] == "circuit_open"));
    let buckets = h["buckets"].as_array().unwrap();
    let failures: u64 = buckets
        .iter()
        .map(|b| b["failures"].as_u64().unwrap())
        .sum();
    assert_eq!(failures, requests);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_history_off_nothing_is_recorded() {
    let f = Fixture::start(&[("WF_ATTEMPT_HISTORY", "0")]).await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    let hook = svc
        .webhook("app_off", &rx.url("/off"), &["item.created"])
        .await;
    producer
        .event("ev-off", "app_off", "item.created", json!({}))
        .await;
    rx.wait_for("/off", 1).await;
    // A later event delivered: the first one's attempt, were it recorded,
    // would have been handed to the history before it.
    producer
        .event("ev-off-2", "app_off", "item.created", json!({}))
        .await;
    rx.wait_for("/off", 2).await;
    assert!(all_attempts(svc, &hook, "", OPERATOR).await.is_empty());
    f.stop().await;
}
