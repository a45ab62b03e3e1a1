//! Several replicas on one namespace share the fan-out (the ingest
//! partitions) and the deliveries, and survive SIGKILL at random moments
//! under load without losing an event.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::receiver::Receiver;
use crate::common::{Fixture, OPERATOR, Producer, binary, eventually};
use rand::Rng;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_deliveries_and_fan_out_each_event_once() {
    let a = Fixture::service(&[]).await;
    let b = Fixture::join(&a.ns, &[]).await;
    let (rx1, rx2) = (Receiver::start(200).await, Receiver::start(200).await);
    // Slow enough that the jobs outlast the moment the second process
    // finds the backlogs the first declared.
    rx1.set_path_delay("/1", Duration::from_millis(100));
    rx2.set_path_delay("/2", Duration::from_millis(100));
    // Both processes fan out: each holds its share of the partitions.
    let held = "webhooks_ingest_partitions_held";
    let (ha, hb) = eventually(Duration::from_secs(10), "partitions shared", || async {
        let (ha, hb) = (a.metric(held).await, b.metric(held).await);
        (ha > 0.0 && hb > 0.0 && ha + hb == 16.0).then_some((ha, hb))
    })
    .await;
    println!("partitions held: {ha} + {hb}");
    a.webhook("app_2", &rx1.url("/1"), &["item.created"]).await;
    a.webhook("app_2", &rx2.url("/2"), &["item.created"]).await;
    let producer = Producer::connect(&a.ns).await;
    for i in 0..100 {
        producer
            .event(
                &format!("ev-2-{i}"),
                "app_2",
                "item.created",
                json!({"i": i}),
            )
            .await;
    }
    rx1.wait_for("/1", 100).await;
    rx2.wait_for("/2", 100).await;
    let (ea, eb) = (
        a.metric("webhooks_jobs_enqueued_total").await,
        b.metric("webhooks_jobs_enqueued_total").await,
    );
    assert_eq!(ea + eb, 200.0, "each event fanned out once");
    // One replica routes the ingest queue to the partitions at a time
    // (each application's events keep its order); the other stands by.
    let (fa, fb) = (
        a.metric("webhooks_fanning_out").await,
        b.metric("webhooks_fanning_out").await,
    );
    assert_eq!(fa + fb, 1.0, "exactly one replica routes: {fa} + {fb}");
    // Deliveries, the bulk of the work, are shared.
    let success = r#"webhooks_deliveries_total{outcome="success"}"#;
    let (da, db) = eventually(
        Duration::from_secs(10),
        "200 deliveries counted",
        || async {
            let (da, db) = (a.metric(success).await, b.metric(success).await);
            (da + db >= 200.0).then_some((da, db))
        },
    )
    .await;
    assert!(da > 0.0 && db > 0.0, "both replicas delivered: {da} + {db}");
    assert_eq!(
        rx1.received().len() + rx2.received().len(),
        200,
        "each job delivered once"
    );

    producer.close().await;
    b.stop().await;
    a.stop().await;
}

fn spawn(ns: &str) -> binary::Spawned {
    let extra = [("WF_RETRY_SCHEDULE", "500ms"), ("RUST_LOG", "warn")];
    binary::spawn(ns, &extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_twice_during_a_stream_of_5000_events_loses_nothing() {
    let seed: u64 = rand::rng().random();
    println!("seed {seed}");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let ns = crate::common::Namespace::new();
    let mut procs = [spawn(&ns), spawn(&ns)];
    let http = reqwest::Client::new();
    binary::wait_ready(&procs[0].base).await;
    binary::wait_ready(&procs[1].base).await;
    let api = procs[0].base.clone();
    let receivers = [Receiver::start(200).await, Receiver::start(200).await];
    for (i, rx) in receivers.iter().enumerate() {
        let r = http
            .post(format!("{api}/v1/applications/app_k/webhooks"))
            .bearer_auth(OPERATOR)
            .body(
                json!({"url": rx.url(&format!("/{i}")), "events": ["transfer.updated"]})
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }

    let producer = Producer::connect(&ns).await;
    const EVENTS: usize = 5_000;
    let ids: Vec<String> = (0..EVENTS).map(|i| format!("ev-k-{i}")).collect();
    // Twice, at random points of the stream, one replica or the other.
    let kills: Vec<usize> = {
        let mut k: Vec<usize> = (0..2)
            .map(|_| rng.random_range(100..EVENTS - 100))
            .collect();
        k.sort();
        k
    };
    println!("SIGKILL after events {kills:?}");
    for (n, id) in ids.iter().enumerate() {
        producer
            .event(id, "app_k", "transfer.updated", json!({"n": n}))
            .await;
        if kills.contains(&n) {
            let which = rng.random_range(0..2);
            procs[which].child.kill().unwrap(); // SIGKILL
            procs[which].child.wait().unwrap();
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..200))).await;
            procs[which] = spawn(&ns);
        }
    }
    for (i, rx) in receivers.iter().enumerate() {
        let path = format!("/{i}");
        eventually(
            Duration::from_secs(180),
            "every event at every webhook",
            || async {
                let got: HashSet<String> = rx
                    .at(&path)
                    .iter()
                    .map(|r| r.header("webhook-id"))
                    .collect();
                ids.iter().all(|id| got.contains(id)).then_some(())
            },
        )
        .await;
        let received = rx.at(&path).len();
        println!(
            "webhook {i}: {EVENTS} events, {received} deliveries, {} duplicates after 2 SIGKILLs",
            received - EVENTS
        );
    }

    for p in &mut procs {
        p.child.kill().unwrap();
        p.child.wait().unwrap();
    }
    producer.close().await;
    let settings = webhook_fanout::Settings::from_map(
        &[
            ("WF_NAMESPACE".to_string(), ns.to_string()),
            ("WF_RETRY_SCHEDULE".to_string(), "500ms".to_string()),
        ]
        .into(),
    )
    .unwrap();
    crate::common::delete_namespace(&ns, &settings).await;
}
