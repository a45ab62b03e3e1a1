//! SSRF: a target that turned private after validation (DNS rebinding, or a
//! record written before the rules) is refused at connect time.

use crate::common::{Fixture, TestService};
use redis::AsyncCommands;
use serde_json::json;

async fn plant(svc: &TestService, id: &str, url: &str) {
    plant_with(svc, id, url, json!({})).await;
}

/// A record written past the API's checks, with `extra` fields.
async fn plant_with(svc: &TestService, id: &str, url: &str, extra: serde_json::Value) {
    let mut record = json!({
        "id": id, "application_id": "app_x", "url": url, "name": null,
        "events": ["item.created"], "enabled": true, "created_at": 0, "updated_at": 0,
        "secrets": [{"value": "whsec_c3NyZi10ZXN0LXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm", "expires_at": null}],
    });
    for (k, v) in extra.as_object().unwrap() {
        record[k] = v.clone();
    }
    let mut redis = redis::Client::open(crate::common::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: i64 = redis
        .hset(format!("{}:webhooks:app_x", svc.ns), id, record.to_string())
        .await
        .unwrap();
    let _: i64 = redis
        .publish(format!("{}:changes", svc.ns), "app_x")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_targets_are_refused_at_connect_time() {
    let f = Fixture::start(&[
        ("WF_ALLOW_PRIVATE_TARGETS", "false"),
        ("WF_RETRY_SCHEDULE", "100ms"),
        ("WF_MAX_EVENT_AGE", "1s"),
    ])
    .await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    // Refused when saved...
    let (s, b) = svc
        .call(
            "POST",
            "/v1/applications/app_x/webhooks",
            Some(crate::common::OPERATOR),
            Some(json!({"url": rx.url("/x"), "events": ["item.created"]})),
        )
        .await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_url")));
    // ...and at connect time, for a name that resolves to loopback and for a literal address.
    let port = rx.addr.port();
    plant(svc, "wh_name", &format!("http://localhost:{port}/name")).await;
    plant(
        svc,
        "wh_literal",
        &format!("http://127.0.0.1:{port}/literal"),
    )
    .await;
    plant(svc, "wh_v6", &format!("http://[::1]:{port}/v6")).await;

    producer
        .event("ev-x", "app_x", "item.created", json!({}))
        .await;
    svc.metric_reaches("webhooks_dead_lettered_total", 3.0)
        .await;
    assert!(
        rx.received().is_empty(),
        "no request reached the private target"
    );
    let (_, page) = svc
        .call(
            "GET",
            "/v1/dead-letters",
            Some(crate::common::OPERATOR),
            None,
        )
        .await;
    let reasons: Vec<(String, String)> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["webhook_id"].as_str().unwrap().to_string(),
                d["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        reasons.contains(&("wh_literal".into(), "target_refused".into())),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("wh_v6".into(), "target_refused".into())),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("wh_name".into(), "max_age_exceeded".into())),
        "{reasons:?}"
    );
    let named = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["webhook_id"] == "wh_name")
        .unwrap();
    assert!(
        named["last_error"].as_str().unwrap().contains("non-public"),
        "{named}"
    );

    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_of_non_public_targets_is_refused_at_create() {
    let svc = Fixture::service(&[
        ("WF_ALLOW_HTTP", "false"),
        ("WF_ALLOW_PRIVATE_TARGETS", "false"),
    ])
    .await;
    let refused = [
        "https://127.0.0.1/",
        "https://127.8.9.10/",
        "https://10.0.0.1/",
        "https://172.16.5.4/",
        "https://192.168.1.1/",
        "https://169.254.169.254/latest/meta-data/",
        "https://100.64.0.1/",
        "https://0.0.0.0/",
        "https://224.0.0.1/",
        "https://255.255.255.255/",
        "https://[::1]/",
        "https://[::]/",
        "https://[fd00::1]/",
        "https://[fe80::1]/",
        "https://[ff02::1]/",
        "https://[::ffff:127.0.0.1]/",
        "https://[::ffff:a9fe:a9fe]/",
        "https://[64:ff9b::a00:1]/",
        "https://localhost/",
        "https://user:pw@1.1.1.1/",
        "http://1.1.1.1/",
    ];
    for url in refused {
        let body = json!({"url": url, "events": ["item.created"]});
        let (s, b) = svc
            .call(
                "POST",
                "/v1/applications/app_t/webhooks",
                Some(crate::common::OPERATOR),
                Some(body),
            )
            .await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (400, Some("invalid_url")),
            "{url}: {b}"
        );
    }
    let public = json!({"url": "https://1.1.1.1/hook", "events": ["item.created"]});
    let (s, _) = svc
        .call(
            "POST",
            "/v1/applications/app_t/webhooks",
            Some(crate::common::OPERATOR),
            Some(public),
        )
        .await;
    assert_eq!(
        s, 201,
        "a public address is accepted (nothing is sent to it)"
    );
    svc.stop().await;
}

/// A token endpoint at a literal private address, in a record written past
/// the API (an import, or from before the rules), is refused before any
/// request, as callback URLs are: the attempt is an `auth_error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_token_url_is_refused_before_any_request() {
    let tokens = crate::oauth::TokenServer::start(&[("ssrf", "ssrf-secret", 3600)]).await;
    assert!(
        tokens.url.starts_with("http://127.0.0.1:"),
        "{}",
        tokens.url
    );
    let f = Fixture::start(&[
        ("WF_ALLOW_PRIVATE_TARGETS", "false"),
        ("WF_RETRY_SCHEDULE", "100ms"),
        ("WF_MAX_EVENT_AGE", "1h"),
    ])
    .await;
    let auth = crate::oauth::auth(&tokens.url, "ssrf", "ssrf-secret");
    plant_with(
        &f.svc,
        "wh_token",
        "http://93.184.215.14/hook",
        json!({"auth": auth}),
    )
    .await;
    f.producer
        .event("ev-t", "app_x", "item.created", json!({}))
        .await;
    let hook = json!({"application_id": "app_x", "id": "wh_token"});
    let refused = crate::common::eventually(
        std::time::Duration::from_secs(20),
        "the refused token request in the history",
        || async {
            let items = f.svc.attempts(&hook).await;
            items.into_iter().find(|a| a["error_class"] == "auth_error")
        },
    )
    .await;
    let error = refused["error"].as_str().unwrap();
    assert!(error.contains("token_url refused"), "{refused}");
    assert!(
        tokens.issued().is_empty(),
        "no request reached the token endpoint"
    );
    f.stop().await;
}
