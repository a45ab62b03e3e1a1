//! Ingest partitions seen from outside: one application's burst, still
//! waiting to be fanned out, holds back only the applications of its own
//! partition.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::receiver::Receiver;
use crate::common::{Fixture, Namespace, Producer, binary, eventually};
use crate::ordering::hook;
use crate::shared_host::{Published, first_receipts, percentile};

/// An application's partition as the reference documents it: FNV-1a
/// (64 bit) of its id, modulo the partition count.
fn partition_of(app: &str, partitions: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in app.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h % partitions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a burst of 40,000 deliveries: make test runs it after the others, one test at a time"]
async fn a_burst_at_ingest_holds_back_only_the_applications_of_its_partition() {
    // 10,000 events to 4 webhooks of the burst's application, all on one
    // receiver: fanning an event out publishes 4 jobs while publishing it
    // is one message, so the burst queues up at ingest however fast or slow
    // the machine is (with one webhook, fan-out kept up with a slow
    // publisher on a busy day and nothing waited).
    const BURST: usize = 10_000;
    const HOOKS: usize = 4;
    let f = Fixture::start(&[("WF_SHUTDOWN_TIMEOUT", "1s")]).await;
    let (svc, rx) = (&f.svc, &f.rx);
    let big = "app_burst";
    // Three quiet applications in other partitions (the default 16), and
    // one that shares the burst's.
    let home = partition_of(big, 16);
    let mut quiet: Vec<String> = (0..)
        .map(|i| format!("app_quiet_{i}"))
        .filter(|a| partition_of(a, 16) != home)
        .take(3)
        .collect();
    let neighbour = (0..)
        .map(|i| format!("app_near_{i}"))
        .find(|a| partition_of(a, 16) == home)
        .unwrap();
    for h in 0..HOOKS {
        svc.webhook(big, &rx.url(&format!("/burst/{h}")), &["item.created"])
            .await;
    }
    for app in quiet.iter().chain([&neighbour]) {
        svc.webhook(app, &rx.url(&format!("/{app}")), &["item.created"])
            .await;
    }

    // The burst, published as fast as the broker confirms it, and beside
    // it an event of every quiet application each 50 ms until the burst
    // has been fanned out.
    let ids: Vec<String> = (0..BURST).map(|i| format!("ev-burst-{i}")).collect();
    let burst = {
        let producer = Producer::connect(&svc.ns).await;
        tokio::spawn(async move {
            for chunk in ids.chunks(1_000) {
                producer.burst(big, "item.created", chunk).await;
            }
            producer.close().await;
        })
    };
    quiet.push(neighbour.clone());
    // Events of the burst fanned out: the jobs enqueued less one for each
    // quiet event published so far (a quiet event not yet fanned out makes
    // the figure a little low, never high).
    let burst_fanned_out = |quiet_sent: usize| async move {
        let enqueued = svc.metric("webhooks_jobs_enqueued_total").await;
        (enqueued - quiet_sent as f64) / HOOKS as f64
    };
    let mut published: Vec<Published> = vec![Vec::new(); quiet.len()];
    let start = tokio::time::Instant::now();
    // How much of the burst waited for fan-out once it was all published.
    let mut waiting = None;
    let mut fanned_out = false;
    for i in 0.. {
        for (app, sent) in quiet.iter().zip(&mut published) {
            let id = format!("ev-{app}-{i}");
            let at = Instant::now();
            f.producer
                .event(&id, app, "item.created", json!({"i": i}))
                .await;
            sent.push((id, at));
        }
        let quiet_sent = (i + 1) * quiet.len();
        if waiting.is_none() && burst.is_finished() {
            waiting = Some(BURST as f64 - burst_fanned_out(quiet_sent).await);
        }
        if waiting.is_some() && i % 10 == 9 {
            fanned_out = burst_fanned_out(quiet_sent).await >= BURST as f64;
        }
        if fanned_out || i == 4_000 {
            break;
        }
        tokio::time::sleep_until(start + Duration::from_millis(50) * (i as u32 + 1)).await;
    }
    burst.await.unwrap();
    let took = start.elapsed();
    let waiting = waiting.unwrap();
    println!(
        "{waiting} of the burst's {BURST} events waited for fan-out once all were published; fanned out in {took:?}"
    );
    assert!(
        waiting > (BURST / 4) as f64,
        "the burst queued up at ingest: {waiting} waiting"
    );
    assert!(fanned_out, "the burst was fanned out within the run");

    // The neighbour shares the burst's partition, so it waits behind it:
    // shown, not asserted.
    let near = published.pop().unwrap();
    quiet.pop();
    let path = format!("/{neighbour}");
    let worst = *latencies(rx, &path, &near).await.last().unwrap();
    println!("{path} (the burst's partition): slowest event {worst:?}");
    // The others never wait for the burst's fan-out: it took `took`, and
    // the neighbour waited a good part of it. (This is a debug build beside
    // RabbitMQ on the same cores; the release figure, p99 under 1 s, is
    // `fair_share --burst 40000`'s, in docs/performance.md.)
    let bound = Duration::from_secs(3);
    for (app, sent) in quiet.iter().zip(&published) {
        let path = format!("/{app}");
        let latencies = latencies(rx, &path, sent).await;
        let (p50, p99) = (latencies[latencies.len() / 2], percentile(&latencies, 99));
        println!("{path}: {} events, p50 {p50:?}, p99 {p99:?}", sent.len());
        assert!(
            p99 < bound && p99 * 4 < worst,
            "{path}: p99 {p99:?} (the burst's partition: {worst:?})"
        );
    }
    // And the burst arrives whole at every webhook, once each.
    for h in 0..HOOKS {
        let path = format!("/burst/{h}");
        eventually(Duration::from_secs(180), "the whole burst", || async {
            (rx.at(&path).len() >= BURST).then_some(())
        })
        .await;
        let distinct: std::collections::BTreeSet<String> = rx
            .at(&path)
            .iter()
            .map(|r| r.header("webhook-id"))
            .collect();
        assert_eq!(
            (distinct.len(), rx.at(&path).len()),
            (BURST, BURST),
            "{path}"
        );
    }
    f.stop().await;
}

/// Once every event of `sent` has reached `path` (within 2 minutes): how
/// long each took from its publish to its first receipt, sorted.
async fn latencies(rx: &Receiver, path: &str, sent: &Published) -> Vec<Duration> {
    eventually(Duration::from_secs(120), "every event", || async {
        let got = first_receipts(rx, path, sent[0].1);
        sent.iter()
            .all(|(id, _)| got.contains_key(id))
            .then_some(())
    })
    .await;
    let got = first_receipts(rx, path, sent[0].1);
    let mut latencies: Vec<Duration> = sent
        .iter()
        .map(|(id, at)| got[id].saturating_duration_since(*at))
        .collect();
    latencies.sort();
    latencies
}

/// The routing process fans out itself the events of the partitions it
/// holds: alone, once it holds them all, not one event goes through a
/// partition queue; with a second process holding half of them, the events
/// of those go through their queues, and every event arrives once either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_fans_out_the_partitions_of_its_own_process_without_the_hop() {
    let ns = Namespace::new();
    let a = binary::spawn(&ns, &[]);
    binary::wait_ready(&a.base).await;
    let held = "webhooks_ingest_partitions_held";
    all_held(&[&a.base]).await;
    let rx = Receiver::start(200).await;
    // One application in each of the 16 partitions.
    let mut apps: Vec<String> = Vec::new();
    for i in 0.. {
        let app = format!("app_{i}");
        if !apps
            .iter()
            .any(|x| partition_of(x, 16) == partition_of(&app, 16))
        {
            apps.push(app);
        }
        if apps.len() == 16 {
            break;
        }
    }
    let types = ["item.created"];
    for app in &apps {
        hook(&a.base, app, &rx.url(&format!("/{app}")), &types, "none").await;
    }
    let producer = Producer::connect(&ns).await;
    let round = |r: usize| {
        let (producer, apps, rx) = (&producer, &apps, &rx);
        async move {
            for app in apps {
                let ids: Vec<String> = (0..10).map(|i| format!("{app}-{r}-{i}")).collect();
                producer.burst(app, "item.created", &ids).await;
            }
            for app in apps {
                rx.wait_for(&format!("/{app}"), 10 * (r + 1)).await;
            }
        }
    };
    let ways = |base: String| async move {
        let direct = r#"webhooks_ingest_events_routed_total{way="direct"}"#;
        let queue = r#"webhooks_ingest_events_routed_total{way="partition"}"#;
        (
            binary::metric(&base, direct).await,
            binary::metric(&base, queue).await,
        )
    };

    round(0).await;
    let (direct_0, queue_0) = ways(a.base.clone()).await;
    assert_eq!(
        direct_0 + queue_0,
        160.0,
        "the router took every event once"
    );
    round(1).await;
    let (direct_1, queue_1) = ways(a.base.clone()).await;
    assert_eq!(
        (direct_1 - direct_0, queue_1 - queue_0),
        (160.0, 0.0),
        "alone, holding every partition, it fans out every event itself"
    );

    // A second process takes its share; the first still routes.
    let b = binary::spawn(&ns, &[]);
    binary::wait_ready(&b.base).await;
    eventually(
        Duration::from_secs(20),
        "both processes hold partitions",
        || async {
            let (x, y) = (
                binary::metric(&a.base, held).await,
                binary::metric(&b.base, held).await,
            );
            (x > 0.0 && y > 0.0 && x + y == 16.0).then_some(y)
        },
    )
    .await;
    let b_holds = binary::metric(&b.base, held).await;
    round(2).await;
    let (direct_2, queue_2) = ways(a.base.clone()).await;
    println!(
        "round 3, the second process holding {b_holds} partitions: {} events fanned out by the router, {} moved to their queues",
        direct_2 - direct_1,
        queue_2 - queue_1
    );
    assert_eq!(
        queue_2 - queue_1,
        10.0 * b_holds,
        "the events of the other process's partitions (one application each) go through their queues"
    );
    assert_eq!(direct_2 - direct_1, 160.0 - 10.0 * b_holds);
    assert_eq!(ways(b.base.clone()).await, (0.0, 0.0), "one process routes");
    for app in &apps {
        let got = rx.at(&format!("/{app}"));
        let ids: HashSet<String> = got.iter().map(|r| r.header("webhook-id")).collect();
        assert_eq!((got.len(), ids.len()), (30, 30), "{app}: every event once");
    }
    producer.close().await;
}

/// Waits until the processes at `bases` hold the 16 partitions between them.
async fn all_held(bases: &[&str]) {
    eventually(Duration::from_secs(20), "every partition held", || async {
        let mut sum = 0.0;
        for base in bases {
            sum += binary::metric(base, "webhooks_ingest_partitions_held").await;
        }
        (sum == 16.0).then_some(())
    })
    .await;
}
