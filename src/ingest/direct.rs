//! The router's own fan-outs: the events of the partitions its process
//! holds, fanned out at once instead of moved to their queue (see
//! `shortcut.rs` for how a partition's way changes without reordering).

use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::fan_out::IngestContext;
use super::shortcut::Shortcut;
use crate::consume;

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

/// An event the router took, with when it took it (Unix microseconds).
pub(super) type Taken = (Delivery, i64);

/// Where [`DirectFanOuts::dispatch`] sent an event.
pub(super) enum Dispatched {
    /// Fanned out here, or left unsettled (routing cancelled).
    Done,
    /// To be moved to its partition's queue; `closed`: the partition was
    /// direct and has just stopped being so.
    Queue { taken: Box<Taken>, closed: bool },
}

/// The router's own fan-outs of events of the partitions held here.
pub(super) struct DirectFanOuts<'a> {
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
    pub(super) fn new(direct: &'a Direct, settler: consume::Settler) -> Self {
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
    pub(super) async fn dispatch(
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
    pub(super) async fn finish(self, deadline: tokio::time::Instant) {
        self.tracker.close();
        if tokio::time::timeout_at(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("direct fan-outs not finished in time; their events go back unacked");
        }
    }
}
