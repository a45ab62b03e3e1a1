//! Backlogs: every webhook's jobs wait in a queue of their own,
//! `{ns}.backlog.<webhook id>`, until the webhook takes them. Fan-out
//! routes each job there; every delivery process drains every backlog, each
//! at the pace its webhook accepts, so a burst for one webhook waits in its
//! own queue and never in front of anyone else's jobs. A queue is declared
//! the first time a job is routed to it and deleted once it has been idle
//! and empty for a while (`WF_BACKLOG_IDLE`); which queues exist is kept in Redis
//! ([`Registry`]) for every process to find.

mod registry;
mod route;

use std::time::Duration;

pub(crate) use registry::CLAIM_FOR;
pub(crate) use registry::Registry;
pub use registry::delete_backlogs;
pub(crate) use route::{RouteError, Routed, Router};

/// How a backlog's use is tracked, all from `WF_BACKLOG_IDLE` (`idle`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// How long a backlog must go untouched (no job routed to it, none held
    /// by any process) and empty before it is deleted.
    pub idle: Duration,
    /// How often a process holding jobs of a backlog marks it as used: a
    /// sixth of `idle`, so a queue some process still works on is never
    /// taken for idle.
    pub touch_every: Duration,
    /// How long a process trusts that a backlog it declared still exists
    /// without declaring it again: a third of `idle`, so it can never have
    /// been deleted meanwhile.
    pub known_for: Duration,
}

impl Timing {
    /// The timing for `WF_BACKLOG_IDLE` = `idle`.
    pub(crate) fn new(idle: Duration) -> Self {
        Timing {
            idle,
            touch_every: idle / 6,
            known_for: idle / 3,
        }
    }
}
