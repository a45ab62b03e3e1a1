//! Handling one event: validate (or reject it to `{ns}.rejected`), skip
//! duplicates by id, match subscriptions, publish jobs with confirms.

use std::sync::Arc;

use lapin::message::Delivery;
use tracing::Instrument;

use crate::broker::{ConfirmedPublisher, JOB_ROUTING_KEY, Names, Outgoing, PublishError};
use crate::clock;
use crate::consume::Settle;
use crate::event::{Catalogue, Event, Rejection};
use crate::job::DeliveryJob;
use crate::metrics::Metrics;
use crate::subscription::{EventMarkers, Marker, StoreError, SubscriptionCache, Webhook};

/// Everything fan-out needs, shared by all in-flight events.
pub(crate) struct IngestContext {
    /// Event types.
    pub catalogue: Arc<Catalogue>,
    /// Subscriptions.
    pub cache: Arc<SubscriptionCache>,
    /// Event-id markers.
    pub markers: EventMarkers,
    /// Confirmed publisher for jobs and rejects.
    pub publisher: ConfirmedPublisher,
    /// Exchange and queue names.
    pub names: Names,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
enum IngestError {
    #[error("subscription store")]
    Store(#[from] StoreError),
    #[error("publish")]
    Publish(#[from] PublishError),
}

/// One job per webhook subscribed to the event's type; a disabled one's job
/// is dead-lettered by the worker, to be caught up later.
pub(super) fn fan_out(event: &Event, webhooks: &[Webhook], received_us: i64) -> Vec<DeliveryJob> {
    webhooks
        .iter()
        .filter(|w| w.application_id == event.application_id && w.wants(&event.event_type))
        .map(|w| DeliveryJob::new(event, &w.id, received_us))
        .collect()
}

/// Handles one message of `{ns}.ingest`; returns how to settle it.
/// `received_us`: when the consumer took it (Unix microseconds), stamped in
/// queue order.
pub(crate) async fn handle_event(
    ctx: Arc<IngestContext>,
    delivery: Delivery,
    received_us: i64,
) -> Settle {
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|s| s.as_str().to_string());
    let parsed = Event::parse(
        &delivery.data,
        message_id.as_deref(),
        &ctx.catalogue,
        clock::unix_secs(),
    );
    match parsed {
        // Boxed (a rare path): keeps each event's task small to move.
        Err(rejection) => Box::pin(reject(&ctx, &delivery, &rejection)).await,
        Ok(event) => {
            let span = tracing::info_span!("fan_out", event_id = %event.id, event_type = %event.event_type);
            match accept(&ctx, &event, delivery.redelivered, received_us)
                .instrument(span.clone())
                .await
            {
                Ok(()) => Settle::Ack,
                Err(e) => {
                    span.in_scope(|| tracing::warn!(error = %crate::logging::Chain(&e), "fan-out failed; event handed back"));
                    Settle::Requeue
                }
            }
        }
    }
}

async fn accept(
    ctx: &IngestContext,
    event: &Event,
    redelivered: bool,
    received_us: i64,
) -> Result<(), IngestError> {
    // Without Redis the id check is skipped rather than stopping the flow:
    // delivery is at-least-once and receivers deduplicate on `Webhook-Id`.
    let claimed = match ctx.markers.claim(&event.application_id, &event.id).await {
        Ok(marker) => Some(marker),
        Err(e) => {
            tracing::warn!(error = %crate::logging::Chain(&e), "event-id check unavailable; fanning out without it");
            None
        }
    };
    match claimed {
        // A crash interrupted an earlier fan-out of this very message: redo it.
        Some(Marker::InProgress) if redelivered => {}
        Some(Marker::InProgress | Marker::Done) => {
            tracing::info!("duplicate event id; not fanned out again");
            ctx.metrics.event_duplicate();
            return Ok(());
        }
        Some(Marker::New) | None => {}
    }
    let webhooks = ctx.cache.webhooks(&event.application_id).await?;
    let jobs = fan_out(event, &webhooks, received_us);
    let encoded: Vec<Vec<u8>> = jobs.iter().map(DeliveryJob::encode).collect();
    let exchange = ctx.names.deliveries();
    let outgoing: Vec<Outgoing> = encoded
        .iter()
        .map(|payload| Outgoing {
            exchange: &exchange,
            routing_key: JOB_ROUTING_KEY,
            payload,
            headers: None,
            message_id: Some(&event.id),
        })
        .collect();
    ctx.publisher.publish_all(&outgoing).await?;
    if claimed.is_some() {
        ctx.markers.complete(&event.application_id, &event.id);
    }
    ctx.metrics.event_consumed(&event.event_type);
    ctx.metrics.jobs_enqueued(jobs.len());
    tracing::debug!(jobs = jobs.len(), "fanned out");
    Ok(())
}

async fn reject(ctx: &IngestContext, delivery: &Delivery, rejection: &Rejection) -> Settle {
    let (queue, reason) = (ctx.names.rejected(), rejection.header());
    let rejected = ctx.publisher.reject(
        &queue,
        &delivery.data,
        delivery.properties.headers().clone(),
        &reason,
        delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
    );
    match rejected.await {
        Ok(()) => {
            tracing::warn!(reason = rejection.reason.code(), "envelope rejected");
            ctx.metrics.event_rejected(rejection.reason);
            Settle::Ack
        }
        Err(e) => {
            tracing::warn!(error = %crate::logging::Chain(&e), "cannot move the rejected envelope aside; handed back");
            Settle::Requeue
        }
    }
}
