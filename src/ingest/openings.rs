//! One pass of the router over a batch of `{ns}.ingest`: which events it
//! fans out itself, which it moves to their partition's queue, and the
//! barriers that open a partition held here (see `shortcut.rs`).

use std::collections::BTreeMap;

use lapin::message::Delivery;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::direct::{DirectFanOuts, Dispatched, Taken};
use super::shortcut::{OPEN_WITHIN, Opening as Stands, Shortcut};

/// What one pass of the router publishes to the partitions, in order.
pub(super) enum Out {
    /// An event moved to partition `.0` (boxed: a barrier is small).
    Event(usize, Box<Delivery>),
    /// A barrier (its nonce) behind the events moved to partition `.0`.
    Barrier(usize, u64),
}

/// A partition whose barrier is awaited, and its events kept aside meanwhile.
struct Opening {
    nonce: u64,
    since: Instant,
    kept: Vec<Taken>,
}

/// What one pass of the router works with.
pub(super) struct Pass<'p, 'd> {
    pub(super) shortcut: &'p Shortcut,
    pub(super) fan_outs: &'p mut DirectFanOuts<'d>,
    /// What the pass publishes to the partitions, in order.
    pub(super) out: &'p mut Vec<Out>,
    pub(super) now: Instant,
    pub(super) token: &'p CancellationToken,
}

/// The partitions whose barrier the router awaits, those whose direct
/// fan-outs it awaits before their next events go to the queue, and when
/// those whose opening failed (or that just closed) may try again.
#[derive(Default)]
pub(super) struct Openings {
    waiting: BTreeMap<usize, Opening>,
    /// Partitions that closed or were let go while direct fan-outs of them
    /// still ran: their next events, kept aside (unacked) until those are
    /// done, so that a crash of this process never puts a direct one back
    /// in `{ns}.ingest` behind later ones already in the queue.
    draining: BTreeMap<usize, Vec<Taken>>,
    retry_at: BTreeMap<usize, Instant>,
}

impl Openings {
    /// Whether a barrier, or the end of a partition's direct fan-outs, is
    /// awaited (the router then looks again soon, even with no new event).
    pub(super) fn any(&self) -> bool {
        !self.waiting.is_empty() || !self.draining.is_empty()
    }

    /// Moves to the queue the events kept aside for the partitions whose
    /// direct fan-outs are all done, before any later event of theirs.
    fn drained(&mut self, pass: &mut Pass<'_, '_>) {
        let done: Vec<usize> = self
            .draining
            .keys()
            .filter(|p| pass.shortcut.is_quiet(**p))
            .copied()
            .collect();
        for p in done {
            for taken in self.draining.remove(&p).unwrap_or_default() {
                pass.out.push(Out::Event(p, Box::new(taken.0)));
            }
        }
    }

    /// Ends the openings settled since the last pass (open, not reached in
    /// time, or with too many events kept): their kept events are
    /// dispatched, before any later event of their partition.
    pub(super) async fn settle(&mut self, pass: &mut Pass<'_, '_>, batch_parts: &[usize]) {
        self.drained(pass);
        let now = pass.now;
        let settled: Vec<usize> = self
            .waiting
            .iter()
            .filter(|(p, o)| {
                pass.shortcut.opening(**p, o.nonce) != Stands::Waiting
                    || now.duration_since(o.since) >= OPEN_WITHIN
                    || o.kept.len() >= KEEP_AT_MOST
            })
            .map(|(p, _)| *p)
            .collect();
        for p in settled {
            let Some(o) = self.waiting.remove(&p) else {
                continue;
            };
            let open = pass.shortcut.opening(p, o.nonce) == Stands::Open;
            if open {
                tracing::info!(
                    partition = p,
                    "fanning out a partition held here without the routing hop"
                );
            } else if pass.shortcut.is_held(p) {
                tracing::debug!(
                    partition = p,
                    "the partition's barrier was not reached in time (its queue has a backlog)"
                );
                self.retry_at.insert(p, now + OPEN_WITHIN);
            }
            let others = batch_parts.iter().any(|q| *q != p);
            for taken in o.kept {
                if let Some(taken) = self.dispatch(pass, p, taken, others).await {
                    pass.out.push(Out::Event(p, Box::new(taken.0)));
                }
            }
        }
    }

    /// Places each event of the batch: kept for its partition's opening,
    /// fanned out here, or moved to its partition's queue (behind a new
    /// barrier when the partition is held here and may open).
    pub(super) async fn place(
        &mut self,
        pass: &mut Pass<'_, '_>,
        batch: Vec<Taken>,
        batch_parts: Vec<usize>,
    ) {
        let now = pass.now;
        let others_behind = others_behind(&batch_parts);
        for ((taken, p), others) in batch.into_iter().zip(batch_parts).zip(others_behind) {
            if let Some(o) = self.waiting.get_mut(&p) {
                o.kept.push(taken);
                continue;
            }
            let Some(taken) = self.dispatch(pass, p, taken, others).await else {
                continue;
            };
            let may_open =
                pass.shortcut.is_held(p) && self.retry_at.get(&p).is_none_or(|t| *t <= now);
            if may_open {
                let nonce = uuid::Uuid::new_v4().as_u64_pair().0;
                pass.out.push(Out::Barrier(p, nonce));
                let kept = vec![taken];
                self.waiting.insert(
                    p,
                    Opening {
                        nonce,
                        since: now,
                        kept,
                    },
                );
            } else {
                pass.out.push(Out::Event(p, Box::new(taken.0)));
            }
        }
    }

    /// Fans `taken` out here if its partition is direct; else hands it back
    /// for its partition's queue, or keeps it aside while direct fan-outs
    /// of the partition still run (it just closed or is let go; it may try
    /// to open again [`OPEN_WITHIN`] later).
    async fn dispatch(
        &mut self,
        pass: &mut Pass<'_, '_>,
        p: usize,
        taken: Taken,
        others: bool,
    ) -> Option<Taken> {
        if let Some(kept) = self.draining.get_mut(&p) {
            kept.push(taken);
            return None;
        }
        match pass.fan_outs.dispatch(p, taken, others, pass.token).await {
            Dispatched::Done => None,
            Dispatched::Queue { taken, closed } => {
                if closed {
                    self.retry_at.insert(p, pass.now + OPEN_WITHIN);
                }
                if pass.shortcut.is_quiet(p) {
                    return Some(*taken);
                }
                self.draining.insert(p, vec![*taken]);
                None
            }
        }
    }
}

/// For each event of a batch (by partition), whether an event of another
/// partition comes after it in the batch.
fn others_behind(parts: &[usize]) -> Vec<bool> {
    let mut behind = vec![false; parts.len()];
    // The partition right behind, and whether a second one comes later.
    let mut next: Option<usize> = None;
    let mut two = false;
    for i in (0..parts.len()).rev() {
        behind[i] = two || next.is_some_and(|q| q != parts[i]);
        if let Some(q) = next
            && q != parts[i]
        {
            two = true;
        }
        next = Some(parts[i]);
    }
    behind
}

/// Most events of a partition the router keeps aside while it awaits the
/// partition's barrier: more, and the queue has a backlog in front of the
/// barrier; the events go to the queue and the opening is tried later.
/// Two fifths of the router's prefetch (5 batches of 500): a burst that
/// starts while its partition opens fills it in a moment, and a smaller
/// bound (it was 256) made the opening fail at a burst's start, leaving the
/// burst on the routing hop; the other three fifths keep the router taking
/// the other partitions' events meanwhile.
const KEEP_AT_MOST: usize = 1_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_knows_whether_another_partition_waits_behind_it() {
        assert_eq!(others_behind(&[]), Vec::<bool>::new());
        assert_eq!(others_behind(&[3, 3, 3]), vec![false; 3]);
        assert_eq!(others_behind(&[3, 3, 5]), vec![true, true, false]);
        assert_eq!(
            others_behind(&[5, 3, 3, 5, 5]),
            vec![true, true, true, false, false]
        );
        assert_eq!(others_behind(&[3, 5, 3]), vec![true, true, false]);
    }
}
