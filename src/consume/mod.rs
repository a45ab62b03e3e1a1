//! The consumer loop shared by ingest and delivery: bounded concurrency
//! (prefetch plus a semaphore), one task per message, acks coalesced in
//! delivery order (and gathered for up to 2 ms at a steady rate), and a
//! graceful stop that leaves unfinished messages unacked so RabbitMQ
//! redelivers them.

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
    gather_max: usize,
    /// An exclusive consumer's hold, let go once its channel is closed.
    hold: Option<Hold>,
    /// Awaited after the last ack, before the hold is let go.
    before_release: Option<futures_util::future::BoxFuture<'static, ()>>,
}

/// This connection's hold on a queue, so that one process at a time
/// consumes it: the exclusive queue `{queue}.owner`, which RabbitMQ lets
/// only one connection declare (another gets `RESOURCE_LOCKED`) and
/// deletes when that connection closes or its node goes down.
///
/// An exclusive *consumer* alone is not enough: quorum queues accept the
/// flag but do not enforce it (RabbitMQ 3.10 let two processes consume one
/// quorum ingest partition at once), while an exclusive queue is the same
/// lock on every queue type.
pub(crate) struct Hold {
    channel: Option<Channel>,
    owner: String,
}

impl Hold {
    /// Takes the hold on `queue`; a refused error (see [`is_refused`]) while
    /// another connection holds it.
    pub(crate) async fn take(conn: &Connection, queue: &str) -> lapin::Result<Hold> {
        use lapin::options::QueueDeclareOptions;
        let channel = conn.create_channel().await?;
        let owner = format!("{queue}.owner");
        let options = QueueDeclareOptions {
            exclusive: true,
            ..QueueDeclareOptions::default()
        };
        let declare = channel.queue_declare(owner.as_str().into(), options, FieldTable::default());
        crate::broker::within(crate::broker::BROKER_RPC_TIMEOUT, "taking a hold", declare).await?;
        Ok(Hold {
            channel: Some(channel),
            owner,
        })
    }

    /// Lets the hold go: the next process may take the queue.
    pub(crate) async fn release(mut self) {
        if let Some(channel) = self.channel.take() {
            release(channel, std::mem::take(&mut self.owner)).await;
        }
    }
}

async fn release(channel: Channel, owner: String) {
    use lapin::options::QueueDeleteOptions;
    let delete = channel.queue_delete(owner.as_str().into(), QueueDeleteOptions::default());
    let limit = crate::broker::BROKER_RPC_TIMEOUT;
    // Not deleted in time: it goes with the connection.
    let _ = crate::broker::within(limit, "letting a hold go", delete).await;
    crate::broker::close_channel(&channel, "released").await;
}

impl Drop for Hold {
    /// A hold dropped without `release` (its task panicked or was
    /// aborted) is let go in the background, or with the connection.
    fn drop(&mut self) {
        if let Some(channel) = self.channel.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(release(channel, std::mem::take(&mut self.owner)));
        }
    }
}

/// Starts consuming `queue` with at most `concurrency` messages in hand: the
/// prefetch equals the concurrency, so the broker never pushes more than can be
/// worked on and the rest stays available to other replicas. `exclusive`:
/// as the queue's only consumer, under a [`Hold`]; refused (see
/// [`is_refused`]) while another process holds it.
pub(crate) async fn start(
    conn: &Connection,
    queue: String,
    concurrency: usize,
    exclusive: bool,
) -> lapin::Result<Consuming> {
    let hold = match exclusive {
        true => Some(Hold::take(conn, &queue).await?),
        false => None,
    };
    let prefetch = concurrency.min(u16::MAX as usize) as u16;
    let (channel, consumer) = subscribe(conn, &queue, prefetch, exclusive).await?;
    Ok(Consuming {
        channel,
        consumer,
        queue,
        concurrency,
        exclusive,
        // An eighth of the window may wait, finished, for others to share
        // its ack.
        gather_max: (concurrency / 8).max(1),
        hold,
        before_release: None,
    })
}

/// A channel of its own consuming `queue` with `prefetch` (manual acks),
/// each RPC bounded: a cluster that just lost a node may leave one
/// unanswered.
pub(crate) async fn subscribe(
    conn: &Connection,
    queue: &str,
    prefetch: u16,
    exclusive: bool,
) -> lapin::Result<(Channel, lapin::Consumer)> {
    let channel = conn.create_channel().await?;
    let limit = crate::broker::BROKER_RPC_TIMEOUT;
    let qos = channel.basic_qos(prefetch, BasicQosOptions::default());
    crate::broker::within(limit, "setting the prefetch", qos).await?;
    let options = BasicConsumeOptions {
        exclusive,
        ..BasicConsumeOptions::default()
    };
    let consume = channel.basic_consume(queue.into(), "".into(), options, FieldTable::default());
    let consumer = crate::broker::within(limit, "starting a consumer", consume).await?;
    Ok((channel, consumer))
}

/// Whether `e` is the broker refusing a [`Hold`] held by another
/// connection (`RESOURCE_LOCKED`) or an exclusive consumer because the
/// queue has another consumer (`ACCESS_REFUSED`); either closes the channel.
pub(crate) fn is_refused(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp)
        if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED | AMQPSoftError::RESOURCELOCKED)))
}

impl Consuming {
    /// Lets up to `n` finished messages wait (at most 2 ms) to share one
    /// ack: a small window whose messages finish one at a time (a backlog
    /// drained at its webhook's pace) would otherwise ack each alone.
    pub(crate) fn gathering(mut self, n: usize) -> Self {
        self.gather_max = n.clamp(1, self.concurrency);
        self
    }

    /// Runs `leave` once this consumer is done and its last acks are sent,
    /// before its hold is let go: work this process does for the queue
    /// elsewhere ends before another process may take it.
    pub(crate) fn before_release(
        mut self,
        leave: futures_util::future::BoxFuture<'static, ()>,
    ) -> Self {
        self.before_release = Some(leave);
        self
    }

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
            gather_max,
            hold,
            before_release,
        } = self;
        // Explicit bound on concurrent handlers, matching the prefetch.
        let permits = Arc::new(Semaphore::new(concurrency));
        let tracker = TaskTracker::new();
        let handler = Arc::new(handler);
        let settler = Settler::start(channel.clone(), gather_max);
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
            // Noted before the handler starts, so it precedes its settling.
            settler.received(tag);
            let (handler, settler) = (handler.clone(), settler.clone());
            tracker.spawn(async move {
                let settle = handler(delivery, received_us).await;
                settler.settled_after_pause(tag, settle).await;
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
        if !settler.finish(deadline).await {
            tracing::warn!(queue = %queue, "last acks not sent in time; the broker redelivers those messages");
        }
        if let Some(leave) = before_release {
            leave.await;
        }
        crate::broker::close_channel(&channel, "shutdown").await;
        // Unacked messages are back in the queue: the next holder starts
        // on them.
        if let Some(hold) = hold {
            hold.release().await;
        }
        result
    }
}

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

    /// A connection to the local RabbitMQ (`WF_AMQP_URL` to use another).
    async fn local_broker(name: &str) -> Connection {
        let url = std::env::var("WF_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        crate::broker::connect(&url, name).await.unwrap()
    }

    /// Against the local RabbitMQ, on a queue of its own (deleted at the
    /// end). A message that finishes alone, with nothing finishing after it,
    /// must still be acked soon: unacked, it would hold a prefetch slot, and
    /// come back after a crash. Seen through the prefetch: once it is acked,
    /// the broker hands over a whole window of new messages.
    #[tokio::test]
    async fn a_message_finished_alone_is_acked_without_waiting_for_others() {
        use lapin::BasicProperties;
        use lapin::options::{BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

        let conn = local_broker("consume-test").await;
        let queue = format!("test-consume-{}", uuid::Uuid::new_v4().simple());
        let ch = conn.create_channel().await.unwrap();
        // Exclusive: gone with the connection even if the test fails.
        let options = QueueDeclareOptions {
            exclusive: true,
            ..QueueDeclareOptions::default()
        };
        ch.queue_declare(queue.as_str().into(), options, FieldTable::default())
            .await
            .unwrap();
        let publish = |body: &'static [u8]| {
            let (ch, queue) = (ch.clone(), queue.clone());
            async move {
                ch.basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default(),
                )
                .await
                .unwrap();
            }
        };
        // A window of 16: acks are gathered up to 2 finished messages.
        const WINDOW: usize = 16;
        let consuming = start(&conn, queue.clone(), WINDOW, false).await.unwrap();
        let (started, release) = (Arc::new(AtomicUsize::new(0)), Arc::new(Semaphore::new(0)));
        let token = CancellationToken::new();
        let run = {
            let (started, release, token) = (started.clone(), release.clone(), token.clone());
            tokio::spawn(async move {
                consuming
                    .run(&token, Duration::from_secs(5), move |d, _| {
                        let (started, release) = (started.clone(), release.clone());
                        async move {
                            started.fetch_add(1, SeqCst);
                            // "hold" messages stay in hand until released.
                            if d.data == b"hold" {
                                let _ = release.acquire().await;
                            }
                            Settle::Ack
                        }
                    })
                    .await
            })
        };
        let until = |n: usize, what: &'static str| {
            let started = started.clone();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while started.load(SeqCst) < n {
                    assert!(tokio::time::Instant::now() < deadline, "{what}");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        publish(b"alone").await;
        until(1, "the first message never arrived").await;
        for _ in 0..WINDOW {
            publish(b"hold").await;
        }
        // All 16 only if the first one was acked: unacked, it would keep
        // one of the 16 slots and the last message would stay queued.
        until(1 + WINDOW, "the message finished alone was never acked").await;
        release.add_permits(WINDOW);
        token.cancel();
        run.await.unwrap().unwrap();
        ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
        crate::broker::close_connection(&conn, "test done").await;
    }

    #[test]
    fn a_tag_not_received_is_ignored() {
        let mut l = ledger(1..=1);
        l.settled(7, Settle::Ack);
        assert!(l.actions().is_empty());
    }

    /// Against the local RabbitMQ. One process at a time holds a queue,
    /// whatever its type: quorum queues do not enforce an exclusive
    /// consumer, so two processes once fanned out one partition together.
    #[tokio::test]
    async fn a_queue_is_held_by_one_connection_at_a_time_quorum_queues_too() {
        use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};

        let one = local_broker("hold-test-1").await;
        let two = local_broker("hold-test-2").await;
        let queue = format!("test-hold-{}", uuid::Uuid::new_v4().simple());
        let ch = one.create_channel().await.unwrap();
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let mut quorum = FieldTable::default();
        quorum.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString("quorum".into()),
        );
        ch.queue_declare(queue.as_str().into(), durable, quorum)
            .await
            .unwrap();

        let first = start(&one, queue.clone(), 4, true).await.unwrap();
        let refused = start(&two, queue.clone(), 4, true).await.err();
        assert!(
            refused.as_ref().is_some_and(is_refused),
            "a second holder: {refused:?}"
        );
        // Let go once its consumer has stopped.
        let token = CancellationToken::new();
        token.cancel();
        first
            .run(&token, Duration::from_secs(1), |_, _| async { Settle::Ack })
            .await
            .unwrap();
        let second = start(&two, queue.clone(), 4, true).await.unwrap();
        // Gone with its connection too.
        drop(second);
        crate::broker::close_connection(&two, "test").await;
        let third = start(&one, queue.clone(), 4, true).await;
        assert!(
            third.is_ok(),
            "after the holder's connection closed: {:?}",
            third.err()
        );

        ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
        crate::broker::close_connection(&one, "test").await;
    }
}
