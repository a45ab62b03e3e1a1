//! Shared parts of the benchmark programs: receivers that check deliveries,
//! the service as child processes, publishers, and figures.
#![allow(dead_code)]

pub mod ceiling;

use std::collections::HashMap;
use std::convert::Infallible;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use sha2::Sha256;

pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const REDIS: &str = "redis://127.0.0.1:6379/0";
const OPERATOR: &str = "bench-operator-token-0123456789";
const TYPES: [&str; 4] = [
    "item.refreshed",
    "item.account.updated",
    "payment.transaction.updated",
    "transfer.updated",
];

/// One delivery as a receiver saw it.
struct Receipt {
    id: String,
    at: Instant,
}

/// Local HTTP receivers that verify `BridgeApi-Signature` and record receipts.
#[derive(Clone)]
pub struct Receivers {
    /// Receivers that answer at once; every event goes to each.
    pub urls: Vec<String>,
    /// Receivers that answer 200 after a delay; not counted in the figures.
    pub slow_urls: Vec<String>,
    shared: Arc<Shared>,
}

/// What every receiver task shares.
struct Shared {
    secrets: Vec<RwLock<String>>,
    receipts: Mutex<Vec<Receipt>>,
    count: AtomicUsize,
    bad: AtomicUsize,
    slow_count: AtomicUsize,
}

impl Shared {
    /// Records one delivery to receiver `i`, checking its signature.
    async fn receive(&self, i: usize, req: Request<hyper::body::Incoming>) {
        let id = header(&req, "webhook-id");
        let signature = header(&req, "bridgeapi-signature");
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let at = Instant::now();
        let good = bridge(&self.secrets[i].read().expect("lock"), &body) == signature;
        if !good {
            self.bad.fetch_add(1, Ordering::Relaxed);
        }
        self.receipts.lock().expect("lock").push(Receipt { id, at });
        self.count.fetch_add(1, Ordering::Release);
    }
}

pub fn bridge(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(body);
    format!("v1={}", hex::encode_upper(mac.finalize().into_bytes()))
}

impl Receivers {
    pub async fn start(n: usize) -> Receivers {
        Self::start_with_slow(n, 0, Duration::ZERO).await
    }

    /// `n` receivers, plus `slow` more that answer after `delay`, all on one
    /// host and port (paths `/hook/<i>`), as webhooks behind one gateway or
    /// one backend look to the service.
    pub async fn start_with_slow(n: usize, slow: usize, delay: Duration) -> Receivers {
        let shared = Arc::new(Shared {
            secrets: (0..n).map(|_| RwLock::default()).collect(),
            receipts: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            bad: AtomicUsize::new(0),
            slow_count: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut urls: Vec<String> = (0..n + slow)
            .map(|i| format!("http://{addr}/hook/{i}"))
            .collect();
        let accept = shared.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = accept.clone();
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let shared = shared.clone();
                    async move {
                        let i: usize = req
                            .uri()
                            .path()
                            .strip_prefix("/hook/")
                            .and_then(|i| i.parse().ok())
                            .unwrap_or(usize::MAX);
                        if i < n {
                            shared.receive(i, req).await;
                        } else {
                            tokio::time::sleep(delay).await;
                            shared.slow_count.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), svc));
            }
        });
        let slow_urls = urls.split_off(n);
        Receivers {
            urls,
            slow_urls,
            shared,
        }
    }

    /// Deliveries the slow receivers have answered so far.
    pub fn slow_count(&self) -> usize {
        self.shared.slow_count.load(Ordering::Relaxed)
    }

    /// Receiver `i`'s webhook secret, once the webhook exists.
    pub fn secret(&self, i: usize) -> String {
        self.shared.secrets[i].read().expect("lock").clone()
    }

    /// Sets receiver `i`'s webhook secret.
    pub fn set_secret(&self, i: usize, secret: String) {
        *self.shared.secrets[i].write().expect("lock") = secret;
    }

    pub fn bad(&self) -> usize {
        self.shared.bad.load(Ordering::Relaxed)
    }

    /// Waits (at most 300 s) until `n` deliveries arrived since the last `take`.
    pub async fn wait_for(&self, n: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.shared.count.load(Ordering::Acquire) < n {
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {n} deliveries arrived",
                self.shared.count.load(Ordering::Acquire)
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    /// Forgets the receipts so far; returns how many there were.
    pub fn reset(&self) -> usize {
        self.take().len()
    }

    /// Forgets the receipts so far; returns each one's `Webhook-Id` and
    /// when it arrived.
    pub fn take_receipts(&self) -> Vec<(String, Instant)> {
        self.take().into_iter().map(|r| (r.id, r.at)).collect()
    }

    /// Deliveries received since the last `take`.
    pub fn count(&self) -> usize {
        self.shared.count.load(Ordering::Acquire)
    }

    /// Forgets the receipts so far; returns them.
    fn take(&self) -> Vec<Receipt> {
        self.shared.count.store(0, Ordering::Release);
        std::mem::take(&mut *self.shared.receipts.lock().expect("lock"))
    }
}

fn header(req: &Request<hyper::body::Incoming>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// One measured phase.
pub struct Figures {
    pub events: usize,
    pub deliveries: usize,
    pub elapsed: Duration,
    latencies_ms: Vec<f64>,
}

impl Figures {
    fn from(
        published: &HashMap<String, Instant>,
        receipts: Vec<Receipt>,
        bad: &AtomicUsize,
    ) -> Figures {
        let first = published
            .values()
            .min()
            .copied()
            .unwrap_or_else(Instant::now);
        let last = receipts.iter().map(|r| r.at).max().unwrap_or(first);
        let mut latencies_ms: Vec<f64> = receipts
            .iter()
            .filter_map(|r| match published.get(&r.id) {
                Some(t) => Some((r.at - *t).as_secs_f64() * 1000.0),
                None => {
                    bad.fetch_add(1, Ordering::Relaxed);
                    None
                }
            })
            .collect();
        latencies_ms.sort_by(f64::total_cmp);
        Figures {
            events: published.len(),
            deliveries: receipts.len(),
            elapsed: last - first,
            latencies_ms,
        }
    }

    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    pub fn deliveries_per_sec(&self) -> f64 {
        self.deliveries as f64 / self.elapsed.as_secs_f64()
    }

    /// Latency percentile in ms (1.0 = max).
    pub fn p(&self, q: f64) -> f64 {
        if self.latencies_ms.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_ms.len() as f64 * q).ceil() as usize)
            .clamp(1, self.latencies_ms.len());
        self.latencies_ms[i - 1]
    }

    pub fn line(&self) -> String {
        format!(
            "{:>7.0} deliveries/s {:>6.0} events/s  latency p50 {:>6.1} ms p99 {:>7.1} ms max {:>7.1} ms",
            self.deliveries_per_sec(),
            self.events_per_sec(),
            self.p(0.5),
            self.p(0.99),
            self.p(1.0)
        )
    }
}

/// Prints the median and the spread (min-max) of a figure over rounds.
pub fn summary(what: &str, values: impl Iterator<Item = f64>) {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return;
    }
    let median = v[v.len() / 2];
    let spread = (v[v.len() - 1] - v[0]) / median * 100.0;
    let digits = if median.abs() < 10.0 { 3 } else { 1 };
    println!(
        "{what:<30} median {median:>9.digits$}  min {:>9.digits$}  max {:>9.digits$}  spread {spread:>5.1}%",
        v[0],
        v[v.len() - 1]
    );
}

/// A ~400-byte envelope.
pub fn envelope(id: &str, n: usize) -> (String, Vec<u8>) {
    keyed_envelope(id, n, None)
}

/// A ~400-byte envelope; with `keys`, its ordering key (whatever its type's
/// pointer names: item, account, transaction or transfer id) is one of
/// `keys` distinct values, `k<n mod keys>`.
pub fn keyed_envelope(id: &str, n: usize, keys: Option<usize>) -> (String, Vec<u8>) {
    let t = TYPES[n % TYPES.len()];
    if let Some(keys) = keys {
        let key = format!("k{}", n % keys);
        let body = serde_json::json!({
            "id": id, "application_id": "bench_app", "type": t, "timestamp": 1611681789,
            "content": {"item_id": key, "account_id": key, "payment_transaction_id": key,
                        "transfer_id": key, "status": 0, "currency": "EUR", "amount": "1234.56",
                        "label": "Monthly subscription payment for services rendered",
                        "reference": format!("REF-{n:012}")},
        });
        return (t.to_string(), serde_json::to_vec(&body).expect("json"));
    }
    let body = serde_json::json!({
        "id": id, "application_id": "bench_app", "type": t, "timestamp": 1611681789,
        "content": {"item_id": n, "status": 0, "user_uuid": "9a95b38f-f98b-417a-988b-9d0d584893e7",
                    "account_id": 4_200_000 + n, "iban": "FR7630006000011234567890189", "currency": "EUR",
                    "amount": "1234.56", "label": "Monthly subscription payment for services rendered",
                    "reference": format!("REF-{n:012}")},
    });
    (t.to_string(), serde_json::to_vec(&body).expect("json"))
}

/// A confirmed publisher to an exchange (or queue via the default exchange).
pub struct Publisher {
    conn: Connection,
    channel: lapin::Channel,
    exchange: String,
    routing: Option<String>,
}

impl Publisher {
    pub async fn new(exchange: &str, routing: Option<&str>) -> anyhow::Result<Publisher> {
        let conn = Connection::connect(AMQP, ConnectionProperties::default()).await?;
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher {
            conn,
            channel,
            exchange: exchange.to_string(),
            routing: routing.map(str::to_string),
        })
    }

    /// Publishes one message with routing key `key` (unless the publisher has its own).
    pub async fn send(&self, key: &str, body: &[u8]) -> anyhow::Result<lapin::PublisherConfirm> {
        let routing = self.routing.as_deref().unwrap_or(key);
        Ok(self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                routing.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?)
    }

    pub async fn close(self) {
        let _ = self.conn.close(200, "done".into()).await;
    }
}

/// Publishes `n` events as fast as confirms allow; waits for 3 deliveries each.
pub async fn publish_burst(ns: &str, receivers: &Receivers, n: usize) -> anyhow::Result<Figures> {
    burst(
        &Publisher::new(&format!("{ns}.events"), None).await?,
        receivers,
        n,
    )
    .await
}

/// Publishes through `publisher` (an exchange or a queue) as fast as confirms allow.
pub async fn burst(
    publisher: &Publisher,
    receivers: &Receivers,
    n: usize,
) -> anyhow::Result<Figures> {
    keyed_burst(publisher, receivers, n, None).await
}

/// [`burst`] of [`keyed_envelope`]s over `keys` ordering keys.
pub async fn keyed_burst(
    publisher: &Publisher,
    receivers: &Receivers,
    n: usize,
    keys: Option<usize>,
) -> anyhow::Result<Figures> {
    receivers.take();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut published = HashMap::with_capacity(n);
    let mut confirms = Vec::with_capacity(1000);
    for i in 0..n {
        let id = format!("{run}-{i}");
        let (key, body) = keyed_envelope(&id, i, keys);
        published.insert(id, Instant::now());
        confirms.push(publisher.send(&key, &body).await?);
        if confirms.len() == 1000 {
            for c in futures_util::future::join_all(confirms.drain(..)).await {
                anyhow::ensure!(c?.is_ack(), "nacked");
            }
        }
    }
    for c in futures_util::future::join_all(confirms.drain(..)).await {
        anyhow::ensure!(c?.is_ack(), "nacked");
    }
    receivers.wait_for(n * receivers.urls.len()).await?;
    Ok(Figures::from(
        &published,
        receivers.take(),
        &receivers.shared.bad,
    ))
}

/// Publishes `n` events at `rate` per second (in 10 ms steps).
pub async fn publish_paced(
    ns: &str,
    receivers: &Receivers,
    n: usize,
    rate: f64,
) -> anyhow::Result<Figures> {
    receivers.take();
    let publisher = Publisher::new(&format!("{ns}.events"), None).await?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut published = HashMap::with_capacity(n);
    let mut confirms = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let (mut sent, mut owed) = (0usize, 0f64);
    while sent < n {
        tick.tick().await;
        owed += rate / 100.0;
        while owed >= 1.0 && sent < n {
            let id = format!("{run}-{sent}");
            let (key, body) = envelope(&id, sent);
            published.insert(id, Instant::now());
            confirms.push(publisher.send(&key, &body).await?);
            sent += 1;
            owed -= 1.0;
        }
    }
    for c in futures_util::future::join_all(confirms).await {
        anyhow::ensure!(c?.is_ack(), "nacked");
    }
    receivers.wait_for(n * receivers.urls.len()).await?;
    publisher.close().await;
    Ok(Figures::from(
        &published,
        receivers.take(),
        &receivers.shared.bad,
    ))
}

/// The service, as release-build child processes on one fresh namespace.
pub struct ServiceProcess {
    pub namespace: String,
    api: String,
    /// The admin API of every process, in start order.
    pub apis: Vec<String>,
    children: Vec<Child>,
    /// The webhook of each (not slow) receiver, in order.
    pub webhook_ids: Vec<String>,
    /// The webhook of each slow receiver, in order.
    pub slow_webhook_ids: Vec<String>,
}

const BIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/webhook-fanout");

impl ServiceProcess {
    /// Starts `processes` release binaries on a fresh namespace; `env` is
    /// passed to each (e.g. `RUST_LOG`, `WF_DELIVERY_CONCURRENCY`). Their logs
    /// go to `bench-<namespace>-<n>.log` in the temp directory.
    pub async fn start(
        processes: usize,
        receivers: &Receivers,
        env: &[(String, String)],
    ) -> anyhow::Result<ServiceProcess> {
        let mut service = Self::start_bare(processes, env).await?;
        let http = reqwest::Client::new();
        let all = receivers.urls.iter().chain(&receivers.slow_urls);
        for (i, url) in all.enumerate() {
            let created: serde_json::Value = http
                .post(format!(
                    "{}/v1/applications/bench_app/webhooks",
                    service.api
                ))
                .bearer_auth(OPERATOR)
                .body(serde_json::json!({"url": url, "events": TYPES}).to_string())
                .send()
                .await?
                .json()
                .await?;
            let field = |name: &str| {
                created[name]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow::anyhow!("no {name}: {created}"))
            };
            if i < receivers.urls.len() {
                receivers.set_secret(i, field("secret")?);
                service.webhook_ids.push(field("id")?);
            } else {
                service.slow_webhook_ids.push(field("id")?);
            }
        }
        Ok(service)
    }

    /// Starts `processes` release binaries on a fresh namespace, with no
    /// webhook yet.
    pub async fn start_bare(
        processes: usize,
        env: &[(String, String)],
    ) -> anyhow::Result<ServiceProcess> {
        anyhow::ensure!(
            std::path::Path::new(BIN).exists(),
            "build it first: cargo build --release"
        );
        let mut service = ServiceProcess {
            namespace: format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            api: String::new(),
            apis: Vec::new(),
            children: Vec::new(),
            webhook_ids: Vec::new(),
            slow_webhook_ids: Vec::new(),
        };
        for _ in 0..processes {
            service.add(env).await?;
        }
        Ok(service)
    }

    /// Calls the admin API of the last process as the operator; the JSON
    /// answer (Null when empty).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let request = reqwest::Client::new()
            .request(method.parse()?, format!("{}{path}", self.api))
            .bearer_auth(OPERATOR);
        let request = match body {
            Some(b) => request.body(b.to_string()),
            None => request,
        };
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status.is_success(), "{method} {path}: {status} {text}");
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    /// The value of one sample of the last process's `/metrics` (0 if absent).
    pub async fn metric(&self, sample: &str) -> anyhow::Result<f64> {
        let text = reqwest::get(format!("{}/metrics", self.api))
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0.0))
    }

    /// One sample summed over every process's `/metrics` (0 where absent).
    pub async fn metric_sum(&self, sample: &str) -> anyhow::Result<f64> {
        let mut sum = 0.0;
        for api in &self.apis {
            let text = reqwest::get(format!("{api}/metrics")).await?.text().await?;
            sum += text
                .lines()
                .find_map(|l| l.strip_prefix(sample)?.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
        }
        Ok(sum)
    }

    /// Starts one more process on the namespace, with `env`, and waits until
    /// it is ready; its admin API becomes `self.api`.
    pub async fn add(&mut self, env: &[(String, String)]) -> anyhow::Result<()> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log =
            std::env::temp_dir().join(format!("{}-{}.log", self.namespace, self.children.len()));
        self.children.push(
            Command::new(BIN)
                .arg("serve")
                .env("WF_NAMESPACE", &self.namespace)
                .env("WF_HTTP_ADDR", format!("127.0.0.1:{port}"))
                .env("WF_ADMIN_TOKEN", OPERATOR)
                .env("WF_ALLOW_HTTP", "true")
                .env("WF_ALLOW_PRIVATE_TARGETS", "true")
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(log)?)
                .spawn()?,
        );
        self.api = format!("http://127.0.0.1:{port}");
        self.apis.push(self.api.clone());
        wait_ready(&self.api).await
    }

    /// (peak RSS in bytes of the largest process, CPU seconds of all).
    pub fn usage(&self) -> (u64, f64) {
        let mut rss = 0;
        for c in &self.children {
            let status =
                std::fs::read_to_string(format!("/proc/{}/status", c.id())).unwrap_or_default();
            let hwm = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
                .unwrap_or(0);
            rss = rss.max(hwm * 1024);
        }
        (rss, self.cpu())
    }

    /// CPU seconds used so far by all service processes.
    pub fn cpu(&self) -> f64 {
        self.children.iter().map(|c| cpu_seconds(c.id())).sum()
    }

    /// The non-zero deferral, retry and drop counters of the last process.
    pub async fn detours(&self) -> Vec<String> {
        let text = match reqwest::get(format!("{}/metrics", self.api)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => return Vec::new(),
        };
        let wanted = [
            "webhooks_jobs_deferred_total{",
            "webhooks_retries_scheduled_total{",
            "webhooks_jobs_dropped_total{",
            "webhooks_events_duplicate_total ",
        ];
        text.lines()
            .filter(|l| wanted.iter().any(|p| l.starts_with(p)) && !l.ends_with(" 0"))
            .map(str::to_string)
            .collect()
    }

    pub async fn stop(mut self) {
        for mut c in std::mem::take(&mut self.children) {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
        cleanup(&self.namespace).await;
    }
}

/// A benchmark that ends on an error leaves no service running (it would
/// declare its namespace again and again). Its namespace stays behind:
/// benchmarks that can fail midway call `stop` on every path.
impl Drop for ServiceProcess {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn wait_ready(base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
            && r.status() == 200
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "service not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes a benchmark namespace's queues, exchanges and Redis keys.
pub async fn cleanup(ns: &str) {
    let names = webhook_fanout::broker::Names::new(ns);
    let store = webhook_fanout::subscription::Store::connect(REDIS, ns).ok();
    if let Ok(conn) = Connection::connect(AMQP, ConnectionProperties::default()).await {
        if let Some(store) = &store {
            let _ = webhook_fanout::backlog::delete_backlogs(&conn, store, ns).await;
        }
        if let Ok(ch) = conn.create_channel().await {
            let _ = webhook_fanout::broker::delete(
                &ch,
                &names,
                &webhook_fanout::retry::RetrySchedule::default(),
            )
            .await;
        }
        let _ = conn.close(200, "cleanup".into()).await;
    }
    if let Some(store) = store {
        let _ = store.delete_namespace().await;
    }
}

/// User plus system CPU seconds of process `pid` so far (0 if it is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ
}
