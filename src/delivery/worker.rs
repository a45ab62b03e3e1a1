//! The delivery worker's handling of one job from its webhook's backlog:
//! re-read the webhook, pass its breaker and concurrency cap, attempt, and
//! end in one [`Disposition`] that `publish.rs` carries out.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::client::{Attempt, AttemptResult, Transport};
use super::context::DeliverContext;
use super::disposition::{Disposition, after_request};
use super::endpoint::{Admit, Endpoint};
use super::outcome::{Failure, Outcome, Signal, classify, signal};
use super::prepared::Prepared;
use super::publish::dispose;
use crate::clock;
use crate::consume::Settle;
use crate::job::{AttemptRecord, DeliveryJob};
use crate::metrics::OutcomeLabel;
use crate::subscription::{Attempt as Recorded, Kind, Ordering};

/// Handles one job message from a backlog; the returned value says how to
/// settle it.
pub(crate) async fn handle_job(ctx: &DeliverContext, data: &[u8]) -> Settle {
    let job = match DeliveryJob::decode(data) {
        Ok(job) => job,
        Err(e) => return Box::pin(reject(ctx, data, &e)).await,
    };
    let span = tracing::info_span!(
        "deliver",
        event_id = %job.event_id,
        webhook_id = %job.webhook_id,
        attempt = job.next_attempt(),
        outcome = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    );
    // Boxed: the future is kilobytes, and boxing it keeps each job's task
    // small to move.
    Box::pin(attempt(ctx, job)).instrument(span).await
}

/// A job this release cannot run (malformed, or another wire version: a
/// newer release wrote it) is never destroyed: it is moved aside to
/// `{ns}.rejected` with its reason, so an operator can put it back once a
/// release that reads it runs.
pub(super) async fn reject(ctx: &DeliverContext, data: &[u8], e: &crate::job::JobError) -> Settle {
    let queue = ctx.names.rejected();
    match ctx
        .publisher
        .reject(&queue, data, None, &e.reason(), None)
        .await
    {
        Ok(()) => {
            tracing::error!(reason = %e.reason(), "undecodable delivery job rejected");
            ctx.metrics.job_rejected(e.code());
            Settle::Ack
        }
        Err(p) => {
            tracing::warn!(error = %crate::logging::Chain(&p), "cannot move the undecodable job aside; handed back");
            Settle::Requeue
        }
    }
}

/// How a job's checks before its request ended it.
enum Stop {
    /// Its webhook cannot be read now: handed back.
    HandBack,
    /// Ended without a request.
    Dispose(Disposition),
}

/// The checks before a job's request: its webhook, re-read (deleted:
/// dropped; disabled: dead-lettered) and, for an ordered webhook, its turn
/// in its key (held as being sent until the guard drops).
async fn checked<'a>(
    ctx: &'a DeliverContext,
    job: &DeliveryJob,
) -> Result<(Arc<Prepared>, Option<crate::ordering::Sending<'a>>), Stop> {
    // Back from a delay tier: one job fewer waiting there for its webhook.
    if !job.attempts.is_empty() || job.deferrals > 0 || job.holds > 0 {
        ctx.history
            .waiting(&job.application_id, &job.webhook_id, -1);
    }
    let webhooks = match ctx.cache.webhooks(&job.application_id).await {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %crate::logging::Chain(&e), "cannot read webhook; job handed back");
            return Err(Stop::HandBack);
        }
    };
    let now = clock::unix_secs();
    let Some(prepared) = ctx
        .prepared
        .get(&webhooks, &job.webhook_id, now, &ctx.client)
    else {
        return Err(Stop::Dispose(Disposition::Drop("webhook_deleted")));
    };
    if !prepared.webhook.enabled {
        return Err(Stop::Dispose(Disposition::DeadLetter("webhook_disabled")));
    }
    // Ordered per key: only once every earlier event of the key is finished.
    let sending = match &job.order {
        Some(order) if prepared.webhook.ordering == Ordering::PerKey => {
            match ctx.ordering.gate(job, order).await {
                Ok(sending) => Some(sending),
                Err(tier) => return Err(Stop::Dispose(Disposition::Held(tier))),
            }
        }
        _ => None,
    };
    Ok((prepared, sending))
}

async fn attempt(ctx: &DeliverContext, mut job: DeliveryJob) -> Settle {
    let (prepared, _sending) = match checked(ctx, &job).await {
        Ok(ready) => ready,
        Err(Stop::HandBack) => return Settle::Requeue,
        Err(Stop::Dispose(disposition)) => return dispose(ctx, job, disposition).await,
    };
    let endpoint = ctx.endpoints.of(&job.webhook_id, &prepared.webhook.url);
    // An operator's replay is sent whatever the breaker says: it is the probe
    // that tells whether the receiver was fixed.
    let admit = match job.probe {
        true => Admit::Pass,
        false => endpoint.admit(),
    };
    if admit == Admit::ShortCircuit {
        return short_circuit(ctx, job, &endpoint).await;
    }
    // Bounded per webhook; beyond the cap the job waits here, at the head
    // of its webhook's own backlog, in nobody else's way.
    let limit = prepared.webhook.rate_limit;
    let slot = endpoint
        .slot(async {
            if let Some(limit) = limit
                && ctx
                    .rates
                    .take(&job.application_id, &job.webhook_id, limit)
                    .await
            {
                ctx.metrics.rate_limited();
            }
        })
        .await;
    // The circuit may have opened while this job waited for its slot (the
    // jobs ahead of it failed): it is not sent then either. A probe (the
    // half-open circuit's one request, or an operator's replay) is sent.
    if !job.probe && admit == Admit::Pass && endpoint.is_open() {
        drop(slot);
        return short_circuit(ctx, job, &endpoint).await;
    }
    let disposition = send(ctx, &mut job, &prepared, &endpoint).await;
    drop(slot);
    dispose(ctx, job, disposition).await
}

/// A job whose webhook's circuit is open: no request and no timeout spent,
/// the attempt is recorded as not sent.
async fn short_circuit(ctx: &DeliverContext, mut job: DeliveryJob, endpoint: &Endpoint) -> Settle {
    const WHY: &str = "circuit open: the webhook keeps failing; request not sent";
    job.attempts
        .push(AttemptRecord::short_circuited(clock::unix_millis(), WHY));
    let (app, id) = (&job.application_id, &job.webhook_id);
    ctx.lifecycle.failed(endpoint, app, id, false);
    not_sent(ctx, &job, "circuit_open", WHY);
    dispose(ctx, job, Disposition::ShortCircuited).await
}

/// Sends the request and records it in the job, the breaker and the metrics.
async fn send(
    ctx: &DeliverContext,
    job: &mut DeliveryJob,
    prepared: &Prepared,
    endpoint: &Endpoint,
) -> Disposition {
    let started_ms = clock::unix_millis();
    let result = {
        let _inflight = ctx.metrics.inflight();
        ctx.client
            .deliver(Attempt {
                target: &prepared.target,
                event_id: &job.event_id,
                attempt: job.next_attempt(),
                body: job.body.get().as_bytes(),
                signer: &prepared.signer,
                sequence: job.order.as_ref().map(|o| o.seq),
                headers: &prepared.headers,
                identity: prepared.identity.as_ref(),
                auth: prepared.auth.as_deref(),
            })
            .await
    };
    let outcome = classify(&result.transport);
    record_sent(ctx, job, endpoint, &result, &outcome, started_ms);
    let (app, id) = (job.application_id.as_str(), job.webhook_id.as_str());
    let signal = signal(&result.transport, ctx.lifecycle.disable_on_gone);
    if let Some(Signal::Disable(reason)) = signal {
        ctx.lifecycle.disable_later(app, id, reason);
    }
    match &outcome {
        Outcome::Delivered => ctx.lifecycle.succeeded(endpoint, app, id),
        _ if signal.is_some() => endpoint.note_failure(),
        _ => ctx.lifecycle.failed(endpoint, app, id, true),
    }
    let disposition = after_request(&outcome, signal);
    match (&disposition, &outcome) {
        (Disposition::Delivered, _) => {
            let age_ms = (clock::unix_millis() - job.received_at_ms).max(0) as u64;
            ctx.metrics
                .delivered_end_to_end(Duration::from_millis(age_ms));
            tracing::debug!(
                duration_ms = result.duration.as_millis() as u64,
                "delivered"
            );
        }
        (Disposition::DeadLetter(reason), Outcome::Retry(f) | Outcome::GiveUp(f)) => {
            tracing::warn!(error = %f.error, reason, ?signal, "dead-lettered at once");
        }
        _ => {}
    }
    disposition
}

/// Records a sent request (`result`, started at `started_ms`) in the job's
/// attempts, the webhook's breaker and history, the span and the metrics.
fn record_sent(
    ctx: &DeliverContext,
    job: &mut DeliveryJob,
    endpoint: &Endpoint,
    result: &AttemptResult,
    outcome: &Outcome,
    started_ms: i64,
) {
    let number = job.next_attempt();
    let span = tracing::Span::current();
    span.record("duration_ms", result.duration.as_millis() as u64);
    span.record("outcome", failure_label(outcome));
    if endpoint.record(*outcome == Outcome::Delivered) {
        ctx.metrics.set_open_circuits(ctx.endpoints.open_circuits());
    }
    let failure = match outcome {
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
    // The probe was this request; the job's retries follow the breaker.
    job.probe = false;
    ctx.history.record(
        &job.application_id,
        &job.webhook_id,
        Recorded {
            at_ms: started_ms,
            event_id: job.event_id.clone(),
            event_type: job.event_type.clone(),
            attempt: number,
            status: result.transport.status(),
            error_class: failure.map(|f| f.label.as_str()),
            error: failure.map(|f| f.error.clone()),
            duration_ms: result.duration.as_millis() as u64,
            sent: true,
            kind: kind(job),
        },
    );
}

fn kind(job: &DeliveryJob) -> Kind {
    match job.replay {
        true => Kind::Replay,
        false => Kind::Delivery,
    }
}

/// Records an attempt that sent no request (`class`: `circuit_open`) in
/// the webhook's history.
fn not_sent(ctx: &DeliverContext, job: &DeliveryJob, class: &'static str, error: &str) {
    ctx.history.record(
        &job.application_id,
        &job.webhook_id,
        Recorded {
            at_ms: clock::unix_millis(),
            event_id: job.event_id.clone(),
            event_type: job.event_type.clone(),
            attempt: job.next_attempt(),
            status: None,
            error_class: Some(class),
            error: Some(error.to_string()),
            duration_ms: 0,
            sent: false,
            kind: kind(job),
        },
    );
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
        sent: true,
        at_ms,
        status: transport.status(),
        error: failure.map(|f| f.error.clone()),
        duration_ms: duration.as_millis() as u64,
    }
}
