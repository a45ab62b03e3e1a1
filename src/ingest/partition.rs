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

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::fan_out::IngestContext;
use super::shortcut::{self, OPEN_WITHIN, Opening as Stands, Shortcut};
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

/// What the router needs to fan out itself the events of the partitions
/// its process holds (see `shortcut.rs`).
pub(crate) struct Direct {
    /// Where this process's partitions stand.
    pub shortcut: Arc<Shortcut>,
    /// A fresh fan-out context per routing session (its sequencer numbers
    /// from 1, like a fresh channel's tags).
    pub context: Box<dyn Fn() -> Arc<IngestContext> + Send + Sync>,
    /// Most direct fan-outs at once.
    pub window: usize,
    /// How long direct fan-outs may finish once routing stops.
    pub drain: Duration,
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

/// An event the router took, with when it took it (Unix microseconds).
type Taken = (Delivery, i64);

/// What one pass of the router publishes to the partitions, in order.
enum Out {
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

async fn route_holding(
    conn: &Connection,
    names: &Names,
    partitions: usize,
    metrics: &Metrics,
    direct: &Direct,
    token: &CancellationToken,
) -> lapin::Result<()> {
    let prefetch = (ROUTE_BATCH * (FULL_BATCHES_IN_FLIGHT + 1)) as u16;
    let (channel, mut consumer) = consume::subscribe(conn, &names.ingest(), prefetch, true).await?;
    tracing::info!(queue = %names.ingest(), partitions, "routing events to the ingest partitions");
    metrics.set_fanning_out(true);
    // Reset however this ends, a lost session dropping it included.
    let _routing = scopeguard(|| metrics.set_fanning_out(false));
    let publisher = ConfirmedPublisher::open(conn).await?;
    let settler = consume::Settler::start(channel.clone(), ROUTE_BATCH);
    let mut fan_outs = DirectFanOuts::new(direct, settler.clone());
    let queues: Vec<String> = (0..partitions).map(|p| names.ingest_partition(p)).collect();
    let mut openings: BTreeMap<usize, Opening> = BTreeMap::new();
    // After an opening that timed out, when the partition may try again.
    let mut retry_at: BTreeMap<usize, Instant> = BTreeMap::new();
    // Batches whose confirms are awaited, oldest first: the next batch is
    // published meanwhile (frames go out in order on the one channel), and
    // each is acked once confirmed.
    let mut in_flight: VecDeque<(Vec<u64>, ConfirmsOf)> = VecDeque::new();
    let result = loop {
        if in_flight.len() >= BATCHES_IN_FLIGHT
            && let Err(e) = settle_oldest(&settler, &mut in_flight).await
        {
            break Err(e);
        }
        let first = tokio::select! {
            biased;
            _ = token.cancelled() => break Ok(()),
            next = consumer.next() => Some(next),
            settled = settle_oldest(&settler, &mut in_flight), if !in_flight.is_empty() => match settled {
                Ok(()) => continue,
                Err(e) => break Err(e),
            },
            _ = tokio::time::sleep(OPENING_POLL), if !openings.is_empty() => None,
        };
        let mut batch: Vec<Taken> = Vec::new();
        match first {
            Some(Some(Ok(d))) => batch.push((d, crate::clock::unix_micros())),
            Some(Some(Err(e))) => break Err(e),
            Some(None) => break Err(ended()),
            None => {}
        }
        // What the broker has pushed already joins the batch, no waiting.
        while !batch.is_empty() && batch.len() < ROUTE_BATCH {
            match consumer.next().now_or_never() {
                Some(Some(Ok(d))) => batch.push((d, crate::clock::unix_micros())),
                _ => break,
            }
        }
        for (d, _) in &batch {
            settler.received(d.delivery_tag);
        }
        let batch_parts: Vec<usize> = batch
            .iter()
            .map(|(d, _)| partition_of_event(&d.data, partitions))
            .collect();
        let mut out: Vec<Out> = Vec::new();
        // Openings settled since the last pass go first: their events come
        // before the later ones of the same partition.
        let now = Instant::now();
        let settled: Vec<usize> = openings
            .iter()
            .filter(|(p, o)| {
                direct.shortcut.opening(**p, o.nonce) != Stands::Waiting
                    || now.duration_since(o.since) >= OPEN_WITHIN
                    || o.kept.len() >= KEEP_AT_MOST
            })
            .map(|(p, _)| *p)
            .collect();
        for p in settled {
            let Some(o) = openings.remove(&p) else {
                continue;
            };
            let open = direct.shortcut.opening(p, o.nonce) == Stands::Open;
            if open {
                tracing::info!(
                    partition = p,
                    "fanning out a partition held here without the routing hop"
                );
            } else if direct.shortcut.is_held(p) {
                tracing::debug!(
                    partition = p,
                    "the partition's barrier was not reached in time (its queue has a backlog)"
                );
                retry_at.insert(p, now + OPEN_WITHIN);
            }
            let others = batch_parts.iter().any(|q| *q != p);
            for taken in o.kept {
                if let Dispatched::Queue { taken, closed } =
                    fan_outs.dispatch(p, taken, others, token).await
                {
                    if closed {
                        retry_at.insert(p, now + OPEN_WITHIN);
                    }
                    out.push(Out::Event(p, Box::new(taken.0)));
                }
            }
        }
        let others_behind = others_behind(&batch_parts);
        for ((taken, p), others) in batch.into_iter().zip(batch_parts).zip(others_behind) {
            if let Some(o) = openings.get_mut(&p) {
                o.kept.push(taken);
                continue;
            }
            let taken = match fan_outs.dispatch(p, taken, others, token).await {
                Dispatched::Done => continue,
                Dispatched::Queue { taken, closed } => {
                    if closed {
                        retry_at.insert(p, now + OPEN_WITHIN);
                    }
                    *taken
                }
            };
            let may_open = direct.shortcut.is_held(p) && retry_at.get(&p).is_none_or(|t| *t <= now);
            if may_open {
                let nonce = uuid::Uuid::new_v4().as_u64_pair().0;
                out.push(Out::Barrier(p, nonce));
                let kept = vec![taken];
                openings.insert(
                    p,
                    Opening {
                        nonce,
                        since: now,
                        kept,
                    },
                );
            } else {
                out.push(Out::Event(p, Box::new(taken.0)));
            }
        }
        if out.is_empty() {
            continue;
        }
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
        match publisher.forward(&messages).await {
            Ok(confirms) => in_flight.push_back((tags, Box::pin(confirms))),
            Err(e) => break Err(publish_failed(e)),
        }
    };
    // What was confirmed is acked; the rest goes back.
    while !in_flight.is_empty() && result.is_ok() {
        if settle_oldest(&settler, &mut in_flight).await.is_err() {
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + direct.drain;
    fan_outs.finish(deadline).await;
    if !settler.finish(deadline).await {
        tracing::warn!(queue = %names.ingest(), "last acks not sent in time; the broker redelivers those events");
    }
    // Unacked events (those kept aside for an opening too) go back to
    // `{ns}.ingest`, in order, for the next router.
    publisher.close().await;
    broker::close_channel(&channel, "routed").await;
    result
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
const KEEP_AT_MOST: usize = 256;

/// Where [`DirectFanOuts::dispatch`] sent an event.
enum Dispatched {
    /// Fanned out here, or left unsettled (routing cancelled).
    Done,
    /// To be moved to its partition's queue; `closed`: the partition was
    /// direct and has just stopped being so.
    Queue { taken: Box<Taken>, closed: bool },
}

/// How often the router looks at a partition whose barrier it awaits.
const OPENING_POLL: Duration = Duration::from_millis(5);

/// The router's own fan-outs of events of the partitions held here.
struct DirectFanOuts<'a> {
    direct: &'a Direct,
    context: Arc<IngestContext>,
    settler: consume::Settler,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    /// The next turn of the context's sequencer, in the order events are
    /// handed to it (each partition's in `{ns}.ingest`'s order).
    next_turn: u64,
}

impl<'a> DirectFanOuts<'a> {
    fn new(direct: &'a Direct, settler: consume::Settler) -> Self {
        DirectFanOuts {
            direct,
            context: (direct.context)(),
            settler,
            permits: Arc::new(Semaphore::new(direct.window.max(1))),
            tracker: TaskTracker::new(),
            next_turn: 1,
        }
    }

    /// Fans out `taken` here if partition `p` is direct, or hands it back
    /// to be moved to the queue. A direct partition whose event finds the
    /// window full waits for room only when no event of another partition
    /// waits behind it (`others`); otherwise it is closed, so a burst in
    /// one partition never holds back the other partitions' events behind
    /// it in `{ns}.ingest`: the partitions' consumers take the burst, each
    /// partition beside the others. Once `token` is cancelled, every event
    /// stays unsettled and goes back with the channel.
    async fn dispatch(
        &mut self,
        p: usize,
        taken: Taken,
        others: bool,
        token: &CancellationToken,
    ) -> Dispatched {
        // Cancelled, this event and every later one stay unsettled, back
        // to `{ns}.ingest` in order for the next router: never a later one
        // of the partition fanned out here, or moved to its queue (the
        // partition let go meanwhile), while an earlier one goes back:
        // the next holder would number it after the later one.
        if token.is_cancelled() {
            return Dispatched::Done;
        }
        if !self.direct.shortcut.start_direct(p) {
            return Dispatched::Queue {
                taken: Box::new(taken),
                closed: false,
            };
        }
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) if others => {
                self.direct.shortcut.close(p);
                self.direct.shortcut.finished(p);
                tracing::debug!(
                    partition = p,
                    "the router's fan-out window is full and other partitions wait: this one goes through its queue again"
                );
                return Dispatched::Queue {
                    taken: Box::new(taken),
                    closed: true,
                };
            }
            Err(_) => tokio::select! {
                biased;
                _ = token.cancelled() => {
                    self.direct.shortcut.finished(p);
                    return Dispatched::Done;
                }
                permit = self.permits.clone().acquire_owned() => permit.expect("semaphore never closed"),
            },
        };
        let (delivery, received_us) = taken;
        let tag = delivery.delivery_tag;
        self.context.metrics.event_routed_direct();
        let turn = self.context.sequencer.turn(self.next_turn);
        self.next_turn += 1;
        let (ctx, settler) = (self.context.clone(), self.settler.clone());
        let shortcut = self.direct.shortcut.clone();
        self.tracker.spawn(async move {
            let settle = super::fan_out::handle_in_turn(ctx, delivery, received_us, turn).await;
            settler.settled_after_pause(tag, settle).await;
            shortcut.finished(p);
            drop(permit);
        });
        Dispatched::Done
    }

    /// Waits for the fan-outs started until `deadline`.
    async fn finish(self, deadline: tokio::time::Instant) {
        self.tracker.close();
        if tokio::time::timeout_at(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("direct fan-outs not finished in time; their events go back unacked");
        }
    }
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

/// Awaits the oldest batch's confirms, then acks its events; Err when a
/// message came back or the channel failed.
async fn settle_oldest(
    settler: &consume::Settler,
    in_flight: &mut VecDeque<(Vec<u64>, ConfirmsOf)>,
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
