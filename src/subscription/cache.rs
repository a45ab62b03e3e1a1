//! In-process cache of each application's webhooks. Entries are dropped when
//! any process announces a change on `{ns}:changes`; while that subscription
//! is down, entries expire after a second so changes still land quickly.
//! Webhooks' filters are compiled once per filter text and kept here too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use deadpool_redis::redis;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::store::{Store, StoreError};
use super::webhook::Webhook;
use crate::filter::Filter;
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
    filters: RwLock<HashMap<String, Compiled>>,
}

/// A webhook's filter as compiled: its application, its text, and the
/// program (none if the text does not compile: a record not written
/// through the API).
struct Compiled {
    app: String,
    source: String,
    filter: Option<Arc<Filter>>,
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
            filters: RwLock::new(HashMap::new()),
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
                self.forget_filters(app, &webhooks);
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

    /// `hook`'s compiled filter: none if it has none; `Some(None)` if its
    /// text does not compile. Compiled once per text, then from memory.
    pub(crate) fn filter(&self, hook: &Webhook) -> Option<Option<Arc<Filter>>> {
        let source = hook.filter.as_deref()?;
        {
            let filters = self.filters.read().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = filters.get(&hook.id).filter(|c| c.source == source) {
                return Some(c.filter.clone());
            }
        }
        let filter = match Filter::compile(source) {
            Ok(f) => Some(Arc::new(f)),
            Err(e) => {
                tracing::warn!(webhook_id = %hook.id, error = %e, "a stored filter does not compile; the webhook gets no events until it is fixed");
                None
            }
        };
        let compiled = Compiled {
            app: hook.application_id.clone(),
            source: source.to_string(),
            filter: filter.clone(),
        };
        let mut filters = self.filters.write().unwrap_or_else(|e| e.into_inner());
        filters.insert(hook.id.clone(), compiled);
        Some(filter)
    }

    /// Drops the compiled filters of `app`'s webhooks that are gone or
    /// have none now.
    fn forget_filters(&self, app: &str, webhooks: &[Webhook]) {
        let kept = |id: &str, c: &Compiled| {
            c.app != app || webhooks.iter().any(|w| w.id == id && w.filter.is_some())
        };
        let stale = {
            let filters = self.filters.read().unwrap_or_else(|e| e.into_inner());
            filters.iter().any(|(id, c)| !kept(id, c))
        };
        if stale {
            let mut filters = self.filters.write().unwrap_or_else(|e| e.into_inner());
            filters.retain(|id, c| kept(id, c));
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
