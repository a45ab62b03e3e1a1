//! The one place a job's hop is carried out: the disposition is planned
//! (pure, `disposition.rs`), the job or its dead letter is published with a
//! confirm, and only then is the job acked; metrics and logs say the same
//! words as the disposition.

use std::time::Duration;

use super::context::DeliverContext;
use super::disposition::{Disposition, Hop, Plan, plan};
use crate::broker::Outgoing;
use crate::clock;
use crate::consume::Settle;
use crate::dead_letter::DeadLetter;
use crate::job::DeliveryJob;

/// Plans `disposition` for `job` and carries the hop out.
pub(super) async fn dispose(
    ctx: &DeliverContext,
    mut job: DeliveryJob,
    disposition: Disposition,
) -> Settle {
    let age = Duration::from_millis((clock::unix_millis() - job.received_at_ms).max(0) as u64);
    let hop = plan(
        &job,
        &disposition,
        &Plan {
            schedule: &ctx.schedule,
            max_age: ctx.max_age,
            age,
        },
    );
    match hop {
        Hop::Ack => {
            if let Disposition::Drop(reason) = disposition {
                tracing::info!(reason, "job dropped");
                ctx.metrics.job_dropped(reason);
                return Settle::Ack;
            }
            finish_in_order(ctx, &job).await
        }
        Hop::Tier(tier) => {
            if let Disposition::Held(_) = disposition {
                job.holds += 1;
            }
            let settle = to_tier(ctx, &job, &tier.label).await;
            if settle == Settle::Ack {
                ctx.history.waiting(&job.application_id, &job.webhook_id, 1);
                counted(ctx, &disposition, &tier.label, tier.delay);
                if let Some(order) = &job.order
                    && !matches!(disposition, Disposition::Held(_))
                {
                    ctx.ordering.head_waits(&job, order, tier.delay).await;
                }
            }
            settle
        }
        Hop::DeadLetter(reason) => {
            if let Disposition::Failed(f) = &disposition {
                tracing::warn!(error = %f.error, reason, "delivery failed; dead-lettered");
            } else {
                tracing::warn!(reason, "job dead-lettered");
            }
            dead_letter(ctx, job, reason).await
        }
    }
}

/// Metrics and logs of a job now waiting in tier `label`.
fn counted(ctx: &DeliverContext, disposition: &Disposition, label: &str, delay: Duration) {
    match disposition {
        Disposition::Failed(f) => {
            ctx.metrics.retry_scheduled(label);
            tracing::info!(error = %f.error, tier = label, "delivery failed; retry scheduled");
        }
        Disposition::ShortCircuited => {
            ctx.metrics.job_deferred("circuit_open", delay);
            tracing::debug!(tier = label, "circuit open; job deferred");
        }
        Disposition::Held(_) => {
            ctx.metrics.ordering_hold();
            tracing::debug!(
                tier = label,
                "an earlier event of its key goes first; job held"
            );
        }
        Disposition::Delivered | Disposition::Drop(_) | Disposition::DeadLetter(_) => {}
    }
}

/// Acks a finished job; an ordered one only once its key's state says it
/// is finished, so the next event of the key may go (handed back if Redis
/// does not take it: it is then sent again, after itself, never before).
async fn finish_in_order(ctx: &DeliverContext, job: &DeliveryJob) -> Settle {
    match &job.order {
        Some(order) if !ctx.ordering.finished(job, order).await => Settle::Requeue,
        _ => Settle::Ack,
    }
}

async fn to_tier(ctx: &DeliverContext, job: &DeliveryJob, tier: &str) -> Settle {
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
        Ok(()) => Settle::Ack,
        Err(e) => {
            tracing::warn!(error = %crate::logging::Chain(&e), tier, "cannot reach the delay tier; job handed back");
            Settle::Requeue
        }
    }
}

/// Publishes `job`'s dead letter to the `{ns}.dead` stream with a confirm.
async fn dead_letter(ctx: &DeliverContext, job: DeliveryJob, reason: &str) -> Settle {
    let event_id = job.event_id.clone();
    let (app, webhook_id) = (job.application_id.clone(), job.webhook_id.clone());
    let ordered = job.order.is_some().then(|| job.clone());
    let letter = DeadLetter::from_job(job, reason, clock::unix_millis());
    let payload = serde_json::to_vec(&letter).expect("a dead letter serializes");
    let queue = ctx.names.dead();
    let message = Outgoing {
        exchange: "",
        routing_key: &queue,
        payload: &payload,
        headers: None,
        message_id: Some(&event_id),
    };
    if let Err(e) = ctx.publisher.publish(message).await {
        tracing::warn!(error = %crate::logging::Chain(&e), "cannot dead-letter; job handed back");
        return Settle::Requeue;
    }
    ctx.metrics.dead_lettered();
    ctx.lifecycle
        .dead_lettered(&app, &webhook_id, &event_id, reason);
    match ordered {
        Some(job) => finish_in_order(ctx, &job).await,
        None => Settle::Ack,
    }
}
