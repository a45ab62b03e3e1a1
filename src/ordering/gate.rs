//! Ordered delivery per key, on the worker's side: a job of a `per_key`
//! webhook is sent only once every earlier event of its key is finished
//! (delivered, dead-lettered or stopped by the receiver). A job further back
//! waits in a delay tier, never in the prefetch window: the short hold tier
//! while the head is in flight, else the tier that brings it back about when
//! the head's retry is due. Every hop of the head is written to the key's
//! state before the job is acked, so a crash never loses where a key stands.
//!
//! One shortcut: while an earlier event of the key is being sent by this
//! very process, the job waits for it here (`heads.rs`), as often as the
//! key moves on: a key's events leave its webhook's backlog in order and
//! are usually in this process's window together, and a trip through the
//! hold tier would put the job behind the whole backlog.

use std::time::Duration;

use super::Gate;
use super::heads::{Sending, Waited};
use super::keys::KeyState;
use crate::clock;
use crate::job::{DeliveryJob, JobOrder};
use crate::retry::{HOLD, RetrySchedule, Tier, hold_tier};

/// Holds in the short tier before a job waiting on a head in flight climbs
/// to the schedule's first tier (a head hanging until its timeout).
const SHORT_HOLDS: u32 = 10;

/// What the key's state says of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    /// Its turn (or a late duplicate of an event already finished): send.
    Send,
    /// An earlier event is not finished: wait, about until this time (Unix
    /// ms) when the head waits in a delay tier.
    Wait(Option<i64>),
    /// The head has not moved for longer than any job may wait: it is lost
    /// (a purged queue); give up on everything before this job.
    Skip,
}

/// Decides for job `seq` given its key's `state` at `now_ms`; `stall`: how
/// long a head may stand still before it counts as lost.
fn decide(seq: u64, state: &KeyState, now_ms: i64, stall: Duration) -> Decision {
    if seq <= state.done + 1 {
        return Decision::Send;
    }
    // No state at all: it expired, so everything before is long gone.
    let idle = now_ms.saturating_sub(state.head_at_ms).max(0) as u128;
    if state.head_at_ms == 0 || idle > stall.as_millis() {
        return Decision::Skip;
    }
    match state.due_ms > now_ms {
        true => Decision::Wait(Some(state.due_ms)),
        false => Decision::Wait(None),
    }
}

/// The tier a waiting job goes to: about until `until_ms` when the head
/// waits in a tier (the shortest tier at least that long, else the
/// longest); the hold tier while the head is in flight, climbing to the
/// schedule's first tier after [`SHORT_HOLDS`] holds.
fn wait_tier(until_ms: Option<i64>, now_ms: i64, holds: u32, schedule: &RetrySchedule) -> Tier {
    let tiers = schedule.tiers();
    let Some(until) = until_ms else {
        return match (holds >= SHORT_HOLDS, tiers.first()) {
            (true, Some(first)) if first.delay > HOLD => first.clone(),
            _ => hold_tier(),
        };
    };
    let wait = Duration::from_millis(until.saturating_sub(now_ms).max(0) as u64);
    if wait <= HOLD {
        return hold_tier();
    }
    let mut by_delay: Vec<&Tier> = tiers.iter().collect();
    by_delay.sort_by_key(|t| t.delay);
    by_delay
        .iter()
        .find(|t| t.delay >= wait)
        .or(by_delay.last())
        .map_or_else(hold_tier, |t| (*t).clone())
}

/// How long a finish is tried before the job is handed back.
const FINISH_TRIES: u32 = 5;

impl Gate {
    /// Whether job `job` may be sent now (`Ok`: held as being sent until the
    /// guard is dropped, after the job is finished); `Err(tier)`: hold it
    /// there. A key's state that cannot be read holds the job too (it comes
    /// back).
    pub(crate) async fn gate(
        &self,
        job: &DeliveryJob,
        order: &JobOrder,
    ) -> Result<Sending<'_>, Tier> {
        let (app, id) = (&job.application_id, &job.webhook_id);
        let entry = (id.clone(), order.key.clone());
        let mut looked_again = false;
        loop {
            let now = clock::unix_millis();
            let state = match self.sequences.state(app, id, &order.key).await {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!(error = %crate::logging::Chain(&e), "cannot read the ordering key's state; job held");
                    return Err(wait_tier(None, now, job.holds, &self.schedule));
                }
            };
            match decide(order.seq, &state, now, self.stall) {
                Decision::Send => return Ok(self.heads.start(entry)),
                // An earlier one is being sent by this process: wait for it
                // here rather than behind the whole backlog, and again while
                // the key moves on here (one more look when none is in flight:
                // the next may be about to start).
                Decision::Wait(None) => match self.heads.wait(&entry).await {
                    Waited::Finished => looked_again = false,
                    Waited::NoneHere if !looked_again => looked_again = true,
                    Waited::NoneHere | Waited::GaveUp => {
                        return Err(wait_tier(None, now, job.holds, &self.schedule));
                    }
                },
                Decision::Wait(until) => {
                    return Err(wait_tier(until, now, job.holds, &self.schedule));
                }
                Decision::Skip => {
                    return self
                        .skip(job, order, &state, now)
                        .await
                        .map(|()| self.heads.start(entry));
                }
            }
        }
    }

    /// Gives up on the vanished events before `job`; `Err(tier)`: hold it.
    async fn skip(
        &self,
        job: &DeliveryJob,
        order: &JobOrder,
        state: &KeyState,
        now: i64,
    ) -> Result<(), Tier> {
        let (app, id) = (&job.application_id, &job.webhook_id);
        let skipped = self
            .sequences
            .skip(app, id, &order.key, state.done, order.seq - 1, now)
            .await;
        match skipped {
            Ok(_) => {
                tracing::error!(
                    key = %order.key,
                    from = state.done + 1,
                    to = order.seq - 1,
                    "events of an ordering key lost before delivery; the next one goes on"
                );
                self.metrics.ordering_skipped();
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %crate::logging::Chain(&e), "cannot skip a lost head; job held");
                Err(wait_tier(None, now, job.holds, &self.schedule))
            }
        }
    }

    /// Records that `job` (ordered) is finished, before it is acked; false if
    /// Redis did not take it (the job is then handed back and comes again).
    pub(crate) async fn finished(&self, job: &DeliveryJob, order: &JobOrder) -> bool {
        let (app, id) = (&job.application_id, &job.webhook_id);
        let mut pause = Duration::from_millis(100);
        for _ in 0..FINISH_TRIES {
            let now = clock::unix_millis();
            let done = self
                .sequences
                .finish(app, id, &order.key, &job.event_id, order.seq, now)
                .await;
            match done {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(error = %crate::logging::Chain(&e), "cannot record an ordered job finished; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
        false
    }

    /// Records that the head `job` waits in a tier of `delay`: the jobs behind
    /// it wait about as long. Best effort: without it they look more often.
    pub(crate) async fn head_waits(&self, job: &DeliveryJob, order: &JobOrder, delay: Duration) {
        let now = clock::unix_millis();
        let due = now + delay.as_millis() as i64;
        let (app, id) = (&job.application_id, &job.webhook_id);
        if let Err(e) = self
            .sequences
            .head_due(app, id, &order.key, order.seq, due, now)
            .await
        {
            tracing::debug!(error = %crate::logging::Chain(&e), "ordering key's due time not recorded");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(3600);

    fn state(done: u64, due_ms: i64, head_at_ms: i64) -> KeyState {
        KeyState {
            done,
            due_ms,
            head_at_ms,
        }
    }

    #[test]
    fn only_the_head_and_late_duplicates_are_sent() {
        let s = state(4, 0, 1_000);
        assert_eq!(decide(5, &s, 2_000, STALL), Decision::Send);
        assert_eq!(decide(3, &s, 2_000, STALL), Decision::Send, "duplicate");
        assert_eq!(decide(6, &s, 2_000, STALL), Decision::Wait(None));
        let retrying = state(4, 9_000, 1_000);
        assert_eq!(
            decide(7, &retrying, 2_000, STALL),
            Decision::Wait(Some(9_000))
        );
        // Due time passed: the head is being retried now.
        assert_eq!(decide(7, &retrying, 9_500, STALL), Decision::Wait(None));
    }

    #[test]
    fn a_head_that_never_moves_again_is_given_up() {
        let s = state(4, 0, 1_000);
        let later = 1_000 + STALL.as_millis() as i64 + 1;
        assert_eq!(decide(6, &s, later, STALL), Decision::Skip);
        // A key whose state expired: nothing before it can still come.
        assert_eq!(decide(6, &KeyState::default(), 5, STALL), Decision::Skip);
        assert_eq!(decide(1, &KeyState::default(), 5, STALL), Decision::Send);
    }

    #[test]
    fn a_waiting_job_comes_back_about_when_its_head_is_due() {
        let schedule = RetrySchedule::parse("10s,30s,2m").unwrap();
        let label = |until, holds| wait_tier(until, 0, holds, &schedule).label;
        assert_eq!(label(None, 0), "hold");
        assert_eq!(label(None, SHORT_HOLDS - 1), "hold");
        assert_eq!(label(None, SHORT_HOLDS), "10s", "a head hanging in flight");
        assert_eq!(label(Some(100), 0), "hold");
        assert_eq!(label(Some(9_000), 0), "10s");
        assert_eq!(label(Some(25_000), 0), "30s");
        assert_eq!(label(Some(3_600_000), 0), "2m", "the longest at most");
        // A schedule in milliseconds (tests) never climbs above its tiers.
        let fast = RetrySchedule::parse("50ms,100ms").unwrap();
        assert_eq!(wait_tier(None, 0, 50, &fast).label, "hold");
        assert_eq!(wait_tier(Some(400), 0, 0, &fast).label, "100ms");
    }
}
