//! Fan out: one event from `{ns}.ingest`, routed to its application's
//! partition, becomes one delivery job per matching webhook, all confirmed
//! by the broker before the event is acked.

mod direct;
mod fan_out;
mod membership;
mod openings;
mod partition;
mod shortcut;

pub(crate) use direct::Direct;
pub(crate) use fan_out::{IngestContext, handle_event};
pub(crate) use membership::{FanOut, hold};
pub(crate) use partition::keep_routing;
pub(crate) use shortcut::Shortcut;
