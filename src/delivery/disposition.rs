//! What becomes of a job after one pass through the worker: one value, a
//! [`Disposition`], turned by pure functions into one [`Hop`] (ack, a delay
//! tier, or the dead letters). The words are the project's:
//! *defer* (put back without a request: the webhook is saturated or its
//! circuit is open), *schedule a retry* (after a failed request),
//! *dead-letter* (given up), *drop* (nowhere to deliver).

use std::time::Duration;

use super::outcome::Failure;
use crate::job::DeliveryJob;
use crate::retry::{Next, RetrySchedule, Tier};

/// How one pass through the worker ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Disposition {
    /// A 2xx arrived.
    Delivered,
    /// Nowhere to deliver (the webhook was deleted): ack and count.
    Drop(&'static str),
    /// Give up now, whatever the age (webhook disabled, target refused).
    DeadLetter(&'static str),
    /// A request was sent and failed: schedule a retry.
    Failed(Failure),
    /// The circuit is open: no request; the next tier of the schedule.
    ShortCircuited,
    /// The webhook (or its host) is saturated: no request; a delay tier
    /// chosen by [`deferral_tier`].
    Deferred(&'static str),
    /// An earlier event of its ordering key is not finished: no request;
    /// it waits in this tier and looks again.
    Held(Tier),
}

/// Where the job goes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Hop {
    /// Nothing more to publish: ack it.
    Ack,
    /// Publish it to this delay tier, then ack it.
    Tier(Tier),
    /// Publish its dead letter with this reason, then ack it.
    DeadLetter(&'static str),
}

/// What the planning needs besides the job.
pub(super) struct Plan<'a> {
    /// `WF_RETRY_SCHEDULE`.
    pub schedule: &'a RetrySchedule,
    /// `WF_MAX_EVENT_AGE`.
    pub max_age: Duration,
    /// How long ago the service first received the event.
    pub age: Duration,
    /// How long the webhook needs for the jobs already deferred for it.
    pub backlog: Option<Duration>,
}

/// Deferrals climb the schedule up to this tier (the third, 2 min by
/// default) unless the webhook's backlog asks for a longer wait.
const MAX_DEFERRAL_TIER: usize = 2;

/// The hop for `job` (its history already holds this pass's attempt).
pub(super) fn plan(job: &DeliveryJob, disposition: &Disposition, p: &Plan<'_>) -> Hop {
    let attempts = job.attempts.len() as u32;
    let next = match disposition {
        Disposition::Delivered | Disposition::Drop(_) => return Hop::Ack,
        Disposition::DeadLetter(reason) => return Hop::DeadLetter(reason),
        Disposition::Held(tier) => return Hop::Tier(tier.clone()),
        Disposition::Failed(Failure {
            retry_after: Some(at_least),
            ..
        }) => p
            .schedule
            .next_at_least(attempts, *at_least, p.age, p.max_age),
        Disposition::Failed(_) | Disposition::ShortCircuited => {
            p.schedule.next(attempts, p.age, p.max_age)
        }
        Disposition::Deferred(_) => {
            let delays: Vec<Duration> = p.schedule.tiers().iter().map(|t| t.delay).collect();
            let left = p.max_age.saturating_sub(p.age);
            match deferral_tier(job.deferrals, p.backlog, &delays, left) {
                Some(i) => Next::After(p.schedule.tiers()[i].clone()),
                None => Next::DeadLetter,
            }
        }
    };
    match next {
        Next::After(tier) => Hop::Tier(tier),
        Next::DeadLetter => Hop::DeadLetter(expired(job)),
    }
}

/// The reason of a job given up at max age: `circuit_open` when its circuit
/// stopped every attempt (the receiver never got a request), so an operator
/// knows the endpoint was never reached; else `max_age_exceeded`.
pub(super) fn expired(job: &DeliveryJob) -> &'static str {
    if !job.attempts.is_empty() && job.requests_sent() == 0 {
        "circuit_open"
    } else {
        "max_age_exceeded"
    }
}

/// The tier index for a job deferred `deferrals` times before, whose webhook
/// needs `backlog` to work through what is already deferred, among tiers of
/// `delays`, waiting at most `left`; `None` if even the first is too long.
/// The later of one step up the schedule per earlier deferral (capped at its
/// third tier) and the first tier long enough for the backlog: the jobs of a
/// receiver that cannot keep up wait about until it can take them, instead of
/// cycling through the broker every few seconds at everyone else's cost.
pub(super) fn deferral_tier(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::AttemptRecord;
    use crate::metrics::OutcomeLabel;

    fn secs(s: &[u64]) -> Vec<Duration> {
        s.iter().map(|&s| Duration::from_secs(s)).collect()
    }

    fn job(sent: &[bool]) -> DeliveryJob {
        let text = r#"{"v":1,"event_id":"e","application_id":"a","webhook_id":"w","type":"t","body":{},"received_at_ms":0}"#;
        let mut job = DeliveryJob::decode(text.as_bytes()).unwrap();
        job.attempts = sent
            .iter()
            .map(|&sent| AttemptRecord {
                sent,
                at_ms: 0,
                status: None,
                error: None,
                duration_ms: 0,
            })
            .collect();
        job
    }

    fn failure(retry_after: Option<u64>) -> Disposition {
        Disposition::Failed(Failure {
            label: OutcomeLabel::HttpError,
            status: Some(503),
            error: "HTTP 503".into(),
            retry_after: retry_after.map(Duration::from_secs),
        })
    }

    fn hop(job: &DeliveryJob, d: &Disposition, age: u64) -> Hop {
        let schedule = RetrySchedule::parse("10s,30s,2m").unwrap();
        let p = Plan {
            schedule: &schedule,
            max_age: Duration::from_secs(3600),
            age: Duration::from_secs(age),
            backlog: None,
        };
        plan(job, d, &p)
    }

    fn tier(hop: Hop) -> String {
        match hop {
            Hop::Tier(t) => t.label,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_disposition_has_its_hop() {
        let one = job(&[true]);
        assert_eq!(hop(&one, &Disposition::Delivered, 0), Hop::Ack);
        assert_eq!(
            hop(&one, &Disposition::Drop("webhook_deleted"), 0),
            Hop::Ack
        );
        assert_eq!(
            hop(&one, &Disposition::DeadLetter("webhook_disabled"), 0),
            Hop::DeadLetter("webhook_disabled")
        );
        assert_eq!(tier(hop(&one, &failure(None), 0)), "10s");
        assert_eq!(tier(hop(&job(&[true, true]), &failure(None), 0)), "30s");
        assert_eq!(tier(hop(&one, &failure(Some(60)), 0)), "2m", "Retry-After");
        // Short-circuited attempts climb the schedule like failed ones.
        let skipped = job(&[true, false, false]);
        assert_eq!(tier(hop(&skipped, &Disposition::ShortCircuited, 0)), "2m");
        assert_eq!(
            tier(hop(
                &job(&[]),
                &Disposition::Deferred("endpoint_saturated"),
                0
            )),
            "10s"
        );
    }

    #[test]
    fn a_job_never_sent_is_dead_lettered_as_circuit_open() {
        let late = 3600 - 5;
        assert_eq!(
            hop(&job(&[false, false]), &Disposition::ShortCircuited, late),
            Hop::DeadLetter("circuit_open")
        );
        assert_eq!(
            hop(&job(&[true, false]), &Disposition::ShortCircuited, late),
            Hop::DeadLetter("max_age_exceeded")
        );
        assert_eq!(
            hop(&job(&[true]), &failure(None), late),
            Hop::DeadLetter("max_age_exceeded")
        );
        // Deferred without any attempt: it was never short-circuited either.
        assert_eq!(
            hop(
                &job(&[]),
                &Disposition::Deferred("endpoint_saturated"),
                late
            ),
            Hop::DeadLetter("max_age_exceeded")
        );
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
    fn a_webhook_s_deferred_backlog_picks_a_later_tier_within_the_max_age() {
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
