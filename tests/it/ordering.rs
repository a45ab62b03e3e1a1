//! Ordering per key (`"ordering": "per_key"`): events sharing a key reach
//! the receiver one at a time in publish order, through random failures, a
//! hanging key, a dead-lettered head and a replica killed mid-stream, while
//! an unordered neighbour on the same receiver host gets everything too.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde_json::{Value, json};

use crate::common::receiver::{Received, Receiver};
use crate::common::{Fixture, Namespace, OPERATOR, Producer, binary, eventually, sign};

/// Creates a webhook with `ordering` through `api`; returns it (with secret).
pub(crate) async fn hook(
    api: &str,
    app: &str,
    url: &str,
    events: &[&str],
    ordering: &str,
) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{api}/v1/applications/{app}/webhooks"))
        .bearer_auth(OPERATOR)
        .body(json!({"url": url, "events": events, "ordering": ordering}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

/// (key, n) of a request: events are `o-<key>-<n>`.
fn key_n(r: &Received) -> (String, usize) {
    let id = r.header("webhook-id");
    let (key, n) = id.strip_prefix("o-").unwrap().rsplit_once('-').unwrap();
    (key.to_string(), n.parse().unwrap())
}

/// Asserts what a receiver of an ordered webhook must see, from its log in
/// arrival order: every event of every key succeeded; no request of event
/// n+1 came before event n's first success; each carries
/// `Webhook-Sequence: n+1` and a valid signature. Returns the duplicates
/// (successful requests beyond one per event).
pub(crate) fn assert_in_order(
    got: &[Received],
    keys: &[String],
    per_key: usize,
    secret: &str,
) -> usize {
    let mut first_success: HashMap<(String, usize), usize> = HashMap::new();
    let mut successes = 0;
    for (i, r) in got.iter().enumerate() {
        let (key, n) = key_n(r);
        assert_eq!(
            r.header("webhook-sequence"),
            (n + 1).to_string(),
            "sequence of {key}/{n}"
        );
        assert_eq!(
            r.header("bridgeapi-signature"),
            sign::bridge(secret, &r.body)
        );
        if n > 0 {
            let before = first_success.get(&(key.clone(), n - 1));
            assert!(
                before.is_some_and(|&b| b < i),
                "{key}/{n} was sent (request {i}) before {key}/{} was delivered ({before:?})",
                n - 1
            );
        }
        if (200..300).contains(&r.status) {
            successes += 1;
            first_success.entry((key, n)).or_insert(i);
        }
    }
    for key in keys {
        for n in 0..per_key {
            assert!(
                first_success.contains_key(&(key.clone(), n)),
                "{key}/{n} delivered"
            );
        }
    }
    successes - keys.len() * per_key
}

/// Publishes `per_key` events for each key, interleaved (key 0 event 0,
/// key 1 event 0, …), the key in `content.account_id`.
pub(crate) async fn publish(producer: &Producer, app: &str, keys: &[String], per_key: usize) {
    for n in 0..per_key {
        for key in keys {
            producer
                .event(
                    &format!("o-{key}-{n}"),
                    app,
                    "item.account.updated",
                    json!({"account_id": key, "n": n}),
                )
                .await;
        }
    }
}

/// Waits until every event of `keys` succeeded at `path`.
pub(crate) async fn all_delivered(
    rx: &Receiver,
    path: &str,
    keys: &[String],
    per_key: usize,
    within: u64,
) {
    let want = keys.len() * per_key;
    eventually(
        Duration::from_secs(within),
        "every ordered event delivered",
        || async {
            let ok: HashSet<String> = rx
                .at(path)
                .iter()
                .filter(|r| (200..300).contains(&r.status))
                .map(|r| r.header("webhook-id"))
                .collect();
            (ok.len() >= want).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_keys_arrive_in_order_through_random_failures() {
    let svc = Fixture::service(&[
        ("WF_RETRY_SCHEDULE", "50ms,100ms,200ms"),
        ("WF_MAX_EVENT_AGE", "10m"),
    ])
    .await;
    // One receiver host: the ordered webhook fails 30 % of requests at
    // random, its unordered neighbour always succeeds.
    let rx = Receiver::start(200).await;
    rx.set_path_flaky("/ordered", 30);
    let types = ["item.account.updated"];
    let ordered = hook(&svc.base, "app_o", &rx.url("/ordered"), &types, "per_key").await;
    assert_eq!(ordered["ordering"], "per_key");
    hook(&svc.base, "app_o", &rx.url("/plain"), &types, "none").await;

    let keys: Vec<String> = (0..50).map(|k| format!("acc{k}")).collect();
    let producer = Producer::connect(&svc.ns).await;
    publish(&producer, "app_o", &keys, 20).await;
    all_delivered(&rx, "/ordered", &keys, 20, 120).await;
    rx.wait_for("/plain", 1000).await;

    let got = rx.at("/ordered");
    let secret = ordered["secret"].as_str().unwrap();
    let duplicates = assert_in_order(&got, &keys, 20, secret);
    let failed = got.iter().filter(|r| r.status == 500).count();
    println!(
        "1000 ordered events: {} requests, {failed} answered 500, {duplicates} duplicates",
        got.len()
    );
    assert!(failed > 100, "the receiver did fail often: {failed}");
    assert_eq!(rx.at("/plain").len(), 1000, "the neighbour got each once");
    assert!(rx.at("/plain")[0].header("webhook-sequence").is_empty());
    svc.metric_reaches("webhooks_ordering_holds_total", 1.0)
        .await;
    producer.close().await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_key_does_not_delay_the_other_keys() {
    let svc = Fixture::service(&[
        ("WF_RETRY_SCHEDULE", "100ms"),
        ("WF_MAX_EVENT_AGE", "10m"),
        ("WF_DELIVERY_TIMEOUT", "2s"),
    ])
    .await;
    let rx = Receiver::start(200).await;
    // Every request about account `stuck` hangs until the timeout.
    rx.set_body_status("\"stuck\"", 0);
    let types = ["item.account.updated"];
    hook(&svc.base, "app_h", &rx.url("/o"), &types, "per_key").await;

    let producer = Producer::connect(&svc.ns).await;
    let mut keys: Vec<String> = (0..20).map(|k| format!("acc{k}")).collect();
    keys.push("stuck".into());
    let start = Instant::now();
    publish(&producer, "app_h", &keys, 5).await;
    let others = &keys[..20];
    all_delivered(&rx, "/o", others, 5, 60).await;

    // Latency of each other event: publish started to its first success.
    let mut latencies: Vec<Duration> = rx
        .at("/o")
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.at - start)
        .collect();
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100 - 1];
    println!(
        "100 events of 20 keys beside a hanging key: p99 {p99:?} from the first publish, last {:?}",
        latencies.last().unwrap()
    );
    // The hanging key's head was tried; nothing behind it was sent.
    let stuck: Vec<usize> = rx
        .at("/o")
        .iter()
        .map(key_n)
        .filter(|(k, _)| k == "stuck")
        .map(|(_, n)| n)
        .collect();
    assert!(!stuck.is_empty(), "the head of the hanging key was sent");
    assert!(
        stuck.iter().all(|&n| n == 0),
        "nothing behind the hanging head: {stuck:?}"
    );
    producer.close().await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_head_releases_its_successors_and_the_gap_shows() {
    let svc = Fixture::service(&[("WF_RETRY_SCHEDULE", "200ms"), ("WF_MAX_EVENT_AGE", "2s")]).await;
    let rx = Receiver::start(200).await;
    rx.set_body_status("\"fail\"", 500);
    let ordered = hook(
        &svc.base,
        "app_d",
        &rx.url("/o"),
        &["item.created"],
        "per_key",
    )
    .await;
    let producer = Producer::connect(&svc.ns).await;
    // The key comes from the producer's header (item.created's content has
    // no item_id here); event 1 always fails and is dead-lettered.
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from("x-ordering-key"),
        AMQPValue::LongString(LongString::from("order-77")),
    );
    for (n, what) in ["ok", "fail", "ok", "ok"].iter().enumerate() {
        producer
            .event_with(
                &format!("d-{n}"),
                "app_d",
                "item.created",
                json!({"n": n, "what": what}),
                headers.clone(),
            )
            .await;
    }
    eventually(
        Duration::from_secs(30),
        "events 3 and 4 delivered",
        || async {
            let ok: HashSet<String> = rx
                .at("/o")
                .iter()
                .filter(|r| r.status == 200)
                .map(|r| r.header("webhook-id"))
                .collect();
            (ok.contains("d-2") && ok.contains("d-3")).then_some(())
        },
    )
    .await;
    let got = rx.at("/o");
    let last_failure = got.iter().rposition(|r| r.header("webhook-id") == "d-1");
    let first_after = got.iter().position(|r| r.header("webhook-id") == "d-2");
    assert!(
        last_failure < first_after,
        "event 3 waited until event 2 was given up"
    );
    let sequences: Vec<(String, String)> = got
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| (r.header("webhook-id"), r.header("webhook-sequence")))
        .collect();
    assert_eq!(
        sequences,
        [("d-0", "1"), ("d-2", "3"), ("d-3", "4")].map(|(a, b)| (a.to_string(), b.to_string())),
        "the receiver sees the gap at 2"
    );
    let id = ordered["id"].as_str().unwrap();
    let (_, page) = svc
        .call(
            "GET",
            &format!("/v1/dead-letters?webhook_id={id}"),
            Some(OPERATOR),
            None,
        )
        .await;
    let letter = &page["items"][0];
    assert_eq!(
        (
            &letter["event_id"],
            &letter["ordering_key"],
            &letter["sequence"]
        ),
        (&json!("d-1"), &json!("order-77"), &json!(2)),
        "{page}"
    );
    // Replayed once the receiver is fixed, it takes the key's next number.
    rx.set_body_status("\"fail\"", 200);
    let replay = format!("/v1/dead-letters/{}/replay", letter["id"].as_str().unwrap());
    let (status, _) = svc.call("POST", &replay, Some(OPERATOR), None).await;
    assert_eq!(status, 200);
    let again = eventually(Duration::from_secs(10), "the replay delivered", || async {
        rx.at("/o")
            .into_iter()
            .find(|r| r.header("webhook-id") == "d-1" && r.status == 200)
    })
    .await;
    assert_eq!(
        again.header("webhook-sequence"),
        "5",
        "after 4, the last one"
    );
    producer.close().await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_is_set_through_the_api_and_bad_keys_are_rejected() {
    let svc = Fixture::service(&[]).await;
    let rx = Receiver::start(200).await;
    let plain = hook(&svc.base, "app_a", &rx.url("/a"), &["item.created"], "none").await;
    assert_eq!(plain["ordering"], "none");
    let path = format!(
        "/v1/applications/app_a/webhooks/{}",
        plain["id"].as_str().unwrap()
    );
    let (status, body) = svc
        .call(
            "PATCH",
            &path,
            Some(OPERATOR),
            Some(json!({"ordering": "sideways"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        (&body["error"]["code"], &body["error"]["field"]),
        (&json!("invalid_ordering"), &json!("ordering"))
    );
    let (status, body) = svc
        .call(
            "PATCH",
            &path,
            Some(OPERATOR),
            Some(json!({"ordering": "per_key"})),
        )
        .await;
    assert_eq!((status, &body["ordering"]), (200, &json!("per_key")));
    let (_, types) = svc
        .call("GET", "/v1/event-types", Some(OPERATOR), None)
        .await;
    let account = types
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "item.account.updated")
        .unwrap();
    assert_eq!(account["ordering_key"], "/account_id");

    // A header that is not a string or an integer is a clear rejection.
    let producer = Producer::connect(&svc.ns).await;
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from("x-ordering-key"),
        AMQPValue::Boolean(true),
    );
    producer
        .event_with("bad-key", "app_a", "item.created", json!({}), headers)
        .await;
    let rejected = eventually(Duration::from_secs(10), "the reject", || async {
        producer.get(&svc.names().rejected()).await
    })
    .await;
    let reason = rejected.1.inner().get("x-reject-reason").cloned();
    let reason = match reason {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("{other:?}"),
    };
    assert!(reason.starts_with("invalid_ordering_key: "), "{reason}");
    producer.close().await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_keep_the_order_when_the_one_fanning_out_is_killed() {
    handover(Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_keep_the_order_through_a_rolling_restart() {
    handover(Stop::Term).await;
}

/// How the process that fans out is stopped mid-stream.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// SIGKILL: a crash.
    Kill,
    /// SIGTERM: a deploy; it drains, then the other takes over.
    Term,
}

/// Eight applications, each with an ordered webhook (30 % random failures)
/// and an unordered neighbour, 200 events of 10 keys each, by two
/// processes that share the ingest partitions; the one routing the ingest
/// queue is stopped by `stop` after 7 of 20 rounds and a new one started.
async fn handover(stop: Stop) {
    let ns = Namespace::new();
    let extra = [
        ("WF_RETRY_SCHEDULE", "50ms,100ms,200ms"),
        ("WF_MAX_EVENT_AGE", "10m"),
        // A small fan-out window, so events wait in the queue and in hand.
        ("WF_INGEST_CONCURRENCY", "8"),
    ];
    let mut procs = [binary::spawn(&ns, &extra), binary::spawn(&ns, &extra)];
    binary::wait_ready(&procs[0].base).await;
    binary::wait_ready(&procs[1].base).await;
    let rx = Receiver::start(200).await;
    let types = ["item.account.updated"];
    let api = procs[0].base.clone();
    let apps: Vec<String> = (0..8).map(|a| format!("app_{a}")).collect();
    let mut secrets = Vec::new();
    for app in &apps {
        rx.set_path_flaky(&format!("/{app}/ordered"), 30);
        let url = rx.url(&format!("/{app}/ordered"));
        let ordered = hook(&api, app, &url, &types, "per_key").await;
        secrets.push(ordered["secret"].as_str().unwrap().to_string());
        hook(&api, app, &rx.url(&format!("/{app}/plain")), &types, "none").await;
    }

    let keys: Vec<String> = (0..10).map(|k| format!("acc{k}")).collect();
    let producer = Producer::connect(&ns).await;
    let fanning = |base: String| async move { binary::metric(&base, "webhooks_fanning_out").await };
    for n in 0..20 {
        if n == 7 {
            // SIGKILL the process that fans out, mid-stream, and start
            // another: the survivor takes the ingest queue over.
            let holder = match fanning(procs[0].base.clone()).await == 1.0 {
                true => 0,
                false => 1,
            };
            println!(
                "{stop:?} process {holder} (routing) after {} events",
                n * keys.len() * apps.len()
            );
            match stop {
                Stop::Kill => procs[holder].child.kill().unwrap(),
                Stop::Term => {
                    let pid = procs[holder].child.id().to_string();
                    let sent = std::process::Command::new("kill")
                        .args(["-TERM", &pid])
                        .status()
                        .unwrap();
                    assert!(sent.success());
                }
            }
            let status = procs[holder].child.wait().unwrap();
            if let Stop::Term = stop {
                assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
            }
            procs[holder] = binary::spawn(&ns, &extra);
        }
        // One event per key and application at a time, the 80 publishes
        // pipelined: events pile up in the queues faster than they are
        // fanned out, so the stop finds a backlog.
        let pairs: Vec<(&String, &String, String)> = apps
            .iter()
            .flat_map(|app| {
                keys.iter()
                    .map(move |key| (app, key, format!("o-{key}-{n}")))
            })
            .collect();
        let publishes = pairs.iter().map(|(app, key, id)| {
            producer.event(
                id,
                app,
                "item.account.updated",
                json!({"account_id": key, "n": n}),
            )
        });
        futures_util::future::join_all(publishes).await;
    }
    let mut duplicates = 0;
    for (app, secret) in apps.iter().zip(&secrets) {
        let path = format!("/{app}/ordered");
        all_delivered(&rx, &path, &keys, 20, 180).await;
        duplicates += assert_in_order(&rx.at(&path), &keys, 20, secret);
        let plain = format!("/{app}/plain");
        rx.wait_for(&plain, 200).await;
        let distinct: HashSet<String> = rx
            .at(&plain)
            .iter()
            .map(|r| r.header("webhook-id"))
            .collect();
        assert_eq!(distinct.len(), 200, "{app}'s neighbour got every event");
    }
    let fanned: Vec<f64> = futures_util::future::join_all(
        procs
            .iter()
            .map(|p| binary::metric(&p.base, "webhooks_jobs_enqueued_total")),
    )
    .await;
    println!(
        "1,600 ordered events of 8 applications through a {stop:?}: {duplicates} duplicates; jobs fanned out by the processes now running: {fanned:?}"
    );
    let holders = fanning(procs[0].base.clone()).await + fanning(procs[1].base.clone()).await;
    assert_eq!(holders, 1.0, "one process routes");
    let held = "webhooks_ingest_partitions_held";
    eventually(
        Duration::from_secs(10),
        "both processes hold partitions",
        || async {
            let (a, b) = (
                binary::metric(&procs[0].base, held).await,
                binary::metric(&procs[1].base, held).await,
            );
            (a > 0.0 && b > 0.0 && a + b == 16.0).then_some(())
        },
    )
    .await;
    producer.close().await;
}
