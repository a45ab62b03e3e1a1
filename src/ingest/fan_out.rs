//! Handling one event: validate (or reject it to `{ns}.rejected`), skip
//! duplicates by id, match subscriptions, publish jobs with confirms.

use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use tracing::Instrument;

use super::shortcut::{self, Shortcut};
use crate::backlog::{RouteError, Routed, Router};
use crate::broker::{ConfirmedPublisher, Names, PublishError};
use crate::clock;
use crate::consume::Settle;
use crate::event::{Catalogue, Event, RejectReason, Rejection, bounded_key};
use crate::filter::Variables;
use crate::job::{DeliveryJob, JobOrder};
use crate::metrics::Metrics;
use crate::ordering::{Sequencer, Turn, Wanted};
use crate::subscription::{EventMarkers, Marker, Ordering, StoreError, SubscriptionCache, Webhook};

/// The AMQP header a producer sets to choose an event's ordering key.
pub(crate) const ORDERING_KEY_HEADER: &str = "x-ordering-key";

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
    /// Numbers the events of ordered webhooks in the channel's order.
    pub sequencer: Sequencer,
    /// Routes each job to its webhook's backlog.
    pub router: Arc<Router>,
    /// The partition this context fans out and where to say its barriers
    /// were reached (none for the router's own fan-outs).
    pub barriers: Option<(usize, Arc<Shortcut>)>,
}

#[derive(Debug, thiserror::Error)]
enum IngestError {
    #[error("subscription store")]
    Store(#[from] StoreError),
    #[error("publish")]
    Publish(#[from] PublishError),
    #[error("route to a backlog")]
    Route(#[from] RouteError),
    #[error("the ingest channel is closing; ordered events not numbered")]
    Closing,
}

/// The webhooks that get a job of `event`: those subscribed to its type
/// whose filter, if any, is true; a disabled one's job is dead-lettered by
/// the worker, to be caught up later.
fn targets<'a>(ctx: &IngestContext, event: &Event, webhooks: &'a [Webhook]) -> Vec<&'a Webhook> {
    let mut variables = None;
    webhooks
        .iter()
        .filter(|w| w.application_id == event.application_id && w.wants(&event.event_type))
        .filter(|w| passes(ctx, event, w, &mut variables))
        .collect()
}

/// Whether `event` passes `hook`'s filter (true without one). The event's
/// variables are converted once, for its first filter; a filter that fails
/// on the event (a missing field) is false and counted.
fn passes(
    ctx: &IngestContext,
    event: &Event,
    hook: &Webhook,
    variables: &mut Option<Variables>,
) -> bool {
    let Some(compiled) = ctx.cache.filter(hook) else {
        return true;
    };
    let variables = variables.get_or_insert_with(|| {
        Variables::of_body(
            &event.id,
            &event.application_id,
            &event.event_type,
            &event.body,
        )
    });
    let why = match compiled.map(|f| f.matches(variables)) {
        Some(Ok(pass)) => return pass,
        Some(Err(why)) => why,
        None => "the filter does not compile".to_string(),
    };
    tracing::debug!(webhook_id = %hook.id, error = %why, "filter failed on the event; not sent");
    ctx.metrics.filter_error();
    false
}

/// The `x-ordering-key` header: a non-empty string or an integer; an error
/// for any other value.
pub(crate) fn key_in_header(
    headers: Option<&lapin::types::FieldTable>,
) -> Result<Option<String>, Rejection> {
    use lapin::types::AMQPValue::*;
    let Some(value) = headers.and_then(|h| h.inner().get(ORDERING_KEY_HEADER)) else {
        return Ok(None);
    };
    let key = match value {
        LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
        ShortString(s) => Some(s.as_str().to_string()),
        ShortShortInt(n) => Some(n.to_string()),
        ShortShortUInt(n) => Some(n.to_string()),
        ShortInt(n) => Some(n.to_string()),
        ShortUInt(n) => Some(n.to_string()),
        LongInt(n) => Some(n.to_string()),
        LongUInt(n) => Some(n.to_string()),
        LongLongInt(n) => Some(n.to_string()),
        _ => None,
    };
    match key.filter(|k| !k.is_empty()) {
        Some(k) => Ok(Some(bounded_key(k))),
        None => Err(Rejection::new(
            RejectReason::InvalidOrderingKey,
            "the x-ordering-key header must be a non-empty string or an integer",
        )),
    }
}

/// Handles one message of `{ns}.ingest`; returns how to settle it.
/// `received_us`: when the consumer took it (Unix microseconds), stamped in
/// queue order.
pub(crate) async fn handle_event(
    ctx: Arc<IngestContext>,
    delivery: Delivery,
    received_us: i64,
) -> Settle {
    // Taken first: until this message had its turn, no later one is numbered.
    let turn = ctx.sequencer.turn(delivery.delivery_tag);
    if let Some(nonce) = shortcut::barrier_of(&delivery) {
        // Every event before it numbered, the router may fan out the
        // partition's next ones itself.
        if turn.passed().await
            && let Some((p, shortcut)) = &ctx.barriers
        {
            shortcut.reached(*p, nonce);
        }
        return Settle::Ack;
    }
    if let Some((p, shortcut)) = &ctx.barriers {
        // After the router's own fan-outs of the partition, if it just
        // closed the shortcut.
        shortcut.direct_done(*p).await;
    }
    handle_in_turn(ctx, delivery, received_us, turn).await
}

/// Handles one event whose turn is `turn`; returns how to settle it.
pub(crate) async fn handle_in_turn(
    ctx: Arc<IngestContext>,
    delivery: Delivery,
    received_us: i64,
    turn: Turn,
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
    )
    .and_then(|event| {
        let header = key_in_header(delivery.properties.headers().as_ref())?;
        Ok((event, header))
    });
    match parsed {
        // Boxed (a rare path): keeps each event's task small to move.
        Err(rejection) => {
            drop(turn);
            Box::pin(reject(&ctx, &delivery, &rejection)).await
        }
        Ok((event, header)) => {
            let span = tracing::info_span!("fan_out", event_id = %event.id, event_type = %event.event_type);
            let received = Received {
                redelivered: delivery.redelivered || shortcut::was_redelivered(&delivery),
                at_us: received_us,
                key: header,
                turn,
            };
            match accept(&ctx, &event, received)
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

/// How the event arrived.
struct Received {
    /// The broker's redelivered flag (of `{ns}.ingest`'s message too, for
    /// a copy the router moved to a partition).
    redelivered: bool,
    /// When the consumer took it (Unix microseconds).
    at_us: i64,
    /// The producer's `x-ordering-key`.
    key: Option<String>,
    /// Its turn to have ordered jobs numbered.
    turn: Turn,
}

async fn accept(ctx: &IngestContext, event: &Event, received: Received) -> Result<(), IngestError> {
    let Received {
        redelivered,
        at_us: received_us,
        key,
        turn,
    } = received;
    let Some(claimed) = claim(ctx, event, redelivered).await else {
        drop(turn);
        tracing::info!("duplicate event id; not fanned out again");
        ctx.metrics.event_duplicate();
        return Ok(());
    };
    let webhooks = match ctx.cache.webhooks(&event.application_id).await {
        Ok(webhooks) => webhooks,
        Err(e) => {
            // Handed back, this event may come again after later ones: an
            // ordered webhook would get them out of order. Its turn is held
            // (later ordered events wait) while the lookup is tried again.
            tracing::warn!(error = %crate::logging::Chain(&e), "cannot read webhooks; retrying");
            webhooks_eventually(ctx, &event.application_id).await
        }
    };
    let targets = targets(ctx, event, &webhooks);
    let mut jobs: Vec<DeliveryJob> = targets
        .iter()
        .map(|w| DeliveryJob::new(event, &w.id, received_us))
        .collect();
    number(ctx, event, key, &targets, &mut jobs, turn).await?;
    let encoded: Vec<Vec<u8>> = jobs.iter().map(DeliveryJob::encode).collect();
    // Each job waits in its webhook's own backlog: a burst for one webhook
    // is never in front of another's jobs.
    let routed: Vec<Routed> = jobs
        .iter()
        .zip(&encoded)
        .map(|(job, payload)| Routed {
            webhook_id: &job.webhook_id,
            payload,
            message_id: &event.id,
        })
        .collect();
    ctx.router.route(&ctx.publisher, &routed).await?;
    if claimed.is_some() {
        ctx.markers.complete(&event.application_id, &event.id);
    }
    ctx.metrics.event_consumed(&event.event_type);
    ctx.metrics.jobs_enqueued(jobs.len());
    tracing::debug!(jobs = jobs.len(), "fanned out");
    Ok(())
}

/// Claims the event's id: `None` for a duplicate (fanned out already, or
/// being fanned out by a copy that is not a redelivery of this message);
/// else whether a marker was claimed (without Redis the id check is
/// skipped rather than stopping the flow: delivery is at-least-once and
/// receivers deduplicate on `Webhook-Id`).
async fn claim(ctx: &IngestContext, event: &Event, redelivered: bool) -> Option<Option<Marker>> {
    let claimed = match ctx.markers.claim(&event.application_id, &event.id).await {
        Ok(marker) => Some(marker),
        Err(e) => {
            tracing::warn!(error = %crate::logging::Chain(&e), "event-id check unavailable; fanning out without it");
            None
        }
    };
    match claimed {
        // A crash interrupted an earlier fan-out of this very message: redo it.
        Some(Marker::InProgress) if redelivered => Some(claimed),
        Some(Marker::InProgress | Marker::Done) => None,
        Some(Marker::New) | None => Some(claimed),
    }
}

/// The application's webhooks, asked again until the store answers.
async fn webhooks_eventually(ctx: &IngestContext, app: &str) -> Arc<[Webhook]> {
    let mut pause = Duration::from_millis(100);
    loop {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
        match ctx.cache.webhooks(app).await {
            Ok(webhooks) => return webhooks,
            Err(e) => {
                tracing::debug!(error = %crate::logging::Chain(&e), "webhooks still unreadable")
            }
        }
    }
}

/// Gives the jobs of ordered webhooks their key and number, in the order
/// of `{ns}.ingest`; an event without a key goes unordered.
async fn number(
    ctx: &IngestContext,
    event: &Event,
    header: Option<String>,
    targets: &[&Webhook],
    jobs: &mut [DeliveryJob],
    turn: Turn,
) -> Result<(), IngestError> {
    let ordered: Vec<usize> = (0..targets.len())
        .filter(|&i| targets[i].ordering == Ordering::PerKey)
        .collect();
    let key = match ordered.is_empty() {
        true => None,
        false => header.or_else(|| {
            let pointer = ctx.catalogue.ordering_key(&event.event_type)?;
            event.key_in_content(pointer)
        }),
    };
    let Some(key) = key else {
        drop(turn);
        return Ok(());
    };
    let wanted = Wanted {
        app: event.application_id.clone(),
        event_id: event.id.clone(),
        pairs: ordered
            .iter()
            .map(|&i| (targets[i].id.clone(), key.clone()))
            .collect(),
    };
    let numbers = turn.number(wanted).await.ok_or(IngestError::Closing)?;
    for (&i, seq) in ordered.iter().zip(numbers) {
        jobs[i].order = Some(JobOrder {
            key: key.clone(),
            seq,
        });
    }
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
