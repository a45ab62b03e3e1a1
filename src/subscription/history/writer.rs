//! The history's writer: one task that writes the records handed to it
//! as one Redis pipeline per moment (the attempts appended and trimmed,
//! the health counters added up per webhook and bucket).

use std::collections::HashMap;
use std::time::Duration;

use deadpool_redis::redis;
use tokio::sync::mpsc;

use super::{Attempt, Record, attempts_key, bucket, health_key, hour};
use crate::subscription::StoreError;
use crate::subscription::store::Store;

/// Records written in one pipeline, at most.
const BATCH: usize = 1_000;
/// How long records wait for others to go with.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// How long health buckets are kept: the hourly ones a week, and an hour.
const HEALTH_KEEP: Duration = Duration::from_secs(7 * 24 * 3600 + 3600);
/// Longest error text kept per attempt.
const MAX_ERROR: usize = 300;

pub(super) async fn write(store: Store, cap: usize, age: Duration, mut rx: mpsc::Receiver<Record>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut conn: Option<crate::subscription::redis_pool::Pooled> = None;
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            return;
        }
        // Let a moment's records go together.
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < BATCH {
            let room = BATCH - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let pipe = pipeline(&store, cap, age, &batch);
        batch.clear();
        let sent = async {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => conn.insert(store.connection().await?),
            };
            pipe.query_async::<()>(&mut **c).await?;
            Ok::<_, StoreError>(())
        };
        if let Err(e) = sent.await {
            conn = None;
            tracing::warn!(error = %crate::logging::Chain(&e), "delivery history not written");
        }
    }
}

/// A webhook's latest success (ms) and latest failure (ms, error) in a batch.
type Latest = (Option<i64>, Option<(i64, String)>);

/// One pipeline for `batch`: the attempts appended and trimmed, the health
/// counters added up per webhook and bucket.
fn pipeline(store: &Store, cap: usize, age: Duration, batch: &[Record]) -> redis::Pipeline {
    let mut tally = Tally::default();
    for record in batch {
        tally.add(store, record);
    }
    let mut pipe = redis::pipe();
    let oldest = crate::clock::unix_millis() - age.as_millis() as i64;
    for (stream, attempts) in &tally.streams {
        for a in attempts {
            pipe.xadd(stream, "*", &entry_fields(a)).ignore();
        }
        // Trimmed to the cap once per stream and batch, right after its
        // entries: an exact `MAXLEN` on every `XADD` cost Redis 19 to 20 µs
        // per entry, against about 3.4 µs plus one `XTRIM` per batch.
        pipe.cmd("XTRIM")
            .arg(stream)
            .arg("MAXLEN")
            .arg(cap)
            .ignore();
        pipe.cmd("XTRIM")
            .arg(stream)
            .arg("MINID")
            .arg("~")
            .arg(oldest.max(0))
            .ignore();
        pipe.pexpire(stream, age.as_millis() as i64).ignore();
    }
    tally.health(&mut pipe);
    pipe
}

/// A batch's records added up per stream and health hash.
#[derive(Default)]
struct Tally<'a> {
    /// (health key, field prefix, bucket start): requests to count.
    counts: HashMap<(String, &'static str, i64), u64>,
    last: HashMap<String, Latest>,
    waiting: HashMap<String, i64>,
    /// Each stream's entries of the batch, in the order they came.
    streams: HashMap<String, Vec<&'a Attempt>>,
}

impl<'a> Tally<'a> {
    fn add(&mut self, store: &Store, record: &'a Record) {
        let (app, id, a) = match record {
            Record::Waiting(app, id, delta) => {
                *self.waiting.entry(health_key(store, app, id)).or_default() += delta;
                return;
            }
            Record::Attempt(app, id, a) => (app, id, a),
        };
        self.streams
            .entry(attempts_key(store, app, id))
            .or_default()
            .push(a);
        if !a.sent {
            return;
        }
        let health = health_key(store, app, id);
        let ok = a.succeeded();
        let (five, hourly) = if ok { ("s", "S") } else { ("f", "F") };
        *self
            .counts
            .entry((health.clone(), five, bucket(a.at_ms)))
            .or_default() += 1;
        *self
            .counts
            .entry((health.clone(), hourly, hour(a.at_ms)))
            .or_default() += 1;
        let entry = self.last.entry(health).or_default();
        if ok {
            entry.0 = entry.0.max(Some(a.at_ms));
        } else if entry.1.as_ref().is_none_or(|(at, _)| *at <= a.at_ms) {
            entry.1 = Some((a.at_ms, truncate(a.error.as_deref().unwrap_or(""))));
        }
    }

    /// The health hashes' counters, latest success and failure, and jobs
    /// waiting, each hash's expiry renewed.
    fn health(self, pipe: &mut redis::Pipeline) {
        let mut touched: Vec<String> = Vec::new();
        for ((health, prefix, at), n) in self.counts {
            let field = format!("{prefix}:{at}");
            pipe.hincr(&health, field, n).ignore();
            touched.push(health);
        }
        for (health, (success, failure)) in self.last {
            if let Some(at) = success {
                pipe.hset(&health, "last_success", at).ignore();
            }
            if let Some((at, error)) = failure {
                pipe.hset_multiple(
                    &health,
                    &[("last_failure", at.to_string()), ("last_error", error)],
                )
                .ignore();
            }
            touched.push(health);
        }
        for (health, delta) in self.waiting {
            pipe.hincr(&health, "waiting", delta).ignore();
            touched.push(health);
        }
        touched.sort();
        touched.dedup();
        for health in touched {
            pipe.pexpire(&health, HEALTH_KEEP.as_millis() as i64)
                .ignore();
        }
    }
}

/// The stream fields of one attempt (short names; absent ones left out).
fn entry_fields(a: &Attempt) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("a", a.at_ms.to_string()),
        ("e", a.event_id.clone()),
        ("t", a.event_type.clone()),
        ("n", a.attempt.to_string()),
        ("d", a.duration_ms.to_string()),
        ("k", a.kind.as_str().to_string()),
    ];
    if let Some(s) = a.status {
        fields.push(("s", s.to_string()));
    }
    if let Some(c) = a.error_class {
        fields.push(("c", c.to_string()));
    }
    if let Some(r) = &a.error {
        fields.push(("r", truncate(r)));
    }
    if !a.sent {
        fields.push(("x", "0".into()));
    }
    fields
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_capped() {
        let long = "é".repeat(MAX_ERROR + 10);
        let cut = truncate(&long);
        assert_eq!(
            cut.chars().count(),
            MAX_ERROR + 1,
            "the cap and an ellipsis"
        );
        assert_eq!(truncate("short"), "short");
    }
}
