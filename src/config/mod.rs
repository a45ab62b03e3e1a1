//! Typed configuration read from `WF_*` environment variables, validated at start.
//! A bad value stops start-up with a one-line error naming the variable.
//! It depends on nothing of the service but plain value types (the retry
//! schedule, durations): `app.rs` turns settings into topology and component
//! settings.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::retry::RetrySchedule;

mod parse;
#[cfg(test)]
mod tests;

use parse::Reader;

/// A value that must never reach a log line: `Debug` prints a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted<T>(pub T);

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Start-up configuration error: which variable, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("invalid {variable}: {message}")]
pub struct ConfigError {
    /// The environment variable at fault, e.g. `WF_DELIVERY_TIMEOUT`.
    pub variable: &'static str,
    /// What is wrong, without echoing secret values.
    pub message: String,
}

/// Which consumers and servers this process runs (`WF_ROLES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Consume `{ns}.ingest` and fan events out.
    pub ingest: bool,
    /// Consume `{ns}.deliver` and deliver jobs.
    pub deliver: bool,
    /// Serve the `/v1` admin API (health and metrics are always served).
    pub api: bool,
}

/// The queue type of the work queues (`WF_QUEUE_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    /// Single-node classic queues.
    Classic,
    /// Replicated Raft queues, for RabbitMQ clusters.
    Quorum,
}

/// Log output format (`WF_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Most ingest partitions (`WF_INGEST_PARTITIONS`): each held one takes a
/// channel of its holder's connection.
pub const MAX_INGEST_PARTITIONS: usize = 256;

/// Every setting of the service; `docs/reference.md` has the table of
/// variables, checked against [`VARIABLES`] by the docs test.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `WF_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`: one
    /// node's URL, or several separated by commas (the nodes of a cluster).
    pub amqp_url: Redacted<String>,
    /// `WF_REDIS_URL`, default `redis://127.0.0.1:6379/0`. With Sentinel,
    /// only its database, user and password apply (to the primary).
    pub redis_url: Redacted<String>,
    /// `WF_REDIS_SENTINELS` with `WF_REDIS_SENTINEL_MASTER`: Redis is the
    /// primary these Sentinels name, followed through failovers.
    pub redis_sentinel: Option<Sentinel>,
    /// `WF_HTTP_ADDR`, default `127.0.0.1:8080`.
    pub http_addr: SocketAddr,
    /// `WF_NAMESPACE`, default `webhooks`: prefix of every queue, exchange and Redis key.
    pub namespace: String,
    /// `WF_ADMIN_TOKEN`: the operator token; without it only health and metrics answer.
    pub admin_token: Option<Redacted<String>>,
    /// `WF_RETRY_SCHEDULE`, default `10s,30s,2m,10m,30m,1h,2h,4h,8h,12h`.
    pub retry_schedule: RetrySchedule,
    /// `WF_MAX_EVENT_AGE`, default 48 h.
    pub max_event_age: Duration,
    /// `WF_DELIVERY_TIMEOUT`, default 10 s.
    pub delivery_timeout: Duration,
    /// `WF_DEAD_LETTER_RETENTION`, default 14 days.
    pub dead_letter_retention: Duration,
    /// `WF_SHUTDOWN_TIMEOUT`, default 25 s.
    pub shutdown_timeout: Duration,
    /// `WF_ALLOW_HTTP`, default false: accept `http://` callback URLs.
    pub allow_http: bool,
    /// `WF_ALLOW_PRIVATE_TARGETS`, default false: accept loopback/private targets.
    pub allow_private_targets: bool,
    /// `WF_SECRET_KEY`: 32-byte base64 key encrypting webhook secrets at rest.
    pub secret_key: Option<Redacted<[u8; 32]>>,
    /// `WF_ROLES`, default `ingest,deliver,api`.
    pub roles: Roles,
    /// `WF_EVENT_CATALOGUE`: a JSON file replacing the embedded event catalogue.
    pub event_catalogue: Option<PathBuf>,
    /// `WF_EXTRA_CA_FILE`: the certificates of a PEM bundle deliveries
    /// trust besides the built-in roots (private CAs), read and each
    /// checked to be usable as a root at start-up; none when unset.
    pub extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// `WF_HTTP_PROXY`: `http://[user:password@]host:port`, the proxy every
    /// delivery and token request goes through.
    pub http_proxy: Option<Redacted<String>>,
    /// `WF_NO_PROXY`: comma-separated hosts (and their subdomains), IP
    /// addresses or networks reached without the proxy.
    pub no_proxy: Option<String>,
    /// `WF_DELIVERY_CONCURRENCY`, default 200: deliveries in flight per process.
    pub delivery_concurrency: usize,
    /// `WF_INGEST_CONCURRENCY`, default 200: events fanned out concurrently
    /// per ingest partition a process holds.
    pub ingest_concurrency: usize,
    /// `WF_INGEST_PARTITIONS`, default 16 (1 to 256): the queues events are
    /// fanned out from, each by one process at a time; all events of one
    /// application go to the same one.
    pub ingest_partitions: usize,
    /// `WF_LOG_FORMAT`, default `pretty`.
    pub log_format: LogFormat,
    /// `WF_ENDPOINT_CONCURRENCY`, default 8: deliveries in flight per webhook.
    /// Isolation: a slow webhook holds at most this many of the window's slots.
    pub endpoint_concurrency: usize,
    /// `WF_HOST_CONCURRENCY`, unset by default: deliveries in flight per
    /// receiving host (scheme, host, port), shared fairly among its webhooks.
    /// Politeness towards a host serving many webhooks, not isolation.
    pub host_concurrency: Option<usize>,
    /// `WF_CIRCUIT_BREAKER_THRESHOLD`, default 5: consecutive failed requests opening a webhook's circuit.
    pub breaker_threshold: u32,
    /// `WF_CIRCUIT_BREAKER_COOLDOWN`, default 30s: how long it stays open before a probe.
    pub breaker_cooldown: Duration,
    /// `WF_QUEUE_TYPE`, default `classic`; `quorum` for RabbitMQ clusters.
    pub queue_type: QueueType,
    /// `WF_DISABLE_ON_GONE`, default true: a `410 Gone` disables the webhook.
    pub disable_on_gone: bool,
    /// `WF_AUTO_DISABLE_AFTER`, default 5 days: a webhook whose requests
    /// have all failed this long (and at least `WF_CIRCUIT_BREAKER_THRESHOLD`
    /// of them) is disabled.
    pub auto_disable_after: Duration,
    /// `WF_ATTEMPT_HISTORY`, default 500: attempts kept per webhook (0: off).
    pub attempt_history: usize,
    /// `WF_ATTEMPT_HISTORY_AGE`, default 7 days: the oldest attempt kept.
    pub attempt_history_age: Duration,
    /// `WF_REPLAY_RATE`, default 100: dead letters replayed per second per
    /// process (catch-ups and the operator's bulk replay share it).
    pub replay_rate: u32,
    /// `WF_BACKLOG_IDLE`, default 60s (at least 1s): how long a webhook's
    /// backlog stays untouched and empty before it is deleted.
    pub backlog_idle: Duration,
}

/// One environment variable the service reads.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    /// Its name, e.g. `WF_DELIVERY_TIMEOUT`.
    pub name: &'static str,
    /// The value it takes when unset (or blank); `None`: it stays unset.
    pub default: Option<&'static str>,
}

const fn set(name: &'static str, default: &'static str) -> Variable {
    Variable {
        name,
        default: Some(default),
    }
}

const fn unset(name: &'static str) -> Variable {
    Variable {
        name,
        default: None,
    }
}

/// Every variable the service reads, with its default: the one source the
/// loader, `docs/reference.md` and the Kubernetes configmap are checked
/// against.
pub const VARIABLES: &[Variable] = &[
    set("WF_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
    set("WF_REDIS_URL", "redis://127.0.0.1:6379/0"),
    unset("WF_REDIS_SENTINELS"),
    unset("WF_REDIS_SENTINEL_MASTER"),
    set("WF_HTTP_ADDR", "127.0.0.1:8080"),
    set("WF_NAMESPACE", "webhooks"),
    unset("WF_ADMIN_TOKEN"),
    set("WF_RETRY_SCHEDULE", crate::retry::DEFAULT_SCHEDULE),
    set("WF_MAX_EVENT_AGE", "48h"),
    set("WF_DELIVERY_TIMEOUT", "10s"),
    set("WF_DEAD_LETTER_RETENTION", "14d"),
    set("WF_SHUTDOWN_TIMEOUT", "25s"),
    set("WF_ALLOW_HTTP", "false"),
    set("WF_ALLOW_PRIVATE_TARGETS", "false"),
    unset("WF_SECRET_KEY"),
    set("WF_ROLES", "ingest,deliver,api"),
    unset("WF_EVENT_CATALOGUE"),
    unset("WF_EXTRA_CA_FILE"),
    unset("WF_HTTP_PROXY"),
    unset("WF_NO_PROXY"),
    set("WF_DELIVERY_CONCURRENCY", "200"),
    set("WF_INGEST_CONCURRENCY", "200"),
    set("WF_INGEST_PARTITIONS", "16"),
    set("WF_ENDPOINT_CONCURRENCY", "8"),
    unset("WF_HOST_CONCURRENCY"),
    set("WF_CIRCUIT_BREAKER_THRESHOLD", "5"),
    set("WF_CIRCUIT_BREAKER_COOLDOWN", "30s"),
    set("WF_QUEUE_TYPE", "classic"),
    set("WF_DISABLE_ON_GONE", "true"),
    set("WF_AUTO_DISABLE_AFTER", "5d"),
    set("WF_ATTEMPT_HISTORY", "500"),
    set("WF_ATTEMPT_HISTORY_AGE", "7d"),
    set("WF_REPLAY_RATE", "100"),
    set("WF_BACKLOG_IDLE", "60s"),
    set("WF_LOG_FORMAT", "pretty"),
];

/// The schemes `WF_AMQP_URL` and `WF_REDIS_URL` accept.
const AMQP_SCHEMES: &[&str] = &["amqp", "amqps"];
const REDIS_SCHEMES: &[&str] = &["redis", "rediss", "redis+unix", "unix"];
/// `WF_INGEST_PARTITIONS`' range, and `WF_ATTEMPT_HISTORY`'s (0: off).
const PARTITIONS: std::ops::RangeInclusive<usize> = 1..=MAX_INGEST_PARTITIONS;
const PARTITIONS_EXPECTED: &str = "expected an integer between 1 and 256";
const HISTORY: std::ops::RangeInclusive<usize> = 0..=100_000;
const HISTORY_EXPECTED: &str = "expected an integer from 0 (off) to 100000";
/// The values of `WF_QUEUE_TYPE` and `WF_LOG_FORMAT`.
const QUEUE_TYPES: &[(&str, QueueType)] = &[
    ("classic", QueueType::Classic),
    ("quorum", QueueType::Quorum),
];
const LOG_FORMATS: &[(&str, LogFormat)] =
    &[("pretty", LogFormat::Pretty), ("json", LogFormat::Json)];

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings from a map (tests, embedding); missing keys take defaults.
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| map.get(name).cloned())
    }

    /// Reads the settings through `lookup`, which returns a variable's value
    /// if set; each unset one takes its default from [`VARIABLES`].
    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let r = Reader::new(&lookup);
        let amqp = r.text("WF_AMQP_URL");
        let redis = r.text("WF_REDIS_URL");
        Ok(Settings {
            amqp_url: Redacted(parse::url_list("WF_AMQP_URL", amqp, AMQP_SCHEMES)?),
            redis_url: Redacted(parse::url_with_scheme(
                "WF_REDIS_URL",
                redis,
                REDIS_SCHEMES,
            )?),
            redis_sentinel: parse::sentinel(
                r.optional("WF_REDIS_SENTINELS"),
                r.optional("WF_REDIS_SENTINEL_MASTER"),
            )?,
            http_addr: r.with("WF_HTTP_ADDR", |v| {
                v.parse()
                    .map_err(|_| "expected host:port, e.g. 0.0.0.0:8080".into())
            })?,
            namespace: parse::namespace(r.text("WF_NAMESPACE"))?,
            admin_token: r.optional_with("WF_ADMIN_TOKEN", parse::admin_token)?,
            retry_schedule: r.with("WF_RETRY_SCHEDULE", RetrySchedule::parse)?,
            max_event_age: r.duration("WF_MAX_EVENT_AGE")?,
            delivery_timeout: r.duration("WF_DELIVERY_TIMEOUT")?,
            dead_letter_retention: r.duration("WF_DEAD_LETTER_RETENTION")?,
            shutdown_timeout: r.duration("WF_SHUTDOWN_TIMEOUT")?,
            allow_http: r.boolean("WF_ALLOW_HTTP")?,
            allow_private_targets: r.boolean("WF_ALLOW_PRIVATE_TARGETS")?,
            secret_key: r.optional_with("WF_SECRET_KEY", parse::secret_key)?,
            roles: parse::roles(&r.text("WF_ROLES"))?,
            event_catalogue: r.optional("WF_EVENT_CATALOGUE").map(PathBuf::from),
            extra_roots: r
                .optional_with("WF_EXTRA_CA_FILE", parse::extra_ca_file)?
                .unwrap_or_default(),
            http_proxy: r.optional_with("WF_HTTP_PROXY", parse::http_proxy)?,
            no_proxy: r.optional("WF_NO_PROXY"),
            delivery_concurrency: r.count("WF_DELIVERY_CONCURRENCY")?,
            ingest_concurrency: r.count("WF_INGEST_CONCURRENCY")?,
            ingest_partitions: r.integer(
                "WF_INGEST_PARTITIONS",
                PARTITIONS,
                PARTITIONS_EXPECTED,
            )?,
            endpoint_concurrency: r.count("WF_ENDPOINT_CONCURRENCY")?,
            host_concurrency: r.optional_count("WF_HOST_CONCURRENCY")?,
            breaker_threshold: r.count("WF_CIRCUIT_BREAKER_THRESHOLD")? as u32,
            breaker_cooldown: r.duration("WF_CIRCUIT_BREAKER_COOLDOWN")?,
            queue_type: r.choice("WF_QUEUE_TYPE", QUEUE_TYPES)?,
            disable_on_gone: r.boolean("WF_DISABLE_ON_GONE")?,
            auto_disable_after: r.duration("WF_AUTO_DISABLE_AFTER")?,
            attempt_history: r.integer("WF_ATTEMPT_HISTORY", HISTORY, HISTORY_EXPECTED)?,
            attempt_history_age: r.duration("WF_ATTEMPT_HISTORY_AGE")?,
            replay_rate: r.count("WF_REPLAY_RATE")? as u32,
            backlog_idle: r.duration_at_least("WF_BACKLOG_IDLE", Duration::from_secs(1))?,
            log_format: r.choice("WF_LOG_FORMAT", LOG_FORMATS)?,
        })
    }
}

/// Redis through Sentinel: the Sentinels to ask and the primary's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sentinel {
    /// `host:port` of each Sentinel (`WF_REDIS_SENTINELS`).
    pub nodes: Vec<String>,
    /// The name the Sentinels monitor the primary under
    /// (`WF_REDIS_SENTINEL_MASTER`).
    pub master: String,
}
