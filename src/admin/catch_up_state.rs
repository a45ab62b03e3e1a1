//! The state of webhooks' catch-up replays, in Redis so that any process
//! answers for any catch-up: the progress hash `{ns}:replay:{app}:{id}`
//! (`total`, `replayed`, `state`, kept 7 days) and the lock
//! `{ns}:replay-lock:{app}:{id}` (value: its runner), so two processes never
//! replay the same dead letters at once.

use std::time::Duration;

use deadpool_redis::redis::{self, AsyncCommands, Script};

use crate::subscription::{Store, StoreError};

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

/// The catch-up state of a namespace's webhooks.
#[derive(Clone)]
pub(crate) struct CatchUps {
    store: Store,
}

impl CatchUps {
    pub(crate) fn new(store: Store) -> CatchUps {
        CatchUps { store }
    }

    fn progress_key(&self, app: &str, id: &str) -> String {
        self.store.key(&format!("replay:{app}:{id}"))
    }

    fn lock_key(&self, app: &str, id: &str) -> String {
        self.store.key(&format!("replay-lock:{app}:{id}"))
    }

    /// Records the progress of webhook `id`'s catch-up replay.
    pub(crate) async fn set_progress(
        &self,
        app: &str,
        id: &str,
        progress: &ReplayProgress,
    ) -> Result<(), StoreError> {
        let mut conn = self.store.connection().await?;
        let key = self.progress_key(app, id);
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
    pub(crate) async fn lock(
        &self,
        app: &str,
        id: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut conn = self.store.connection().await?;
        let held: i64 = Script::new(LOCK)
            .key(self.lock_key(app, id))
            .arg(owner)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(held == 1)
    }

    /// Releases the catch-up lock of webhook `id` if `owner` holds it.
    pub(crate) async fn unlock(&self, app: &str, id: &str, owner: &str) -> Result<(), StoreError> {
        let mut conn = self.store.connection().await?;
        let _: i64 = Script::new(UNLOCK)
            .key(self.lock_key(app, id))
            .arg(owner)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The progress of webhook `id`'s latest catch-up replay, if any.
    pub(crate) async fn progress(
        &self,
        app: &str,
        id: &str,
    ) -> Result<Option<ReplayProgress>, StoreError> {
        let mut conn = self.store.connection().await?;
        let fields: std::collections::HashMap<String, String> =
            conn.hgetall(self.progress_key(app, id)).await?;
        let number = |k: &str| fields.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(fields.get("state").map(|state| ReplayProgress {
            total: number("total"),
            replayed: number("replayed"),
            state: state.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_runner_holds_a_webhook_s_lock_and_progress_is_read_back() {
        // The local Redis, in a namespace of its own deleted at the end.
        let store = Store::local_for_test("catch-up");
        let catch_ups = CatchUps::new(store.clone());
        let ttl = Duration::from_secs(10);
        assert!(catch_ups.lock("app", "w", "runner_a", ttl).await.unwrap());
        assert!(
            catch_ups.lock("app", "w", "runner_a", ttl).await.unwrap(),
            "renewed"
        );
        assert!(
            !catch_ups.lock("app", "w", "runner_b", ttl).await.unwrap(),
            "held"
        );
        assert!(
            catch_ups.lock("app", "w2", "runner_b", ttl).await.unwrap(),
            "per webhook"
        );
        catch_ups.unlock("app", "w", "runner_b").await.unwrap();
        assert!(
            !catch_ups.lock("app", "w", "runner_b", ttl).await.unwrap(),
            "only its holder unlocks"
        );
        catch_ups.unlock("app", "w", "runner_a").await.unwrap();
        assert!(catch_ups.lock("app", "w", "runner_b", ttl).await.unwrap());

        assert_eq!(catch_ups.progress("app", "w").await.unwrap(), None);
        let progress = ReplayProgress {
            total: 7,
            replayed: 3,
            state: "running".into(),
        };
        catch_ups.set_progress("app", "w", &progress).await.unwrap();
        assert_eq!(
            catch_ups.progress("app", "w").await.unwrap(),
            Some(progress)
        );
        store.delete_namespace().await.unwrap();
    }
}
