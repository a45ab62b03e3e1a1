//! Fair share under volume, against the release binary:
//!
//! 1. a burst from application `big` (`--burst` events to `--webhooks`
//!    webhooks, 100,000 deliveries by default) alone: its deliveries/s;
//! 2. the same burst while application `small`, on the same receiver host,
//!    publishes `--trickle-rate` events/s: the trickle's latency (publish to
//!    receipt) and the burst's deliveries/s against 1.;
//! 3. a slow webhook's backlog: `--slow-jobs` events for a webhook answering
//!    after `--slow-ms`: drain time against the ideal (jobs ÷ its cap ×
//!    delay) and the jobs put back on the broker per job.
//!
//! ```sh
//! cargo build --release
//! cargo run --release --example fair_share -- --burst 10000 --webhooks 10
//! ```

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use support::{Publisher, Receivers, ServiceProcess};

#[derive(Parser)]
struct Args {
    /// Events of the burst (each to every webhook of `big`).
    #[arg(long, default_value_t = 10_000)]
    burst: usize,
    /// Webhooks of `big`.
    #[arg(long, default_value_t = 10)]
    webhooks: usize,
    /// Events per second from `small` during the burst.
    #[arg(long, default_value_t = 20.0)]
    trickle_rate: f64,
    /// Jobs of the slow webhook's backlog.
    #[arg(long, default_value_t = 2_000)]
    slow_jobs: usize,
    /// How long the slow webhook takes to answer.
    #[arg(long, default_value_t = 100)]
    slow_ms: u64,
    /// `WF_ENDPOINT_CONCURRENCY` (the ideal drain time depends on it).
    #[arg(long, default_value_t = 8)]
    cap: usize,
}

/// An `item.refreshed` envelope of application `app`.
fn envelope(app: &str, id: &str, n: usize) -> Vec<u8> {
    let body = serde_json::json!({
        "id": id, "application_id": app, "type": "item.refreshed", "timestamp": 1611681789,
        "content": {"item_id": n, "status": 0, "user_uuid": "9a95b38f-f98b-417a-988b-9d0d584893e7",
                    "label": "Monthly subscription payment for services rendered"},
    });
    serde_json::to_vec(&body).expect("json")
}

/// Publishes `ids` of `app` as fast as confirms allow; when each went out.
async fn publish(
    publisher: &Publisher,
    app: &str,
    ids: &[String],
) -> anyhow::Result<HashMap<String, Instant>> {
    let mut sent = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(1000) {
        let mut confirms = Vec::with_capacity(chunk.len());
        for (n, id) in chunk.iter().enumerate() {
            sent.insert(id.clone(), Instant::now());
            confirms.push(
                publisher
                    .send("item.refreshed", &envelope(app, id, n))
                    .await?,
            );
        }
        for c in futures_util::future::join_all(confirms).await {
            anyhow::ensure!(c?.is_ack(), "nacked");
        }
    }
    Ok(sent)
}

/// Latency percentile (ms) of sorted `ms`; 1.0 is the max.
fn pct(ms: &[f64], q: f64) -> f64 {
    let i = ((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len().max(1));
    ms.get(i - 1).copied().unwrap_or(f64::NAN)
}

/// Deliveries/s of the receipts whose id starts with `prefix`, from the
/// first publish of `sent`.
fn rate(receipts: &[(String, Instant)], prefix: &str, sent: &HashMap<String, Instant>) -> f64 {
    let first = sent.values().min().copied().unwrap_or_else(Instant::now);
    let mine: Vec<Instant> = receipts
        .iter()
        .filter(|(id, _)| id.starts_with(prefix))
        .map(|(_, at)| *at)
        .collect();
    let last = mine.iter().max().copied().unwrap_or(first);
    mine.len() as f64 / (last - first).as_secs_f64()
}

/// Jobs put back on the broker without a request so far, any reason
/// (this release's and the previous one's).
async fn deferred(s: &ServiceProcess) -> f64 {
    let mut all = 0.0;
    for r in [
        "backlog",
        "circuit_open",
        "endpoint_saturated",
        "host_saturated",
    ] {
        let sample = format!("webhooks_jobs_deferred_total{{reason=\"{r}\"}}");
        all += s.metric(&sample).await.unwrap_or(0.0);
    }
    all
}

async fn create(
    service: &ServiceProcess,
    app: &str,
    url: &str,
) -> anyhow::Result<(String, String)> {
    let body = serde_json::json!({"url": url, "events": ["item.refreshed"]});
    let created = service
        .call(
            "POST",
            &format!("/v1/applications/{app}/webhooks"),
            Some(body),
        )
        .await?;
    let field = |f: &str| created[f].as_str().unwrap_or_default().to_string();
    Ok((field("id"), field("secret")))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let delay = Duration::from_millis(args.slow_ms);
    let receivers = Receivers::start_with_slow(args.webhooks + 1, 1, delay).await;
    let env = [
        ("RUST_LOG".to_string(), "warn".to_string()),
        ("WF_ENDPOINT_CONCURRENCY".to_string(), args.cap.to_string()),
    ];
    let service = ServiceProcess::start_bare(1, &env).await?;
    let run = async {
        for i in 0..args.webhooks {
            let (_, secret) = create(&service, "big", &receivers.urls[i]).await?;
            receivers.set_secret(i, secret);
        }
        let (_, secret) = create(&service, "small", &receivers.urls[args.webhooks]).await?;
        receivers.set_secret(args.webhooks, secret);
        let publisher = Publisher::new(&format!("{}.events", service.namespace), None).await?;
        let deliveries = args.burst * args.webhooks;

        // 1. The burst alone.
        let ids: Vec<String> = (0..args.burst).map(|i| format!("alone-{i}")).collect();
        receivers.take_receipts();
        let sent = publish(&publisher, "big", &ids).await?;
        receivers.wait_for(deliveries).await?;
        let alone = rate(&receivers.take_receipts(), "alone-", &sent);
        println!("burst alone:         {deliveries} deliveries, {alone:.0} deliveries/s");

        // 2. The burst beside a trickle from another application.
        let stop = Arc::new(AtomicBool::new(false));
        let trickle = tokio::spawn({
            let (stop, ns, rate) = (stop.clone(), service.namespace.clone(), args.trickle_rate);
            async move {
                let publisher = Publisher::new(&format!("{ns}.events"), None).await?;
                let mut sent = HashMap::new();
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
                let mut n = 0;
                while !stop.load(Ordering::Acquire) {
                    tick.tick().await;
                    let id = format!("small-{n}");
                    sent.insert(id.clone(), Instant::now());
                    let c = publisher
                        .send("item.refreshed", &envelope("small", &id, n))
                        .await?;
                    anyhow::ensure!(c.await?.is_ack(), "nacked");
                    n += 1;
                }
                publisher.close().await;
                Ok::<_, anyhow::Error>(sent)
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ids: Vec<String> = (0..args.burst).map(|i| format!("beside-{i}")).collect();
        let sent = publish(&publisher, "big", &ids).await?;
        while receivers.count() < deliveries {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.store(true, Ordering::Release);
        let small_sent = trickle.await??;
        receivers.wait_for(deliveries + small_sent.len()).await?;
        let receipts = receivers.take_receipts();
        let beside = rate(&receipts, "beside-", &sent);
        let mut ms: Vec<f64> = receipts
            .iter()
            .filter_map(|(id, at)| Some((*at - *small_sent.get(id)?).as_secs_f64() * 1000.0))
            .collect();
        ms.sort_by(f64::total_cmp);
        println!(
            "burst beside trickle: {beside:.0} deliveries/s ({:.2} of alone); trickle: {} events at {}/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            beside / alone,
            ms.len(),
            args.trickle_rate,
            pct(&ms, 0.5),
            pct(&ms, 0.99),
            pct(&ms, 1.0)
        );
        anyhow::ensure!(receivers.bad() == 0, "{} bad signatures", receivers.bad());

        // 3. A slow webhook's backlog.
        create(&service, "slow", &receivers.slow_urls[0]).await?;
        let before = deferred(&service).await;
        let ids: Vec<String> = (0..args.slow_jobs).map(|i| format!("slow-{i}")).collect();
        let start = Instant::now();
        publish(&publisher, "slow", &ids).await?;
        while receivers.slow_count() < args.slow_jobs {
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(900),
                "slow backlog stuck"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = start.elapsed();
        let ideal = delay * (args.slow_jobs / args.cap) as u32;
        let per_job = (deferred(&service).await - before) / args.slow_jobs as f64;
        println!(
            "slow backlog:        {} jobs at {} ms, {} at a time: drained in {:.1} s (ideal {:.1} s, {:.2}x), {per_job:.2} deferrals per job",
            args.slow_jobs,
            args.slow_ms,
            args.cap,
            took.as_secs_f64(),
            ideal.as_secs_f64(),
            took.as_secs_f64() / ideal.as_secs_f64()
        );
        publisher.close().await;
        Ok::<_, anyhow::Error>(())
    };
    let result = run.await;
    let ns = service.namespace.clone();
    service.stop().await;
    support::cleanup(&ns).await;
    result
}
