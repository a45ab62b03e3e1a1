//! Event-id markers, batched: the claims of all events being fanned out at a
//! moment go to Redis as one pipeline instead of one round trip each, on a
//! connection the batching task keeps (a pool checkout costs a round trip of
//! its own).
//!
//! A claim is `SET NX GET` of `pending`; what it returns says whether the id
//! is new, in progress or done. A completion sets `done`; it is not awaited
//! (the event is acked without waiting for it) and rides along with the next
//! claims, or goes on its own after [`COMPLETE_DELAY`] when none come. If it
//! is lost, the marker stays `pending`, which still stops later copies of
//! the id, and only a redelivery after a crash is fanned out again, as it
//! would be anyway.

use std::time::Duration;

use deadpool_redis::redis;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::store::{Keys, MARKER_TTL, Marker, Store, StoreError};

/// Most operations sent in one pipeline.
const MAX_BATCH: usize = 256;

/// The longest a completion waits for claims to ride along with.
const COMPLETE_DELAY: Duration = Duration::from_millis(50);

/// Operations on marker keys (`Keys::event`).
enum Op {
    Claim(String, oneshot::Sender<Result<Marker, StoreError>>),
    Complete(String),
}

/// Handle on the batching task; cheap to clone. The task ends when the last
/// handle is dropped.
#[derive(Clone)]
pub(crate) struct EventMarkers {
    ops: mpsc::Sender<Op>,
    keys: Keys,
}

impl EventMarkers {
    /// Spawns the batching task over `store`.
    pub(crate) fn start(store: Store) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let keys = store.keys().clone();
        tokio::spawn(run(store, rx));
        EventMarkers { ops: tx, keys }
    }

    /// Claims event `id` of application `app` (ids are unique per
    /// application), reporting what its marker said before.
    pub(crate) async fn claim(&self, app: &str, id: &str) -> Result<Marker, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(Op::Claim(self.keys.event(app, id), tx))
            .await
            .map_err(|_| unavailable("event-id marker task stopped"))?;
        rx.await
            .map_err(|_| unavailable("event-id marker task stopped"))?
    }

    /// Marks event `id` of `app` fanned out, without waiting; skipped if
    /// Redis is so far behind that the queue is full (the marker then stays
    /// `pending`).
    pub(crate) fn complete(&self, app: &str, id: &str) {
        let _ = self.ops.try_send(Op::Complete(self.keys.event(app, id)));
    }
}

fn unavailable(why: &'static str) -> StoreError {
    StoreError::Redis(redis::RedisError::from((redis::ErrorKind::Io, why)))
}

async fn run(store: Store, mut rx: mpsc::Receiver<Op>) {
    let mut conn = None;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // When completions waiting for claims to ride along with go on their own.
    let mut due = None;
    loop {
        let woke = tokio::select! {
            n = rx.recv_many(&mut batch, MAX_BATCH) => match n {
                0 => Woke::Closed,
                _ => Woke::Ops,
            },
            _ = sleep_until(due) => Woke::Due,
        };
        let claims = batch.iter().any(|op| matches!(op, Op::Claim(..)));
        if woke == Woke::Ops && !claims && batch.len() < MAX_BATCH {
            // Only completions so far: give claims a moment to come.
            due = due.or(Some(Instant::now() + COMPLETE_DELAY));
            continue;
        }
        if !batch.is_empty() {
            flush(&store, &mut conn, &mut batch).await;
        }
        due = None;
        if woke == Woke::Closed {
            return;
        }
    }
}

/// Why the batching task woke.
#[derive(PartialEq, Eq)]
enum Woke {
    Ops,
    Due,
    Closed,
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sends `batch` (completions first, so a claim of the same id sees them)
/// and answers its claims.
async fn flush(store: &Store, conn: &mut Option<deadpool_redis::Connection>, batch: &mut Vec<Op>) {
    batch.sort_by_key(|op| matches!(op, Op::Claim(..)));
    match send(store, conn, batch).await {
        Ok(answers) => {
            let mut answers = answers.into_iter();
            for op in batch.drain(..) {
                if let Op::Claim(_, reply) = op {
                    let _ = reply.send(Ok(marker(answers.next().flatten())));
                }
            }
        }
        Err(e) => {
            // The connection may be broken: the next batch takes a fresh one.
            *conn = None;
            tracing::warn!(error = %crate::logging::Chain(&e), operations = batch.len(), "event-id markers not written");
            for op in batch.drain(..) {
                if let Op::Claim(_, reply) = op {
                    let _ = reply.send(Err(unavailable("event-id markers not written")));
                }
            }
        }
    }
}

/// One pipeline for `ops` on the kept connection; the answers of the
/// claims, in order.
async fn send(
    store: &Store,
    conn: &mut Option<deadpool_redis::Connection>,
    ops: &[Op],
) -> Result<Vec<Option<String>>, StoreError> {
    let mut pipe = redis::pipe();
    for op in ops {
        match op {
            Op::Claim(key, _) => {
                pipe.cmd("SET")
                    .arg(key)
                    .arg("pending")
                    .arg("NX")
                    .arg("GET")
                    .arg("EX")
                    .arg(MARKER_TTL.as_secs());
            }
            Op::Complete(key) => {
                pipe.cmd("SET")
                    .arg(key)
                    .arg("done")
                    .arg("EX")
                    .arg(MARKER_TTL.as_secs())
                    .ignore();
            }
        }
    }
    let conn = match conn {
        Some(c) => c,
        None => conn.insert(store.connection().await?),
    };
    Ok(pipe.query_async(&mut **conn).await?)
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
    async fn completions_ride_with_the_next_claims_or_go_alone_shortly() {
        let ns = format!("test-markers-{}", uuid::Uuid::new_v4().simple());
        let store = Store::connect("redis://127.0.0.1:6379/0", &ns).unwrap();
        let markers = EventMarkers::start(store.clone());
        let keys = [
            store.keys().event("app", "a"),
            store.keys().event("app", "b"),
        ];

        assert_eq!(markers.claim("app", "a").await.unwrap(), Marker::New);
        assert_eq!(markers.claim("app", "a").await.unwrap(), Marker::InProgress);
        markers.complete("app", "a");
        // The completion goes ahead of the claim that carries it.
        assert_eq!(markers.claim("app", "a").await.unwrap(), Marker::Done);

        assert_eq!(markers.claim("app", "b").await.unwrap(), Marker::New);
        markers.complete("app", "b");
        // No claim follows: the completion goes on its own, soon.
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
        let ttl: i64 = conn.ttl(&keys[1]).await.unwrap();
        assert!(ttl > 0, "markers expire");
        let _: () = conn.del(&keys[..]).await.unwrap();
    }
}
