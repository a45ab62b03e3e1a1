//! Schedule retry: which delay tier a failed job waits in next, or whether it
//! becomes a dead letter. Pure decisions only; the queues live in `broker::topology`.

mod schedule;

pub(crate) use schedule::{DEFAULT_SCHEDULE, HOLD, Next, hold_tier};
pub use schedule::{RetrySchedule, Tier};
