//! The delivery worker's handling of one job from `{ns}.deliver`: re-read the
//! webhook, pass the endpoint's breaker and concurrency cap, attempt, then ack
//! or hand the failure on (`hand_on`).

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::client::{Attempt, DeliveryClient, Transport};
use super::endpoint::{Admit, Endpoints};
use super::hand_on::{dead_letter, defer, fail};
use super::job::{AttemptRecord, DeliveryJob};
use super::outcome::{Failure, Outcome, classify};
use super::prepared::PreparedWebhooks;
use crate::broker::{ConfirmedPublisher, Names};
use crate::clock;
use crate::consume::Settle;
use crate::metrics::{Metrics, OutcomeLabel};
use crate::retry::RetrySchedule;
use crate::subscription::{Store, SubscriptionCache};

/// Everything the worker needs, shared by all in-flight jobs.
pub struct DeliverContext {
    /// Webhook lookups.
    pub cache: Arc<SubscriptionCache>,
    /// HTTP client.
    pub client: DeliveryClient,
    /// Per-origin caps and circuit breakers.
    pub endpoints: Arc<Endpoints>,
    /// Webhooks prepared for delivery (checked URL, endpoint, signing keys).
    pub prepared: Arc<PreparedWebhooks>,
    /// Confirmed publisher for retries and dead letters.
    pub publisher: ConfirmedPublisher,
    /// Queue names.
    pub names: Names,
    /// Dead letter count.
    pub store: Store,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Retry tiers.
    pub schedule: RetrySchedule,
    /// `WF_MAX_EVENT_AGE`.
    pub max_age: Duration,
}

/// Handles one job message; the returned value says how to settle it.
pub async fn handle_job(ctx: &DeliverContext, data: &[u8]) -> Settle {
    let job = match DeliveryJob::decode(data) {
        Ok(job) => job,
        Err(e) => {
            tracing::error!(error = %e, "undecodable delivery job dropped");
            ctx.metrics.job_dropped("invalid_job");
            return Settle::Ack;
        }
    };
    let span = tracing::info_span!(
        "deliver",
        event_id = %job.event_id,
        webhook_id = %job.webhook_id,
        attempt = job.next_attempt(),
        outcome = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    );
    attempt(ctx, job).instrument(span).await
}

async fn attempt(ctx: &DeliverContext, mut job: DeliveryJob) -> Settle {
    let webhooks = match ctx.cache.webhooks(&job.application_id).await {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read webhook; job handed back");
            return Settle::Requeue;
        }
    };
    let now = clock::unix_secs();
    let prepared = ctx
        .prepared
        .get(&webhooks, &job.webhook_id, now, &ctx.client, &ctx.endpoints);
    let prepared = match prepared {
        Some(p) => p,
        None => {
            tracing::info!("webhook deleted; job dropped");
            ctx.metrics.job_dropped("webhook_deleted");
            return Settle::Ack;
        }
    };
    if job.parked {
        // Back from a deferral (if another process parked it, this one's
        // count stays at zero). Any later hop is not a deferral.
        job.parked = false;
        prepared.endpoint.note_returned();
    }
    if !prepared.webhook.enabled {
        tracing::info!("webhook disabled; job dead-lettered");
        return Box::pin(dead_letter(ctx, job, "webhook_disabled")).await;
    }
    let endpoint = &prepared.endpoint;
    let admit = endpoint.admit();
    if admit == Admit::ShortCircuit {
        // No request and no timeout spent: the attempt fails at once.
        ctx.metrics.job_deferred("circuit_open");
        let failure = Failure {
            label: OutcomeLabel::ConnectError,
            status: None,
            error: "circuit open: the endpoint keeps failing; request not sent".into(),
            retry_after: None,
        };
        job.attempts.push(AttemptRecord {
            at_ms: clock::unix_millis(),
            status: None,
            error: Some(failure.error.clone()),
            duration_ms: 0,
        });
        return Box::pin(fail(ctx, job, failure)).await;
    }
    // Bounded per origin so a slow receiver cannot fill the prefetch window.
    let Some(_slot) = endpoint.slot().await else {
        if admit == Admit::Probe {
            endpoint.release_probe();
        }
        return Box::pin(defer(ctx, job, endpoint, "endpoint_saturated")).await;
    };
    let started_ms = clock::unix_millis();
    let result = {
        let _inflight = ctx.metrics.inflight();
        // Boxed, as are the rarer hand-on paths below: these futures are
        // kilobytes, and boxing them keeps each job's task small to move.
        Box::pin(ctx.client.deliver(Attempt {
            target: &prepared.target,
            event_id: &job.event_id,
            attempt: job.next_attempt(),
            body: job.body.get().as_bytes(),
            signer: &prepared.signer,
        }))
        .await
    };
    let outcome = classify(&result.transport);
    let span = tracing::Span::current();
    span.record("duration_ms", result.duration.as_millis() as u64);
    span.record("outcome", failure_label(&outcome));
    if endpoint.record(outcome == Outcome::Delivered, result.duration) {
        ctx.metrics.set_open_circuits(ctx.endpoints.open_circuits());
    }
    let failure = match &outcome {
        Outcome::Delivered => None,
        Outcome::Retry(f) | Outcome::GiveUp(f) => Some(f),
    };
    ctx.metrics.delivery_finished(
        failure.map_or(OutcomeLabel::Success, |f| f.label),
        result.duration,
    );
    job.attempts.push(record(
        started_ms,
        &result.transport,
        failure,
        result.duration,
    ));
    match outcome {
        Outcome::Delivered => {
            let age_ms = (clock::unix_millis() - job.received_at_ms).max(0) as u64;
            ctx.metrics
                .delivered_end_to_end(Duration::from_millis(age_ms));
            tracing::info!(
                duration_ms = result.duration.as_millis() as u64,
                "delivered"
            );
            Settle::Ack
        }
        Outcome::Retry(f) => Box::pin(fail(ctx, job, f)).await,
        Outcome::GiveUp(f) => {
            tracing::warn!(error = %f.error, "target refused; dead-lettered");
            Box::pin(dead_letter(ctx, job, "target_refused")).await
        }
    }
}

fn failure_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Delivered => "success",
        Outcome::Retry(f) | Outcome::GiveUp(f) => f.label.as_str(),
    }
}

fn record(
    at_ms: i64,
    transport: &Transport,
    failure: Option<&Failure>,
    duration: Duration,
) -> AttemptRecord {
    AttemptRecord {
        at_ms,
        status: transport.status(),
        error: failure.map(|f| f.error.clone()),
        duration_ms: duration.as_millis() as u64,
    }
}
