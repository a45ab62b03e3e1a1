//! Which webhooks have a backlog queue, in Redis, shared by every process of
//! the namespace: the delivery side of each process drains every backlog it
//! finds here. Each entry holds when a process last published to or held
//! jobs of that backlog, so an idle one can be deleted safely.

use std::time::Duration;

use deadpool_redis::redis::{self, Script};

use crate::subscription::{Store, StoreError};

/// Forgets webhook ARGV[1]'s backlog if nobody has touched it since
/// ARGV[2] (ms): 1 if forgotten. KEYS: the registry, the depths.
const FORGET_IF_IDLE: &str = r#"
local seen = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if seen > tonumber(ARGV[2]) then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"#;

/// The namespace's backlog registry.
#[derive(Clone)]
pub(crate) struct Registry {
    store: Store,
    key: String,
    depth_key: String,
}

impl Registry {
    /// The registry of namespace `ns`, in `store`'s Redis.
    pub(crate) fn new(store: Store, ns: &str) -> Self {
        Registry {
            store,
            key: format!("{ns}:backlogs"),
            depth_key: format!("{ns}:backlog-depths"),
        }
    }

    /// Webhooks `ids` have a backlog queue, touched now.
    pub(crate) async fn touch(&self, ids: &[&str]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = crate::clock::unix_millis();
        let mut cmd = redis::cmd("HSET");
        cmd.arg(&self.key);
        for id in ids {
            cmd.arg(*id).arg(now);
        }
        let mut conn = self.store.connection().await?;
        let _: i64 = cmd.query_async(&mut conn).await?;
        Ok(())
    }

    /// Every webhook with a backlog queue.
    pub(crate) async fn all(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.store.connection().await?;
        Ok(redis::cmd("HKEYS")
            .arg(&self.key)
            .query_async(&mut conn)
            .await?)
    }

    /// Whether no process touched webhook `id`'s backlog for `idle` (true
    /// too when it is not registered).
    pub(crate) async fn untouched_for(&self, id: &str, idle: Duration) -> Result<bool, StoreError> {
        let before = crate::clock::unix_millis() - idle.as_millis() as i64;
        let mut conn = self.store.connection().await?;
        let seen: Option<i64> = redis::cmd("HGET")
            .arg(&self.key)
            .arg(id)
            .query_async(&mut conn)
            .await?;
        Ok(seen.is_none_or(|at| at <= before))
    }

    /// Forgets webhook `id`'s backlog if no process touched it for `idle`;
    /// true if forgotten.
    pub(crate) async fn forget_if_idle(
        &self,
        id: &str,
        idle: Duration,
    ) -> Result<bool, StoreError> {
        let before = crate::clock::unix_millis() - idle.as_millis() as i64;
        let mut conn = self.store.connection().await?;
        let forgotten: i64 = Script::new(FORGET_IF_IDLE)
            .key(&self.key)
            .key(&self.depth_key)
            .arg(id)
            .arg(before)
            .invoke_async(&mut conn)
            .await?;
        Ok(forgotten == 1)
    }

    /// Records how many jobs wait in each backlog (read from the broker).
    pub(crate) async fn set_depths(&self, depths: &[(String, u32)]) -> Result<(), StoreError> {
        if depths.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(&self.depth_key);
        for (id, n) in depths {
            cmd.arg(id).arg(*n);
        }
        let mut conn = self.store.connection().await?;
        let _: i64 = cmd.query_async(&mut conn).await?;
        Ok(())
    }

    /// Jobs waiting in webhook `id`'s backlog when last counted (0 without one).
    pub(crate) async fn depth(&self, id: &str) -> Result<u64, StoreError> {
        let mut conn = self.store.connection().await?;
        let n: Option<u64> = redis::cmd("HGET")
            .arg(&self.depth_key)
            .arg(id)
            .query_async(&mut conn)
            .await?;
        Ok(n.unwrap_or(0))
    }
}

/// Deletes every backlog queue namespace `ns` has registered, with the
/// jobs in them (tests and benchmarks delete their namespace with this,
/// before its Redis keys); returns how many.
pub async fn delete_backlogs(
    conn: &lapin::Connection,
    store: &Store,
    ns: &str,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let registry = Registry::new(store.clone(), ns);
    let names = crate::broker::Names::new(ns);
    // The registry's, and every webhook's of the namespace: a backlog
    // whose entry was lost (Redis keys deleted) is deleted too.
    let mut ids = registry.all().await?;
    for line in store.export(None).await? {
        let record: serde_json::Value = serde_json::from_str(&line)?;
        if let Some(id) = record["id"].as_str() {
            ids.push(id.to_string());
        }
    }
    ids.sort();
    ids.dedup();
    let ch = conn.create_channel().await?;
    for id in &ids {
        let options = lapin::options::QueueDeleteOptions::default();
        ch.queue_delete(names.backlog(id).as_str().into(), options)
            .await?;
    }
    crate::broker::close_channel(&ch, "deleted").await;
    Ok(ids.len())
}
