//! Benchmark: end-to-end throughput and publish-to-receipt latency of the
//! service (release binary, its own process) against the local RabbitMQ and
//! Redis, with 3 webhooks on local hyper receivers that check every
//! delivery's `Webhook-Id` and signature. `--ceiling` also measures, in the
//! same run, a bare pipeline (producer -> queue -> consumer publishing 3 jobs
//! with confirms -> consumer that signs and POSTs -> ack) and prints the
//! service's figures as a ratio of it.
//!
//! cargo build --release && cargo run --release --example throughput -- --ceiling

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use clap::Parser;
use support::{
    Figures, Receivers, ServiceProcess, ceiling, cpu_seconds, publish_burst, publish_paced, summary,
};

#[derive(Parser)]
struct Args {
    /// Events per round (each goes to 3 webhooks).
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    /// Rounds; the median and spread are printed.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Also measure the bare pipeline and print the ratio.
    #[arg(long)]
    ceiling: bool,
    /// Service processes on the namespace.
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// The service's `RUST_LOG`; the default is the service's own default, so
    /// a delivery costs its log line as it does in production.
    #[arg(long, default_value = "info,lapin=warn")]
    log: String,
    /// Extra `KEY=VALUE` for the service's environment (repeatable), e.g.
    /// `--env WF_DELIVERY_CONCURRENCY=128`.
    #[arg(long = "env", value_parser = key_value)]
    env: Vec<(String, String)>,
    /// Extra receivers (with their own webhooks, on their own origins) that
    /// answer 200 after `--slow-ms`; the figures are the other three's.
    #[arg(long, default_value_t = 0)]
    slow: usize,
    /// How long the slow receivers take to answer.
    #[arg(long, default_value_t = 500)]
    slow_ms: u64,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let receivers =
        Receivers::start_with_slow(3, args.slow, Duration::from_millis(args.slow_ms)).await;
    let mut env = vec![("RUST_LOG".to_string(), args.log.clone())];
    env.extend(args.env.iter().cloned());
    let service = ServiceProcess::start(args.processes, &receivers, &env).await?;
    let mut saturated = Vec::new();
    let mut paced = Vec::new();
    let mut bare = Vec::new();
    let (mut service_cpu, mut bare_cpu) = (Vec::new(), Vec::new());
    let me = std::process::id();
    for round in 1..=args.rounds {
        let (own, svc) = (cpu_seconds(me), service.cpu());
        let sat = publish_burst(&service.namespace, &receivers, args.events).await?;
        // The bench's own CPU in this phase (publisher and receivers) is the
        // baseline subtracted from the ceiling phase below.
        let (own_sat, svc_sat) = (cpu_seconds(me) - own, service.cpu() - svc);
        service_cpu.push(svc_sat / sat.deliveries as f64 * 1000.0);
        println!("round {round}: saturation  {}", sat.line());
        let rate = sat.events_per_sec() * 0.5;
        let half = publish_paced(&service.namespace, &receivers, args.events / 2, rate).await?;
        println!("round {round}: at {rate:.0} ev/s {}", half.line());
        saturated.push(sat);
        paced.push(half);
        if args.ceiling {
            let own = cpu_seconds(me);
            let c = ceiling::run(&receivers, args.events).await?;
            let pipeline = (cpu_seconds(me) - own - own_sat).max(0.0);
            bare_cpu.push(pipeline / c.deliveries as f64 * 1000.0);
            println!("round {round}: ceiling     {}", c.line());
            bare.push(c);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (rss, cpu) = service.usage();
    let deliveries: usize = saturated.iter().chain(&paced).map(|f| f.deliveries).sum();
    println!();
    println!("service processes: {}", args.processes);
    println!("service environment: {env:?}");
    summary(
        "deliveries/s at saturation",
        saturated.iter().map(Figures::deliveries_per_sec),
    );
    summary(
        "events/s at saturation",
        saturated.iter().map(Figures::events_per_sec),
    );
    summary("p50 ms at saturation", saturated.iter().map(|f| f.p(0.50)));
    summary("p99 ms at saturation", saturated.iter().map(|f| f.p(0.99)));
    summary("p50 ms at 50% rate", paced.iter().map(|f| f.p(0.50)));
    summary("p99 ms at 50% rate", paced.iter().map(|f| f.p(0.99)));
    summary("max ms at 50% rate", paced.iter().map(|f| f.p(1.0)));
    if args.ceiling {
        summary(
            "ceiling deliveries/s",
            bare.iter().map(Figures::deliveries_per_sec),
        );
        let ratios = saturated
            .iter()
            .zip(&bare)
            .map(|(s, c)| s.deliveries_per_sec() / c.deliveries_per_sec());
        summary("service / ceiling", ratios);
        summary("CPU s/1k deliveries, service", service_cpu.iter().copied());
        summary("CPU s/1k deliveries, ceiling", bare_cpu.iter().copied());
    }
    println!("service peak RSS: {:.1} MiB", rss as f64 / 1024.0 / 1024.0);
    println!(
        "service CPU: {:.2} s per 1,000 deliveries ({deliveries} deliveries)",
        cpu / deliveries as f64 * 1000.0
    );
    println!("bad signatures or unknown ids: {}", receivers.bad());
    if args.slow > 0 {
        println!(
            "slow receivers ({} ms): {} deliveries answered during the run",
            args.slow_ms,
            receivers.slow_count()
        );
    }
    for line in service.detours().await {
        println!("detour (last process): {line}");
    }
    service.stop().await;
    Ok(())
}
