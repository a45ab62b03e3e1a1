//! Holding the ingest partitions: each partition is fanned out by one
//! process at a time, its holder. Every ingest process holds a consumer on
//! `{ns}.ingest.members`, whose consumer count is how many there are; each
//! takes free partitions up to its share (the count divided into the
//! partitions, rounded up) and hands back the ones above it, so the
//! partitions spread over the processes and move within about a second when
//! one starts, stops or dies. RabbitMQ does the locking and the counting;
//! nothing is elected in Redis: a holder is the connection that declared
//! the exclusive queue `{queue}.owner` (`consume::Hold`), which RabbitMQ
//! refuses to every other connection and deletes when its owner's
//! connection or node goes.

use std::collections::BTreeMap;

use lapin::Connection;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::partition::{BALANCE_EVERY, ended, partition_of, scopeguard};
use crate::broker::{self, Names};
use crate::consume;
use crate::metrics::Metrics;

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
    let mut h = Holdings::default();
    let _holding = scopeguard(|| metrics.set_partitions_held(0));
    let result = loop {
        h.reap();
        if !conn.status().connected() {
            break Err(ended());
        }
        let mine = share(partitions, membership.count(conn, names).await);
        h.hand_back_above(mine);
        for p in asking_order(partitions, offset) {
            if h.held.len() >= mine || token.is_cancelled() {
                break;
            }
            if h.held.contains_key(&p) || h.handing.contains_key(&p) {
                continue;
            }
            match consume::start(conn, names.ingest_partition(p), window, true).await {
                Ok(consuming) => h.run(p, consuming, &fan_out, token),
                Err(e) if consume::is_refused(&e) => {}
                Err(e) => {
                    tracing::debug!(partition = p, error = %crate::logging::Chain(&e), "cannot take an ingest partition");
                    break;
                }
            }
        }
        metrics.set_partitions_held(h.held.len());
        tokio::select! {
            _ = token.cancelled() => break Ok(()),
            _ = tokio::time::sleep(BALANCE_EVERY) => {}
        }
    };
    // Each partition drains its in-flight events and hands back the rest.
    for (_, stop) in h.held.values() {
        stop.cancel();
    }
    while h.tasks.join_next().await.is_some() {}
    membership.leave().await;
    result
}

/// The partitions this process holds and the fan-outs running them.
#[derive(Default)]
struct Holdings {
    /// Partition -> (which taking of it, how to hand it back).
    held: BTreeMap<usize, (u64, CancellationToken)>,
    /// Partitions handed back whose fan-out still drains (which taking):
    /// not taken again meanwhile, since this connection's own hold would
    /// not refuse it.
    handing: BTreeMap<usize, u64>,
    takings: u64,
    tasks: JoinSet<(usize, u64, lapin::Result<()>)>,
}

impl Holdings {
    /// Forgets the partitions whose fan-out ended (its channel failed):
    /// free again.
    fn reap(&mut self) {
        while let Some(done) = self.tasks.try_join_next() {
            let Ok((p, taking, ran)) = done else {
                continue;
            };
            // Not a later taking of the same partition.
            if self.held.get(&p).is_some_and(|(t, _)| *t == taking) {
                self.held.remove(&p);
            }
            if self.handing.get(&p) == Some(&taking) {
                self.handing.remove(&p);
            }
            if let Err(e) = ran {
                tracing::debug!(partition = p, error = %crate::logging::Chain(&e), "partition fan-out ended");
            }
        }
    }

    /// Above the share (a process joined): hands back the last ones.
    fn hand_back_above(&mut self, mine: usize) {
        while self.held.len() > mine {
            if let Some((p, (taking, stop))) = self.held.pop_last() {
                self.handing.insert(p, taking);
                tracing::info!(
                    partition = p,
                    share = mine,
                    "handing an ingest partition over"
                );
                stop.cancel();
            }
        }
    }

    /// Runs `fan_out` on partition `p`, just taken, until `token` or its
    /// own hand-back stops it.
    fn run(
        &mut self,
        p: usize,
        consuming: consume::Consuming,
        fan_out: &FanOut,
        token: &CancellationToken,
    ) {
        let stop = token.child_token();
        self.takings += 1;
        let taking = self.takings;
        self.held.insert(p, (taking, stop.clone()));
        let run = fan_out(p, consuming, stop);
        self.tasks.spawn(async move { (p, taking, run.await) });
    }
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
