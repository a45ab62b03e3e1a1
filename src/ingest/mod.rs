//! Fan out: one event from `{ns}.ingest`, routed to its application's
//! partition, becomes one delivery job per matching webhook, all confirmed
//! by the broker before the event is acked.

mod fan_out;
mod partition;
mod sequencer;
mod shortcut;

pub(crate) use fan_out::{IngestContext, handle_event};
pub(crate) use partition::{Direct, FanOut, hold, keep_routing};
pub(crate) use sequencer::Sequencer;
pub(crate) use shortcut::Shortcut;
