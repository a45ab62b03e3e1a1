//! Event-id markers. A claim is `SET NX GET` of `pending`; what it returns
//! says whether the id is new, in progress or done. Claims go straight to
//! Redis on one kept multiplexed connection, which pipelines the claims of
//! all events being fanned out at a moment by itself (a pool checkout would
//! cost a round trip of its own, and a batching task a hop each way).
//!
//! A completion sets `done`; it is not awaited (the event is acked without
//! waiting for it): completions are gathered for up to [`COMPLETE_DELAY`]
//! and go as one pipeline. Until it is written, a claim of that id in this
//! process answers `done` from memory, as if it had been. If it is lost, the
//! marker stays `pending`, which still stops later copies of the id, and
//! only a redelivery after a crash is fanned out again, as it would be
//! anyway.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_redis::redis;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::kept::KeptConnection;
use super::store::{Store, StoreError};

/// The event-id marker lives longer than the max event age (contract: 3 days).
pub(crate) const MARKER_TTL: Duration = Duration::from_secs(3 * 24 * 3600);

/// What the event-id marker said when claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    /// First sight: this caller fans it out.
    New,
    /// Claimed before but not finished (a crash, or a concurrent copy).
    InProgress,
    /// Fanned out already.
    Done,
}

/// Most completions sent in one pipeline.
const MAX_BATCH: usize = 256;

/// The longest a completion waits for others to go with.
const COMPLETE_DELAY: Duration = Duration::from_millis(50);

/// The longest a claim waits for Redis before the event goes on without it.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(2);

/// Handle on the markers; cheap to clone. The completion task ends when the
/// last handle is dropped.
#[derive(Clone)]
pub(crate) struct EventMarkers {
    completions: mpsc::Sender<String>,
    shared: Arc<Shared>,
}

struct Shared {
    /// The connection claims and completions use.
    conn: KeptConnection,
    /// Keys whose completion is queued but not written yet.
    completing: Mutex<HashSet<String>>,
}

impl Shared {
    fn completing(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.completing.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl EventMarkers {
    /// Spawns the completion task over `store`.
    pub(crate) fn start(store: Store) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let shared = Arc::new(Shared {
            conn: KeptConnection::new(store, CLAIM_TIMEOUT),
            completing: Mutex::new(HashSet::new()),
        });
        tokio::spawn(run(shared.clone(), rx));
        EventMarkers {
            completions: tx,
            shared,
        }
    }

    /// `{ns}:event:{app}:{id}`: the marker of event `id` of application
    /// `app`. Event ids are unique per application: two producers may both
    /// number their events. (Application ids cannot contain `:`, so keys
    /// never collide.)
    fn key(&self, app: &str, id: &str) -> String {
        event_key(self.shared.conn.store(), app, id)
    }

    /// Claims event `id` of application `app` (ids are unique per
    /// application), reporting what its marker said before.
    pub(crate) async fn claim(&self, app: &str, id: &str) -> Result<Marker, StoreError> {
        let key = self.key(app, id);
        if self.shared.completing().contains(&key) {
            return Ok(Marker::Done);
        }
        let claim = redis::cmd("SET")
            .arg(&key)
            .arg("pending")
            .arg("NX")
            .arg("GET")
            .arg("EX")
            .arg(MARKER_TTL.as_secs())
            .to_owned();
        let previous = self
            .shared
            .conn
            .run("event-id claim timed out", |mut conn| async move {
                claim.query_async(&mut conn).await
            })
            .await?;
        Ok(marker(previous))
    }

    /// Marks event `id` of `app` fanned out, without waiting; skipped if
    /// Redis is so far behind that the queue is full (the marker then stays
    /// `pending`).
    pub(crate) fn complete(&self, app: &str, id: &str) {
        let key = self.key(app, id);
        self.shared.completing().insert(key.clone());
        if let Err(e) = self.completions.try_send(key) {
            let key = match e {
                mpsc::error::TrySendError::Full(k) | mpsc::error::TrySendError::Closed(k) => k,
            };
            self.shared.completing().remove(&key);
        }
    }
}

async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<String>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // When the completions gathered so far go.
    let mut due = None;
    loop {
        let room = MAX_BATCH - batch.len();
        let closed = tokio::select! {
            n = rx.recv_many(&mut batch, room) => n == 0,
            _ = sleep_until(due) => false,
        };
        let now = Instant::now();
        if !closed && batch.len() < MAX_BATCH && due.is_none_or(|at| now < at) {
            due = due.or(Some(now + COMPLETE_DELAY));
            continue;
        }
        if !batch.is_empty() {
            flush(&shared, &batch).await;
            let mut completing = shared.completing();
            for key in batch.drain(..) {
                completing.remove(&key);
            }
        }
        due = None;
        if closed {
            return;
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes the completions of `keys` as one pipeline.
async fn flush(shared: &Shared, keys: &[String]) {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("SET")
            .arg(key)
            .arg("done")
            .arg("EX")
            .arg(MARKER_TTL.as_secs())
            .ignore();
    }
    let written = shared
        .conn
        .run("event-id completions timed out", |mut conn| async move {
            pipe.query_async::<()>(&mut conn).await
        })
        .await;
    if let Err(e) = written {
        tracing::warn!(error = %crate::logging::Chain(&e), completions = keys.len(), "event-id markers not written");
    }
}

fn event_key(store: &Store, app: &str, id: &str) -> String {
    store.key(&format!("event:{app}:{id}"))
}

fn marker(previous: Option<String>) -> Marker {
    match previous.as_deref() {
        None => Marker::New,
        Some("done") => Marker::Done,
        Some(_) => Marker::InProgress,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use deadpool_redis::redis::AsyncCommands;

    use super::*;

    /// Talks to the local Redis in a namespace of its own, and deletes the
    /// keys it wrote.
    #[tokio::test]
    async fn claims_see_completions_at_once_and_other_processes_soon() {
        let store = Store::local_for_test("markers");
        let markers = EventMarkers::start(store.clone());
        // Another replica of the service, on its own connection.
        let other = EventMarkers::start(store.clone());
        let keys = [event_key(&store, "app", "a"), event_key(&store, "app", "b")];

        assert_eq!(markers.claim("app", "a").await.unwrap(), Marker::New);
        assert_eq!(markers.claim("app", "a").await.unwrap(), Marker::InProgress);
        assert_eq!(other.claim("app", "a").await.unwrap(), Marker::InProgress);
        markers.complete("app", "a");
        // Not written yet, but this process knows.
        assert_eq!(markers.claim("app", "a").await.unwrap(), Marker::Done);

        assert_eq!(markers.claim("app", "b").await.unwrap(), Marker::New);
        markers.complete("app", "b");
        // Written soon, for every process to see.
        let mut conn = store.connection().await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let value: Option<String> = conn.get(&keys[1]).await.unwrap();
            if value.as_deref() == Some("done") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "completion of b never written: {value:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(other.claim("app", "a").await.unwrap(), Marker::Done);
        assert_eq!(other.claim("app", "b").await.unwrap(), Marker::Done);
        let ttl: i64 = conn.ttl(&keys[1]).await.unwrap();
        assert!(ttl > 0, "markers expire");
        let _: () = conn.del(&keys[..]).await.unwrap();
    }

    #[tokio::test]
    async fn a_claim_without_redis_fails_fast_instead_of_hanging() {
        // Nothing listens on port 1.
        let store = Store::connect("redis://127.0.0.1:1/0", "test-markers-down").unwrap();
        let markers = EventMarkers::start(store);
        let started = tokio::time::Instant::now();
        assert!(markers.claim("app", "a").await.is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
