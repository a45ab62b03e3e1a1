//! The Redis store of webhooks (one hash per application); the other
//! features keep their own keys beside their code
//! (under the same `{ns}:` prefix, through [`Store::key`]). Every write publishes the application id on
//! `{ns}:changes` so every process's cache drops its copy.

use super::redis_pool::{PoolSetupError, Pooled, RedisPool};
use deadpool_redis::redis::{self, AsyncCommands, Script};

use super::cipher::SecretCipher;
use super::webhook::Webhook;

/// Redis key names, all under `{ns}:`.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    ns: String,
}

impl Keys {
    /// Keys of namespace `ns`.
    pub(crate) fn new(ns: &str) -> Self {
        Keys { ns: ns.to_string() }
    }
    /// Hash of an application's webhooks: id -> JSON record.
    pub(crate) fn webhooks(&self, app: &str) -> String {
        format!("{}:webhooks:{app}", self.ns)
    }
    /// Pub/sub channel announcing changed applications.
    pub(crate) fn changes(&self) -> String {
        format!("{}:changes", self.ns)
    }
    /// `{ns}:<rest>`: a key of a feature that keeps its own state.
    pub(crate) fn namespaced(&self, rest: &str) -> String {
        format!("{}:{rest}", self.ns)
    }
    /// Glob matching every key of the namespace.
    pub(crate) fn pattern(&self) -> String {
        format!("{}:*", self.ns)
    }
}

/// Store failures callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis is unreachable or answered with an error.
    #[error("redis unavailable")]
    Redis(#[from] redis::RedisError),
    /// No connection could be had from the pool.
    #[error("redis unavailable")]
    Pool(#[from] deadpool_redis::PoolError),
    /// A stored record does not parse.
    #[error("corrupt record in redis")]
    Corrupt(#[from] serde_json::Error),
    /// A stored secret cannot be decrypted (missing or wrong `WF_SECRET_KEY`).
    #[error("stored secret unreadable")]
    Secret(#[from] super::cipher::CipherError),
    /// The application already has the maximum number of webhooks.
    #[error("webhook limit reached")]
    LimitReached,
    /// An imported record fails a check the API makes (its filter or
    /// headers); the message names the field.
    #[error("{0}")]
    Invalid(String),
}

/// Handle on the namespace's Redis data; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: RedisPool,
    keys: Keys,
    cipher: SecretCipher,
}

// Store a record: replace the webhook with its id, or add it while the
// application is under the limit (a create's id is new, so it only adds).
const PUT: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1"#;

// Compare-and-set: written only if the stored record still has the revision
// the caller read (ARGV[5]); records from before revisions existed are 0.
const UPDATE: &str = r#"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
if tonumber(cjson.decode(current)['revision'] or 0) ~= tonumber(ARGV[5]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1"#;

// Delete, if ARGV[3] is not empty only at that revision.
const DELETE: &str = r#"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
if ARGV[3] ~= '' and tonumber(cjson.decode(current)['revision'] or 0) ~= tonumber(ARGV[3]) then
  return -1
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[4])
return 1"#;

/// How a compare-and-set write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Written.
    Done,
    /// The webhook no longer exists.
    Missing,
    /// Another write came first: the stored revision is not the one read.
    Conflict,
}

impl Write {
    fn from_script(answer: i32) -> Write {
        match answer {
            1 => Write::Done,
            0 => Write::Missing,
            _ => Write::Conflict,
        }
    }
}

impl Store {
    /// Connects lazily to `url`; calls fail fast (2 s) while Redis is down.
    pub fn connect(url: &str, namespace: &str) -> Result<Self, PoolSetupError> {
        Ok(Store {
            pool: RedisPool::direct(url)?,
            keys: Keys::new(namespace),
            cipher: SecretCipher::new(None),
        })
    }

    /// The store of `settings`' Redis (its URL, or the primary its
    /// Sentinels name) and namespace, sealing secrets with `WF_SECRET_KEY`
    /// when it is set.
    pub fn for_settings(settings: &crate::Settings) -> Result<Self, PoolSetupError> {
        let key = settings.secret_key.as_ref().map(|k| &k.0);
        let url = &settings.redis_url.0;
        let pool = match &settings.redis_sentinel {
            Some(sentinel) => RedisPool::sentinel(sentinel, url)?,
            None => RedisPool::direct(url)?,
        };
        Ok(Store {
            pool,
            keys: Keys::new(&settings.namespace),
            cipher: SecretCipher::new(key),
        })
    }

    /// A pub/sub connection to the current primary (the change feed).
    pub(crate) async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        self.pool.pubsub().await
    }

    fn encode(&self, hook: &Webhook) -> Result<String, StoreError> {
        let mut sealed = hook.clone();
        for field in sealed.sealed_fields() {
            *field = self.cipher.seal(field);
        }
        Ok(serde_json::to_string(&sealed)?)
    }

    fn decode(&self, raw: &str) -> Result<Webhook, StoreError> {
        let mut hook: Webhook = serde_json::from_str(raw)?;
        for field in hook.sealed_fields() {
            *field = self.cipher.open(field)?;
        }
        Ok(hook)
    }

    /// `{ns}:<rest>`, for the features that keep their own keys.
    pub(crate) fn key(&self, rest: &str) -> String {
        self.keys.namespaced(rest)
    }

    /// The key names in use.
    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Whether Redis answers a PING.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// Whether Redis persists its data (`appendonly` on, or a `save`
    /// schedule); `None` when it does not say (CONFIG is often disabled on
    /// managed Redis, which persists anyway).
    pub(crate) async fn persists(&self) -> Result<Option<bool>, StoreError> {
        let mut conn = self.pool.get().await?;
        let config = |name: &'static str| redis::cmd("CONFIG").arg("GET").arg(name).clone();
        let appendonly: redis::RedisResult<Vec<String>> =
            config("appendonly").query_async(&mut conn).await;
        let save: redis::RedisResult<Vec<String>> = config("save").query_async(&mut conn).await;
        Ok(match (appendonly, save) {
            (Ok(a), Ok(s)) => {
                let aof = a.get(1).is_some_and(|v| v == "yes");
                let rdb = s.get(1).is_some_and(|v| !v.trim().is_empty());
                Some(aof || rdb)
            }
            _ => None,
        })
    }

    /// Every webhook of `app`, oldest first.
    pub async fn list(&self, app: &str) -> Result<Vec<Webhook>, StoreError> {
        let mut conn = self.pool.get().await?;
        let raw: Vec<String> = conn.hvals(self.keys.webhooks(app)).await?;
        let mut hooks = raw
            .iter()
            .map(|r| self.decode(r))
            .collect::<Result<Vec<Webhook>, _>>()?;
        hooks.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(hooks)
    }

    /// One webhook of `app`.
    pub async fn get(&self, app: &str, id: &str) -> Result<Option<Webhook>, StoreError> {
        let mut conn = self.pool.get().await?;
        let raw: Option<String> = conn.hget(self.keys.webhooks(app), id).await?;
        raw.map(|r| self.decode(&r)).transpose()
    }

    /// Adds a webhook unless the application already has `limit`.
    pub async fn create(&self, hook: &Webhook, limit: usize) -> Result<(), StoreError> {
        self.put(hook, &self.encode(hook)?, limit).await
    }

    /// Stores `record` (the stored form of `hook`) with the `PUT` script.
    async fn put(&self, hook: &Webhook, record: &str, limit: usize) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        let stored: i32 = Script::new(PUT)
            .key(self.keys.webhooks(&hook.application_id))
            .arg(&hook.id)
            .arg(record)
            .arg(limit)
            .arg(self.keys.changes())
            .arg(&hook.application_id)
            .invoke_async(&mut conn)
            .await?;
        match stored {
            1 => Ok(()),
            _ => Err(StoreError::LimitReached),
        }
    }

    /// Replaces webhook `hook` if its stored revision is still the one it
    /// was read at (`hook.revision`), storing it as the next revision.
    /// Concurrent writers (a PATCH and a rotation, say) never overwrite each
    /// other: the later one gets `Conflict`, reads again and reapplies.
    pub async fn update(&self, hook: &Webhook) -> Result<Write, StoreError> {
        let read_at = hook.revision;
        let mut next = hook.clone();
        next.revision = read_at + 1;
        let mut conn = self.pool.get().await?;
        let answer: i32 = Script::new(UPDATE)
            .key(self.keys.webhooks(&hook.application_id))
            .arg(&hook.id)
            .arg(self.encode(&next)?)
            .arg(self.keys.changes())
            .arg(&hook.application_id)
            .arg(read_at)
            .invoke_async(&mut conn)
            .await?;
        Ok(Write::from_script(answer))
    }

    /// Reads webhook `id` of `app`, lets `change` change it and writes it
    /// back, compare-and-set, reading again after a conflict. The webhook as
    /// written, or `None` when it is missing or `change` changed nothing.
    pub(crate) async fn modify(
        &self,
        app: &str,
        id: &str,
        mut change: impl FnMut(&mut Webhook) -> bool,
    ) -> Result<Option<Webhook>, StoreError> {
        loop {
            let Some(mut hook) = self.get(app, id).await? else {
                return Ok(None);
            };
            if !change(&mut hook) {
                return Ok(None);
            }
            match self.update(&hook).await? {
                Write::Done => {
                    hook.revision += 1;
                    return Ok(Some(hook));
                }
                Write::Missing => return Ok(None),
                Write::Conflict => continue,
            }
        }
    }

    /// Deletes a webhook, only at `revision` when one is given.
    pub async fn delete(
        &self,
        app: &str,
        id: &str,
        revision: Option<u64>,
    ) -> Result<Write, StoreError> {
        let mut conn = self.pool.get().await?;
        let answer: i32 = Script::new(DELETE)
            .key(self.keys.webhooks(app))
            .arg(id)
            .arg(self.keys.changes())
            .arg(revision.map(|r| r.to_string()).unwrap_or_default())
            .arg(app)
            .invoke_async(&mut conn)
            .await?;
        Ok(Write::from_script(answer))
    }

    /// Every stored webhook record, of `app` or of every application, as
    /// stored: JSON with its secrets still sealed (`WF_SECRET_KEY`), for
    /// `webhook-fanout webhooks export`.
    pub async fn export(&self, app: Option<&str>) -> Result<Vec<String>, StoreError> {
        let mut conn = self.pool.get().await?;
        let keys: Vec<String> = match app {
            Some(app) => vec![self.keys.webhooks(app)],
            None => {
                let pattern = self.keys.webhooks("*");
                let mut iter = conn.scan_match::<_, String>(pattern).await?;
                let mut keys = Vec::new();
                while let Some(k) = futures_util::StreamExt::next(&mut iter).await {
                    keys.push(k?);
                }
                keys.sort();
                keys
            }
        };
        let mut conn = self.pool.get().await?;
        let mut records = Vec::new();
        for key in keys {
            let mut raw: Vec<String> = conn.hvals(key).await?;
            raw.sort();
            records.extend(raw);
        }
        Ok(records)
    }

    /// Stores one exported record as it is (secrets stay sealed), replacing
    /// a webhook with the same id; refused past the per-application `limit`,
    /// or when its filter or headers fail the API's checks. Returns the webhook as read back (secrets opened), so a record that
    /// this deployment cannot open (another `WF_SECRET_KEY`) is refused.
    pub async fn import(&self, record: &str, limit: usize) -> Result<Webhook, StoreError> {
        let hook = self.decode(record)?;
        hook.check_fields().map_err(StoreError::Invalid)?;
        self.put(&hook, record, limit).await?;
        Ok(hook)
    }

    /// A pooled connection, for callers that build their own pipelines.
    pub(crate) async fn connection(&self) -> Result<Pooled, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// Deletes every key of the namespace (tests and `namespace delete`).
    pub async fn delete_namespace(&self) -> Result<u64, StoreError> {
        let mut conn = self.pool.get().await?;
        let keys: Vec<String> = {
            let mut iter = conn.scan_match::<_, String>(self.keys.pattern()).await?;
            let mut keys = Vec::new();
            while let Some(k) = futures_util::StreamExt::next(&mut iter).await {
                keys.push(k?);
            }
            keys
        };
        let mut conn = self.pool.get().await?;
        for chunk in keys.chunks(500) {
            let _: i64 = conn.del(chunk).await?;
        }
        Ok(keys.len() as u64)
    }
}

#[cfg(test)]
impl Store {
    /// The local Redis in a fresh namespace `test-<what>-<uuid>`, for the
    /// unit tests of a feature's keys and scripts (each deletes its
    /// namespace at the end).
    pub(crate) fn local_for_test(what: &str) -> Store {
        let ns = format!("test-{what}-{}", uuid::Uuid::new_v4().simple());
        Store::connect("redis://127.0.0.1:6379/0", &ns).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn store() -> Store {
        Store::local_for_test("store")
    }

    #[tokio::test]
    async fn creates_stop_at_the_limit_and_every_write_is_announced() {
        let store = store();
        let mut changes = store.pubsub().await.unwrap();
        changes.subscribe(store.keys().changes()).await.unwrap();
        store
            .create(&Webhook::example("app", "w1"), 2)
            .await
            .unwrap();
        store
            .create(&Webhook::example("app", "w2"), 2)
            .await
            .unwrap();
        let third = store.create(&Webhook::example("app", "w3"), 2).await;
        assert!(matches!(third, Err(StoreError::LimitReached)), "{third:?}");
        // Replacing a stored one is no new webhook: allowed at the limit.
        store
            .create(&Webhook::example("app", "w2"), 2)
            .await
            .unwrap();
        store
            .create(&Webhook::example("other", "w3"), 2)
            .await
            .unwrap();
        let ids: Vec<String> = store
            .list("app")
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.id)
            .collect();
        assert_eq!(ids, ["w1", "w2"]);
        let mut announced = Vec::new();
        let mut messages = changes.on_message();
        while announced.len() < 4 {
            let m = tokio::time::timeout(
                Duration::from_secs(5),
                futures_util::StreamExt::next(&mut messages),
            )
            .await
            .expect("every write is announced")
            .unwrap();
            announced.push(m.get_payload::<String>().unwrap());
        }
        assert_eq!(announced, ["app", "app", "app", "other"]);
        drop(messages);
        store.delete_namespace().await.unwrap();
    }

    #[tokio::test]
    async fn updates_and_deletes_are_compare_and_set_on_the_revision() {
        let store = store();
        let hook = Webhook::example("app", "w");
        store.create(&hook, 10).await.unwrap();
        let mut renamed = hook.clone();
        renamed.name = Some("first".into());
        assert_eq!(store.update(&renamed).await.unwrap(), Write::Done);
        // A writer that read revision 0 too loses, and reads again.
        let mut stale = hook.clone();
        stale.name = Some("second".into());
        assert_eq!(store.update(&stale).await.unwrap(), Write::Conflict);
        let stored = store.get("app", "w").await.unwrap().unwrap();
        assert_eq!(
            (stored.revision, stored.name.as_deref()),
            (1, Some("first"))
        );
        let written = store
            .modify("app", "w", |h| {
                h.name = Some("third".into());
                true
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(written.revision, 2);
        assert_eq!(
            store.delete("app", "w", Some(1)).await.unwrap(),
            Write::Conflict
        );
        assert_eq!(
            store.delete("app", "w", Some(2)).await.unwrap(),
            Write::Done
        );
        assert_eq!(
            store.delete("app", "w", None).await.unwrap(),
            Write::Missing
        );
        assert_eq!(store.update(&written).await.unwrap(), Write::Missing);
        assert!(store.get("app", "w").await.unwrap().is_none());
        store.delete_namespace().await.unwrap();
    }
}
