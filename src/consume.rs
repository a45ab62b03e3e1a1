//! The consumer loop shared by ingest and delivery: bounded concurrency
//! (prefetch plus a semaphore), one task per message, acks coalesced in
//! delivery order, and a graceful stop that leaves unfinished messages
//! unacked so RabbitMQ redelivers them.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How to settle a message once handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Done (its next hop, if any, is durable).
    Ack,
    /// Not handled (a dependency is down): hand back to the queue for a retry.
    Requeue,
}

/// A started consumer: the broker is already pushing messages to it.
pub(crate) struct Consuming {
    channel: Channel,
    consumer: lapin::Consumer,
    queue: String,
    concurrency: usize,
    exclusive: bool,
}

/// Starts consuming `queue` with at most `concurrency` messages in hand: the
/// prefetch equals the concurrency, so the broker never pushes more than can be
/// worked on and the rest stays available to other replicas. `exclusive`:
/// as the queue's only consumer; refused (see [`is_refused`]) while another
/// consumes it.
pub(crate) async fn start(
    conn: &Connection,
    queue: String,
    concurrency: usize,
    exclusive: bool,
) -> lapin::Result<Consuming> {
    let channel = conn.create_channel().await?;
    let prefetch = concurrency.min(u16::MAX as usize) as u16;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let options = BasicConsumeOptions {
        exclusive,
        ..BasicConsumeOptions::default()
    };
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            options,
            FieldTable::default(),
        )
        .await?;
    Ok(Consuming {
        channel,
        consumer,
        queue,
        concurrency,
        exclusive,
    })
}

/// Whether `e` is the broker refusing an exclusive consumer because the
/// queue has another consumer (`ACCESS_REFUSED`, which closes the channel).
pub(crate) fn is_refused(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp)
        if *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED))
}

impl Consuming {
    /// Handles messages until `token` is cancelled (Ok) or the channel fails
    /// (Err, so the caller reconnects). On cancel, in-flight handlers get
    /// `drain` to finish; what is left stays unacked and is redelivered.
    pub(crate) async fn run<H, F>(
        self,
        token: &CancellationToken,
        drain: Duration,
        handler: H,
    ) -> lapin::Result<()>
    where
        H: Fn(Delivery, i64) -> F + Send + Sync + 'static,
        F: Future<Output = Settle> + Send + 'static,
    {
        let Consuming {
            channel,
            mut consumer,
            queue,
            concurrency,
            exclusive,
        } = self;
        // Explicit bound on concurrent handlers, matching the prefetch.
        let permits = Arc::new(Semaphore::new(concurrency));
        let tracker = TaskTracker::new();
        let handler = Arc::new(handler);
        let (notes, inbox) = mpsc::unbounded_channel();
        let settling = tokio::spawn(settle_in_order(channel.clone(), inbox));
        let result = loop {
            let permit = tokio::select! {
                _ = token.cancelled() => break Ok(()),
                p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
            };
            let delivery = tokio::select! {
                _ = token.cancelled() => break Ok(()),
                next = consumer.next() => match next {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => break Err(e),
                    None => break Err(lapin::ErrorKind::IOError(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "consumer stream ended").into()).into()),
                },
            };
            let tag = delivery.delivery_tag;
            // Stamped here, one message after the other, so stamps follow
            // the queue's order (the handlers run concurrently).
            let received_us = crate::clock::unix_micros();
            // Sent before the handler starts, so it precedes its `Settled`.
            let _ = notes.send(Note::Received(tag));
            let (handler, notes) = (handler.clone(), notes.clone());
            tracker.spawn(async move {
                let settle = handler(delivery, received_us).await;
                if settle == Settle::Requeue {
                    // A short pause so a dependency outage does not spin the queue.
                    tokio::time::sleep(REQUEUE_PAUSE).await;
                }
                let _ = notes.send(Note::Settled(tag, settle));
                drop(permit);
            });
        };
        // The drain starts now and includes stopping the consumer.
        let deadline = tokio::time::Instant::now() + drain;
        // An exclusive consumer keeps its hold while it drains: cancelled,
        // it would let the next process take the queue and start on later
        // messages while this one still works on earlier ones (and the
        // unstarted ones return only when the channel closes).
        if result.is_ok() && !exclusive {
            // Stop the broker pushing more before draining; what was already
            // pushed but not started stays unacked and returns to the queue.
            let cancel = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default());
            let bound = deadline.min(tokio::time::Instant::now() + Duration::from_secs(5));
            let _ = tokio::time::timeout_at(bound, cancel).await;
        }
        tracker.close();
        if tokio::time::timeout_at(deadline, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(queue = %queue, "in-flight work not finished in time; handed back unacked");
        }
        // Every handler is done or abandoned: send the last acks.
        drop(notes);
        if tokio::time::timeout_at(deadline, settling).await.is_err() {
            tracing::warn!(queue = %queue, "last acks not sent in time; the broker redelivers those messages");
        }
        crate::broker::close_channel(&channel, "shutdown").await;
        result
    }
}

/// How long a message handed back waits first, so a dependency outage does
/// not spin the queue.
const REQUEUE_PAUSE: Duration = Duration::from_millis(500);

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
}

impl Ledger {
    fn received(&mut self, tag: u64) {
        self.open.push_back((tag, Standing::Handling));
    }

    fn settled(&mut self, tag: u64, settle: Settle) {
        // Tags rise in delivery order, so `open` is sorted.
        if let Ok(i) = self.open.binary_search_by_key(&tag, |(t, _)| *t) {
            self.open[i].1 = match settle {
                Settle::Ack => Standing::Done,
                Settle::Requeue => Standing::Requeue,
            };
        }
    }

    /// What to send now for every finished message. The finished front goes
    /// as runs of one ack with `multiple`, each run broken by a requeue sent
    /// before the next run's ack, so no requeue is ever acked by mistake.
    /// Finished messages behind one still handled (a slow webhook) are sent
    /// one by one at once: nothing waits for a slow neighbour, so the
    /// prefetch window never fills with finished work. A run's ack names
    /// its last tag, never one sent before (the broker would refuse an ack
    /// of an unknown tag, even with `multiple`); it may pass over those.
    fn actions(&mut self) -> Vec<Action> {
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

/// Settles one channel's messages as their handlers finish (see
/// [`Ledger::actions`]): under load most acks are covered by one
/// `basic.ack` with `multiple`, which spares the broker an operation per
/// message.
async fn settle_in_order(channel: Channel, mut notes: mpsc::UnboundedReceiver<Note>) {
    let mut ledger = Ledger::default();
    let mut batch = Vec::with_capacity(SETTLE_BATCH);
    while notes.recv_many(&mut batch, SETTLE_BATCH).await > 0 {
        for note in batch.drain(..) {
            match note {
                Note::Received(tag) => ledger.received(tag),
                Note::Settled(tag, settle) => ledger.settled(tag, settle),
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
