//! In-process cache of each application's webhooks. Entries are dropped when
//! any process announces a change on `{ns}:changes`; while that subscription
//! is down, entries expire after a second so changes still land quickly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use deadpool_redis::redis;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::store::{Store, StoreError};
use super::webhook::Webhook;
use crate::metrics::Metrics;

/// A safety net should an invalidation message be lost.
const TTL_LISTENING: Duration = Duration::from_secs(30);
/// Without the change feed, changes must still be seen within a second.
const TTL_DEAF: Duration = Duration::from_millis(900);

struct Entry {
    webhooks: Arc<[Webhook]>,
    fetched: Instant,
}

/// Read-through cache over `Store::list`, shared by ingest and delivery.
pub(crate) struct SubscriptionCache {
    store: Store,
    metrics: Arc<Metrics>,
    entries: RwLock<HashMap<String, Entry>>,
    // Bumped on every invalidation so a fetch racing with one is not cached.
    epoch: AtomicU64,
    listening: AtomicBool,
}

impl SubscriptionCache {
    /// An empty cache over `store`.
    pub(crate) fn new(store: Store, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(SubscriptionCache {
            store,
            metrics,
            entries: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            listening: AtomicBool::new(false),
        })
    }

    /// The application's webhooks, from memory when fresh. If Redis fails, a
    /// stale copy is served rather than stopping deliveries.
    pub(crate) async fn webhooks(&self, app: &str) -> Result<Arc<[Webhook]>, StoreError> {
        if let Some(hit) = self.fresh(app) {
            self.metrics.cache_lookup("hit");
            return Ok(hit);
        }
        self.metrics.cache_lookup("miss");
        let epoch = self.epoch.load(Ordering::Acquire);
        // Boxed: the Redis call's future is kilobytes, and every caller's
        // task would otherwise carry (and move) it even when the cache hits.
        match Box::pin(self.store.list(app)).await {
            Ok(list) => {
                let webhooks: Arc<[Webhook]> = list.into();
                if self.epoch.load(Ordering::Acquire) == epoch {
                    let entry = Entry {
                        webhooks: webhooks.clone(),
                        fetched: Instant::now(),
                    };
                    self.write().insert(app.to_string(), entry);
                }
                Ok(webhooks)
            }
            Err(e) => self.stale(app).ok_or(e),
        }
    }

    /// Drops `app`'s entry (a change was announced).
    pub(crate) fn invalidate(&self, app: &str) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.write().remove(app);
    }

    fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.write().clear();
    }

    fn fresh(&self, app: &str) -> Option<Arc<[Webhook]>> {
        let ttl = if self.listening.load(Ordering::Acquire) {
            TTL_LISTENING
        } else {
            TTL_DEAF
        };
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(app)?;
        (entry.fetched.elapsed() < ttl).then(|| entry.webhooks.clone())
    }

    fn stale(&self, app: &str) -> Option<Arc<[Webhook]>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(app).map(|e| e.webhooks.clone())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows `{ns}:changes` until `token` is cancelled, resubscribing with
    /// backoff; the whole cache is dropped on each (re)subscribe since
    /// announcements may have been missed meanwhile.
    pub(crate) async fn follow_changes(self: Arc<Self>, token: CancellationToken) {
        let channel = self.store.keys().changes();
        let mut backoff = crate::backoff::Backoff::default();
        while !token.is_cancelled() {
            let subscribed = tokio::select! {
                _ = token.cancelled() => break,
                r = tokio::time::timeout(Duration::from_secs(5), self.subscribe(&channel)) => {
                    r.unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "subscribe timed out"))))
                }
            };
            match subscribed {
                Ok(mut pubsub) => {
                    backoff.reset();
                    self.clear();
                    self.listening.store(true, Ordering::Release);
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            _ = token.cancelled() => break,
                            msg = messages.next() => match msg {
                                Some(msg) => match msg.get_payload::<String>() {
                                    Ok(app) => self.invalidate(&app),
                                    Err(_) => self.clear(),
                                },
                                None => break,
                            },
                        }
                    }
                    self.listening.store(false, Ordering::Release);
                    if !token.is_cancelled() {
                        tracing::warn!("subscription change feed lost; resubscribing");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %crate::logging::Chain(&e), "cannot follow subscription changes")
                }
            }
            tokio::select! {
                _ = token.cancelled() => {}
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    async fn subscribe(&self, channel: &str) -> redis::RedisResult<redis::aio::PubSub> {
        let mut pubsub = self.store.pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok(pubsub)
    }
}
