//! What a delivery needs from its webhook, prepared once per cached copy of
//! the application's webhooks instead of once per attempt: the checked
//! target URI and the HMAC key schedules of the valid secrets.
//!
//! Entries are keyed by webhook id and tied to the cached list they were made
//! from: when the subscription cache replaces that list (a change, or its
//! expiry), the next delivery prepares the webhook again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hyper::Uri;
use hyper::header::{HeaderName, HeaderValue};

use super::client::{ClientIdentity, DeliveryClient};
use super::oauth::TokenSource;
use super::signing::Signer;
use crate::subscription::Webhook;

/// Entries kept before the memo is emptied (deleted webhooks leave entries).
const MAX_ENTRIES: usize = 10_000;

/// One webhook, ready to deliver to.
pub(crate) struct Prepared {
    /// The webhook as cached.
    pub webhook: Webhook,
    /// The target checked against the SSRF policy, or why it is refused.
    pub target: Result<Uri, String>,
    /// Keys of the secrets valid when prepared.
    pub signer: Signer,
    /// Unix seconds at which one of those secrets expires.
    signer_expires: Option<i64>,
    /// The webhook's extra request headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The pool of its client certificate, if it has one.
    pub identity: Option<Result<ClientIdentity, String>>,
    /// The tokens of its `auth`, if it has one.
    pub auth: Option<Arc<TokenSource>>,
}

/// `webhook`'s extra headers as sent (any that would not parse, in a
/// record not written through the API, left out with a warning).
pub(crate) fn request_headers(webhook: &Webhook) -> Vec<(HeaderName, HeaderValue)> {
    let parsed = webhook.headers.iter().map(|(name, value)| {
        let header = (
            HeaderName::from_bytes(name.as_bytes()).ok()?,
            HeaderValue::from_str(value).ok()?,
        );
        Some(header)
    });
    let headers: Vec<_> = parsed.flatten().collect();
    if headers.len() < webhook.headers.len() {
        tracing::warn!(webhook_id = %webhook.id, "some extra headers of the webhook are malformed and not sent");
    }
    headers
}

impl Prepared {
    fn new(webhook: &Webhook, now: i64, client: &DeliveryClient) -> Self {
        let target = client.check(&webhook.url);
        Prepared {
            signer: Signer::new(&webhook.valid_secrets(now)),
            signer_expires: webhook
                .secrets
                .iter()
                .filter_map(|s| s.expires_at)
                .filter(|&t| t > now)
                .min(),
            headers: request_headers(webhook),
            identity: webhook.tls_client.as_ref().map(|t| client.identity(t)),
            auth: webhook.auth.as_ref().map(|a| client.tokens(&webhook.id, a)),
            webhook: webhook.clone(),
            target,
        }
    }

    fn fresh(&self, now: i64) -> bool {
        self.signer_expires.is_none_or(|t| now < t)
    }
}

type Entry = (Arc<[Webhook]>, Arc<Prepared>);

/// The per-process memo of prepared webhooks.
#[derive(Default)]
pub(crate) struct PreparedWebhooks {
    map: Mutex<HashMap<String, Entry>>,
}

impl PreparedWebhooks {
    /// Webhook `id` of `list` (the cache's current copy), prepared; `None` if
    /// it is not in the list.
    pub(crate) fn get(
        &self,
        list: &Arc<[Webhook]>,
        id: &str,
        now: i64,
        client: &DeliveryClient,
    ) -> Option<Arc<Prepared>> {
        if let Some((source, prepared)) = self.lock().get(id)
            && Arc::ptr_eq(source, list)
            && prepared.fresh(now)
        {
            return Some(prepared.clone());
        }
        let webhook = list.iter().find(|w| w.id == id)?;
        let prepared = Arc::new(Prepared::new(webhook, now, client));
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(id.to_string(), (list.clone(), prepared.clone()));
        Some(prepared)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}
