//! The consumer loop shared by ingest and delivery: bounded concurrency
//! (prefetch plus a semaphore), one task per message, and a graceful stop
//! that leaves unfinished messages unacked so RabbitMQ redelivers them.

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
use tokio::sync::Semaphore;
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
}

/// Starts consuming `queue` with at most `concurrency` messages in hand: the
/// prefetch equals the concurrency, so the broker never pushes more than can be
/// worked on and the rest stays available to other replicas.
pub(crate) async fn start(
    conn: &Connection,
    queue: String,
    concurrency: usize,
) -> lapin::Result<Consuming> {
    let channel = conn.create_channel().await?;
    let prefetch = concurrency.min(u16::MAX as usize) as u16;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(Consuming {
        channel,
        consumer,
        queue,
        concurrency,
    })
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
        H: Fn(Delivery) -> F + Send + Sync + 'static,
        F: Future<Output = (Delivery, Settle)> + Send + 'static,
    {
        let Consuming {
            channel,
            mut consumer,
            queue,
            concurrency,
        } = self;
        // Explicit bound on concurrent handlers, matching the prefetch.
        let permits = Arc::new(Semaphore::new(concurrency));
        let tracker = TaskTracker::new();
        let handler = Arc::new(handler);
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
            let (handler, channel) = (handler.clone(), channel.clone());
            tracker.spawn(async move {
                let (delivery, settle) = handler(delivery).await;
                settle_message(&channel, &delivery, settle).await;
                drop(permit);
            });
        };
        // The drain starts now and includes stopping the consumer.
        let deadline = tokio::time::Instant::now() + drain;
        if result.is_ok() {
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
        crate::broker::close_channel(&channel, "shutdown").await;
        result
    }
}

/// Acks or requeues on the channel itself: `Delivery::acker` would route
/// each through lapin's internal RPC task first, one more hand-off (and
/// thread wake-up) per message.
async fn settle_message(channel: &Channel, delivery: &Delivery, settle: Settle) {
    let tag = delivery.delivery_tag;
    let outcome = match settle {
        Settle::Ack => channel.basic_ack(tag, BasicAckOptions::default()).await,
        Settle::Requeue => {
            // A short pause so a dependency outage does not spin the queue.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let options = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            channel.basic_nack(tag, options).await
        }
    };
    if let Err(e) = outcome {
        // The channel is gone; the broker redelivers the message.
        tracing::warn!(error = %crate::logging::Chain(&e), "could not settle message; the broker will redeliver it");
    }
}
