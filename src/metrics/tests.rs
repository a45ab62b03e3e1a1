//! Tests of the metrics registry.

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
