//! Correct under real operations: jobs and dead letters this release cannot
//! read are moved aside (never dropped), the previous release's jobs are
//! delivered, dead letters survive Redis losing their keys, webhook writes
//! never undo each other, event ids are per application, and a publisher
//! channel closed from outside is reopened.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::{Fixture, OPERATOR, Producer, TestService, eventually, sign};
use deadpool_redis::redis::AsyncCommands;
use lapin::types::AMQPValue;
use serde_json::{Value, json};
use webhook_fanout::broker::JOB_ROUTING_KEY;

/// The `x-reject-reason` of every message now in `{ns}.rejected`.
async fn rejected_reasons(svc: &TestService, producer: &Producer, n: usize) -> Vec<String> {
    let queue = svc.names().rejected();
    let mut reasons = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while reasons.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {n} messages in the rejected queue: {reasons:?}"
        );
        while let Some((_, headers)) = producer.get(&queue).await {
            let reason = match headers.inner().get("x-reject-reason") {
                Some(AMQPValue::LongString(s)) => s.to_string(),
                other => format!("{other:?}"),
            };
            reasons.push(reason);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reasons.sort();
    reasons
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_this_release_cannot_read_is_moved_to_rejected_with_its_reason() {
    let svc = Fixture::service(&[]).await;
    let producer = Producer::connect(&svc.ns).await;
    let deliveries = svc.names().deliveries();
    let newer = json!({"v": 3, "event_id": "e", "application_id": "a", "webhook_id": "w",
        "type": "item.created", "body": {}, "received_at_ms": 0, "shiny": true});
    producer
        .to(&deliveries, JOB_ROUTING_KEY, newer.to_string().as_bytes())
        .await;
    producer
        .to(&deliveries, JOB_ROUTING_KEY, b"{not a job")
        .await;

    let reasons = rejected_reasons(&svc, &producer, 2).await;
    assert!(reasons[0].starts_with("malformed_job: "), "{reasons:?}");
    assert_eq!(reasons[1], "unsupported_job_version: 3");
    svc.metric_reaches(
        r#"webhooks_jobs_rejected_total{reason="unsupported_job_version"}"#,
        1.0,
    )
    .await;
    svc.metric_reaches(
        r#"webhooks_jobs_rejected_total{reason="malformed_job"}"#,
        1.0,
    )
    .await;

    producer.close().await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_written_by_the_previous_release_are_delivered() {
    let f = Fixture::start(&[]).await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    let hook = svc
        .webhook("app_old", &rx.url("/old"), &["item.created"])
        .await;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let mut expected = Vec::new();
    let files = ["jobs-a097311", "jobs-4f4499e"]
        .iter()
        .flat_map(|release| std::fs::read_dir(format!("{root}/{release}")).unwrap());
    for entry in files {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("__APP__", "app_old")
            .replace("__WEBHOOK__", hook["id"].as_str().unwrap())
            .replace(
                "__NOW_MS__",
                &webhook_fanout::clock::unix_millis().to_string(),
            );
        let job: Value = serde_json::from_str(&text).unwrap();
        // Requests sent so far: attempts without `"sent": false` (the
        // oldest release wrote no `sent`, and counted every attempt).
        let sent = job["attempts"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|a| a["sent"] != false).count());
        expected.push((job["event_id"].as_str().unwrap().to_string(), sent + 1));
        producer
            .to(&svc.names().deliveries(), JOB_ROUTING_KEY, text.as_bytes())
            .await;
    }
    assert!(
        expected.len() >= 6,
        "fixtures of both releases found in {root}"
    );
    let got = rx.wait_for("/old", expected.len()).await;
    let mut seen: Vec<(String, usize)> = got
        .iter()
        .map(|r| {
            let attempt = r.header("webhook-attempt").parse().unwrap();
            (r.header("webhook-id"), attempt)
        })
        .collect();
    seen.sort();
    expected.sort();
    assert_eq!(
        seen, expected,
        "each old job delivered, attempts counted on"
    );

    f.stop().await;
}

/// Every dead letter of the namespace, as the API lists them.
async fn dead_letters(svc: &TestService) -> Vec<Value> {
    let (status, page) = svc
        .call("GET", "/v1/dead-letters?limit=100", Some(OPERATOR), None)
        .await;
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_stay_visible_and_replayable_when_redis_loses_their_keys() {
    let f = Fixture::start(&[]).await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    let hook = svc
        .call(
            "POST",
            "/v1/applications/app_dl/webhooks",
            Some(OPERATOR),
            Some(json!({"url": rx.url("/dl"), "events": ["item.created"], "enabled": false})),
        )
        .await
        .1;
    // Queued while the webhook is enabled would be delivered; publish jobs
    // straight to the deliveries exchange for the disabled webhook instead.
    for i in 0..3 {
        let job = json!({"v": 1, "event_id": format!("ev-dl-{i}"), "application_id": "app_dl",
            "webhook_id": hook["id"], "type": "item.created",
            "body": {"content": {}, "timestamp": 1, "type": "item.created"},
            "received_at_ms": webhook_fanout::clock::unix_millis()});
        producer
            .to(
                &svc.names().deliveries(),
                JOB_ROUTING_KEY,
                job.to_string().as_bytes(),
            )
            .await;
    }
    // And one dead letter no release can read.
    producer
        .to("", &svc.names().dead(), b"{\"v\": 9, \"what\": \"future\"}")
        .await;
    let listed = eventually(Duration::from_secs(15), "3 dead letters", || async {
        let items = dead_letters(svc).await;
        (items.len() >= 3).then_some(items)
    })
    .await;
    assert_eq!(listed.len(), 3, "the unreadable one is not listed");
    let reasons = rejected_reasons(svc, producer, 1).await;
    assert_eq!(
        reasons,
        ["unsupported_dead_letter_version: 9"],
        "moved aside once"
    );

    // Redis loses every dead-letter key of the namespace (a restart without
    // persistence, a failover that lost writes, a flush).
    let keys: Vec<String> = {
        let client = deadpool_redis::redis::Client::open(crate::common::redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = conn.keys(format!("{}:dead*", svc.ns)).await.unwrap();
        for k in &keys {
            let _: i64 = conn.del(k).await.unwrap();
        }
        keys
    };
    println!("deleted from Redis: {keys:?}");
    let after = dead_letters(svc).await;
    let ids = |items: &[Value]| -> BTreeSet<String> {
        items
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&after), ids(&listed), "still listed from RabbitMQ");
    let id = after[0]["id"].as_str().unwrap();
    let (status, shown) = svc
        .call(
            "GET",
            &format!("/v1/dead-letters/{id}"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(
        (status, &shown["reason"]),
        (200, &json!("webhook_disabled"))
    );

    // Its settled mark went with Redis: it is copied aside again (the stream
    // still holds it), and still not listed.
    let reasons = rejected_reasons(svc, producer, 1).await;
    assert_eq!(reasons, ["unsupported_dead_letter_version: 9"]);

    // Fixed and re-enabled, the webhook gets the replay.
    let path = format!(
        "/v1/applications/app_dl/webhooks/{}",
        hook["id"].as_str().unwrap()
    );
    let (status, _) = svc
        .call(
            "PATCH",
            &path,
            Some(OPERATOR),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = svc
        .call(
            "POST",
            &format!("/v1/dead-letters/{id}/replay"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let got = rx.wait_for("/dl", 1).await;
    assert_eq!(
        got[0].header("webhook-id"),
        shown["event_id"].as_str().unwrap()
    );

    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_never_undo_a_rotation_and_if_match_guards_writes() {
    let f = Fixture::start(&[]).await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    let hook = svc
        .webhook("app_cas", &rx.url("/cas"), &["item.created"])
        .await;
    let path = format!(
        "/v1/applications/app_cas/webhooks/{}",
        hook["id"].as_str().unwrap()
    );

    // 50 PATCHes race one rotation.
    let patches = (0..50).map(|i| {
        let (svc, path) = (&svc, &path);
        async move {
            let body = json!({"name": format!("name {i}")});
            svc.call("PATCH", path, Some(OPERATOR), Some(body)).await.0
        }
    });
    let rotate_path = format!("{path}/rotate-secret");
    let rotation = svc.call("POST", &rotate_path, Some(OPERATOR), None);
    let (statuses, (status, rotated)) =
        tokio::join!(futures_util::future::join_all(patches), rotation);
    assert_eq!(status, 200, "{rotated}");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let secret = rotated["secret"].as_str().unwrap();

    producer
        .event("ev-cas", "app_cas", "item.created", json!({}))
        .await;
    let got = rx.wait_for("/cas", 1).await;
    let r = &got[0];
    let bridge = r.header("bridgeapi-signature");
    assert_eq!(
        bridge.split(',').next().unwrap(),
        sign::bridge(secret, &r.body),
        "signed with the secret the rotation returned, newest first"
    );
    let standard = sign::standard(
        secret,
        &r.header("webhook-id"),
        &r.header("webhook-timestamp"),
        &r.body,
    );
    assert!(
        r.header("webhook-signature")
            .split(' ')
            .any(|s| s == standard),
        "Standard Webhooks signature with the rotated secret"
    );

    // ETag and If-Match.
    let http = reqwest::Client::new();
    let url = format!("{}{path}", svc.base);
    let get = http.get(&url).bearer_auth(OPERATOR).send().await.unwrap();
    let etag = get.headers()["etag"].to_str().unwrap().to_string();
    let patch = |tag: String, name: &'static str| {
        http.patch(&url)
            .bearer_auth(OPERATOR)
            .header("if-match", tag)
            .body(json!({"name": name}).to_string())
            .send()
    };
    let ok = patch(etag.clone(), "current").await.unwrap();
    assert_eq!(ok.status(), 200);
    let newer = ok.headers()["etag"].to_str().unwrap().to_string();
    assert_ne!(newer, etag, "every write is a new revision");
    let stale = patch(etag.clone(), "stale").await.unwrap();
    assert_eq!(stale.status(), 412);
    let error: Value = stale.json().await.unwrap();
    assert_eq!(error["error"]["code"], "precondition_failed");
    let rotate = http
        .post(format!("{url}/rotate-secret"))
        .bearer_auth(OPERATOR)
        .header("if-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(rotate.status(), 412, "a stale rotation is refused too");
    let delete = http
        .delete(&url)
        .bearer_auth(OPERATOR)
        .header("if-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 412);
    let (_, now) = svc.call("GET", &path, Some(OPERATOR), None).await;
    assert_eq!(now["name"], "current", "the stale writes changed nothing");
    let delete = http
        .delete(&url)
        .bearer_auth(OPERATOR)
        .header("if-match", &newer)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 204);

    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_id_from_two_applications_is_two_events() {
    let f = Fixture::start(&[]).await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    svc.webhook("app_x", &rx.url("/x"), &["item.created"]).await;
    svc.webhook("app_y", &rx.url("/y"), &["item.created"]).await;
    producer
        .event("evt-1", "app_x", "item.created", json!({}))
        .await;
    producer
        .event("evt-1", "app_y", "item.created", json!({}))
        .await;
    // And a real duplicate is still skipped.
    producer
        .event("evt-1", "app_x", "item.created", json!({}))
        .await;
    assert_eq!(rx.wait_for("/x", 1).await[0].header("webhook-id"), "evt-1");
    assert_eq!(rx.wait_for("/y", 1).await[0].header("webhook-id"), "evt-1");
    svc.metric_reaches("webhooks_events_duplicate_total", 1.0)
        .await;
    assert_eq!(rx.at("/x").len(), 1, "the duplicate from app_x was skipped");

    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_channel_closed_from_outside_is_reopened_and_nothing_is_lost() {
    let f = Fixture::start(&[]).await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    svc.webhook("app_ch", &rx.url("/ch"), &["item.created"])
        .await;
    producer
        .event("ev-ch-0", "app_ch", "item.created", json!({}))
        .await;
    rx.wait_for("/ch", 1).await;

    // Delete the operational events' exchange: the next one published (for
    // the webhook created below) is a channel error (404) that closes the
    // operational publisher's channel.
    let conn = lapin::Connection::connect(&crate::common::amqp_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_delete(
        svc.names().operational().as_str().into(),
        Default::default(),
    )
    .await
    .unwrap();
    let watch = tokio::spawn({
        let url = format!("{}/readyz", svc.base);
        async move {
            let http = reqwest::Client::new();
            let mut saw_503 = false;
            for _ in 0..1500 {
                let status = http.get(&url).send().await.map(|r| r.status().as_u16());
                match status {
                    Ok(503) => saw_503 = true,
                    Ok(200) if saw_503 => return true,
                    _ => {}
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        }
    });
    svc.webhook("app_ch", &rx.url("/other"), &["item.refreshed"])
        .await;
    for i in 1..=5 {
        let id = format!("ev-ch-{i}");
        producer
            .event(&id, "app_ch", "item.created", json!({}))
            .await;
    }
    assert!(watch.await.unwrap(), "/readyz went 503, then 200 again");
    let got = rx.wait_for("/ch", 6).await;
    let ids: BTreeSet<String> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 6, "every event delivered: {ids:?}");

    let _ = conn.close(200, "done".into()).await;
    f.stop().await;
}
