//! One multiplexed Redis connection kept for the hot paths (event-id claims,
//! ordering): redis-rs pipelines the requests of concurrent callers on it by
//! itself, where a pool checkout would cost a round trip of its own. Dropped
//! on the first error or timeout, so the next call connects afresh.

use std::time::Duration;

use deadpool_redis::redis;
use deadpool_redis::redis::aio::MultiplexedConnection;

use super::store::{Store, StoreError};

/// The kept connection of one user.
pub(crate) struct KeptConnection {
    store: Store,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// The longest one call waits for Redis.
    timeout: Duration,
}

impl KeptConnection {
    /// Connects lazily through `store`'s pool; calls give up after `timeout`.
    pub(crate) fn new(store: Store, timeout: Duration) -> Self {
        KeptConnection {
            store,
            conn: tokio::sync::Mutex::new(None),
            timeout,
        }
    }

    /// The store it connects through.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut kept = self.conn.lock().await;
        if let Some(conn) = kept.as_ref() {
            return Ok(conn.clone());
        }
        let conn = super::redis_pool::Pooled::take(self.store.connection().await?);
        Ok(kept.insert(conn).clone())
    }

    async fn forget(&self) {
        *self.conn.lock().await = None;
    }

    /// Runs `call` on the connection within the timeout (`what` names it in
    /// the error); any failure drops the connection.
    pub(crate) async fn run<T, F, Fut>(&self, what: &'static str, call: F) -> Result<T, StoreError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let answer = async {
            let conn = self.connection().await?;
            match tokio::time::timeout(self.timeout, call(conn)).await {
                Ok(answer) => answer.map_err(StoreError::from),
                Err(_) => Err(unavailable(what)),
            }
        };
        let answer = answer.await;
        if answer.is_err() {
            self.forget().await;
        }
        answer
    }
}

/// A Redis call that did not answer in time.
pub(crate) fn unavailable(what: &'static str) -> StoreError {
    StoreError::Redis(redis::RedisError::from((redis::ErrorKind::Io, what)))
}
