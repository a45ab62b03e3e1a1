//! The consumer loop shared by ingest and delivery: bounded concurrency
//! (prefetch plus a semaphore), one task per message, acks coalesced in
//! delivery order (and gathered for up to 2 ms at a steady rate), and a
//! graceful stop that leaves unfinished messages unacked so RabbitMQ
//! redelivers them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod settle;

pub(crate) use settle::Settler;

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
        let tracker = TaskTracker::new();
        let settler = Settler::start(channel.clone(), gather_max);
        let result = dispatch(
            token,
            &mut consumer,
            concurrency,
            &tracker,
            handler,
            &settler,
        )
        .await;
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
        finish(&queue, tracker, settler, deadline).await;
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

/// Waits until `deadline` for the handlers still running, then sends the
/// last acks; what is not done by then stays unacked for the broker to
/// deliver again.
async fn finish(
    queue: &str,
    tracker: TaskTracker,
    settler: Settler,
    deadline: tokio::time::Instant,
) {
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
}

/// Hands each message, in the queue's order, to `handler` in a task of its
/// own, at most `concurrency` at once, until `token` is cancelled (Ok) or
/// the channel fails (Err).
async fn dispatch<H, F>(
    token: &CancellationToken,
    consumer: &mut lapin::Consumer,
    concurrency: usize,
    tracker: &TaskTracker,
    handler: H,
    settler: &Settler,
) -> lapin::Result<()>
where
    H: Fn(Delivery, i64) -> F + Send + Sync + 'static,
    F: Future<Output = Settle> + Send + 'static,
{
    // Explicit bound on concurrent handlers, matching the prefetch.
    let permits = Arc::new(Semaphore::new(concurrency));
    let handler = Arc::new(handler);
    loop {
        let permit = tokio::select! {
            _ = token.cancelled() => return Ok(()),
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let delivery = tokio::select! {
            _ = token.cancelled() => return Ok(()),
            next = consumer.next() => match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => return Err(e),
                None => return Err(lapin::ErrorKind::IOError(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "consumer stream ended").into()).into()),
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection to the local RabbitMQ (`WF_AMQP_URL` to use another).
    async fn local_broker(name: &str) -> Connection {
        let url = std::env::var("WF_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        crate::broker::connect(&url, name).await.unwrap()
    }

    async fn publish_to(ch: &Channel, queue: &str, body: &[u8]) {
        ch.basic_publish(
            "".into(),
            queue.into(),
            lapin::options::BasicPublishOptions::default(),
            body,
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap();
    }

    /// A queue of its own on `conn`, exclusive: gone with the connection
    /// even if the test fails.
    async fn exclusive_queue(conn: &Connection) -> (Channel, String) {
        let queue = format!("test-consume-{}", uuid::Uuid::new_v4().simple());
        let ch = conn.create_channel().await.unwrap();
        let options = lapin::options::QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        ch.queue_declare(queue.as_str().into(), options, FieldTable::default())
            .await
            .unwrap();
        (ch, queue)
    }

    /// Against the local RabbitMQ, on a queue of its own (deleted at the
    /// end). A message that finishes alone, with nothing finishing after it,
    /// must still be acked soon: unacked, it would hold a prefetch slot, and
    /// come back after a crash. Seen through the prefetch: once it is acked,
    /// the broker hands over a whole window of new messages.
    #[tokio::test]
    async fn a_message_finished_alone_is_acked_without_waiting_for_others() {
        use lapin::options::QueueDeleteOptions;
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

        let conn = local_broker("consume-test").await;
        let (ch, queue) = exclusive_queue(&conn).await;
        let publish = |body: &'static [u8]| publish_to(&ch, &queue, body);
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
