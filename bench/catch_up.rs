//! Benchmark: does a paced catch-up starve live traffic? A webhook is
//! disabled while `--missed` events go by (each becomes a dead letter for
//! it), then re-enabled and caught up with `POST .../replay`, paced at
//! `WF_REPLAY_RATE`, while a live stream goes to three other webhooks on the
//! same receiver host. Prints the live stream's latency without and with
//! the catch-up running beside it.
//!
//! cargo build --release && cargo run --release --example catch_up

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use support::{Receivers, ServiceProcess, publish_burst, publish_paced};

#[derive(Parser)]
struct Args {
    /// Dead letters to catch up on.
    #[arg(long, default_value_t = 5_000)]
    missed: usize,
    /// Live events per second (each to 3 webhooks).
    #[arg(long, default_value_t = 300.0)]
    rate: f64,
    /// `WF_REPLAY_RATE` of the service.
    #[arg(long, default_value_t = 100)]
    replay_rate: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Three live receivers and one (the "slow" slot, answering at once) for
    // the webhook that is caught up, all on one host and port.
    let receivers = Receivers::start_with_slow(3, 1, Duration::ZERO).await;
    let env = vec![("WF_REPLAY_RATE".to_string(), args.replay_rate.to_string())];
    let service = ServiceProcess::start(1, &receivers, &env).await?;
    let result = run(&args, &receivers, &service).await;
    // The namespace is cleaned up however the run ended.
    service.stop().await;
    result
}

async fn run(args: &Args, receivers: &Receivers, service: &ServiceProcess) -> anyhow::Result<()> {
    let hook = format!(
        "/v1/applications/bench_app/webhooks/{}",
        service.slow_webhook_ids[0]
    );
    let replay = format!("{hook}/replay");

    // Disabled while `missed` events go by.
    service
        .call("PATCH", &hook, Some(json!({"enabled": false})))
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish_burst(&service.namespace, receivers, args.missed).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let counted = service
            .call("POST", &replay, Some(json!({"dry_run": true})))
            .await?;
        if counted["total"].as_u64() == Some(args.missed as u64) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "dead letters: {counted}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "{} dead letters waiting for the disabled webhook",
        args.missed
    );
    // Enabled again (it now gets the live events too); what it missed
    // waits for the catch-up.
    service
        .call("PATCH", &hook, Some(json!({"enabled": true})))
        .await?;

    // The catch-up takes missed / replay_rate seconds; the live phases last
    // as long.
    let seconds = args.missed as f64 / f64::from(args.replay_rate);
    let live_events = (args.rate * seconds) as usize;
    let alone = publish_paced(&service.namespace, receivers, live_events, args.rate).await?;
    println!("live alone          {}", alone.line());

    let before = receivers.slow_count();
    let started = Instant::now();
    let total = service.call("POST", &replay, Some(json!({}))).await?;
    let beside = publish_paced(&service.namespace, receivers, live_events, args.rate).await?;
    println!("live beside catch-up {}", beside.line());
    loop {
        let progress = service.call("GET", &replay, None).await?;
        if progress["state"] != "running" {
            println!(
                "catch-up: {} of {} replayed in {:.1} s ({}); its receiver got {} requests (the catch-up plus {live_events} live events)",
                progress["replayed"],
                total["total"],
                started.elapsed().as_secs_f64(),
                progress["state"],
                receivers.slow_count() - before
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!();
    println!(
        "live p99: {:.1} ms alone, {:.1} ms beside the catch-up ({:.2}x); p50 {:.1} / {:.1} ms",
        alone.p(0.99),
        beside.p(0.99),
        beside.p(0.99) / alone.p(0.99),
        alone.p(0.5),
        beside.p(0.5)
    );
    println!("bad signatures or unknown ids: {}", receivers.bad());
    Ok(())
}
