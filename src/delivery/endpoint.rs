//! Endpoint isolation: a cap on concurrent deliveries per callback origin and
//! a circuit breaker per origin, so one slow or failing receiver cannot hold
//! the prefetch window that every other receiver's jobs need.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A job waiting for its origin's slot gives up (and is parked) when the
/// origin finished no delivery for this long: a hanging receiver does not
/// hold the window, a busy but answering one keeps its queue.
pub const SLOT_WAIT: Duration = Duration::from_millis(250);
/// The longest any job waits for a slot, however busy the origin.
pub const MAX_SLOT_WAIT: Duration = Duration::from_secs(5);

/// Circuit breaker settings.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit.
    pub threshold: u32,
    /// How long it stays open before one probe is let through.
    pub cooldown: Duration,
}

/// What the breaker allows for the next job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Closed: deliver.
    Pass,
    /// Half-open: this job is the single probe.
    Probe,
    /// Open: skip the request, go to the next retry tier.
    ShortCircuit,
}

/// A circuit breaker: closed, open until a deadline, or half-open with one
/// probe in flight. Pure state; the caller passes the clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Breaker {
    /// Delivering; counts consecutive failures.
    Closed {
        /// Failures in a row so far.
        failures: u32,
    },
    /// Failing; no requests until `until`.
    Open {
        /// When a probe may go.
        until: Instant,
    },
    /// A probe is in flight; everything else is short-circuited.
    HalfOpen,
}

impl Breaker {
    /// Decides for the next job at `now`.
    pub fn admit(&mut self, now: Instant) -> Admit {
        match self {
            Breaker::Closed { .. } => Admit::Pass,
            Breaker::Open { until } if now >= *until => {
                *self = Breaker::HalfOpen;
                Admit::Probe
            }
            Breaker::Open { .. } | Breaker::HalfOpen => Admit::ShortCircuit,
        }
    }

    /// Records an attempt's result; returns whether open/closed changed.
    pub fn record(&mut self, success: bool, now: Instant, config: BreakerConfig) -> bool {
        let was_open = self.is_open();
        *self = match (&*self, success) {
            (_, true) => Breaker::Closed { failures: 0 },
            (Breaker::Closed { failures }, false) if failures + 1 < config.threshold => {
                Breaker::Closed {
                    failures: failures + 1,
                }
            }
            (_, false) => Breaker::Open {
                until: now + config.cooldown,
            },
        };
        was_open != self.is_open()
    }

    /// Whether the circuit is open or half-open.
    pub fn is_open(&self) -> bool {
        !matches!(self, Breaker::Closed { .. })
    }
}

/// One callback origin's limits.
pub struct Endpoint {
    permits: Arc<Semaphore>,
    // When this origin last finished an attempt, for `slot`'s progress check.
    last_done: Mutex<Instant>,
    queued: AtomicUsize,
    max_queued: usize,
    breaker: Mutex<Breaker>,
    config: BreakerConfig,
}

impl Endpoint {
    /// The breaker's decision for the next job.
    pub fn admit(&self) -> Admit {
        self.breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(Instant::now())
    }

    /// Records an attempt's result; true when the circuit opened or closed.
    pub fn record(&self, success: bool) -> bool {
        *self.last_done.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        b.record(success, Instant::now(), self.config)
    }

    /// The probe could not be sent: let the next job probe instead.
    pub fn release_probe(&self) {
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        if *b == Breaker::HalfOpen {
            *b = Breaker::Open {
                until: Instant::now(),
            };
        }
    }

    /// Whether the circuit is open (or probing).
    pub fn is_open(&self) -> bool {
        self.breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_open()
    }

    /// A delivery slot for this origin. A job waits for one while the origin
    /// keeps finishing attempts: at most `max_queued` jobs wait, each until
    /// the origin stalls for `SLOT_WAIT` or `MAX_SLOT_WAIT` passes.
    /// `None` means the origin is saturated: the caller parks the job in a
    /// delay tier, so a slow origin never holds more than its share of the
    /// prefetch window for long, while a fast one absorbs bursts in memory.
    pub async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Some(p);
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let started = Instant::now();
        let permit = loop {
            let wait = tokio::time::timeout(SLOT_WAIT, self.permits.clone().acquire_owned()).await;
            if let Ok(p) = wait {
                break p.ok();
            }
            let stalled = self
                .last_done
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed()
                >= SLOT_WAIT;
            if stalled || started.elapsed() >= MAX_SLOT_WAIT {
                break None;
            }
        };
        self.queued.fetch_sub(1, Ordering::AcqRel);
        permit
    }
}

/// Every origin seen by this process.
pub struct Endpoints {
    map: Mutex<HashMap<String, Arc<Endpoint>>>,
    concurrency: usize,
    max_queued: usize,
    config: BreakerConfig,
}

impl Endpoints {
    /// `concurrency` requests at once per origin; at most `max_queued` more
    /// waiting for one; breakers per `config`.
    pub fn new(concurrency: usize, max_queued: usize, config: BreakerConfig) -> Self {
        Endpoints {
            map: Mutex::new(HashMap::new()),
            concurrency,
            max_queued,
            config,
        }
    }

    /// The endpoint of `url`'s origin (scheme, host, port).
    pub fn of(&self, url: &str) -> Arc<Endpoint> {
        let key = origin(url);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key)
            .or_insert_with(|| {
                Arc::new(Endpoint {
                    permits: Arc::new(Semaphore::new(self.concurrency)),
                    last_done: Mutex::new(Instant::now()),
                    queued: AtomicUsize::new(0),
                    max_queued: self.max_queued,
                    breaker: Mutex::new(Breaker::Closed { failures: 0 }),
                    config: self.config,
                })
            })
            .clone()
    }

    /// How many origins have an open circuit now.
    pub fn open_circuits(&self) -> usize {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.values().filter(|e| e.is_open()).count()
    }
}

/// `scheme://host:port` of a URL (the whole string if it does not parse).
pub fn origin(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or_default(),
            u.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: BreakerConfig = BreakerConfig {
        threshold: 3,
        cooldown: Duration::from_secs(10),
    };

    #[test]
    fn the_breaker_opens_after_the_threshold_and_probes_after_the_cooldown() {
        let t0 = Instant::now();
        let mut b = Breaker::Closed { failures: 0 };
        assert!(!b.record(false, t0, CONFIG));
        assert!(!b.record(false, t0, CONFIG));
        assert_eq!(b.admit(t0), Admit::Pass);
        assert!(b.record(false, t0, CONFIG), "third failure opens it");
        assert_eq!(b.admit(t0 + Duration::from_secs(9)), Admit::ShortCircuit);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.admit(later), Admit::Probe);
        assert_eq!(b.admit(later), Admit::ShortCircuit, "one probe at a time");
        assert!(
            !b.record(false, later, CONFIG),
            "a failed probe keeps it open"
        );
        assert_eq!(b.admit(later + Duration::from_secs(1)), Admit::ShortCircuit);
        assert_eq!(b.admit(later + Duration::from_secs(10)), Admit::Probe);
        assert!(b.record(true, later, CONFIG), "a good probe closes it");
        assert_eq!(b, Breaker::Closed { failures: 0 });
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::Closed { failures: 0 };
        b.record(false, t0, CONFIG);
        b.record(false, t0, CONFIG);
        b.record(true, t0, CONFIG);
        b.record(false, t0, CONFIG);
        assert_eq!(b, Breaker::Closed { failures: 1 });
    }

    #[test]
    fn origins_group_urls_by_scheme_host_and_port() {
        assert_eq!(origin("https://a.example/x?y"), "https://a.example:443");
        assert_eq!(
            origin("https://a.example:443/z"),
            origin("https://a.example/")
        );
        assert_ne!(origin("http://a.example/"), origin("https://a.example/"));
    }

    #[tokio::test]
    async fn a_saturated_origin_refuses_more_than_its_share() {
        let endpoints = Endpoints::new(1, 1, CONFIG);
        let e = endpoints.of("http://127.0.0.1:1/");
        let held = e.slot().await.expect("a free slot");
        let waiting = tokio::spawn({
            let e = e.clone();
            async move { e.slot().await.is_some() }
        });
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            e.slot().await.is_none(),
            "one in flight and one queued: full"
        );
        drop(held);
        assert!(waiting.await.unwrap(), "the queued one gets the slot");
    }
}
