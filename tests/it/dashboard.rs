//! The dashboard, driven in headless Chromium (tests/browser/dashboard.mjs,
//! playwright-core) against a real service, RabbitMQ and Redis. Chromium and
//! playwright-core are installed by scripts/ensure-browser.sh (run by
//! `make test`). Screenshots go to target/dashboard-screenshots/.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::receiver::Receiver;
use crate::common::{Fixture, OPERATOR, Producer, TestService, eventually, sign};
use serde_json::{Value, json};

const APP: &str = "dash_app";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Chromium path, after making sure Chromium and playwright-core are there.
fn browser() -> String {
    let out = Command::new("bash")
        .arg(root().join("scripts/ensure-browser.sh"))
        .output()
        .expect("run scripts/ensure-browser.sh");
    assert!(
        out.status.success(),
        "the browser tests need Chromium and playwright-core: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .expect("a Chromium path")
        .to_string()
}

struct Page {
    base: String,
    chromium: String,
    shots: PathBuf,
}

impl Page {
    /// Runs one phase of the browser script; returns what it saw.
    async fn phase(&self, name: &str, env: &[(&str, &str)]) -> Value {
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg(root().join("tests/browser/dashboard.mjs"))
            .arg(name)
            .env("BASE", &self.base)
            .env("CHROMIUM", &self.chromium)
            .env("SHOTS", &self.shots)
            .envs(env.iter().copied());
        let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
            .await
            .expect("the browser phase finishes within 90 s")
            .expect("node runs");
        assert!(
            out.status.success(),
            "browser phase {name} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).unwrap();
        let seen: Value = serde_json::from_str(line.trim()).expect("one JSON line");
        assert_eq!(
            seen["pageErrors"],
            json!([]),
            "script errors or CSP violations"
        );
        seen
    }
}

/// The filter the admin phase saves.
const FILTER: &str = "content.status in ['ACSC', 'RJCT']";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_manages_webhooks_and_dead_letters_in_a_browser() {
    let chromium = browser();
    let svc = Fixture::service(&[("WF_RETRY_SCHEDULE", "100ms"), ("WF_MAX_EVENT_AGE", "1s")]).await;
    let shots = root().join("target/dashboard-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let page = Page {
        base: svc.base.clone(),
        chromium,
        shots: shots.clone(),
    };
    let admin = svc.token(APP, "admin").await;
    let member = svc.token(APP, "member").await;
    let receiver = Receiver::start(200).await;

    // An admin creates a webhook, reads its secret, sends a test.
    let seen = page
        .phase(
            "admin",
            &[
                ("TOKEN", &admin),
                ("APP", APP),
                ("RECEIVER_URL", &receiver.url("/hook")),
                ("FILTER", FILTER),
            ],
        )
        .await;
    assert_eq!(seen["empty"], "No webhooks yet: create one.");
    let filter_error = seen["filterError"].as_str().unwrap();
    assert!(filter_error.contains("does not compile"), "{seen}");
    assert!(
        seen["tryMatch"].as_str().unwrap().starts_with("Matches"),
        "{seen}"
    );
    assert!(
        seen["tryNoMatch"].as_str().unwrap().starts_with("No match"),
        "{seen}"
    );
    assert!(
        seen["urlError"].as_str().unwrap().contains("url"),
        "the validation error is shown next to the URL: {seen}"
    );
    assert_eq!(seen["urlInvalid"], "true", "the field is marked invalid");
    assert_eq!(seen["groups"], json!(["AIS", "PIS"]));
    let result = seen["result"].as_str().unwrap();
    assert!(result.starts_with("Delivered · HTTP 200"), "{result}");
    let secret = seen["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let got = receiver.wait_for("/hook", 1).await;
    let test = &got[0];
    let body: Value = serde_json::from_slice(&test.body).unwrap();
    assert_eq!(body["type"], "TEST_EVENT");
    assert_eq!(
        test.header("bridgeapi-signature"),
        sign::bridge(secret, &test.body),
        "signed with the secret the page showed"
    );
    let (_, hooks) = svc
        .call(
            "GET",
            &format!("/v1/applications/{APP}/webhooks"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(
        hooks[0]["ordering"], "per_key",
        "the form's ordering box: {hooks}"
    );
    assert_eq!(
        hooks[0]["rate_limit"],
        json!({"requests": 100, "per": "1m"}),
        "the form's rate limit: {hooks}"
    );
    assert_eq!(hooks[0]["filter"], FILTER, "the form's filter: {hooks}");
    assert_eq!(
        hooks[0]["headers"],
        json!({"X-Api-Key": "k-123"}),
        "the form's extra headers: {hooks}"
    );
    assert_eq!(test.header("x-api-key"), "k-123", "sent with the test too");

    // A failing receiver's delivery ends up a dead letter.
    let failing = Receiver::start(500).await;
    let hook = svc
        .webhook(APP, &failing.url("/fail"), &["item.created"])
        .await;
    let hook_id = hook["id"].as_str().unwrap().to_string();
    let producer = Producer::connect(&svc.ns).await;
    producer
        .event(
            "evt-dashboard-1",
            APP,
            "item.created",
            json!({"item_id": 7}),
        )
        .await;
    eventually(Duration::from_secs(15), "a dead letter", || async {
        let (_, page) = svc
            .call(
                "GET",
                &format!("/v1/dead-letters?webhook_id={hook_id}"),
                Some(OPERATOR),
                None,
            )
            .await;
        (page["items"].as_array().map_or(0, Vec::len) == 1).then_some(())
    })
    .await;

    // Up to the limit: the page says so before the user tries.
    for i in 2..10 {
        svc.webhook(APP, &receiver.url(&format!("/other{i}")), &["item.created"])
            .await;
    }
    let seen = page
        .phase("limit", &[("TOKEN", &admin), ("APP", APP)])
        .await;
    assert_eq!(seen["counter"], "10 of 10 webhooks");
    assert_eq!(seen["createDisabled"], true);
    assert!(seen["notice"].as_str().unwrap().contains("Delete one"));
    let rotated = seen["rotated"].as_str().unwrap();
    assert!(rotated.starts_with("whsec_") && rotated != secret);
    assert!(seen["warning"].as_str().unwrap().contains("24 hours"));
    assert_eq!(seen["secretAfterSignOut"], "");
    assert_eq!(seen["stored"], Value::Null);

    // A member reads the list and finds no button that writes.
    let seen = page
        .phase("member", &[("TOKEN", &member), ("APP", APP)])
        .await;
    assert_eq!(seen["rows"], 10);
    assert_eq!(seen["rowButtons"], 0);
    assert_eq!(seen["createVisible"], false);

    // The operator finds the dead letter, reads it, replays it.
    failing.set_status(200);
    let before = failing.at("/fail").len();
    let seen = page
        .phase("operator", &[("TOKEN", OPERATOR), ("WEBHOOK", &hook_id)])
        .await;
    assert_eq!(seen["rows"], 1);
    let shown = seen["body"].as_str().unwrap();
    assert!(
        shown.contains("\n  \"type\": \"item.created\"") && shown.contains("\n    \"item_id\": 7"),
        "pretty-printed: {shown}"
    );
    assert!(seen["attempts"].as_u64().unwrap() >= 1);
    let replayed = failing.wait_for("/fail", before + 1).await;
    assert_eq!(
        replayed.last().unwrap().header("webhook-id"),
        "evt-dashboard-1"
    );
    println!("screenshots: {}", shots.display());
    producer.close().await;
    svc.stop().await;
}

/// A page on `svc`, an admin token of `app`, and a webhook named `name` on
/// a receiver whose `path` answers `status`.
async fn named_webhook(
    svc: &TestService,
    app: &str,
    name: &str,
    path: &str,
    status: u16,
) -> (Page, String, Receiver, Value) {
    let shots = root().join("target/dashboard-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let page = Page {
        base: svc.base.clone(),
        chromium: browser(),
        shots,
    };
    let admin = svc.token(app, "admin").await;
    let receiver = Receiver::start(200).await;
    receiver.set_path_status(path, status);
    let (created, hook) = svc
        .call(
            "POST",
            &format!("/v1/applications/{app}/webhooks"),
            Some(OPERATOR),
            Some(json!({"url": receiver.url(path), "name": name, "events": ["item.created"]})),
        )
        .await;
    assert_eq!(created, 201, "{hook}");
    (page, admin, receiver, hook)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_webhook_shows_why_and_re_enable_and_replay_delivers_what_it_missed() {
    let svc = Fixture::service(&[]).await;
    let app = "dash_catch";
    let (page, admin, receiver, hook) = named_webhook(&svc, app, "Catch-up", "/catch", 410).await;
    let path = format!(
        "/v1/applications/{app}/webhooks/{}",
        hook["id"].as_str().unwrap()
    );
    let producer = Producer::connect(&svc.ns).await;
    producer
        .event("evt-catch-0", app, "item.created", json!({"n": 0}))
        .await;
    eventually(Duration::from_secs(15), "the 410 to disable it", || async {
        let (_, now) = svc.call("GET", &path, Some(OPERATOR), None).await;
        (now["disabled_reason"] == "gone").then_some(())
    })
    .await;
    for n in 1..3 {
        producer
            .event(
                &format!("evt-catch-{n}"),
                app,
                "item.created",
                json!({"n": n}),
            )
            .await;
    }
    let replay = format!("{path}/replay");
    eventually(Duration::from_secs(15), "three dead letters", || async {
        let (_, counted) = svc
            .call(
                "POST",
                &replay,
                Some(OPERATOR),
                Some(json!({"dry_run": true})),
            )
            .await;
        (counted["total"] == 3).then_some(())
    })
    .await;
    receiver.set_path_status("/catch", 200);

    let seen = page
        .phase("catchup", &[("TOKEN", &admin), ("APP", app)])
        .await;
    let state = seen["state"].as_str().unwrap();
    assert!(
        state.contains("disabled") && state.contains("410 Gone"),
        "{state}"
    );
    assert_eq!(seen["label"], "Re-enable and replay the 3 events it missed");
    assert!(
        seen["dialogs"][0].as_str().unwrap().contains("3 events"),
        "the count before confirming: {seen}"
    );
    assert!(
        seen["status"].as_str().unwrap().contains("replayed 3 of 3"),
        "{seen}"
    );
    let after = seen["after"].as_str().unwrap();
    assert!(
        after.starts_with("yes") && !after.contains("disabled"),
        "{after}"
    );
    let got = receiver.wait_for("/catch", 4).await;
    let ids: Vec<String> = got[1..].iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids, ["evt-catch-0", "evt-catch-1", "evt-catch-2"]);
    producer.close().await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_expiring_within_30_days_is_flagged() {
    let svc = Fixture::service(&[]).await;
    let app = "dash_certs";
    let ca = crate::common::certs::Ca::new("Dashboard CA");
    let (page, admin, receiver, _) = named_webhook(&svc, app, "Plain", "/plain", 200).await;
    for (name, days) in [("Soon", 10), ("Later", 90)] {
        let cert = ca.client_expiring(&format!("{}.test", name.to_lowercase()), days);
        let body = json!({"url": receiver.url("/c"), "name": name, "events": ["item.created"],
                          "tls_client": cert.json()});
        let path = format!("/v1/applications/{app}/webhooks");
        let (status, hook) = svc.call("POST", &path, Some(OPERATOR), Some(body)).await;
        assert_eq!(status, 201, "{hook}");
    }
    let seen = page
        .phase("certificates", &[("TOKEN", &admin), ("APP", app)])
        .await;
    let soon = seen["soon"].as_str().unwrap();
    assert!(soon.contains("certificate expires soon"), "{seen}");
    assert!(
        !seen["later"].as_str().unwrap().contains("certificate"),
        "{seen}"
    );
    assert!(
        seen["title"].as_str().unwrap().contains("CN=soon.test"),
        "{seen}"
    );
    let facts = seen["facts"].to_string();
    assert!(
        facts.contains("CN=soon.test") && facts.contains("within 30 days"),
        "{facts}"
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_page_shows_its_chart_and_attempts_and_finds_an_event() {
    let svc = Fixture::service(&[("WF_RETRY_SCHEDULE", "10m")]).await;
    let app = "dash_history";
    let (page, admin, receiver, hook) = named_webhook(&svc, app, "Flaky", "/flaky", 500).await;
    let producer = Producer::connect(&svc.ns).await;
    for n in 0..4 {
        producer
            .event(
                &format!("evt-hist-{n}"),
                app,
                "item.created",
                json!({"n": n}),
            )
            .await;
    }
    receiver.wait_for("/flaky", 4).await;
    let attempts = format!(
        "/v1/applications/{app}/webhooks/{}/attempts",
        hook["id"].as_str().unwrap()
    );
    eventually(
        Duration::from_secs(10),
        "four recorded attempts",
        || async {
            let (_, page) = svc.call("GET", &attempts, Some(OPERATOR), None).await;
            (page["items"].as_array().map_or(0, Vec::len) == 4).then_some(())
        },
    )
    .await;

    let seen = page
        .phase(
            "history",
            &[("TOKEN", &admin), ("APP", app), ("EVENT", "evt-hist-2")],
        )
        .await;
    assert_eq!(seen["badge"], "0.0% ok (24 h)", "{seen}");
    assert!(seen["bars"].as_u64().unwrap() >= 1, "{seen}");
    // The failures just made show in the hour's and the week's chart too.
    assert!(seen["week"].as_u64().unwrap() >= 1, "7 d: {seen}");
    assert!(seen["hour"].as_u64().unwrap() >= 1, "1 h: {seen}");
    assert_eq!(seen["attempts"], 4);
    let facts = seen["facts"].to_string();
    assert!(
        facts.contains("0.0% of 4") && facts.contains("HTTP 500") && facts.contains("jobs waiting"),
        "{facts}"
    );
    assert_eq!(seen["expanded"], "HTTP 500");
    assert_eq!(seen["found"], json!(["evt-hist-2"]));
    producer.close().await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_with_its_security_headers_and_me_names_the_role() {
    let svc = Fixture::service(&[]).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .get(format!("{}/dashboard", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/dashboard/");
    for (path, kind) in [
        ("/dashboard/", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
    ] {
        let r = http
            .get(format!("{}{path}", svc.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert!(h["content-type"].to_str().unwrap().starts_with(kind));
        assert_eq!(h["x-frame-options"], "DENY");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    }
    let r = http
        .get(format!("{}/dashboard/.env", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-frame-options"], "DENY");

    let admin = svc.token(APP, "admin").await;
    let member = svc.token(APP, "member").await;
    for (token, want) in [
        (
            OPERATOR,
            json!({"role": "operator", "application_id": null}),
        ),
        (&admin, json!({"role": "admin", "application_id": APP})),
        (&member, json!({"role": "member", "application_id": APP})),
    ] {
        assert_eq!(
            svc.call("GET", "/v1/me", Some(token), None).await,
            (200, want)
        );
    }
    let (status, body) = svc.call("GET", "/v1/me", Some("wft_nope"), None).await;
    assert_eq!(status, 401, "{body}");
    svc.stop().await;
}
