//! Why a dead-letter operation failed.

use crate::broker::PublishError;
use crate::subscription::StoreError;

/// Why a dead-letter operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// RabbitMQ is unreachable or failed.
    #[error("RabbitMQ unavailable")]
    Broker(#[from] lapin::Error),
    /// A replay's job was not confirmed.
    #[error("replay not confirmed by RabbitMQ")]
    Publish(#[from] PublishError),
    /// Redis is unreachable or failed.
    #[error("Redis unavailable")]
    Store(#[from] StoreError),
    /// No such dead letter (or already replayed or discarded).
    #[error("dead letter not found")]
    NotFound,
    /// Its webhook was deleted: nowhere to replay it to.
    #[error("the webhook of this dead letter was deleted; it cannot be replayed")]
    WebhookDeleted,
}
