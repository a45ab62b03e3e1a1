//! An open consumer of the `{ns}.dead` stream: each message with its
//! stream offset, acked in batches only to grant the stream credit.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::BasicAckOptions;
use lapin::types::{AMQPValue, FieldTable};

use super::error::DeadLetterError;
use crate::broker;

/// An open stream consumer.
pub(super) struct Reader {
    pub(super) channel: lapin::Channel,
    pub(super) consumer: lapin::Consumer,
    pub(super) ack_every: u16,
    pub(super) unacked: u16,
}

impl Reader {
    /// The next message (offset, body), or `None` after `idle` of silence.
    pub(super) async fn next(
        &mut self,
        idle: Duration,
    ) -> Result<Option<(u64, Vec<u8>)>, DeadLetterError> {
        loop {
            let Ok(Some(delivery)) = tokio::time::timeout(idle, self.consumer.next()).await else {
                return Ok(None);
            };
            let delivery = delivery?;
            self.unacked += 1;
            // Acks only grant the stream credit; one per batch is enough.
            if self.unacked >= self.ack_every {
                delivery
                    .acker
                    .ack(BasicAckOptions { multiple: true })
                    .await?;
                self.unacked = 0;
            }
            if let Some(offset) = stream_offset(delivery.properties.headers()) {
                return Ok(Some((offset, delivery.data)));
            }
        }
    }

    pub(super) async fn close(self) {
        broker::close_channel(&self.channel, "scanned").await;
    }
}

fn stream_offset(headers: &Option<FieldTable>) -> Option<u64> {
    match headers.as_ref()?.inner().get("x-stream-offset")? {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}
