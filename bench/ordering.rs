//! Benchmark: what ordering per key costs. Alternates a service whose 3
//! webhooks (one receiver host) deliver unordered with one whose webhooks
//! are `"ordering": "per_key"`, each on a fresh namespace, with the same
//! burst of events spread over `--keys` ordering keys, and prints
//! deliveries/s of both and the ratio, and the ordering holds.
//!
//! cargo build --release && cargo run --release --example ordering

#[path = "support/mod.rs"]
mod support;

use clap::Parser;
use support::{Figures, Publisher, Receivers, ServiceProcess, keyed_burst, summary};

#[derive(Parser)]
struct Args {
    /// Events per round and setting (each goes to 3 webhooks).
    #[arg(long, default_value_t = 30_000)]
    events: usize,
    /// Distinct ordering keys the events are spread over.
    #[arg(long, default_value_t = 1_000)]
    keys: usize,
    /// Rounds (each runs both settings, unordered first).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let receivers = Receivers::start(3).await;
    let (mut none, mut per_key) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        for ordered in [false, true] {
            let service = ServiceProcess::start(1, &receivers, &[]).await?;
            if ordered {
                for id in &service.webhook_ids {
                    let path = format!("/v1/applications/bench_app/webhooks/{id}");
                    let body = serde_json::json!({"ordering": "per_key"});
                    service.call("PATCH", &path, Some(body)).await?;
                }
            }
            let publisher = Publisher::new(&format!("{}.events", service.namespace), None).await?;
            let figures = keyed_burst(&publisher, &receivers, args.events, Some(args.keys)).await?;
            publisher.close().await;
            let holds = service.metric("webhooks_ordering_holds_total").await?;
            println!(
                "round {round}: {:<8} {}  holds {holds}",
                if ordered { "per_key" } else { "none" },
                figures.line()
            );
            match ordered {
                true => per_key.push(figures),
                false => none.push(figures),
            }
            service.stop().await;
        }
    }
    println!();
    println!(
        "{} events x 3 webhooks on one host, {} ordering keys, {} rounds",
        args.events, args.keys, args.rounds
    );
    summary(
        "deliveries/s, unordered",
        none.iter().map(Figures::deliveries_per_sec),
    );
    summary(
        "deliveries/s, per_key",
        per_key.iter().map(Figures::deliveries_per_sec),
    );
    summary(
        "per_key / unordered",
        per_key
            .iter()
            .zip(&none)
            .map(|(a, b)| a.deliveries_per_sec() / b.deliveries_per_sec()),
    );
    summary("p99 ms, unordered", none.iter().map(|f| f.p(0.99)));
    summary("p99 ms, per_key", per_key.iter().map(|f| f.p(0.99)));
    println!("bad signatures or unknown ids: {}", receivers.bad());
    Ok(())
}
