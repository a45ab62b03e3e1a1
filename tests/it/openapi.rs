//! docs/openapi.yaml stays true to the router: every documented operation is
//! served (not the router's 404 or 405), every operation of the route table
//! is documented, and nothing outside the table is routed. Response bodies are checked against the schemas by the
//! schemathesis run in `make test` (scripts/api-fuzz.sh).

use crate::common::{Fixture, OPERATOR};

/// (method, path) of every operation in the document.
fn documented() -> Vec<(String, String)> {
    let spec =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml")).unwrap();
    let mut ops = Vec::new();
    let (mut in_paths, mut path) = (false, String::new());
    for line in spec.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /") {
            path = format!("/{}", p.trim_end_matches(':'));
        } else if let Some(m) = line.strip_prefix("    ").and_then(|m| m.strip_suffix(':')) {
            if ["get", "post", "patch", "delete", "put"].contains(&m) {
                ops.push((m.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

#[test]
fn every_served_operation_is_documented_and_nothing_else() {
    let mut documented = documented();
    documented.sort();
    // The router's own table, not a copy of it.
    let mut served: Vec<(String, String)> = webhook_fanout::admin::operations()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    served.sort();
    assert_eq!(documented, served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_routed() {
    let svc = Fixture::service(&[]).await;
    for (method, path) in documented() {
        let concrete = path
            .replace("{app}", "app_doc")
            .replace("{id}", "wh_missing");
        let (status, body) = svc
            .call(
                &method,
                &concrete,
                Some(OPERATOR),
                Some(serde_json::json!({})),
            )
            .await;
        let routed =
            !(status == 405 || (status == 404 && body["error"]["message"] == "route not found"));
        assert!(
            routed,
            "{method} {path} is documented but not routed: {status} {body}"
        );
    }
    // An unknown last segment is no route at all (it once ran rotate-secret).
    let (status, body) = svc
        .call(
            "POST",
            "/v1/applications/app_doc/webhooks/wh_missing/unknown",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(
        (status, &body["error"]["message"]),
        (404, &serde_json::json!("route not found"))
    );
    svc.stop().await;
}
