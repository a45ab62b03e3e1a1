//! What the delivery worker shares among all its in-flight jobs.

use std::sync::Arc;
use std::time::Duration;

use super::client::DeliveryClient;
use super::endpoint::Endpoints;
use super::lifecycle::Lifecycle;
use super::prepared::PreparedWebhooks;
use crate::broker::{ConfirmedPublisher, Names};
use crate::metrics::Metrics;
use crate::retry::RetrySchedule;
use crate::subscription::{History, SubscriptionCache};

/// Everything the worker needs, shared by all in-flight jobs.
pub(crate) struct DeliverContext {
    /// Webhook lookups.
    pub cache: Arc<SubscriptionCache>,
    /// HTTP client.
    pub client: DeliveryClient,
    /// Per-webhook caps and circuit breakers (and optional host caps).
    pub endpoints: Arc<Endpoints>,
    /// Webhooks prepared for delivery (checked URL, signing keys).
    pub prepared: Arc<PreparedWebhooks>,
    /// Confirmed publisher for retries and dead letters.
    pub publisher: ConfirmedPublisher,
    /// Queue names.
    pub names: Names,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Retry tiers.
    pub schedule: RetrySchedule,
    /// `WF_MAX_EVENT_AGE`.
    pub max_age: Duration,
    /// Disabling, failure streaks, operational events.
    pub lifecycle: Arc<Lifecycle>,
    /// The webhooks' attempt history and health counters.
    pub history: History,
    /// Ordering per key: each ordered job waits at the gate for its turn.
    pub ordering: crate::ordering::Gate,
    /// Moves jobs of `{ns}.deliver` to their webhooks' backlogs.
    pub router: Arc<crate::backlog::Router>,
    /// The webhooks' rate limits.
    pub rates: Arc<super::rate::Rates>,
}
