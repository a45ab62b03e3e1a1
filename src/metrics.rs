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
}

impl OutcomeLabel {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::HttpError => "http_error",
            Self::Timeout => "timeout",
            Self::ConnectError => "connect_error",
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
    events_consumed: IntCounterVec,
    events_rejected: IntCounterVec,
    events_duplicate: IntCounter,
    jobs_enqueued: IntCounter,
    deliveries: IntCounterVec,
    delivery_duration: Histogram,
    end_to_end: Histogram,
    retries_scheduled: IntCounterVec,
    dead_lettered: IntCounter,
    jobs_dropped: IntCounterVec,
    jobs_rejected: IntCounterVec,
    inflight: IntGauge,
    cache_lookups: IntCounterVec,
    jobs_deferred: IntCounterVec,
    deferral_delay: Histogram,
    circuits_open: IntGauge,
    backlog_jobs: IntGauge,
    rate_limited: IntCounter,
    fanning_out: IntGauge,
    partitions_held: IntGauge,
    events_routed: IntCounterVec,
    ordering_holds: IntCounter,
    ordering_skipped: IntCounter,
    queue_depth: IntGaugeVec,
    operational_events: IntCounterVec,
    operational_events_lost: IntCounter,
    webhooks_disabled: IntCounterVec,
    replayed: IntCounter,
    replay_pending: IntGauge,
    history_lost: IntCounter,
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

fn counter_vec(registry: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help).namespace("webhooks"), &[label])
        .expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::with_opts(Opts::new(name, help).namespace("webhooks")).expect("valid");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let opts = HistogramOpts::new(name, help)
        .namespace("webhooks")
        .buckets(buckets);
    let h = Histogram::with_opts(opts).expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

impl Metrics {
    /// Registers every metric; `event_types` and `timeout` bound labels and buckets.
    pub fn new<'a>(event_types: impl IntoIterator<Item = &'a str>, timeout: Duration) -> Self {
        let r = Registry::new();
        let m = Metrics {
            events_consumed: counter_vec(
                &r,
                "events_consumed_total",
                "Valid events consumed from the ingest queue",
                "type",
            ),
            events_rejected: counter_vec(
                &r,
                "events_rejected_total",
                "Envelopes rejected to the rejected queue",
                "reason",
            ),
            events_duplicate: counter(
                &r,
                "events_duplicate_total",
                "Events skipped because their id was already fanned out",
            ),
            jobs_enqueued: counter(
                &r,
                "jobs_enqueued_total",
                "Delivery jobs published by fan-out (confirmed)",
            ),
            deliveries: counter_vec(
                &r,
                "deliveries_total",
                "Delivery attempts by outcome",
                "outcome",
            ),
            delivery_duration: histogram(
                &r,
                "delivery_duration_seconds",
                "Duration of one delivery attempt",
                delivery_buckets(timeout),
            ),
            end_to_end: histogram(
                &r,
                "end_to_end_seconds",
                "From event received to successful delivery",
                end_to_end_buckets(),
            ),
            retries_scheduled: counter_vec(
                &r,
                "retries_scheduled_total",
                "Failed attempts scheduled into a delay tier",
                "tier",
            ),
            dead_lettered: counter(&r, "dead_lettered_total", "Jobs moved to the dead letters"),
            jobs_dropped: counter_vec(
                &r,
                "jobs_dropped_total",
                "Jobs dropped without delivery",
                "reason",
            ),
            jobs_rejected: counter_vec(
                &r,
                "jobs_rejected_total",
                "Delivery jobs and dead letters this release cannot read, moved to the rejected queue",
                "reason",
            ),
            inflight: IntGauge::with_opts(
                Opts::new("inflight_deliveries", "Deliveries in flight").namespace("webhooks"),
            )
            .expect("valid"),
            cache_lookups: counter_vec(
                &r,
                "subscription_cache_lookups_total",
                "Subscription cache lookups",
                "result",
            ),
            jobs_deferred: counter_vec(
                &r,
                "jobs_deferred_total",
                "Jobs put back on the broker without a request: to a delay tier while the circuit is open, or to the webhook's backlog when back from a tier",
                "reason",
            ),
            deferral_delay: histogram(
                &r,
                "deferral_delay_seconds",
                "Delay of the tier each deferred job was sent to",
                vec![
                    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 600.0, 1800.0, 3600.0,
                    14400.0, 43200.0,
                ],
            ),
            fanning_out: IntGauge::with_opts(
                Opts::new(
                    "fanning_out",
                    "1 while this process routes the ingest queue to the partitions (one process of the namespace at a time), 0 while it stands by",
                )
                .namespace("webhooks"),
            )
            .expect("valid"),
            partitions_held: IntGauge::with_opts(
                Opts::new(
                    "ingest_partitions_held",
                    "Ingest partitions this process fans out now",
                )
                .namespace("webhooks"),
            )
            .expect("valid"),
            events_routed: counter_vec(
                &r,
                "ingest_events_routed_total",
                "Events this process routed from the ingest queue: moved to their partition's queue (way=partition) or fanned out at once, their partition held here (way=direct)",
                "way",
            ),
            ordering_holds: counter(
                &r,
                "ordering_holds_total",
                "Jobs of per_key webhooks that waited, without a request, for an earlier event of their key",
            ),
            ordering_skipped: counter(
                &r,
                "ordering_skipped_total",
                "Heads of an ordering key given up as lost (not seen for longer than any job may wait), releasing the events behind them",
            ),
            circuits_open: IntGauge::with_opts(
                Opts::new(
                    "circuit_breakers_open",
                    "Webhooks whose circuit is open (in this process)",
                )
                .namespace("webhooks"),
            )
            .expect("valid"),
            rate_limited: counter(
                &r,
                "rate_limited_total",
                "Jobs that waited for their webhook's rate limit before their request",
            ),
            backlog_jobs: IntGauge::with_opts(
                Opts::new(
                    "backlog_jobs",
                    "Jobs waiting in the webhooks' backlogs, all webhooks together (counted every 2 s)",
                )
                .namespace("webhooks"),
            )
            .expect("valid"),
            queue_depth: IntGaugeVec::new(
                Opts::new(
                    "queue_depth",
                    "Messages waiting in each queue (refreshed every 5 s)",
                )
                .namespace("webhooks"),
                &["queue"],
            )
            .expect("valid"),
            operational_events: counter_vec(
                &r,
                "operational_events_total",
                "Operational events published to {ns}.operational (confirmed)",
                "type",
            ),
            operational_events_lost: counter(
                &r,
                "operational_events_lost_total",
                "Operational events not published because their queue was full",
            ),
            webhooks_disabled: counter_vec(
                &r,
                "disabled_total",
                "Webhooks disabled, by reason",
                "reason",
            ),
            replayed: counter(
                &r,
                "dead_letters_replayed_total",
                "Dead letters replayed (one at a time, in bulk or in a webhook's catch-up)",
            ),
            history_lost: counter(
                &r,
                "history_records_lost_total",
                "Attempt records not written to the delivery history because its writer fell behind",
            ),
            replay_pending: IntGauge::with_opts(
                Opts::new(
                    "replay_pending",
                    "Dead letters waiting in paced replays of this process",
                )
                .namespace("webhooks"),
            )
            .expect("valid"),
            registry: r,
        };
        m.registry
            .register(Box::new(m.replay_pending.clone()))
            .expect("unique metric");
        for t in OPERATIONAL_EVENT_TYPES {
            m.operational_events.with_label_values(&[t]);
        }
        for r in DISABLE_REASONS {
            m.webhooks_disabled.with_label_values(&[r]);
        }
        for w in ROUTED_WAYS {
            m.events_routed.with_label_values(&[w]);
        }
        m.registry
            .register(Box::new(m.queue_depth.clone()))
            .expect("unique metric");
        m.registry
            .register(Box::new(m.inflight.clone()))
            .expect("unique metric");
        m.registry
            .register(Box::new(m.circuits_open.clone()))
            .expect("unique metric");
        m.registry
            .register(Box::new(m.backlog_jobs.clone()))
            .expect("unique metric");
        m.registry
            .register(Box::new(m.fanning_out.clone()))
            .expect("unique metric");
        m.registry
            .register(Box::new(m.partitions_held.clone()))
            .expect("unique metric");
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            m.registry.register(Box::new(pc)).expect("unique metric");
        }
        for t in event_types {
            m.events_consumed.with_label_values(&[t]);
        }
        for r in RejectReason::ALL {
            m.events_rejected.with_label_values(&[r.code()]);
        }
        for o in ["success", "http_error", "timeout", "connect_error"] {
            m.deliveries.with_label_values(&[o]);
        }
        for r in ["hit", "miss"] {
            m.cache_lookups.with_label_values(&[r]);
        }
        // Series exist from the start, so rate() and alerts see zeros, not gaps.
        for r in ["backlog", "circuit_open"] {
            m.jobs_deferred.with_label_values(&[r]);
        }
        m.jobs_dropped.with_label_values(&["webhook_deleted"]);
        for r in JOB_REJECT_REASONS {
            m.jobs_rejected.with_label_values(&[r]);
        }
        m
    }

    /// A valid event of `event_type` was consumed.
    pub(crate) fn event_consumed(&self, event_type: &str) {
        self.events_consumed.with_label_values(&[event_type]).inc();
    }

    /// An envelope was rejected to `{ns}.rejected`.
    pub(crate) fn event_rejected(&self, reason: RejectReason) {
        self.events_rejected
            .with_label_values(&[reason.code()])
            .inc();
    }

    /// An event id seen before was skipped.
    pub(crate) fn event_duplicate(&self) {
        self.events_duplicate.inc();
    }

    /// `n` delivery jobs were published and confirmed.
    pub(crate) fn jobs_enqueued(&self, n: usize) {
        self.jobs_enqueued.inc_by(n as u64);
    }

    /// One delivery attempt finished.
    pub(crate) fn delivery_finished(&self, outcome: OutcomeLabel, elapsed: Duration) {
        self.deliveries.with_label_values(&[outcome.as_str()]).inc();
        self.delivery_duration.observe(elapsed.as_secs_f64());
    }

    /// A job was delivered `since_received` after its event first arrived.
    pub(crate) fn delivered_end_to_end(&self, since_received: Duration) {
        self.end_to_end.observe(since_received.as_secs_f64());
    }

    /// Creates the per-tier series at zero (tiers come from the schedule).
    pub fn register_tiers<'a>(&self, tiers: impl IntoIterator<Item = &'a str>) {
        for t in tiers {
            self.retries_scheduled.with_label_values(&[t]);
        }
    }

    /// A failed attempt was scheduled into delay tier `tier`.
    pub(crate) fn retry_scheduled(&self, tier: &str) {
        self.retries_scheduled.with_label_values(&[tier]).inc();
    }

    /// A job became a dead letter.
    pub(crate) fn dead_lettered(&self) {
        self.dead_lettered.inc();
    }

    /// A job or dead letter this release cannot read was moved to the
    /// rejected queue, for `reason` (one of [`JOB_REJECT_REASONS`]).
    pub(crate) fn job_rejected(&self, reason: &'static str) {
        self.jobs_rejected.with_label_values(&[reason]).inc();
    }

    /// A job was dropped for `reason` (`webhook_deleted`).
    pub(crate) fn job_dropped(&self, reason: &'static str) {
        self.jobs_dropped.with_label_values(&[reason]).inc();
    }

    /// Counts a delivery in flight until the guard drops.
    pub(crate) fn inflight(&self) -> InflightGuard {
        self.inflight.inc();
        InflightGuard(self.inflight.clone())
    }

    /// A subscription cache lookup: `hit` or `miss`.
    pub(crate) fn cache_lookup(&self, result: &'static str) {
        self.cache_lookups.with_label_values(&[result]).inc();
    }

    /// A job was deferred to a tier of `delay` without a request, for
    /// `reason` (`circuit_open`).
    pub(crate) fn job_deferred(&self, reason: &'static str, delay: Duration) {
        self.jobs_deferred.with_label_values(&[reason]).inc();
        self.deferral_delay.observe(delay.as_secs_f64());
    }

    /// A job back from a delay tier (or written by an earlier release) was
    /// moved to its webhook's backlog, without a request.
    pub(crate) fn job_moved_to_backlog(&self) {
        self.jobs_deferred.with_label_values(&["backlog"]).inc();
    }

    /// A job waited for its webhook's rate limit.
    pub(crate) fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    /// Jobs waiting in every webhook's backlog, as last counted.
    pub(crate) fn set_backlog_jobs(&self, n: i64) {
        self.backlog_jobs.set(n);
    }

    /// An operational event of `kind` was confirmed by the broker.
    pub(crate) fn operational_event(&self, kind: &str) {
        self.operational_events.with_label_values(&[kind]).inc();
    }

    /// `n` operational events could not be published.
    pub(crate) fn operational_events_lost(&self, n: usize) {
        self.operational_events_lost.inc_by(n as u64);
    }

    /// A webhook was disabled for `reason`.
    pub(crate) fn webhook_disabled(&self, reason: &str) {
        self.webhooks_disabled.with_label_values(&[reason]).inc();
    }

    /// An attempt record was dropped before reaching the history.
    pub(crate) fn history_record_lost(&self) {
        self.history_lost.inc();
    }

    /// One dead letter was replayed.
    pub(crate) fn dead_letter_replayed(&self) {
        self.replayed.inc();
    }

    /// `n` dead letters wait in paced replays (added, or removed if negative).
    pub(crate) fn replay_pending(&self, n: i64) {
        self.replay_pending.add(n);
    }

    /// Whether this process routes `{ns}.ingest` now.
    pub(crate) fn set_fanning_out(&self, on: bool) {
        self.fanning_out.set(on as i64);
    }

    /// The router moved `n` events to their partitions' queues.
    pub(crate) fn events_routed_to_partitions(&self, n: usize) {
        self.events_routed
            .with_label_values(&[ROUTED_WAYS[0]])
            .inc_by(n as u64);
    }

    /// The router fanned out an event of a partition held here.
    pub(crate) fn event_routed_direct(&self) {
        self.events_routed
            .with_label_values(&[ROUTED_WAYS[1]])
            .inc();
    }

    /// How many ingest partitions this process fans out now.
    pub(crate) fn set_partitions_held(&self, n: usize) {
        self.partitions_held.set(n as i64);
    }

    /// A job waited for an earlier event of its key.
    pub(crate) fn ordering_hold(&self) {
        self.ordering_holds.inc();
    }

    /// A vanished head of an ordering key was skipped.
    pub(crate) fn ordering_skipped(&self) {
        self.ordering_skipped.inc();
    }

    /// How many webhooks have an open circuit.
    pub(crate) fn set_open_circuits(&self, n: usize) {
        self.circuits_open.set(n as i64);
    }

    /// `queue` (`ingest`, `deliver`, `rejected`, `retry.<delay>`, `dead`) holds `n` messages.
    pub fn set_queue_depth(&self, queue: &str, n: i64) {
        self.queue_depth.with_label_values(&[queue]).set(n);
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

fn end_to_end_buckets() -> Vec<f64> {
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
mod tests {
    use super::*;

    #[test]
    fn render_names_the_contract_metrics() {
        let m = Metrics::new(["item.created"], Duration::from_secs(10));
        m.event_consumed("item.created");
        m.jobs_enqueued(3);
        m.delivery_finished(OutcomeLabel::Timeout, Duration::from_millis(20));
        let _g = m.inflight();
        let text = m.render();
        assert!(text.contains(r#"webhooks_events_consumed_total{type="item.created"} 1"#));
        assert!(text.contains("webhooks_jobs_enqueued_total 3"));
        assert!(text.contains(r#"webhooks_deliveries_total{outcome="timeout"} 1"#));
        assert!(text.contains("webhooks_inflight_deliveries 1"));
        assert!(text.contains(r#"webhooks_delivery_duration_seconds_bucket{le="10"}"#));
        assert!(text.contains(r#"webhooks_events_rejected_total{reason="too_large"} 0"#));
        m.retry_scheduled("10s");
        m.dead_lettered();
        m.job_dropped("webhook_deleted");
        m.job_deferred("circuit_open", Duration::from_secs(10));
        m.cache_lookup("hit");
        m.set_open_circuits(2);
        m.delivered_end_to_end(Duration::from_secs(1));
        let text = m.render();
        for name in [
            "webhooks_retries_scheduled_total{",
            "webhooks_dead_lettered_total ",
            "webhooks_jobs_dropped_total{",
            "webhooks_jobs_deferred_total{",
            "webhooks_subscription_cache_lookups_total{",
            "webhooks_circuit_breakers_open 2",
            "webhooks_end_to_end_seconds_bucket{",
            "process_resident_memory_bytes ",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
    }
}
