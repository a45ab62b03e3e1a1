//! The real binary, as deployed: SIGKILL while jobs wait in a delay tier,
//! SIGTERM exiting 0, and the `dead-letters` subcommands.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::receiver::Receiver;
use common::{OPERATOR, Producer, binary, eventually, namespace};
use serde_json::{Value, json};

struct Binary {
    child: Child,
    base: String,
}

async fn spawn(ns: &str, extra: &[(&str, &str)]) -> Binary {
    let port = binary::free_port();
    let child = binary::spawn(ns, port, extra, Stdio::inherit());
    let base = format!("http://127.0.0.1:{port}");
    binary::wait_ready(&base).await;
    Binary { child, base }
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

async fn metric(base: &str, sample: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    binary::sample(&text, sample)
}

fn cli(ns: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_webhook-fanout"))
        .args(args)
        .envs(binary::env(ns, &[]))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_waiting_in_a_delay_tier_survive_sigkill_and_sigterm_exits_zero() {
    let ns = namespace();
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
            (metric(
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
    let got = rx.wait_for("/k", 2).await;
    assert_eq!(got[1].header("webhook-attempt"), "2");
    assert_eq!(got[1].header("webhook-id"), "ev-kill");

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
    let ns = namespace();
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
        (metric(&svc.base, "webhooks_dead_lettered_total").await >= 2.0).then_some(())
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

async fn cleanup(ns: &str) {
    let settings =
        webhook_fanout::Settings::from_map(&[("WF_NAMESPACE".to_string(), ns.to_string())].into())
            .unwrap();
    common::delete_namespace(ns, &settings).await;
}
