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

use base64::Engine;

use crate::retry::RetrySchedule;
use crate::units::parse_duration;

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

/// Every setting of the service. See the README's configuration table.
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

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings from a map (tests, embedding); missing keys take defaults.
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| map.get(name).cloned())
    }

    /// Reads the settings through `lookup`, which returns a variable's value if set.
    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let get = |name: &str, default: &str| {
            lookup(name)
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        let optional = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        Ok(Settings {
            amqp_url: Redacted(url_list(
                "WF_AMQP_URL",
                get("WF_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
                &["amqp", "amqps"],
            )?),
            redis_url: Redacted(url_with_scheme(
                "WF_REDIS_URL",
                get("WF_REDIS_URL", "redis://127.0.0.1:6379/0"),
                &["redis", "rediss", "redis+unix", "unix"],
            )?),
            redis_sentinel: sentinel(
                optional("WF_REDIS_SENTINELS"),
                optional("WF_REDIS_SENTINEL_MASTER"),
            )?,
            http_addr: get("WF_HTTP_ADDR", "127.0.0.1:8080")
                .parse()
                .map_err(|_| err("WF_HTTP_ADDR", "expected host:port, e.g. 0.0.0.0:8080"))?,
            namespace: namespace(get("WF_NAMESPACE", "webhooks"))?,
            admin_token: optional("WF_ADMIN_TOKEN").map(admin_token).transpose()?,
            retry_schedule: RetrySchedule::parse(&get(
                "WF_RETRY_SCHEDULE",
                crate::retry::DEFAULT_SCHEDULE,
            ))
            .map_err(|m| err("WF_RETRY_SCHEDULE", &m))?,
            max_event_age: duration("WF_MAX_EVENT_AGE", &get("WF_MAX_EVENT_AGE", "48h"))?,
            delivery_timeout: duration("WF_DELIVERY_TIMEOUT", &get("WF_DELIVERY_TIMEOUT", "10s"))?,
            dead_letter_retention: duration(
                "WF_DEAD_LETTER_RETENTION",
                &get("WF_DEAD_LETTER_RETENTION", "14d"),
            )?,
            shutdown_timeout: duration("WF_SHUTDOWN_TIMEOUT", &get("WF_SHUTDOWN_TIMEOUT", "25s"))?,
            allow_http: boolean("WF_ALLOW_HTTP", &get("WF_ALLOW_HTTP", "false"))?,
            allow_private_targets: boolean(
                "WF_ALLOW_PRIVATE_TARGETS",
                &get("WF_ALLOW_PRIVATE_TARGETS", "false"),
            )?,
            secret_key: optional("WF_SECRET_KEY").map(secret_key).transpose()?,
            roles: roles(&get("WF_ROLES", "ingest,deliver,api"))?,
            event_catalogue: optional("WF_EVENT_CATALOGUE").map(PathBuf::from),
            delivery_concurrency: count(
                "WF_DELIVERY_CONCURRENCY",
                &get("WF_DELIVERY_CONCURRENCY", "200"),
            )?,
            ingest_concurrency: count(
                "WF_INGEST_CONCURRENCY",
                &get("WF_INGEST_CONCURRENCY", "200"),
            )?,
            ingest_partitions: match count(
                "WF_INGEST_PARTITIONS",
                &get("WF_INGEST_PARTITIONS", "16"),
            )? {
                n if n <= MAX_INGEST_PARTITIONS => n,
                _ => {
                    return Err(err(
                        "WF_INGEST_PARTITIONS",
                        "expected an integer between 1 and 256",
                    ));
                }
            },
            endpoint_concurrency: count(
                "WF_ENDPOINT_CONCURRENCY",
                &get("WF_ENDPOINT_CONCURRENCY", "8"),
            )?,
            host_concurrency: optional("WF_HOST_CONCURRENCY")
                .map(|v| count("WF_HOST_CONCURRENCY", &v))
                .transpose()?,
            breaker_threshold: count(
                "WF_CIRCUIT_BREAKER_THRESHOLD",
                &get("WF_CIRCUIT_BREAKER_THRESHOLD", "5"),
            )? as u32,
            breaker_cooldown: duration(
                "WF_CIRCUIT_BREAKER_COOLDOWN",
                &get("WF_CIRCUIT_BREAKER_COOLDOWN", "30s"),
            )?,
            queue_type: match get("WF_QUEUE_TYPE", "classic").as_str() {
                "classic" => QueueType::Classic,
                "quorum" => QueueType::Quorum,
                _ => return Err(err("WF_QUEUE_TYPE", "expected `classic` or `quorum`")),
            },
            disable_on_gone: boolean("WF_DISABLE_ON_GONE", &get("WF_DISABLE_ON_GONE", "true"))?,
            auto_disable_after: duration(
                "WF_AUTO_DISABLE_AFTER",
                &get("WF_AUTO_DISABLE_AFTER", "5d"),
            )?,
            attempt_history: match get("WF_ATTEMPT_HISTORY", "500").parse::<usize>() {
                Ok(n) if n <= 100_000 => n,
                _ => {
                    return Err(err(
                        "WF_ATTEMPT_HISTORY",
                        "expected an integer from 0 (off) to 100000",
                    ));
                }
            },
            attempt_history_age: duration(
                "WF_ATTEMPT_HISTORY_AGE",
                &get("WF_ATTEMPT_HISTORY_AGE", "7d"),
            )?,
            replay_rate: count("WF_REPLAY_RATE", &get("WF_REPLAY_RATE", "100"))? as u32,
            backlog_idle: match duration("WF_BACKLOG_IDLE", &get("WF_BACKLOG_IDLE", "60s"))? {
                d if d >= Duration::from_secs(1) => d,
                _ => return Err(err("WF_BACKLOG_IDLE", "expected at least 1s")),
            },
            log_format: match get("WF_LOG_FORMAT", "pretty").as_str() {
                "pretty" => LogFormat::Pretty,
                "json" => LogFormat::Json,
                _ => return Err(err("WF_LOG_FORMAT", "expected `pretty` or `json`")),
            },
        })
    }
}

fn err(variable: &'static str, message: &str) -> ConfigError {
    ConfigError {
        variable,
        message: message.to_string(),
    }
}

fn url_with_scheme(
    variable: &'static str,
    value: String,
    schemes: &[&str],
) -> Result<String, ConfigError> {
    // The message never echoes the value: URLs carry passwords.
    match url::Url::parse(&value) {
        Ok(u) if schemes.contains(&u.scheme()) => Ok(value),
        Ok(u) => Err(err(
            variable,
            &format!(
                "scheme `{}` is not one of {}",
                u.scheme(),
                schemes.join(", ")
            ),
        )),
        Err(e) => Err(err(variable, &format!("not a URL ({e})"))),
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

/// Both Sentinel variables, or neither.
fn sentinel(
    nodes: Option<String>,
    master: Option<String>,
) -> Result<Option<Sentinel>, ConfigError> {
    let (nodes, master) = match (nodes, master) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(err(
                "WF_REDIS_SENTINEL_MASTER",
                "is required with WF_REDIS_SENTINELS (the name the Sentinels monitor)",
            ));
        }
        (None, Some(_)) => {
            return Err(err(
                "WF_REDIS_SENTINELS",
                "is required with WF_REDIS_SENTINEL_MASTER (host:port of each Sentinel)",
            ));
        }
        (Some(n), Some(m)) => (n, m.trim().to_string()),
    };
    let nodes = nodes
        .split(',')
        .map(|n| {
            let n = n.trim();
            match n.rsplit_once(':') {
                Some((host, port))
                    if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) =>
                {
                    Ok(n.to_string())
                }
                _ => Err(err(
                    "WF_REDIS_SENTINELS",
                    "expected host:port of each Sentinel, separated by commas",
                )),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Sentinel { nodes, master }))
}

/// A comma-separated list of URLs of `schemes` (spaces around commas
/// dropped), each checked as [`url_with_scheme`] does.
fn url_list(
    variable: &'static str,
    value: String,
    schemes: &[&str],
) -> Result<String, ConfigError> {
    let urls = value
        .split(',')
        .map(|u| url_with_scheme(variable, u.trim().to_string(), schemes))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(urls.join(","))
}

fn namespace(value: String) -> Result<String, ConfigError> {
    let ok = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(value)
    } else {
        Err(err(
            "WF_NAMESPACE",
            "expected 1-64 characters of [A-Za-z0-9_-]",
        ))
    }
}

fn admin_token(value: String) -> Result<Redacted<String>, ConfigError> {
    if value.len() < 16 {
        return Err(err("WF_ADMIN_TOKEN", "must be at least 16 characters"));
    }
    Ok(Redacted(value))
}

fn secret_key(value: String) -> Result<Redacted<[u8; 32]>, ConfigError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| err("WF_SECRET_KEY", "not valid base64"))?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| err("WF_SECRET_KEY", "must decode to exactly 32 bytes"))?;
    Ok(Redacted(key))
}

fn roles(value: &str) -> Result<Roles, ConfigError> {
    let mut roles = Roles {
        ingest: false,
        deliver: false,
        api: false,
    };
    for role in value.split(',').map(str::trim) {
        match role {
            "ingest" => roles.ingest = true,
            "deliver" => roles.deliver = true,
            "api" => roles.api = true,
            other => {
                return Err(err(
                    "WF_ROLES",
                    &format!("unknown role `{other}` (expected ingest, deliver, api)"),
                ));
            }
        }
    }
    Ok(roles)
}

fn boolean(variable: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(err(variable, "expected true or false")),
    }
}

fn count(variable: &'static str, value: &str) -> Result<usize, ConfigError> {
    match value.parse::<usize>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        _ => Err(err(variable, "expected an integer between 1 and 10000")),
    }
}

fn duration(variable: &'static str, value: &str) -> Result<Duration, ConfigError> {
    match parse_duration(value) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(err(
            variable,
            &format!("`{value}` is not a duration like 500ms, 10s, 2m, 1h or 14d"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_map(&map)
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.namespace, "webhooks");
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.max_event_age, Duration::from_secs(48 * 3600));
        assert_eq!(s.delivery_timeout, Duration::from_secs(10));
        assert_eq!(s.dead_letter_retention, Duration::from_secs(14 * 86400));
        assert_eq!(s.shutdown_timeout, Duration::from_secs(25));
        assert!(!s.allow_http && !s.allow_private_targets);
        assert!(s.admin_token.is_none() && s.secret_key.is_none());
        assert!(s.roles.ingest && s.roles.deliver && s.roles.api);
        assert_eq!(s.endpoint_concurrency, 8);
        assert_eq!(s.host_concurrency, None, "no host cap unless asked for");
        assert!(s.disable_on_gone);
        assert_eq!(s.auto_disable_after, Duration::from_secs(5 * 86400));
        assert_eq!(s.replay_rate, 100);
        assert_eq!(s.backlog_idle, Duration::from_secs(60));
        assert_eq!(s.ingest_partitions, 16);
        for bad in ["0", "257", "x"] {
            let e = settings(&[("WF_INGEST_PARTITIONS", bad)]).unwrap_err();
            assert!(e.to_string().contains("WF_INGEST_PARTITIONS"), "{e}");
        }
        assert_eq!(s.attempt_history, 500);
        assert_eq!(s.attempt_history_age, Duration::from_secs(7 * 86400));
        assert_eq!(
            settings(&[("WF_ATTEMPT_HISTORY", "0")])
                .unwrap()
                .attempt_history,
            0
        );
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        let cases = [
            ("WF_DELIVERY_TIMEOUT", "ten seconds"),
            ("WF_MAX_EVENT_AGE", "0s"),
            ("WF_HTTP_ADDR", "nowhere"),
            ("WF_NAMESPACE", "has space"),
            ("WF_ROLES", "ingest,cook"),
            ("WF_ALLOW_HTTP", "maybe"),
            ("WF_SECRET_KEY", "c2hvcnQ="),
            ("WF_AMQP_URL", "http://localhost"),
            ("WF_AMQP_URL", "amqp://a:5672/%2f,http://b"),
            ("WF_AMQP_URL", "amqp://a:5672/%2f,,amqp://b:5672/%2f"),
            ("WF_RETRY_SCHEDULE", "10s,,30s"),
            ("WF_DELIVERY_CONCURRENCY", "0"),
            ("WF_QUEUE_TYPE", "mirrored"),
            ("WF_HOST_CONCURRENCY", "none"),
            ("WF_DISABLE_ON_GONE", "sometimes"),
            ("WF_AUTO_DISABLE_AFTER", "never"),
            ("WF_REPLAY_RATE", "0"),
            ("WF_ATTEMPT_HISTORY", "-1"),
            ("WF_ATTEMPT_HISTORY_AGE", "0s"),
        ];
        for (var, value) in cases {
            let e = settings(&[(var, value)]).unwrap_err();
            assert_eq!(e.variable, var, "{value}");
            assert!(e.to_string().contains(var));
        }
    }

    #[test]
    fn the_amqp_url_may_list_the_nodes_of_a_cluster() {
        let s = settings(&[(
            "WF_AMQP_URL",
            "amqp://u:p@rabbit-1:5672/%2f , amqp://u:p@rabbit-2:5672/%2f,amqps://u:p@rabbit-3/%2f",
        )])
        .unwrap();
        assert_eq!(
            s.amqp_url.0,
            "amqp://u:p@rabbit-1:5672/%2f,amqp://u:p@rabbit-2:5672/%2f,amqps://u:p@rabbit-3/%2f"
        );
    }

    #[test]
    fn sentinels_need_a_master_name_and_ports() {
        let s = settings(&[
            ("WF_REDIS_SENTINELS", "10.0.0.1:26379, sentinel-2:26380"),
            ("WF_REDIS_SENTINEL_MASTER", "wf"),
        ])
        .unwrap();
        let sentinel = s.redis_sentinel.unwrap();
        assert_eq!(sentinel.nodes, ["10.0.0.1:26379", "sentinel-2:26380"]);
        assert_eq!(sentinel.master, "wf");
        let e = settings(&[
            ("WF_REDIS_SENTINELS", "10.0.0.1"),
            ("WF_REDIS_SENTINEL_MASTER", "wf"),
        ])
        .unwrap_err();
        assert_eq!(e.variable, "WF_REDIS_SENTINELS");
        // One without the other names the one missing.
        let alone = settings(&[("WF_REDIS_SENTINELS", "127.0.0.1:26379")]).unwrap_err();
        assert_eq!(alone.variable, "WF_REDIS_SENTINEL_MASTER");
        let alone = settings(&[("WF_REDIS_SENTINEL_MASTER", "wf")]).unwrap_err();
        assert_eq!(alone.variable, "WF_REDIS_SENTINELS");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let s = settings(&[("WF_ADMIN_TOKEN", "operator-token-very-secret")]).unwrap();
        let printed = format!("{s:?}");
        assert!(!printed.contains("operator-token-very-secret"));
        assert!(!printed.contains("guest:guest"));
    }
}
