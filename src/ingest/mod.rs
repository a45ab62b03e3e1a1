//! Fan out: one event from `{ns}.ingest` becomes one delivery job per
//! matching webhook, all confirmed by the broker before the event is acked.

mod fan_out;
mod sequencer;

pub(crate) use fan_out::{IngestContext, handle_event};
pub(crate) use sequencer::Sequencer;
