//! The Redis store: webhooks (one hash per application), token hashes, and
//! the event-id marker. Every write publishes the application id on
//! `{ns}:changes` so every process's cache drops its copy.

use std::time::Duration;

use super::redis_pool::{PoolSetupError, Pooled, RedisPool};
use deadpool_redis::redis::{self, AsyncCommands, Script};
use serde::{Deserialize, Serialize};

use super::cipher::SecretCipher;
use super::webhook::Webhook;

/// The event-id marker lives longer than the max event age (contract: 3 days).
pub(crate) const MARKER_TTL: Duration = Duration::from_secs(3 * 24 * 3600);

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
    /// Hash of API tokens: SHA-256 hex -> JSON record.
    pub(crate) fn tokens(&self) -> String {
        format!("{}:tokens", self.ns)
    }
    /// Marker of event `id` of application `app` already fanned out. Event
    /// ids are unique per application: two producers may both number their
    /// events. (Application ids cannot contain `:`, so keys never collide.)
    pub(crate) fn event(&self, app: &str, id: &str) -> String {
        format!("{}:event:{app}:{id}", self.ns)
    }
    /// Pub/sub channel announcing changed applications.
    pub(crate) fn changes(&self) -> String {
        format!("{}:changes", self.ns)
    }
    /// Sorted set of replayed or discarded dead letter ids, scored by time.
    pub(crate) fn dead_settled(&self) -> String {
        format!("{}:dead:settled", self.ns)
    }
    /// Hash of a webhook's current streak of failed requests (`since`,
    /// `failures`, `failing` once announced), shared by every process.
    pub(crate) fn streak(&self, app: &str, id: &str) -> String {
        format!("{}:streak:{app}:{id}", self.ns)
    }
    /// Hash of a webhook's latest catch-up replay (`total`, `replayed`,
    /// `state`).
    pub(crate) fn replay(&self, app: &str, id: &str) -> String {
        format!("{}:replay:{app}:{id}", self.ns)
    }
    /// Lock of a webhook's running catch-up (value: its runner), so two
    /// processes never replay the same dead letters at once.
    pub(crate) fn replay_lock(&self, app: &str, id: &str) -> String {
        format!("{}:replay-lock:{app}:{id}", self.ns)
    }
    /// Stream of a webhook's latest attempts.
    pub(crate) fn attempts(&self, app: &str, id: &str) -> String {
        format!("{}:attempts:{app}:{id}", self.ns)
    }
    /// Hash of a webhook's health counters (per 5-minute bucket), last
    /// success and failure, and jobs waiting in retry tiers.
    pub(crate) fn health(&self, app: &str, id: &str) -> String {
        format!("{}:health:{app}:{id}", self.ns)
    }
    /// Hash of one ordering key's state for a webhook (`next` and `done`
    /// sequence numbers, `due` and `head_at` times). Application and
    /// webhook ids hold no `:`, so the key, last, never collides.
    pub(crate) fn order(&self, app: &str, id: &str, key: &str) -> String {
        format!("{}:order:{app}:{id}:{key}", self.ns)
    }
    /// The sequence number given to one event for a webhook, so a fan-out
    /// redone after a crash gives it the same one.
    pub(crate) fn order_event(&self, app: &str, id: &str, event_id: &str) -> String {
        format!("{}:order-event:{app}:{id}:{event_id}", self.ns)
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
}

/// What the event-id marker said when claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    /// First sight: this caller fans it out.
    New,
    /// Claimed before but not finished (a crash, or a concurrent copy).
    InProgress,
    /// Fanned out already.
    Done,
}

/// An API token's grant; the token itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TokenRecord {
    /// The application the token acts for.
    pub application_id: String,
    /// `admin` or `member`.
    pub role: String,
    /// Unix seconds.
    pub created_at: i64,
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

// A failed attempt (ARGV[2] = 1 when a request was sent) in a webhook's
// streak: starts it, counts it, and answers {announce failing, disable}.
const STREAK_FAILED: &str = r#"
redis.call('HSETNX', KEYS[1], 'since', ARGV[1])
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
if ARGV[2] == '1' then failures = redis.call('HINCRBY', KEYS[1], 'failures', 1) end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local since = tonumber(redis.call('HGET', KEYS[1], 'since'))
local enough = failures >= tonumber(ARGV[3])
local announce = 0
if enough and redis.call('HSETNX', KEYS[1], 'failing', '1') == 1 then announce = 1 end
local disable = 0
if enough and tonumber(ARGV[1]) - since >= tonumber(ARGV[4]) then disable = 1 end
return {announce, disable, failures}"#;

// A success ends the streak; answers 1 if it had been announced as failing.
const STREAK_SUCCEEDED: &str = r#"
local failing = redis.call('HGET', KEYS[1], 'failing')
redis.call('DEL', KEYS[1])
if failing == '1' then return 1 end
return 0"#;

// Re-enabled: the streak starts over (a failure right after must not
// disable again at once), but an announced one still ends in `recovered`.
const STREAK_RESTART: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'since', ARGV[1], 'failures', 0)
end
return 1"#;

// Take a lock for ARGV[1] for ARGV[2] ms, or extend it if ARGV[1] holds it.
const LOCK: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1"#;

// Release the lock if ARGV[1] holds it.
const UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0"#;

/// What one failed attempt did to a webhook's streak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Streak {
    /// The streak just reached the threshold: announce `webhook.failing`.
    pub announce_failing: bool,
    /// Enough failed requests over long enough: disable the webhook.
    pub disable: bool,
    /// Failed requests in the streak.
    pub failures: u64,
}

/// A catch-up replay's progress, as `GET .../replay` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplayProgress {
    /// Dead letters to replay.
    pub total: u64,
    /// Replayed so far.
    pub replayed: u64,
    /// `running` or `done` (`failed` if it stopped on an error).
    pub state: String,
}

/// How long a finished replay's progress stays readable.
const REPLAY_PROGRESS_TTL: Duration = Duration::from_secs(7 * 86_400);

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
        for s in &mut sealed.secrets {
            s.value.0 = self.cipher.seal(&s.value.0);
        }
        Ok(serde_json::to_string(&sealed)?)
    }

    fn decode(&self, raw: &str) -> Result<Webhook, StoreError> {
        let mut hook: Webhook = serde_json::from_str(raw)?;
        for s in &mut hook.secrets {
            s.value.0 = self.cipher.open(&s.value.0)?;
        }
        Ok(hook)
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

    /// Counts a failed attempt (`sent`: a request went out) in the
    /// webhook's streak; `threshold` failed requests make it failing, and
    /// with the streak at least `after` old, due to be disabled.
    pub(crate) async fn streak_failed(
        &self,
        app: &str,
        id: &str,
        sent: bool,
        threshold: u32,
        after: Duration,
    ) -> Result<Streak, StoreError> {
        let mut conn = self.pool.get().await?;
        // Kept well past the window, so a quiet night does not reset it.
        let keep = after.saturating_mul(2).max(Duration::from_secs(86_400));
        let (announce, disable, failures): (i64, i64, u64) = Script::new(STREAK_FAILED)
            .key(self.keys.streak(app, id))
            .arg(crate::clock::unix_millis())
            .arg(u8::from(sent))
            .arg(threshold)
            .arg(after.as_millis() as u64)
            .arg(keep.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(Streak {
            announce_failing: announce == 1,
            disable: disable == 1,
            failures,
        })
    }

    /// Ends the webhook's streak (a request succeeded); whether it had been
    /// announced as failing (so `webhook.recovered` is due).
    pub(crate) async fn streak_succeeded(&self, app: &str, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await?;
        let was_failing: i64 = Script::new(STREAK_SUCCEEDED)
            .key(self.keys.streak(app, id))
            .invoke_async(&mut conn)
            .await?;
        Ok(was_failing == 1)
    }

    /// Whether each of `ids` (webhooks of `app`) is in a streak announced as
    /// failing.
    pub(crate) async fn failing(&self, app: &str, ids: &[&str]) -> Result<Vec<bool>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.pool.get().await?;
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(self.keys.streak(app, id), "failing");
        }
        let flags: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
        Ok(flags.into_iter().map(|f| f.is_some()).collect())
    }

    /// Starts the webhook's streak over (it was re-enabled).
    pub(crate) async fn streak_restart(&self, app: &str, id: &str) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        let _: i64 = Script::new(STREAK_RESTART)
            .key(self.keys.streak(app, id))
            .arg(crate::clock::unix_millis())
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Records the progress of webhook `id`'s catch-up replay.
    pub(crate) async fn set_replay_progress(
        &self,
        app: &str,
        id: &str,
        progress: &ReplayProgress,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        let key = self.keys.replay(app, id);
        let _: () = redis::pipe()
            .hset_multiple(
                &key,
                &[
                    ("total", progress.total.to_string()),
                    ("replayed", progress.replayed.to_string()),
                    ("state", progress.state.clone()),
                ],
            )
            .ignore()
            .expire(&key, REPLAY_PROGRESS_TTL.as_secs() as i64)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Takes the catch-up lock of webhook `id` for `owner` for `ttl`, or
    /// keeps it if `owner` holds it; false if another runner holds it.
    pub(crate) async fn lock_replay(
        &self,
        app: &str,
        id: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await?;
        let held: i64 = Script::new(LOCK)
            .key(self.keys.replay_lock(app, id))
            .arg(owner)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(held == 1)
    }

    /// Releases the catch-up lock of webhook `id` if `owner` holds it.
    pub(crate) async fn unlock_replay(
        &self,
        app: &str,
        id: &str,
        owner: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        let _: i64 = Script::new(UNLOCK)
            .key(self.keys.replay_lock(app, id))
            .arg(owner)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The progress of webhook `id`'s latest catch-up replay, if any.
    pub(crate) async fn replay_progress(
        &self,
        app: &str,
        id: &str,
    ) -> Result<Option<ReplayProgress>, StoreError> {
        let mut conn = self.pool.get().await?;
        let fields: std::collections::HashMap<String, String> =
            conn.hgetall(self.keys.replay(app, id)).await?;
        let number = |k: &str| fields.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(fields.get("state").map(|state| ReplayProgress {
            total: number("total"),
            replayed: number("replayed"),
            state: state.clone(),
        }))
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
    /// a webhook with the same id; refused past the per-application `limit`.
    /// Returns the webhook as read back (secrets opened), so a record that
    /// this deployment cannot open (another `WF_SECRET_KEY`) is refused.
    pub async fn import(&self, record: &str, limit: usize) -> Result<Webhook, StoreError> {
        let hook = self.decode(record)?;
        self.put(&hook, record, limit).await?;
        Ok(hook)
    }

    /// Records a token grant under the token's SHA-256 hex.
    pub(crate) async fn put_token(
        &self,
        hash: &str,
        record: &TokenRecord,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        let _: i64 = conn
            .hset(self.keys.tokens(), hash, serde_json::to_string(record)?)
            .await?;
        Ok(())
    }

    /// The grant of the token whose SHA-256 hex is `hash`.
    pub(crate) async fn token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let mut conn = self.pool.get().await?;
        let raw: Option<String> = conn.hget(self.keys.tokens(), hash).await?;
        Ok(raw.map(|r| serde_json::from_str(&r)).transpose()?)
    }

    /// A pooled connection, for callers that build their own pipelines.
    pub(crate) async fn connection(&self) -> Result<Pooled, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// Records dead letter `id` as replayed or discarded; entries older than
    /// `keep` are trimmed (their dead letters have expired from the stream).
    pub(crate) async fn settle_dead_letter(
        &self,
        id: &str,
        now_ms: i64,
        keep: Duration,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await?;
        let added: i64 = conn.zadd(self.keys.dead_settled(), id, now_ms).await?;
        let horizon = now_ms - keep.as_millis() as i64;
        let _: i64 = conn
            .zrembyscore(self.keys.dead_settled(), "-inf", horizon)
            .await?;
        Ok(added == 1)
    }

    /// Every settled dead letter id.
    pub(crate) async fn settled_dead_letters(
        &self,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut conn = self.pool.get().await?;
        let ids: Vec<String> = conn.zrange(self.keys.dead_settled(), 0, -1).await?;
        Ok(ids.into_iter().collect())
    }

    /// How many dead letter ids are recorded as settled.
    pub(crate) async fn settled_dead_letter_count(&self) -> Result<u64, StoreError> {
        let mut conn = self.pool.get().await?;
        Ok(conn.zcard(self.keys.dead_settled()).await?)
    }

    /// Whether dead letter `id` was replayed or discarded.
    pub(crate) async fn is_settled(&self, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await?;
        let score: Option<f64> = conn.zscore(self.keys.dead_settled(), id).await?;
        Ok(score.is_some())
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
