//! Handing a job on after it was not delivered: to the next retry tier, to a
//! delay tier without an attempt (deferred), or to the dead letters. Each hop
//! is confirmed before the job is acked.

use std::time::Duration;

use super::job::DeliveryJob;
use super::outcome::Failure;
use super::worker::DeliverContext;
use crate::broker::Outgoing;
use crate::clock;
use crate::consume::Settle;
use crate::retry::Next;

fn age(job: &DeliveryJob) -> Duration {
    Duration::from_millis((clock::unix_millis() - job.received_at_ms).max(0) as u64)
}

/// After a failed attempt: the next tier of the schedule, or a dead letter
/// once the next attempt would fall past the max age.
pub async fn fail(ctx: &DeliverContext, job: DeliveryJob, f: Failure) -> Settle {
    let attempts = job.attempts.len() as u32;
    let next = match f.retry_after {
        Some(at_least) => ctx
            .schedule
            .next_at_least(attempts, at_least, age(&job), ctx.max_age),
        None => ctx.schedule.next(attempts, age(&job), ctx.max_age),
    };
    match next {
        Next::After(tier) => match to_tier(ctx, &job, &tier.label).await {
            Settle::Ack => {
                ctx.metrics.retry_scheduled(&tier.label);
                tracing::info!(error = %f.error, tier = %tier.label, "delivery failed; retry scheduled");
                Settle::Ack
            }
            requeue => requeue,
        },
        Next::DeadLetter => {
            tracing::warn!(error = %f.error, "delivery failed past the max age; dead-lettered");
            dead_letter(ctx, job, "max_age_exceeded").await
        }
    }
}

/// Deferrals climb the schedule up to this tier (the third, 2 min by
/// default) and stay there.
const MAX_DEFERRAL_TIER: usize = 2;

/// Without an attempt (the endpoint is saturated): wait in a delay tier, the
/// first one the first time, then further up the schedule (capped at its
/// third tier), so the jobs of a receiver that cannot keep up do not cycle
/// through the broker every few seconds at the cost of everyone else's.
pub async fn defer(ctx: &DeliverContext, mut job: DeliveryJob, reason: &'static str) -> Settle {
    let tiers = ctx.schedule.tiers();
    let tier = &tiers[deferral_tier(job.deferrals, tiers.len())];
    if age(&job) + tier.delay > ctx.max_age {
        return dead_letter(ctx, job, "max_age_exceeded").await;
    }
    job.deferrals += 1;
    let settle = to_tier(ctx, &job, &tier.label).await;
    if settle == Settle::Ack {
        ctx.metrics.job_deferred(reason);
        tracing::debug!(reason, tier = %tier.label, deferrals = job.deferrals, "job deferred");
    }
    settle
}

/// The tier index for a job deferred `deferrals` times before, of `tiers`.
fn deferral_tier(deferrals: u32, tiers: usize) -> usize {
    (deferrals as usize)
        .min(MAX_DEFERRAL_TIER)
        .min(tiers.saturating_sub(1))
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
            tracing::warn!(error = %e, tier, "cannot reach the delay tier; job handed back");
            Settle::Requeue
        }
    }
}

/// Moves the job to the dead letters for `reason`.
pub async fn dead_letter(ctx: &DeliverContext, job: DeliveryJob, reason: &str) -> Settle {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferrals_climb_to_the_third_tier_and_stay() {
        let tiers: Vec<usize> = (0..6).map(|d| deferral_tier(d, 10)).collect();
        assert_eq!(tiers, [0, 1, 2, 2, 2, 2]);
        assert_eq!(deferral_tier(5, 1), 0, "a one-tier schedule");
    }
}
