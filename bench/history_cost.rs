//! Benchmark: what the delivery history costs. Alternates a service with
//! the history off (`WF_ATTEMPT_HISTORY=0`) and one with it at its defaults,
//! each on a fresh namespace, the same receivers (3 webhooks on one host)
//! and the same burst of events, and prints deliveries/s of both and the
//! ratio, with the Redis memory the histories took.
//!
//! cargo build --release && cargo run --release --example history_cost

#[path = "support/mod.rs"]
mod support;

use clap::Parser;
use support::{Figures, Receivers, ServiceProcess, publish_burst, summary};

#[derive(Parser)]
struct Args {
    /// Events per round and setting (each goes to 3 webhooks).
    #[arg(long, default_value_t = 30_000)]
    events: usize,
    /// Rounds (each runs both settings, off first, then on).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let receivers = Receivers::start(3).await;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let mut memory = Vec::new();
    for round in 1..=args.rounds {
        for history in [false, true] {
            let mut env = Vec::new();
            if !history {
                env.push(("WF_ATTEMPT_HISTORY".to_string(), "0".to_string()));
            }
            let service = ServiceProcess::start(1, &receivers, &env).await?;
            let figures = publish_burst(&service.namespace, &receivers, args.events).await?;
            println!(
                "round {round}: history {:<3} {}",
                if history { "on" } else { "off" },
                figures.line()
            );
            if history {
                // Let the last batch land, then weigh what it holds.
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                memory.push(history_bytes(&service.namespace).await?);
                on.push(figures);
            } else {
                off.push(figures);
            }
            service.stop().await;
        }
    }
    println!();
    summary(
        "deliveries/s, history off",
        off.iter().map(Figures::deliveries_per_sec),
    );
    summary(
        "deliveries/s, history on",
        on.iter().map(Figures::deliveries_per_sec),
    );
    summary(
        "on / off",
        on.iter()
            .zip(&off)
            .map(|(a, b)| a.deliveries_per_sec() / b.deliveries_per_sec()),
    );
    summary("p99 ms, history off", off.iter().map(|f| f.p(0.99)));
    summary("p99 ms, history on", on.iter().map(|f| f.p(0.99)));
    if let Some(&(bytes, streams, entries)) = memory.last() {
        println!(
            "Redis memory of the histories: {bytes} bytes in {streams} streams of {entries} entries in all ({:.0} bytes per full stream of 500 = {:.1} MiB per 1,000 webhooks)",
            bytes as f64 / streams.max(1) as f64,
            bytes as f64 / streams.max(1) as f64 * 1000.0 / 1024.0 / 1024.0
        );
    }
    println!("bad signatures or unknown ids: {}", receivers.bad());
    Ok(())
}

/// (bytes, streams, entries) of the namespace's attempt streams and health
/// hashes, by `MEMORY USAGE`.
async fn history_bytes(ns: &str) -> anyhow::Result<(u64, u64, u64)> {
    let client = redis::Client::open("redis://127.0.0.1:6379/0")?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let (mut bytes, mut streams, mut entries) = (0u64, 0u64, 0u64);
    for pattern in [format!("{ns}:attempts:*"), format!("{ns}:health:*")] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut conn)
            .await?;
        for key in keys {
            let used: u64 = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(&key)
                .arg("SAMPLES")
                .arg(0)
                .query_async(&mut conn)
                .await?;
            bytes += used;
            if pattern.contains(":attempts:") {
                streams += 1;
                entries += redis::cmd("XLEN")
                    .arg(&key)
                    .query_async::<u64>(&mut conn)
                    .await?;
            }
        }
    }
    Ok((bytes, streams, entries))
}
