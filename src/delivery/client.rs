//! The delivery HTTP client: hyper with a pooled, keep-alive connector that
//! refuses non-public targets, no redirects, a whole-attempt timeout, and
//! response bodies read up to a small cap and discarded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{
    AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT,
};
use hyper::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;

use super::oauth::TokenSource;
use super::pool::{Pool, USER_AGENT_VALUE, error_chain};
use super::proxy::{Connector, ProxySettings};
use super::shared::{Shared, digest};
use super::signing::Signer;
use super::target::{PublicResolver, TargetPolicy};
use super::tls;
use crate::subscription::{Auth, TlsClient};

/// Response bytes read before the rest is dropped.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// What came back from one attempt, before classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transport {
    /// A response arrived; `retry_after` is its parsed `Retry-After` in seconds.
    Response {
        /// HTTP status code.
        status: u16,
        /// Parsed `Retry-After` (delta-seconds form).
        retry_after: Option<Duration>,
        /// What the receiver asked for in `webhook-delivery`.
        directive: Option<Directive>,
    },
    /// Nothing within the delivery timeout.
    Timeout(Duration),
    /// DNS, TCP, TLS or protocol failure.
    Connect(String),
    /// The URL itself is not allowed (scheme, literal private address).
    PolicyRefused(String),
    /// No token from the webhook's token endpoint (`auth`): no request sent.
    Auth(String),
}

/// What a receiver can ask for with the `webhook-delivery` response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Directive {
    /// `disable`: disable the webhook.
    Disable,
    /// `abort-message`: stop retrying this message.
    AbortMessage,
}

impl Directive {
    /// The directive a header value names, if any (case and surrounding
    /// blanks ignored).
    pub(crate) fn parse(value: &str) -> Option<Directive> {
        let value = value.trim();
        if value.eq_ignore_ascii_case("disable") {
            Some(Directive::Disable)
        } else if value.eq_ignore_ascii_case("abort-message") {
            Some(Directive::AbortMessage)
        } else {
            None
        }
    }
}

/// The response header receivers steer deliveries with.
pub(crate) const DIRECTIVE_HEADER: &str = "webhook-delivery";

impl Transport {
    /// The HTTP status, if a response came back.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Transport::Response { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One attempt's result and duration.
#[derive(Debug, Clone)]
pub(crate) struct AttemptResult {
    /// What came back.
    pub transport: Transport,
    /// Wall time of the attempt.
    pub duration: Duration,
}

/// What to send in one attempt.
pub(crate) struct Attempt<'a> {
    /// The callback URL checked by [`DeliveryClient::check`], or why it was
    /// refused (the attempt then fails without a request).
    pub target: &'a Result<Uri, String>,
    /// `Webhook-Id`: the event id.
    pub event_id: &'a str,
    /// `Webhook-Attempt`, 1-based.
    pub attempt: u32,
    /// Exact body bytes.
    pub body: &'a [u8],
    /// Keys of the webhook's valid secrets.
    pub signer: &'a Signer,
    /// `Webhook-Sequence`: the event's number among its key's events, for a
    /// webhook delivering in order per key.
    pub sequence: Option<u64>,
    /// The webhook's extra headers (a `User-Agent` among them replaces ours).
    pub headers: &'a [(HeaderName, HeaderValue)],
    /// The pool of the webhook's client certificate ([`DeliveryClient::identity`]),
    /// or why it cannot be used (the attempt then fails without a request);
    /// none: the shared pool, no client certificate.
    pub identity: Option<&'a Result<ClientIdentity, String>>,
    /// The tokens of the webhook's `auth` ([`DeliveryClient::tokens`]), if any.
    pub auth: Option<&'a TokenSource>,
}

/// The connection pool of one client certificate.
#[derive(Clone)]
pub(crate) struct ClientIdentity(Arc<ClientPool>);

/// A pool presenting a client certificate, and when that expires.
pub(super) struct ClientPool {
    http: Pool,
    not_after: i64,
}

/// Shared delivery client; clones share the connection pools.
#[derive(Clone)]
pub(crate) struct DeliveryClient {
    http: Pool,
    timeout: Duration,
    policy: TargetPolicy,
    roots: Arc<rustls::RootCertStore>,
    identities: Arc<Shared<ClientPool>>,
    tokens: Arc<Shared<TokenSource>>,
}

impl DeliveryClient {
    /// A client with the given whole-attempt timeout and target policy,
    /// trusting `roots` ([`tls::roots`]), through `proxy` if set.
    pub(crate) fn new(
        timeout: Duration,
        policy: TargetPolicy,
        roots: rustls::RootCertStore,
        proxy: Option<&ProxySettings>,
    ) -> Self {
        let mut direct = HttpConnector::new_with_resolver(PublicResolver {
            allow_private: policy.allow_private,
        });
        direct.enforce_http(false);
        direct.set_nodelay(true);
        direct.set_connect_timeout(Some(timeout));
        let connector = Connector::new(direct, proxy, timeout);
        let roots = Arc::new(roots);
        let config = tls::config(&roots, None).expect("the built-in TLS configuration is valid");
        DeliveryClient {
            http: Pool::new(connector, config),
            timeout,
            policy,
            roots,
            identities: Arc::default(),
            tokens: Arc::default(),
        }
    }

    /// The pool presenting `tls`'s certificate (one per certificate in use),
    /// or why it cannot be used.
    pub(crate) fn identity(&self, tls: &TlsClient) -> Result<ClientIdentity, String> {
        let key = digest(&[tls.cert_pem.as_bytes(), tls.key_pem.0.as_bytes()]);
        self.identities
            .get(key, || {
                let config = tls::config(&self.roots, Some(tls.identity()?))?;
                Ok(ClientPool {
                    http: self.http.with_tls(config),
                    not_after: tls.not_after,
                })
            })
            .map(ClientIdentity)
    }

    /// The client certificates in use that expire within 30 days of
    /// `now`, or have expired.
    pub(crate) fn certificates_expiring(&self, now: i64) -> usize {
        let soon = now + crate::subscription::tls_client::EXPIRY_WARNING_SECS;
        let in_use = self.identities.in_use();
        in_use.iter().filter(|p| p.not_after <= soon).count()
    }

    /// The token cache of webhook `id`'s `auth`, shared by the process's
    /// deliveries to it (new credentials, a new cache).
    pub(crate) fn tokens(&self, id: &str, auth: &Auth) -> Arc<TokenSource> {
        let parts: [&[u8]; 6] = [
            id.as_bytes(),
            auth.token_url.as_bytes(),
            auth.client_id.as_bytes(),
            auth.client_secret.0.as_bytes(),
            auth.scope.as_deref().unwrap_or("\0").as_bytes(),
            auth.audience.as_deref().unwrap_or("\0").as_bytes(),
        ];
        let made = self.tokens.get(digest(&parts), || {
            Ok(TokenSource::new(auth.clone(), self.check(&auth.token_url)))
        });
        made.expect("a token cache is always made")
    }

    /// `raw` checked against the target policy (scheme, credentials,
    /// literal non-public addresses; names are checked at connect time).
    pub(crate) fn check(&self, raw: &str) -> Result<Uri, String> {
        let url = self.policy.parse(raw)?;
        Uri::try_from(url.as_str()).map_err(|e| format!("url is not usable: {e}"))
    }

    /// Signs and POSTs one attempt; never panics, never follows redirects.
    pub(crate) async fn deliver(&self, attempt: Attempt<'_>) -> AttemptResult {
        let started = Instant::now();
        let transport = self.authorized(&attempt).await;
        AttemptResult {
            transport,
            duration: started.elapsed(),
        }
    }

    /// One attempt with the webhook's token, if it has `auth`: a 401 gets a
    /// fresh token and the request once more (the same attempt).
    async fn authorized(&self, a: &Attempt<'_>) -> Transport {
        let Some(tokens) = a.auth else {
            return self.once(a, None).await;
        };
        let bearer = match tokens.bearer(&self.http, self.timeout).await {
            Ok(bearer) => bearer,
            Err(why) => return Transport::Auth(why),
        };
        let first = self.once(a, Some(&bearer)).await;
        if first.status() != Some(401) {
            return first;
        }
        tokens.refused(&bearer).await;
        match tokens.bearer(&self.http, self.timeout).await {
            Ok(fresh) => self.once(a, Some(&fresh)).await,
            Err(why) => Transport::Auth(why),
        }
    }

    /// One request, within the delivery timeout.
    async fn once(&self, a: &Attempt<'_>, bearer: Option<&HeaderValue>) -> Transport {
        let request = match self.request(a, bearer) {
            Ok(request) => request,
            Err(refused) => return Transport::PolicyRefused(refused),
        };
        match tokio::time::timeout(self.timeout, self.send(request, a.identity)).await {
            Ok(t) => t,
            Err(_) => Transport::Timeout(self.timeout),
        }
    }

    fn request(
        &self,
        a: &Attempt<'_>,
        bearer: Option<&HeaderValue>,
    ) -> Result<Request<Full<Bytes>>, String> {
        let uri = a.target.clone()?;
        let timestamp = crate::clock::unix_secs();
        let body = Bytes::copy_from_slice(a.body);
        let header =
            |v: String| HeaderValue::from_str(&v).map_err(|_| "invalid header value".to_string());
        let mut request = Request::post(uri);
        if let Some(n) = a.sequence {
            request = request.header("Webhook-Sequence", n);
        }
        request
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, USER_AGENT_VALUE)
            .header("BridgeApi-Signature", header(a.signer.bridge(a.body))?)
            .header("Webhook-Id", header(a.event_id.to_string())?)
            .header("Webhook-Timestamp", timestamp)
            .header(
                "Webhook-Signature",
                header(a.signer.standard(a.event_id, timestamp, a.body))?,
            )
            .header("Webhook-Attempt", a.attempt)
            .body(Full::new(body))
            .map(|mut request| {
                for (name, value) in a.headers {
                    request.headers_mut().insert(name.clone(), value.clone());
                }
                if let Some(bearer) = bearer {
                    request.headers_mut().insert(AUTHORIZATION, bearer.clone());
                }
                request
            })
            .map_err(|e| format!("cannot build request: {e}"))
    }

    async fn send(
        &self,
        request: Request<Full<Bytes>>,
        identity: Option<&Result<ClientIdentity, String>>,
    ) -> Transport {
        let http = match identity {
            None => &self.http,
            Some(Ok(identity)) => &identity.0.http,
            Some(Err(why)) => return Transport::Connect(format!("client certificate: {why}")),
        };
        let response = match http.send(request).await {
            Ok(r) => r,
            Err(e) => return Transport::Connect(error_chain(&e)),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let directive = response
            .headers()
            .get(DIRECTIVE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(Directive::parse);
        // Read a bounded amount so the connection can be reused; past the cap
        // the body is dropped and the connection closed.
        let _ = Limited::new(response.into_body(), MAX_RESPONSE_BODY)
            .collect()
            .await;
        Transport::Response {
            status,
            retry_after,
            directive,
        }
    }
}
