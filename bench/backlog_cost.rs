//! What a backlog costs the broker: declares `--queues` backlog queues
//! exactly as the service does (durable; quorum with `--quorum`), puts
//! `--jobs` ~600-byte persistent jobs in each, and prints RabbitMQ's memory
//! (`rabbitmqctl status`) before and after, per queue; then deletes them.
//!
//! ```sh
//! cargo run --release --example backlog_cost -- --queues 1000 --jobs 10
//! cargo run --release --example backlog_cost -- --queues 1000 --jobs 10 --quorum
//! ```

#[path = "support/mod.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

use clap::Parser;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use webhook_fanout::broker::{Names, TopologySpec};
use webhook_fanout::config::QueueType;
use webhook_fanout::retry::RetrySchedule;

#[derive(Parser)]
struct Args {
    /// Backlog queues to declare.
    #[arg(long, default_value_t = 1000)]
    queues: usize,
    /// Jobs put in each.
    #[arg(long, default_value_t = 10)]
    jobs: usize,
    /// Quorum queues (`WF_QUEUE_TYPE=quorum`) instead of classic ones.
    #[arg(long)]
    quorum: bool,
}

/// RabbitMQ's total memory in bytes, as `rabbitmqctl status` reports it.
fn broker_memory() -> anyhow::Result<f64> {
    let out = Command::new("rabbitmqctl")
        .args(["status", "--formatter", "json"])
        .output()?;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    status["memory"]["total"]["rss"]
        .as_f64()
        .or_else(|| status["memory"]["total"]["erlang"].as_f64())
        .ok_or_else(|| anyhow::anyhow!("no memory total in rabbitmqctl status"))
}

/// Memory after letting the broker settle (a few readings, the lowest).
async fn settled_memory() -> anyhow::Result<f64> {
    let mut lowest = f64::MAX;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        lowest = lowest.min(broker_memory()?);
    }
    Ok(lowest)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ns = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let names = Names::new(&ns);
    let spec = TopologySpec {
        schedule: RetrySchedule::default(),
        dead_letter_retention: Duration::from_secs(3600),
        queue_type: if args.quorum {
            QueueType::Quorum
        } else {
            QueueType::Classic
        },
        ingest_partitions: 1,
    };
    let conn = Connection::connect(support::AMQP, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let before = settled_memory().await?;
    let job = vec![b'x'; 600];
    let ids: Vec<String> = (0..args.queues).map(|i| format!("wh_{i:032x}")).collect();
    for id in &ids {
        spec.declare_backlog(&ch, &names, id).await?;
        let queue = names.backlog(id);
        let mut confirms = Vec::with_capacity(args.jobs);
        for _ in 0..args.jobs {
            confirms.push(
                ch.basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &job,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?,
            );
        }
        for c in confirms {
            anyhow::ensure!(c.await?.is_ack(), "nacked");
        }
    }
    let after = settled_memory().await?;
    let kind = if args.quorum { "quorum" } else { "classic" };
    let per_queue = (after - before) / args.queues as f64;
    println!(
        "{} {kind} backlogs of {} jobs: broker memory {:.1} MiB -> {:.1} MiB, {:.1} KiB per backlog",
        args.queues,
        args.jobs,
        before / 1048576.0,
        after / 1048576.0,
        per_queue / 1024.0
    );
    for id in &ids {
        ch.queue_delete(
            names.backlog(id).as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await?;
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}
