//! Fan-out while a session lasts: the router of `{ns}.ingest` and this
//! process's share of the ingest partitions, each with its own context.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Wiring;
use crate::backlog;
use crate::broker::ConfirmedPublisher;
use crate::ingest::{self, IngestContext};

/// Fans out while the session lasts: routes `{ns}.ingest` to the
/// partitions whenever this process holds it (one process at a time), and
/// fans out this process's share of the partitions (see
/// `ingest/partition.rs`).
pub(super) async fn fan_out(
    w: &Arc<Wiring>,
    conn: &lapin::Connection,
    publisher: &ConfirmedPublisher,
    router: &Arc<backlog::Router>,
    token: &CancellationToken,
) -> lapin::Result<()> {
    let s = &w.settings;
    let partitions = s.ingest_partitions;
    let shortcut = Arc::new(ingest::Shortcut::new(partitions));
    // A context per partition (and per routing session, for the events the
    // router fans out itself): its sequencer numbers the events of ordered
    // webhooks in that partition's order.
    let context = {
        let (w, publisher, router) = (w.clone(), publisher.clone(), router.clone());
        move |barriers: Option<(usize, Arc<ingest::Shortcut>)>| {
            Arc::new(IngestContext {
                catalogue: w.catalogue.clone(),
                cache: w.cache.clone(),
                markers: w.markers.clone(),
                publisher: publisher.clone(),
                names: w.names.clone(),
                metrics: w.metrics.clone(),
                sequencer: w.numbering.sequencer(),
                router: router.clone(),
                barriers,
            })
        }
    };
    let direct = ingest::Direct {
        shortcut: shortcut.clone(),
        context: Box::new({
            let context = context.clone();
            move || context(None)
        }),
        window: s.ingest_concurrency,
        drain: s.shutdown_timeout,
    };
    let routing = ingest::keep_routing(conn, &w.names, partitions, &w.metrics, &direct, token);
    let fan_out = partition_fan_out(shortcut, context, s.shutdown_timeout);
    let holding = ingest::hold(
        conn,
        &w.names,
        partitions,
        s.ingest_concurrency,
        &w.metrics,
        fan_out,
        token,
    );
    tokio::try_join!(routing, holding).map(|_| ())
}

/// What this process runs for each partition it comes to hold: its
/// consumer, with a context of its own (`context`), and, before the hold is
/// let go, the wait for the router's own fan-outs of it (within `drain`).
fn partition_fan_out(
    shortcut: Arc<ingest::Shortcut>,
    context: impl Fn(Option<(usize, Arc<ingest::Shortcut>)>) -> Arc<IngestContext>
    + Send
    + Sync
    + 'static,
    drain: std::time::Duration,
) -> ingest::FanOut {
    Box::new(move |p, consuming, stop| {
        let ctx = context(Some((p, shortcut.clone())));
        tracing::info!(partition = p, "fanning out an ingest partition");
        shortcut.held(p);
        // Before another process may take the partition, the router's
        // own fan-outs of it are done.
        let leave = {
            let shortcut = shortcut.clone();
            Box::pin(async move {
                let deadline = tokio::time::Instant::now() + drain;
                if !shortcut.leave(p, deadline).await {
                    tracing::warn!(
                        partition = p,
                        "direct fan-outs of the partition not finished in time"
                    );
                }
            })
        };
        let consuming = consuming.before_release(leave);
        Box::pin(async move {
            consuming
                .run(&stop, drain, move |d, received_us| {
                    ingest::handle_event(ctx.clone(), d, received_us)
                })
                .await
        })
    })
}
