//! Faults: the broker connection lost, Redis unreachable, and shutdown with
//! deliveries in flight. Nothing is lost, and no restart is needed.

use std::time::Duration;

use crate::common::proxy::Proxy;
use crate::common::receiver::Receiver;
use crate::common::{Fixture, OPERATOR, Producer, TestService, eventually};
use serde_json::json;

const RABBITMQ: &str = "127.0.0.1:5672";
const REDIS: &str = "127.0.0.1:6379";

async fn ready(svc: &TestService) -> bool {
    svc.call("GET", "/readyz", None, None).await.0 == 200
}

async fn wait_readiness(svc: &TestService, want: bool) {
    eventually(
        Duration::from_secs(20),
        if want { "ready" } else { "not ready" },
        || async { (ready(svc).await == want).then_some(()) },
    )
    .await;
}

/// Waits until every one of `ids` reached `path` at least once.
async fn all_delivered(rx: &Receiver, path: &str, ids: &[String]) {
    eventually(Duration::from_secs(30), "every event delivered", || async {
        let got: Vec<String> = rx.at(path).iter().map(|r| r.header("webhook-id")).collect();
        ids.iter().all(|id| got.contains(id)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_broker_connection_is_reestablished_and_nothing_is_lost() {
    let proxy = Proxy::start(RABBITMQ).await;
    let f = Fixture::start(&[("WF_AMQP_URL", &proxy.amqp_url())]).await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    svc.webhook("app_b", &rx.url("/b"), &["item.created"]).await;
    let ids: Vec<String> = (0..40).map(|i| format!("ev-b-{i}")).collect();
    for id in &ids[..20] {
        producer.event(id, "app_b", "item.created", json!({})).await;
    }
    rx.wait_for("/b", 1).await;

    proxy.cut();
    wait_readiness(svc, false).await;
    // Events keep arriving while the service is cut off: they wait in RabbitMQ.
    for id in &ids[20..] {
        producer.event(id, "app_b", "item.created", json!({})).await;
    }
    proxy.restore();
    wait_readiness(svc, true).await;
    all_delivered(rx, "/b", &ids).await;

    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_several_node_urls_a_lost_node_fails_over_to_the_next() {
    // Three "nodes" of one broker: a port nobody listens on, and two
    // proxies the test can take down one by one.
    let (a, b) = (Proxy::start(RABBITMQ).await, Proxy::start(RABBITMQ).await);
    let urls = format!(
        "amqp://guest:guest@127.0.0.1:1/%2f,{},{}",
        a.amqp_url(),
        b.amqp_url()
    );
    let f = Fixture::start(&[("WF_AMQP_URL", &urls)]).await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    svc.webhook("app_n", &rx.url("/n"), &["item.created"]).await;
    let ids: Vec<String> = (0..30).map(|i| format!("ev-n-{i}")).collect();
    for id in &ids[..10] {
        producer.event(id, "app_n", "item.created", json!({})).await;
    }
    all_delivered(rx, "/n", &ids[..10]).await;

    // The node in use dies: the service goes on through the next one,
    // without a restart.
    a.cut();
    wait_readiness(svc, false).await;
    for id in &ids[10..20] {
        producer.event(id, "app_n", "item.created", json!({})).await;
    }
    wait_readiness(svc, true).await;
    all_delivered(rx, "/n", &ids[..20]).await;

    // And back to the first when the second dies in turn.
    a.restore();
    b.cut();
    wait_readiness(svc, false).await;
    for id in &ids[20..] {
        producer.event(id, "app_n", "item.created", json!({})).await;
    }
    wait_readiness(svc, true).await;
    all_delivered(rx, "/n", &ids).await;

    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_for_10s_deliveries_continue_and_writes_are_refused() {
    let proxy = Proxy::start(REDIS).await;
    let f = Fixture::start(&[("WF_REDIS_URL", &proxy.redis_url())]).await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    svc.webhook("app_r", &rx.url("/r"), &["item.created"]).await;
    producer
        .event("ev-r-0", "app_r", "item.created", json!({}))
        .await;
    rx.wait_for("/r", 1).await; // the subscription is now cached

    proxy.cut();
    let outage = std::time::Instant::now();
    wait_readiness(svc, false).await;
    let ids: Vec<String> = (1..=10).map(|i| format!("ev-r-{i}")).collect();
    for id in &ids {
        producer.event(id, "app_r", "item.created", json!({})).await;
    }
    all_delivered(rx, "/r", &ids).await;
    println!(
        "10 events delivered {:?} into a Redis outage",
        outage.elapsed()
    );
    let create = json!({"url": rx.url("/new"), "events": ["item.created"]});
    let (s, b) = svc
        .call(
            "POST",
            "/v1/applications/app_r/webhooks",
            Some(OPERATOR),
            Some(create.clone()),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (503, Some("store_unavailable")),
        "{b}"
    );

    // Hold the outage for 10 s in all (a fault's length, not a wait for a condition).
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(outage.elapsed())).await;
    assert!(
        !ready(svc).await,
        "still not ready at the end of the outage"
    );
    proxy.restore();
    wait_readiness(svc, true).await;
    let (s, list) = svc
        .call(
            "GET",
            "/v1/applications/app_r/webhooks",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(
        (s, list.as_array().map(Vec::len)),
        (200, Some(1)),
        "nothing half-written"
    );
    let (s, _) = svc
        .call(
            "POST",
            "/v1/applications/app_r/webhooks",
            Some(OPERATOR),
            Some(create),
        )
        .await;
    assert_eq!(s, 201);

    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_back_a_delivery_it_cannot_finish_in_time() {
    let ns = crate::common::Namespace::new();
    let first = Fixture::join(
        &ns,
        &[
            ("WF_SHUTDOWN_TIMEOUT", "1s"),
            ("WF_DELIVERY_TIMEOUT", "30s"),
        ],
    )
    .await;
    let rx = Receiver::start(200).await;
    rx.then(&[0]); // the first request hangs
    first
        .webhook("app_h", &rx.url("/h"), &["item.created"])
        .await;
    let producer = Producer::connect(&ns).await;
    producer
        .event("ev-h", "app_h", "item.created", json!({}))
        .await;
    rx.wait_for("/h", 1).await;

    let settings = first.settings.clone();
    let stopping = std::time::Instant::now();
    first.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "bounded by the shutdown timeout"
    );

    // The unfinished delivery went back to RabbitMQ; the next process delivers it.
    let second = Fixture::join(&ns, &[]).await;
    let got = rx.wait_for("/h", 2).await;
    assert_eq!(got[1].header("webhook-id"), "ev-h");
    second
        .metric_reaches(r#"webhooks_deliveries_total{outcome="success"}"#, 1.0)
        .await;

    producer.close().await;
    second.stop().await;
    crate::common::delete_namespace(&ns, &settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_slow_delivery_finish() {
    let svc = Fixture::service(&[("WF_SHUTDOWN_TIMEOUT", "10s")]).await;
    let slow = SlowReceiver::start(Duration::from_millis(1500)).await;
    svc.webhook("app_f", &slow.url, &["item.created"]).await;
    let producer = Producer::connect(&svc.ns).await;
    producer
        .event("ev-f", "app_f", "item.created", json!({}))
        .await;
    eventually(
        Duration::from_secs(10),
        "the delivery in flight",
        || async { (svc.metric("webhooks_inflight_deliveries").await >= 1.0).then_some(()) },
    )
    .await;
    let m = svc
        .metric(r#"webhooks_deliveries_total{outcome="success"}"#)
        .await;
    assert_eq!(m, 0.0);
    let base = svc.base.clone();
    svc.stop().await;
    // It finished inside the shutdown window: answered and acked, nothing left.
    assert_eq!(slow.answered(), 1);
    let _ = base;
    producer.close().await;
}

/// A receiver answering 200 after a delay, counting completed answers.
struct SlowReceiver {
    url: String,
    answered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl SlowReceiver {
    async fn start(delay: Duration) -> SlowReceiver {
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/slow", listener.local_addr().unwrap());
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = answered.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        let count = count.clone();
                        async move {
                            tokio::time::sleep(delay).await;
                            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::new()),
                            ))
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
        SlowReceiver { url, answered }
    }

    fn answered(&self) -> usize {
        self.answered.load(std::sync::atomic::Ordering::SeqCst)
    }
}
