//! Extra request headers per webhook (`headers`): sent with every delivery
//! and test of that webhook only (its neighbour on the same receiver gets
//! none), shown in every view, refused naming the field when they would
//! replace the service's own headers or are malformed, and cleared by
//! `null`.

use serde_json::{Value, json};

use crate::common::{Fixture, OPERATOR};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_headers_reach_their_webhook_only_and_bad_ones_are_refused() {
    let f = Fixture::start(&[]).await;
    let (svc, rx) = (&f.svc, &f.rx);
    let app = "app_headers";
    let path = format!("/v1/applications/{app}/webhooks");
    let extra = json!({"X-Api-Key": "k-123", "User-Agent": "their-gateway/1"});
    let body = json!({"url": rx.url("/with"), "events": ["item.created"], "headers": extra});
    let (status, with) = svc.call("POST", &path, Some(OPERATOR), Some(body)).await;
    assert_eq!((status, &with["headers"]), (201, &extra), "{with}");
    let plain = svc.webhook(app, &rx.url("/plain"), &["item.created"]).await;
    assert_eq!(plain["headers"], json!({}), "none by default");

    for i in 0..5 {
        f.producer
            .event(&format!("ev-h-{i}"), app, "item.created", json!({"i": i}))
            .await;
    }
    for got in rx.wait_for("/with", 5).await {
        assert_eq!(got.header("x-api-key"), "k-123");
        assert_eq!(got.header("user-agent"), "their-gateway/1", "replaces ours");
        assert!(!got.header("webhook-signature").is_empty(), "ours stay");
    }
    for got in rx.wait_for("/plain", 5).await {
        assert_eq!(got.header("x-api-key"), "", "a neighbour gets none");
        assert!(got.header("user-agent").starts_with("webhook-fanout"));
    }

    // Refused, naming the field, and nothing changes.
    let one = format!("{path}/{}", with["id"].as_str().unwrap());
    let many: serde_json::Map<String, Value> =
        (0..21).map(|i| (format!("X-{i}"), json!("v"))).collect();
    for (headers, says) in [
        (json!({"Webhook-Id": "x"}), "set by the service"),
        (json!({"content-type": "text/plain"}), "set by the service"),
        (json!({"Host": "elsewhere"}), "set by the service"),
        (
            json!({"Transfer-Encoding": "chunked"}),
            "set by the service",
        ),
        (json!({"X Bad": "x"}), "not a header name"),
        (json!({"X-Line": "a\r\nInjected: 1"}), "printable"),
        (json!({"X-Num": 1}), "must be a string"),
        (json!(["X-Api-Key"]), "must be an object"),
        (Value::Object(many), "at most 20"),
    ] {
        let (status, body) = svc
            .call(
                "PATCH",
                &one,
                Some(OPERATOR),
                Some(json!({"headers": headers})),
            )
            .await;
        assert_eq!(status, 400, "{headers}: {body}");
        assert_eq!(body["error"]["code"], "invalid_headers");
        assert_eq!(body["error"]["field"], "headers");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{headers}: {message}");
    }
    let (_, shown) = svc.call("GET", &one, Some(OPERATOR), None).await;
    assert_eq!(shown["headers"], extra, "unchanged by the refused PATCHes");

    // The test call carries them too; null clears them.
    let (status, sent) = svc
        .call("POST", &format!("{one}/test"), Some(OPERATOR), None)
        .await;
    assert_eq!((status, &sent["delivered"]), (200, &json!(true)), "{sent}");
    let test = rx.wait_for("/with", 6).await.pop().unwrap();
    assert_eq!(test.header("x-api-key"), "k-123");
    let (status, cleared) = svc
        .call(
            "PATCH",
            &one,
            Some(OPERATOR),
            Some(json!({"headers": null})),
        )
        .await;
    assert_eq!((status, &cleared["headers"]), (200, &json!({})));
    f.stop().await;
}
