//! OAuth2 client credentials for deliveries (RFC 6749 section 4.4): the
//! bearer token of a webhook's `auth`, fetched from its token endpoint,
//! cached until a tenth of its lifetime is left (and at least 60 s before
//! it expires) and shared by the process's deliveries to that webhook
//! (`shared.rs`; one fetch at a time, the others wait for it). A receiver
//! that answers 401 gets one fresh token and the request once more.
//!
//! The token request is a form POST with the client's id and secret in
//! HTTP Basic (section 2.3.1, the method every server must accept), sent
//! through the deliveries' own connector: the token endpoint is held to
//! the same address rules as callback URLs.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper::{Request, Uri};
use serde::Deserialize;
use tokio::time::Instant;

use super::pool::{Pool, USER_AGENT_VALUE, error_chain};
use crate::subscription::Auth;

/// Bytes of a token response read at most.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// The lifetime assumed when the token response has no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// One webhook's token, fetched when needed.
pub(crate) struct TokenSource {
    auth: Auth,
    /// `token_url` checked like a callback URL (scheme, credentials,
    /// literal non-public addresses), or why it is refused; names are
    /// checked at connect time. Also for records not written through the
    /// API (an import).
    endpoint: Result<Uri, String>,
    token: tokio::sync::Mutex<Option<Token>>,
}

#[derive(Clone)]
struct Token {
    /// `Bearer <access_token>`.
    bearer: HeaderValue,
    /// When to fetch the next one.
    refresh_at: Instant,
}

impl TokenSource {
    pub(super) fn new(auth: Auth, endpoint: Result<Uri, String>) -> TokenSource {
        TokenSource {
            auth,
            endpoint,
            token: tokio::sync::Mutex::new(None),
        }
    }

    /// The `Authorization` value: the cached token, or a new one.
    pub(super) async fn bearer(
        &self,
        http: &Pool,
        timeout: Duration,
    ) -> Result<HeaderValue, String> {
        let mut token = self.token.lock().await;
        if let Some(t) = token.as_ref()
            && Instant::now() < t.refresh_at
        {
            return Ok(t.bearer.clone());
        }
        let endpoint = self
            .endpoint
            .as_ref()
            .map_err(|why| format!("token endpoint: token_url refused: {why}"))?;
        let fresh = tokio::time::timeout(timeout, fetch(&self.auth, endpoint, http))
            .await
            .map_err(|_| {
                format!(
                    "token endpoint: no response within {} ms",
                    timeout.as_millis()
                )
            })??;
        let bearer = fresh.bearer.clone();
        *token = Some(fresh);
        Ok(bearer)
    }

    /// The receiver refused `bearer` (401): it is not used again (unless a
    /// newer one replaced it already, from another delivery's refusal).
    pub(super) async fn refused(&self, bearer: &HeaderValue) {
        let mut token = self.token.lock().await;
        if token.as_ref().is_some_and(|t| t.bearer == *bearer) {
            *token = None;
        }
    }
}

async fn fetch(auth: &Auth, endpoint: &Uri, http: &Pool) -> Result<Token, String> {
    let request = Request::post(endpoint.clone())
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(ACCEPT, "application/json")
        .header(AUTHORIZATION, basic(auth))
        .header(USER_AGENT, USER_AGENT_VALUE)
        .body(Full::new(Bytes::from(form(auth))))
        .map_err(|e| format!("token endpoint: cannot build the request: {e}"))?;
    let response = http
        .send(request)
        .await
        .map_err(|e| format!("token endpoint: {}", error_chain(&e)))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_TOKEN_RESPONSE)
        .collect()
        .await
        .map_err(|_| "token endpoint: the response was cut or too large".to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "token endpoint answered HTTP {}{}",
            status.as_u16(),
            oauth_error(&body)
        ));
    }
    token(&body, Instant::now())
}

/// `grant_type=client_credentials` with the optional `scope` and `audience`.
fn form(auth: &Auth) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "client_credentials");
    if let Some(scope) = &auth.scope {
        form.append_pair("scope", scope);
    }
    if let Some(audience) = &auth.audience {
        form.append_pair("audience", audience);
    }
    form.finish()
}

/// HTTP Basic of the form-encoded id and secret (RFC 6749 section 2.3.1).
fn basic(auth: &Auth) -> String {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!(
        "{}:{}",
        encode(&auth.client_id),
        encode(&auth.client_secret.0)
    );
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// The server's `error` code of a refusal (section 5.2), if it gave one.
fn oauth_error(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Refusal {
        error: String,
    }
    match serde_json::from_slice::<Refusal>(body) {
        Ok(r) if r.error.len() <= 64 && r.error.bytes().all(|b| b.is_ascii_graphic()) => {
            format!(" ({})", r.error)
        }
        _ => String::new(),
    }
}

/// The token of a successful response received at `now`.
fn token(body: &[u8], now: Instant) -> Result<Token, String> {
    #[derive(Deserialize)]
    struct Answer {
        access_token: String,
        token_type: Option<String>,
        expires_in: Option<serde_json::Value>,
    }
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|_| "token endpoint: the answer is not a token response".to_string())?;
    if let Some(kind) = &answer.token_type
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(format!("token endpoint: token_type {kind:?} is not Bearer"));
    }
    let bearer = HeaderValue::from_str(&format!("Bearer {}", answer.access_token))
        .map_err(|_| "token endpoint: the access_token cannot go in a header".to_string())?;
    // A number, or a number in a string (some servers send one).
    let seconds = match &answer.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let lifetime = seconds.map_or(DEFAULT_LIFETIME, Duration::from_secs);
    Ok(Token {
        bearer,
        refresh_at: now + cached_for(lifetime),
    })
}

/// How long a token of `lifetime` is used: until a tenth of it is left,
/// and no later than 60 s before it expires (a token of a minute or less
/// is fetched for each request).
fn cached_for(lifetime: Duration) -> Duration {
    let tenth_left = lifetime.mul_f64(0.9);
    tenth_left.min(lifetime.saturating_sub(Duration::from_secs(60)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Redacted;

    #[test]
    fn a_token_is_used_until_a_tenth_is_left_and_never_in_its_last_minute() {
        let s = Duration::from_secs;
        assert_eq!(cached_for(s(3600)), s(3240), "a tenth of an hour left");
        assert_eq!(
            cached_for(s(300)),
            s(240),
            "60 s before a five-minute token"
        );
        assert_eq!(cached_for(s(62)), s(2));
        assert_eq!(cached_for(s(30)), s(0), "never cached");
    }

    #[test]
    fn a_token_response_gives_the_bearer_and_its_refresh_time() {
        let now = Instant::now();
        let t = token(
            br#"{"access_token":"abc","token_type":"bearer","expires_in":3600}"#,
            now,
        )
        .unwrap();
        assert_eq!(t.bearer, "Bearer abc");
        assert_eq!(t.refresh_at - now, Duration::from_secs(3240));
        let t = token(br#"{"access_token":"abc","expires_in":"120"}"#, now).unwrap();
        assert_eq!(
            t.refresh_at - now,
            Duration::from_secs(60),
            "a number in a string"
        );
        let t = token(br#"{"access_token":"abc"}"#, now).unwrap();
        assert_eq!(
            t.refresh_at - now,
            Duration::from_secs(240),
            "no expires_in: 5 minutes"
        );
        let refused = |body: &[u8]| token(body, now).err().unwrap();
        assert!(refused(br#"{"token_type":"bearer"}"#).contains("not a token response"));
        assert!(refused(br#"{"access_token":"a","token_type":"mac"}"#).contains("not Bearer"));
        assert!(refused(b"{\"access_token\":\"a\\nb\"}").contains("header"));
    }

    #[test]
    fn the_request_carries_the_grant_and_basic_credentials() {
        let auth = Auth {
            token_url: "https://auth.example/token".into(),
            client_id: "fan out".into(),
            client_secret: Redacted("s:cr&t".into()),
            scope: Some("a b".into()),
            audience: None,
        };
        assert_eq!(form(&auth), "grant_type=client_credentials&scope=a+b");
        let sent = basic(&auth);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(sent.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(decoded, b"fan+out:s%3Acr%26t");
        assert_eq!(
            oauth_error(br#"{"error":"invalid_client"}"#),
            " (invalid_client)"
        );
        assert_eq!(oauth_error(b"<html>"), "");
    }
}
