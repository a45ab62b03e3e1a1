//! The checks of a webhook's create and PATCH fields that need nothing but
//! the request: each gives the field's value, `None` when absent (and
//! `Some(None)` for a `null` that clears it), or a 400 naming the field.

use std::collections::BTreeMap;

use super::error::ApiError;
use super::request::Fields;
use crate::subscription::{Ordering, RateLimit, TlsClient};

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
