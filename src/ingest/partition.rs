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
//! fan-out rejects it with its reason. The events of the partitions the
//! router's own process holds skip the move: the router fans them out
//! itself (`shortcut.rs` says how the way changes without reordering).
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

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::{BasicProperties, Connection};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::direct::{Direct, DirectFanOuts, Taken};
use super::openings::{Openings, Out, Pass};
use super::shortcut::{self};
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
    direct: &Direct,
    token: &CancellationToken,
) -> lapin::Result<()> {
    // One router at a time, whatever the queue type (see `consume::Hold`).
    let hold = consume::Hold::take(conn, &names.ingest()).await?;
    let routed = route_holding(conn, names, partitions, metrics, direct, token).await;
    // Unacked events are back in `{ns}.ingest`: the next router starts on them.
    hold.release().await;
    routed
}

async fn route_holding(
    conn: &Connection,
    names: &Names,
    partitions: usize,
    metrics: &Metrics,
    direct: &Direct,
    token: &CancellationToken,
) -> lapin::Result<()> {
    let (channel, mut consumer, publisher, settler) = open(conn, names).await?;
    tracing::info!(queue = %names.ingest(), partitions, "routing events to the ingest partitions");
    metrics.set_fanning_out(true);
    // Reset however this ends, a lost session dropping it included.
    let _routing = scopeguard(|| metrics.set_fanning_out(false));
    let mut fan_outs = DirectFanOuts::new(direct, settler.clone());
    let queues: Vec<String> = (0..partitions).map(|p| names.ingest_partition(p)).collect();
    let mut openings = Openings::default();
    let mut in_flight = InFlight::new();
    let result = loop {
        if in_flight.len() >= BATCHES_IN_FLIGHT
            && let Err(e) = settle_oldest(&settler, &mut in_flight).await
        {
            break Err(e);
        }
        let first = tokio::select! {
            biased;
            _ = token.cancelled() => break Ok(()),
            next = consumer.next() => match next {
                Some(Ok(d)) => Some(d),
                Some(Err(e)) => break Err(e),
                None => break Err(ended()),
            },
            settled = settle_oldest(&settler, &mut in_flight), if !in_flight.is_empty() => match settled {
                Ok(()) => continue,
                Err(e) => break Err(e),
            },
            _ = tokio::time::sleep(OPENING_POLL), if openings.any() => None,
        };
        let batch = fill_batch(first, &mut consumer, &settler);
        let out = one_pass(
            batch,
            partitions,
            direct,
            &mut fan_outs,
            &mut openings,
            token,
        )
        .await;
        if out.is_empty() {
            continue;
        }
        match publish(&out, &queues, &publisher, metrics).await {
            Ok(sent) => in_flight.push_back(sent),
            Err(e) => break Err(publish_failed(e)),
        }
    };
    // What was confirmed is acked; the rest goes back.
    while result.is_ok() && settle_oldest_left(&settler, &mut in_flight).await {}
    close(direct, fan_outs, settler, names, &publisher, &channel).await;
    result
}

/// Batches whose confirms are awaited (their delivery tags and confirms),
/// oldest first: the next batch is published meanwhile (frames go out in
/// order on the one channel), and each is acked once confirmed.
type InFlight = VecDeque<(Vec<u64>, ConfirmsOf)>;

/// A routing session's channel consuming `{ns}.ingest`, its confirmed
/// publisher and its acks.
async fn open(
    conn: &Connection,
    names: &Names,
) -> lapin::Result<(
    lapin::Channel,
    lapin::Consumer,
    ConfirmedPublisher,
    consume::Settler,
)> {
    let prefetch = (ROUTE_BATCH * (FULL_BATCHES_IN_FLIGHT + 1)) as u16;
    let (channel, consumer) = consume::subscribe(conn, &names.ingest(), prefetch, true).await?;
    let publisher = ConfirmedPublisher::open(conn).await?;
    let settler = consume::Settler::start(channel.clone(), ROUTE_BATCH);
    Ok((channel, consumer, publisher, settler))
}

/// Settles the oldest batch in flight; false when none is left or it
/// failed (the rest then goes back with the channel).
async fn settle_oldest_left(settler: &consume::Settler, in_flight: &mut InFlight) -> bool {
    !in_flight.is_empty() && settle_oldest(settler, in_flight).await.is_ok()
}

/// Ends a routing session: the router's own fan-outs and the last acks get
/// `direct.drain`; unacked events (those kept aside for an opening too) go
/// back to `{ns}.ingest` with the channel, in order, for the next router.
async fn close(
    direct: &Direct,
    fan_outs: DirectFanOuts<'_>,
    settler: consume::Settler,
    names: &Names,
    publisher: &ConfirmedPublisher,
    channel: &lapin::Channel,
) {
    let deadline = tokio::time::Instant::now() + direct.drain;
    fan_outs.finish(deadline).await;
    if !settler.finish(deadline).await {
        tracing::warn!(queue = %names.ingest(), "last acks not sent in time; the broker redelivers those events");
    }
    publisher.close().await;
    broker::close_channel(channel, "routed").await;
}

/// One pass of the router over `batch`: what it publishes to the
/// partitions, in order. Openings settled since the last pass go first:
/// their events come before the later ones of the same partition.
async fn one_pass(
    batch: Vec<Taken>,
    partitions: usize,
    direct: &Direct,
    fan_outs: &mut DirectFanOuts<'_>,
    openings: &mut Openings,
    token: &CancellationToken,
) -> Vec<Out> {
    let batch_parts: Vec<usize> = batch
        .iter()
        .map(|(d, _)| partition_of_event(&d.data, partitions))
        .collect();
    let mut out: Vec<Out> = Vec::new();
    let mut pass = Pass {
        shortcut: &direct.shortcut,
        fan_outs,
        out: &mut out,
        now: Instant::now(),
        token,
    };
    openings.settle(&mut pass, &batch_parts).await;
    openings.place(&mut pass, batch, batch_parts).await;
    out
}

/// The event `first` and what the broker has pushed already behind it (no
/// waiting), at most [`ROUTE_BATCH`], each noted as received in `settler`.
fn fill_batch(
    first: Option<Delivery>,
    consumer: &mut lapin::Consumer,
    settler: &consume::Settler,
) -> Vec<Taken> {
    let mut batch: Vec<Taken> = Vec::new();
    if let Some(d) = first {
        batch.push((d, crate::clock::unix_micros()));
    }
    while !batch.is_empty() && batch.len() < ROUTE_BATCH {
        match consumer.next().now_or_never() {
            Some(Some(Ok(d))) => batch.push((d, crate::clock::unix_micros())),
            _ => break,
        }
    }
    for (d, _) in &batch {
        settler.received(d.delivery_tag);
    }
    batch
}

/// Publishes one pass's `out` to the partitions' `queues`, in order; the
/// tags of the events it moved, and their confirms.
async fn publish(
    out: &[Out],
    queues: &[String],
    publisher: &ConfirmedPublisher,
    metrics: &Metrics,
) -> Result<(Vec<u64>, ConfirmsOf), broker::PublishError> {
    let messages: Vec<(&str, &[u8], BasicProperties)> = out
        .iter()
        .map(|o| match o {
            Out::Event(p, d) => (queues[*p].as_str(), d.data.as_slice(), shortcut::moved(d)),
            Out::Barrier(p, nonce) => (queues[*p].as_str(), &[][..], shortcut::barrier(*nonce)),
        })
        .collect();
    let tags: Vec<u64> = out
        .iter()
        .filter_map(|o| match o {
            Out::Event(_, d) => Some(d.delivery_tag),
            Out::Barrier(..) => None,
        })
        .collect();
    metrics.events_routed_to_partitions(tags.len());
    let confirms = publisher.forward(&messages).await?;
    Ok((tags, Box::pin(confirms)))
}

/// How often the router looks at a partition whose barrier it awaits.
const OPENING_POLL: Duration = Duration::from_millis(5);

/// Runs `f` when dropped.
pub(super) struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

pub(super) fn scopeguard<F: FnMut()>(f: F) -> OnDrop<F> {
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

/// Awaits the oldest batch's confirms, then acks its events; Err when a
/// message came back or the channel failed.
async fn settle_oldest(settler: &consume::Settler, in_flight: &mut InFlight) -> lapin::Result<()> {
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
    let (tags, _) = in_flight.pop_front().expect("front exists");
    if returned.contains(&true) {
        // A partition queue deleted from outside: a new session
        // declares it again, and these events come back.
        let gone = std::io::Error::other("an ingest partition queue is missing");
        return Err(lapin::ErrorKind::IOError(Arc::new(gone)).into());
    }
    for tag in tags {
        settler.settled(tag, consume::Settle::Ack);
    }
    Ok(())
}

fn publish_failed(e: broker::PublishError) -> lapin::Error {
    match e {
        broker::PublishError::Broker(e) => e,
        other => {
            lapin::ErrorKind::IOError(Arc::new(std::io::Error::other(other.to_string()))).into()
        }
    }
}

pub(super) fn ended() -> lapin::Error {
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
    direct: &Direct,
    token: &CancellationToken,
) -> lapin::Result<()> {
    let mut standing_by = false;
    loop {
        match route(conn, names, partitions, metrics, direct, token).await {
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
}
