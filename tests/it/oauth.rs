//! OAuth2 client credentials per webhook (`auth`): a token endpoint on
//! loopback that checks the grant and the client's Basic credentials,
//! counts its requests and issues tokens of a lifetime per client; the
//! receiver sees a live token on every delivery, tokens are cached and
//! shared, a 401 gets one fresh token, a failing token endpoint fails the
//! attempt as `auth_error` (retried, nothing sent), and the secret is shown
//! nowhere.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::common::receiver::Received;
use crate::common::{Fixture, OPERATOR, eventually};

/// A token issued, and until when it is valid.
#[derive(Clone)]
pub(crate) struct Issued {
    token: String,
    /// The client secret it was issued for.
    secret: String,
    valid_until: Instant,
}

/// An authorization server: (client id, secret) → token lifetime in s.
pub(crate) struct TokenServer {
    pub(crate) url: String,
    issued: Arc<Mutex<Vec<Issued>>>,
}

impl TokenServer {
    pub(crate) async fn start(clients: &[(&str, &str, u64)]) -> TokenServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/oauth/token", listener.local_addr().unwrap());
        let clients: Arc<HashMap<(String, String), u64>> = Arc::new(
            clients
                .iter()
                .map(|(id, secret, life)| ((id.to_string(), secret.to_string()), *life))
                .collect(),
        );
        let issued: Arc<Mutex<Vec<Issued>>> = Arc::default();
        let log = issued.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (clients, log) = (clients.clone(), log.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (clients, log) = (clients.clone(), log.clone());
                        async move { Ok::<_, Infallible>(answer(req, &clients, &log).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        TokenServer { url, issued }
    }

    pub(crate) fn issued(&self) -> Vec<Issued> {
        self.issued.lock().unwrap().clone()
    }
}

/// A token for a client whose Basic credentials and grant are right; 401
/// `invalid_client` otherwise, as RFC 6749 section 5.2 has it.
async fn answer(
    req: Request<hyper::body::Incoming>,
    clients: &HashMap<(String, String), u64>,
    log: &Mutex<Vec<Issued>>,
) -> Response<Full<Bytes>> {
    let basic = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let (id, secret) = basic.split_once(':').unwrap_or_default();
    let known = clients.get(&(id.to_string(), secret.to_string()));
    let reply = |status: u16, body: Value| {
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        r
    };
    let Some(life) =
        known.filter(|_| form.get("grant_type").map(String::as_str) == Some("client_credentials"))
    else {
        return reply(401, json!({"error": "invalid_client"}));
    };
    let mut log = log.lock().unwrap();
    let token = format!("tok-{id}-{}", log.len() + 1);
    log.push(Issued {
        token: token.clone(),
        secret: secret.to_string(),
        valid_until: Instant::now() + Duration::from_secs(*life),
    });
    reply(
        200,
        json!({"access_token": token, "token_type": "Bearer", "expires_in": life}),
    )
}

pub(crate) fn auth(token_url: &str, client_id: &str, secret: &str) -> Value {
    json!({
        "type": "oauth2_client_credentials", "token_url": token_url,
        "client_id": client_id, "client_secret": secret, "scope": "webhooks",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_carry_a_live_cached_token_and_a_401_gets_one_fresh_one() {
    let tokens = TokenServer::start(&[
        ("long", "s3cr3t-long", 3600),
        ("long", "s3cr3t-rotated", 3600),
        ("short", "s3cr3t-short", 62),
    ])
    .await;
    let key = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
    let f = Fixture::start(&[
        ("WF_SECRET_KEY", &key),
        ("WF_RETRY_SCHEDULE", "200ms"),
        ("WF_MAX_EVENT_AGE", "1h"),
    ])
    .await;
    let (svc, rx, producer) = (&f.svc, &f.rx, &f.producer);
    let app = "app_oauth";
    let path = format!("/v1/applications/{app}/webhooks");
    let create = |url: &str, auth: Value| {
        let body = json!({"url": rx.url(url), "events": ["item.created"], "auth": auth});
        svc.call("POST", &path, Some(OPERATOR), Some(body))
    };
    let (status, long) = create("/long", auth(&tokens.url, "long", "s3cr3t-long")).await;
    assert_eq!(status, 201, "{long}");
    assert_eq!(long["auth"]["client_id"], "long");
    let (_, _short) = create("/short", auth(&tokens.url, "short", "s3cr3t-short")).await;
    let (_, refused) = create("/refused", auth(&tokens.url, "long", "wrong-secret")).await;
    create("/plain", Value::Null).await;

    for i in 0..10 {
        producer
            .event(&format!("ev-o-{i}"), app, "item.created", json!({"i": i}))
            .await;
    }
    let long_got = rx.wait_for("/long", 10).await;
    let short_got = rx.wait_for("/short", 10).await;
    assert!(
        rx.wait_for("/plain", 10)
            .await
            .iter()
            .all(|r| r.header("authorization").is_empty())
    );
    let live = |r: &Received| {
        let bearer = r.header("authorization");
        tokens
            .issued()
            .iter()
            .any(|t| bearer == format!("Bearer {}", t.token) && r.at <= t.valid_until)
    };
    assert!(
        long_got.iter().chain(&short_got).all(live),
        "a live token on each"
    );
    let count = |client: &str| {
        let prefix = format!("tok-{client}-");
        tokens
            .issued()
            .iter()
            .filter(|t| t.token.starts_with(&prefix))
            .count()
    };
    assert_eq!(
        count("long"),
        1,
        "an hour's token is fetched once and shared"
    );
    // A 62-second token is used for 2 s; later deliveries get another.
    let first_short = count("short");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    producer
        .event("ev-o-late", app, "item.created", json!({}))
        .await;
    let late = rx.wait_for("/short", 11).await.pop().unwrap();
    assert_eq!(count("short"), first_short + 1);
    assert_ne!(
        late.header("authorization"),
        short_got[0].header("authorization")
    );

    // The receiver refuses the token once: one fresh token, the request again.
    rx.then_at("/long", &[401]);
    producer
        .event("ev-o-401", app, "item.created", json!({}))
        .await;
    // ev-o-late reached it too: 11 before this one.
    let tries = rx.wait_for("/long", 13).await.split_off(11);
    assert_eq!(
        tries.iter().map(|r| r.status).collect::<Vec<_>>(),
        [401, 200]
    );
    assert_ne!(
        tries[0].header("authorization"),
        tries[1].header("authorization")
    );
    assert_eq!(count("long"), 2, "refreshed once");
    assert!(live(&tries[1]) && live(&late));

    // A new secret by PATCH: the next delivery fetches a token with it.
    let one = format!("{path}/{}", long["id"].as_str().unwrap());
    let rotated = json!({"auth": auth(&tokens.url, "long", "s3cr3t-rotated")});
    let (status, body) = svc.call("PATCH", &one, Some(OPERATOR), Some(rotated)).await;
    assert_eq!(status, 200, "{body}");
    producer
        .event("ev-o-rotated", app, "item.created", json!({}))
        .await;
    let after = rx.wait_for("/long", 14).await.pop().unwrap();
    let newest = tokens.issued().into_iter().last().unwrap();
    assert_eq!(newest.secret, "s3cr3t-rotated");
    assert_eq!(
        after.header("authorization"),
        format!("Bearer {}", newest.token)
    );

    // A token endpoint that refuses: auth_error, retried, nothing sent.
    eventually(Duration::from_secs(20), "auth errors retried", || async {
        let items = svc.attempts(&refused).await;
        let all_auth = items.iter().all(|a| {
            a["error_class"] == "auth_error"
                && a["error"]
                    .as_str()
                    .unwrap()
                    .contains("HTTP 401 (invalid_client)")
        });
        (all_auth && items.iter().any(|a| a["attempt"].as_u64() >= Some(2))).then_some(())
    })
    .await;
    assert!(rx.at("/refused").is_empty());
    assert!(
        svc.metric("webhooks_deliveries_total{outcome=\"auth_error\"}")
            .await
            >= 2.0
    );

    // The secret: in no view, sealed in Redis.
    let (_, shown) = svc.call("GET", &one, Some(OPERATOR), None).await;
    let (_, listed) = svc.call("GET", &path, Some(OPERATOR), None).await;
    for view in [&long, &shown, &listed] {
        assert!(!view.to_string().contains("s3cr3t"), "{view}");
    }
    let raw = svc.stored_webhook(app, long["id"].as_str().unwrap()).await;
    assert!(!raw.contains("s3cr3t") && raw.contains("enc:v1:"), "{raw}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_checked_like_a_callback_url_and_owns_the_authorization_header() {
    let svc = Fixture::service(&[
        ("WF_ALLOW_PRIVATE_TARGETS", "false"),
        ("WF_ALLOW_HTTP", "false"),
    ])
    .await;
    let path = "/v1/applications/app_oauth_bad/webhooks";
    let url = "https://93.184.215.14/hook";
    let post = |body: Value| svc.call("POST", path, Some(OPERATOR), Some(body));
    let good = auth("https://93.184.215.14/token", "id", "secret");
    for (auth, says) in [
        (auth("https://127.0.0.1/token", "id", "secret"), "token_url"),
        (
            auth("http://93.184.215.14/token", "id", "secret"),
            "token_url",
        ),
        (
            auth("https://u:p@93.184.215.14/token", "id", "secret"),
            "token_url",
        ),
        (json!({"type": "basic"}), "`type`"),
        (
            json!({"type": "oauth2_client_credentials", "token_url": "https://93.184.215.14/t", "client_id": "id"}),
            "`client_secret` is required",
        ),
        (json!("token"), "must be an object"),
    ] {
        let (status, body) =
            post(json!({"url": url, "events": ["item.created"], "auth": auth})).await;
        assert_eq!(status, 400, "{auth}: {body}");
        assert_eq!(
            (&body["error"]["code"], &body["error"]["field"]),
            (&json!("invalid_auth"), &json!("auth")),
            "{body}"
        );
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{auth}: {body}"
        );
        assert!(!body.to_string().contains("secret\""), "{body}");
    }
    // Authorization among the extra headers, whichever comes first.
    let both = json!({"url": url, "events": ["item.created"], "auth": good, "headers": {"authorization": "Basic x"}});
    let (status, body) = post(both).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_headers")),
        "{body}"
    );
    let (status, with_auth) =
        post(json!({"url": url, "events": ["item.created"], "auth": good})).await;
    assert_eq!(status, 201, "{with_auth}");
    let one = format!("{path}/{}", with_auth["id"].as_str().unwrap());
    let patch = |body: Value| svc.call("PATCH", &one, Some(OPERATOR), Some(body));
    let (status, body) = patch(json!({"headers": {"Authorization": "Basic x"}})).await;
    assert_eq!(
        (status, &body["error"]["field"]),
        (400, &json!("headers")),
        "{body}"
    );
    // Without auth, the header is the webhook's own.
    let (status, body) =
        patch(json!({"auth": null, "headers": {"Authorization": "Basic x"}})).await;
    assert_eq!((status, &body["auth"]), (200, &Value::Null), "{body}");
    let (status, body) = patch(json!({"auth": good})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_headers")),
        "{body}"
    );
    svc.stop().await;
}
