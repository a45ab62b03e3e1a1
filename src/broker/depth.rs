//! Queue depths for the metrics: a passive declare of each queue every few
//! seconds (the broker answers with its message count; nothing is created).

use std::sync::Arc;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How often depths are refreshed.
pub(crate) const DEPTH_INTERVAL: Duration = Duration::from_secs(5);

/// Refreshes `webhooks_queue_depth{queue}` for `queues` (label, queue name)
/// until cancelled. Failures are logged, never fatal: the consumers matter
/// more than the gauges.
pub async fn watch(
    conn: &Connection,
    queues: Vec<(String, String)>,
    metrics: Arc<Metrics>,
    token: &CancellationToken,
) {
    let mut channel: Option<Channel> = None;
    loop {
        for (label, queue) in &queues {
            if channel.as_ref().is_none_or(|c| !c.status().connected()) {
                channel = conn.create_channel().await.ok();
            }
            let Some(ch) = &channel else { break };
            let passive = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            match ch
                .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                .await
            {
                Ok(q) => metrics.set_queue_depth(label, q.message_count() as i64),
                // A missing queue closes the channel; the next one gets a new channel.
                Err(e) => {
                    tracing::debug!(queue = %queue, error = %crate::logging::Chain(&e), "queue depth unavailable")
                }
            }
        }
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tokio::time::sleep(DEPTH_INTERVAL) => {}
        }
    }
    if let Some(ch) = &channel {
        super::close_channel(ch, "depths").await;
    }
}
