//! Dead-lettering a job: publish its record to the `{ns}.dead` stream with a
//! confirm (so the job can be acked), then count it for listings.

use super::record::DeadLetter;
use crate::broker::{ConfirmedPublisher, Names, Outgoing, PublishError};
use crate::clock;
use crate::delivery::DeliveryJob;
use crate::subscription::Store;

/// Moves `job` to the dead letters for `reason`; Ok once the broker confirmed.
pub async fn park(
    publisher: &ConfirmedPublisher,
    names: &Names,
    store: &Store,
    job: DeliveryJob,
    reason: &str,
) -> Result<(), PublishError> {
    let event_id = job.event_id.clone();
    let letter = DeadLetter::from_job(job, reason, clock::unix_millis());
    let payload = serde_json::to_vec(&letter).expect("a dead letter serializes");
    let queue = names.dead();
    publisher
        .publish(Outgoing {
            exchange: "",
            routing_key: &queue,
            payload: &payload,
            headers: None,
            message_id: Some(&event_id),
        })
        .await?;
    // Listings use this count to know where the stream ends; a lost increment
    // only makes the next listing wait a few milliseconds longer.
    if let Err(e) = store.count_dead_letter().await {
        tracing::warn!(error = %e, "dead letter count not updated");
    }
    Ok(())
}
