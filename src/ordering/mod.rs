//! Ordering per key, behind one door: webhooks with `ordering: per_key`
//! get the events of one ordering key in the order of `{ns}.ingest`, one
//! at a time. Everything about it is in this module; the rest of the
//! service sees three things:
//!
//! - [`Numbering`], where the keys stand in Redis (shared by every process
//!   of the namespace). Ingest takes a [`Sequencer`] from it per channel to
//!   number the events of ordered webhooks in the channel's order (a
//!   [`Turn`] per message, handed in with what it [`Wanted`]); dead-letter
//!   replays take the next number of their key from it.
//! - [`Gate`], on the delivery side: a job is sent only once every earlier
//!   event of its key is finished (`gate`, then `finished` before the ack;
//!   `head_waits` when the head itself goes to a delay tier).
//! - [`Sending`], the guard of a job being sent, held until it is finished.
//!
//! Inside: `keys.rs` (the Redis state and its scripts), `sequencer.rs`
//! (numbering in channel order), `gate.rs` (the pure decision, the wait
//! tier, the gate's calls), `heads.rs` (the ordered jobs this process is
//! sending, so the next of a key can wait for them here).

mod gate;
mod heads;
mod keys;
mod sequencer;

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::retry::RetrySchedule;
use crate::subscription::{Store, StoreError};

pub(crate) use heads::Sending;
pub(crate) use sequencer::{Sequencer, Turn, Wanted};

use heads::Heads;
use keys::{Assign, Sequences};

/// Where every ordering key stands; cheap to clone.
#[derive(Clone)]
pub(crate) struct Numbering {
    sequences: Arc<Sequences>,
}

impl Numbering {
    /// Over `store`'s Redis and namespace.
    pub(crate) fn new(store: Store) -> Self {
        Numbering {
            sequences: Arc::new(Sequences::new(store)),
        }
    }

    /// A sequencer for a fresh ingest channel (first delivery tag 1).
    pub(crate) fn sequencer(&self) -> Sequencer {
        Sequencer::start(self.sequences.clone())
    }

    /// The next number of `key` for a replay (`replay_id`: the same number
    /// if this replay is tried again), after the key's events already
    /// numbered.
    pub(crate) async fn number_replay(
        &self,
        app: &str,
        webhook: &str,
        key: &str,
        replay_id: &str,
    ) -> Result<Option<u64>, StoreError> {
        let assign = Assign {
            app,
            webhook,
            key,
            event_id: replay_id,
        };
        let now = crate::clock::unix_millis();
        let numbers = self.sequences.assign(&[assign], now).await?;
        Ok(numbers.first().copied())
    }
}

/// How much longer than `WF_MAX_EVENT_AGE` the head of an ordering key may
/// stand still before the events behind it give up on it as lost.
const STALL_MARGIN: Duration = Duration::from_secs(3600);

/// The delivery side of ordering, one per delivery session.
pub(crate) struct Gate {
    sequences: Arc<Sequences>,
    /// The ordered jobs this process is sending now.
    heads: Heads,
    /// How long a head may stand still before it counts as lost (longer
    /// than any job may wait).
    stall: Duration,
    /// The retry tiers, where waiting jobs wait.
    schedule: RetrySchedule,
    metrics: Arc<Metrics>,
}

impl Gate {
    /// The gate of jobs that live at most `max_age` (`WF_MAX_EVENT_AGE`)
    /// and wait in `schedule`'s tiers.
    pub(crate) fn new(
        numbering: &Numbering,
        schedule: RetrySchedule,
        max_age: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Gate {
            sequences: numbering.sequences.clone(),
            heads: Heads::default(),
            stall: max_age + STALL_MARGIN,
            schedule,
            metrics,
        }
    }
}
