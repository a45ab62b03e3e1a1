//! Test harness: the whole service in-process on port 0 in a random namespace
//! (deleted again afterwards), real RabbitMQ and Redis, local HTTP receivers.
#![allow(dead_code)]

pub mod binary;
pub mod certs;
pub mod forward_proxy;
pub mod proxy;
pub mod receiver;
pub mod servers;
pub mod sign;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use webhook_fanout::Settings;
use webhook_fanout::broker::{self, Names};
use webhook_fanout::subscription::Store;

pub const OPERATOR: &str = "operator-token-for-tests-0123456789";

pub fn amqp_url() -> String {
    std::env::var("WF_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn redis_url() -> String {
    std::env::var("WF_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// Where every namespace a test run creates is written down, for
/// `scripts/check-leftovers.sh` (`make test` empties it first).
pub const NAMESPACES_FILE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/test-namespaces.txt");

/// A fresh namespace name (prefer [`Namespace`], which also deletes it).
pub fn namespace() -> String {
    let ns = format!("wft-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(NAMESPACES_FILE)
    {
        // The test's name after it (libtest names each test's thread), so a
        // leftover names the test that left it.
        let test = std::thread::current().name().unwrap_or("?").to_string();
        let _ = writeln!(f, "{ns} {test}");
    }
    ns
}

/// The retry tiers each namespace's services were started with, so that
/// deleting a namespace deletes every tier queue it may have, whatever
/// schedule each of its services used.
static TIERS: LazyLock<Mutex<HashMap<String, BTreeSet<String>>>> = LazyLock::new(Default::default);

/// Namespaces whose services keep their webhooks in a Redis of their own.
static REDIS: LazyLock<Mutex<HashMap<String, String>>> = LazyLock::new(Default::default);

/// Records that the services of `ns` keep their webhooks in the Redis at
/// `url` (a test's own Sentinel set, say), so cleanup finds their
/// backlogs there.
pub fn note_redis(ns: &str, url: &str) {
    REDIS
        .lock()
        .unwrap()
        .insert(ns.to_string(), url.to_string());
}

/// Records that a service of `ns` declares the tiers of `schedule`.
pub fn note_schedule(ns: &str, schedule: &str) {
    let labels = schedule.split(',').map(|l| l.trim().to_string());
    TIERS
        .lock()
        .unwrap()
        .entry(ns.to_string())
        .or_default()
        .extend(labels);
}

/// A fresh namespace that is deleted (every queue, exchange and Redis key)
/// when dropped, also when the test fails.
pub struct Namespace(String);

impl Namespace {
    pub fn new() -> Namespace {
        Namespace(namespace())
    }
}

impl std::ops::Deref for Namespace {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let ns = self.0.clone();
        // Its own runtime: the test's may be gone (a panic) or busy.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(delete(&ns));
        })
        .join();
    }
}

/// Polls `check` every 20 ms until it yields `Some`, or panics after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One service instance running in this test process.
pub struct TestService {
    pub ns: String,
    pub base: String,
    pub settings: Settings,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    owns_namespace: bool,
    http: reqwest::Client,
}

impl TestService {
    /// A service in a new namespace with test defaults plus `extra` settings
    /// (tests start it through [`Fixture`]).
    async fn start(extra: &[(&str, &str)]) -> TestService {
        Self::launch(&namespace(), extra, true).await
    }

    /// Another instance on an existing namespace (it does not delete it).
    async fn join(ns: &str, extra: &[(&str, &str)]) -> TestService {
        Self::launch(ns, extra, false).await
    }

    async fn launch(ns: &str, extra: &[(&str, &str)], owns_namespace: bool) -> TestService {
        if let Ok(filter) = std::env::var("WF_TEST_LOG") {
            // Opt-in service logs while debugging a test.
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        let mut env: HashMap<String, String> = [
            ("WF_NAMESPACE", ns),
            ("WF_ADMIN_TOKEN", OPERATOR),
            ("WF_ALLOW_HTTP", "true"),
            ("WF_ALLOW_PRIVATE_TARGETS", "true"),
            ("WF_DELIVERY_TIMEOUT", "2s"),
            ("WF_SHUTDOWN_TIMEOUT", "3s"),
            // Breakers get their own tests (isolation.rs); elsewhere a test's
            // failing receiver must not trip one.
            ("WF_CIRCUIT_BREAKER_THRESHOLD", "10000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.insert("WF_AMQP_URL".into(), amqp_url());
        env.insert("WF_REDIS_URL".into(), redis_url());
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let settings = Settings::from_map(&env).expect("test settings are valid");
        let tiers: Vec<String> = settings
            .retry_schedule
            .distinct_tiers()
            .into_iter()
            .map(|t| t.label)
            .collect();
        note_schedule(ns, &tiers.join(","));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(webhook_fanout::run(
            settings.clone(),
            listener,
            shutdown.clone(),
        ));
        let svc = TestService {
            ns: ns.to_string(),
            base,
            settings,
            shutdown,
            task: Some(task),
            owns_namespace,
            // A hung call fails the test instead of hanging the suite.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        };
        svc.wait_ready().await;
        svc
    }

    pub async fn wait_ready(&self) {
        let url = format!("{}/readyz", self.base);
        eventually(
            Duration::from_secs(20),
            "the service to be ready",
            || async {
                let r = self.http.get(&url).send().await.ok()?;
                (r.status() == 200).then_some(())
            },
        )
        .await;
    }

    pub fn names(&self) -> Names {
        Names::new(&self.ns)
    }

    /// Calls the admin API; returns status and JSON body (Null when empty).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = req.send().await.expect("the API answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json)
    }

    /// Creates an application token with `role` through the operator API.
    pub async fn token(&self, app: &str, role: &str) -> String {
        let (status, body) = self
            .call(
                "POST",
                &format!("/v1/applications/{app}/tokens"),
                Some(OPERATOR),
                Some(json!({"role": role})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().unwrap().to_string()
    }

    /// Creates a webhook as operator; returns the webhook object with its secret.
    pub async fn webhook(&self, app: &str, url: &str, events: &[&str]) -> Value {
        let (status, body) = self
            .call(
                "POST",
                &format!("/v1/applications/{app}/webhooks"),
                Some(OPERATOR),
                Some(json!({"url": url, "events": events})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// The newest attempts of webhook `hook` (an API object): the first
    /// page of its history, as the operator reads it.
    pub async fn attempts(&self, hook: &Value) -> Vec<Value> {
        let path = format!(
            "/v1/applications/{}/webhooks/{}/attempts",
            hook["application_id"].as_str().unwrap(),
            hook["id"].as_str().unwrap()
        );
        let (status, page) = self.call("GET", &path, Some(OPERATOR), None).await;
        assert_eq!(status, 200, "{page}");
        page["items"].as_array().cloned().unwrap_or_default()
    }

    /// Webhook `id` of `app` as stored in Redis (its JSON, secrets sealed
    /// with `WF_SECRET_KEY` if set).
    pub async fn stored_webhook(&self, app: &str, id: &str) -> String {
        let mut conn = redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let key = format!("{}:webhooks:{app}", self.ns);
        redis::AsyncCommands::hget(&mut conn, key, id)
            .await
            .unwrap()
    }

    /// The value of one metric sample, e.g. `webhooks_jobs_enqueued_total` or
    /// `webhooks_deliveries_total{outcome="success"}`; 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        binary::sample(&self.metrics_text().await, sample)
    }

    /// The whole `/metrics` exposition.
    pub async fn metrics_text(&self) -> String {
        let response = self.http.get(format!("{}/metrics", self.base)).send().await;
        response.unwrap().text().await.unwrap()
    }

    /// Waits until `sample` reaches at least `value`.
    pub async fn metric_reaches(&self, sample: &str, value: f64) {
        eventually(Duration::from_secs(15), sample, || async {
            (self.metric(sample).await >= value).then_some(())
        })
        .await;
    }

    /// Graceful stop (as SIGTERM would), then deletes the namespace if owned.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the service stops within 30 s of the shutdown signal")
                .expect("service task")
                .expect("service ran cleanly");
        }
        if self.owns_namespace {
            delete_namespace(&self.ns, &self.settings).await;
        }
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        // A test that panicked before `stop`: still remove its namespace.
        if let Some(task) = self.task.take() {
            self.shutdown.cancel();
            task.abort();
            if self.owns_namespace {
                let (ns, settings) = (self.ns.clone(), self.settings.clone());
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(delete_namespace(&ns, &settings));
                })
                .join();
            }
        }
    }
}

/// Deletes the namespace's queues, exchanges and Redis keys (`settings`'
/// tiers and every tier a service of the namespace was started with).
pub async fn delete_namespace(ns: &str, settings: &Settings) {
    let labels: Vec<String> = settings
        .retry_schedule
        .distinct_tiers()
        .into_iter()
        .map(|t| t.label)
        .collect();
    note_schedule(ns, &labels.join(","));
    delete(ns).await;
}

/// Deletes every queue, exchange and Redis key of `ns` (the default
/// schedule's tiers and those noted for it).
async fn delete(ns: &str) {
    let mut labels = TIERS.lock().unwrap().remove(ns).unwrap_or_default();
    labels.extend(
        webhook_fanout::retry::RetrySchedule::default()
            .distinct_tiers()
            .into_iter()
            .map(|t| t.label),
    );
    let joined = labels.into_iter().collect::<Vec<_>>().join(",");
    let schedule = webhook_fanout::retry::RetrySchedule::parse(&joined).unwrap();
    let redis = REDIS.lock().unwrap().remove(ns);
    let store = Store::connect(&redis.unwrap_or_else(redis_url), ns).ok();
    if let Ok(conn) = Connection::connect(&amqp_url(), ConnectionProperties::default()).await {
        if let Some(store) = &store {
            let _ = webhook_fanout::backlog::delete_backlogs(&conn, store, ns).await;
        }
        if let Ok(ch) = conn.create_channel().await {
            let _ = broker::delete(&ch, &Names::new(ns), &schedule).await;
        }
        let _ = conn.close(200, "cleanup".into()).await;
    }
    if let Some(store) = store {
        let _ = store.delete_namespace().await;
    }
}

/// The one way integration tests start the service in-process: `start`
/// for the usual set-up in one (a service in a fresh namespace, deleted
/// with it, a receiver answering 200, programmable per path, and a
/// producer), `service` for the service alone, `join` for another process
/// on a namespace.
pub struct Fixture {
    pub svc: TestService,
    pub rx: receiver::Receiver,
    pub producer: Producer,
}

impl Fixture {
    /// A service with test defaults plus `extra`, its receiver and producer.
    pub async fn start(extra: &[(&str, &str)]) -> Fixture {
        let svc = TestService::start(extra).await;
        let rx = receiver::Receiver::start(200).await;
        let producer = Producer::connect(&svc.ns).await;
        Fixture { svc, rx, producer }
    }

    /// Only the service, in a fresh namespace deleted when it stops, for
    /// tests that bring their own receivers and producers (or none).
    pub async fn service(extra: &[(&str, &str)]) -> TestService {
        TestService::start(extra).await
    }

    /// Another service process on namespace `ns` (a replica, or the second
    /// process of a hand-over); the namespace stays for its owner to delete.
    pub async fn join(ns: &str, extra: &[(&str, &str)]) -> TestService {
        TestService::join(ns, extra).await
    }

    /// Closes the producer and stops the service (deleting its namespace).
    pub async fn stop(self) {
        self.producer.close().await;
        self.svc.stop().await;
    }
}

/// A producer: a confirmed channel publishing to `{ns}.events`.
pub struct Producer {
    conn: Connection,
    channel: lapin::Channel,
    exchange: String,
}

impl Producer {
    pub async fn connect(ns: &str) -> Producer {
        Self::connect_to(&amqp_url(), ns).await
    }

    /// A producer for namespace `ns` on the broker (node) at `url`.
    pub async fn connect_to(url: &str, ns: &str) -> Producer {
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Producer {
            conn,
            channel,
            exchange: Names::new(ns).events(),
        }
    }

    /// Connects, or says why not (the broker may be restarting).
    pub async fn try_connect(ns: &str) -> Result<Producer, lapin::Error> {
        let conn = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Producer {
            conn,
            channel,
            exchange: Names::new(ns).events(),
        })
    }

    /// Publishes an envelope and awaits the confirm; false if it was not confirmed.
    pub async fn try_event(&self, id: &str, app: &str, event_type: &str) -> bool {
        let envelope = json!({"id": id, "application_id": app, "type": event_type, "content": {}});
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let props = BasicProperties::default().with_delivery_mode(2);
        let body = envelope.to_string();
        let Ok(confirm) = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                event_type.into(),
                options,
                body.as_bytes(),
                props,
            )
            .await
        else {
            return false;
        };
        matches!(confirm.await, Ok(lapin::Confirmation::Ack(None)))
    }

    /// Publishes raw bytes with routing key `key`, persistent, and awaits the confirm.
    pub async fn raw(&self, key: &str, body: &[u8]) {
        let exchange = self.exchange.clone();
        self.to(&exchange, key, body).await;
    }

    /// Publishes raw bytes to `exchange` (`""`: the default one, `key` is
    /// the queue), persistent and mandatory, and awaits the confirm.
    pub async fn to(&self, exchange: &str, key: &str, body: &[u8]) {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(
            confirm.is_ack() && confirm.take_message().is_none(),
            "message routed to a queue of {exchange:?}"
        );
    }

    /// Publishes a well-formed envelope.
    pub async fn event(&self, id: &str, app: &str, event_type: &str, content: Value) {
        let envelope = json!({
            "id": id, "application_id": app, "type": event_type,
            "timestamp": 1611681789, "content": content,
        });
        self.raw(event_type, envelope.to_string().as_bytes()).await;
    }

    /// Publishes one `event_type` event of `app` per id, all before
    /// awaiting their confirms together (a burst, as a busy producer sends it).
    pub async fn burst(&self, app: &str, event_type: &str, ids: &[String]) {
        let mut confirms = Vec::with_capacity(ids.len());
        for id in ids {
            let headers = FieldTable::default();
            confirms.push(self.send(id, app, event_type, json!({}), headers).await);
        }
        for confirm in confirms {
            let confirm = confirm.await.unwrap();
            assert!(confirm.is_ack() && confirm.take_message().is_none());
        }
    }

    /// Publishes a well-formed envelope with AMQP `headers` (e.g.
    /// `x-ordering-key`), persistent and mandatory, and awaits the confirm.
    pub async fn event_with(
        &self,
        id: &str,
        app: &str,
        event_type: &str,
        content: Value,
        headers: FieldTable,
    ) {
        let sent = self.send(id, app, event_type, content, headers).await;
        let confirm = sent.await.unwrap();
        assert!(confirm.is_ack() && confirm.take_message().is_none());
    }

    /// Publishes one event (persistent, mandatory); its confirm, not awaited.
    async fn send(
        &self,
        id: &str,
        app: &str,
        event_type: &str,
        content: Value,
        headers: FieldTable,
    ) -> lapin::PublisherConfirm {
        let envelope = json!({
            "id": id, "application_id": app, "type": event_type,
            "timestamp": 1611681789, "content": content,
        });
        self.channel
            .basic_publish(
                self.exchange.as_str().into(),
                event_type.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                envelope.to_string().as_bytes(),
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_headers(headers),
            )
            .await
            .unwrap()
    }

    /// Takes one message off `queue` (body, headers), if any.
    pub async fn get(&self, queue: &str) -> Option<(Vec<u8>, FieldTable)> {
        let msg = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()?;
        let headers = msg
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        Some((msg.delivery.data.clone(), headers))
    }

    pub async fn close(self) {
        let _ = self.conn.close(200, "done".into()).await;
    }
}

/// Deletes one queue (for tier queues a test's schedules left behind).
pub async fn delete_queue(name: &str) {
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let _ = ch
        .queue_delete(name.into(), lapin::options::QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "cleanup".into()).await;
}
