//! Liveness and readiness state: what `/readyz` reports.

use std::sync::atomic::{AtomicBool, Ordering};

/// Readiness flags, set by the components that own each condition.
#[derive(Debug, Default)]
pub(crate) struct Health {
    broker: AtomicBool,
    redis: AtomicBool,
    consumers: AtomicBool,
    stopping: AtomicBool,
}

impl Health {
    /// Broker connected and topology declared.
    pub(crate) fn set_broker(&self, up: bool) {
        self.broker.store(up, Ordering::Release);
    }
    /// Whether the broker is connected and the topology declared.
    pub(crate) fn broker_up(&self) -> bool {
        self.broker.load(Ordering::Acquire)
    }
    /// Redis answered the last ping.
    pub(crate) fn set_redis(&self, up: bool) {
        self.redis.store(up, Ordering::Release);
    }
    /// This process's consumers (per `WF_ROLES`) are running.
    pub(crate) fn set_consumers(&self, up: bool) {
        self.consumers.store(up, Ordering::Release);
    }
    /// Shutdown began: never ready again.
    pub(crate) fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Why the process is not ready, or `None` when it is.
    pub(crate) fn not_ready_reason(&self) -> Option<&'static str> {
        if self.stopping.load(Ordering::Acquire) {
            Some("shutting down")
        } else if !self.broker.load(Ordering::Acquire) {
            Some("RabbitMQ not connected or topology not declared")
        } else if !self.redis.load(Ordering::Acquire) {
            Some("Redis unreachable")
        } else if !self.consumers.load(Ordering::Acquire) {
            Some("consumers not running")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_everything_is_up_and_never_after_stopping() {
        let h = Health::default();
        assert!(h.not_ready_reason().is_some());
        h.set_broker(true);
        h.set_redis(true);
        assert_eq!(h.not_ready_reason(), Some("consumers not running"));
        h.set_consumers(true);
        assert_eq!(h.not_ready_reason(), None);
        h.set_stopping();
        assert_eq!(h.not_ready_reason(), Some("shutting down"));
    }
}
