//! The checks of a webhook's create and PATCH fields: each gives the
//! field's value, `None` when absent (and `Some(None)` for a `null` that
//! clears it), or a 400 naming the field. URLs are checked against the
//! target policy (which may resolve names), event types against the
//! catalogue.

use std::collections::BTreeMap;

use super::context::AdminState;
use super::error::ApiError;
use super::request::Fields;
use crate::subscription::{Auth, Ordering, RateLimit, TlsClient, Webhook};

const MAX_NAME_CHARS: usize = 128;

/// `tls_client`, when present: `null` (none) or `{"cert_pem", "key_pem"}`,
/// a certificate chain and the key of its first certificate, in PEM.
pub(super) fn valid_tls_client(fields: &Fields) -> Result<Option<Option<TlsClient>>, ApiError> {
    let invalid = |why: String| ApiError::invalid("tls_client", "invalid_tls_client", why);
    let object = match fields.raw("tls_client") {
        None => return Ok(None),
        Some(serde_json::Value::Null) => return Ok(Some(None)),
        Some(serde_json::Value::Object(object)) => object,
        Some(_) => {
            return Err(invalid(
                "must be an object {\"cert_pem\", \"key_pem\"}, or null".into(),
            ));
        }
    };
    if let Some(other) = object
        .keys()
        .find(|k| !["cert_pem", "key_pem"].contains(&k.as_str()))
    {
        return Err(invalid(format!("unknown field `{other}`")));
    }
    let text = |name: &str| match object.get(name) {
        Some(serde_json::Value::String(s)) => Ok(s.as_str()),
        _ => Err(invalid(format!("`{name}` is required, a PEM text"))),
    };
    TlsClient::parse(text("cert_pem")?, text("key_pem")?)
        .map(|t| Some(Some(t)))
        .map_err(invalid)
}

/// `headers`, when present: `null` (none) or an object of at most 20
/// header names and string values the service may send.
pub(super) fn valid_headers(fields: &Fields) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    let invalid = |why: String| ApiError::invalid("headers", "invalid_headers", why);
    let object = match fields.raw("headers") {
        None => return Ok(None),
        Some(serde_json::Value::Null) => return Ok(Some(BTreeMap::new())),
        Some(serde_json::Value::Object(object)) => object,
        Some(_) => {
            return Err(invalid(
                "must be an object of header names and values, or null".into(),
            ));
        }
    };
    let mut headers = BTreeMap::new();
    for (name, value) in object {
        let Some(value) = value.as_str() else {
            return Err(invalid(format!("the value of `{name}` must be a string")));
        };
        headers.insert(name.clone(), value.to_string());
    }
    crate::subscription::headers::check(&headers).map_err(invalid)?;
    Ok(Some(headers))
}

/// `rate_limit`, when present: `null` (no limit) or `{"requests", "per"}`.
pub(super) fn valid_rate_limit(fields: &Fields) -> Result<Option<Option<RateLimit>>, ApiError> {
    match fields.raw("rate_limit") {
        None => Ok(None),
        Some(value) => RateLimit::from_json(value)
            .map(Some)
            .map_err(|why| ApiError::invalid("rate_limit", "invalid_rate_limit", why)),
    }
}

/// `ordering`, when present: `none` or `per_key`.
pub(super) fn valid_ordering(fields: &Fields) -> Result<Option<Ordering>, ApiError> {
    if !fields.has("ordering") {
        return Ok(None);
    }
    let invalid = || {
        ApiError::invalid(
            "ordering",
            "invalid_ordering",
            "must be \"none\" or \"per_key\"",
        )
    };
    let word = fields
        .string("ordering", "invalid_ordering")?
        .ok_or_else(invalid)?;
    Ordering::parse(&word).map(Some).ok_or_else(invalid)
}

pub(super) fn valid_name(name: Option<String>) -> Result<Option<String>, ApiError> {
    match name {
        Some(n) if n.chars().count() > MAX_NAME_CHARS || n.chars().any(char::is_control) => {
            Err(ApiError::invalid(
                "name",
                "invalid_name",
                format!("must be at most {MAX_NAME_CHARS} printable characters"),
            ))
        }
        Some(n) if n.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// `auth`, when present: `null` (none) or OAuth2 client credentials whose
/// `token_url` passes the checks of callback URLs.
pub(super) async fn valid_auth(
    state: &AdminState,
    fields: &Fields,
) -> Result<Option<Option<Auth>>, ApiError> {
    let invalid = |why: String| ApiError::invalid("auth", "invalid_auth", why);
    let auth = match fields.raw("auth") {
        None => return Ok(None),
        Some(serde_json::Value::Null) => return Ok(Some(None)),
        Some(value) => Auth::from_json(value).map_err(invalid)?,
    };
    let token_url = state
        .policy
        .validate(&auth.token_url)
        .await
        .map_err(|why| invalid(format!("`token_url` {why}")))?;
    Ok(Some(Some(Auth {
        token_url: token_url.to_string(),
        ..auth
    })))
}

/// A webhook with `auth` sends its own `Authorization`: its extra headers
/// may not name one.
pub(super) fn authorization_free(hook: &Webhook) -> Result<(), ApiError> {
    if hook.auth.is_none() {
        return Ok(());
    }
    crate::subscription::headers::check_beside_auth(&hook.headers)
        .map_err(|why| ApiError::invalid("headers", "invalid_headers", why))
}

/// `url`: allowed by the target policy, as saved.
pub(super) async fn valid_url(state: &AdminState, url: &str) -> Result<String, ApiError> {
    state
        .policy
        .validate(url)
        .await
        .map(|u| u.to_string())
        .map_err(|reason| ApiError::invalid("url", "invalid_url", reason))
}

/// `events`: a non-empty list of subscribable types, each once.
pub(super) fn valid_events(
    state: &AdminState,
    events: Vec<String>,
) -> Result<Vec<String>, ApiError> {
    if events.is_empty() {
        return Err(ApiError::invalid(
            "events",
            "invalid_events",
            "must list at least one event type",
        ));
    }
    let mut unique: Vec<String> = Vec::with_capacity(events.len());
    for e in events {
        if !state.catalogue.is_subscribable(&e) {
            let mut shown: String = e.chars().take(64).collect();
            shown.retain(|c| !c.is_control());
            return Err(ApiError::invalid(
                "events",
                "invalid_events",
                format!("`{shown}` is not a subscribable event type (see GET /v1/event-types)"),
            ));
        }
        if !unique.contains(&e) {
            unique.push(e);
        }
    }
    Ok(unique)
}
