//! The admin API as a client sees it: auth matrix, validation, limits,
//! secret rotation, the test call, errors, and cache invalidation across
//! service processes.

use crate::common::receiver::Receiver;
use crate::common::sign::{bridge, standard};
use crate::common::{Fixture, OPERATOR, Producer};
use serde_json::{Value, json};

const TEST_BODY: &str = r#"{"content":{"item_id":1234567890,"status":0,"user_uuid":"9a95b38f-f98b-417a-988b-9d0d584893e7"},"timestamp":1611681789,"type":"TEST_EVENT"}"#;

fn hooks(app: &str) -> String {
    format!("/v1/applications/{app}/webhooks")
}

fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_matrix() {
    let svc = Fixture::service(&[]).await;
    let rx = Receiver::start(200).await;
    let admin = svc.token("app1", "admin").await;
    let member = svc.token("app1", "member").await;
    let other = svc.token("app2", "admin").await;
    let new_hook = || Some(json!({"url": rx.url("/x"), "events": ["item.created"]}));

    // No token, bad token.
    let (s, b) = svc.call("GET", &hooks("app1"), None, None).await;
    assert_error(s, &b, 401, "unauthorized");
    let (s, b) = svc
        .call("GET", &hooks("app1"), Some("wft_not-a-real-token"), None)
        .await;
    assert_error(s, &b, 401, "unauthorized");

    // Admin manages its application's webhooks.
    let (s, created) = svc
        .call("POST", &hooks("app1"), Some(&admin), new_hook())
        .await;
    assert_eq!(s, 201, "{created}");
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    let id = created["id"].as_str().unwrap();
    let one = format!("{}/{id}", hooks("app1"));

    // Member reads, never secrets, and may not write.
    let (s, list) = svc.call("GET", &hooks("app1"), Some(&member), None).await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0].get("secret").is_none() && !list.to_string().contains("whsec_"));
    let (s, got) = svc.call("GET", &one, Some(&member), None).await;
    assert_eq!((s, got["id"].as_str()), (200, Some(id)));
    for (method, path, body) in [
        ("POST", hooks("app1"), new_hook()),
        ("PATCH", one.clone(), Some(json!({"name": "x"}))),
        ("DELETE", one.clone(), None),
        ("POST", format!("{one}/rotate-secret"), None),
        ("POST", format!("{one}/test"), None),
    ] {
        let (s, b) = svc.call(method, &path, Some(&member), body).await;
        assert_error(s, &b, 403, "forbidden");
    }

    // Another application's token sees nothing: 404.
    for (method, path) in [
        ("GET", hooks("app1")),
        ("GET", one.clone()),
        ("DELETE", one.clone()),
    ] {
        let (s, b) = svc.call(method, &path, Some(&other), None).await;
        assert_error(s, &b, 404, "not_found");
    }

    // Only the operator creates tokens.
    let (s, b) = svc
        .call(
            "POST",
            "/v1/applications/app1/tokens",
            Some(&admin),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_error(s, &b, 403, "forbidden");

    // The operator does everything.
    let (s, _) = svc
        .call(
            "PATCH",
            &one,
            Some(OPERATOR),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, b) = svc.call("DELETE", &one, Some(&admin), None).await;
    assert_eq!((s, b), (204, Value::Null));
    let (s, b) = svc.call("GET", &one, Some(OPERATOR), None).await;
    assert_error(s, &b, 404, "not_found");

    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors_name_the_field() {
    let svc = Fixture::service(&[
        ("WF_ALLOW_HTTP", "false"),
        ("WF_ALLOW_PRIVATE_TARGETS", "false"),
    ])
    .await;
    let path = hooks("app_v");
    let cases = [
        (
            json!({"url": "http://example.com/h", "events": ["item.created"]}),
            "invalid_url",
            Some("url"),
        ),
        (
            json!({"url": "https://127.0.0.1/h", "events": ["item.created"]}),
            "invalid_url",
            Some("url"),
        ),
        (
            json!({"url": "https://169.254.169.254/latest", "events": ["item.created"]}),
            "invalid_url",
            Some("url"),
        ),
        (
            json!({"events": ["item.created"]}),
            "invalid_url",
            Some("url"),
        ),
        (
            json!({"url": "https://1.1.1.1/h", "events": []}),
            "invalid_events",
            Some("events"),
        ),
        (
            json!({"url": "https://1.1.1.1/h", "events": ["TEST_EVENT"]}),
            "invalid_events",
            Some("events"),
        ),
        (
            json!({"url": "https://1.1.1.1/h", "events": ["nope"]}),
            "invalid_events",
            Some("events"),
        ),
        (
            json!({"url": "https://1.1.1.1/h", "events": ["item.created"], "enabled": "yes"}),
            "invalid_enabled",
            Some("enabled"),
        ),
        (
            json!({"url": "https://1.1.1.1/h", "events": ["item.created"], "name": 5}),
            "invalid_name",
            Some("name"),
        ),
        (
            json!({"url": "https://1.1.1.1/h", "events": ["item.created"], "colour": "red"}),
            "unknown_field",
            None,
        ),
        (json!(["not", "an", "object"]), "invalid_json", None),
    ];
    for (body, code, field) in cases {
        let (s, b) = svc
            .call("POST", &path, Some(OPERATOR), Some(body.clone()))
            .await;
        assert_error(s, &b, 400, code);
        if let Some(f) = field {
            assert_eq!(b["error"]["field"], f, "{body} -> {b}");
            assert!(b["error"]["message"].as_str().unwrap().starts_with(f));
        }
    }
    let (s, b) = svc
        .call(
            "POST",
            "/v1/applications/app_v/tokens",
            Some(OPERATOR),
            Some(json!({"role": "owner"})),
        )
        .await;
    assert_error(s, &b, 400, "invalid_role");

    // Over 64 KiB: 413.
    let huge =
        json!({"url": "https://1.1.1.1/h", "events": ["item.created"], "name": "n".repeat(70_000)});
    let (s, b) = svc.call("POST", &path, Some(OPERATOR), Some(huge)).await;
    assert_error(s, &b, 413, "payload_too_large");

    // Unknown routes and wrong methods are JSON errors too.
    let (s, b) = svc
        .call("GET", "/v1/nothing-here", Some(OPERATOR), None)
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = svc.call("PUT", &path, Some(OPERATOR), None).await;
    assert_error(s, &b, 405, "method_not_allowed");
    let (s, b) = svc
        .call("DELETE", "/v1/event-types", Some(OPERATOR), None)
        .await;
    assert_error(s, &b, 405, "method_not_allowed");

    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eleventh_webhook_is_refused() {
    let svc = Fixture::service(&[]).await;
    let rx = Receiver::start(200).await;
    for i in 0..10 {
        svc.webhook("app_l", &rx.url(&format!("/{i}")), &["item.created"])
            .await;
    }
    let (s, b) = svc
        .call(
            "POST",
            &hooks("app_l"),
            Some(OPERATOR),
            Some(json!({"url": rx.url("/11"), "events": ["item.created"]})),
        )
        .await;
    assert_error(s, &b, 409, "webhook_limit_reached");
    let (_, list) = svc.call("GET", &hooks("app_l"), Some(OPERATOR), None).await;
    assert_eq!(list.as_array().unwrap().len(), 10);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_call_and_secret_rotation() {
    let svc = Fixture::service(&[]).await;
    let rx = Receiver::start(200).await;
    let hook = svc.webhook("app_t", &rx.url("/t"), &["item.created"]).await;
    let old = hook["secret"].as_str().unwrap().to_string();
    let one = format!("{}/{}", hooks("app_t"), hook["id"].as_str().unwrap());

    let (s, report) = svc
        .call("POST", &format!("{one}/test"), Some(OPERATOR), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(report["delivered"], true, "{report}");
    assert_eq!(report["status"], 200);
    assert_eq!(report["error"], Value::Null);
    assert!(report["duration_ms"].is_u64());
    let r = rx.wait_for("/t", 1).await.remove(0);
    assert_eq!(r.body.as_ref(), TEST_BODY.as_bytes());
    assert_eq!(
        r.header("bridgeapi-signature"),
        bridge(&old, TEST_BODY.as_bytes())
    );

    let (s, rotated) = svc
        .call(
            "POST",
            &format!("{one}/rotate-secret"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    svc.call("POST", &format!("{one}/test"), Some(OPERATOR), None)
        .await;
    let r = rx.wait_for("/t", 2).await.remove(1);
    let body = r.body.as_ref();
    assert_eq!(
        r.header("bridgeapi-signature"),
        format!("{},{}", bridge(&new, body), bridge(&old, body))
    );
    let (id, ts) = (r.header("webhook-id"), r.header("webhook-timestamp"));
    assert_eq!(
        r.header("webhook-signature"),
        format!(
            "{} {}",
            standard(&new, &id, &ts, body),
            standard(&old, &id, &ts, body)
        )
    );

    // Rotating again drops the oldest: never more than two valid secrets.
    let (_, third) = svc
        .call(
            "POST",
            &format!("{one}/rotate-secret"),
            Some(OPERATOR),
            None,
        )
        .await;
    let third = third["secret"].as_str().unwrap().to_string();
    svc.call("POST", &format!("{one}/test"), Some(OPERATOR), None)
        .await;
    let r = rx.wait_for("/t", 3).await.remove(2);
    assert_eq!(
        r.header("bridgeapi-signature"),
        format!(
            "{},{}",
            bridge(&third, r.body.as_ref()),
            bridge(&new, r.body.as_ref())
        )
    );

    // A failing receiver is reported, not hidden.
    rx.set_status(500);
    let (_, report) = svc
        .call("POST", &format!("{one}/test"), Some(OPERATOR), None)
        .await;
    assert_eq!(
        (report["delivered"].clone(), report["status"].clone()),
        (json!(false), json!(500))
    );
    assert_eq!(report["error"], "HTTP 500");

    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_types_and_health_endpoints() {
    let svc = Fixture::service(&[]).await;
    let (s, types) = svc
        .call("GET", "/v1/event-types", Some(OPERATOR), None)
        .await;
    assert_eq!(s, 200);
    let names: Vec<&str> = types
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"payment.transaction.updated") && names.contains(&"TEST_EVENT"));
    assert_eq!(svc.call("GET", "/healthz", None, None).await.0, 200);
    assert_eq!(svc.call("GET", "/readyz", None, None).await.0, 200);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_operator_token_only_health_and_metrics_answer() {
    let svc = Fixture::service(&[("WF_ADMIN_TOKEN", "")]).await;
    let (s, b) = svc
        .call("GET", "/v1/event-types", Some(OPERATOR), None)
        .await;
    assert_error(s, &b, 401, "unauthorized");
    assert_eq!(svc.call("GET", "/metrics", None, None).await.0, 200);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_process_is_seen_by_another_within_a_second() {
    // Process A serves the API only; process B fans out and delivers.
    let a = Fixture::service(&[("WF_ROLES", "api")]).await;
    let b = Fixture::join(&a.ns, &[("WF_ROLES", "ingest,deliver")]).await;
    let rx = Receiver::start(200).await;
    let hook = a.webhook("app_x", &rx.url("/x"), &["item.created"]).await;
    let producer = Producer::connect(&a.ns).await;

    // B caches the application's webhooks while fanning this out.
    producer
        .event("ev-x-1", "app_x", "item.created", json!({}))
        .await;
    rx.wait_for("/x", 1).await;

    let one = format!("{}/{}", hooks("app_x"), hook["id"].as_str().unwrap());
    let (s, _) = a
        .call(
            "PATCH",
            &one,
            Some(OPERATOR),
            Some(json!({"events": ["item.refreshed"]})),
        )
        .await;
    assert_eq!(s, 200);
    let changed_at = std::time::Instant::now();
    producer
        .event("ev-x-2", "app_x", "item.refreshed", json!({}))
        .await;
    let got = rx.wait_for("/x", 2).await;
    assert!(
        changed_at.elapsed() < std::time::Duration::from_secs(1),
        "seen within a second"
    );
    assert_eq!(got[1].header("webhook-id"), "ev-x-2");

    producer.close().await;
    b.stop().await;
    a.stop().await;
}
