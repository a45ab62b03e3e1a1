//! Several webhooks on one receiver host and port, on different paths: a
//! hanging, failing or broken sibling must not delay, short-circuit or lose
//! another webhook's events.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::common::receiver::Receiver;
use crate::common::{Fixture, OPERATOR, Producer, TestService, eventually};
use serde_json::{Value, json};

/// Event ids with the instant each was published.
pub(crate) type Published = Vec<(String, Instant)>;

/// Publishes `n` `item.created` events for each of `apps`, interleaved, one
/// round every 20 ms (~50 events/s per application); ids are `ev-{app}-{i}`.
async fn publish_paced(producer: &Producer, apps: &[&str], n: usize) -> Vec<Published> {
    let mut published = vec![Vec::new(); apps.len()];
    let start = tokio::time::Instant::now();
    for i in 0..n {
        for (app, sent) in apps.iter().zip(published.iter_mut()) {
            let id = format!("ev-{app}-{i}");
            let at = Instant::now();
            producer
                .event(&id, app, "item.created", json!({"i": i}))
                .await;
            sent.push((id, at));
        }
        tokio::time::sleep_until(start + Duration::from_millis(20) * (i as u32 + 1)).await;
    }
    published
}

/// When each `Webhook-Id` first arrived at `path` (at or after `since`).
pub(crate) fn first_receipts(
    rx: &Receiver,
    path: &str,
    since: Instant,
) -> HashMap<String, Instant> {
    let mut first = HashMap::new();
    for r in rx.at(path).into_iter().filter(|r| r.at >= since) {
        first.entry(r.header("webhook-id")).or_insert(r.at);
    }
    first
}

/// The `p`th percentile of sorted durations.
pub(crate) fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p).div_ceil(100).max(1) - 1]
}

/// Waits up to `within` for every `published` event at `path`, prints the
/// publish-to-receipt figures, then asserts all arrived with p99 < 1 s.
pub(crate) async fn assert_all_arrive_promptly(
    rx: &Receiver,
    path: &str,
    published: &Published,
    within: Duration,
) {
    let since = published[0].1;
    let deadline = Instant::now() + within;
    let first = loop {
        let first = first_receipts(rx, path, since);
        let all = published.iter().all(|(id, _)| first.contains_key(id));
        if all || Instant::now() >= deadline {
            break first;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut latencies: Vec<Duration> = published
        .iter()
        .filter_map(|(id, at)| Some(first.get(id)?.saturating_duration_since(*at)))
        .collect();
    latencies.sort();
    let missing: Vec<&str> = published
        .iter()
        .filter(|(id, _)| !first.contains_key(id))
        .map(|(id, _)| id.as_str())
        .collect();
    println!(
        "{path}: {}/{} events received; publish-to-receipt p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        published.len(),
        latencies.get(latencies.len() / 2),
        (!latencies.is_empty()).then(|| percentile(&latencies, 99)),
        latencies.last(),
    );
    assert!(
        missing.is_empty(),
        "{} of {} events never reached {path} within {within:?} of the last publish, e.g. {:?}",
        missing.len(),
        published.len(),
        &missing[..missing.len().min(5)]
    );
    let p99 = percentile(&latencies, 99);
    assert!(p99 < Duration::from_secs(1), "{path}: p99 {p99:?}");
}

/// Every dead letter of `webhook_id`, paging through the list.
pub(crate) async fn dead_letters_of(svc: &TestService, webhook_id: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor = String::new();
    loop {
        let query = format!("/v1/dead-letters?webhook_id={webhook_id}&limit=100{cursor}");
        let (status, page) = svc.call("GET", &query, Some(OPERATOR), None).await;
        assert_eq!(status, 200, "{page}");
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return items,
        }
    }
}

fn id_of(webhook: &Value) -> String {
    webhook["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_webhook_does_not_silence_its_sibling_on_the_same_host() {
    let f = Fixture::start(&[
        ("WF_DELIVERY_TIMEOUT", "30s"),
        ("WF_SHUTDOWN_TIMEOUT", "1s"),
    ])
    .await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    rx.set_path_status("/hang", 0);
    svc.webhook("app_s", &rx.url("/hang"), &["item.created"])
        .await;
    svc.webhook("app_s", &rx.url("/ok"), &["item.created"])
        .await;

    let published = publish_paced(producer, &["app_s"], 400).await;
    assert_all_arrive_promptly(rx, "/ok", &published[0], Duration::from_secs(20)).await;
    assert!(!rx.at("/hang").is_empty(), "the hanging sibling was called");

    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sibling_does_not_open_the_breaker_of_a_recovering_webhook() {
    let f = Fixture::start(&[
        ("WF_CIRCUIT_BREAKER_THRESHOLD", "3"),
        ("WF_CIRCUIT_BREAKER_COOLDOWN", "30s"),
        ("WF_RETRY_SCHEDULE", "200ms"),
        ("WF_MAX_EVENT_AGE", "1h"),
    ])
    .await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    rx.set_path_status("/bad", 500);
    rx.then_at("/flaky", &[500, 500]);
    svc.webhook("app_b", &rx.url("/bad"), &["item.created"])
        .await;
    let flaky = svc
        .webhook("app_b", &rx.url("/flaky"), &["item.refreshed"])
        .await;
    for i in 0..10 {
        producer
            .event(&format!("ev-b-{i}"), "app_b", "item.created", json!({}))
            .await;
    }
    rx.wait_for("/bad", 3).await;
    svc.metric_reaches("webhooks_circuit_breakers_open", 1.0)
        .await;

    // The cooldown (30 s) outlasts the wait: only the flaky webhook's own
    // answers decide its attempts.
    producer
        .event("ev-flaky", "app_b", "item.refreshed", json!({}))
        .await;
    let got = rx.wait_for("/flaky", 3).await;
    let attempts: Vec<String> = got.iter().map(|r| r.header("webhook-attempt")).collect();
    let ids: Vec<String> = got.iter().map(|r| r.header("webhook-id")).collect();
    println!(
        "/flaky: attempts {attempts:?}, {:?} from the first to the third request",
        got[2].at - got[0].at
    );
    assert_eq!(attempts, ["1", "2", "3"], "three real requests, in order");
    assert_eq!(ids, ["ev-flaky"; 3], "one event, one Webhook-Id");

    svc.metric_reaches(r#"webhooks_deliveries_total{outcome="success"}"#, 1.0)
        .await;
    assert_eq!(rx.at("/flaky").len(), 3, "delivered on the third request");
    assert_eq!(
        dead_letters_of(svc, &id_of(&flaky)).await,
        Vec::<Value>::new()
    );

    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_replay_of_a_fixed_webhook_with_an_open_breaker_delivers_every_event_once() {
    let f = Fixture::start(&[
        ("WF_CIRCUIT_BREAKER_THRESHOLD", "3"),
        ("WF_CIRCUIT_BREAKER_COOLDOWN", "1h"),
        ("WF_RETRY_SCHEDULE", "100ms"),
        ("WF_MAX_EVENT_AGE", "2s"),
    ])
    .await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    rx.set_path_status("/down", 500);
    let hook = svc
        .webhook("app_r", &rx.url("/down"), &["item.created"])
        .await;
    let hook_id = id_of(&hook);
    let events: BTreeSet<String> = (0..20).map(|i| format!("ev-r-{i}")).collect();
    for id in &events {
        producer.event(id, "app_r", "item.created", json!({})).await;
    }

    let letters = eventually(
        Duration::from_secs(20),
        "20 dead letters for /down",
        || async {
            let letters = dead_letters_of(svc, &hook_id).await;
            (letters.len() >= 20).then_some(letters)
        },
    )
    .await;
    let lettered: BTreeSet<String> = letters
        .iter()
        .map(|d| d["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!((letters.len(), &lettered), (20, &events), "one per event");
    let mut reasons: HashMap<&str, usize> = HashMap::new();
    for d in &letters {
        *reasons.entry(d["reason"].as_str().unwrap()).or_default() += 1;
    }
    println!(
        "/down: {} requests sent, dead letters by reason {reasons:?}",
        rx.at("/down").len()
    );
    assert!(
        reasons.contains_key("circuit_open"),
        "a job whose every attempt was short-circuited says so: {reasons:?}"
    );

    // The receiver is fixed; the operator replays the webhook's dead letters
    // while its breaker (1 h cooldown) is still open.
    rx.set_path_status("/down", 200);
    let fixed = Instant::now();
    let (status, body) = svc
        .call(
            "POST",
            "/v1/dead-letters/replay",
            Some(OPERATOR),
            Some(json!({"webhook_id": hook_id})),
        )
        .await;
    assert_eq!((status, &body["replayed"]), (200, &json!(20)), "{body}");
    let first = eventually(
        Duration::from_secs(20),
        "all 20 replayed events at /down",
        || async {
            let first = first_receipts(rx, "/down", fixed);
            (first.len() >= 20).then_some(first)
        },
    )
    .await;
    println!(
        "/down: all 20 replayed events received within {:?} of the fix",
        first.values().max().unwrap().duration_since(fixed)
    );
    svc.metric_reaches(r#"webhooks_deliveries_total{outcome="success"}"#, 20.0)
        .await;
    // A duplicate would come back through the 100 ms retry tier: a later
    // event that fails twice passes it twice, so once its third request has
    // arrived, any duplicate of the replays would have arrived before it.
    rx.then_at("/down", &[500, 500]);
    producer
        .event("ev-r-marker", "app_r", "item.created", json!({}))
        .await;
    eventually(
        Duration::from_secs(20),
        "the marker's third request",
        || async {
            let n = rx
                .at("/down")
                .iter()
                .filter(|r| r.header("webhook-id") == "ev-r-marker")
                .count();
            (n >= 3).then_some(())
        },
    )
    .await;
    let mut received: Vec<String> = rx
        .at("/down")
        .iter()
        .filter(|r| r.at >= fixed)
        .map(|r| r.header("webhook-id"))
        .filter(|id| id != "ev-r-marker")
        .collect();
    received.sort();
    let expected: Vec<String> = events.into_iter().collect();
    assert_eq!(
        received, expected,
        "each event once, with its original Webhook-Id"
    );
    assert_eq!(dead_letters_of(svc, &hook_id).await, Vec::<Value>::new());

    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_applications_on_one_host_do_not_affect_each_other() {
    let f = Fixture::start(&[
        ("WF_DELIVERY_TIMEOUT", "30s"),
        ("WF_CIRCUIT_BREAKER_THRESHOLD", "3"),
        ("WF_RETRY_SCHEDULE", "200ms,500ms"),
        ("WF_MAX_EVENT_AGE", "1h"),
        ("WF_SHUTDOWN_TIMEOUT", "1s"),
    ])
    .await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    rx.set_path_status("/a1-hang", 0);
    rx.set_path_status("/a1-fail", 500);
    svc.webhook("app_1", &rx.url("/a1-hang"), &["item.created"])
        .await;
    svc.webhook("app_1", &rx.url("/a1-fail"), &["item.created"])
        .await;
    svc.webhook("app_2", &rx.url("/a2-ok"), &["item.created"])
        .await;

    let published = publish_paced(producer, &["app_1", "app_2"], 300).await;
    assert_all_arrive_promptly(rx, "/a2-ok", &published[1], Duration::from_secs(20)).await;
    println!(
        "app_1 meanwhile: {} requests at /a1-hang, {} at /a1-fail",
        rx.at("/a1-hang").len(),
        rx.at("/a1-fail").len()
    );

    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cap_is_shared_fairly_so_a_hanging_webhook_cannot_take_its_siblings_share() {
    let f = Fixture::start(&[
        ("WF_HOST_CONCURRENCY", "8"),
        ("WF_DELIVERY_TIMEOUT", "30s"),
        ("WF_SHUTDOWN_TIMEOUT", "1s"),
    ])
    .await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    rx.set_path_status("/hang", 0);
    svc.webhook("app_h", &rx.url("/hang"), &["item.created"])
        .await;
    svc.webhook("app_h", &rx.url("/ok"), &["item.created"])
        .await;

    let published = publish_paced(producer, &["app_h"], 200).await;
    assert_all_arrive_promptly(rx, "/ok", &published[0], Duration::from_secs(20)).await;
    let hanging = rx.at("/hang").len();
    println!("/hang: {hanging} requests held open of the host's 8");
    assert!(hanging <= 4, "at most half the host alone: {hanging}");
    // The hanging webhook's other jobs wait in its backlog, not in a tier.
    assert_eq!(deferred(svc).await, 0.0, "no job went round a delay tier");

    f.stop().await;
}

/// Jobs put back on the broker without a request, for any reason.
pub(crate) async fn deferred(svc: &TestService) -> f64 {
    let mut all = 0.0;
    for reason in ["backlog", "circuit_open"] {
        let sample = format!(r#"webhooks_jobs_deferred_total{{reason="{reason}"}}"#);
        all += svc.metric(&sample).await;
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_a_slow_webhook_s_backlog_without_deferring_a_job() {
    // A webhook answering in 200 ms, 2 at a time per process: each process
    // takes ~10 events/s. Bursts of 40 every 2 s (20/s in all) fill both;
    // the excess waits in the webhook's backlog, which both processes
    // drain, and no job is put back on the broker without a request.
    let settings = [
        ("WF_ENDPOINT_CONCURRENCY", "2"),
        ("WF_RETRY_SCHEDULE", "200ms,400ms"),
        ("WF_MAX_EVENT_AGE", "1h"),
        ("WF_DELIVERY_TIMEOUT", "5s"),
    ];
    let a = Fixture::service(&settings).await;
    let b = Fixture::join(&a.ns, &settings).await;
    let rx = Receiver::start(200).await;
    rx.set_path_delay("/slow", Duration::from_millis(200));
    a.webhook("app_d", &rx.url("/slow"), &["item.created"])
        .await;
    let producer = Producer::connect(&a.ns).await;
    let (bursts, size) = (8, 40);
    let start = tokio::time::Instant::now();
    for burst in 0..bursts {
        for i in 0..size {
            let id = format!("ev-d-{burst}-{i}");
            producer
                .event(&id, "app_d", "item.created", json!({}))
                .await;
        }
        tokio::time::sleep_until(start + Duration::from_secs(2) * (burst + 1)).await;
    }
    eventually(Duration::from_secs(60), "every event at /slow", || async {
        let ids: BTreeSet<String> = rx
            .at("/slow")
            .iter()
            .map(|r| r.header("webhook-id"))
            .collect();
        (ids.len() == (bursts * size) as usize).then_some(())
    })
    .await;
    let requests = rx.at("/slow").len();
    assert_eq!(requests, (bursts * size) as usize, "each event once");
    for (name, svc) in [("a", &a), ("b", &b)] {
        let sent = svc
            .metric(r#"webhooks_deliveries_total{outcome="success"}"#)
            .await;
        println!("process {name}: {sent} deliveries");
        assert!(sent > 0.0, "process {name} drained the shared backlog too");
        assert_eq!(deferred(svc).await, 0.0, "process {name} deferred a job");
    }

    producer.close().await;
    b.stop().await;
    a.stop().await;
}
