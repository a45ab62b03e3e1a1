//! The shortcut past the routing hop: the router fans out itself the
//! events of the partitions its own process holds, instead of moving them
//! to `{ns}.ingest.<p>` for this same process to consume again. One
//! process alone holds every partition, so its events take one broker pass
//! fewer; with several, each router's share of direct events is its own
//! process's share of the partitions.
//!
//! A partition's events must be numbered (see `crate::ordering`'s `sequencer.rs`) in
//! `{ns}.ingest`'s order whichever way they go, so the way changes only at
//! a barrier:
//!
//! - **Opening** (queue to direct): the router publishes a barrier, an
//!   empty message with the header [`BARRIER_HEADER`], to the partition's
//!   queue behind the events it moved there, and keeps the partition's next
//!   events aside, unacked. The partition's consumer, reaching the barrier,
//!   waits until every event before it is numbered and says so here; the
//!   router then fans out what it kept aside and every later event itself.
//!   Not reached within [`OPEN_WITHIN`] (or the partition let go
//!   meanwhile), the events kept aside go to the queue after all.
//! - **Leaving** (direct to queue): before a process lets a partition go,
//!   its consumer of the partition waits here until the router's direct
//!   fan-outs of that partition are done, and the router moves the later
//!   events to the queue again, for the next holder.
//! - **Closing and leaving, either way**: the router moves an event of a
//!   partition to its queue only once no direct fan-out of that partition
//!   runs. Otherwise a crash of this process would send the direct ones
//!   back to `{ns}.ingest`, behind the later events already in the queue,
//!   and the next holder would number those first (seen once in a few
//!   dozen runs of `ordering::two_processes_keep_the_order_when_the_one_
//!   fanning_out_is_killed`). Meanwhile (at most `WF_INGEST_CONCURRENCY`
//!   fan-outs, tens of milliseconds) the router keeps that partition's
//!   next events aside, unacked, and goes on with the other partitions'.

use std::sync::Mutex;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString};
use tokio::sync::Notify;

/// The header of a barrier message; its value is the opening's nonce.
pub(crate) const BARRIER_HEADER: &str = "x-webhook-fanout-barrier";

/// How long the router keeps a partition's events aside waiting for its
/// barrier before moving them to the queue after all.
pub(crate) const OPEN_WITHIN: Duration = Duration::from_secs(5);

/// Where each partition of this process stands, shared by the router and
/// the partitions' consumers.
pub(crate) struct Shortcut {
    parts: Mutex<Vec<Part>>,
    /// Woken when a direct fan-out ends.
    done: Notify,
}

#[derive(Debug, Default, Clone, Copy)]
struct Part {
    /// This process consumes the partition's queue.
    held: bool,
    /// The router fans its events out itself.
    direct: bool,
    /// The router's direct fan-outs of it still running.
    in_flight: usize,
    /// The nonce of the last barrier its consumer reached.
    reached: Option<u64>,
}

/// Where an opening stands, as the router asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opening {
    /// The barrier is not reached yet.
    Waiting,
    /// Reached: the partition is direct from now on.
    Open,
    /// The partition was let go: its events go to the queue.
    Cancelled,
}

impl Shortcut {
    /// `partitions` partitions, none held.
    pub(crate) fn new(partitions: usize) -> Shortcut {
        Shortcut {
            parts: Mutex::new(vec![Part::default(); partitions]),
            done: Notify::new(),
        }
    }

    fn with<T>(&self, p: usize, f: impl FnOnce(&mut Part) -> T) -> Option<T> {
        let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        parts.get_mut(p).map(f)
    }

    /// This process took partition `p` (its consumer is in place).
    pub(crate) fn held(&self, p: usize) {
        self.with(p, |part| {
            part.held = true;
            part.direct = false;
            part.reached = None;
        });
    }

    /// Whether this process holds `p`.
    pub(crate) fn is_held(&self, p: usize) -> bool {
        self.with(p, |part| part.held).unwrap_or(false)
    }

    /// The consumer of `p` reached the barrier `nonce`, every event before
    /// it numbered.
    pub(crate) fn reached(&self, p: usize, nonce: u64) {
        self.with(p, |part| part.reached = Some(nonce));
    }

    /// Where the opening of `p` with barrier `nonce` stands; open, `p` is
    /// direct.
    pub(crate) fn opening(&self, p: usize, nonce: u64) -> Opening {
        self.with(p, |part| match (part.held, part.reached) {
            (false, _) => Opening::Cancelled,
            (true, Some(n)) if n == nonce => {
                part.direct = true;
                Opening::Open
            }
            (true, _) => Opening::Waiting,
        })
        .unwrap_or(Opening::Cancelled)
    }

    /// Starts a direct fan-out of an event of `p` if `p` is direct; the
    /// caller calls [`Shortcut::finished`] once it is done.
    pub(crate) fn start_direct(&self, p: usize) -> bool {
        self.with(p, |part| {
            if part.held && part.direct {
                part.in_flight += 1;
            }
            part.held && part.direct
        })
        .unwrap_or(false)
    }

    /// A direct fan-out of `p` is done.
    pub(crate) fn finished(&self, p: usize) {
        self.with(p, |part| part.in_flight = part.in_flight.saturating_sub(1));
        self.done.notify_waiters();
    }

    /// The router stops fanning out `p` itself (its window is full): from
    /// now on its events go to the queue again, whose consumer waits for
    /// the direct fan-outs still running ([`Shortcut::direct_done`]).
    pub(crate) fn close(&self, p: usize) {
        self.with(p, |part| part.direct = false);
    }

    /// Whether no direct fan-out of `p` runs.
    pub(crate) fn is_quiet(&self, p: usize) -> bool {
        self.with(p, |part| part.in_flight == 0).unwrap_or(true)
    }

    /// Returns once no direct fan-out of `p` runs: an event of the queue,
    /// moved there after every direct one (the partition closed), is
    /// numbered after them.
    pub(crate) async fn direct_done(&self, p: usize) {
        self.quiet(p, None).await;
    }

    /// This process lets `p` go: from now on its events go to the queue;
    /// returns once the direct fan-outs of it are done, or false at `deadline`.
    pub(crate) async fn leave(&self, p: usize, deadline: tokio::time::Instant) -> bool {
        self.with(p, |part| {
            part.held = false;
            part.direct = false;
        });
        self.quiet(p, Some(deadline)).await
    }

    /// Waits until no direct fan-out of `p` runs; false at `deadline`.
    async fn quiet(&self, p: usize, deadline: Option<tokio::time::Instant>) -> bool {
        loop {
            // Registered before looking, so a wake-up in between is kept.
            let woken = self.done.notified();
            if self.is_quiet(p) {
                return true;
            }
            match deadline {
                Some(at) => {
                    if tokio::time::timeout_at(at, woken).await.is_err() {
                        return false;
                    }
                }
                None => woken.await,
            }
        }
    }
}

/// The header the router sets on the copy of an event it moves to a
/// partition when `{ns}.ingest` had delivered it before: the copy is a new
/// message, without the broker's redelivered flag, and the event's id may
/// have been claimed by a fan-out that then stopped (the router's own, of
/// a partition held where it ran), which only a redelivered event may redo.
pub(crate) const REDELIVERED_HEADER: &str = "x-webhook-fanout-redelivered";

/// The properties of the copy of `delivery` moved to a partition.
pub(crate) fn moved(delivery: &Delivery) -> BasicProperties {
    if !delivery.redelivered {
        return delivery.properties.clone();
    }
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(REDELIVERED_HEADER.into(), AMQPValue::Boolean(true));
    delivery.properties.clone().with_headers(headers)
}

/// Whether `delivery` is a copy of an event `{ns}.ingest` had delivered before.
pub(crate) fn was_redelivered(delivery: &Delivery) -> bool {
    let headers = delivery.properties.headers().as_ref();
    matches!(
        headers.and_then(|h| h.inner().get(REDELIVERED_HEADER)),
        Some(AMQPValue::Boolean(true))
    )
}

/// The barrier of an opening with `nonce`: an empty message.
pub(crate) fn barrier(nonce: u64) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        BARRIER_HEADER.into(),
        AMQPValue::LongString(LongString::from(nonce.to_string())),
    );
    BasicProperties::default().with_headers(headers)
}

/// The nonce of `delivery` if it is a barrier (empty, with the header).
pub(crate) fn barrier_of(delivery: &Delivery) -> Option<u64> {
    if !delivery.data.is_empty() {
        return None;
    }
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(BARRIER_HEADER)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_opens_only_held_and_at_its_own_barrier() {
        let s = Shortcut::new(4);
        assert_eq!(s.opening(1, 7), Opening::Cancelled, "not held");
        s.held(1);
        assert_eq!(s.opening(1, 7), Opening::Waiting);
        s.reached(1, 6);
        assert_eq!(s.opening(1, 7), Opening::Waiting, "an older barrier");
        assert!(!s.start_direct(1), "not open yet");
        s.reached(1, 7);
        assert_eq!(s.opening(1, 7), Opening::Open);
        assert!(s.start_direct(1));
        assert!(!s.start_direct(2), "another partition stays on the queue");
        assert!(!s.start_direct(9), "no such partition");
    }

    #[tokio::test]
    async fn leaving_waits_for_the_direct_fan_outs_and_closes_the_shortcut() {
        let s = std::sync::Arc::new(Shortcut::new(2));
        s.held(0);
        s.reached(0, 1);
        assert_eq!(s.opening(0, 1), Opening::Open);
        assert!(s.start_direct(0));
        assert!(s.start_direct(0));
        let soon = tokio::time::Instant::now() + Duration::from_millis(50);
        assert!(!s.leave(0, soon).await, "two fan-outs still run");
        assert!(!s.start_direct(0), "no new direct fan-out once leaving");
        let finisher = {
            let s = s.clone();
            tokio::spawn(async move {
                s.finished(0);
                tokio::time::sleep(Duration::from_millis(20)).await;
                s.finished(0);
            })
        };
        let later = tokio::time::Instant::now() + Duration::from_secs(5);
        assert!(s.leave(0, later).await);
        finisher.await.expect("finisher");
        assert_eq!(s.opening(0, 1), Opening::Cancelled, "let go");
        s.held(0);
        assert_eq!(
            s.opening(0, 1),
            Opening::Waiting,
            "taken again: a new barrier"
        );
    }

    #[tokio::test]
    async fn a_closed_partition_s_queue_waits_for_the_direct_fan_outs() {
        let s = std::sync::Arc::new(Shortcut::new(2));
        s.held(1);
        s.reached(1, 3);
        assert_eq!(s.opening(1, 3), Opening::Open);
        assert!(s.start_direct(1));
        s.close(1);
        assert!(!s.start_direct(1), "closed: the next events take the queue");
        assert!(s.is_held(1), "still held here");
        let waiting = {
            let s = s.clone();
            tokio::spawn(async move { s.direct_done(1).await })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiting.is_finished(), "a direct fan-out still runs");
        s.finished(1);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("released once it is done")
            .expect("task");
        s.direct_done(0).await;
    }

    #[test]
    fn a_redelivered_event_moved_to_a_partition_says_so() {
        let mut d = Delivery::mock(1, "".into(), "q".into(), false, b"{}".to_vec());
        let first = Delivery {
            properties: moved(&d),
            ..Delivery::mock(1, "".into(), "q".into(), false, b"{}".to_vec())
        };
        assert!(!was_redelivered(&first));
        d.redelivered = true;
        let again = Delivery {
            properties: moved(&d),
            ..Delivery::mock(2, "".into(), "q".into(), false, b"{}".to_vec())
        };
        assert!(was_redelivered(&again));
    }

    #[test]
    fn a_barrier_is_an_empty_message_with_the_header() {
        let props = barrier(42);
        let with = |data: &[u8], props: BasicProperties| {
            let mut d = Delivery::mock(1, "".into(), "q".into(), false, data.to_vec());
            d.properties = props;
            d
        };
        assert_eq!(barrier_of(&with(b"", props.clone())), Some(42));
        assert_eq!(
            barrier_of(&with(b"{}", props)),
            None,
            "an event is never one"
        );
        assert_eq!(barrier_of(&with(b"", BasicProperties::default())), None);
    }
}
