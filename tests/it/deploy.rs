//! The deployment artifacts stay true to the service: every metric an alert,
//! a recording or a dashboard panel refers to is one the service exports.
//! Syntax checks (promtool, compose, kustomize structure) are in
//! scripts/check-deploy.sh, run by `make test`.

use std::collections::BTreeSet;

use crate::common::Fixture;

fn referenced(path: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    for prefix in ["webhooks_", "process_"] {
        for (start, _) in text.match_indices(prefix) {
            let before = start.checked_sub(1).map(|i| bytes[i]);
            if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
                continue;
            }
            let end = text[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(text.len(), |n| start + n);
            names.insert(text[start..end].to_string());
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_dashboards_use_only_exported_metrics() {
    let svc = Fixture::service(&[]).await;
    // Every family appears once the queue depths have been read.
    crate::common::eventually(
        std::time::Duration::from_secs(15),
        "queue depths",
        || async {
            (svc.metric(r#"webhooks_queue_depth{queue="ingest"}"#).await == 0.0
                && svc.metrics_text().await.contains("webhooks_queue_depth"))
            .then_some(())
        },
    )
    .await;
    let text = svc.metrics_text().await;
    let exported: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect();
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/kubernetes/prometheusrule.yaml",
        "deploy/grafana/webhook-fanout.json",
    ] {
        let names = referenced(file);
        assert!(names.len() >= 5, "{file} refers to service metrics");
        for name in names {
            assert!(
                exported.contains(&name),
                "{file} refers to `{name}`, which the service does not export"
            );
        }
    }
    svc.stop().await;
}
