//! Isolation per webhook: a cap on concurrent deliveries and a circuit
//! breaker for each webhook (not each host: receivers share hosts, and one
//! failing path must not silence its siblings), so one slow or failing
//! webhook cannot hold the prefetch window that every other webhook needs.
//! An optional per-host cap (`host.rs`) is for politeness only.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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

/// A job waiting for its webhook's slot gives up (and is deferred) when the
/// webhook started or finished no delivery for this long: a hanging receiver
/// does not hold the window, a busy but answering one keeps its queue.
pub(super) const SLOT_WAIT: Duration = Duration::from_millis(250);
/// The longest any job waits for a slot, however busy the webhook.
pub(super) const MAX_SLOT_WAIT: Duration = Duration::from_secs(5);
/// A job is deferred rather than queued when its expected wait (the webhook's
/// average attempt time × its place in the queue ÷ the webhook's concurrency)
/// is longer than this.
pub(super) const WAIT_BUDGET: Duration = Duration::from_secs(1);
/// Beyond its share of the window (`max_queued`), a webhook may still queue
/// jobs that will wait less than this: a fast receiver absorbs a burst in
/// memory, a slow one cannot crowd the others out.
pub(super) const SHARE_GRACE: Duration = Duration::from_millis(100);

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

/// Why no delivery slot was given: the caller defers the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Saturated {
    /// The webhook's own cap is taken and its queue is long or stalled.
    Webhook,
    /// The host's politeness cap (`WF_HOST_CONCURRENCY`) has no fair share left.
    Host,
}

impl Saturated {
    /// The `reason` label of `webhooks_jobs_deferred_total`.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Saturated::Webhook => "endpoint_saturated",
            Saturated::Host => "host_saturated",
        }
    }
}

/// A delivery slot: the webhook's permit and, with a host cap, the host's.
pub(crate) struct Slot {
    _webhook: OwnedSemaphorePermit,
    _host: Option<HostPermit>,
}

/// One webhook's limits: its concurrency cap, its circuit breaker and the
/// estimate of the jobs it has waiting in delay tiers.
pub(crate) struct Endpoint {
    id: String,
    url: String,
    permits: Arc<Semaphore>,
    concurrency: usize,
    progress: Mutex<Progress>,
    queued: AtomicUsize,
    max_queued: usize,
    breaker: Mutex<Breaker>,
    config: BreakerConfig,
    host: Option<Arc<Host>>,
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
    pub(crate) fn record(&self, success: bool, duration: Duration) -> bool {
        self.progress().finished(duration);
        self.breaker().record(success, Instant::now(), self.config)
    }

    /// How long this webhook needs to work through the jobs this process
    /// deferred for it that are still waiting in their tiers (at its average
    /// attempt time and concurrency); `None` until an attempt has finished.
    ///
    /// Each process counts only its own deferrals, and each expires when its
    /// tier's delay has passed: nothing has to be decremented by whichever
    /// process consumes the job again, so the estimate cannot drift with
    /// replicas. With N replicas each sees about 1/N of the jobs and offers
    /// 1/N of the webhook's total concurrency, so the estimate holds.
    pub(crate) fn deferred_wait(&self) -> Option<Duration> {
        let mut p = self.progress();
        let average = p.average?;
        let waiting = p.deferred_waiting(Instant::now()) as u32;
        Some(average * waiting / self.concurrency.max(1) as u32)
    }

    /// One more job deferred for this webhook, back in `delay`.
    pub(crate) fn note_deferred(&self, delay: Duration) {
        let mut p = self.progress();
        // Past this many the wait is far beyond the longest tier anyway:
        // stop counting rather than grow without bound.
        if p.deferred.len() < MAX_COUNTED_DEFERRALS {
            p.deferred.push(Reverse(Instant::now() + delay));
        }
    }

    /// The probe could not be sent: let the next job probe instead.
    pub(crate) fn release_probe(&self) {
        let mut b = self.breaker();
        if *b == Breaker::HalfOpen {
            *b = Breaker::Open {
                until: Instant::now(),
            };
        }
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

    /// A delivery slot for this webhook. When all are taken, a job waits for
    /// one if [`should_wait`] says so, and keeps waiting while the webhook
    /// makes progress, for at most `MAX_SLOT_WAIT`; then, with a host cap,
    /// for its fair share of the host. `Err` means saturated: the caller
    /// defers the job, so a slow webhook never holds more than its share of
    /// the prefetch window for long, while a fast one absorbs bursts in memory.
    pub(crate) async fn slot(&self) -> Result<Slot, Saturated> {
        let webhook = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let position = self.queued.fetch_add(1, Ordering::AcqRel) + 1;
                let permit = self.wait(position).await;
                self.queued.fetch_sub(1, Ordering::AcqRel);
                permit.ok_or(Saturated::Webhook)?
            }
        };
        let host = match &self.host {
            Some(host) => Some(host.acquire(&self.id).await.ok_or(Saturated::Host)?),
            None => None,
        };
        self.progress().started();
        Ok(Slot {
            _webhook: webhook,
            _host: host,
        })
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

    /// Whether nothing uses this entry: no job holds or waits for a slot,
    /// nothing happened for `idle`, and no deferral of it is still waiting.
    fn unused(&self, idle: Duration, now: Instant) -> bool {
        let mut p = self.progress();
        self.permits.available_permits() == self.concurrency
            && self.queued.load(Ordering::Acquire) == 0
            && p.last.elapsed() >= idle
            && p.deferred_waiting(now) == 0
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Deferrals counted per webhook for the wait estimate, at most.
const MAX_COUNTED_DEFERRALS: usize = 100_000;

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
    max_queued: usize,
    host_limit: Option<usize>,
    config: BreakerConfig,
}

impl Endpoints {
    /// `concurrency` requests at once per webhook; at most `max_queued` more
    /// waiting for one; breakers per `config`; with `host_limit`, at most that
    /// many requests at once per host (scheme, host, port), shared fairly.
    pub(crate) fn new(
        concurrency: usize,
        max_queued: usize,
        config: BreakerConfig,
        host_limit: Option<usize>,
    ) -> Self {
        Endpoints {
            map: Mutex::new(HashMap::new()),
            hosts: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(Instant::now()),
            concurrency,
            max_queued,
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
            progress: Mutex::new(Progress {
                last: Instant::now(),
                average: None,
                deferred: BinaryHeap::new(),
            }),
            queued: AtomicUsize::new(0),
            max_queued: self.max_queued,
            breaker: Mutex::new(Breaker::Closed { failures: 0 }),
            config: self.config,
            host,
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
        self.sweep(IDLE_EVICT, now);
    }

    /// Forgets webhooks unused for `idle`, and hosts no webhook refers to.
    fn sweep(&self, idle: Duration, now: Instant) {
        lock(&self.map).retain(|_, e| Arc::strong_count(e) > 1 || !e.unused(idle, now));
        lock(&self.hosts).retain(|_, h| Arc::strong_count(h) > 1);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// When a webhook last started or finished an attempt, its attempts' moving
/// average duration, and when the jobs this process deferred for it are due
/// back from their tiers.
struct Progress {
    last: Instant,
    average: Option<Duration>,
    deferred: BinaryHeap<Reverse<Instant>>,
}

impl Progress {
    /// Deferred jobs not yet due back at `now` (those due are forgotten).
    fn deferred_waiting(&mut self, now: Instant) -> usize {
        while self.deferred.peek().is_some_and(|Reverse(due)| *due <= now) {
            self.deferred.pop();
        }
        self.deferred.len()
    }

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

/// Whether a job arriving `position`-th in the queue of a webhook whose
/// slots are all taken should wait for one (else it is deferred). It waits
/// unless the webhook has stalled (nothing started or finished for
/// `SLOT_WAIT`), or its expected wait is over `WAIT_BUDGET`, or the webhook
/// already has `max_queued` waiting and this one would wait over
/// `SHARE_GRACE`.
pub(super) fn should_wait(
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

    #[test]
    fn a_fast_webhook_queues_past_its_share_a_slow_or_stalled_one_does_not() {
        let ms = Duration::from_millis;
        let fresh = ms(1);
        // 8 at a time, 40 may wait; 2 ms attempts: even the 100th waits.
        assert!(should_wait(100, 40, 8, Some(ms(2)), fresh));
        // 100 ms attempts: within the share it waits, beyond it is deferred.
        assert!(should_wait(40, 40, 8, Some(ms(100)), fresh));
        assert!(!should_wait(41, 40, 8, Some(ms(100)), fresh));
        // 500 ms attempts: 16 waiting means a second; the 17th is deferred.
        assert!(should_wait(16, 40, 8, Some(ms(500)), fresh));
        assert!(!should_wait(17, 40, 8, Some(ms(500)), fresh));
        // Nothing started or finished for SLOT_WAIT: defer at once.
        assert!(!should_wait(1, 40, 8, Some(ms(2)), SLOT_WAIT));
        // No attempt finished yet: wait within the share, then defer.
        assert!(should_wait(40, 40, 8, None, fresh));
        assert!(should_wait(41, 40, 8, None, fresh));
    }

    #[tokio::test]
    async fn a_queued_job_gets_the_slot_a_finished_attempt_frees() {
        let endpoints = Endpoints::new(1, 1, CONFIG, None);
        let e = endpoints.of("wh_1", "http://127.0.0.1:1/");
        let held = e.slot().await.expect("a free slot");
        let waiting = tokio::spawn({
            let e = e.clone();
            async move { e.slot().await.is_ok() }
        });
        tokio::task::yield_now().await;
        e.record(true, Duration::from_millis(1));
        drop(held);
        assert!(waiting.await.unwrap(), "the queued one gets the slot");
    }

    #[tokio::test]
    async fn a_stalled_webhook_defers_its_waiting_and_new_jobs() {
        let endpoints = Endpoints::new(1, 8, CONFIG, None);
        let e = endpoints.of("wh_1", "http://127.0.0.1:1/");
        let _hanging = e.slot().await.expect("a free slot");
        let waiting = tokio::spawn({
            let e = e.clone();
            async move { e.slot().await.is_ok() }
        });
        // The waiter gives up once nothing has moved for SLOT_WAIT...
        assert!(!waiting.await.unwrap(), "deferred after SLOT_WAIT");
        // ...and from then on a new job is deferred without waiting.
        let at = Instant::now();
        assert_eq!(e.slot().await.err(), Some(Saturated::Webhook));
        assert!(at.elapsed() < SLOT_WAIT);
    }

    #[tokio::test]
    async fn a_hanging_webhook_leaves_its_sibling_on_the_same_host_its_own_slots() {
        let endpoints = Endpoints::new(2, 8, CONFIG, None);
        let url = "http://127.0.0.1:1/";
        let hanging = endpoints.of("wh_hang", &format!("{url}hang"));
        let _held = [hanging.slot().await.ok(), hanging.slot().await.ok()];
        let sibling = endpoints.of("wh_ok", &format!("{url}ok"));
        let at = Instant::now();
        assert!(sibling.slot().await.is_ok(), "the sibling's own slot");
        assert!(at.elapsed() < Duration::from_millis(50));
        for _ in 0..3 {
            hanging.record(false, Duration::from_millis(1));
        }
        assert!(
            hanging.is_open() && !sibling.is_open(),
            "breakers are per webhook"
        );
    }

    #[test]
    fn a_changed_url_starts_fresh_and_idle_entries_are_forgotten() {
        let endpoints = Endpoints::new(2, 8, CONFIG, Some(4));
        let a = endpoints.of("wh_1", "http://a.example/x");
        for _ in 0..3 {
            a.record(false, Duration::from_millis(1));
        }
        assert!(endpoints.of("wh_1", "http://a.example/x").is_open());
        let b = endpoints.of("wh_1", "http://b.example/x");
        assert!(!b.is_open(), "a new URL is a new receiver");
        assert_eq!(endpoints.tracked(), (1, 2));
        drop((a, b));
        // In use (recent progress): kept. Idle past the limit: forgotten,
        // and the hosts no webhook refers to with it.
        endpoints.sweep(Duration::from_secs(60), Instant::now());
        assert_eq!(endpoints.tracked(), (1, 1));
        endpoints.sweep(Duration::ZERO, Instant::now());
        assert_eq!(endpoints.tracked(), (0, 0));
    }

    #[test]
    fn deferrals_count_until_their_tier_has_passed() {
        let endpoints = Endpoints::new(2, 8, CONFIG, None);
        let e = endpoints.of("wh_1", "http://a.example/");
        assert_eq!(e.deferred_wait(), None, "no attempt finished yet");
        e.record(true, Duration::from_millis(100));
        for _ in 0..4 {
            e.note_deferred(Duration::from_secs(60));
        }
        e.note_deferred(Duration::ZERO);
        // Four still waiting × 100 ms ÷ 2 at a time; the one due is gone.
        assert_eq!(e.deferred_wait(), Some(Duration::from_millis(200)));
    }
}
