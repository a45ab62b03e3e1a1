//! Client certificates per webhook (`tls_client`, mTLS) against an https
//! receiver that requires one from its own CA, trusted through
//! `WF_EXTRA_CA_FILE`: three webhooks on the one receiver host and port,
//! one with the CA's certificate, one without any and one with a
//! certificate of another CA. Only the first gets through; the others'
//! handshakes are refused and retried, and the first never waits on them.
//! The key is sealed at rest and shown nowhere; a replaced certificate is
//! used from the next connection on.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::certs::Ca;
use crate::common::receiver::Receiver;
use crate::common::sign::bridge;
use crate::common::{Fixture, OPERATOR, Producer, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_webhook_with_the_receivers_client_certificate_gets_through() {
    let ca = Ca::new("Receiver Test CA");
    let rx = Receiver::start_tls(200, ca.requiring_clients(&ca.server())).await;
    let bundle = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("extra-ca-{}.pem", uuid::Uuid::new_v4().simple()));
    std::fs::write(&bundle, ca.pem()).unwrap();
    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [9u8; 32]);
    let svc = Fixture::service(&[
        ("WF_EXTRA_CA_FILE", bundle.to_str().unwrap()),
        ("WF_SECRET_KEY", &key),
        ("WF_RETRY_SCHEDULE", "200ms"),
        ("WF_MAX_EVENT_AGE", "1h"),
    ])
    .await;
    let producer = Producer::connect(&svc.ns).await;
    let app = "app_mtls";
    let path = format!("/v1/applications/{app}/webhooks");
    let client = ca.client("webhook-fanout.test");
    let create = |url: String, tls: Value| {
        let body = json!({"url": url, "events": ["item.created"], "tls_client": tls});
        svc.call("POST", &path, Some(OPERATOR), Some(body))
    };
    let (status, with) = create(rx.url("/with"), client.json()).await;
    assert_eq!(status, 201, "{with}");
    assert_eq!(with["tls_client"]["subject"], "CN=webhook-fanout.test");
    assert!(
        with["tls_client"]["not_after"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let (_, without) = create(rx.url("/without"), Value::Null).await;
    assert_eq!(without["tls_client"], Value::Null);
    let stranger = Ca::new("Someone Else's CA").client("webhook-fanout.test");
    let (_, wrong) = create(rx.url("/wrong"), stranger.json()).await;
    // One whose certificate expires in 10 days: flagged by the metric.
    let (_, soon) = create(rx.url("/soon"), ca.client_expiring("soon.test", 10).json()).await;
    let left = days_until(soon["tls_client"]["not_after"].as_str().unwrap());
    assert!((9..=10).contains(&left), "{soon}");

    for i in 0..20 {
        producer
            .event(&format!("ev-m-{i}"), app, "item.created", json!({"i": i}))
            .await;
    }
    let secret = with["secret"].as_str().unwrap();
    let got = rx.wait_for("/with", 20).await;
    for r in &got {
        assert_eq!(r.client_cert.as_deref(), Some(client.der().as_slice()));
        assert_eq!(r.header("bridgeapi-signature"), bridge(secret, &r.body));
    }
    let ids: std::collections::BTreeSet<String> =
        got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 20, "each event once");
    // The other two are refused at the handshake and retried.
    for hook in [&without, &wrong] {
        eventually(
            Duration::from_secs(20),
            "refused attempts retried",
            || async {
                let items = svc.attempts(hook).await;
                let retried = items.iter().any(|a| a["attempt"].as_u64() >= Some(2));
                let refused = items
                    .iter()
                    .all(|a| a["error_class"] == "connect_error" && a["status"].is_null());
                (retried && refused).then_some(())
            },
        )
        .await;
    }
    assert!(rx.at("/without").is_empty() && rx.at("/wrong").is_empty());
    assert!(rx.refused_handshakes() >= 4, "{}", rx.refused_handshakes());
    assert_eq!(rx.wait_for("/soon", 20).await.len(), 20);
    svc.metric_reaches("webhooks_client_certificates_expiring", 1.0)
        .await;

    // The key: sealed in Redis, in no view, no export.
    let id = with["id"].as_str().unwrap();
    let one = format!("{path}/{id}");
    let raw = svc.stored_webhook(app, id).await;
    assert!(
        !raw.contains("PRIVATE KEY") && raw.contains("enc:v1:"),
        "{raw}"
    );
    let (_, shown) = svc.call("GET", &one, Some(OPERATOR), None).await;
    let (_, listed) = svc.call("GET", &path, Some(OPERATOR), None).await;
    for view in [&with, &shown, &listed] {
        assert!(!view.to_string().contains("PRIVATE KEY"), "{view}");
        assert!(!view.to_string().contains("key_pem"), "{view}");
    }

    // A replaced certificate is presented from the next connection on,
    // while a request in flight (the receiver takes 1.5 s) finishes on the
    // old one: delivered once, at its first attempt.
    rx.set_path_delay("/with", Duration::from_millis(1_500));
    producer
        .event("ev-m-in-flight", app, "item.created", json!({}))
        .await;
    let in_flight = rx.wait_for("/with", 21).await.pop().unwrap();
    assert_eq!(in_flight.header("webhook-id"), "ev-m-in-flight");
    rx.set_path_delay("/with", Duration::ZERO);
    let renewed = ca.client("webhook-fanout.renewed");
    let (status, patched) = svc
        .call(
            "PATCH",
            &one,
            Some(OPERATOR),
            Some(json!({"tls_client": renewed.json()})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        patched["tls_client"]["subject"],
        "CN=webhook-fanout.renewed"
    );
    producer
        .event("ev-m-renewed", app, "item.created", json!({}))
        .await;
    let last = rx.wait_for("/with", 22).await.pop().unwrap();
    assert_eq!(last.header("webhook-id"), "ev-m-renewed");
    assert_eq!(last.client_cert.as_deref(), Some(renewed.der().as_slice()));
    eventually(
        Duration::from_secs(10),
        "the request in flight answered",
        || async {
            let items = svc.attempts(&with).await;
            let of = |id: &str| -> Vec<Value> {
                items
                    .iter()
                    .filter(|a| a["event_id"] == id)
                    .cloned()
                    .collect()
            };
            let done = of("ev-m-in-flight");
            (done.len() == 1 && done[0]["status"] == 200 && done[0]["attempt"] == 1).then_some(())
        },
    )
    .await;
    assert_eq!(
        in_flight.client_cert.as_deref(),
        Some(client.der().as_slice())
    );
    let delivered = rx.at("/with");
    assert_eq!(
        delivered
            .iter()
            .filter(|r| r.header("webhook-id") == "ev-m-in-flight")
            .count(),
        1
    );
    // The test call presents it too.
    let (status, sent) = svc
        .call("POST", &format!("{one}/test"), Some(OPERATOR), None)
        .await;
    assert_eq!((status, &sent["delivered"]), (200, &json!(true)), "{sent}");

    producer.close().await;
    svc.stop().await;
    let _ = std::fs::remove_file(&bundle);
}

/// Whole days from now until an RFC 3339 time.
fn days_until(rfc3339: &str) -> u64 {
    let at = humantime::parse_rfc3339(rfc3339).unwrap();
    at.duration_since(std::time::SystemTime::now())
        .unwrap()
        .as_secs()
        / 86_400
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_does_not_parse_or_a_key_not_its_own_is_refused_naming_the_field() {
    let svc = Fixture::service(&[]).await;
    let ca = Ca::new("Test CA");
    let (a, b) = (ca.client("a.test"), ca.client("b.test"));
    let path = "/v1/applications/app_mtls_bad/webhooks";
    let url = "http://127.0.0.1:9/x";
    for (tls, says) in [
        (
            json!({"cert_pem": "hello", "key_pem": a.key_pem}),
            "cert_pem",
        ),
        (
            json!({"cert_pem": a.cert_pem, "key_pem": "nope"}),
            "key_pem",
        ),
        (
            json!({"cert_pem": a.cert_pem, "key_pem": b.key_pem}),
            "not the key of the first certificate",
        ),
        (json!({"cert_pem": a.cert_pem}), "`key_pem` is required"),
        (json!("pem"), "must be an object"),
        (
            json!({"cert_pem": a.cert_pem, "key_pem": a.key_pem, "password": "x"}),
            "unknown field",
        ),
    ] {
        let body = json!({"url": url, "events": ["item.created"], "tls_client": tls});
        let (status, body) = svc.call("POST", path, Some(OPERATOR), Some(body)).await;
        assert_eq!(status, 400, "{tls}: {body}");
        assert_eq!(body["error"]["code"], "invalid_tls_client");
        assert_eq!(body["error"]["field"], "tls_client");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{tls}: {message}");
        assert!(!message.contains("PRIVATE KEY"), "{message}");
    }
    // Set, then removed with null.
    let body = json!({"url": url, "events": ["item.created"], "tls_client": a.json()});
    let (status, hook) = svc.call("POST", path, Some(OPERATOR), Some(body)).await;
    assert_eq!(status, 201, "{hook}");
    let one = format!("{path}/{}", hook["id"].as_str().unwrap());
    let (status, cleared) = svc
        .call(
            "PATCH",
            &one,
            Some(OPERATOR),
            Some(json!({"tls_client": null})),
        )
        .await;
    assert_eq!((status, &cleared["tls_client"]), (200, &Value::Null));
    svc.stop().await;
}
