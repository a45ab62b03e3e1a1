//! Capped exponential backoff with full jitter, for reconnect loops.

use std::time::Duration;

use rand::Rng;

/// Delays of 100 ms doubling up to `max`, each drawn uniformly below the cap.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
            attempt: 0,
        }
    }
}

impl Backoff {
    /// The next delay to wait before retrying.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let cap = self
            .base
            .saturating_mul(1 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // Full jitter keeps many replicas from reconnecting in lockstep.
        let millis = rand::rng().random_range(cap.as_millis() as u64 / 2..=cap.as_millis() as u64);
        Duration::from_millis(millis)
    }

    /// Back to the shortest delay after a success.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first <= Duration::from_millis(100));
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(10));
        }
        assert!(b.next_delay() >= Duration::from_secs(5));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
