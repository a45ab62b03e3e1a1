//! Cost per delivery as the backlog grows: for each backlog size B, fills
//! `{ns}.deliver` with B jobs (3 webhooks, ~400-byte events, published
//! straight to `{ns}.deliveries` with confirms while no process consumes),
//! then starts a deliver process and measures its first `--measure`
//! deliveries: deliveries/s and the service's CPU seconds per 1,000. The rest
//! of the backlog is purged. A new event waits behind the whole backlog (the
//! queue is FIFO), so its latency is about B ÷ the measured rate.
//!
//! ```sh
//! cargo build --release
//! cargo run --release --example backlog -- --backlog 1000,100000,1000000
//! ```

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use clap::Parser;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use support::{AMQP, Receivers, ServiceProcess, envelope};
use webhook_fanout::broker::{JOB_ROUTING_KEY, Names};
use webhook_fanout::event::{Catalogue, Event};
use webhook_fanout::job::DeliveryJob;

#[derive(Parser)]
struct Args {
    /// Backlog sizes (jobs waiting), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,100000,1000000")]
    backlog: Vec<usize>,
    /// Deliveries measured per backlog size (at most the backlog).
    #[arg(long, default_value_t = 30_000)]
    measure: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let receivers = Receivers::start(3).await;
    let quiet = vec![("RUST_LOG".to_string(), "info,lapin=warn".to_string())];
    println!(
        "backlog (jobs)  measured  deliveries/s  CPU s/1k deliveries  queue wait for a new event"
    );
    for &backlog in &args.backlog {
        let api_only = [quiet.clone(), vec![("WF_ROLES".into(), "api".into())]].concat();
        let mut service = ServiceProcess::start(1, &receivers, &api_only).await?;
        let names = Names::new(&service.namespace);
        fill(&names, &service.webhook_ids, backlog).await?;
        anyhow::ensure!(
            depth(&names).await? as usize >= backlog,
            "backlog not in place"
        );
        receivers.reset();
        let cpu0 = service.cpu();
        let started = Instant::now();
        let deliver = [quiet.clone(), vec![("WF_ROLES".into(), "deliver".into())]].concat();
        service.add(&deliver).await?;
        let measure = args.measure.min(backlog);
        receivers.wait_for(measure).await?;
        let elapsed = started.elapsed();
        let cpu = service.cpu() - cpu0;
        let rate = measure as f64 / elapsed.as_secs_f64();
        println!(
            "{backlog:>14}  {measure:>8}  {rate:>12.0}  {:>19.3}  {:>10.1} s",
            cpu / measure as f64 * 1000.0,
            backlog as f64 / rate
        );
        purge(&names).await?;
        service.stop().await;
    }
    println!("bad signatures or unknown ids: {}", receivers.bad());
    Ok(())
}

/// Publishes `n` jobs, round-robin over `webhooks`, with confirms.
async fn fill(names: &Names, webhooks: &[String], n: usize) -> anyhow::Result<()> {
    let conn = Connection::connect(AMQP, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let catalogue = Catalogue::embedded();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let exchange = names.deliveries();
    let started = Instant::now();
    let mut confirms = Vec::with_capacity(1000);
    for i in 0..n.div_ceil(webhooks.len()) {
        let id = format!("{run}-{i}");
        let (_, body) = envelope(&id, i);
        let event = Event::parse(&body, None, &catalogue, webhook_fanout::clock::unix_secs())
            .map_err(|r| anyhow::anyhow!("bench envelope rejected: {}", r.header()))?;
        for webhook in webhooks.iter().take(n - i * webhooks.len()) {
            let job = DeliveryJob::new(&event, webhook, webhook_fanout::clock::unix_micros());
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(id.as_str().into());
            confirms.push(
                channel
                    .basic_publish(
                        exchange.as_str().into(),
                        JOB_ROUTING_KEY.into(),
                        BasicPublishOptions::default(),
                        &job.encode(),
                        props,
                    )
                    .await?,
            );
        }
        if confirms.len() >= 1000 {
            for c in futures_util::future::join_all(confirms.drain(..)).await {
                anyhow::ensure!(c?.is_ack(), "nacked");
            }
        }
    }
    for c in futures_util::future::join_all(confirms.drain(..)).await {
        anyhow::ensure!(c?.is_ack(), "nacked");
    }
    eprintln!(
        "filled {n} jobs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let _ = conn.close(200, "filled".into()).await;
    Ok(())
}

async fn depth(names: &Names) -> anyhow::Result<u32> {
    let conn = Connection::connect(AMQP, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = channel
        .queue_declare(
            names.deliver().as_str().into(),
            passive,
            FieldTable::default(),
        )
        .await?;
    let _ = conn.close(200, "depth".into()).await;
    Ok(q.message_count())
}

async fn purge(names: &Names) -> anyhow::Result<()> {
    let conn = Connection::connect(AMQP, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel
        .queue_purge(
            names.deliver().as_str().into(),
            QueuePurgeOptions::default(),
        )
        .await?;
    let _ = conn.close(200, "purged".into()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}
