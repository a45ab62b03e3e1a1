//! The dead letters an operator resolved (replayed or discarded): a Redis
//! sorted set `{ns}:dead:settled` of ids scored by when, which listings
//! subtract from the stream. (The key keeps its first name so that
//! deployments upgrading keep their record; in code the word is *resolve*,
//! *settle* being the AMQP ack.)

use std::collections::HashSet;
use std::time::Duration;

use deadpool_redis::redis::AsyncCommands;

use crate::subscription::{Store, StoreError};

/// The namespace's record of resolved dead letters.
#[derive(Clone)]
pub(crate) struct Resolved {
    store: Store,
    key: String,
}

impl Resolved {
    pub(crate) fn new(store: Store) -> Resolved {
        let key = store.key("dead:settled");
        Resolved { store, key }
    }

    /// Records `id` as resolved at `now_ms`; entries older than `keep` are
    /// trimmed (their dead letters have expired from the stream). True if
    /// `id` was not recorded yet.
    pub(crate) async fn record(
        &self,
        id: &str,
        now_ms: i64,
        keep: Duration,
    ) -> Result<bool, StoreError> {
        let mut conn = self.store.connection().await?;
        let added: i64 = conn.zadd(&self.key, id, now_ms).await?;
        let horizon = now_ms - keep.as_millis() as i64;
        let _: i64 = conn.zrembyscore(&self.key, "-inf", horizon).await?;
        Ok(added == 1)
    }

    /// Every resolved id.
    pub(crate) async fn all(&self) -> Result<HashSet<String>, StoreError> {
        let mut conn = self.store.connection().await?;
        let ids: Vec<String> = conn.zrange(&self.key, 0, -1).await?;
        Ok(ids.into_iter().collect())
    }

    /// How many ids are recorded.
    pub(crate) async fn count(&self) -> Result<u64, StoreError> {
        let mut conn = self.store.connection().await?;
        Ok(conn.zcard(&self.key).await?)
    }

    /// Whether `id` was resolved.
    pub(crate) async fn contains(&self, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.store.connection().await?;
        let score: Option<f64> = conn.zscore(&self.key, id).await?;
        Ok(score.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolved_ids_are_recorded_once_and_trimmed_past_keep() {
        // The local Redis, in a namespace of its own deleted at the end.
        let store = Store::local_for_test("resolved");
        let resolved = Resolved::new(store.clone());
        let day = Duration::from_secs(86_400);
        assert!(resolved.record("dl_1", 1_000, day).await.unwrap());
        assert!(
            !resolved.record("dl_1", 2_000, day).await.unwrap(),
            "twice is once"
        );
        assert!(resolved.record("dl_2", 3_000, day).await.unwrap());
        assert!(resolved.contains("dl_1").await.unwrap());
        assert!(!resolved.contains("dl_3").await.unwrap());
        assert_eq!(resolved.count().await.unwrap(), 2);
        // A day later dl_1 (last recorded at 2,000) and dl_2 fall out.
        let later = 3_001 + day.as_millis() as i64;
        assert!(resolved.record("dl_4", later, day).await.unwrap());
        let all = resolved.all().await.unwrap();
        assert_eq!(all, HashSet::from(["dl_4".to_string()]));
        store.delete_namespace().await.unwrap();
    }
}
