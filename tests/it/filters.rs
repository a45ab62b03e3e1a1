//! Content filters per webhook (`filter`, CEL): beside an unfiltered
//! webhook on the same receiver, a filtered one gets exactly the events its
//! filter matches; a filter on a missing field matches nothing and breaks
//! nothing; bad filters are refused naming the field; `null` restores
//! delivery; filter-check answers true and false.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::common::{Fixture, OPERATOR, TestService, eventually};

const TYPE: &str = "payment.transaction.updated";

/// Creates a webhook of `app` for [`TYPE`] with `filter`; its id.
async fn hook(svc: &TestService, app: &str, url: &str, filter: Value) -> String {
    let body = json!({"url": url, "events": [TYPE], "filter": filter});
    let path = format!("/v1/applications/{app}/webhooks");
    let (status, hook) = svc.call("POST", &path, Some(OPERATOR), Some(body)).await;
    assert_eq!(status, 201, "{hook}");
    assert_eq!(hook["filter"], filter, "the view shows the filter");
    hook["id"].as_str().unwrap().to_string()
}

/// The distinct event ids `path` received.
fn ids_at(rx: &crate::common::receiver::Receiver, path: &str) -> BTreeSet<String> {
    rx.at(path).iter().map(|r| r.header("webhook-id")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_webhook_gets_exactly_the_matching_events_beside_an_unfiltered_one() {
    let f = Fixture::start(&[]).await;
    let (svc, rx) = (&f.svc, &f.rx);
    let app = "app_filters";
    hook(svc, app, &rx.url("/all"), Value::Null).await;
    let final_only = json!("content.status in ['ACSC', 'RJCT']");
    hook(svc, app, &rx.url("/final"), final_only).await;
    let missing = hook(
        svc,
        app,
        &rx.url("/missing"),
        json!("content.reason == 'AC01'"),
    )
    .await;

    let statuses = ["PDNG", "ACSC", "RJCT"];
    let mut finals = BTreeSet::new();
    for i in 0..30 {
        let id = format!("ev-pay-{i}");
        let status = statuses[i % 3];
        if status != "PDNG" {
            finals.insert(id.clone());
        }
        let content = json!({"payment_transaction_id": format!("tr_{i}"), "status": status});
        f.producer.event(&id, app, TYPE, content).await;
    }
    rx.wait_for("/all", 30).await;
    rx.wait_for("/final", finals.len()).await;
    // Every job fan-out made is counted: 30 for /all and 20 for /final, none
    // for /missing, whose filter failed on each event (no `reason`).
    svc.metric_reaches("webhooks_filter_errors_total", 30.0)
        .await;
    assert_eq!(svc.metric("webhooks_jobs_enqueued_total").await, 50.0);
    assert_eq!(ids_at(rx, "/final"), finals, "exactly the final ones");
    assert_eq!(ids_at(rx, "/all").len(), 30, "the unfiltered one gets all");
    assert!(rx.at("/missing").is_empty());
    assert_eq!(svc.metric("webhooks_filter_errors_total").await, 30.0);

    // "Send a test" ignores the filter: it tests the connection.
    let base = format!("/v1/applications/{app}/webhooks/{missing}");
    let (status, sent) = svc
        .call("POST", &format!("{base}/test"), Some(OPERATOR), None)
        .await;
    assert_eq!((status, &sent["delivered"]), (200, &json!(true)), "{sent}");

    // A PATCH to null restores delivery of every event of its types (an
    // event each look: the first may still meet the cached filter).
    let (status, patched) = svc
        .call(
            "PATCH",
            &base,
            Some(OPERATOR),
            Some(json!({"filter": null})),
        )
        .await;
    assert_eq!((status, &patched["filter"]), (200, &Value::Null));
    let mut looks = 0;
    let producer = &f.producer;
    eventually(
        std::time::Duration::from_secs(15),
        "the unfiltered event",
        || {
            looks += 1;
            let publish = looks % 25 == 1;
            async move {
                if publish {
                    let content = json!({"payment_transaction_id": "tr_late", "status": "PDNG"});
                    let id = format!("ev-late-{looks}");
                    producer.event(&id, app, TYPE, content).await;
                }
                ids_at(rx, "/missing")
                    .iter()
                    .any(|i| i.starts_with("ev-late-"))
                    .then_some(())
            }
        },
    )
    .await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_filters_are_refused_naming_the_field_and_filter_check_tries_one() {
    let svc = Fixture::service(&[]).await;
    let app = "app_bad_filters";
    let path = format!("/v1/applications/{app}/webhooks");
    let create = |filter: Value| {
        let body = json!({"url": "http://127.0.0.1:9/x", "events": [TYPE], "filter": filter});
        svc.call("POST", &path, Some(OPERATOR), Some(body))
    };
    let long = format!("type == '{}'", "x".repeat(2_100));
    for (filter, says) in [
        (json!("content.status =="), "does not compile"),
        (json!(42), "must be a string"),
        (json!(["type == 'a'"]), "must be a string"),
        (json!("type + 1 == 2"), "cannot run"),
        (json!("content.amount * 2"), "true or false"),
        (
            json!("contnet.status == 'ACSC'"),
            "unknown variable `contnet`",
        ),
        (json!(long), "characters long"),
        (
            json!("content.items.exists(a, content.items.exists(b, a == b))"),
            "inside another",
        ),
    ] {
        let (status, body) = create(filter.clone()).await;
        assert_eq!(status, 400, "{filter}: {body}");
        assert_eq!(body["error"]["code"], "invalid_filter", "{filter}: {body}");
        assert_eq!(body["error"]["field"], "filter");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{filter}: {message}");
    }
    // A syntax error says where.
    let (_, body) = create(json!("type == 'a' &&")).await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("line 1, column"), "{message}");

    // A PATCH with a bad filter changes nothing.
    let (status, good) = create(json!("content.amount > 100")).await;
    assert_eq!(status, 201);
    let one = format!("{path}/{}", good["id"].as_str().unwrap());
    let bad = json!({"filter": "content.amount >", "name": "renamed"});
    let (status, _) = svc.call("PATCH", &one, Some(OPERATOR), Some(bad)).await;
    assert_eq!(status, 400);
    let (_, shown) = svc.call("GET", &one, Some(OPERATOR), None).await;
    assert_eq!(
        (&shown["filter"], &shown["name"]),
        (&json!("content.amount > 100"), &Value::Null)
    );

    // filter-check: true, false (also for a missing field), and refusals.
    let check = format!("{path}/filter-check");
    let event = json!({"type": TYPE, "content": {"status": "ACSC", "amount": 150}});
    for (filter, matches) in [
        ("content.status == 'ACSC' && content.amount > 100", true),
        ("content.status == 'RJCT'", false),
        ("content.reason == 'AC01'", false),
        (
            &format!("application_id == '{app}' && type == '{TYPE}'") as &str,
            true,
        ),
    ] {
        let body = json!({"filter": filter, "event": event});
        let (status, answer) = svc.call("POST", &check, Some(OPERATOR), Some(body)).await;
        assert_eq!(
            (status, answer),
            (200, json!({"matches": matches})),
            "{filter}"
        );
    }
    let (status, answer) = svc
        .call(
            "POST",
            &check,
            Some(OPERATOR),
            Some(json!({"filter": "type ==", "event": event})),
        )
        .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!("invalid_filter"))
    );
    let (status, answer) = svc
        .call(
            "POST",
            &check,
            Some(OPERATOR),
            Some(json!({"filter": "true"})),
        )
        .await;
    assert_eq!((status, &answer["error"]["field"]), (400, &json!("event")));
    // For admins and the operator: a member may not.
    let member = svc.token(app, "member").await;
    let admin = svc.token(app, "admin").await;
    let body = json!({"filter": "true", "event": event});
    let (status, _) = svc
        .call("POST", &check, Some(&member), Some(body.clone()))
        .await;
    assert_eq!(status, 403);
    let (status, _) = svc.call("POST", &check, Some(&admin), Some(body)).await;
    assert_eq!(status, 200);
    svc.stop().await;
}
