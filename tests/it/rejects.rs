//! Invalid envelopes are parked in `{ns}.rejected` with a reason, never
//! dropped, and the service keeps running.

use crate::common::{Fixture, eventually};
use lapin::types::AMQPValue;
use serde_json::json;
use std::time::Duration;

fn reason(headers: &lapin::types::FieldTable) -> String {
    match headers.inner().get("x-reject-reason") {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("no x-reject-reason header: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_invalid_envelope_is_parked_with_its_reason() {
    let f = Fixture::start(&[]).await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    svc.webhook("app_r", &rx.url("/r"), &["item.created"]).await;

    let mut big =
        json!({"application_id": "app_r", "type": "item.created", "content": {}}).to_string();
    big.insert_str(1, &format!(r#""pad":"{}","#, "x".repeat(256 * 1024)));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("invalid_json", b"this is not json".to_vec()),
        ("not_utf8", b"{\"application_id\":\"caf\xe9\"}".to_vec()),
        (
            "missing_application_id",
            br#"{"type":"item.created","content":{}}"#.to_vec(),
        ),
        (
            "invalid_application_id",
            br#"{"application_id":"app r!","type":"item.created","content":{}}"#.to_vec(),
        ),
        (
            "unknown_type",
            br#"{"application_id":"app_r","type":"item.exploded","content":{}}"#.to_vec(),
        ),
        (
            "invalid_content",
            br#"{"application_id":"app_r","type":"item.created","content":[1,2]}"#.to_vec(),
        ),
        (
            "missing_content",
            br#"{"application_id":"app_r","type":"item.created"}"#.to_vec(),
        ),
        ("too_large", big.into_bytes()),
    ];
    for (_, body) in &cases {
        producer.raw("item.created", body).await;
    }
    let rejected_queue = svc.names().rejected();
    let mut parked = Vec::new();
    while parked.len() < cases.len() {
        let msg = eventually(Duration::from_secs(15), "a rejected envelope", || async {
            producer.get(&rejected_queue).await
        })
        .await;
        parked.push(msg);
    }
    for (code, body) in &cases {
        let found = parked
            .iter()
            .find(|(b, _)| b == body)
            .unwrap_or_else(|| panic!("{code} not parked"));
        let why = reason(&found.1);
        assert!(why.starts_with(&format!("{code}: ")), "{code}: got `{why}`");
        let metric = format!(r#"webhooks_events_rejected_total{{reason="{code}"}}"#);
        assert_eq!(svc.metric(&metric).await, 1.0, "{metric}");
    }

    // Still running: a valid event after all that is delivered.
    producer
        .event("ev-after", "app_r", "item.created", json!({"ok": true}))
        .await;
    rx.wait_for("/r", 1).await;

    f.stop().await;
}
