//! Deliveries and token requests through an egress proxy (`WF_HTTP_PROXY`):
//! http receivers get absolute-form requests through it, https ones a
//! `CONNECT` tunnel with TLS end to end (a client certificate included),
//! token requests go the same way, the proxy's credentials go with each,
//! and the hosts `WF_NO_PROXY` names are reached straight.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::common::certs::Ca;
use crate::common::forward_proxy::ForwardProxy;
use crate::common::receiver::Receiver;
use crate::common::{Fixture, OPERATOR, eventually};
use crate::oauth::{TokenServer, auth};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_and_token_requests_go_through_the_proxy_except_no_proxy_hosts() {
    let proxy = ForwardProxy::start().await;
    let ca = Ca::new("Egress Test CA");
    let tls_rx = Receiver::start_tls(200, ca.requiring_clients(&ca.server())).await;
    let tokens = TokenServer::start(&[("egress", "egress-secret", 3600)]).await;
    let bundle = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("egress-ca-{}.pem", uuid::Uuid::new_v4().simple()));
    std::fs::write(&bundle, ca.pem()).unwrap();
    let proxy_url = proxy.url(Some("fan:out"));
    let f = Fixture::start(&[
        ("WF_HTTP_PROXY", proxy_url.as_str()),
        ("WF_NO_PROXY", "localhost"),
        ("WF_EXTRA_CA_FILE", bundle.to_str().unwrap()),
    ])
    .await;
    let (svc, rx) = (&f.svc, &f.rx);
    let app = "app_egress";
    let path = format!("/v1/applications/{app}/webhooks");
    let create = |body: Value| svc.call("POST", &path, Some(OPERATOR), Some(body));
    let events = json!(["item.created"]);
    let client = ca.client("egress.test");
    let port = rx.addr.port();
    for body in [
        json!({"url": rx.url("/plain"), "events": events}),
        json!({"url": tls_rx.url("/mtls"), "events": events, "tls_client": client.json()}),
        json!({"url": rx.url("/oauth"), "events": events, "auth": auth(&tokens.url, "egress", "egress-secret")}),
        json!({"url": format!("http://localhost:{port}/direct"), "events": events}),
    ] {
        let (status, hook) = create(body).await;
        assert_eq!(status, 201, "{hook}");
    }
    for i in 0..5 {
        f.producer
            .event(&format!("ev-x-{i}"), app, "item.created", json!({"i": i}))
            .await;
    }
    rx.wait_for("/plain", 5).await;
    rx.wait_for("/direct", 5).await;
    for r in rx.wait_for("/oauth", 5).await {
        assert!(r.header("authorization").starts_with("Bearer tok-egress-"));
    }
    for r in tls_rx.wait_for("/mtls", 5).await {
        assert_eq!(
            r.client_cert.as_deref(),
            Some(client.der().as_slice()),
            "mTLS intact"
        );
    }
    let seen = eventually(Duration::from_secs(10), "the proxy's log", || async {
        let seen = proxy.seen();
        let plain = format!("http://127.0.0.1:{port}/plain");
        (seen.iter().filter(|s| s.target == plain).count() == 5).then_some(seen)
    })
    .await;
    let credentials = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("fan:out")
    );
    let tunnel = format!("127.0.0.1:{}", tls_rx.addr.port());
    assert!(
        seen.iter()
            .any(|s| s.method == "CONNECT" && s.target == tunnel),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|s| s.method == "POST" && s.target == tokens.url),
        "{seen:?}"
    );
    assert_eq!(
        seen.iter()
            .filter(|s| s.target.contains("/oauth") && !s.target.contains("token"))
            .count(),
        5,
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|s| s.proxy_authorization == credentials),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|s| s.target.contains("localhost")),
        "{seen:?}"
    );
    f.stop().await;
    let _ = std::fs::remove_file(&bundle);
}
