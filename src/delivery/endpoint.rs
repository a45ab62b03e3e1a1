//! Endpoint isolation: a cap on concurrent deliveries per callback origin and
//! a circuit breaker per origin, so one slow or failing receiver cannot hold
//! the prefetch window that every other receiver's jobs need.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A job waiting for its origin's slot gives up (and is parked) when the
/// origin started or finished no delivery for this long: a hanging receiver
/// does not hold the window, a busy but answering one keeps its queue.
pub const SLOT_WAIT: Duration = Duration::from_millis(250);
/// The longest any job waits for a slot, however busy the origin.
pub const MAX_SLOT_WAIT: Duration = Duration::from_secs(5);
/// A job is parked rather than queued when its expected wait (the origin's
/// average attempt time × its place in the queue ÷ the origin's concurrency)
/// is longer than this.
pub const WAIT_BUDGET: Duration = Duration::from_secs(1);
/// Beyond its share of the window (`max_queued`), an origin may still queue
/// jobs that will wait less than this: a fast receiver absorbs a burst in
/// memory, a slow one cannot crowd the others out.
pub const SHARE_GRACE: Duration = Duration::from_millis(100);

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
    concurrency: usize,
    progress: Mutex<Progress>,
    queued: AtomicUsize,
    // Jobs this process parked in a delay tier that have not come back yet.
    parked: AtomicUsize,
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

    /// Records an attempt's result and duration; true when the circuit
    /// opened or closed.
    pub fn record(&self, success: bool, duration: Duration) -> bool {
        self.progress().finished(duration);
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        b.record(success, Instant::now(), self.config)
    }

    /// How long this origin needs to work through the jobs this process has
    /// parked for it (at its average attempt time and concurrency); `None`
    /// until an attempt has finished.
    pub fn parked_wait(&self) -> Option<Duration> {
        let average = self.progress().average?;
        let parked = self.parked.load(Ordering::Acquire) as u32;
        Some(average * parked / self.concurrency.max(1) as u32)
    }

    /// One more job parked for this origin.
    pub fn note_parked(&self) {
        self.parked.fetch_add(1, Ordering::AcqRel);
    }

    /// A parked job came back from its delay tier.
    pub fn note_returned(&self) {
        let _ = self
            .parked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
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

    /// A delivery slot for this origin. When all are taken, a job waits for
    /// one if [`should_wait`] says so, and keeps waiting while the origin
    /// makes progress, for at most `MAX_SLOT_WAIT`. `None` means the origin
    /// is saturated: the caller parks the job in a delay tier, so a slow
    /// origin never holds more than its share of the prefetch window for
    /// long, while a fast one absorbs bursts in memory.
    pub async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            self.progress().started();
            return Some(p);
        }
        let position = self.queued.fetch_add(1, Ordering::AcqRel) + 1;
        let permit = self.wait(position).await;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        if permit.is_some() {
            self.progress().started();
        }
        permit
    }

    async fn wait(&self, position: usize) -> Option<OwnedSemaphorePermit> {
        let (avg, since) = self.progress().snapshot();
        if !should_wait(position, self.max_queued, self.concurrency, avg, since) {
            return None;
        }
        let started = Instant::now();
        loop {
            let wait = tokio::time::timeout(SLOT_WAIT, self.permits.clone().acquire_owned()).await;
            if let Ok(p) = wait {
                return p.ok();
            }
            let stalled = self.progress().snapshot().1 >= SLOT_WAIT;
            if stalled || started.elapsed() >= MAX_SLOT_WAIT {
                return None;
            }
        }
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
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
                    concurrency: self.concurrency,
                    progress: Mutex::new(Progress {
                        last: Instant::now(),
                        average: None,
                    }),
                    queued: AtomicUsize::new(0),
                    parked: AtomicUsize::new(0),
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

/// When an origin last started or finished an attempt, and its attempts'
/// moving average duration.
struct Progress {
    last: Instant,
    average: Option<Duration>,
}

impl Progress {
    fn started(&mut self) {
        self.last = Instant::now();
    }

    fn finished(&mut self, took: Duration) {
        self.last = Instant::now();
        // Exponentially weighted, a fifth for the newest attempt.
        self.average = Some(self.average.map_or(took, |avg| (avg * 4 + took) / 5));
    }

    fn snapshot(&self) -> (Option<Duration>, Duration) {
        (self.average, self.last.elapsed())
    }
}

/// Whether a job arriving `position`-th in the queue of an origin whose
/// slots are all taken should wait for one (else it is parked). It waits
/// unless the origin has stalled (nothing started or finished for
/// `SLOT_WAIT`), or its expected wait is over `WAIT_BUDGET`, or the origin
/// already has `max_queued` waiting and this one would wait over
/// `SHARE_GRACE`.
pub fn should_wait(
    position: usize,
    max_queued: usize,
    concurrency: usize,
    average: Option<Duration>,
    since_progress: Duration,
) -> bool {
    if since_progress >= SLOT_WAIT {
        return false;
    }
    let rounds = position.div_ceil(concurrency.max(1)) as u32;
    let expected = average.unwrap_or_default() * rounds;
    expected <= WAIT_BUDGET && (position <= max_queued || expected <= SHARE_GRACE)
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

    #[test]
    fn a_fast_origin_queues_past_its_share_a_slow_or_stalled_one_does_not() {
        let ms = Duration::from_millis;
        let fresh = ms(1);
        // 8 at a time, 40 may wait; 2 ms attempts: even the 100th waits.
        assert!(should_wait(100, 40, 8, Some(ms(2)), fresh));
        // 100 ms attempts: within the share it waits, beyond it parks.
        assert!(should_wait(40, 40, 8, Some(ms(100)), fresh));
        assert!(!should_wait(41, 40, 8, Some(ms(100)), fresh));
        // 500 ms attempts: 16 waiting means a second; the 17th parks.
        assert!(should_wait(16, 40, 8, Some(ms(500)), fresh));
        assert!(!should_wait(17, 40, 8, Some(ms(500)), fresh));
        // Nothing started or finished for SLOT_WAIT: park at once.
        assert!(!should_wait(1, 40, 8, Some(ms(2)), SLOT_WAIT));
        // No attempt finished yet: wait within the share, then park.
        assert!(should_wait(40, 40, 8, None, fresh));
        assert!(should_wait(41, 40, 8, None, fresh));
    }

    #[tokio::test]
    async fn a_queued_job_gets_the_slot_a_finished_attempt_frees() {
        let endpoints = Endpoints::new(1, 1, CONFIG);
        let e = endpoints.of("http://127.0.0.1:1/");
        let held = e.slot().await.expect("a free slot");
        let waiting = tokio::spawn({
            let e = e.clone();
            async move { e.slot().await.is_some() }
        });
        tokio::task::yield_now().await;
        e.record(true, Duration::from_millis(1));
        drop(held);
        assert!(waiting.await.unwrap(), "the queued one gets the slot");
    }

    #[tokio::test]
    async fn a_stalled_origin_parks_its_waiting_and_new_jobs() {
        let endpoints = Endpoints::new(1, 8, CONFIG);
        let e = endpoints.of("http://127.0.0.1:1/");
        let _hanging = e.slot().await.expect("a free slot");
        let waiting = tokio::spawn({
            let e = e.clone();
            async move { e.slot().await.is_some() }
        });
        // The waiter gives up once nothing has moved for SLOT_WAIT...
        assert!(!waiting.await.unwrap(), "parked after SLOT_WAIT");
        // ...and from then on a new job is parked without waiting.
        let at = Instant::now();
        assert!(e.slot().await.is_none());
        assert!(at.elapsed() < SLOT_WAIT);
    }
}
