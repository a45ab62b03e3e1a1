//! Handing a job on after it was not delivered: to the next retry tier, to a
//! delay tier without an attempt (deferred), or to the dead letters. Each hop
//! is confirmed before the job is acked.

use std::time::Duration;

use super::endpoint::Endpoint;
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
/// default) unless the origin's backlog asks for a longer wait.
const MAX_DEFERRAL_TIER: usize = 2;

/// Without an attempt (the endpoint is saturated): wait in a delay tier. The
/// tier is the later of two choices: one step up the schedule per earlier
/// deferral (capped at its third tier), and the first tier long enough for
/// the origin to work through the jobs this process has already parked for
/// it. So the jobs of a receiver that cannot keep up wait about until it can
/// take them, instead of cycling through the broker every few seconds at the
/// cost of everyone else's deliveries.
pub async fn defer(
    ctx: &DeliverContext,
    mut job: DeliveryJob,
    endpoint: &Endpoint,
    reason: &'static str,
) -> Settle {
    let delays: Vec<Duration> = ctx.schedule.tiers().iter().map(|t| t.delay).collect();
    let left = ctx.max_age.saturating_sub(age(&job));
    let Some(index) = deferral_tier(job.deferrals, endpoint.parked_wait(), &delays, left) else {
        return dead_letter(ctx, job, "max_age_exceeded").await;
    };
    let tier = &ctx.schedule.tiers()[index];
    job.deferrals += 1;
    job.parked = true;
    let settle = to_tier(ctx, &job, &tier.label).await;
    if settle == Settle::Ack {
        endpoint.note_parked();
        ctx.metrics.job_deferred(reason);
        tracing::debug!(reason, tier = %tier.label, deferrals = job.deferrals, "job deferred");
    }
    settle
}

/// The tier index for a job deferred `deferrals` times before, whose origin
/// needs `backlog` to work through what is already parked, among tiers of
/// `delays`, waiting at most `left`; `None` if even the first is too long.
fn deferral_tier(
    deferrals: u32,
    backlog: Option<Duration>,
    delays: &[Duration],
    left: Duration,
) -> Option<usize> {
    let last = delays.len().checked_sub(1)?;
    let climbed = (deferrals as usize).min(MAX_DEFERRAL_TIER).min(last);
    let needed = backlog.map_or(0, |b| delays.iter().position(|&d| d >= b).unwrap_or(last));
    let mut index = climbed.max(needed);
    while delays[index] > left {
        index = index.checked_sub(1)?;
    }
    Some(index)
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

    fn secs(s: &[u64]) -> Vec<Duration> {
        s.iter().map(|&s| Duration::from_secs(s)).collect()
    }

    #[test]
    fn deferrals_climb_to_the_third_tier_and_stay() {
        let delays = secs(&[10, 30, 120, 600, 1800]);
        let day = Duration::from_secs(86_400);
        let tiers: Vec<Option<usize>> = (0..6)
            .map(|d| deferral_tier(d, None, &delays, day))
            .collect();
        assert_eq!(tiers, [0, 1, 2, 2, 2, 2].map(Some));
        assert_eq!(deferral_tier(5, None, &secs(&[10]), day), Some(0));
    }

    #[test]
    fn an_origin_s_parked_backlog_picks_a_later_tier_within_the_max_age() {
        let delays = secs(&[10, 30, 120, 600, 1800]);
        let day = Duration::from_secs(86_400);
        let backlog = |s| Some(Duration::from_secs(s));
        assert_eq!(deferral_tier(0, backlog(5), &delays, day), Some(0));
        assert_eq!(deferral_tier(0, backlog(100), &delays, day), Some(2));
        assert_eq!(deferral_tier(0, backlog(5000), &delays, day), Some(4));
        // Never past the max age: a shorter tier, or none at all.
        let left = Duration::from_secs(200);
        assert_eq!(deferral_tier(0, backlog(5000), &delays, left), Some(2));
        assert_eq!(deferral_tier(0, None, &delays, secs(&[5])[0]), None);
    }
}
