//! Isolation per webhook: a cap on concurrent deliveries and a circuit
//! breaker for each webhook (not each host: receivers share hosts, and one
//! failing path must not silence its siblings). Jobs beyond the cap wait in
//! the webhook's own backlog (`crate::backlog`), never in anyone else's way.
//! An optional per-host cap (`host.rs`) is for politeness only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::host::{Host, HostPermit};

/// Whether `every` has passed since `last` (process milliseconds); if so,
/// `last` becomes now, for one caller only.
fn due(last: &AtomicU64, every: Duration) -> bool {
    let now = process_millis();
    let then = last.load(Ordering::Acquire);
    (then == NEVER || now.saturating_sub(then) >= every.as_millis() as u64)
        && last
            .compare_exchange(then, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
}

/// The value of a `due` clock that never ran: the first call is due.
const NEVER: u64 = u64::MAX;

/// Milliseconds since this process first asked.
fn process_millis() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Circuit breaker settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BreakerConfig {
    /// Consecutive failures that open the circuit.
    pub threshold: u32,
    /// How long it stays open before one probe is let through.
    pub cooldown: Duration,
}

/// What the breaker allows for the next job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
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
pub(super) enum Breaker {
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
    pub(super) fn admit(&mut self, now: Instant) -> Admit {
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
    pub(super) fn record(&mut self, success: bool, now: Instant, config: BreakerConfig) -> bool {
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
    pub(super) fn is_open(&self) -> bool {
        !matches!(self, Breaker::Closed { .. })
    }
}

/// A delivery slot: the webhook's permit, with a host cap the host's, and
/// one of the process's (`WF_DELIVERY_CONCURRENCY`).
pub(crate) struct Slot {
    _webhook: OwnedSemaphorePermit,
    _host: Option<HostPermit>,
    _process: OwnedSemaphorePermit,
}

/// One webhook's limits: its concurrency cap and its circuit breaker.
pub(crate) struct Endpoint {
    id: String,
    url: String,
    permits: Arc<Semaphore>,
    concurrency: usize,
    /// When (process milliseconds) an attempt last started or finished.
    last_ms: AtomicU64,
    breaker: Mutex<Breaker>,
    config: BreakerConfig,
    host: Option<Arc<Host>>,
    /// The process's requests in flight, shared by every webhook.
    process: Arc<Semaphore>,
    /// This process saw a failure since its last success.
    failed: AtomicBool,
    /// When (process milliseconds) a success last ended the streak in Redis.
    streak_checked_ms: AtomicU64,
    /// When an attempt without a request last counted in the streak.
    unsent_checked_ms: AtomicU64,
}

impl Endpoint {
    /// Notes a failed attempt, for [`Endpoint::success_ends_streak`].
    pub(crate) fn note_failure(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// Whether this success should end the webhook's failure streak in
    /// Redis: after a failure this process saw, and at most every `every`
    /// otherwise (other processes may have seen failures), so a healthy
    /// webhook costs Redis nothing per delivery.
    pub(crate) fn success_ends_streak(&self, every: Duration) -> bool {
        let now = process_millis();
        if self.failed.swap(false, Ordering::AcqRel) {
            self.streak_checked_ms.store(now, Ordering::Release);
            return true;
        }
        due(&self.streak_checked_ms, every)
    }

    /// Whether an attempt without a request (circuit open) should count in
    /// the streak now: at most every `every`.
    pub(crate) fn unsent_failure_due(&self, every: Duration) -> bool {
        due(&self.unsent_checked_ms, every)
    }

    /// The breaker's decision for the next job.
    pub(crate) fn admit(&self) -> Admit {
        self.breaker().admit(Instant::now())
    }

    /// Records an attempt's result and duration; true when the circuit
    /// opened or closed.
    pub(crate) fn record(&self, success: bool) -> bool {
        self.touched();
        self.breaker().record(success, Instant::now(), self.config)
    }

    /// Whether the circuit is open (or probing).
    pub(crate) fn is_open(&self) -> bool {
        self.breaker().is_open()
    }

    /// The breaker's state: `closed`, `open` or `half_open` (a probe is in
    /// flight).
    pub(crate) fn breaker_state(&self) -> &'static str {
        match *self.breaker() {
            Breaker::Closed { .. } => "closed",
            Breaker::Open { .. } => "open",
            Breaker::HalfOpen => "half_open",
        }
    }

    /// A delivery slot for this webhook, once one of its own (and, with a
    /// host cap, its fair share of the host's) is free, then one of the
    /// process's. The job waits in hand: it came from the webhook's own
    /// backlog, so waiting holds back nothing but the webhook's later jobs,
    /// which would wait anyway. The process's slots go first come, first
    /// served, and each webhook queues at most its own cap for them: while
    /// many webhooks have work, they take turns, however deep one's backlog.
    ///
    /// `gate` (the webhook's rate limit) is awaited once the webhook's own
    /// slot is taken and before the process's: a job waiting for its turn
    /// under the limit holds nothing another webhook needs.
    pub(crate) async fn slot(&self, gate: impl std::future::Future<Output = ()>) -> Slot {
        let webhook = acquire(&self.permits).await;
        gate.await;
        let host = match &self.host {
            Some(host) => Some(host.acquire(&self.id).await),
            None => None,
        };
        let process = acquire(&self.process).await;
        self.touched();
        Slot {
            _webhook: webhook,
            _host: host,
            _process: process,
        }
    }

    fn touched(&self) {
        self.last_ms.store(process_millis(), Ordering::Release);
    }

    /// Whether nothing uses this entry: no job holds a slot and nothing
    /// happened for `idle`.
    fn unused(&self, idle: Duration) -> bool {
        let last = self.last_ms.load(Ordering::Acquire);
        self.permits.available_permits() == self.concurrency
            && process_millis().saturating_sub(last) >= idle.as_millis() as u64
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How often the map is swept for entries nobody uses.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// An entry idle this long is forgotten (a deleted webhook's, say); its
/// breaker state goes with it, so at worst a dead webhook's next jobs send a
/// few requests before its circuit opens again.
const IDLE_EVICT: Duration = Duration::from_secs(600);

/// Every webhook this process has delivered to, and the hosts they share.
pub(crate) struct Endpoints {
    map: Mutex<HashMap<String, Arc<Endpoint>>>,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    last_sweep: Mutex<Instant>,
    concurrency: usize,
    process: Arc<Semaphore>,
    host_limit: Option<usize>,
    config: BreakerConfig,
}

impl Endpoints {
    /// `concurrency` requests at once per webhook and `process_limit` in
    /// all; breakers per `config`; with `host_limit`, at most that many
    /// requests at once per host (scheme, host, port), shared fairly.
    pub(crate) fn new(
        concurrency: usize,
        process_limit: usize,
        config: BreakerConfig,
        host_limit: Option<usize>,
    ) -> Self {
        Endpoints {
            map: Mutex::new(HashMap::new()),
            hosts: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(Instant::now()),
            concurrency,
            process: Arc::new(Semaphore::new(process_limit)),
            host_limit,
            config,
        }
    }

    /// The endpoint of webhook `id` delivering to `url`. A changed URL is a
    /// new receiver: it starts with fresh limits and a closed breaker.
    pub(crate) fn of(&self, id: &str, url: &str) -> Arc<Endpoint> {
        let mut map = lock(&self.map);
        if let Some(e) = map.get(id)
            && e.url == url
        {
            return e.clone();
        }
        let endpoint = Arc::new(self.endpoint(id, url));
        map.insert(id.to_string(), endpoint.clone());
        endpoint
    }

    /// Forgets webhook `id`'s limits and breaker (it was enabled again: its
    /// next delivery is tried at once, not after the cooldown).
    pub(crate) fn forget(&self, id: &str) {
        lock(&self.map).remove(id);
    }

    /// Webhook `id`'s endpoint, if this process has one.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<Endpoint>> {
        lock(&self.map).get(id).cloned()
    }

    fn endpoint(&self, id: &str, url: &str) -> Endpoint {
        let host = self.host_limit.map(|limit| {
            lock(&self.hosts)
                .entry(origin(url))
                .or_insert_with(|| Arc::new(Host::new(limit)))
                .clone()
        });
        Endpoint {
            id: id.to_string(),
            url: url.to_string(),
            permits: Arc::new(Semaphore::new(self.concurrency)),
            concurrency: self.concurrency,
            last_ms: AtomicU64::new(process_millis()),
            breaker: Mutex::new(Breaker::Closed { failures: 0 }),
            config: self.config,
            host,
            process: self.process.clone(),
            failed: AtomicBool::new(false),
            // The first success in this process looks for a streak another
            // process (or an earlier run) left.
            streak_checked_ms: AtomicU64::new(NEVER),
            unsent_checked_ms: AtomicU64::new(NEVER),
        }
    }

    /// How many webhooks have an open circuit now.
    pub(crate) fn open_circuits(&self) -> usize {
        lock(&self.map).values().filter(|e| e.is_open()).count()
    }

    /// How many webhooks and hosts this process keeps state for.
    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        (lock(&self.map).len(), lock(&self.hosts).len())
    }

    /// Forgets webhooks unused for 10 minutes (a deleted webhook's, say),
    /// at most once a minute; called periodically, off the delivery path.
    pub(crate) fn sweep_if_due(&self) {
        let now = Instant::now();
        {
            let mut last = lock(&self.last_sweep);
            if now.duration_since(*last) < SWEEP_EVERY {
                return;
            }
            *last = now;
        }
        self.sweep(IDLE_EVICT);
    }

    /// Forgets webhooks unused for `idle`, and hosts no webhook refers to.
    fn sweep(&self, idle: Duration) {
        lock(&self.map).retain(|_, e| Arc::strong_count(e) > 1 || !e.unused(idle));
        lock(&self.hosts).retain(|_, h| Arc::strong_count(h) > 1);
    }
}

async fn acquire(semaphore: &Arc<Semaphore>) -> OwnedSemaphorePermit {
    (semaphore.clone().acquire_owned().await).expect("the semaphore is never closed")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `scheme://host:port` of a URL (the whole string if it does not parse).
pub(super) fn origin(url: &str) -> String {
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
    async fn a_waiting_job_gets_the_slot_a_finished_attempt_frees() {
        let endpoints = Endpoints::new(1, 16, CONFIG, None);
        let e = endpoints.of("wh_1", "http://127.0.0.1:1/");
        let held = e.slot(async {}).await;
        let mut waiting = tokio::spawn({
            let e = e.clone();
            async move { drop(e.slot(async {}).await) }
        });
        let early = tokio::time::timeout(Duration::from_millis(100), &mut waiting).await;
        assert!(early.is_err(), "the cap holds: it waits");
        e.record(true);
        drop(held);
        let got = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(got.is_ok(), "the waiting one gets the freed slot");
    }

    #[tokio::test]
    async fn a_hanging_webhook_leaves_its_sibling_on_the_same_host_its_own_slots() {
        let endpoints = Endpoints::new(2, 16, CONFIG, None);
        let url = "http://127.0.0.1:1/";
        let hanging = endpoints.of("wh_hang", &format!("{url}hang"));
        let _held = [hanging.slot(async {}).await, hanging.slot(async {}).await];
        let sibling = endpoints.of("wh_ok", &format!("{url}ok"));
        let own = tokio::time::timeout(Duration::from_millis(50), sibling.slot(async {})).await;
        assert!(own.is_ok(), "the sibling's own slot");
        for _ in 0..3 {
            hanging.record(false);
        }
        assert!(
            hanging.is_open() && !sibling.is_open(),
            "breakers are per webhook"
        );
    }

    #[test]
    fn a_changed_url_starts_fresh_and_idle_entries_are_forgotten() {
        let endpoints = Endpoints::new(2, 16, CONFIG, Some(4));
        let a = endpoints.of("wh_1", "http://a.example/x");
        for _ in 0..3 {
            a.record(false);
        }
        assert!(endpoints.of("wh_1", "http://a.example/x").is_open());
        let b = endpoints.of("wh_1", "http://b.example/x");
        assert!(!b.is_open(), "a new URL is a new receiver");
        assert_eq!(endpoints.tracked(), (1, 2));
        drop((a, b));
        // In use (recent progress): kept. Idle past the limit: forgotten,
        // and the hosts no webhook refers to with it.
        endpoints.sweep(Duration::from_secs(60));
        assert_eq!(endpoints.tracked(), (1, 1));
        endpoints.sweep(Duration::ZERO);
        assert_eq!(endpoints.tracked(), (0, 0));
    }
}
