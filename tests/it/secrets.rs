//! Secrets: encrypted at rest with WF_SECRET_KEY (plaintext from before still
//! works), and no secret, token or payload in logs or metrics.

use std::process::Command;

use crate::common::receiver::Receiver;
use crate::common::sign::bridge;
use crate::common::{Fixture, OPERATOR, Producer, binary};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use redis::AsyncCommands;
use serde_json::json;

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(crate::common::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_encrypted_at_rest_and_old_plaintext_ones_still_sign() {
    let key = STANDARD.encode([42u8; 32]);
    let f = Fixture::start(&[("WF_SECRET_KEY", &key)]).await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    let hook = svc.webhook("app_e", &rx.url("/e"), &["item.created"]).await;
    let secret = hook["secret"].as_str().unwrap();
    let raw = svc
        .stored_webhook("app_e", hook["id"].as_str().unwrap())
        .await;
    assert!(raw.contains("enc:v1:"), "{raw}");
    assert!(
        !raw.contains("whsec_") && !raw.contains(secret),
        "no plaintext secret in Redis"
    );

    // A record written before encryption was turned on.
    let legacy = json!({
        "id": "wh_legacy", "application_id": "app_e", "url": rx.url("/legacy"), "name": null,
        "events": ["item.created"], "enabled": true, "created_at": 0, "updated_at": 0,
        "secrets": [{"value": "whsec_bGVnYWN5LXNlY3JldC1mb3ItdGVzdHMtMDEyMzQ1Njc=", "expires_at": null}],
    });
    let _: i64 = redis()
        .await
        .hset(
            format!("{}:webhooks:app_e", svc.ns),
            "wh_legacy",
            legacy.to_string(),
        )
        .await
        .unwrap();
    let _: i64 = redis()
        .await
        .publish(format!("{}:changes", svc.ns), "app_e")
        .await
        .unwrap();

    producer
        .event("ev-e", "app_e", "item.created", json!({}))
        .await;
    let new = rx.wait_for("/e", 1).await.remove(0);
    assert_eq!(new.header("bridgeapi-signature"), bridge(secret, &new.body));
    let old = rx.wait_for("/legacy", 1).await.remove(0);
    assert_eq!(
        old.header("bridgeapi-signature"),
        bridge(
            "whsec_bGVnYWN5LXNlY3JldC1mb3ItdGVzdHMtMDEyMzQ1Njc=",
            &old.body
        )
    );

    // Its next write seals it: the plaintext leaves Redis, the secret stays the same.
    let (s, _) = svc
        .call(
            "PATCH",
            "/v1/applications/app_e/webhooks/wh_legacy",
            Some(crate::common::OPERATOR),
            Some(json!({"name": "migrated"})),
        )
        .await;
    assert_eq!(s, 200);
    let raw: String = redis()
        .await
        .hget(format!("{}:webhooks:app_e", svc.ns), "wh_legacy")
        .await
        .unwrap();
    assert!(raw.contains("enc:v1:") && !raw.contains("whsec_"), "{raw}");
    producer
        .event("ev-e2", "app_e", "item.created", json!({}))
        .await;
    let again = rx.wait_for("/legacy", 2).await.remove(1);
    assert_eq!(
        again.header("bridgeapi-signature"),
        bridge(
            "whsec_bGVnYWN5LXNlY3JldC1mb3ItdGVzdHMtMDEyMzQ1Njc=",
            &again.body
        )
    );

    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_token_or_payload_reaches_logs_or_metrics() {
    let ns = crate::common::Namespace::new();
    let key = STANDARD.encode([5u8; 32]);
    let extra = [
        ("WF_SECRET_KEY", key.as_str()),
        ("WF_RETRY_SCHEDULE", "100ms"),
        ("WF_LOG_FORMAT", "json"),
        ("RUST_LOG", "debug"),
    ];
    let binary::Spawned {
        mut child,
        base,
        log,
        ..
    } = binary::spawn(&ns, &extra);
    binary::wait_ready(&base).await;
    let http = reqwest::Client::new();
    let call = |method: &str, path: &str, token: &str, body: Option<serde_json::Value>| {
        let mut req = http
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        req.send()
    };
    let token: serde_json::Value = call(
        "POST",
        "/v1/applications/app_s/tokens",
        OPERATOR,
        Some(json!({"role": "admin"})),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let token = token["token"].as_str().unwrap().to_string();
    let rx = Receiver::start(200).await;
    let hook: serde_json::Value = call(
        "POST",
        "/v1/applications/app_s/webhooks",
        &token,
        Some(json!({"url": rx.url("/s"), "events": ["item.created"]})),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let path = format!(
        "/v1/applications/app_s/webhooks/{}",
        hook["id"].as_str().unwrap()
    );
    let rotated: serde_json::Value = call("POST", &format!("{path}/rotate-secret"), &token, None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    call("POST", &format!("{path}/test"), &token, None)
        .await
        .unwrap();
    call("GET", &path, "wft_wrong-token-in-a-failed-call", None)
        .await
        .unwrap();
    rx.then(&[500]); // the event's first attempt fails, the retry succeeds
    // A webhook with OAuth2 credentials and a client certificate, on a
    // receiver of its own.
    let tokens = crate::oauth::TokenServer::start(&[("logs", "LOG-SECRET-CANARY", 3600)]).await;
    let rx_auth = Receiver::start(200).await;
    let client = crate::common::certs::Ca::new("Logs CA").client("logs.test");
    let with_auth = json!({"url": rx_auth.url("/a"), "events": ["item.created"],
        "auth": crate::oauth::auth(&tokens.url, "logs", "LOG-SECRET-CANARY"),
        "tls_client": client.json()});
    let created = call(
        "POST",
        "/v1/applications/app_s/webhooks",
        &token,
        Some(with_auth),
    )
    .await
    .unwrap();
    assert_eq!(created.status(), 201);

    let producer = Producer::connect(&ns).await;
    producer
        .event(
            "ev-s",
            "app_s",
            "item.created",
            json!({"note": "PAYLOAD-CANARY-7f3a"}),
        )
        .await;
    producer.raw("item.created", br#"{"application_id":"bad id","type":"item.created","content":{"x":"PAYLOAD-CANARY-7f3a"}}"#).await;
    rx.wait_for("/s", 3).await; // test call, failed attempt, retried attempt
    let bearer = rx_auth.wait_for("/a", 1).await[0].header("authorization");
    assert!(bearer.starts_with("Bearer tok-logs-"), "{bearer}");
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());

    let logs = log.lock().unwrap().join("\n");
    assert!(
        logs.contains("delivered") && logs.contains("retry scheduled"),
        "the run was logged"
    );
    for (what, needle) in [
        ("first secret", hook["secret"].as_str().unwrap()),
        ("rotated secret", rotated["secret"].as_str().unwrap()),
        ("application token", token.as_str()),
        ("operator token", OPERATOR),
        ("a wrong token", "wft_wrong-token-in-a-failed-call"),
        ("payload", "PAYLOAD-CANARY-7f3a"),
        ("any secret prefix", "whsec_"),
        ("OAuth2 client secret", "LOG-SECRET-CANARY"),
        ("bearer token", bearer.trim_start_matches("Bearer ")),
        ("client certificate key", "PRIVATE KEY"),
    ] {
        assert!(!logs.contains(needle), "{what} found in the logs");
        assert!(!metrics.contains(needle), "{what} found in the metrics");
    }

    producer.close().await;
    let settings =
        webhook_fanout::Settings::from_map(&[("WF_NAMESPACE".to_string(), ns.to_string())].into())
            .unwrap();
    crate::common::delete_namespace(&ns, &settings).await;
}
