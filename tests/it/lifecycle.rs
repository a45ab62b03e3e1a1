//! Endpoint lifecycle (issue 15): receivers say stop (`410 Gone`,
//! `webhook-delivery: disable | abort-message`), webhooks failing long
//! enough are disabled, every change is an operational event on
//! `{ns}.operational`, and what a disabled webhook missed comes back, once
//! and in order, with a paced catch-up. Receivers share one host and port,
//! answering per path.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use serde_json::{Value, json};

use crate::common::{Fixture, OPERATOR, TestService, amqp_url, eventually, sign};

/// A queue of our own bound to `{ns}.operational`, as an upstream service
/// would bind one; exclusive, so it goes with the connection.
struct Operational {
    conn: Connection,
    consumer: lapin::Consumer,
    seen: Vec<Value>,
}

impl Operational {
    async fn bind(svc: &TestService) -> Operational {
        let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let exchange = svc.names().operational();
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        ch.exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .unwrap();
        let exclusive = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        let queue = ch
            .queue_declare("".into(), exclusive, FieldTable::default())
            .await
            .unwrap();
        ch.queue_bind(
            queue.name().as_str().into(),
            exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let consumer = ch
            .basic_consume(
                queue.name().as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        Operational {
            conn,
            consumer,
            seen: Vec::new(),
        }
    }

    /// Waits (up to `within`) for an event of `kind` about `webhook`; every
    /// event seen is kept, in arrival order, in `seen`.
    async fn wait_for(&mut self, kind: &str, webhook: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(e) = self
                .seen
                .iter()
                .find(|e| e["type"] == kind && e["webhook_id"] == webhook)
            {
                return e.clone();
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let next = tokio::time::timeout(left, self.consumer.next()).await;
            let Ok(Some(Ok(delivery))) = next else {
                panic!(
                    "no {kind} for {webhook} within {within:?}; seen: {:?}",
                    self.seen
                );
            };
            delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .unwrap();
            assert_eq!(
                delivery.routing_key.as_str(),
                serde_json::from_slice::<Value>(&delivery.data).unwrap()["type"],
                "the routing key is the type"
            );
            assert_eq!(delivery.properties.delivery_mode(), &Some(2), "persistent");
            self.seen
                .push(serde_json::from_slice(&delivery.data).unwrap());
        }
    }

    /// The `webhook.*` types seen about `webhook`, in order (without the
    /// `delivery.dead_lettered` of each event it missed).
    fn kinds(&self, webhook: &str) -> Vec<String> {
        self.seen
            .iter()
            .filter(|e| e["webhook_id"] == webhook)
            .map(|e| e["type"].as_str().unwrap().to_string())
            .filter(|kind| kind.starts_with("webhook."))
            .collect()
    }

    async fn close(self) {
        let _ = self.conn.close(200, "done".into()).await;
    }
}

fn path(hook: &Value) -> String {
    format!(
        "/v1/applications/{}/webhooks/{}",
        hook["application_id"].as_str().unwrap(),
        hook["id"].as_str().unwrap()
    )
}

fn id(hook: &Value) -> &str {
    hook["id"].as_str().unwrap()
}

async fn read(svc: &TestService, hook: &Value) -> Value {
    let (status, body) = svc.call("GET", &path(hook), Some(OPERATOR), None).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn dead_letters(svc: &TestService, hook: &Value) -> Vec<Value> {
    let query = format!("/v1/dead-letters?webhook_id={}&limit=500", id(hook));
    let (status, page) = svc.call("GET", &query, Some(OPERATOR), None).await;
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().unwrap().clone()
}

async fn wait_dead_letters(svc: &TestService, hook: &Value, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(20), "dead letters", || async {
        let items = dead_letters(svc, hook).await;
        (items.len() >= n).then_some(items)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_say_stop_and_their_neighbours_on_the_host_are_untouched() {
    let f = Fixture::start(&[("WF_RETRY_SCHEDULE", "200ms"), ("WF_MAX_EVENT_AGE", "1h")]).await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    let mut ops = Operational::bind(svc).await;
    // One host and port: a healthy path, a gone one, one that asks to be
    // disabled while accepting, one that aborts a message.
    rx.set_path_status("/gone", 410);
    rx.set_path_header("/asks", "webhook-delivery", "disable");
    rx.set_path_status("/abort", 500);
    rx.set_path_header("/abort", "webhook-delivery", "abort-message");
    let events = ["item.created"];
    let ok = svc.webhook("app_stop", &rx.url("/ok"), &events).await;
    let gone = svc.webhook("app_stop", &rx.url("/gone"), &events).await;
    let asks = svc.webhook("app_stop", &rx.url("/asks"), &events).await;
    let abort = svc.webhook("app_stop", &rx.url("/abort"), &events).await;
    for hook in [&ok, &gone, &asks, &abort] {
        let created = ops
            .wait_for("webhook.created", id(hook), Duration::from_secs(10))
            .await;
        assert_eq!(created["application_id"], "app_stop");
        assert!(!created.to_string().contains("whsec_"), "never a secret");
    }

    producer
        .event("ev-stop-1", "app_stop", "item.created", json!({"n": 1}))
        .await;
    let disabled = ops
        .wait_for("webhook.disabled", id(&gone), Duration::from_secs(10))
        .await;
    assert_eq!(disabled["reason"], "gone");
    assert_eq!(disabled["application_id"], "app_stop");
    assert!(humantime::parse_rfc3339_weak(disabled["occurred_at"].as_str().unwrap()).is_ok());
    let now = read(svc, &gone).await;
    assert_eq!(
        (&now["enabled"], &now["disabled_reason"]),
        (&json!(false), &json!("gone"))
    );
    assert!(humantime::parse_rfc3339(now["disabled_at"].as_str().unwrap()).is_ok());

    let asked = ops
        .wait_for("webhook.disabled", id(&asks), Duration::from_secs(10))
        .await;
    assert_eq!(asked["reason"], "receiver_requested");
    assert_eq!(
        read(svc, &asks).await["disabled_reason"],
        "receiver_requested"
    );

    // Abort: one request, one dead letter that says the receiver asked; the
    // webhook stays enabled.
    let aborted = ops
        .wait_for(
            "delivery.dead_lettered",
            id(&abort),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        (&aborted["reason"], &aborted["event_id"]),
        (&json!("receiver_aborted"), &json!("ev-stop-1"))
    );
    let letters = wait_dead_letters(svc, &abort, 1).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["reason"], "receiver_aborted");
    assert_eq!(read(svc, &abort).await["enabled"], true);

    // Later events: the healthy path gets them all; the disabled ones get
    // no request, their events wait as dead letters.
    for n in 2..=5 {
        producer
            .event(
                &format!("ev-stop-{n}"),
                "app_stop",
                "item.created",
                json!({"n": n}),
            )
            .await;
    }
    rx.wait_for("/ok", 5).await;
    let letters = wait_dead_letters(svc, &gone, 5).await;
    assert!(
        letters.iter().all(|l| l["reason"] == "webhook_disabled"),
        "{letters:?}"
    );
    wait_dead_letters(svc, &asks, 4).await;
    // A later event whose first request to the healthy path fails: once its
    // retry (through the same delay tier) has arrived, a retry or a request
    // of any event above would have arrived before it.
    rx.then_at("/ok", &[500]);
    producer
        .event("ev-stop-6", "app_stop", "item.created", json!({"n": 6}))
        .await;
    rx.wait_for("/ok", 7).await;
    wait_dead_letters(svc, &abort, 6).await;
    assert_eq!(rx.at("/gone").len(), 1, "no request after the 410");
    assert_eq!(rx.at("/asks").len(), 1, "no request after it asked");
    assert_eq!(rx.at("/abort").len(), 6, "one request per event, no retry");
    let ok: std::collections::BTreeSet<String> = rx
        .at("/ok")
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    assert_eq!(
        (rx.at("/ok").len(), ok.len()),
        (7, 6),
        "the neighbour got every event once (and the last one's retry)"
    );
    svc.metric_reaches(r#"webhooks_disabled_total{reason="gone"}"#, 1.0)
        .await;
    // Operational events are counted when the broker confirms them.
    svc.metric_reaches(
        r#"webhooks_operational_events_total{type="webhook.disabled"}"#,
        2.0,
    )
    .await;
    ops.close().await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_gone_rule_off_a_410_is_retried_like_any_failure() {
    let f = Fixture::start(&[
        ("WF_RETRY_SCHEDULE", "100ms"),
        ("WF_MAX_EVENT_AGE", "1h"),
        ("WF_DISABLE_ON_GONE", "false"),
    ])
    .await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    rx.then_at("/gone", &[410, 410]);
    let hook = svc
        .webhook("app_keep", &rx.url("/gone"), &["item.created"])
        .await;
    producer
        .event("ev-keep", "app_keep", "item.created", json!({}))
        .await;
    let got = rx.wait_for("/gone", 3).await;
    assert!(got.iter().all(|r| r.header("webhook-id") == "ev-keep"));
    let now = read(svc, &hook).await;
    assert_eq!(
        (&now["enabled"], &now["disabled_reason"]),
        (&json!(true), &Value::Null)
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_failing_throughout_is_announced_disabled_and_recovers_after_re_enabling() {
    let f = Fixture::start(&[
        ("WF_RETRY_SCHEDULE", "100ms,200ms"),
        ("WF_MAX_EVENT_AGE", "1h"),
        ("WF_AUTO_DISABLE_AFTER", "3s"),
        ("WF_CIRCUIT_BREAKER_THRESHOLD", "3"),
    ])
    .await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    let mut ops = Operational::bind(svc).await;
    rx.set_path_status("/down", 503);
    let down = svc
        .webhook("app_fail", &rx.url("/down"), &["item.created"])
        .await;
    let fine = svc
        .webhook("app_fail", &rx.url("/fine"), &["item.created"])
        .await;
    let started = tokio::time::Instant::now();
    let mut n = 0;
    // Events keep coming while it fails.
    let disabled = loop {
        n += 1;
        producer
            .event(
                &format!("ev-fail-{n}"),
                "app_fail",
                "item.created",
                json!({"n": n}),
            )
            .await;
        let now = read(svc, &down).await;
        if now["enabled"] == false {
            break now;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never disabled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "not before the window"
    );
    assert_eq!(disabled["disabled_reason"], "failing");
    ops.wait_for("webhook.disabled", id(&down), Duration::from_secs(10))
        .await;
    assert_eq!(
        ops.kinds(id(&down)),
        ["webhook.created", "webhook.failing", "webhook.disabled"]
    );
    assert!(!rx.at("/down").is_empty());
    rx.wait_for("/fine", n).await;
    assert_eq!(read(svc, &fine).await["failing"], false);

    // Fixed and re-enabled by an admin: the first success says recovered.
    rx.set_path_status("/down", 200);
    let (status, body) = svc
        .call(
            "PATCH",
            &path(&down),
            Some(OPERATOR),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["disabled_reason"], &body["disabled_at"]),
        (&Value::Null, &Value::Null)
    );
    producer
        .event("ev-fail-after", "app_fail", "item.created", json!({}))
        .await;
    ops.wait_for("webhook.recovered", id(&down), Duration::from_secs(15))
        .await;
    assert_eq!(
        ops.kinds(id(&down)),
        [
            "webhook.created",
            "webhook.failing",
            "webhook.disabled",
            "webhook.updated",
            "webhook.recovered"
        ]
    );
    assert_eq!(read(svc, &down).await["failing"], false);
    ops.close().await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_disabled_webhook_missed_is_caught_up_once_and_in_order() {
    let f = Fixture::start(&[("WF_REPLAY_RATE", "50")]).await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    let hook = svc
        .webhook("app_catch", &rx.url("/catch"), &["item.created"])
        .await;
    let live = svc
        .webhook("app_catch", &rx.url("/live"), &["item.created"])
        .await;
    let secret = hook["secret"].as_str().unwrap().to_string();
    let (status, _) = svc
        .call(
            "PATCH",
            &path(&hook),
            Some(OPERATOR),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 200);
    let now = read(svc, &hook).await;
    assert_eq!(now["disabled_reason"], "admin");

    // Published while disabled, one after the other.
    let ids: Vec<String> = (0..40).map(|i| format!("ev-catch-{i:02}")).collect();
    for (i, event) in ids.iter().enumerate() {
        producer
            .event(event, "app_catch", "item.created", json!({"i": i}))
            .await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rx.wait_for("/live", ids.len()).await;
    wait_dead_letters(svc, &hook, ids.len()).await;
    assert!(rx.at("/catch").is_empty());

    // A catch-up of a disabled webhook is refused; the count is not.
    let replay = format!("{}/replay", path(&hook));
    let (status, body) = svc
        .call("POST", &replay, Some(OPERATOR), Some(json!({})))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("webhook_disabled"))
    );
    let (status, body) = svc
        .call(
            "POST",
            &replay,
            Some(OPERATOR),
            Some(json!({"dry_run": true})),
        )
        .await;
    assert_eq!((status, &body["total"]), (200, &json!(ids.len())));
    let (status, body) = svc
        .call(
            "POST",
            &replay,
            Some(OPERATOR),
            Some(json!({"since": "yesterday"})),
        )
        .await;
    assert_eq!((status, &body["error"]["field"]), (400, &json!("since")));

    svc.call(
        "PATCH",
        &path(&hook),
        Some(OPERATOR),
        Some(json!({"enabled": true})),
    )
    .await;
    let (status, body) = svc
        .call(
            "POST",
            &replay,
            Some(OPERATOR),
            Some(json!({"since": "2020-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!((status, &body["total"]), (202, &json!(ids.len())), "{body}");
    let (_, progress) = svc.call("GET", &replay, Some(OPERATOR), None).await;
    assert_eq!(progress["total"], ids.len());
    assert_eq!(
        progress["state"], "running",
        "paced: 40 at 50/s take most of a second"
    );
    let done = eventually(Duration::from_secs(20), "the catch-up done", || async {
        let (_, p) = svc.call("GET", &replay, Some(OPERATOR), None).await;
        (p["state"] == "done").then_some(p)
    })
    .await;
    assert_eq!(
        (&done["total"], &done["replayed"]),
        (&json!(40), &json!(40))
    );

    let got = rx.wait_for("/catch", ids.len()).await;
    // A live event after the catch-up ended queues behind every replay in
    // the webhook's backlog: once it has arrived, so has any replay twice.
    producer
        .event("ev-catch-after", "app_catch", "item.created", json!({}))
        .await;
    rx.wait_for("/catch", ids.len() + 1).await;
    let got_ids: Vec<String> = rx
        .at("/catch")
        .iter()
        .map(|r| r.header("webhook-id"))
        .filter(|id| id != "ev-catch-after")
        .collect();
    assert_eq!(got_ids, ids, "each once, in the order first received");
    for r in &got {
        assert_eq!(
            r.header("bridgeapi-signature"),
            sign::bridge(&secret, &r.body)
        );
    }
    assert!(dead_letters(svc, &hook).await.is_empty(), "settled");
    let live_got = rx
        .at("/live")
        .iter()
        .filter(|r| r.header("webhook-id") != "ev-catch-after")
        .count();
    assert_eq!(live_got, ids.len(), "the live neighbour got each once");
    assert!(svc.metric("webhooks_dead_letters_replayed_total").await >= 40.0);
    assert_eq!(read(svc, &live).await["enabled"], true);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_bulk_replay_takes_since_and_until() {
    let f = Fixture::start(&[
        ("WF_RETRY_SCHEDULE", "100ms"),
        ("WF_MAX_EVENT_AGE", "300ms"),
    ])
    .await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    rx.set_path_status("/late", 500);
    let hook = svc
        .webhook("app_window", &rx.url("/late"), &["item.created"])
        .await;
    producer
        .event("ev-window-1", "app_window", "item.created", json!({}))
        .await;
    let first = wait_dead_letters(svc, &hook, 1).await;
    let cut = first[0]["dead_lettered_at"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    producer
        .event("ev-window-2", "app_window", "item.created", json!({}))
        .await;
    wait_dead_letters(svc, &hook, 2).await;
    rx.set_path_status("/late", 200);
    let requests = |event: &str| {
        rx.at("/late")
            .iter()
            .filter(|r| r.header("webhook-id") == event)
            .count()
    };
    let (first_before, second_before) = (requests("ev-window-1"), requests("ev-window-2"));
    // Only the first: dead-lettered before one second past it.
    let until = humantime::format_rfc3339_seconds(
        humantime::parse_rfc3339(&cut).unwrap() + Duration::from_secs(1),
    )
    .to_string();
    let (status, body) = svc
        .call(
            "POST",
            "/v1/dead-letters/replay",
            Some(OPERATOR),
            Some(json!({"webhook_id": id(&hook), "until": until})),
        )
        .await;
    assert_eq!((status, &body["replayed"]), (200, &json!(1)), "{body}");
    eventually(Duration::from_secs(10), "the replay delivered", || async {
        (requests("ev-window-1") > first_before).then_some(())
    })
    .await;
    let left = dead_letters(svc, &hook).await;
    assert_eq!(left[0]["event_id"], "ev-window-2", "outside the window");
    // A live event after the replay queues behind anything it replayed.
    producer
        .event("ev-window-3", "app_window", "item.created", json!({}))
        .await;
    eventually(Duration::from_secs(10), "a later live event", || async {
        (requests("ev-window-3") > 0).then_some(())
    })
    .await;
    assert_eq!(requests("ev-window-2"), second_before, "not replayed");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_never_run_the_same_catch_up_twice() {
    let f = Fixture::start(&[("WF_REPLAY_RATE", "10")]).await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    let other = Fixture::join(&svc.ns, &[("WF_REPLAY_RATE", "10")]).await;
    let hook = svc
        .webhook("app_twice", &rx.url("/twice"), &["item.created"])
        .await;
    svc.call(
        "PATCH",
        &path(&hook),
        Some(OPERATOR),
        Some(json!({"enabled": false})),
    )
    .await;
    let ids: Vec<String> = (0..15).map(|i| format!("ev-twice-{i:02}")).collect();
    for event in &ids {
        producer
            .event(event, "app_twice", "item.created", json!({}))
            .await;
    }
    wait_dead_letters(svc, &hook, ids.len()).await;
    svc.call(
        "PATCH",
        &path(&hook),
        Some(OPERATOR),
        Some(json!({"enabled": true})),
    )
    .await;

    // Paced at 10/s, the first catch-up runs about 1.5 s: the second process
    // refuses to start another meanwhile.
    let replay = format!("{}/replay", path(&hook));
    let (status, body) = svc
        .call("POST", &replay, Some(OPERATOR), Some(json!({})))
        .await;
    assert_eq!((status, &body["total"]), (202, &json!(15)), "{body}");
    let (status, body) = other
        .call("POST", &replay, Some(OPERATOR), Some(json!({})))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("replay_running")),
        "{body}"
    );
    // Either process shows the progress.
    eventually(Duration::from_secs(20), "the catch-up done", || async {
        let (_, p) = other.call("GET", &replay, Some(OPERATOR), None).await;
        (p["state"] == "done").then_some(())
    })
    .await;
    let got = rx.wait_for("/twice", ids.len()).await;
    // A live event after the catch-up ended queues behind every replay in
    // the webhook's backlog: once it has arrived, so has any replay twice.
    producer
        .event("ev-twice-after", "app_twice", "item.created", json!({}))
        .await;
    rx.wait_for("/twice", ids.len() + 1).await;
    let mut seen: Vec<String> = rx
        .at("/twice")
        .iter()
        .map(|r| r.header("webhook-id"))
        .filter(|id| id != "ev-twice-after")
        .collect();
    seen.sort();
    assert_eq!(seen, ids, "each once");
    assert_eq!(got.len(), ids.len());
    // Done, the lock is free: a new catch-up (of nothing left) may start.
    let (status, body) = other
        .call("POST", &replay, Some(OPERATOR), Some(json!({})))
        .await;
    assert_eq!((status, &body["total"]), (202, &json!(0)), "{body}");
    other.stop().await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_test_call_ends_a_failing_streak() {
    let f = Fixture::start(&[
        ("WF_RETRY_SCHEDULE", "10m"),
        ("WF_CIRCUIT_BREAKER_THRESHOLD", "3"),
    ])
    .await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    let mut ops = Operational::bind(svc).await;
    rx.set_path_status("/fixed", 500);
    let hook = svc
        .webhook("app_fixed", &rx.url("/fixed"), &["item.created"])
        .await;
    for i in 0..3 {
        producer
            .event(
                &format!("ev-fixed-{i}"),
                "app_fixed",
                "item.created",
                json!({}),
            )
            .await;
    }
    ops.wait_for("webhook.failing", id(&hook), Duration::from_secs(10))
        .await;
    assert_eq!(read(svc, &hook).await["failing"], true);
    // Fixed: the admin's test call is the first success.
    rx.set_path_status("/fixed", 200);
    let (status, body) = svc
        .call(
            "POST",
            &format!("{}/test", path(&hook)),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!((status, &body["delivered"]), (200, &json!(true)), "{body}");
    ops.wait_for("webhook.recovered", id(&hook), Duration::from_secs(10))
        .await;
    assert_eq!(read(svc, &hook).await["failing"], false);
    ops.close().await;
    f.stop().await;
}
