//! The delivery worker's handling of one job from `{ns}.deliver`: re-read the
//! webhook, attempt, then ack, or hand the failure on.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::client::{Attempt, DeliveryClient};
use super::job::{AttemptRecord, DeliveryJob};
use super::outcome::{Failure, Outcome, classify};
use super::signing::Signer;
use crate::broker::{ConfirmedPublisher, Names, Outgoing};
use crate::clock;
use crate::consume::Settle;
use crate::metrics::{Metrics, OutcomeLabel};
use crate::retry::Next;
use crate::retry::RetrySchedule;
use crate::subscription::{Store, SubscriptionCache};

/// Everything the worker needs, shared by all in-flight jobs.
pub struct DeliverContext {
    /// Webhook lookups.
    pub cache: Arc<SubscriptionCache>,
    /// HTTP client.
    pub client: DeliveryClient,
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
    );
    attempt(ctx, job).instrument(span).await
}

async fn attempt(ctx: &DeliverContext, mut job: DeliveryJob) -> Settle {
    let webhook = match ctx
        .cache
        .webhook(&job.application_id, &job.webhook_id)
        .await
    {
        Ok(Some(w)) => w,
        Ok(None) => {
            tracing::info!("webhook deleted; job dropped");
            ctx.metrics.job_dropped("webhook_deleted");
            return Settle::Ack;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read webhook; job handed back");
            return Settle::Requeue;
        }
    };
    if !webhook.enabled {
        tracing::info!("webhook disabled; job dead-lettered");
        return dead_letter(ctx, job, "webhook_disabled").await;
    }
    let started_ms = clock::unix_millis();
    let signer = Signer::new(&webhook.valid_secrets(clock::unix_secs()));
    let result = {
        let _inflight = ctx.metrics.inflight();
        ctx.client
            .deliver(Attempt {
                url: &webhook.url,
                event_id: &job.event_id,
                attempt: job.next_attempt(),
                body: job.body.get().as_bytes(),
                signer: &signer,
            })
            .await
    };
    let outcome = classify(&result.transport);
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
        Outcome::Retry(f) => {
            let age_ms = (clock::unix_millis() - job.received_at_ms).max(0) as u64;
            let age = Duration::from_millis(age_ms);
            let attempts = job.attempts.len() as u32;
            let next = match f.retry_after {
                Some(at_least) => ctx
                    .schedule
                    .next_at_least(attempts, at_least, age, ctx.max_age),
                None => ctx.schedule.next(attempts, age, ctx.max_age),
            };
            match next {
                Next::After(tier) => schedule_retry(ctx, &job, &tier.label, &f).await,
                Next::DeadLetter => {
                    tracing::warn!(error = %f.error, "delivery failed past the max age; dead-lettered");
                    dead_letter(ctx, job, "max_age_exceeded").await
                }
            }
        }
        Outcome::GiveUp(f) => {
            tracing::warn!(error = %f.error, "target refused; dead-lettered");
            dead_letter(ctx, job, "target_refused").await
        }
    }
}

/// Puts the job (with its history) in delay tier `tier`; it comes back to
/// `{ns}.deliver` when the tier's TTL expires.
async fn schedule_retry(
    ctx: &DeliverContext,
    job: &DeliveryJob,
    tier: &str,
    f: &Failure,
) -> Settle {
    let queue = ctx.names.retry(tier);
    let payload = job.encode();
    let message = Outgoing {
        exchange: "",
        routing_key: &queue,
        payload: &payload,
        headers: None,
        message_id: Some(&job.event_id),
    };
    match ctx.publisher.publish(message).await {
        Ok(()) => {
            ctx.metrics.retry_scheduled(tier);
            tracing::info!(error = %f.error, tier, "delivery failed; retry scheduled");
            Settle::Ack
        }
        Err(e) => {
            tracing::warn!(error = %e, tier, "cannot schedule retry; job handed back");
            Settle::Requeue
        }
    }
}

async fn dead_letter(ctx: &DeliverContext, job: DeliveryJob, reason: &str) -> Settle {
    match crate::dead_letter::park(&ctx.publisher, &ctx.names, &ctx.store, job, reason).await {
        Ok(()) => {
            ctx.metrics.dead_lettered();
            Settle::Ack
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot dead-letter; job handed back");
            Settle::Requeue
        }
    }
}

fn record(
    at_ms: i64,
    transport: &super::client::Transport,
    failure: Option<&Failure>,
    duration: Duration,
) -> AttemptRecord {
    let status = match transport {
        super::client::Transport::Response { status, .. } => Some(*status),
        _ => None,
    };
    AttemptRecord {
        at_ms,
        status,
        error: failure.map(|f| f.error.clone()),
        duration_ms: duration.as_millis() as u64,
    }
}
