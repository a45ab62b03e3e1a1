//! The event envelope (contract section 2): parse, validate, and build the
//! exact delivery body. Every failure is a `Rejection` with a bounded reason.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::catalogue::{Catalogue, TEST_EVENT};
use super::minify::minify_json;

/// The largest envelope accepted, in bytes.
pub(crate) const MAX_ENVELOPE_BYTES: usize = 256 * 1024;

/// Why an envelope was rejected to `{ns}.rejected`; the code is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Over 256 KiB.
    TooLarge,
    /// The body is not UTF-8.
    NotUtf8,
    /// Not a JSON object.
    InvalidJson,
    /// `id` present but not a 1-128 char string.
    InvalidId,
    /// `application_id` absent.
    MissingApplicationId,
    /// `application_id` not 1-128 chars of `[A-Za-z0-9_.-]`.
    InvalidApplicationId,
    /// `type` absent.
    MissingType,
    /// `type` not in the catalogue (or reserved for the test call).
    UnknownType,
    /// `timestamp` present but not an integer.
    InvalidTimestamp,
    /// `content` absent.
    MissingContent,
    /// `content` not a JSON object.
    InvalidContent,
    /// The `x-ordering-key` header is neither a non-empty string nor an integer.
    InvalidOrderingKey,
}

impl RejectReason {
    /// Every reason, for pre-registering metric labels.
    pub const ALL: [RejectReason; 12] = [
        Self::TooLarge,
        Self::NotUtf8,
        Self::InvalidJson,
        Self::InvalidId,
        Self::MissingApplicationId,
        Self::InvalidApplicationId,
        Self::MissingType,
        Self::UnknownType,
        Self::InvalidTimestamp,
        Self::MissingContent,
        Self::InvalidContent,
        Self::InvalidOrderingKey,
    ];

    /// The snake_case code used in metrics and the `x-reject-reason` header.
    pub fn code(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::NotUtf8 => "not_utf8",
            Self::InvalidJson => "invalid_json",
            Self::InvalidId => "invalid_id",
            Self::MissingApplicationId => "missing_application_id",
            Self::InvalidApplicationId => "invalid_application_id",
            Self::MissingType => "missing_type",
            Self::UnknownType => "unknown_type",
            Self::InvalidTimestamp => "invalid_timestamp",
            Self::MissingContent => "missing_content",
            Self::InvalidContent => "invalid_content",
            Self::InvalidOrderingKey => "invalid_ordering_key",
        }
    }
}

/// A refused envelope: the reason and a short human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Bounded reason.
    pub reason: RejectReason,
    /// Human-readable detail; never contains the payload.
    pub detail: String,
}

impl Rejection {
    pub(crate) fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }

    /// The `x-reject-reason` header value: `<code>: <detail>`.
    pub fn header(&self) -> String {
        format!("{}: {}", self.reason.code(), self.detail)
    }
}

/// A validated event, ready to fan out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unique event id; becomes `Webhook-Id`.
    pub id: String,
    /// The application whose webhooks receive it.
    pub application_id: String,
    /// Catalogue type, e.g. `item.refreshed`.
    pub event_type: String,
    /// The exact delivery body: `{"content":…,"timestamp":…,"type":…}`.
    pub body: String,
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    application_id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "type")]
    event_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

impl Event {
    /// Validates an envelope. `message_id` is the AMQP property used when the
    /// body has no `id`; `now` (Unix seconds) fills a missing `timestamp`.
    pub fn parse(
        bytes: &[u8],
        message_id: Option<&str>,
        catalogue: &Catalogue,
        now: i64,
    ) -> Result<Event, Rejection> {
        use RejectReason::*;
        if bytes.len() > MAX_ENVELOPE_BYTES {
            let detail = format!("envelope is {} bytes, the limit is 262144", bytes.len());
            return Err(Rejection::new(TooLarge, detail));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| Rejection::new(NotUtf8, "envelope is not UTF-8"))?;
        if !text.trim_start().starts_with('{') {
            return Err(Rejection::new(
                InvalidJson,
                "envelope must be a JSON object",
            ));
        }
        let raw: RawEnvelope = serde_json::from_str(text)
            .map_err(|e| Rejection::new(InvalidJson, format!("not a JSON object ({e})")))?;
        let id = event_id(raw.id, message_id)?;
        let application_id = application_id(raw.application_id)?;
        let event_type = event_type(raw.event_type, catalogue)?;
        let timestamp = timestamp(raw.timestamp, now)?;
        let content = content(raw.content)?;
        let body = format!(
            r#"{{"content":{},"timestamp":{},"type":{}}}"#,
            minify_json(content.get()),
            timestamp,
            serde_json::to_string(&event_type).expect("a string serializes"),
        );
        Ok(Event {
            id,
            application_id,
            event_type,
            body,
        })
    }
}

/// The longest ordering key used as it is; a longer one is replaced by
/// `sha256:` and its hex digest, which orders the same events.
pub(crate) const MAX_ORDERING_KEY_BYTES: usize = 256;

/// `key`, or its digest when it is longer than [`MAX_ORDERING_KEY_BYTES`].
pub(crate) fn bounded_key(key: String) -> String {
    use sha2::Digest;
    if key.len() <= MAX_ORDERING_KEY_BYTES {
        return key;
    }
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(key.as_bytes()))
    )
}

impl Event {
    /// The ordering key at `pointer` (a JSON pointer) inside `content`: a
    /// non-empty string, or an integer in its decimal form; none for any
    /// other value or none at all. Parses the body, so it is asked only for
    /// events that an ordered webhook receives.
    pub(crate) fn key_in_content(&self, pointer: &str) -> Option<String> {
        let body: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        let key = match body.get("content")?.pointer(pointer)? {
            serde_json::Value::String(s) if !s.is_empty() => s.clone(),
            serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            _ => return None,
        };
        Some(bounded_key(key))
    }
}

fn present(value: Option<&RawValue>) -> Option<&RawValue> {
    value.filter(|v| v.get() != "null")
}

fn string(value: &RawValue) -> Option<String> {
    serde_json::from_str::<String>(value.get()).ok()
}

fn event_id(value: Option<&RawValue>, message_id: Option<&str>) -> Result<String, Rejection> {
    let valid = |s: &str| (1..=128).contains(&s.chars().count());
    match present(value) {
        Some(v) => string(v).filter(|s| valid(s)).ok_or_else(|| {
            Rejection::new(
                RejectReason::InvalidId,
                "id must be a string of 1-128 characters",
            )
        }),
        None => Ok(message_id
            .filter(|s| valid(s))
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())),
    }
}

/// Whether `s` is 1-128 chars of `[A-Za-z0-9_.-]` (application ids).
pub(crate) fn is_valid_application_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn application_id(value: Option<&RawValue>) -> Result<String, Rejection> {
    let v = present(value).ok_or_else(|| {
        Rejection::new(
            RejectReason::MissingApplicationId,
            "application_id is required",
        )
    })?;
    string(v)
        .filter(|s| is_valid_application_id(s))
        .ok_or_else(|| {
            Rejection::new(
                RejectReason::InvalidApplicationId,
                "application_id must be 1-128 characters of [A-Za-z0-9_.-]",
            )
        })
}

fn event_type(value: Option<&RawValue>, catalogue: &Catalogue) -> Result<String, Rejection> {
    let v = present(value)
        .ok_or_else(|| Rejection::new(RejectReason::MissingType, "type is required"))?;
    let unknown = || {
        Rejection::new(
            RejectReason::UnknownType,
            "type is not in the event catalogue",
        )
    };
    let t = string(v).ok_or_else(unknown)?;
    if t == TEST_EVENT {
        let detail = "TEST_EVENT is sent only by the test call";
        return Err(Rejection::new(RejectReason::UnknownType, detail));
    }
    if !catalogue.contains(&t) {
        let mut shown: String = t.chars().take(64).collect();
        shown.retain(|c| !c.is_control());
        let detail = format!("type `{shown}` is not in the event catalogue");
        return Err(Rejection::new(RejectReason::UnknownType, detail));
    }
    Ok(t)
}

fn timestamp(value: Option<&RawValue>, now: i64) -> Result<i64, Rejection> {
    match present(value) {
        None => Ok(now),
        Some(v) => serde_json::from_str::<i64>(v.get()).map_err(|_| {
            Rejection::new(
                RejectReason::InvalidTimestamp,
                "timestamp must be an integer",
            )
        }),
    }
}

fn content(value: Option<&RawValue>) -> Result<&RawValue, Rejection> {
    let v = present(value)
        .ok_or_else(|| Rejection::new(RejectReason::MissingContent, "content is required"))?;
    if v.get().trim_start().starts_with('{') {
        Ok(v)
    } else {
        Err(Rejection::new(
            RejectReason::InvalidContent,
            "content must be a JSON object",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Event, Rejection> {
        Event::parse(text.as_bytes(), None, &Catalogue::embedded(), 1_700_000_000)
    }

    fn reason(text: &str) -> RejectReason {
        parse(text).unwrap_err().reason
    }

    #[test]
    fn a_valid_envelope_builds_the_exact_body() {
        let e = parse(
            r#"{"id":"ev1","application_id":"app_42","type":"item.refreshed","timestamp":1611681789,
               "content": { "item_id" : 1234567890, "status":0, "note":"a b\"c" }}"#,
        )
        .unwrap();
        assert_eq!(e.id, "ev1");
        assert_eq!(e.application_id, "app_42");
        assert_eq!(
            e.body,
            r#"{"content":{"item_id":1234567890,"status":0,"note":"a b\"c"},"timestamp":1611681789,"type":"item.refreshed"}"#
        );
    }

    #[test]
    fn the_ordering_key_is_read_from_content_by_pointer() {
        let e = parse(
            r#"{"application_id":"a","type":"item.account.updated","content":{"account_id":42,"item":{"id":"it-1"},"x":1.5,"e":""}}"#,
        )
        .unwrap();
        assert_eq!(e.key_in_content("/account_id").as_deref(), Some("42"));
        assert_eq!(e.key_in_content("/item/id").as_deref(), Some("it-1"));
        assert_eq!(e.key_in_content("/x"), None, "not an integer");
        assert_eq!(e.key_in_content("/e"), None, "empty");
        assert_eq!(e.key_in_content("/missing"), None);
        let long = bounded_key("k".repeat(300));
        assert!(long.starts_with("sha256:") && long.len() == 7 + 64);
        assert_eq!(bounded_key("short".into()), "short");
    }

    #[test]
    fn missing_id_and_timestamp_are_filled_in() {
        let text = r#"{"application_id":"a","type":"transfer.created","content":{}}"#;
        let from_property =
            Event::parse(text.as_bytes(), Some("msg-7"), &Catalogue::embedded(), 42).unwrap();
        assert_eq!(from_property.id, "msg-7");
        assert!(from_property.body.contains(r#""timestamp":42"#));
        let generated = parse(text).unwrap();
        assert_eq!(generated.id.len(), 36, "a UUID");
    }

    #[test]
    fn every_invalid_kind_has_its_reason() {
        use RejectReason::*;
        let ok_rest = r#""type":"item.created","content":{}"#;
        assert_eq!(reason("not json"), InvalidJson);
        assert_eq!(reason("[1,2]"), InvalidJson);
        assert_eq!(reason(&format!("{{{ok_rest}}}")), MissingApplicationId);
        assert_eq!(
            reason(&format!(r#"{{"application_id":"a b",{ok_rest}}}"#)),
            InvalidApplicationId
        );
        assert_eq!(
            reason(&format!(r#"{{"application_id":7,{ok_rest}}}"#)),
            InvalidApplicationId
        );
        let long = "a".repeat(129);
        assert_eq!(
            reason(&format!(r#"{{"application_id":"{long}",{ok_rest}}}"#)),
            InvalidApplicationId
        );
        assert_eq!(
            reason(r#"{"application_id":"a","content":{}}"#),
            MissingType
        );
        assert_eq!(
            reason(r#"{"application_id":"a","type":"nope","content":{}}"#),
            UnknownType
        );
        assert_eq!(
            reason(r#"{"application_id":"a","type":"TEST_EVENT","content":{}}"#),
            UnknownType
        );
        assert_eq!(
            reason(r#"{"application_id":"a","type":"item.created"}"#),
            MissingContent
        );
        assert_eq!(
            reason(r#"{"application_id":"a","type":"item.created","content":[1]}"#),
            InvalidContent
        );
        assert_eq!(
            reason(r#"{"application_id":"a","type":"item.created","content":"x"}"#),
            InvalidContent
        );
        assert_eq!(
            reason(&format!(
                r#"{{"application_id":"a","timestamp":1.5,{ok_rest}}}"#
            )),
            InvalidTimestamp
        );
        assert_eq!(
            reason(&format!(r#"{{"id":"","application_id":"a",{ok_rest}}}"#)),
            InvalidId
        );
        assert_eq!(
            reason(&format!(r#"{{"id":5,"application_id":"a",{ok_rest}}}"#)),
            InvalidId
        );
    }

    #[test]
    fn size_and_encoding_are_checked_first() {
        let c = Catalogue::embedded();
        let big = vec![b' '; MAX_ENVELOPE_BYTES + 1];
        assert_eq!(
            Event::parse(&big, None, &c, 0).unwrap_err().reason,
            RejectReason::TooLarge
        );
        let latin1 = b"{\"application_id\":\"caf\xe9\"}";
        assert_eq!(
            Event::parse(latin1, None, &c, 0).unwrap_err().reason,
            RejectReason::NotUtf8
        );
    }

    #[test]
    fn reject_header_carries_code_and_detail() {
        let r = parse(r#"{"application_id":"a","type":"nope","content":{}}"#).unwrap_err();
        assert_eq!(
            r.header(),
            "unknown_type: type `nope` is not in the event catalogue"
        );
    }
}
