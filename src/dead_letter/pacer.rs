//! The pace of replays, shared by every replay of a process.

use std::time::Duration;

use tokio::sync::Mutex;

/// The default of `WF_REPLAY_RATE`: dead letters replayed per second.
pub const DEFAULT_REPLAY_RATE: u32 = 100;

/// Paces replays: one every `1/rate` seconds, shared by every replay of the
/// process, so a catch-up of 100,000 dead letters trickles in beside live
/// traffic, and in order (no burst: a fast receiver gets them one by one).
pub(super) struct Pacer {
    rate: f64,
    bucket: Mutex<(f64, tokio::time::Instant)>,
}

impl Pacer {
    pub(super) fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Pacer {
            rate,
            bucket: Mutex::new((1.0, tokio::time::Instant::now())),
        }
    }

    /// Waits for the next replay's turn.
    pub(super) async fn take(&self) {
        loop {
            let wait = {
                let mut bucket = self.bucket.lock().await;
                let now = tokio::time::Instant::now();
                let refill = now.duration_since(bucket.1).as_secs_f64() * self.rate;
                *bucket = ((bucket.0 + refill).min(1.0), now);
                if bucket.0 >= 1.0 {
                    bucket.0 -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - bucket.0) / self.rate)
            };
            tokio::time::sleep(wait).await;
        }
    }
}
