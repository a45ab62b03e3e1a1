//! Acks in delivery order: a [`Settler`] per channel gathers what its
//! tasks finished into as few acks as the broker allows (one `multiple`
//! ack covers every message up to it), never acking a tag twice and
//! sending each requeue before any ack that would cover it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio::sync::mpsc;

use super::Settle;

/// How long a message handed back waits first, so a dependency outage does
/// not spin the queue.
const REQUEUE_PAUSE: Duration = Duration::from_millis(500);

/// Settles one channel's messages in delivery order (see
/// [`settle_in_order`]) for whichever tasks handle them: each message is
/// noted as received, in delivery order, before it is settled.
#[derive(Clone)]
pub(crate) struct Settler {
    notes: mpsc::UnboundedSender<Note>,
    task: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Settler {
    /// Settles `channel`'s messages, letting up to `gather_max` finished
    /// ones wait (at most [`GATHER`]) to share one ack.
    pub(crate) fn start(channel: Channel, gather_max: usize) -> Settler {
        let (notes, inbox) = mpsc::unbounded_channel();
        let task = tokio::spawn(settle_in_order(channel, inbox, gather_max));
        Settler {
            notes,
            task: Arc::new(std::sync::Mutex::new(Some(task))),
        }
    }

    /// The broker handed over `tag`.
    pub(crate) fn received(&self, tag: u64) {
        let _ = self.notes.send(Note::Received(tag));
    }

    /// `tag` is done with.
    pub(crate) fn settled(&self, tag: u64, settle: Settle) {
        let _ = self.notes.send(Note::Settled(tag, settle));
    }

    /// `tag` is done with; a message handed back first waits a little, so a
    /// dependency outage does not spin the queue.
    pub(crate) async fn settled_after_pause(&self, tag: u64, settle: Settle) {
        if settle == Settle::Requeue {
            tokio::time::sleep(REQUEUE_PAUSE).await;
        }
        self.settled(tag, settle);
    }

    /// Sends the last acks once every clone is dropped; false if that did
    /// not happen by `deadline`.
    pub(crate) async fn finish(self, deadline: tokio::time::Instant) -> bool {
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        drop(self);
        match task {
            Some(task) => tokio::time::timeout_at(deadline, task).await.is_ok(),
            None => true,
        }
    }
}

/// What the consumer loop and the handlers tell the settling task.
enum Note {
    /// The broker handed over `tag`; it is settled later.
    Received(u64),
    /// The handler of `tag` is done with it.
    Settled(u64, Settle),
}

/// Where one received, unsettled message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Its handler still runs.
    Handling,
    /// Finished: to ack.
    Done,
    /// Finished: to hand back to the queue.
    Requeue,
}

/// One settling frame, in the order it must reach the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// `basic.ack`; with `multiple`, every unacked message up to `tag`.
    Ack { tag: u64, multiple: bool },
    /// `basic.nack` with `requeue`.
    Requeue(u64),
}

/// A channel's unsettled messages, in delivery order, and where they stand.
/// A message leaves it once its ack or requeue is sent, so it never holds
/// more than the prefetch window plus what finished since the last pass,
/// however long one handler runs.
#[derive(Debug, Default)]
struct Ledger {
    open: VecDeque<(u64, Standing)>,
    /// How many entries of `open` are finished (not `Handling`).
    finished: usize,
}

impl Ledger {
    fn received(&mut self, tag: u64) {
        self.open.push_back((tag, Standing::Handling));
    }

    fn note(&mut self, notes: impl Iterator<Item = Note>) {
        for note in notes {
            match note {
                Note::Received(tag) => self.received(tag),
                Note::Settled(tag, settle) => self.settled(tag, settle),
            }
        }
    }

    fn settled(&mut self, tag: u64, settle: Settle) {
        // Tags rise in delivery order, so `open` is sorted.
        if let Ok(i) = self.open.binary_search_by_key(&tag, |(t, _)| *t)
            && self.open[i].1 == Standing::Handling
        {
            self.open[i].1 = match settle {
                Settle::Ack => Standing::Done,
                Settle::Requeue => Standing::Requeue,
            };
            self.finished += 1;
        }
    }

    /// What to send now for every finished message. The finished front goes
    /// as runs of one ack with `multiple`, each run broken by a requeue sent
    /// before the next run's ack, so no requeue is ever acked by mistake.
    /// Finished messages behind one still handled (a slow webhook) are sent
    /// one by one in the same pass: nothing waits for a slow neighbour, so the
    /// prefetch window never fills with finished work. A run's ack names
    /// its last tag, never one sent before (the broker would refuse an ack
    /// of an unknown tag, even with `multiple`); it may pass over those.
    fn actions(&mut self) -> Vec<Action> {
        self.finished = 0;
        let mut actions = Vec::new();
        let mut run = None;
        while let Some(&(tag, standing)) = self.open.front() {
            match standing {
                Standing::Handling => break,
                Standing::Done => run = Some(tag),
                Standing::Requeue => {
                    if let Some(last) = run.take() {
                        actions.push(Action::Ack {
                            tag: last,
                            multiple: true,
                        });
                    }
                    actions.push(Action::Requeue(tag));
                }
            }
            self.open.pop_front();
        }
        if let Some(last) = run {
            actions.push(Action::Ack {
                tag: last,
                multiple: true,
            });
        }
        self.open.retain(|&(tag, standing)| {
            match standing {
                Standing::Handling => return true,
                Standing::Done => actions.push(Action::Ack {
                    tag,
                    multiple: false,
                }),
                Standing::Requeue => actions.push(Action::Requeue(tag)),
            }
            false
        });
        actions
    }
}

/// Most notes taken in one pass.
const SETTLE_BATCH: usize = 512;

/// The longest a finished message waits for others to be acked with.
const GATHER: Duration = Duration::from_millis(2);

/// Settles one channel's messages as their handlers finish (see
/// [`Ledger::actions`]): under load most acks are covered by one
/// `basic.ack` with `multiple`, which spares the broker an operation per
/// message. At a steady rate messages finish one at a time, so a finished
/// message waits up to [`GATHER`] for those finishing just after it (or
/// until `gather_max` have finished): one frame, one wake-up of the
/// connection's I/O thread and one broker operation for a dozen messages
/// instead of one each. The wait holds at most `gather_max` of the prefetch
/// window, and the event or delivery it acks is already done.
async fn settle_in_order(
    channel: Channel,
    mut notes: mpsc::UnboundedReceiver<Note>,
    gather_max: usize,
) {
    let mut ledger = Ledger::default();
    let mut batch = Vec::with_capacity(SETTLE_BATCH);
    let mut open = true;
    while open {
        open = notes.recv_many(&mut batch, SETTLE_BATCH).await > 0;
        ledger.note(batch.drain(..));
        let deadline = tokio::time::Instant::now() + GATHER;
        while open && ledger.finished > 0 && ledger.finished < gather_max {
            match tokio::time::timeout_at(deadline, notes.recv_many(&mut batch, SETTLE_BATCH)).await
            {
                Ok(n) => {
                    open = n > 0;
                    ledger.note(batch.drain(..));
                }
                Err(_) => break,
            }
        }
        if let Err(e) = send(&channel, ledger.actions()).await {
            // The channel is gone; the broker redelivers what was not acked.
            tracing::warn!(error = %crate::logging::Chain(&e), "could not settle messages; the broker will redeliver them");
        }
    }
}

/// Sends `actions` in order: acks go out together, but a requeue waits for
/// the acks before it and goes before those after it.
async fn send(channel: &Channel, actions: Vec<Action>) -> lapin::Result<()> {
    let mut acks = Vec::new();
    let mut result = Ok(());
    for action in actions {
        match action {
            Action::Ack { tag, multiple } => {
                acks.push(channel.basic_ack(tag, BasicAckOptions { multiple }));
            }
            Action::Requeue(tag) => {
                for r in futures_util::future::join_all(acks.drain(..)).await {
                    result = result.and(r);
                }
                let options = BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                };
                result = result.and(channel.basic_nack(tag, options).await);
            }
        }
    }
    for r in futures_util::future::join_all(acks).await {
        result = result.and(r);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(tag: u64, multiple: bool) -> Action {
        Action::Ack { tag, multiple }
    }

    fn ledger(tags: std::ops::RangeInclusive<u64>) -> Ledger {
        let mut l = Ledger::default();
        tags.for_each(|t| l.received(t));
        l
    }

    #[test]
    fn finished_in_order_is_one_ack() {
        let mut l = ledger(1..=4);
        for t in [2, 1, 4, 3] {
            l.settled(t, Settle::Ack);
        }
        assert_eq!(l.actions(), vec![ack(4, true)]);
        assert!(l.actions().is_empty(), "nothing is sent twice");
    }

    #[test]
    fn finished_behind_a_slow_message_is_acked_at_once_and_alone() {
        let mut l = ledger(1..=3);
        l.settled(2, Settle::Ack);
        l.settled(3, Settle::Ack);
        assert_eq!(l.actions(), vec![ack(2, false), ack(3, false)]);
        l.received(4);
        l.settled(4, Settle::Ack);
        assert_eq!(l.actions(), vec![ack(4, false)]);
        l.settled(1, Settle::Ack);
        // Not 4: the broker refuses (and closes the channel on) an ack of a
        // tag already acked, even with `multiple`.
        assert_eq!(l.actions(), vec![ack(1, true)]);
        assert!(l.actions().is_empty());
    }

    #[test]
    fn a_long_handler_does_not_grow_the_ledger() {
        let mut l = ledger(1..=1);
        for tag in 2..=10_000 {
            l.received(tag);
            l.settled(tag, Settle::Ack);
            assert_eq!(l.actions(), vec![ack(tag, false)]);
        }
        assert_eq!(l.open.len(), 1, "only the message still handled is kept");
        l.settled(1, Settle::Ack);
        assert_eq!(l.actions(), vec![ack(1, true)]);
        assert!(l.open.is_empty());
    }

    #[test]
    fn a_requeue_is_sent_before_any_ack_that_would_cover_it() {
        let mut l = ledger(1..=4);
        l.settled(1, Settle::Ack);
        l.settled(2, Settle::Requeue);
        l.settled(3, Settle::Ack);
        assert_eq!(
            l.actions(),
            vec![ack(1, true), Action::Requeue(2), ack(3, true)]
        );
        l.settled(4, Settle::Requeue);
        assert_eq!(l.actions(), vec![Action::Requeue(4)]);
    }

    #[test]
    fn a_requeue_behind_a_slow_message_goes_at_once() {
        let mut l = ledger(1..=3);
        l.settled(2, Settle::Requeue);
        assert_eq!(l.actions(), vec![Action::Requeue(2)]);
        l.settled(1, Settle::Ack);
        l.settled(3, Settle::Ack);
        assert_eq!(l.actions(), vec![ack(3, true)]);
    }

    #[test]
    fn a_tag_not_received_is_ignored() {
        let mut l = ledger(1..=1);
        l.settled(7, Settle::Ack);
        assert!(l.actions().is_empty());
    }
}
