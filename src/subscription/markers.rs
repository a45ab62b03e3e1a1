//! Event-id markers, batched: the claims of all events being fanned out at a
//! moment, and the completions of those just finished, go to Redis as one
//! pipeline instead of one round trip each.
//!
//! A claim is `SET NX GET` of `pending`; what it returns says whether the id
//! is new, in progress or done. A completion sets `done`; it is not awaited
//! (the event is acked without waiting for it): if it is lost, the marker
//! stays `pending`, which still stops later copies of the id, and only a
//! redelivery after a crash is fanned out again, as it would be anyway.

use deadpool_redis::redis;
use tokio::sync::{mpsc, oneshot};

use super::store::{Keys, MARKER_TTL, Marker, Store, StoreError};

/// Most operations sent in one pipeline.
const MAX_BATCH: usize = 256;

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
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match send(&store, &batch).await {
            Ok(answers) => {
                let mut answers = answers.into_iter();
                for op in batch.drain(..) {
                    if let Op::Claim(_, reply) = op {
                        let _ = reply.send(Ok(marker(answers.next().flatten())));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %crate::logging::Chain(&e), operations = batch.len(), "event-id markers not written");
                for op in batch.drain(..) {
                    if let Op::Claim(_, reply) = op {
                        let _ = reply.send(Err(unavailable("event-id markers not written")));
                    }
                }
            }
        }
    }
}

/// One pipeline for `ops`; the answers of the claims, in order.
async fn send(store: &Store, ops: &[Op]) -> Result<Vec<Option<String>>, StoreError> {
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
    let mut conn = store.connection().await?;
    Ok(pipe.query_async(&mut conn).await?)
}

fn marker(previous: Option<String>) -> Marker {
    match previous.as_deref() {
        None => Marker::New,
        Some("done") => Marker::Done,
        Some(_) => Marker::InProgress,
    }
}
