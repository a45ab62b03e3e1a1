//! What becomes of a job after one pass through the worker: one value, a
//! [`Disposition`], turned by pure functions into one [`Hop`] (ack, a delay
//! tier, or the dead letters). The words are the project's:
//! *defer* (put back without a request: the webhook's circuit is open),
//! *schedule a retry* (after a failed request),
//! *dead-letter* (given up), *drop* (nowhere to deliver).

use std::time::Duration;

use super::outcome::{Failure, Outcome, Signal};
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
    /// An earlier event of its ordering key is not finished: no request;
    /// it waits in this tier and looks again.
    Held(Tier),
}

/// The disposition of a job whose request was sent: what its outcome and
/// the receiver's signal make of it. A receiver that disabled the webhook
/// or aborted the message ends the job whatever the status said (a 2xx
/// still counts as delivered).
pub(super) fn after_request(outcome: &Outcome, signal: Option<Signal>) -> Disposition {
    match (outcome, signal) {
        (Outcome::Delivered, _) => Disposition::Delivered,
        // Disabled now: the message waits among the dead letters for a
        // catch-up, with the others the webhook misses.
        (Outcome::Retry(_) | Outcome::GiveUp(_), Some(Signal::Disable(_))) => {
            Disposition::DeadLetter("webhook_disabled")
        }
        (Outcome::Retry(_) | Outcome::GiveUp(_), Some(Signal::Abort)) => {
            Disposition::DeadLetter("receiver_aborted")
        }
        (Outcome::Retry(f), None) => Disposition::Failed(f.clone()),
        (Outcome::GiveUp(_), None) => Disposition::DeadLetter("target_refused"),
    }
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
}

/// The hop for `job` (its history already holds this pass's attempt).
pub(super) fn plan(job: &DeliveryJob, disposition: &Disposition, p: &Plan<'_>) -> Hop {
    let attempts = job.failed_passes();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_and_signal_has_its_disposition() {
        let failure = Failure {
            label: crate::metrics::OutcomeLabel::HttpError,
            status: Some(500),
            error: "HTTP 500".into(),
            retry_after: None,
        };
        let retry = Outcome::Retry(failure.clone());
        let give_up = Outcome::GiveUp(failure.clone());
        let gone = Some(Signal::Disable("gone"));
        let asked = Some(Signal::Disable("receiver_requested"));
        let abort = Some(Signal::Abort);
        let dead = Disposition::DeadLetter;
        let cases = [
            (&Outcome::Delivered, None, Disposition::Delivered),
            (&Outcome::Delivered, gone, Disposition::Delivered),
            (&Outcome::Delivered, asked, Disposition::Delivered),
            (&Outcome::Delivered, abort, Disposition::Delivered),
            (&retry, None, Disposition::Failed(failure.clone())),
            (&retry, gone, dead("webhook_disabled")),
            (&retry, asked, dead("webhook_disabled")),
            (&retry, abort, dead("receiver_aborted")),
            (&give_up, None, dead("target_refused")),
            (&give_up, gone, dead("webhook_disabled")),
            (&give_up, asked, dead("webhook_disabled")),
            (&give_up, abort, dead("receiver_aborted")),
        ];
        for (outcome, signal, expected) in cases {
            assert_eq!(
                after_request(outcome, signal),
                expected,
                "{outcome:?} {signal:?}"
            );
        }
    }
    use crate::job::AttemptRecord;
    use crate::metrics::OutcomeLabel;

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
    }

    proptest::proptest! {
        /// Whatever the job's history and age: a delivered or dropped job is
        /// acked, a dead letter keeps its reason, a held job waits in its
        /// tier, and a failed or short-circuited one waits in a tier that
        /// ends within its max age or is dead-lettered, as `circuit_open`
        /// exactly when no request of it was ever sent.
        #[test]
        fn every_plan_keeps_its_disposition_and_the_max_age(
            sent in proptest::collection::vec(proptest::bool::ANY, 1..15),
            age_s in 0u64..200_000,
            retry_after_s in proptest::option::of(0u64..50_000),
            which in 0usize..6,
        ) {
            let schedule = RetrySchedule::default();
            let job = job(&sent);
            let p = Plan {
                schedule: &schedule,
                max_age: Duration::from_secs(48 * 3600),
                age: Duration::from_secs(age_s),
            };
            let failure = Failure {
                label: crate::metrics::OutcomeLabel::HttpError,
                status: Some(503),
                error: "HTTP 503".into(),
                retry_after: retry_after_s.map(Duration::from_secs),
            };
            let tier = crate::retry::hold_tier();
            let disposition = [
                Disposition::Delivered,
                Disposition::Drop("webhook_deleted"),
                Disposition::DeadLetter("target_refused"),
                Disposition::Held(tier.clone()),
                Disposition::Failed(failure),
                Disposition::ShortCircuited,
            ][which].clone();
            let hop = plan(&job, &disposition, &p);
            match (&disposition, hop) {
                (Disposition::Delivered | Disposition::Drop(_), hop) => proptest::prop_assert_eq!(hop, Hop::Ack),
                (Disposition::DeadLetter(r), hop) => proptest::prop_assert_eq!(hop, Hop::DeadLetter(r)),
                (Disposition::Held(_), hop) => proptest::prop_assert_eq!(hop, Hop::Tier(tier)),
                (_, Hop::Tier(t)) => proptest::prop_assert!(p.age + t.delay <= p.max_age),
                (_, Hop::DeadLetter(reason)) => {
                    let never_sent = !sent.iter().any(|&s| s);
                    proptest::prop_assert_eq!(reason, if never_sent { "circuit_open" } else { "max_age_exceeded" });
                }
                (_, Hop::Ack) => proptest::prop_assert!(false, "a failure is never acked"),
            }
        }
    }
}
