//! The retry schedule: an ordered list of delay tiers, the last one repeating,
//! and the pure function that picks the next tier or gives up at max age.

use std::time::Duration;

use crate::units::parse_duration;

/// The contract's default schedule.
pub(crate) const DEFAULT_SCHEDULE: &str = "10s,30s,2m,10m,30m,1h,2h,4h,8h,12h";

/// One delay tier: a durable queue `{ns}.retry.<label>` whose TTL is `delay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    /// The delay exactly as written in the schedule, e.g. `30s`; names the queue.
    pub label: String,
    /// How long a job waits in this tier.
    pub delay: Duration,
}

/// The hold tier's delay: how long a job of a `per_key` webhook waits while
/// an earlier event of its key is in flight, before it looks again.
pub(crate) const HOLD: Duration = Duration::from_millis(200);

/// The hold tier (queue `{ns}.retry.hold`), declared beside the schedule's.
pub(crate) fn hold_tier() -> Tier {
    Tier {
        label: "hold".to_string(),
        delay: HOLD,
    }
}

/// What happens to a job after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// Wait in this tier, then try again.
    After(Tier),
    /// The next attempt would fall past the max age: dead-letter it now.
    DeadLetter,
}

/// The ordered delay tiers of `WF_RETRY_SCHEDULE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    tiers: Vec<Tier>,
}

impl RetrySchedule {
    /// Parses a comma-separated list of durations such as `10s,30s,2m`.
    pub fn parse(value: &str) -> Result<Self, String> {
        let tiers = value
            .split(',')
            .map(|label| {
                let label = label.trim();
                match parse_duration(label) {
                    Some(delay) if !delay.is_zero() => Ok(Tier {
                        label: label.to_string(),
                        delay,
                    }),
                    _ => Err(format!(
                        "`{label}` is not a delay like 500ms, 10s, 2m or 1h"
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RetrySchedule { tiers })
    }

    /// The tiers in schedule order (labels may repeat).
    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// One tier per distinct label: the queues to declare.
    pub fn distinct_tiers(&self) -> Vec<Tier> {
        let mut seen = Vec::<Tier>::new();
        for tier in &self.tiers {
            if !seen.iter().any(|t| t.label == tier.label) {
                seen.push(tier.clone());
            }
        }
        seen
    }

    /// Decides after the `attempts`-th failed attempt (1-based) of a job first
    /// received `age` ago: the next tier, or a dead letter when the next attempt
    /// would fall after received time + `max_age`.
    pub(crate) fn next(&self, attempts: u32, age: Duration, max_age: Duration) -> Next {
        let index = (attempts.max(1) as usize - 1).min(self.tiers.len() - 1);
        self.within_age(self.tiers[index].clone(), age, max_age)
    }

    /// Like `next`, but waits at least `at_least` (a `Retry-After`): the first
    /// tier that long, bounded by the schedule's largest tier.
    pub(crate) fn next_at_least(
        &self,
        attempts: u32,
        at_least: Duration,
        age: Duration,
        max_age: Duration,
    ) -> Next {
        let Next::After(scheduled) = self.next(attempts, age, max_age) else {
            return Next::DeadLetter;
        };
        if scheduled.delay >= at_least {
            return Next::After(scheduled);
        }
        let mut by_delay = self.distinct_tiers();
        by_delay.sort_by_key(|t| t.delay);
        let tier = by_delay
            .iter()
            .find(|t| t.delay >= at_least)
            .or(by_delay.last())
            .cloned()
            .expect("a schedule has at least one tier");
        self.within_age(tier, age, max_age)
    }

    fn within_age(&self, tier: Tier, age: Duration, max_age: Duration) -> Next {
        if age + tier.delay > max_age {
            Next::DeadLetter
        } else {
            Next::After(tier)
        }
    }
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule::parse(DEFAULT_SCHEDULE).expect("the default schedule parses")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;
    const MAX_AGE: Duration = Duration::from_secs(48 * H);

    fn label(next: Next) -> String {
        match next {
            Next::After(t) => t.label,
            Next::DeadLetter => "dead".into(),
        }
    }

    #[test]
    fn default_table_is_pinned() {
        let s = RetrySchedule::default();
        let labels: Vec<String> = (1..=12)
            .map(|n| label(s.next(n, Duration::ZERO, MAX_AGE)))
            .collect();
        assert_eq!(
            labels,
            [
                "10s", "30s", "2m", "10m", "30m", "1h", "2h", "4h", "8h", "12h", "12h", "12h"
            ]
        );
        assert_eq!(s.distinct_tiers().len(), 10);
    }

    #[test]
    fn gives_up_when_the_next_attempt_falls_after_max_age() {
        let s = RetrySchedule::default();
        // 36h + 12h = 48h: still within the window.
        assert_eq!(
            label(s.next(10, Duration::from_secs(36 * H), MAX_AGE)),
            "12h"
        );
        // One second later the next attempt would be past 48h.
        let late = Duration::from_secs(36 * H + 1);
        assert_eq!(s.next(10, late, MAX_AGE), Next::DeadLetter);
        assert_eq!(s.next(1, MAX_AGE, MAX_AGE), Next::DeadLetter);
    }

    #[test]
    fn walking_the_default_schedule_ends_near_two_days() {
        let s = RetrySchedule::default();
        let (mut age, mut attempts) = (Duration::ZERO, 1);
        while let Next::After(tier) = s.next(attempts, age, MAX_AGE) {
            age += tier.delay;
            attempts += 1;
        }
        assert_eq!(attempts, 12, "attempts made before dead-lettering");
        assert!(age > Duration::from_secs(36 * H) && age <= MAX_AGE);
    }

    #[test]
    fn retry_after_picks_the_first_tier_long_enough() {
        let s = RetrySchedule::default();
        let at =
            |secs| label(s.next_at_least(1, Duration::from_secs(secs), Duration::ZERO, MAX_AGE));
        assert_eq!(at(5), "10s");
        assert_eq!(at(45), "2m");
        assert_eq!(at(3600), "1h");
        assert_eq!(at(100 * H), "12h", "bounded by the largest tier");
    }

    #[test]
    fn parse_rejects_bad_tiers_and_keeps_labels() {
        assert!(RetrySchedule::parse("10s,,30s").is_err());
        assert!(RetrySchedule::parse("0s").is_err());
        assert!(RetrySchedule::parse("5x").is_err());
        let s = RetrySchedule::parse("200ms, 400ms,400ms").unwrap();
        assert_eq!(s.distinct_tiers().len(), 2);
        assert_eq!(s.tiers()[0].label, "200ms");
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    proptest::proptest! {
        /// The n-th failure waits the n-th delay (the last repeating), a
        /// `Retry-After` is honoured up to the largest tier, and no job
        /// ever waits past its max age: it is dead-lettered instead.
        #[test]
        fn every_decision_keeps_the_schedule_and_the_max_age(
            delays in proptest::collection::vec(1u64..100_000, 1..8),
            attempts in 1u32..40,
            age_ms in 0u64..200_000,
            max_ms in 1u64..400_000,
            at_least_ms in 0u64..200_000,
        ) {
            let text: Vec<String> = delays.iter().map(|d| format!("{d}ms")).collect();
            let s = RetrySchedule::parse(&text.join(",")).unwrap();
            let (age, max, at_least) = (ms(age_ms), ms(max_ms), ms(at_least_ms));
            let nth = ms(delays[(attempts as usize - 1).min(delays.len() - 1)]);
            match s.next(attempts, age, max) {
                Next::After(t) => {
                    proptest::prop_assert_eq!(t.delay, nth);
                    proptest::prop_assert!(age + t.delay <= max);
                }
                Next::DeadLetter => proptest::prop_assert!(age + nth > max),
            }
            let largest = ms(*delays.iter().max().unwrap());
            match s.next_at_least(attempts, at_least, age, max) {
                Next::After(t) => {
                    proptest::prop_assert!(delays.contains(&(t.delay.as_millis() as u64)));
                    proptest::prop_assert!(t.delay >= nth && t.delay >= at_least.min(largest));
                    proptest::prop_assert!(age + t.delay <= max);
                }
                Next::DeadLetter => {
                    // The tier it would have waited in falls past the max age.
                    let wanted = if nth >= at_least { nth } else {
                        let mut sorted = delays.clone();
                        sorted.sort_unstable();
                        ms(sorted.into_iter().find(|d| ms(*d) >= at_least).unwrap_or(*delays.iter().max().unwrap()))
                    };
                    proptest::prop_assert!(age + nth > max || age + wanted > max);
                }
            }
        }
    }
}
