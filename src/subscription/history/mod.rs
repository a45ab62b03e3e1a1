//! Delivery history and health, per webhook, in Redis:
//!
//! - `{ns}:attempts:{app}:{id}`: a stream of the webhook's latest attempts
//!   (at most `WF_ATTEMPT_HISTORY`, none older than
//!   `WF_ATTEMPT_HISTORY_AGE`), newest read first;
//! - `{ns}:health:{app}:{id}`: a hash of successes and failures per
//!   5-minute bucket over the last 24 h (`s:<bucket>`, `f:<bucket>`) and
//!   per hour over the last 7 days (`S:<hour>`, `F:<hour>`), the last
//!   success and failure, and the jobs waiting in retry tiers.
//!
//! Written off the hot path: the delivery worker hands each record to a
//! task (`writer.rs`) that writes what came in the last 50 ms as one pipeline
//! (a full queue drops records, counted, rather than slow deliveries).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis::{self, AsyncCommands};
use serde_json::Value;
use tokio::sync::mpsc;

use super::store::{Store, StoreError};
use crate::metrics::Metrics;

mod read;
mod writer;

use read::{fields, figures_of, matches, parse, view};

/// Records waiting for Redis, at most.
const QUEUE: usize = 20_000;
/// Width of one health bucket.
pub(crate) const BUCKET_MS: i64 = 5 * 60 * 1000;
/// Width of one hourly health bucket (the 7-day chart).
pub(crate) const HOUR_MS: i64 = 3600 * 1000;

/// What an attempt was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A delivery of a published event (first try or retry).
    Delivery,
    /// A replay of a dead letter.
    Replay,
    /// The admin API's test event.
    Test,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Delivery => "delivery",
            Kind::Replay => "replay",
            Kind::Test => "test",
        }
    }
}

/// One attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attempt {
    /// Unix ms when it started.
    pub at_ms: i64,
    /// The event id (`Webhook-Id`).
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// `Webhook-Attempt` of the request (for one not sent: the request it
    /// stood for).
    pub attempt: u32,
    /// The HTTP status, if a response came back.
    pub status: Option<u16>,
    /// Error class (`http_error`, `timeout`, `connect_error`,
    /// `auth_error`, `circuit_open`, `deferred`); none on success.
    pub error_class: Option<&'static str>,
    /// Error text; none on success.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
    /// Whether a request was sent (false: short-circuited or deferred).
    pub sent: bool,
    /// Delivery, replay or test.
    pub kind: Kind,
}

impl Attempt {
    fn succeeded(&self) -> bool {
        self.sent && self.error_class.is_none()
    }
}

enum Record {
    Attempt(String, String, Attempt),
    /// A job of (app, webhook) entered (+1) or left (-1) a retry tier.
    Waiting(String, String, i64),
}

/// Handle on the history; cheap to clone. Off (`cap` 0): records nothing
/// and reads nothing.
#[derive(Clone)]
pub(crate) struct History {
    tx: Option<mpsc::Sender<Record>>,
    metrics: Arc<Metrics>,
    store: Store,
    cap: usize,
    age: Duration,
}

/// Which attempts a page shows.
#[derive(Debug, Default, Clone)]
pub(crate) struct AttemptFilter {
    /// `Some(true)`: successes only; `Some(false)`: failures only.
    pub success: Option<bool>,
    /// Only this event's.
    pub event_id: Option<String>,
    /// Only this type's.
    pub event_type: Option<String>,
}

/// What health is computed from.
#[derive(Debug, Default, Clone)]
pub(crate) struct HealthFigures {
    /// (successes, failures) of requests sent in the last hour.
    pub hour: (u64, u64),
    /// (successes, failures) in the last 24 h.
    pub day: (u64, u64),
    /// (bucket start ms, successes, failures), oldest first, last 24 h.
    pub buckets: Vec<(i64, u64, u64)>,
    /// The same per hour, oldest first, last 7 days.
    pub hours: Vec<(i64, u64, u64)>,
    /// p50 and p99 duration (ms) of the recorded requests of the last hour.
    pub durations_1h: Option<(u64, u64)>,
    /// Unix ms of the last success.
    pub last_success_ms: Option<i64>,
    /// Unix ms of the last failure, and its error.
    pub last_failure: Option<(i64, String)>,
    /// Jobs waiting in retry tiers.
    pub waiting: u64,
}

impl History {
    /// The history over `store`, keeping `cap` attempts per webhook (0:
    /// off) for at most `age`; records it has to drop are counted in
    /// `metrics`.
    pub(crate) fn start(store: Store, cap: usize, age: Duration, metrics: Arc<Metrics>) -> Self {
        let tx = (cap > 0).then(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(writer::write(store.clone(), cap, age, rx));
            tx
        });
        History {
            tx,
            metrics,
            store,
            cap,
            age,
        }
    }

    fn attempts_key(&self, app: &str, id: &str) -> String {
        attempts_key(&self.store, app, id)
    }

    fn health_key(&self, app: &str, id: &str) -> String {
        health_key(&self.store, app, id)
    }

    /// Whether attempts are recorded.
    pub(crate) fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Records `attempt` of webhook `id` of `app`, without waiting; dropped
    /// and counted if the writer is that far behind.
    pub(crate) fn record(&self, app: &str, id: &str, attempt: Attempt) {
        if let Some(tx) = &self.tx {
            let record = Record::Attempt(app.to_string(), id.to_string(), attempt);
            if tx.try_send(record).is_err() {
                self.metrics.history_record_lost();
            }
        }
    }

    /// A job of webhook `id` entered (`+1`) or left (`-1`) a retry tier.
    pub(crate) fn waiting(&self, app: &str, id: &str, delta: i64) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(Record::Waiting(app.to_string(), id.to_string(), delta));
        }
    }

    /// Up to `limit` attempts of webhook `id` matching `filter`, newest
    /// first, before `cursor` (an entry id from a previous page); and the
    /// cursor of the next page.
    pub(crate) async fn page(
        &self,
        app: &str,
        id: &str,
        filter: &AttemptFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Value>, Option<String>), StoreError> {
        if !self.enabled() {
            return Ok((Vec::new(), None));
        }
        let key = self.attempts_key(app, id);
        let mut conn = self.store.connection().await?;
        let end = cursor.map_or_else(|| "+".to_string(), |c| format!("({c}"));
        // The stream holds at most `cap` entries: one read, filtered here.
        let entries: redis::streams::StreamRangeReply = conn
            .xrevrange_count(&key, end, "-", self.cap.max(limit))
            .await?;
        let oldest = crate::clock::unix_millis() - self.age.as_millis() as i64;
        let mut items: Vec<(String, Value)> = Vec::new();
        let mut more = false;
        for entry in &entries.ids {
            let Some(attempt) = parse(&fields(entry)) else {
                continue;
            };
            if attempt.at_ms < oldest || !matches(&attempt, filter) {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push((entry.id.clone(), view(&attempt)));
        }
        let next = match more {
            true => items.last().map(|(id, _)| id.clone()),
            false => None,
        };
        Ok((items.into_iter().map(|(_, v)| v).collect(), next))
    }

    /// The figures of webhook `id`'s health; old buckets are dropped on the
    /// way.
    pub(crate) async fn health(&self, app: &str, id: &str) -> Result<HealthFigures, StoreError> {
        let now = crate::clock::unix_millis();
        let mut conn = self.store.connection().await?;
        let key = self.health_key(app, id);
        let hash: HashMap<String, String> = conn.hgetall(&key).await?;
        let (mut figures, stale) = figures_of(&hash, now);
        if !stale.is_empty() {
            let _: () = conn.hdel(&key, &stale).await?;
        }
        if self.enabled() {
            let hour_start = now - 3600 * 1000;
            figures.durations_1h = self.durations(&mut conn, app, id, hour_start).await?;
        }
        Ok(figures)
    }

    /// p50 and p99 of the recorded requests since `since` (ms).
    async fn durations(
        &self,
        conn: &mut super::redis_pool::Pooled,
        app: &str,
        id: &str,
        since: i64,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let key = self.attempts_key(app, id);
        let entries: redis::streams::StreamRangeReply = conn
            .xrevrange_count(&key, "+", since.to_string(), self.cap)
            .await?;
        let mut durations: Vec<u64> = entries
            .ids
            .iter()
            .filter_map(|e| parse(&fields(e)))
            .filter(|a| a.sent)
            .map(|a| a.duration_ms)
            .collect();
        if durations.is_empty() {
            return Ok(None);
        }
        durations.sort_unstable();
        let at = |q: f64| {
            let i = ((durations.len() as f64 * q).ceil() as usize).clamp(1, durations.len());
            durations[i - 1]
        };
        Ok(Some((at(0.5), at(0.99))))
    }
}

/// The start (ms) of the hour `ms` falls in.
pub(crate) fn hour(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// The start (ms) of the bucket `ms` falls in.
pub(crate) fn bucket(ms: i64) -> i64 {
    ms.div_euclid(BUCKET_MS) * BUCKET_MS
}

/// `{ns}:attempts:{app}:{id}`: the stream of a webhook's latest attempts.
pub(super) fn attempts_key(store: &Store, app: &str, id: &str) -> String {
    store.key(&format!("attempts:{app}:{id}"))
}

/// `{ns}:health:{app}:{id}`: the hash of a webhook's health counters (per
/// 5-minute bucket), last success and failure, and jobs waiting in retry
/// tiers.
pub(super) fn health_key(store: &Store, app: &str, id: &str) -> String {
    store.key(&format!("health:{app}:{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_five_minutes_and_hours() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(BUCKET_MS + 1), BUCKET_MS);
        assert_eq!(bucket(-1), -BUCKET_MS);
        assert_eq!(hour(HOUR_MS * 5 + BUCKET_MS * 3), HOUR_MS * 5);
    }
}
