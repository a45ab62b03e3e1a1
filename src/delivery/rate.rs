//! Rate limits per webhook (`rate_limit`), for every process of the
//! namespace together: a GCRA in Redis, one script call per request. The
//! script keeps, per webhook, the theoretical arrival time of the next
//! request on Redis's own clock, so processes on other machines agree; each
//! request is let through at most one interval (`per` ÷ `requests`) after
//! the previous one, so any window of length `per` sees at most `requests`
//! + 1 of them.

use std::time::Duration;

use deadpool_redis::redis::Script;

use crate::subscription::{RateLimit, Store};

/// Takes the next request of a webhook: 0 and the slot is taken, or how
/// many ms to wait before asking again. KEYS: the webhook's key; ARGV: the
/// interval (µs).
const TAKE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if tat > now then return math.ceil((tat - now) / 1000) end
redis.call('SET', KEYS[1], tat + interval, 'PX', math.ceil(interval / 1000) + 1000)
return 0
"#;

/// The rate limits of one namespace's webhooks.
pub(crate) struct Rates {
    store: Store,
    ns: String,
    take: Script,
}

impl Rates {
    /// The rate limits of namespace `ns`, kept in `store`'s Redis.
    pub(crate) fn new(store: Store, ns: &str) -> Self {
        Rates {
            store,
            ns: ns.to_string(),
            take: Script::new(TAKE),
        }
    }

    /// Waits until webhook `id` may send one more request under `limit`;
    /// true when it had to wait. Without Redis, the request waits one
    /// interval (what the limit allows per request) and goes: deliveries go
    /// on during a Redis outage, spread out as the limit asks, each process
    /// for itself.
    pub(crate) async fn take(&self, app: &str, id: &str, limit: RateLimit) -> bool {
        let interval = limit.interval();
        let key = format!("{}:rate:{app}:{id}", self.ns);
        let mut waited = false;
        loop {
            match self.ask(&key, interval).await {
                Ok(0) => return waited,
                Ok(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                Err(e) => {
                    tracing::debug!(error = %crate::logging::Chain(&e), "rate limit unreadable; spacing requests in process");
                    tokio::time::sleep(interval).await;
                    return true;
                }
            }
            waited = true;
        }
    }

    async fn ask(
        &self,
        key: &str,
        interval: Duration,
    ) -> Result<u64, crate::subscription::StoreError> {
        let mut conn = self.store.connection().await?;
        let wait: u64 = self
            .take
            .key(key)
            .arg(interval.as_micros() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(crate::subscription::StoreError::from)?;
        Ok(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscription::rate_limit::Per;

    /// Against the local Redis, on a namespace of its own: 20 requests at
    /// 10 per second, asked by four callers at once, go out evenly, about
    /// 100 ms apart.
    #[tokio::test]
    async fn requests_are_spread_evenly_however_many_ask_at_once() {
        let ns = format!("test-rate-{}", uuid::Uuid::new_v4().simple());
        let url =
            std::env::var("WF_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
        let store = Store::connect(&url, &ns).unwrap();
        let rates = std::sync::Arc::new(Rates::new(store.clone(), &ns));
        let limit = RateLimit {
            requests: 10,
            per: Per::Second,
        };
        let start = std::time::Instant::now();
        let callers: Vec<_> = (0..4)
            .map(|_| {
                let rates = rates.clone();
                tokio::spawn(async move {
                    let mut at = Vec::new();
                    for _ in 0..5 {
                        rates.take("app", "wh_1", limit).await;
                        at.push(start.elapsed());
                    }
                    at
                })
            })
            .collect();
        let mut all: Vec<Duration> = Vec::new();
        for c in callers {
            all.extend(c.await.unwrap());
        }
        all.sort();
        store.delete_namespace().await.unwrap();
        // 20 requests, one per 100 ms: the last no sooner than 1.9 s, and
        // no window of 1 s holds more than 10 + 1.
        assert!(all[19] >= Duration::from_millis(1850), "{all:?}");
        for (i, t) in all.iter().enumerate() {
            let within = all[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(1))
                .count();
            assert!(within <= 11, "{within} requests within 1 s from {t:?}");
        }
    }
}
