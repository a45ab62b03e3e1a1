//! Ordering per key: where each (webhook, ordering key) stands, in Redis,
//! shared by every process of the namespace.
//!
//! Fan-out gives each event of a key a sequence number (`next`), in the
//! order of `{ns}.ingest`, and remembers it per event id so a fan-out redone
//! after a crash gives the same one. The worker sends job `seq` only once
//! `done` (the last number delivered, dead-lettered or stopped by the
//! receiver) is `seq - 1`; a job further back waits outside the prefetch
//! window (a delay tier) and comes back. `due` is when the current head is
//! back from its retry tier (0 while it is in flight), so the jobs behind it
//! wait about as long; `head_at` is when the head last moved, so a head that
//! vanished (it cannot, short of a purged queue) is eventually skipped.

use std::time::Duration;

use deadpool_redis::redis::{self, Script};

use crate::subscription::KeptConnection;
use crate::subscription::MARKER_TTL;
use crate::subscription::{Store, StoreError};

/// How long a key's state outlives its last write: longer than any event
/// may wait (`WF_MAX_EVENT_AGE` is at most 2 days), like the event-id marker.
const STATE_TTL: Duration = MARKER_TTL;

/// How long an event's number is remembered once it is done: long enough
/// for a fan-out redone after a crash, which comes within seconds.
const DONE_EVENT_TTL: Duration = Duration::from_secs(60);

/// The longest one call waits for Redis.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Numbers the events of a batch, in order, each once per event id.
/// KEYS: pairs of (state, event id key); ARGV: now (ms), TTL (s).
const ASSIGN: &str = r#"
local out = {}
for i = 1, #KEYS, 2 do
  local state, event = KEYS[i], KEYS[i + 1]
  local known = redis.call('GET', event)
  if known then
    out[#out + 1] = tonumber(known)
  else
    local s = redis.call('HMGET', state, 'next', 'done')
    local done = tonumber(s[2] or '0')
    local n = math.max(tonumber(s[1] or '0'), done) + 1
    redis.call('HSET', state, 'next', n)
    if n == done + 1 then
      redis.call('HSET', state, 'head_at', ARGV[1], 'due', 0)
    end
    redis.call('EXPIRE', state, ARGV[2])
    redis.call('SET', event, n, 'EX', ARGV[2])
    out[#out + 1] = n
  end
end
return out
"#;

/// Job `seq` is finished (delivered, dead-lettered or stopped): `done`
/// moves up to it (never down). KEYS: state, event id key; ARGV: seq, now
/// (ms), state TTL (s), event TTL (s).
const FINISH: &str = r#"
local done = tonumber(redis.call('HGET', KEYS[1], 'done') or '0')
if tonumber(ARGV[1]) > done then
  redis.call('HSET', KEYS[1], 'done', ARGV[1], 'due', 0, 'head_at', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
redis.call('EXPIRE', KEYS[2], ARGV[4])
return done
"#;

/// The head `seq` went to a delay tier until `due`. KEYS: state; ARGV:
/// seq, due (ms), now (ms), TTL (s).
const DUE: &str = r#"
local done = tonumber(redis.call('HGET', KEYS[1], 'done') or '0')
if tonumber(ARGV[1]) == done + 1 then
  redis.call('HSET', KEYS[1], 'due', ARGV[2], 'head_at', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  return 1
end
return 0
"#;

/// Gives up on vanished events: `done` moves from what was read to `to`,
/// unless it moved meanwhile. KEYS: state; ARGV: done read, to, now (ms),
/// TTL (s).
const SKIP: &str = r#"
local done = tonumber(redis.call('HGET', KEYS[1], 'done') or '0')
if done == tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'done', ARGV[2], 'due', 0, 'head_at', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  return 1
end
return 0
"#;

/// One event of one key to number, for one webhook.
#[derive(Debug, Clone, Copy)]
pub(super) struct Assign<'a> {
    /// Owning application.
    pub app: &'a str,
    /// The ordered webhook.
    pub webhook: &'a str,
    /// The event's ordering key.
    pub key: &'a str,
    /// The event.
    pub event_id: &'a str,
}

/// Where one key stands for one webhook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct KeyState {
    /// The last number finished (0: none yet).
    pub done: u64,
    /// When the head comes back from its delay tier (Unix ms); 0 while it
    /// is in flight or not seen yet.
    pub due_ms: i64,
    /// When the head last moved (Unix ms).
    pub head_at_ms: i64,
}

/// The ordering state; cheap to share behind an `Arc`.
pub(super) struct Sequences {
    conn: KeptConnection,
    assign: Script,
    finish: Script,
    due: Script,
    skip: Script,
}

impl Sequences {
    /// Over `store`'s Redis and namespace.
    pub(super) fn new(store: Store) -> Self {
        Sequences {
            conn: KeptConnection::new(store, CALL_TIMEOUT),
            assign: Script::new(ASSIGN),
            finish: Script::new(FINISH),
            due: Script::new(DUE),
            skip: Script::new(SKIP),
        }
    }

    fn state_key(&self, app: &str, webhook: &str, key: &str) -> String {
        self.conn
            .store()
            .key(&format!("order:{app}:{webhook}:{key}"))
    }

    fn event_key(&self, app: &str, webhook: &str, event_id: &str) -> String {
        self.conn
            .store()
            .key(&format!("order-event:{app}:{webhook}:{event_id}"))
    }

    /// Numbers `batch` in its order, in one atomic call.
    pub(super) async fn assign(
        &self,
        batch: &[Assign<'_>],
        now_ms: i64,
    ) -> Result<Vec<u64>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = self.assign.prepare_invoke();
        for a in batch {
            call.key(self.state_key(a.app, a.webhook, a.key))
                .key(self.event_key(a.app, a.webhook, a.event_id));
        }
        call.arg(now_ms).arg(STATE_TTL.as_secs());
        self.conn
            .run("ordering: numbering timed out", |mut conn| async move {
                call.invoke_async(&mut conn).await
            })
            .await
    }

    /// Where `key` stands for `webhook`.
    pub(super) async fn state(
        &self,
        app: &str,
        webhook: &str,
        key: &str,
    ) -> Result<KeyState, StoreError> {
        let read = redis::cmd("HMGET")
            .arg(self.state_key(app, webhook, key))
            .arg("done")
            .arg("due")
            .arg("head_at")
            .to_owned();
        let (done, due, head_at): (Option<u64>, Option<i64>, Option<i64>) = self
            .conn
            .run("ordering: state read timed out", |mut conn| async move {
                read.query_async(&mut conn).await
            })
            .await?;
        Ok(KeyState {
            done: done.unwrap_or(0),
            due_ms: due.unwrap_or(0),
            head_at_ms: head_at.unwrap_or(0),
        })
    }

    /// Job `seq` of `key` (event `event_id`) is finished: its successor may go.
    pub(super) async fn finish(
        &self,
        app: &str,
        webhook: &str,
        key: &str,
        event_id: &str,
        seq: u64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut call = self.finish.prepare_invoke();
        call.key(self.state_key(app, webhook, key))
            .key(self.event_key(app, webhook, event_id))
            .arg(seq)
            .arg(now_ms)
            .arg(STATE_TTL.as_secs())
            .arg(DONE_EVENT_TTL.as_secs());
        let _: u64 = self
            .conn
            .run("ordering: finish timed out", |mut conn| async move {
                call.invoke_async(&mut conn).await
            })
            .await?;
        Ok(())
    }

    /// The head `seq` of `key` waits in a delay tier until `due_ms`.
    pub(super) async fn head_due(
        &self,
        app: &str,
        webhook: &str,
        key: &str,
        seq: u64,
        due_ms: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut call = self.due.prepare_invoke();
        call.key(self.state_key(app, webhook, key))
            .arg(seq)
            .arg(due_ms)
            .arg(now_ms)
            .arg(STATE_TTL.as_secs());
        let _: i64 = self
            .conn
            .run("ordering: due timed out", |mut conn| async move {
                call.invoke_async(&mut conn).await
            })
            .await?;
        Ok(())
    }

    /// Gives up on the vanished events after `done` up to `to` of `key`;
    /// whether this call did (not if `done` moved meanwhile).
    pub(super) async fn skip(
        &self,
        app: &str,
        webhook: &str,
        key: &str,
        done: u64,
        to: u64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut call = self.skip.prepare_invoke();
        call.key(self.state_key(app, webhook, key))
            .arg(done)
            .arg(to)
            .arg(now_ms)
            .arg(STATE_TTL.as_secs());
        let skipped: i64 = self
            .conn
            .run("ordering: skip timed out", |mut conn| async move {
                call.invoke_async(&mut conn).await
            })
            .await?;
        Ok(skipped == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequences() -> (Sequences, String) {
        let ns = format!("wft-ord-{}", uuid::Uuid::new_v4().simple());
        let store = Store::connect("redis://127.0.0.1:6379/0", &ns).unwrap();
        (Sequences::new(store), ns)
    }

    fn one<'a>(key: &'a str, event_id: &'a str) -> Assign<'a> {
        Assign {
            app: "app",
            webhook: "wh_1",
            key,
            event_id,
        }
    }

    #[tokio::test]
    async fn numbers_follow_the_batch_order_and_survive_a_redone_fan_out() {
        let (s, _ns) = sequences();
        let batch = [one("k1", "e1"), one("k2", "e2"), one("k1", "e3")];
        assert_eq!(s.assign(&batch, 1).await.unwrap(), vec![1, 1, 2]);
        // The same events again (a fan-out redone after a crash): same numbers.
        let again = [one("k1", "e3"), one("k1", "e1"), one("k1", "e4")];
        assert_eq!(s.assign(&again, 2).await.unwrap(), vec![2, 1, 3]);
        let state = s.state("app", "wh_1", "k1").await.unwrap();
        assert_eq!((state.done, state.head_at_ms), (0, 1));
        s.conn.store().delete_namespace().await.unwrap();
    }

    #[tokio::test]
    async fn finishing_moves_the_head_and_never_back() {
        let (s, _ns) = sequences();
        s.assign(&[one("k", "a"), one("k", "b"), one("k", "c")], 1)
            .await
            .unwrap();
        s.head_due("app", "wh_1", "k", 2, 99, 5).await.unwrap();
        assert_eq!(
            s.state("app", "wh_1", "k").await.unwrap().due_ms,
            0,
            "only the head's due time counts"
        );
        s.head_due("app", "wh_1", "k", 1, 99, 5).await.unwrap();
        let state = s.state("app", "wh_1", "k").await.unwrap();
        assert_eq!((state.done, state.due_ms, state.head_at_ms), (0, 99, 5));
        s.finish("app", "wh_1", "k", "a", 1, 7).await.unwrap();
        let state = s.state("app", "wh_1", "k").await.unwrap();
        assert_eq!((state.done, state.due_ms, state.head_at_ms), (1, 0, 7));
        // A late duplicate of 1 does not move it back.
        s.finish("app", "wh_1", "k", "a", 1, 8).await.unwrap();
        assert_eq!(s.state("app", "wh_1", "k").await.unwrap().done, 1);
        // Skipping past 2 works once, and not after it moved.
        assert!(s.skip("app", "wh_1", "k", 1, 2, 9).await.unwrap());
        assert!(!s.skip("app", "wh_1", "k", 1, 2, 9).await.unwrap());
        assert_eq!(s.state("app", "wh_1", "k").await.unwrap().done, 2);
        // An unknown key stands at the start.
        let fresh = s.state("app", "wh_1", "other").await.unwrap();
        assert_eq!(fresh, KeyState::default());
        s.conn.store().delete_namespace().await.unwrap();
    }
}
