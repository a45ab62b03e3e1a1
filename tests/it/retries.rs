//! Retries through the TTL delay tiers, dead letters after the max age, and
//! the operator's tools (list, show, replay, discard), on a millisecond clock.

use std::time::Duration;

use crate::common::receiver::Receiver;
use crate::common::{Fixture, OPERATOR, Producer, TestService, eventually};
use serde_json::{Value, json};

const FAST: &[(&str, &str)] = &[
    ("WF_RETRY_SCHEDULE", "200ms,400ms,800ms"),
    ("WF_MAX_EVENT_AGE", "3s"),
];

async fn dead_letters(svc: &TestService, query: &str) -> Value {
    let (s, body) = svc
        .call(
            "GET",
            &format!("/v1/dead-letters{query}"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(s, 200, "{body}");
    body
}

async fn wait_dead_letters(svc: &TestService, n: usize) -> Vec<Value> {
    svc.metric_reaches("webhooks_dead_lettered_total", n as f64)
        .await;
    eventually(Duration::from_secs(10), "dead letters listed", || async {
        let items = dead_letters(svc, "").await["items"]
            .as_array()
            .unwrap()
            .clone();
        (items.len() >= n).then_some(items)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_come_back_with_growing_gaps_then_one_dead_letter() {
    let svc = Fixture::service(FAST).await;
    let rx = Receiver::start(500).await;
    let hook = svc.webhook("app_g", &rx.url("/g"), &["item.created"]).await;
    let producer = Producer::connect(&svc.ns).await;
    producer
        .event("ev-g", "app_g", "item.created", json!({}))
        .await;

    let items = wait_dead_letters(&svc, 1).await;
    let got = rx.at("/g");
    assert!(
        got.len() >= 4,
        "at least four attempts within 3 s, got {}",
        got.len()
    );
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.header("webhook-attempt"), (i + 1).to_string());
        assert_eq!(r.header("webhook-id"), "ev-g", "stable across retries");
        assert_eq!(r.body, got[0].body, "same bytes on every retry");
    }
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].at - w[0].at).collect();
    for (gap, tier) in gaps.iter().zip([200u64, 400, 800, 800, 800]) {
        assert!(
            *gap >= Duration::from_millis(tier - 20),
            "gap {gap:?} shorter than the {tier} ms tier"
        );
    }
    assert!(gaps[2] > gaps[0], "gaps grow: {gaps:?}");

    assert_eq!(items.len(), 1, "exactly one dead letter per job");
    let d = &items[0];
    assert_eq!(d["event_id"], "ev-g");
    assert_eq!(
        (d["application_id"].as_str(), d["webhook_id"].as_str()),
        (Some("app_g"), hook["id"].as_str())
    );
    assert_eq!(d["type"], "item.created");
    assert_eq!(d["reason"], "max_age_exceeded");
    assert_eq!(d["attempts"], got.len());
    assert_eq!(d["history"].as_array().unwrap().len(), got.len());
    assert_eq!(
        (d["last_status"].clone(), d["last_error"].clone()),
        (json!(500), json!("HTTP 500"))
    );
    assert!(d["first_attempt_at"].is_string() && d["last_attempt_at"].is_string());
    assert_eq!(d["body"]["type"], "item.created");
    for tier in ["200ms", "400ms", "800ms"] {
        let sample = format!(r#"webhooks_retries_scheduled_total{{tier="{tier}"}}"#);
        assert!(svc.metric(&sample).await >= 1.0, "{sample}");
    }

    producer.close().await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_fails_twice_gets_the_third_attempt_and_no_dead_letter() {
    let f = Fixture::start(FAST).await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    rx.then(&[500, 503]);
    svc.webhook("app_3", &rx.url("/3"), &["item.created"]).await;
    producer
        .event("ev-3", "app_3", "item.created", json!({}))
        .await;

    let got = rx.wait_for("/3", 3).await;
    assert_eq!(got[2].header("webhook-attempt"), "3");
    svc.metric_reaches(r#"webhooks_deliveries_total{outcome="success"}"#, 1.0)
        .await;
    assert_eq!(svc.metric("webhooks_dead_lettered_total").await, 0.0);
    assert_eq!(dead_letters(svc, "").await["items"], json!([]));

    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_is_stable_then_replay_and_discard() {
    let svc = Fixture::service(&[("WF_RETRY_SCHEDULE", "100ms"), ("WF_MAX_EVENT_AGE", "1s")]).await;
    let rx = Receiver::start(500).await;
    let a = svc
        .webhook("app_p", &rx.url("/a"), &["transfer.created"])
        .await;
    svc.webhook("app_p", &rx.url("/b"), &["transfer.updated"])
        .await;
    let producer = Producer::connect(&svc.ns).await;
    for i in 0..3 {
        producer
            .event(
                &format!("ev-p-{i}"),
                "app_p",
                "transfer.created",
                json!({"i": i}),
            )
            .await;
    }
    producer
        .event("ev-p-u", "app_p", "transfer.updated", json!({}))
        .await;
    let first = wait_dead_letters(&svc, 4).await;
    assert_eq!(first.len(), 4);
    svc.metric_reaches(r#"webhooks_queue_depth{queue="dead"}"#, 4.0)
        .await;
    let again = dead_letters(&svc, "").await["items"].clone();
    assert_eq!(json!(first), again, "listing twice shows the same items");

    // Filters and paging.
    let only_updated = dead_letters(&svc, "?type=transfer.updated").await;
    assert_eq!(only_updated["items"].as_array().unwrap().len(), 1);
    let by_webhook =
        dead_letters(&svc, &format!("?webhook_id={}", a["id"].as_str().unwrap())).await;
    assert_eq!(by_webhook["items"].as_array().unwrap().len(), 3);
    let page1 = dead_letters(&svc, "?limit=3").await;
    assert_eq!(page1["items"].as_array().unwrap().len(), 3);
    let cursor = page1["next_cursor"]
        .as_str()
        .expect("a next cursor")
        .to_string();
    let page2 = dead_letters(&svc, &format!("?limit=3&cursor={cursor}")).await;
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    assert_eq!(page2["next_cursor"], Value::Null);
    assert_ne!(page2["items"][0]["id"], page1["items"][0]["id"]);

    // Show one.
    let id = first[3]["id"].as_str().unwrap();
    let (s, shown) = svc
        .call(
            "GET",
            &format!("/v1/dead-letters/{id}"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!((s, &shown), (200, &first[3]));

    // Discard one; it leaves the listings.
    let discard = first.iter().find(|d| d["event_id"] == "ev-p-u").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = svc
        .call(
            "DELETE",
            &format!("/v1/dead-letters/{discard}"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = svc
        .call(
            "GET",
            &format!("/v1/dead-letters/{discard}"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(s, 404);

    // The receiver recovers; replay everything left: each delivered once with its Webhook-Id.
    rx.set_status(200);
    let before = rx.at("/a").len();
    let (s, r) = svc
        .call(
            "POST",
            "/v1/dead-letters/replay",
            Some(OPERATOR),
            Some(json!({"application_id": "app_p"})),
        )
        .await;
    assert_eq!((s, r["replayed"].clone()), (200, json!(3)), "{r}");
    svc.metric_reaches(r#"webhooks_deliveries_total{outcome="success"}"#, 3.0)
        .await;
    let replayed: Vec<String> = rx.at("/a")[before..]
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    let mut sorted = replayed.clone();
    sorted.sort();
    assert_eq!(sorted, ["ev-p-0", "ev-p-1", "ev-p-2"]);
    assert!(
        rx.at("/b")
            .iter()
            .all(|r| r.header("webhook-id") == "ev-p-u")
    );
    assert_eq!(dead_letters(&svc, "").await["items"], json!([]));
    let (s, _) = svc
        .call(
            "POST",
            &format!("/v1/dead-letters/{id}/replay"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(s, 404, "a replayed dead letter is gone");

    producer.close().await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_webhooks_drop_jobs_and_disabled_ones_dead_letter_them() {
    let svc = Fixture::service(&[("WF_RETRY_SCHEDULE", "300ms"), ("WF_MAX_EVENT_AGE", "1h")]).await;
    let rx = Receiver::start(500).await;
    let gone = svc
        .webhook("app_w", &rx.url("/gone"), &["item.created"])
        .await;
    let off = svc
        .webhook("app_w", &rx.url("/off"), &["item.created"])
        .await;
    let producer = Producer::connect(&svc.ns).await;
    producer
        .event("ev-w", "app_w", "item.created", json!({}))
        .await;
    rx.wait_for("/gone", 1).await;
    rx.wait_for("/off", 1).await;

    let path = |h: &Value| {
        format!(
            "/v1/applications/app_w/webhooks/{}",
            h["id"].as_str().unwrap()
        )
    };
    assert_eq!(
        svc.call("DELETE", &path(&gone), Some(OPERATOR), None)
            .await
            .0,
        204
    );
    assert_eq!(
        svc.call(
            "PATCH",
            &path(&off),
            Some(OPERATOR),
            Some(json!({"enabled": false}))
        )
        .await
        .0,
        200
    );

    svc.metric_reaches(
        r#"webhooks_jobs_dropped_total{reason="webhook_deleted"}"#,
        1.0,
    )
    .await;
    let items = wait_dead_letters(&svc, 1).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["reason"], "webhook_disabled");
    assert_eq!(items[0]["webhook_id"], off["id"]);
    assert_eq!(
        (rx.at("/gone").len(), rx.at("/off").len()),
        (1, 1),
        "no further attempts"
    );

    // A replay of a deleted webhook's dead letter is refused with a clear error.
    assert_eq!(
        svc.call("DELETE", &path(&off), Some(OPERATOR), None)
            .await
            .0,
        204
    );
    let id = items[0]["id"].as_str().unwrap();
    let (s, body) = svc
        .call(
            "POST",
            &format!("/v1/dead-letters/{id}/replay"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (409, Some("webhook_deleted")),
        "{body}"
    );

    producer.close().await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_429_is_respected() {
    let f = Fixture::start(&[
        ("WF_RETRY_SCHEDULE", "100ms,1500ms"),
        ("WF_MAX_EVENT_AGE", "1h"),
    ])
    .await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    rx.retry_after("1");
    rx.then(&[429]);
    svc.webhook("app_429", &rx.url("/r"), &["item.created"])
        .await;
    producer
        .event("ev-429", "app_429", "item.created", json!({}))
        .await;

    let got = rx.wait_for("/r", 2).await;
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(1480),
        "waited the 1500ms tier, not 100ms: {gap:?}"
    );
    assert!(
        svc.metric(r#"webhooks_retries_scheduled_total{tier="1500ms"}"#)
            .await
            >= 1.0
    );

    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_operator_reaches_dead_letters() {
    let svc = Fixture::service(&[]).await;
    let admin = svc.token("app_o", "admin").await;
    let (s, _) = svc
        .call("GET", "/v1/dead-letters", Some(&admin), None)
        .await;
    assert_eq!(s, 403);
    let (s, b) = svc
        .call("GET", "/v1/dead-letters?limit=0", Some(OPERATOR), None)
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("invalid_limit"))
    );
    let (s, _) = svc
        .call("GET", "/v1/dead-letters/dl_999", Some(OPERATOR), None)
        .await;
    assert_eq!(s, 404);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_dropped_from_the_schedule_still_returns_its_jobs() {
    let ns = crate::common::Namespace::new();
    let old = Fixture::join(
        &ns,
        &[("WF_RETRY_SCHEDULE", "1s"), ("WF_MAX_EVENT_AGE", "1h")],
    )
    .await;
    let rx = Receiver::start(200).await;
    rx.then(&[500]);
    old.webhook("app_s", &rx.url("/s"), &["item.created"]).await;
    let producer = Producer::connect(&ns).await;
    producer
        .event("ev-s", "app_s", "item.created", json!({}))
        .await;
    old.metric_reaches(r#"webhooks_retries_scheduled_total{tier="1s"}"#, 1.0)
        .await;
    let old_settings = old.settings.clone();
    old.stop().await;

    // Redeployed with a schedule that no longer has the 1s tier: it starts,
    // and the job waiting in the old tier still comes back and is delivered.
    let new = Fixture::join(
        &ns,
        &[
            ("WF_RETRY_SCHEDULE", "200ms,2s"),
            ("WF_MAX_EVENT_AGE", "1h"),
        ],
    )
    .await;
    let got = rx.wait_for("/s", 2).await;
    assert_eq!(got[1].header("webhook-attempt"), "2");
    new.metric_reaches(r#"webhooks_deliveries_total{outcome="success"}"#, 1.0)
        .await;

    producer.close().await;
    let new_settings = new.settings.clone();
    new.stop().await;
    crate::common::delete_namespace(&ns, &old_settings).await;
    crate::common::delete_namespace(&ns, &new_settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_carry_retries_and_dead_letters_too() {
    let svc = Fixture::service(&[
        ("WF_QUEUE_TYPE", "quorum"),
        ("WF_RETRY_SCHEDULE", "200ms"),
        ("WF_MAX_EVENT_AGE", "1s"),
    ])
    .await;
    let ok = Receiver::start(200).await;
    ok.then(&[500, 500]);
    let bad = Receiver::start(500).await;
    svc.webhook("app_q", &ok.url("/ok"), &["item.created"])
        .await;
    svc.webhook("app_q", &bad.url("/bad"), &["item.created"])
        .await;
    let producer = Producer::connect(&svc.ns).await;
    producer
        .event("ev-q", "app_q", "item.created", json!({}))
        .await;

    let got = ok.wait_for("/ok", 3).await;
    assert_eq!(got[2].header("webhook-attempt"), "3");
    let items = wait_dead_letters(&svc, 1).await;
    assert_eq!(
        items[0]["webhook_id"]
            .as_str()
            .map(|s| s.starts_with("wh_")),
        Some(true)
    );
    assert_eq!(items[0]["reason"], "max_age_exceeded");

    producer.close().await;
    svc.stop().await;
}
