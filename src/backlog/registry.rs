//! Which webhooks have a backlog queue, in Redis, shared by every process of
//! the namespace: the delivery side of each process drains every backlog it
//! finds here. Each entry holds when a process last published to or held
//! jobs of that backlog, so an idle one can be deleted safely.

use std::time::Duration;

use deadpool_redis::redis::{self, Script};

use crate::subscription::{Store, StoreError};

/// Forgets webhook ARGV[1]'s backlog if nobody has touched (or claimed) it
/// since ARGV[2] (ms): 1 if forgotten. KEYS: the registry, the depths.
const FORGET_IF_IDLE: &str = r#"
local seen = math.abs(tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0'))
if seen > tonumber(ARGV[2]) then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"#;

/// Marks webhooks ARGV[3..] touched at ARGV[1] (ms), except those a
/// process is deleting (a negative entry: a claim made after ARGV[2]);
/// returns how many of those were left as they are. KEYS: the registry.
const TOUCH: &str = r#"
local blocked = 0
for i = 3, #ARGV do
  local v = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if v < 0 and -v > tonumber(ARGV[2]) then
    blocked = blocked + 1
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[1])
  end
end
return blocked
"#;

/// Claims webhook ARGV[1]'s backlog for deletion if nobody touched it
/// since ARGV[2] (ms): its entry becomes -ARGV[3] (the claim). 1 if
/// claimed. KEYS: the registry.
const CLAIM: &str = r#"
local v = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if v <= 0 or v > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], -tonumber(ARGV[3]))
return 1
"#;

/// Ends claim ARGV[2] on webhook ARGV[1]'s backlog: with ARGV[3] = 'forget'
/// the entry goes (the queue was deleted), else it is touched at ARGV[3]
/// (the queue was kept). Only while the claim is still the entry.
/// KEYS: the registry, the depths.
const UNCLAIM: &str = r#"
local v = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if v ~= -tonumber(ARGV[2]) then return 0 end
if ARGV[3] == 'forget' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
return 1
"#;

/// How long a claim for deletion keeps routers away: a deleter that did not
/// finish within it (it bounds its broker calls well under it) is taken
/// to have died, and the backlog is used again.
pub(crate) const CLAIM_FOR: Duration = Duration::from_secs(10);

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

    /// Webhooks `ids` have a backlog queue, touched now; returns how many
    /// of them a process is deleting right now (left untouched: wait and
    /// touch again, the queue will be gone).
    pub(crate) async fn touch(&self, ids: &[&str]) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let now = crate::clock::unix_millis();
        let stale_before = now - CLAIM_FOR.as_millis() as i64;
        let touch = Script::new(TOUCH);
        let mut script = touch.prepare_invoke();
        script.key(&self.key).arg(now).arg(stale_before);
        for id in ids {
            script.arg(*id);
        }
        let mut conn = self.store.connection().await?;
        let blocked: i64 = script.invoke_async(&mut conn).await?;
        Ok(blocked as usize)
    }

    /// Claims webhook `id`'s backlog for deletion if no process touched it
    /// for `idle`: routers then wait (see [`Registry::touch`]) until the
    /// claim ends. The claim's value if claimed.
    pub(crate) async fn claim(&self, id: &str, idle: Duration) -> Result<Option<i64>, StoreError> {
        let now = crate::clock::unix_millis();
        let before = now - idle.as_millis() as i64;
        let mut conn = self.store.connection().await?;
        let claimed: i64 = Script::new(CLAIM)
            .key(&self.key)
            .arg(id)
            .arg(before)
            .arg(now)
            .invoke_async(&mut conn)
            .await?;
        Ok((claimed == 1).then_some(now))
    }

    /// Ends `claim` on webhook `id`'s backlog: forgotten if `deleted`, else
    /// touched now.
    pub(crate) async fn unclaim(
        &self,
        id: &str,
        claim: i64,
        deleted: bool,
    ) -> Result<(), StoreError> {
        let then = match deleted {
            true => "forget".to_string(),
            false => crate::clock::unix_millis().to_string(),
        };
        let mut conn = self.store.connection().await?;
        let _: i64 = Script::new(UNCLAIM)
            .key(&self.key)
            .key(&self.depth_key)
            .arg(id)
            .arg(claim)
            .arg(then)
            .invoke_async(&mut conn)
            .await?;
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
