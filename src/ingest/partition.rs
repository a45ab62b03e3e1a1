//! Ingest partitions: every ingest process fans out, each a share of the
//! partitions.
//!
//! Producers' events arrive in `{ns}.ingest` as before. One process at a
//! time routes them (the holder of `{ns}.ingest`, see below; the others
//! stand by and take over within a second): it reads each event's
//! `application_id` and moves the event, unchanged, to partition
//! `{ns}.ingest.<p>`, `p` a fixed hash of the application. It publishes a
//! batch in the queue's order on one channel and acks it once the broker
//! confirmed it, so each application's events keep `{ns}.ingest`'s order.
//! An event whose application cannot be read goes to partition 0, where
//! fan-out rejects it with its reason.
//!
//! Each partition is fanned out by one process at a time, its holder.
//! Every ingest process holds a consumer on `{ns}.ingest.members`, whose
//! consumer count is how many there are; each takes free partitions up to
//! its share (the count divided into the partitions, rounded up) and hands
//! back the ones above it, so the partitions spread over the processes and
//! move within about a second when one starts, stops or dies. RabbitMQ
//! does the locking and the counting; nothing is elected in Redis: a
//! holder is the connection that declared the exclusive queue
//! `{queue}.owner` (`consume::Hold`), which RabbitMQ refuses to every other
//! connection and deletes when its owner's connection or node goes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::broker::{self, ConfirmedPublisher, Names};
use crate::consume;
use crate::metrics::Metrics;

/// How often a process looks at its share and at free partitions.
pub(crate) const BALANCE_EVERY: Duration = Duration::from_secs(1);

/// Most events the router moves in one batch (one confirm round trip).
const ROUTE_BATCH: usize = 500;

/// The partition of `application_id` among `n`: FNV-1a (64 bit) of its
/// bytes, a hash that never changes between releases or processes.
pub(crate) fn partition_of(application_id: &str, n: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in application_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % n.max(1) as u64) as usize
}

/// The `application_id` of an event's body, if it has a string one.
fn application_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        application_id: String,
    }
    serde_json::from_slice::<Envelope>(body)
        .ok()
        .map(|e| e.application_id)
}

/// The partition an event's body goes to (0 when it names no application).
pub(crate) fn partition_of_event(body: &[u8], n: usize) -> usize {
    application_of(body).map_or(0, |app| partition_of(&app, n))
}

/// Routes `{ns}.ingest` to the partitions while this process holds it;
/// `Err` with a refused error (see [`consume::is_refused`]) while another
/// process does, any other `Err` when the channel fails.
pub(crate) async fn route(
    conn: &Connection,
    names: &Names,
    partitions: usize,
    metrics: &Metrics,
    token: &CancellationToken,
) -> lapin::Result<()> {
    // One router at a time, whatever the queue type (see `consume::Hold`).
    let hold = consume::Hold::take(conn, &names.ingest()).await?;
    let routed = route_holding(conn, names, partitions, metrics, token).await;
    // Unacked events are back in `{ns}.ingest`: the next router starts on them.
    hold.release().await;
    routed
}

async fn route_holding(
    conn: &Connection,
    names: &Names,
    partitions: usize,
    metrics: &Metrics,
    token: &CancellationToken,
) -> lapin::Result<()> {
    let prefetch = (ROUTE_BATCH * (FULL_BATCHES_IN_FLIGHT + 1)) as u16;
    let (channel, mut consumer) = consume::subscribe(conn, &names.ingest(), prefetch, true).await?;
    tracing::info!(queue = %names.ingest(), partitions, "routing events to the ingest partitions");
    metrics.set_fanning_out(true);
    // Reset however this ends, a lost session dropping it included.
    let _routing = scopeguard(|| metrics.set_fanning_out(false));
    let publisher = ConfirmedPublisher::open(conn).await?;
    let queues: Vec<String> = (0..partitions).map(|p| names.ingest_partition(p)).collect();
    // Batches whose confirms are awaited, oldest first: the next batch is
    // published meanwhile (frames go out in order on the one channel), and
    // each is acked once it and every one before it are confirmed.
    let mut in_flight: VecDeque<(u64, ConfirmsOf)> = VecDeque::new();
    let result = loop {
        if in_flight.len() >= BATCHES_IN_FLIGHT
            && let Err(e) = settle_oldest(&channel, &mut in_flight).await
        {
            break Err(e);
        }
        let first = tokio::select! {
            _ = token.cancelled() => break Ok(()),
            next = consumer.next() => next,
            settled = settle_oldest(&channel, &mut in_flight), if !in_flight.is_empty() => match settled {
                Ok(()) => continue,
                Err(e) => break Err(e),
            },
        };
        let mut batch = match first {
            Some(Ok(d)) => vec![d],
            Some(Err(e)) => break Err(e),
            None => break Err(ended()),
        };
        // What the broker has pushed already joins the batch, no waiting.
        while batch.len() < ROUTE_BATCH {
            match consumer.next().now_or_never() {
                Some(Some(Ok(d))) => batch.push(d),
                _ => break,
            }
        }
        let messages: Vec<(&str, &[u8], BasicProperties)> = batch
            .iter()
            .map(|d| {
                let p = partition_of_event(&d.data, partitions);
                (queues[p].as_str(), d.data.as_slice(), d.properties.clone())
            })
            .collect();
        let last = batch.last().map_or(0, |d| d.delivery_tag);
        match publisher.forward(&messages).await {
            Ok(confirms) => in_flight.push_back((last, Box::pin(confirms))),
            Err(e) => break Err(publish_failed(e)),
        }
    };
    // What was confirmed is acked; the rest goes back.
    while !in_flight.is_empty() && result.is_ok() {
        if settle_oldest(&channel, &mut in_flight).await.is_err() {
            break;
        }
    }
    // Unacked events go back to `{ns}.ingest`, in order, for the next router.
    publisher.close().await;
    broker::close_channel(&channel, "routed").await;
    result
}

/// Runs `f` when dropped.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

fn scopeguard<F: FnMut()>(f: F) -> OnDrop<F> {
    OnDrop(f)
}

/// Batches published by the router whose confirms are awaited at once.
/// At a steady rate batches are small (an event or a few), and the next
/// one must not wait for the broker's confirm of the last (its disk
/// flush): the events are in their partition, being fanned out, already.
const BATCHES_IN_FLIGHT: usize = 64;

/// How many full batches the prefetch lets the router hold unacked (under
/// a burst each batch is full, and the prefetch is the bound).
const FULL_BATCHES_IN_FLIGHT: usize = 4;

type ConfirmsOf = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<bool>, broker::PublishError>> + Send>,
>;

/// Awaits the oldest batch's confirms, then acks it (and everything
/// before it); Err when a message came back or the channel failed.
async fn settle_oldest(
    channel: &lapin::Channel,
    in_flight: &mut VecDeque<(u64, ConfirmsOf)>,
) -> lapin::Result<()> {
    let Some((_, confirms)) = in_flight.front_mut() else {
        return Ok(());
    };
    // Timed out, the events go back to `{ns}.ingest` with the channel; the
    // next router (after a new session) moves them again, and fan-out
    // skips the copies it has already fanned out by their event id.
    let confirmed = confirms.map(|c| c.map_err(publish_failed));
    let returned = broker::within(
        broker::CONFIRMS_WITHIN,
        "confirming routed events",
        confirmed,
    )
    .await?;
    let (last, _) = in_flight.pop_front().expect("front exists");
    if returned.contains(&true) {
        // A partition queue deleted from outside: a new session
        // declares it again, and these events come back.
        let gone = std::io::Error::other("an ingest partition queue is missing");
        return Err(lapin::ErrorKind::IOError(Arc::new(gone)).into());
    }
    channel
        .basic_ack(last, BasicAckOptions { multiple: true })
        .await
}

fn publish_failed(e: broker::PublishError) -> lapin::Error {
    match e {
        broker::PublishError::Broker(e) => e,
        other => {
            lapin::ErrorKind::IOError(Arc::new(std::io::Error::other(other.to_string()))).into()
        }
    }
}

fn ended() -> lapin::Error {
    let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "consumer stream ended");
    lapin::ErrorKind::IOError(Arc::new(eof)).into()
}

/// Routes whenever this process can: stands by while another process
/// routes, asking again every [`BALANCE_EVERY`].
pub(crate) async fn keep_routing(
    conn: &Connection,
    names: &Names,
    partitions: usize,
    metrics: &Metrics,
    token: &CancellationToken,
) -> lapin::Result<()> {
    let mut standing_by = false;
    loop {
        match route(conn, names, partitions, metrics, token).await {
            Ok(()) => return Ok(()),
            Err(e) if consume::is_refused(&e) => {
                if !standing_by {
                    tracing::info!(queue = %names.ingest(), "another process routes ingest; standing by");
                    standing_by = true;
                }
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            _ = tokio::time::sleep(BALANCE_EVERY) => {}
        }
    }
}

/// This process's share of `partitions` among `members` processes.
pub(crate) fn share(partitions: usize, members: usize) -> usize {
    partitions.div_ceil(members.max(1))
}

/// The order a process asks for free partitions in: from an offset of its
/// own, so processes starting together do not all ask for the same ones.
fn asking_order(partitions: usize, offset: usize) -> impl Iterator<Item = usize> {
    (0..partitions).map(move |i| (i + offset) % partitions)
}

/// Fans out one partition: started with the exclusive consumer already in
/// place; ends when `token` is cancelled (after draining) or the channel fails.
pub(crate) type FanOut = Box<
    dyn Fn(
            usize,
            consume::Consuming,
            CancellationToken,
        ) -> futures_util::future::BoxFuture<'static, lapin::Result<()>>
        + Send
        + Sync,
>;

/// Holds this process's share of the partitions until `token` is
/// cancelled; `fan_out` runs each one held. Err when the connection fails.
pub(crate) async fn hold(
    conn: &Connection,
    names: &Names,
    partitions: usize,
    window: usize,
    metrics: &Metrics,
    fan_out: FanOut,
    token: &CancellationToken,
) -> lapin::Result<()> {
    let mut membership = Membership::join(conn, names).await?;
    let offset = partition_of(&uuid::Uuid::new_v4().to_string(), partitions);
    // Partition -> (which taking of it, how to hand it back).
    let mut held: BTreeMap<usize, (u64, CancellationToken)> = BTreeMap::new();
    // Partitions handed back whose fan-out still drains (which taking):
    // not taken again meanwhile, since this connection's own hold would
    // not refuse it.
    let mut handing: BTreeMap<usize, u64> = BTreeMap::new();
    let mut takings: u64 = 0;
    let _holding = scopeguard(|| metrics.set_partitions_held(0));
    let mut tasks: JoinSet<(usize, u64, lapin::Result<()>)> = JoinSet::new();
    let result = loop {
        // Partitions whose fan-out ended (its channel failed): free again.
        while let Some(done) = tasks.try_join_next() {
            if let Ok((p, taking, ran)) = done {
                // Not a later taking of the same partition.
                if held.get(&p).is_some_and(|(t, _)| *t == taking) {
                    held.remove(&p);
                }
                if handing.get(&p) == Some(&taking) {
                    handing.remove(&p);
                }
                if let Err(e) = ran {
                    tracing::debug!(partition = p, error = %crate::logging::Chain(&e), "partition fan-out ended");
                }
            }
        }
        if !conn.status().connected() {
            break Err(ended());
        }
        let mine = share(partitions, membership.count(conn, names).await);
        // Above the share (a process joined): hand back the last ones.
        while held.len() > mine {
            if let Some((p, (taking, stop))) = held.pop_last() {
                handing.insert(p, taking);
                tracing::info!(
                    partition = p,
                    share = mine,
                    "handing an ingest partition over"
                );
                stop.cancel();
            }
        }
        if held.len() < mine {
            for p in asking_order(partitions, offset) {
                if held.len() >= mine || token.is_cancelled() {
                    break;
                }
                if held.contains_key(&p) || handing.contains_key(&p) {
                    continue;
                }
                match consume::start(conn, names.ingest_partition(p), window, true).await {
                    Ok(consuming) => {
                        let stop = token.child_token();
                        takings += 1;
                        let taking = takings;
                        held.insert(p, (taking, stop.clone()));
                        let run = fan_out(p, consuming, stop);
                        tasks.spawn(async move { (p, taking, run.await) });
                    }
                    Err(e) if consume::is_refused(&e) => {}
                    Err(e) => {
                        tracing::debug!(partition = p, error = %crate::logging::Chain(&e), "cannot take an ingest partition");
                        break;
                    }
                }
            }
        }
        metrics.set_partitions_held(held.len());
        tokio::select! {
            _ = token.cancelled() => break Ok(()),
            _ = tokio::time::sleep(BALANCE_EVERY) => {}
        }
    };
    // Each partition drains its in-flight events and hands back the rest.
    for (_, stop) in held.values() {
        stop.cancel();
    }
    while tasks.join_next().await.is_some() {}
    membership.leave().await;
    result
}

/// This process's consumer on `{ns}.ingest.members`.
struct Membership {
    channel: Option<lapin::Channel>,
    /// Kept: the consumer lasts as long as this value.
    _consumer: Option<lapin::Consumer>,
}

impl Membership {
    async fn join(conn: &Connection, names: &Names) -> lapin::Result<Membership> {
        let channel = conn.create_channel().await?;
        let queue = names.ingest_members();
        // Neither durable nor auto-delete: it holds no message, and a queue
        // deleted when its last consumer leaves would race the next one
        // declaring it. Lost with its node, it is declared again.
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Membership {
            channel: Some(channel),
            _consumer: Some(consumer),
        })
    }

    /// How many ingest processes there are (at least this one); joins
    /// again when the channel or the queue was lost.
    async fn count(&mut self, conn: &Connection, names: &Names) -> usize {
        if let Some(ch) = &self.channel
            && let Ok(n) = broker::consumer_count(ch, &names.ingest_members()).await
        {
            return (n as usize).max(1);
        }
        self.leave().await;
        match Membership::join(conn, names).await {
            Ok(joined) => *self = joined,
            Err(e) => {
                tracing::debug!(error = %crate::logging::Chain(&e), "cannot count the ingest processes");
            }
        }
        1
    }

    async fn leave(&mut self) {
        if let Some(ch) = self.channel.take() {
            broker::close_channel(&ch, "leaving").await;
        }
        self._consumer = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_application_always_hashes_to_the_same_partition() {
        // Fixed values: a change here would move applications between
        // partitions on upgrade.
        assert_eq!(partition_of("app_42", 16), partition_of("app_42", 16));
        assert_eq!(
            partition_of("", 16),
            (0xcbf2_9ce4_8422_2325u64 % 16) as usize
        );
        let spread: std::collections::BTreeSet<usize> = (0..200)
            .map(|i| partition_of(&format!("app_{i}"), 16))
            .collect();
        assert_eq!(spread.len(), 16, "200 applications reach every partition");
    }

    #[test]
    fn an_event_without_a_readable_application_goes_to_partition_0() {
        assert_eq!(partition_of_event(b"not json", 16), 0);
        assert_eq!(partition_of_event(br#"{"application_id": 7}"#, 16), 0);
        let body = br#"{"id":"e","application_id":"app_42","type":"x","content":{}}"#;
        assert_eq!(partition_of_event(body, 16), partition_of("app_42", 16));
    }

    #[test]
    fn the_shares_cover_every_partition() {
        for partitions in [1, 8, 16, 17] {
            for members in 1..6 {
                assert!(share(partitions, members) * members >= partitions);
                assert!(share(partitions, members) >= 1);
            }
        }
        assert_eq!(share(16, 0), 16, "alone when the count is not known");
        let order: Vec<usize> = asking_order(4, 2).collect();
        assert_eq!(order, vec![2, 3, 0, 1]);
    }
}
