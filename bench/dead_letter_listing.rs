//! Benchmark: how long dead-letter listings take with N dead letters in the
//! `{ns}.dead` stream (default 100,000), against the local RabbitMQ and Redis.
//!
//! cargo run --release --example dead_letter_listing -- [N]

use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use webhook_fanout::broker::{self, Names};
use webhook_fanout::dead_letter::{DeadLetter, DeadLetters, Filter};
use webhook_fanout::job::{AttemptRecord, DeliveryJob};
use webhook_fanout::retry::RetrySchedule;
use webhook_fanout::subscription::Store;

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const REDIS: &str = "redis://127.0.0.1:6379/0";

fn letter(i: usize) -> Vec<u8> {
    let job: DeliveryJob = serde_json::from_value(serde_json::json!({
        "v": 1, "event_id": format!("ev-{i}"), "application_id": format!("app_{}", i % 50),
        "webhook_id": format!("wh_{:032x}", i % 500), "type": "item.refreshed",
        "body": {"content": {"item_id": i, "status": 0, "user_uuid": "9a95b38f-f98b-417a-988b-9d0d584893e7"},
                 "timestamp": 1611681789, "type": "item.refreshed"},
        "received_at_ms": 1_700_000_000_000i64,
    }))
    .unwrap();
    let mut job = job;
    job.attempts = (0..12)
        .map(|a| AttemptRecord {
            sent: true,
            at_ms: 1_700_000_000_000 + a * 1000,
            status: Some(503),
            error: Some("HTTP 503".into()),
            duration_ms: 40,
        })
        .collect();
    serde_json::to_vec(&DeadLetter::from_job(
        job,
        "max_age_exceeded",
        1_700_000_100_000,
    ))
    .unwrap()
}

async fn timed<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    let start = Instant::now();
    let out = f.await;
    println!(
        "{what:<58} {:>8.1} ms",
        start.elapsed().as_secs_f64() * 1000.0
    );
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    let ns = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let names = Names::new(&ns);
    let schedule = RetrySchedule::default();
    let conn = broker::connect(AMQP, "bench").await?;
    let spec = broker::TopologySpec {
        schedule: schedule.clone(),
        dead_letter_retention: Duration::from_secs(86_400),
        queue_type: webhook_fanout::config::QueueType::Classic,
        ingest_partitions: 1,
    };
    broker::declare(&conn, &names, &spec).await?;
    let store = Store::connect(REDIS, &ns)?;

    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let start = Instant::now();
    let queue = names.dead();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        for &i in chunk {
            ch.basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &letter(i),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        }
        ch.wait_for_confirms().await?;
    }
    println!(
        "published {n} dead letters ({} bytes each) in {:.1} s",
        letter(0).len(),
        start.elapsed().as_secs_f64()
    );

    let dead = DeadLetters::new(
        AMQP,
        names.clone(),
        store.clone(),
        Duration::from_secs(86_400),
    );
    let page = timed(
        "first page, no filter (limit 50)",
        dead.page(&Filter::default(), None, 50),
    )
    .await?;
    let cursor: u64 = page.next_cursor.unwrap().parse()?;
    timed(
        "page from a cursor near the start (limit 50)",
        dead.page(&Filter::default(), Some(cursor), 50),
    )
    .await?;
    let late = (n as u64).saturating_sub(100);
    timed(
        "page from a cursor near the end (limit 50)",
        dead.page(&Filter::default(), Some(late), 50),
    )
    .await?;
    let app = Filter {
        application_id: Some("app_7".into()),
        ..Filter::default()
    };
    timed(
        "first page filtered by application (1 in 50 match)",
        dead.page(&app, None, 50),
    )
    .await?;
    let none = Filter {
        application_id: Some("nobody".into()),
        ..Filter::default()
    };
    let empty = timed(
        &format!("filter matching nothing: full scan of {n}"),
        dead.page(&none, None, 50),
    )
    .await?;
    assert!(empty.items.is_empty());
    timed(
        "show the last dead letter by id",
        dead.get(&format!("dl_{}", n - 1)),
    )
    .await?;

    let ch = conn.create_channel().await?;
    broker::delete(&ch, &names, &schedule).await?;
    store.delete_namespace().await?;
    Ok(())
}
