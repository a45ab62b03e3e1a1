//! Every Prometheus metric of the service, behind named methods so call sites
//! never spell metric names and labels stay bounded (contract section 8).

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::event::RejectReason;

/// How one delivery attempt ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutcomeLabel {
    /// 2xx within the timeout.
    Success,
    /// Any other status.
    HttpError,
    /// No response within the timeout.
    Timeout,
    /// Connection, DNS, TLS or refused-target error.
    ConnectError,
    /// No token from the webhook's token endpoint (`auth`): nothing sent.
    AuthError,
}

impl OutcomeLabel {
    /// Every value, each a label of `webhooks_deliveries_total` from the start.
    const ALL: [OutcomeLabel; 5] = [
        Self::Success,
        Self::HttpError,
        Self::Timeout,
        Self::ConnectError,
        Self::AuthError,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::HttpError => "http_error",
            Self::Timeout => "timeout",
            Self::ConnectError => "connect_error",
            Self::AuthError => "auth_error",
        }
    }
}

/// The `reason` values of `webhooks_jobs_rejected_total`.
pub const JOB_REJECT_REASONS: [&str; 4] = [
    "malformed_job",
    "unsupported_job_version",
    "malformed_dead_letter",
    "unsupported_dead_letter_version",
];

/// The service's metrics registry.
pub struct Metrics {
    registry: Registry,
    f: Families,
}

/// The `type` values of `webhooks_operational_events_total`.
pub const OPERATIONAL_EVENT_TYPES: [&str; 7] = [
    "webhook.created",
    "webhook.updated",
    "webhook.deleted",
    "webhook.disabled",
    "webhook.failing",
    "webhook.recovered",
    "delivery.dead_lettered",
];

/// The `way` values of `webhooks_ingest_events_routed_total`.
pub const ROUTED_WAYS: [&str; 2] = ["partition", "direct"];

/// The `reason` values of `webhooks_disabled_total`.
pub const DISABLE_REASONS: [&str; 4] = ["gone", "receiver_requested", "failing", "admin"];

/// Declares the metric families, one row each: field, kind, name (without
/// the `webhooks_` prefix), the label of a labelled family or the bucket
/// function of a histogram, and the help text. It makes `Families` (one
/// typed field per row), `Families::register` and [`FAMILIES`].
macro_rules! families {
    ($($field:ident: $kind:ident($name:literal $(, $arg:expr)?; $help:literal),)*) => {
        /// Every family of the registry, one typed field each.
        struct Families {
            $($field: families!(@type $kind),)*
        }

        impl Families {
            fn register(r: &Registry, timeout: Duration) -> Families {
                Families {
                    $($field: register(r, families!(@new $kind, $name, $help, timeout $(, $arg)?)),)*
                }
            }
        }

        /// The name of every family the table declares (without the
        /// `webhooks_` prefix), for the docs test.
        pub const FAMILIES: &[&str] = &[$($name,)*];
    };
    (@type Counter) => { IntCounter };
    (@type CounterVec) => { IntCounterVec };
    (@type Gauge) => { IntGauge };
    (@type GaugeVec) => { IntGaugeVec };
    (@type Histogram) => { Histogram };
    (@new Counter, $name:literal, $help:literal, $t:ident) => {
        IntCounter::with_opts(opts($name, $help))
    };
    (@new CounterVec, $name:literal, $help:literal, $t:ident, $label:expr) => {
        IntCounterVec::new(opts($name, $help), &[$label])
    };
    (@new Gauge, $name:literal, $help:literal, $t:ident) => {
        IntGauge::with_opts(opts($name, $help))
    };
    (@new GaugeVec, $name:literal, $help:literal, $t:ident, $label:expr) => {
        IntGaugeVec::new(opts($name, $help), &[$label])
    };
    (@new Histogram, $name:literal, $help:literal, $t:ident, $buckets:expr) => {
        Histogram::with_opts(HistogramOpts::from(opts($name, $help)).buckets($buckets($t)))
    };
}

#[rustfmt::skip]
families! {
    events_consumed: CounterVec("events_consumed_total", "type"; "Valid events consumed from the ingest queue"),
    events_rejected: CounterVec("events_rejected_total", "reason"; "Envelopes rejected to the rejected queue"),
    events_duplicate: Counter("events_duplicate_total"; "Events skipped because their id was already fanned out"),
    jobs_enqueued: Counter("jobs_enqueued_total"; "Delivery jobs published by fan-out (confirmed)"),
    deliveries: CounterVec("deliveries_total", "outcome"; "Delivery attempts by outcome"),
    delivery_duration: Histogram("delivery_duration_seconds", delivery_buckets; "Duration of one delivery attempt"),
    end_to_end: Histogram("end_to_end_seconds", end_to_end_buckets; "From event received to successful delivery"),
    retries_scheduled: CounterVec("retries_scheduled_total", "tier"; "Failed attempts scheduled into a delay tier"),
    dead_lettered: Counter("dead_lettered_total"; "Jobs moved to the dead letters"),
    jobs_dropped: CounterVec("jobs_dropped_total", "reason"; "Jobs dropped without delivery"),
    jobs_rejected: CounterVec("jobs_rejected_total", "reason"; "Delivery jobs and dead letters this release cannot read, moved to the rejected queue"),
    inflight: Gauge("inflight_deliveries"; "Deliveries in flight"),
    cache_lookups: CounterVec("subscription_cache_lookups_total", "result"; "Subscription cache lookups"),
    jobs_deferred: CounterVec("jobs_deferred_total", "reason"; "Jobs put back on the broker without a request: to a delay tier while the circuit is open, or to the webhook's backlog when back from a tier"),
    deferral_delay: Histogram("deferral_delay_seconds", deferral_buckets; "Delay of the tier each deferred job was sent to"),
    circuits_open: Gauge("circuit_breakers_open"; "Webhooks whose circuit is open (in this process)"),
    backlog_jobs: Gauge("backlog_jobs"; "Jobs waiting in the webhooks' backlogs, all webhooks together (counted every 2 s)"),
    rate_limited: Counter("rate_limited_total"; "Jobs that waited for their webhook's rate limit before their request"),
    certificates_expiring: Gauge("client_certificates_expiring"; "Client certificates (tls_client) in use by this process's deliveries that expire within 30 days, or have expired (refreshed every 5 s)"),
    filter_errors: Counter("filter_errors_total"; "Events a webhook's filter failed on (a missing field, a wrong type): not sent to that webhook"),
    fanning_out: Gauge("fanning_out"; "1 while this process routes the ingest queue to the partitions (one process of the namespace at a time), 0 while it stands by"),
    partitions_held: Gauge("ingest_partitions_held"; "Ingest partitions this process fans out now"),
    events_routed: CounterVec("ingest_events_routed_total", "way"; "Events this process routed from the ingest queue: moved to their partition's queue (way=partition) or fanned out at once, their partition held here (way=direct)"),
    ordering_holds: Counter("ordering_holds_total"; "Jobs of per_key webhooks that waited, without a request, for an earlier event of their key"),
    ordering_skipped: Counter("ordering_skipped_total"; "Heads of an ordering key given up as lost (not seen for longer than any job may wait), releasing the events behind them"),
    queue_depth: GaugeVec("queue_depth", "queue"; "Messages waiting in each queue (refreshed every 5 s)"),
    operational_events: CounterVec("operational_events_total", "type"; "Operational events published to {ns}.operational (confirmed)"),
    operational_events_lost: Counter("operational_events_lost_total"; "Operational events not published because their queue was full"),
    webhooks_disabled: CounterVec("disabled_total", "reason"; "Webhooks disabled, by reason"),
    replayed: Counter("dead_letters_replayed_total"; "Dead letters replayed (one at a time, in bulk or in a webhook's catch-up)"),
    replay_pending: Gauge("replay_pending"; "Dead letters waiting in paced replays of this process"),
    history_lost: Counter("history_records_lost_total"; "Attempt records not written to the delivery history because its writer fell behind"),
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("webhooks")
}

/// Registers `metric` (built by the table) in `r`.
fn register<M: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("valid metric");
    r.register(Box::new(metric.clone())).expect("unique metric");
    metric
}

impl Metrics {
    /// Registers every metric; `event_types` and `timeout` bound labels and buckets.
    pub fn new<'a>(event_types: impl IntoIterator<Item = &'a str>, timeout: Duration) -> Self {
        let registry = Registry::new();
        let m = Metrics {
            f: Families::register(&registry, timeout),
            registry,
        };
        for t in OPERATIONAL_EVENT_TYPES {
            m.f.operational_events.with_label_values(&[t]);
        }
        for r in DISABLE_REASONS {
            m.f.webhooks_disabled.with_label_values(&[r]);
        }
        for w in ROUTED_WAYS {
            m.f.events_routed.with_label_values(&[w]);
        }
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            m.registry.register(Box::new(pc)).expect("unique metric");
        }
        for t in event_types {
            m.f.events_consumed.with_label_values(&[t]);
        }
        for r in RejectReason::ALL {
            m.f.events_rejected.with_label_values(&[r.code()]);
        }
        for o in OutcomeLabel::ALL {
            m.f.deliveries.with_label_values(&[o.as_str()]);
        }
        for r in ["hit", "miss"] {
            m.f.cache_lookups.with_label_values(&[r]);
        }
        // Series exist from the start, so rate() and alerts see zeros, not gaps.
        for r in ["backlog", "circuit_open"] {
            m.f.jobs_deferred.with_label_values(&[r]);
        }
        m.f.jobs_dropped.with_label_values(&["webhook_deleted"]);
        for r in JOB_REJECT_REASONS {
            m.f.jobs_rejected.with_label_values(&[r]);
        }
        m
    }

    /// A valid event of `event_type` was consumed.
    pub(crate) fn event_consumed(&self, event_type: &str) {
        self.f
            .events_consumed
            .with_label_values(&[event_type])
            .inc();
    }

    /// An envelope was rejected to `{ns}.rejected`.
    pub(crate) fn event_rejected(&self, reason: RejectReason) {
        self.f
            .events_rejected
            .with_label_values(&[reason.code()])
            .inc();
    }

    /// An event id seen before was skipped.
    pub(crate) fn event_duplicate(&self) {
        self.f.events_duplicate.inc();
    }

    /// `n` delivery jobs were published and confirmed.
    pub(crate) fn jobs_enqueued(&self, n: usize) {
        self.f.jobs_enqueued.inc_by(n as u64);
    }

    /// One delivery attempt finished.
    pub(crate) fn delivery_finished(&self, outcome: OutcomeLabel, elapsed: Duration) {
        self.f
            .deliveries
            .with_label_values(&[outcome.as_str()])
            .inc();
        self.f.delivery_duration.observe(elapsed.as_secs_f64());
    }

    /// A job was delivered `since_received` after its event first arrived.
    pub(crate) fn delivered_end_to_end(&self, since_received: Duration) {
        self.f.end_to_end.observe(since_received.as_secs_f64());
    }

    /// Creates the per-tier series at zero (tiers come from the schedule).
    pub fn register_tiers<'a>(&self, tiers: impl IntoIterator<Item = &'a str>) {
        for t in tiers {
            self.f.retries_scheduled.with_label_values(&[t]);
        }
    }

    /// A failed attempt was scheduled into delay tier `tier`.
    pub(crate) fn retry_scheduled(&self, tier: &str) {
        self.f.retries_scheduled.with_label_values(&[tier]).inc();
    }

    /// A job became a dead letter.
    pub(crate) fn dead_lettered(&self) {
        self.f.dead_lettered.inc();
    }

    /// A job or dead letter this release cannot read was moved to the
    /// rejected queue, for `reason` (one of [`JOB_REJECT_REASONS`]).
    pub(crate) fn job_rejected(&self, reason: &'static str) {
        self.f.jobs_rejected.with_label_values(&[reason]).inc();
    }

    /// A job was dropped for `reason` (`webhook_deleted`).
    pub(crate) fn job_dropped(&self, reason: &'static str) {
        self.f.jobs_dropped.with_label_values(&[reason]).inc();
    }

    /// Counts a delivery in flight until the guard drops.
    pub(crate) fn inflight(&self) -> InflightGuard {
        self.f.inflight.inc();
        InflightGuard(self.f.inflight.clone())
    }

    /// A subscription cache lookup: `hit` or `miss`.
    pub(crate) fn cache_lookup(&self, result: &'static str) {
        self.f.cache_lookups.with_label_values(&[result]).inc();
    }

    /// A job was deferred to a tier of `delay` without a request, for
    /// `reason` (`circuit_open`).
    pub(crate) fn job_deferred(&self, reason: &'static str, delay: Duration) {
        self.f.jobs_deferred.with_label_values(&[reason]).inc();
        self.f.deferral_delay.observe(delay.as_secs_f64());
    }

    /// A job back from a delay tier (or written by an earlier release) was
    /// moved to its webhook's backlog, without a request.
    pub(crate) fn job_moved_to_backlog(&self) {
        self.f.jobs_deferred.with_label_values(&["backlog"]).inc();
    }

    /// A job waited for its webhook's rate limit.
    pub(crate) fn rate_limited(&self) {
        self.f.rate_limited.inc();
    }

    /// A webhook's filter failed on an event.
    pub(crate) fn filter_error(&self) {
        self.f.filter_errors.inc();
    }

    /// Jobs waiting in every webhook's backlog, as last counted.
    pub(crate) fn set_backlog_jobs(&self, n: i64) {
        self.f.backlog_jobs.set(n);
    }

    /// An operational event of `kind` was confirmed by the broker.
    pub(crate) fn operational_event(&self, kind: &str) {
        self.f.operational_events.with_label_values(&[kind]).inc();
    }

    /// `n` operational events could not be published.
    pub(crate) fn operational_events_lost(&self, n: usize) {
        self.f.operational_events_lost.inc_by(n as u64);
    }

    /// Client certificates in use that expire within 30 days.
    pub(crate) fn set_certificates_expiring(&self, n: usize) {
        self.f.certificates_expiring.set(n as i64);
    }

    /// A webhook was disabled for `reason`.
    pub(crate) fn webhook_disabled(&self, reason: &str) {
        self.f.webhooks_disabled.with_label_values(&[reason]).inc();
    }

    /// An attempt record was dropped before reaching the history.
    pub(crate) fn history_record_lost(&self) {
        self.f.history_lost.inc();
    }

    /// One dead letter was replayed.
    pub(crate) fn dead_letter_replayed(&self) {
        self.f.replayed.inc();
    }

    /// `n` dead letters wait in paced replays (added, or removed if negative).
    pub(crate) fn replay_pending(&self, n: i64) {
        self.f.replay_pending.add(n);
    }

    /// Whether this process routes `{ns}.ingest` now.
    pub(crate) fn set_fanning_out(&self, on: bool) {
        self.f.fanning_out.set(on as i64);
    }

    /// The router moved `n` events to their partitions' queues.
    pub(crate) fn events_routed_to_partitions(&self, n: usize) {
        self.f
            .events_routed
            .with_label_values(&[ROUTED_WAYS[0]])
            .inc_by(n as u64);
    }

    /// The router fanned out an event of a partition held here.
    pub(crate) fn event_routed_direct(&self) {
        self.f
            .events_routed
            .with_label_values(&[ROUTED_WAYS[1]])
            .inc();
    }

    /// How many ingest partitions this process fans out now.
    pub(crate) fn set_partitions_held(&self, n: usize) {
        self.f.partitions_held.set(n as i64);
    }

    /// A job waited for an earlier event of its key.
    pub(crate) fn ordering_hold(&self) {
        self.f.ordering_holds.inc();
    }

    /// A vanished head of an ordering key was skipped.
    pub(crate) fn ordering_skipped(&self) {
        self.f.ordering_skipped.inc();
    }

    /// How many webhooks have an open circuit.
    pub(crate) fn set_open_circuits(&self, n: usize) {
        self.f.circuits_open.set(n as i64);
    }

    /// `queue` (`ingest`, `deliver`, `rejected`, `retry.<delay>`, `dead`) holds `n` messages.
    pub fn set_queue_depth(&self, queue: &str, n: i64) {
        self.f.queue_depth.with_label_values(&[queue]).set(n);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

/// Decrements the in-flight gauge when dropped.
pub(crate) struct InflightGuard(IntGauge);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn delivery_buckets(timeout: Duration) -> Vec<f64> {
    let top = timeout.as_secs_f64();
    let mut b: Vec<f64> = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
        .into_iter()
        .filter(|&x| x < top)
        .collect();
    b.push(top);
    b
}

fn deferral_buckets(_: Duration) -> Vec<f64> {
    vec![
        0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 600.0, 1800.0, 3600.0, 14400.0,
        43200.0,
    ]
}

fn end_to_end_buckets(_: Duration) -> Vec<f64> {
    vec![
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
        10.0,
        30.0,
        60.0,
        300.0,
        900.0,
        3600.0,
        4.0 * 3600.0,
        12.0 * 3600.0,
        24.0 * 3600.0,
        48.0 * 3600.0,
    ]
}

#[cfg(test)]
mod tests;
