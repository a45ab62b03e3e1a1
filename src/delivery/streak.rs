//! Each webhook's streak of failed requests, shared by every process: it
//! says when a webhook is failing (`webhook.failing`), when it recovered,
//! and when it is due to be disabled (`WF_AUTO_DISABLE_AFTER`). A Redis
//! hash `{ns}:streak:{app}:{id}` (`since`, `failures`, `failing` once
//! announced), written only by the scripts below.

use std::time::Duration;

use deadpool_redis::redis::{self, Script};

use crate::subscription::{Store, StoreError};

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

/// The streaks of a namespace's webhooks.
#[derive(Clone)]
pub(crate) struct Streaks {
    store: Store,
}

impl Streaks {
    pub(crate) fn new(store: Store) -> Streaks {
        Streaks { store }
    }

    fn key(&self, app: &str, id: &str) -> String {
        self.store.key(&format!("streak:{app}:{id}"))
    }

    /// Counts a failed attempt (`sent`: a request went out) in the
    /// webhook's streak; `threshold` failed requests make it failing, and
    /// with the streak at least `after` old, due to be disabled.
    pub(crate) async fn failed(
        &self,
        app: &str,
        id: &str,
        sent: bool,
        threshold: u32,
        after: Duration,
    ) -> Result<Streak, StoreError> {
        let mut conn = self.store.connection().await?;
        // Kept well past the window, so a quiet night does not reset it.
        let keep = after.saturating_mul(2).max(Duration::from_secs(86_400));
        let (announce, disable, failures): (i64, i64, u64) = Script::new(STREAK_FAILED)
            .key(self.key(app, id))
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
    pub(crate) async fn succeeded(&self, app: &str, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.store.connection().await?;
        let was_failing: i64 = Script::new(STREAK_SUCCEEDED)
            .key(self.key(app, id))
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
        let mut conn = self.store.connection().await?;
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(self.key(app, id), "failing");
        }
        let flags: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
        Ok(flags.into_iter().map(|f| f.is_some()).collect())
    }

    /// Starts the webhook's streak over (it was re-enabled).
    pub(crate) async fn restart(&self, app: &str, id: &str) -> Result<(), StoreError> {
        let mut conn = self.store.connection().await?;
        let _: i64 = Script::new(STREAK_RESTART)
            .key(self.key(app, id))
            .arg(crate::clock::unix_millis())
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The local Redis, in a namespace of its own deleted at the end.
    fn streaks() -> (Streaks, Store) {
        let store = Store::local_for_test("streak");
        (Streaks::new(store.clone()), store)
    }

    #[tokio::test]
    async fn a_streak_is_announced_once_ended_by_a_success_and_restarted_on_enable() {
        let (streaks, store) = streaks();
        let day = Duration::from_secs(86_400);
        let first = streaks.failed("app", "w1", true, 2, day).await.unwrap();
        assert_eq!(
            (first.announce_failing, first.disable, first.failures),
            (false, false, 1)
        );
        // An attempt without a request moves the clock, not the count.
        let unsent = streaks.failed("app", "w1", false, 2, day).await.unwrap();
        assert_eq!(unsent.failures, 1);
        let second = streaks.failed("app", "w1", true, 2, day).await.unwrap();
        assert!(second.announce_failing && !second.disable, "{second:?}");
        let third = streaks.failed("app", "w1", true, 2, day).await.unwrap();
        assert!(!third.announce_failing, "announced once: {third:?}");
        assert_eq!(
            streaks.failing("app", &["w1", "w2"]).await.unwrap(),
            [true, false]
        );
        // Re-enabled: the count starts over, the announcement stands.
        streaks.restart("app", "w1").await.unwrap();
        let after = streaks.failed("app", "w1", true, 2, day).await.unwrap();
        assert_eq!((after.announce_failing, after.failures), (false, 1));
        assert!(streaks.succeeded("app", "w1").await.unwrap(), "recovered");
        assert!(!streaks.succeeded("app", "w1").await.unwrap(), "once");
        assert_eq!(streaks.failing("app", &["w1"]).await.unwrap(), [false]);
        // Restarting a webhook without a streak creates none.
        streaks.restart("app", "w3").await.unwrap();
        assert_eq!(streaks.failing("app", &["w3"]).await.unwrap(), [false]);
        store.delete_namespace().await.unwrap();
    }

    #[tokio::test]
    async fn a_streak_failing_long_enough_is_due_to_disable() {
        let (streaks, store) = streaks();
        let after = Duration::from_millis(30);
        let early = streaks.failed("app", "w", true, 1, after).await.unwrap();
        assert!(early.announce_failing && !early.disable, "{early:?}");
        tokio::time::sleep(after * 2).await;
        let late = streaks.failed("app", "w", true, 1, after).await.unwrap();
        assert!(late.disable, "{late:?}");
        store.delete_namespace().await.unwrap();
    }
}
