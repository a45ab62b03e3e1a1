//! Fan-out alone, against the release binary: `--events` events of
//! `--apps` applications (each with `--webhooks` webhooks) wait in
//! `{ns}.ingest`; then `--processes` processes with the `ingest` role only
//! (no delivery) start, and the time until every job is published gives
//! events/s and the processes' CPU per event. The webhooks point nowhere:
//! their jobs stay in the backlogs, deleted with the namespace.
//!
//! ```sh
//! cargo build --release
//! cargo run --release --example fan_out -- --processes 1
//! cargo run --release --example fan_out -- --processes 2
//! # the cost of content filters: 10 webhooks per application, with and without
//! cargo run --release --example fan_out -- --webhooks 10
//! cargo run --release --example fan_out -- --webhooks 10 \
//!     --filter 'content.status == 0 && content.item_id >= 0'
//! ```
//!
//! A `--filter` is set on every webhook; it should be true for every event
//! (the run waits for every job), so the run measures what evaluating it
//! costs, not what it saves.

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use clap::Parser;
use support::{Publisher, ServiceProcess};

#[derive(Parser)]
struct Args {
    /// Events waiting before fan-out starts.
    #[arg(long, default_value_t = 30_000)]
    events: usize,
    /// Applications the events are spread over (round robin).
    #[arg(long, default_value_t = 64)]
    apps: usize,
    /// Webhooks per application.
    #[arg(long, default_value_t = 3)]
    webhooks: usize,
    /// Fan-out processes.
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// `WF_INGEST_PARTITIONS`.
    #[arg(long, default_value_t = 16)]
    partitions: usize,
    /// A CEL filter set on every webhook (true for every event).
    #[arg(long)]
    filter: Option<String>,
}

fn envelope(app: &str, id: &str, n: usize) -> Vec<u8> {
    let body = serde_json::json!({
        "id": id, "application_id": app, "type": "item.refreshed", "timestamp": 1611681789,
        "content": {"item_id": n, "status": 0, "user_uuid": "9a95b38f-f98b-417a-988b-9d0d584893e7"},
    });
    serde_json::to_vec(&body).expect("json")
}

/// The filter alone, in this process: what compiling it and running it on
/// one of the benchmark's events cost (the fan-out converts an event's
/// variables once for all its filtered webhooks, then runs each filter).
fn evaluation_cost(source: &str) -> anyhow::Result<()> {
    use webhook_fanout::filter::{Filter, Variables};
    const RUNS: u32 = 100_000;
    let started = Instant::now();
    let filter = Filter::compile(source).map_err(|e| anyhow::anyhow!("filter: {e}"))?;
    let compiled = started.elapsed();
    let envelope: serde_json::Value = serde_json::from_slice(&envelope("app_0", "ev-0", 7))?;
    let body = serde_json::json!({"content": envelope["content"], "timestamp": 1611681789,
                                  "type": "item.refreshed"})
    .to_string();
    let started = Instant::now();
    for _ in 0..RUNS {
        let variables = Variables::of_body("ev-0", "app_0", "item.refreshed", &body);
        std::hint::black_box(&variables);
    }
    let converting = started.elapsed() / RUNS;
    let variables = Variables::of_body("ev-0", "app_0", "item.refreshed", &body);
    let started = Instant::now();
    for _ in 0..RUNS {
        anyhow::ensure!(
            filter.matches(&variables) == Ok(true),
            "the filter must match"
        );
    }
    let running = started.elapsed() / RUNS;
    println!(
        "filter alone: compiled in {compiled:?}; an event's variables converted in {converting:?}, \
         the filter run in {running:?} (mean of {RUNS})"
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(filter) = &args.filter {
        evaluation_cost(filter)?;
    }
    let partitions = args.partitions.to_string();
    let base = [
        ("RUST_LOG".to_string(), "warn".to_string()),
        ("WF_INGEST_PARTITIONS".to_string(), partitions),
    ];
    // An api-only process declares the topology and takes the webhooks.
    let mut env = base.to_vec();
    env.push(("WF_ROLES".into(), "api".into()));
    let mut service = ServiceProcess::start_bare(1, &env).await?;
    let apps: Vec<String> = (0..args.apps).map(|a| format!("app_{a}")).collect();
    for app in &apps {
        for w in 0..args.webhooks {
            let body = serde_json::json!({
                "url": format!("http://127.0.0.1:9/{app}/{w}"), "events": ["item.refreshed"],
                "filter": args.filter,
            });
            service
                .call(
                    "POST",
                    &format!("/v1/applications/{app}/webhooks"),
                    Some(body),
                )
                .await?;
        }
    }
    let publisher = Publisher::new(&format!("{}.events", service.namespace), None).await?;
    let mut confirms = Vec::with_capacity(1000);
    for n in 0..args.events {
        let app = &apps[n % apps.len()];
        let body = envelope(app, &format!("ev-{n}"), n);
        confirms.push(publisher.send("item.refreshed", &body).await?);
        if confirms.len() == 1000 {
            for c in confirms.drain(..) {
                c.await?;
            }
        }
    }
    for c in confirms.drain(..) {
        c.await?;
    }
    publisher.close().await;
    println!(
        "{} events of {} applications x {} webhooks waiting; {} fan-out process(es), {} partitions; filter: {}",
        args.events,
        args.apps,
        args.webhooks,
        args.processes,
        args.partitions,
        args.filter.as_deref().unwrap_or("none"),
    );

    let api_only = service.apis.len();
    let mut env = base.to_vec();
    env.push(("WF_ROLES".into(), "ingest,api".into()));
    let started = Instant::now();
    for _ in 0..args.processes {
        service.add(&env).await?;
    }
    let cpu_before = service.cpu();
    let jobs = (args.events * args.webhooks) as f64;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = service.metric_sum("webhooks_jobs_enqueued_total").await?;
        if done >= jobs {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{done} of {jobs} jobs after 600 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = service.cpu() - cpu_before;
    let mut held = Vec::new();
    for api in &service.apis[api_only..] {
        let text = reqwest::get(format!("{api}/metrics")).await?.text().await?;
        let n = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("webhooks_ingest_partitions_held ")?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0);
        held.push(n);
    }
    println!(
        "fanned out in {elapsed:.2} s (from the first process's start): {:.0} events/s, {:.0} jobs/s; \
         service CPU {cpu:.2} s = {:.1} us per event; partitions held at the end {held:?}",
        args.events as f64 / elapsed,
        jobs / elapsed,
        cpu * 1e6 / args.events as f64,
    );
    service.stop().await;
    Ok(())
}
