//! The webhook record as stored in Redis, its public JSON view, and secrets.

use std::time::{Duration, SystemTime};

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::Redacted;

/// How long a rotated-out secret keeps signing deliveries.
pub(crate) const ROTATION_OVERLAP_SECS: i64 = 24 * 3600;

/// One signing secret; `expires_at` is set once a newer secret replaced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSecret {
    /// `whsec_` + base64 of 32 random bytes.
    #[serde(with = "redacted_string")]
    pub value: Redacted<String>,
    /// Unix seconds after which the secret no longer signs; none for the current one.
    pub expires_at: Option<i64>,
}

/// A webhook: where to deliver which event types of one application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// `wh_` + 32 hex chars.
    pub id: String,
    /// Owning application.
    pub application_id: String,
    /// Callback URL.
    pub url: String,
    /// Optional display name.
    pub name: Option<String>,
    /// Subscribed event types.
    pub events: Vec<String>,
    /// Disabled webhooks receive nothing new; their queued jobs are dead-lettered.
    pub enabled: bool,
    /// Why it is disabled: `gone`, `receiver_requested`, `failing` or
    /// `admin`; none while enabled.
    #[serde(default)]
    pub disabled_reason: Option<String>,
    /// Unix seconds it was disabled; none while enabled.
    #[serde(default)]
    pub disabled_at: Option<i64>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Newest first; at most two.
    pub secrets: Vec<StoredSecret>,
    /// Bumped by every write; writes are compare-and-set on it (the API's
    /// `ETag`). Records written before it existed read as 0.
    #[serde(default)]
    pub revision: u64,
    /// Whether events with the same ordering key are delivered one at a
    /// time, in the order received; records written before it existed
    /// read as `none`.
    #[serde(default, skip_serializing_if = "Ordering::is_none")]
    pub ordering: Ordering,
    /// At most this many requests per window, all processes together;
    /// none (no limit) in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<super::RateLimit>,
    /// A CEL expression over the event (`crate::filter`): the webhook gets
    /// an event of a subscribed type only if it is true; none (every event
    /// of its types) in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Extra request headers sent with every delivery (`super::headers`);
    /// none in records written before they existed.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    /// The client certificate presented to the receiver (mTLS); none in
    /// records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client: Option<super::TlsClient>,
    /// How deliveries authenticate to the receiver (OAuth2 client
    /// credentials); none in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<super::Auth>,
}

/// A webhook's delivery order (`ordering` in the API).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// Events are delivered as they come, concurrently.
    #[default]
    None,
    /// Events with the same key are delivered in the order of
    /// `{ns}.ingest`, one at a time.
    PerKey,
}

impl Ordering {
    /// The API word.
    pub fn as_str(self) -> &'static str {
        match self {
            Ordering::None => "none",
            Ordering::PerKey => "per_key",
        }
    }

    /// Parses the API word.
    pub fn parse(s: &str) -> Option<Ordering> {
        match s {
            "none" => Some(Ordering::None),
            "per_key" => Some(Ordering::PerKey),
            _ => None,
        }
    }

    fn is_none(&self) -> bool {
        *self == Ordering::None
    }
}

impl Webhook {
    /// Whether this webhook is subscribed to `event_type`, enabled or not:
    /// a disabled webhook's events still get jobs, which become dead letters
    /// (`webhook_disabled`) for a catch-up once it is enabled again.
    pub(crate) fn wants(&self, event_type: &str) -> bool {
        self.events.iter().any(|e| e == event_type)
    }

    /// The checks the API makes of `filter`, `headers`, `auth` and
    /// `tls_client`, for a record written elsewhere (an import); why not,
    /// naming the field. (`auth`'s `token_url` is checked against the
    /// target policy before each token request.)
    pub(crate) fn check_fields(&self) -> Result<(), String> {
        if let Some(source) = &self.filter {
            crate::filter::Filter::compile(source).map_err(|e| format!("filter: {e}"))?;
        }
        super::headers::check(&self.headers).map_err(|why| format!("headers: {why}"))?;
        if let Some(auth) = &self.auth {
            super::headers::check_beside_auth(&self.headers)
                .map_err(|why| format!("headers: {why}"))?;
            super::Auth::from_json(&auth.view_with_secret())
                .map_err(|why| format!("auth: {why}"))?;
        }
        match &self.tls_client {
            Some(tls) => tls.check().map_err(|why| format!("tls_client: {why}")),
            None => Ok(()),
        }
    }

    /// What is kept sealed at rest (`WF_SECRET_KEY`, see `cipher.rs`): the
    /// signing secrets, the client certificate's key, the OAuth2 secret.
    pub(crate) fn sealed_fields(&mut self) -> Vec<&mut String> {
        let mut fields: Vec<&mut String> =
            self.secrets.iter_mut().map(|s| &mut s.value.0).collect();
        if let Some(tls) = &mut self.tls_client {
            fields.push(&mut tls.key_pem.0);
        }
        if let Some(auth) = &mut self.auth {
            fields.push(&mut auth.client_secret.0);
        }
        fields
    }

    /// Secrets that still sign at `now` (Unix seconds), newest first.
    pub(crate) fn valid_secrets(&self, now: i64) -> Vec<&str> {
        self.secrets
            .iter()
            .filter(|s| s.expires_at.is_none_or(|t| t > now))
            .map(|s| s.value.0.as_str())
            .collect()
    }

    /// Makes `secret` current; the previous one stays valid 24 h; older ones go.
    pub fn rotate(&mut self, secret: String, now: i64) {
        let mut previous: Vec<StoredSecret> = self
            .secrets
            .iter()
            .filter(|s| s.expires_at.is_none_or(|t| t > now))
            .take(1)
            .cloned()
            .collect();
        for s in &mut previous {
            s.expires_at = Some(s.expires_at.unwrap_or(now + ROTATION_OVERLAP_SECS));
        }
        self.secrets = std::iter::once(StoredSecret {
            value: Redacted(secret),
            expires_at: None,
        })
        .chain(previous)
        .collect();
        self.updated_at = now;
    }

    /// The public JSON object (contract section 6), without secrets.
    pub fn view(&self) -> serde_json::Value {
        json!({
            "id": self.id,
            "application_id": self.application_id,
            "url": self.url,
            "name": self.name,
            "events": self.events,
            "enabled": self.enabled,
            "ordering": self.ordering.as_str(),
            "rate_limit": self.rate_limit.map(|r| r.view()),
            "filter": self.filter,
            "headers": self.headers,
            "tls_client": self.tls_client.as_ref().map(|t| t.view()),
            "auth": self.auth.as_ref().map(|a| a.view()),
            "disabled_reason": self.disabled_reason,
            "disabled_at": self.disabled_at.map(rfc3339),
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        })
    }

    /// Enables or disables it; disabling records `reason` and the time,
    /// enabling clears both. Whether it changed.
    pub(crate) fn set_enabled(&mut self, enabled: bool, reason: &str, now: i64) -> bool {
        if self.enabled == enabled {
            return false;
        }
        self.enabled = enabled;
        self.disabled_reason = (!enabled).then(|| reason.to_string());
        self.disabled_at = (!enabled).then_some(now);
        self.updated_at = now;
        true
    }

    /// The entity tag of this revision, for `ETag` and `If-Match`.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.revision)
    }

    /// The public object plus the current `secret` (create and rotation only).
    pub(crate) fn view_with_secret(&self) -> serde_json::Value {
        let mut v = self.view();
        v["secret"] = json!(self.secrets.first().map(|s| s.value.0.as_str()));
        v
    }
}

/// A new secret: `whsec_` + base64 of 32 bytes from the OS-seeded CSPRNG.
pub(crate) fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Unix seconds as RFC 3339 UTC, e.g. `2026-11-26T16:21:26Z`.
pub(crate) fn rfc3339(unix: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds.
pub(crate) fn rfc3339_millis(ms: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

pub(super) mod redacted_string {
    use super::Redacted;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &Redacted<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.0)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Redacted<String>, D::Error> {
        String::deserialize(d).map(Redacted)
    }
}

#[cfg(test)]
impl Webhook {
    /// A webhook of `app` for the unit tests: enabled, one event type, one
    /// secret, revision 0.
    pub(crate) fn example(app: &str, id: &str) -> Webhook {
        Webhook {
            id: id.into(),
            application_id: app.into(),
            url: "https://example.com/hook".into(),
            name: None,
            events: vec!["item.created".into()],
            enabled: true,
            disabled_reason: None,
            disabled_at: None,
            created_at: 0,
            updated_at: 0,
            secrets: vec![StoredSecret {
                value: Redacted("whsec_first".into()),
                expires_at: None,
            }],
            revision: 0,
            ordering: Ordering::None,
            rate_limit: None,
            filter: None,
            headers: Default::default(),
            tls_client: None,
            auth: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook() -> Webhook {
        Webhook::example("app", "wh_1")
    }

    #[test]
    fn secrets_have_the_contract_format() {
        let s = new_secret();
        let b64 = s.strip_prefix("whsec_").expect("prefix");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(raw.len(), 32);
        assert_ne!(new_secret(), s);
    }

    #[test]
    fn rotation_keeps_the_previous_secret_for_a_day_and_never_more_than_two() {
        let mut w = webhook();
        w.rotate("whsec_second".into(), 1000);
        assert_eq!(w.valid_secrets(1000), ["whsec_second", "whsec_first"]);
        w.rotate("whsec_third".into(), 2000);
        assert_eq!(w.secrets.len(), 2);
        assert_eq!(w.valid_secrets(2000), ["whsec_third", "whsec_second"]);
        // The second secret's overlap started at the second rotation.
        assert_eq!(
            w.valid_secrets(2000 + ROTATION_OVERLAP_SECS),
            ["whsec_third"]
        );
    }

    #[test]
    fn view_hides_secrets_and_debug_too() {
        let w = webhook();
        assert!(w.view().get("secret").is_none());
        assert_eq!(w.view_with_secret()["secret"], "whsec_first");
        assert!(!format!("{w:?}").contains("whsec_first"));
        assert_eq!(w.view()["created_at"], "1970-01-01T00:00:00Z");
    }

    #[test]
    fn webhooks_want_what_they_subscribed_to_even_while_disabled() {
        let mut w = webhook();
        assert!(w.wants("item.created"));
        assert!(!w.wants("item.refreshed"));
        w.enabled = false;
        assert!(w.wants("item.created"), "kept for the catch-up");
    }

    #[test]
    fn disabling_says_why_and_since_when_and_enabling_clears_both() {
        let mut w = webhook();
        assert_eq!(w.view()["disabled_reason"], serde_json::Value::Null);
        assert!(w.set_enabled(false, "gone", 60));
        assert!(!w.set_enabled(false, "admin", 120), "already disabled");
        assert_eq!(w.view()["disabled_reason"], "gone");
        assert_eq!(w.view()["disabled_at"], "1970-01-01T00:01:00Z");
        assert!(w.set_enabled(true, "admin", 180));
        assert_eq!(w.view()["disabled_reason"], serde_json::Value::Null);
        assert_eq!(w.view()["disabled_at"], serde_json::Value::Null);
    }
}
