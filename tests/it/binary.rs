//! The real binary, as deployed: SIGKILL while jobs wait in a delay tier,
//! SIGTERM exiting 0 within its bound, and the `dead-letters` and
//! `webhooks export|import` subcommands.

use std::process::Command;
use std::time::Duration;

use crate::common::receiver::Receiver;
use crate::common::{OPERATOR, Producer, binary, eventually};
use serde_json::{Value, json};

struct Binary {
    child: binary::Process,
    base: String,
    /// Printed if the test fails.
    _tail: binary::LogTail,
}

async fn spawn(ns: &str, extra: &[(&str, &str)]) -> Binary {
    let binary::Spawned {
        child, base, tail, ..
    } = binary::spawn(ns, extra);
    binary::wait_ready(&base).await;
    Binary {
        child,
        base,
        _tail: tail,
    }
}

async fn post(base: &str, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(OPERATOR)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    r.json().await.unwrap()
}

fn cli(ns: &str, args: &[&str]) -> (bool, String) {
    cli_with(ns, &[], args)
}

fn cli_with(ns: &str, extra: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_webhook-fanout"))
        .args(args)
        .envs(binary::env(ns, extra))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_waiting_in_a_delay_tier_survive_sigkill_and_sigterm_exits_zero() {
    let ns = crate::common::Namespace::new();
    let extra = [("WF_RETRY_SCHEDULE", "2s"), ("WF_MAX_EVENT_AGE", "1h")];
    let mut first = spawn(&ns, &extra).await;
    let rx = Receiver::start(200).await;
    rx.then(&[500]);
    post(
        &first.base,
        "/v1/applications/app_k/webhooks",
        json!({"url": rx.url("/k"), "events": ["item.created"]}),
    )
    .await;
    let producer = Producer::connect(&ns).await;
    producer
        .event("ev-kill", "app_k", "item.created", json!({}))
        .await;
    rx.wait_for("/k", 1).await;
    eventually(
        Duration::from_secs(10),
        "the retry to be scheduled",
        || async {
            (binary::metric(
                &first.base,
                r#"webhooks_retries_scheduled_total{tier="2s"}"#,
            )
            .await
                >= 1.0)
                .then_some(())
        },
    )
    .await;

    first.child.kill().unwrap(); // SIGKILL: no graceful anything
    first.child.wait().unwrap();
    let mut second = spawn(&ns, &extra).await;
    // The retry waiting in the tier arrives as attempt 2. A kill within the
    // few milliseconds between scheduling it and acking the first attempt
    // also repeats attempt 1 (at least once: the reference's guarantees).
    let got = eventually(Duration::from_secs(30), "attempt 2", || async {
        let got = rx.at("/k");
        got.iter()
            .any(|r| r.header("webhook-attempt") == "2")
            .then_some(got)
    })
    .await;
    assert!(
        got.iter().all(|r| r.header("webhook-id") == "ev-kill"),
        "only the event published"
    );
    let firsts = got
        .iter()
        .filter(|r| r.header("webhook-attempt") == "1")
        .count();
    assert!((1..=2).contains(&firsts), "attempt 1 {firsts} times");

    Command::new("kill")
        .args(["-TERM", &second.child.id().to_string()])
        .status()
        .unwrap();
    let status = second.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");

    producer.close().await;
    cleanup(&ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letters_subcommands() {
    let ns = crate::common::Namespace::new();
    let mut svc = spawn(
        &ns,
        &[
            ("WF_RETRY_SCHEDULE", "100ms"),
            ("WF_MAX_EVENT_AGE", "300ms"),
        ],
    )
    .await;
    let rx = Receiver::start(500).await;
    post(
        &svc.base,
        "/v1/applications/app_cli/webhooks",
        json!({"url": rx.url("/c"), "events": ["item.created"]}),
    )
    .await;
    let producer = Producer::connect(&ns).await;
    producer
        .event("ev-cli-1", "app_cli", "item.created", json!({}))
        .await;
    producer
        .event("ev-cli-2", "app_cli", "item.created", json!({}))
        .await;
    eventually(Duration::from_secs(10), "two dead letters", || async {
        (binary::metric(&svc.base, "webhooks_dead_lettered_total").await >= 2.0).then_some(())
    })
    .await;

    let (ok, out) = cli(&ns, &["dead-letters", "list", "--json"]);
    assert!(ok, "{out}");
    let page: Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);

    let (ok, table) = cli(&ns, &["dead-letters", "list", "--app", "app_cli"]);
    assert!(
        ok && table.contains("ATTEMPTS") && table.contains(&ids[0]) && table.contains("HTTP 500"),
        "{table}"
    );
    let (ok, shown) = cli(&ns, &["dead-letters", "show", &ids[0]]);
    assert!(
        ok && shown.contains("max_age_exceeded") && shown.contains("history:"),
        "{shown}"
    );

    let (ok, _) = cli(&ns, &["dead-letters", "discard", &ids[0]]);
    assert!(ok);
    rx.set_status(200);
    let before = rx.at("/c").len();
    let (ok, out) = cli(&ns, &["dead-letters", "replay", &ids[1]]);
    assert!(ok, "{out}");
    let got = rx.wait_for("/c", before + 1).await;
    assert_eq!(
        got[before].header("webhook-id"),
        page["items"][1]["event_id"].as_str().unwrap()
    );
    let (_, out) = cli(&ns, &["dead-letters", "list", "--json"]);
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["items"], json!([]));
    let (ok, _) = cli(&ns, &["dead-letters", "show", &ids[0]]);
    assert!(!ok, "a discarded dead letter is gone");

    svc.child.kill().unwrap();
    svc.child.wait().unwrap();
    producer.close().await;
    cleanup(&ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_within_the_shutdown_bound_with_a_silent_receiver_and_broker() {
    // Everything that can stop answering does: the receiver (requests
    // hang) and, once SIGTERM is near, RabbitMQ (a proxy that goes silent
    // without closing), so every cancel and close waits for its timeout.
    let ns = crate::common::Namespace::new();
    let broker = crate::common::proxy::Proxy::start("127.0.0.1:5672").await;
    let url = broker.amqp_url();
    let extra = [
        ("WF_SHUTDOWN_TIMEOUT", "2s"),
        ("WF_DELIVERY_TIMEOUT", "60s"),
        ("WF_RETRY_SCHEDULE", "1s"),
        ("WF_MAX_EVENT_AGE", "1h"),
        ("WF_AMQP_URL", url.as_str()),
    ];
    let mut svc = spawn(&ns, &extra).await;
    let rx = Receiver::start(0).await; // never answers
    post(
        &svc.base,
        "/v1/applications/app_t/webhooks",
        json!({"url": rx.url("/t"), "events": ["item.created"]}),
    )
    .await;
    let producer = Producer::connect(&ns).await;
    for i in 0..20 {
        let id = format!("ev-t-{i}");
        producer
            .event(&id, "app_t", "item.created", json!({}))
            .await;
    }
    rx.wait_for("/t", 8).await; // the webhook's cap, all hanging
    broker.freeze();

    let asked = std::time::Instant::now();
    Command::new("kill")
        .args(["-TERM", &svc.child.id().to_string()])
        .status()
        .unwrap();
    let status = svc.child.wait().unwrap();
    let took = asked.elapsed();
    let bound = Duration::from_secs(2) + webhook_fanout::app::SHUTDOWN_MARGIN;
    println!("SIGTERM to exit, 8 requests hanging and RabbitMQ silent: {took:?} (bound {bound:?})");
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
    assert!(took <= bound, "took {took:?}");

    // Nothing was lost: the broker requeues what the dead connection held.
    broker.cut();
    rx.set_status(200);
    let direct = [("WF_RETRY_SCHEDULE", "1s"), ("WF_MAX_EVENT_AGE", "1h")];
    let mut second = spawn(&ns, &direct).await;
    eventually(
        Duration::from_secs(30),
        "all 20 events after restart",
        || async {
            let ids: std::collections::BTreeSet<String> =
                rx.at("/t").iter().map(|r| r.header("webhook-id")).collect();
            (ids.len() == 20).then_some(())
        },
    )
    .await;

    second.child.kill().unwrap();
    second.child.wait().unwrap();
    producer.close().await;
    cleanup(&ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_exported_then_imported_elsewhere_deliver_with_their_original_secrets() {
    let key = [(
        "WF_SECRET_KEY",
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    )];
    let source = crate::common::Fixture::service(&key).await;
    let rx = Receiver::start(200).await;
    let mut secrets = std::collections::HashMap::new();
    for (app, path) in [("app_e1", "/e1"), ("app_e1", "/e2"), ("app_e2", "/e3")] {
        let hook = source.webhook(app, &rx.url(path), &["item.created"]).await;
        secrets.insert(path, hook["secret"].as_str().unwrap().to_string());
    }
    // And one with a filter, an extra header, OAuth2 credentials and a
    // client certificate, which the backup keeps (the secrets sealed).
    let filter = "has(content.keep) && content.keep";
    let tokens = crate::oauth::TokenServer::start(&[("backup", "backup-secret", 3600)]).await;
    let auth = crate::oauth::auth(&tokens.url, "backup", "backup-secret");
    let client = crate::common::certs::Ca::new("Backup CA").client("backup.test");
    let body = json!({"url": rx.url("/e4"), "events": ["item.created"], "filter": filter,
                      "headers": {"X-Api-Key": "k-e4"}, "auth": auth, "tls_client": client.json()});
    let (status, hook) = source
        .call(
            "POST",
            "/v1/applications/app_e1/webhooks",
            Some(crate::common::OPERATOR),
            Some(body),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    secrets.insert("/e4", hook["secret"].as_str().unwrap().to_string());

    let file = std::env::temp_dir().join(format!("{}-webhooks.jsonl", source.ns));
    let file_arg = file.to_str().unwrap();
    let (ok, _) = cli_with(
        &source.ns,
        &key,
        &["webhooks", "export", "--output", file_arg],
    );
    assert!(ok, "export succeeds");
    let exported = std::fs::read_to_string(&file).unwrap();
    assert_eq!(exported.lines().count(), 4, "{exported}");
    assert!(exported.contains(filter), "the filter is exported");
    assert!(exported.contains("k-e4"), "the headers are exported");
    for secret in secrets.values() {
        assert!(!exported.contains(secret.as_str()), "secrets stay sealed");
    }
    assert!(exported.contains("CN=backup.test") && exported.contains("\"backup\""));
    assert!(
        !exported.contains("backup-secret"),
        "the client secret stays sealed"
    );
    assert!(!exported.contains("PRIVATE KEY"), "the key stays sealed");

    let target = crate::common::Namespace::new();
    let (ok, _) = cli_with(&target, &key, &["webhooks", "import", "--input", file_arg]);
    assert!(ok, "import succeeds");
    let (ok, _) = cli_with(&target, &[], &["webhooks", "import", "--input", file_arg]);
    assert!(
        !ok,
        "without the key the sealed secrets cannot be opened: refused"
    );
    // A record whose filter or headers do not pass the API's checks is refused.
    let broken = file.with_extension("broken.jsonl");
    let elsewhere = crate::common::Namespace::new();
    for (bad, says) in [
        (
            exported.replace(filter, "content.keep &&"),
            "not imported: filter:",
        ),
        (
            exported.replace("X-Api-Key", "Webhook-Id"),
            "not imported: headers:",
        ),
        (
            exported.replace("CN=backup.test", "CN=forged"),
            "not imported: tls_client:",
        ),
    ] {
        std::fs::write(&broken, bad).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_webhook-fanout"))
            .args(["webhooks", "import", "--input", broken.to_str().unwrap()])
            .envs(binary::env(&elsewhere, &key))
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{printed}");
        assert!(printed.contains(says), "{printed}");
    }
    std::fs::remove_file(&broken).unwrap();
    cleanup(&elsewhere).await;

    let restored = crate::common::Fixture::join(&target, &key).await;
    let producer = Producer::connect(&target).await;
    producer
        .event("ev-e1", "app_e1", "item.created", json!({}))
        .await;
    producer
        .event("ev-e2", "app_e2", "item.created", json!({}))
        .await;
    producer
        .event("ev-e3", "app_e1", "item.created", json!({"keep": true}))
        .await;
    for (path, secret) in &secrets {
        let got = rx.wait_for(path, 1).await;
        assert_eq!(
            got[0].header("bridgeapi-signature"),
            crate::common::sign::bridge(secret, &got[0].body),
            "{path} verifies with the secret shown at creation"
        );
    }
    // The filter still filters: of app_e1's two events, /e4 got the one it
    // matches (all 6 jobs fan-out made are in: /e1 and /e2 twice, /e3 and /e4 once).
    rx.wait_for("/e1", 2).await;
    restored
        .metric_reaches("webhooks_jobs_enqueued_total", 6.0)
        .await;
    assert_eq!(restored.metric("webhooks_jobs_enqueued_total").await, 6.0);
    let e4 = rx.wait_for("/e4", 1).await;
    assert_eq!(e4[0].header("webhook-id"), "ev-e3");
    assert_eq!(
        e4[0].header("x-api-key"),
        "k-e4",
        "the imported headers are sent"
    );
    assert!(
        e4[0]
            .header("authorization")
            .starts_with("Bearer tok-backup-"),
        "the imported credentials get a token"
    );

    std::fs::remove_file(&file).unwrap();
    producer.close().await;
    restored.stop().await;
    cleanup(&target).await;
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_warns_when_redis_keeps_nothing_on_disk() {
    // The test Redis runs with `--save "" --appendonly no`, as many caches do.
    let ns = crate::common::Namespace::new();
    let svc = binary::spawn(&ns, &[]);
    let line = eventually(
        Duration::from_secs(20),
        "a start-up warning about Redis persistence",
        || async {
            let log = svc.log.lock().unwrap();
            log.iter()
                .find(|l| l.contains("Redis persistence is off"))
                .cloned()
        },
    )
    .await;
    assert!(
        line.contains("appendonly") && line.contains("WF_REDIS_URL"),
        "{line}"
    );
    let mut child = svc.child;
    child.kill().unwrap();
    child.wait().unwrap();
    cleanup(&ns).await;
}

async fn cleanup(ns: &str) {
    let settings =
        webhook_fanout::Settings::from_map(&[("WF_NAMESPACE".to_string(), ns.to_string())].into())
            .unwrap();
    crate::common::delete_namespace(ns, &settings).await;
}

/// What a new user sees on `make run`: a first start in a fresh namespace,
/// at the default log level, that delivers an event and reads every gauge
/// once (the dead-letter stream's among them) writes no ERROR line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_first_start_in_a_fresh_namespace_logs_no_error() {
    let ns = crate::common::Namespace::new();
    let svc = binary::spawn(&ns, &[("RUST_LOG", "info,lapin=warn")]);
    binary::wait_ready(&svc.base).await;
    let rx = Receiver::start(200).await;
    post(
        &svc.base,
        "/v1/applications/app_f/webhooks",
        json!({"url": rx.url("/f"), "events": ["item.created"]}),
    )
    .await;
    let producer = Producer::connect(&ns).await;
    producer
        .event("ev-first", "app_f", "item.created", json!({"item_id": 1}))
        .await;
    rx.wait_for("/f", 1).await;
    // Every depth gauge, the dead letters' too, has been read at least once.
    for queue in ["ingest", "deliver", "dead"] {
        let sample = format!("webhooks_queue_depth{{queue=\"{queue}\"}}");
        eventually(Duration::from_secs(20), &sample, || async {
            let text = reqwest::get(format!("{}/metrics", svc.base))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.lines().any(|l| l.starts_with(&sample)).then_some(())
        })
        .await;
    }
    let mut child = svc.child;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0), "SIGTERM exits 0");
    let log = svc.log.lock().unwrap().clone();
    assert!(
        log.iter().any(|l| l.contains("listening on")),
        "the log was read: {log:?}"
    );
    let errors: Vec<&String> = log.iter().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.is_empty(),
        "ERROR lines on a healthy first start: {errors:#?}"
    );
    producer.close().await;
}
