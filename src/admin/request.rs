//! Reading request bodies: capped size, a JSON object, no unknown fields, and
//! typed field getters whose errors name the field.

use http_body_util::{BodyExt, Limited};
use hyper::StatusCode;
use hyper::body::Incoming;
use serde_json::{Map, Value};

use super::error::ApiError;

/// The largest request body accepted.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// A request body parsed as a JSON object.
pub(crate) struct Fields(Map<String, Value>);

/// Reads the body as a JSON object holding only `allowed` keys (an empty body
/// counts as `{}`).
pub(crate) async fn read_fields(body: Incoming, allowed: &[&str]) -> Result<Fields, ApiError> {
    let bytes = Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body exceeds {MAX_BODY_BYTES} bytes"),
            )
        })?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Fields(Map::new()));
    }
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("request body is not valid JSON ({e})"),
        )
    })?;
    let Value::Object(map) = value else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "request body must be a JSON object",
        ));
    };
    if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        let mut shown: String = unknown.chars().take(64).collect();
        shown.retain(|c| !c.is_control());
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_field",
            format!("unknown field `{shown}`; allowed: {}", allowed.join(", ")),
        ));
    }
    Ok(Fields(map))
}

impl Fields {
    /// Whether `key` is present (even as null).
    pub(super) fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// The raw value of `key`, if present (null included).
    pub(super) fn raw(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// An optional string; null counts as absent.
    pub(super) fn string(
        &self,
        key: &'static str,
        code: &'static str,
    ) -> Result<Option<String>, ApiError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::invalid(key, code, "must be a string")),
        }
    }

    /// An optional boolean.
    pub(super) fn boolean(
        &self,
        key: &'static str,
        code: &'static str,
    ) -> Result<Option<bool>, ApiError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::invalid(key, code, "must be true or false")),
        }
    }

    /// An optional RFC 3339 time (`2026-11-30T12:00:00Z`, or with an
    /// offset), as Unix milliseconds.
    pub(super) fn time(
        &self,
        key: &'static str,
        code: &'static str,
    ) -> Result<Option<i64>, ApiError> {
        let Some(text) = self.string(key, code)? else {
            return Ok(None);
        };
        parse_rfc3339_ms(&text).map(Some).ok_or_else(|| {
            ApiError::invalid(
                key,
                code,
                "must be an RFC 3339 time, e.g. 2026-11-30T12:00:00Z",
            )
        })
    }

    /// An optional array of strings.
    pub(super) fn strings(
        &self,
        key: &'static str,
        code: &'static str,
    ) -> Result<Option<Vec<String>>, ApiError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| ApiError::invalid(key, code, "must be an array of strings")),
            Some(_) => Err(ApiError::invalid(key, code, "must be an array of strings")),
        }
    }
}

/// A listing's `limit` query parameter: an integer from 1 to `max`.
pub(super) fn limit_param(value: &str, max: usize) -> Result<usize, ApiError> {
    value
        .parse()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::invalid(
                "limit",
                "invalid_limit",
                format!("must be an integer from 1 to {max}"),
            )
        })
}

/// A listing's query parameter `name` is not one of `allowed`.
pub(super) fn unknown_parameter(name: &str, allowed: &str) -> ApiError {
    let mut shown: String = name.chars().take(64).collect();
    shown.retain(|c| !c.is_control());
    ApiError::new(
        hyper::StatusCode::BAD_REQUEST,
        "unknown_parameter",
        format!("unknown query parameter `{shown}`; allowed: {allowed}"),
    )
}

/// An RFC 3339 time as Unix milliseconds: `Z` or a `±HH:MM` offset.
pub(super) fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let (local, offset_secs) = if let Some(rest) = text.strip_suffix(['Z', 'z']) {
        (rest, 0)
    } else {
        let split = text.len().checked_sub(6)?;
        let (local, offset) = text.split_at(split);
        let sign = match offset.as_bytes().first()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let (h, m) = offset[1..].split_once(':')?;
        let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
        if h > 23 || m > 59 {
            return None;
        }
        (local, sign * (h * 3600 + m * 60))
    };
    if !local.contains('T') && !local.contains('t') {
        return None;
    }
    let t = humantime::parse_rfc3339_weak(local).ok()?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64;
    Some(ms - offset_secs * 1000)
}

#[cfg(test)]
mod tests {
    use super::parse_rfc3339_ms;

    #[test]
    fn rfc3339_times_with_zone_or_offset() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:01:00Z"), Some(60_000));
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:01:00.5Z"), Some(60_500));
        assert_eq!(parse_rfc3339_ms("1970-01-01T01:01:00+01:00"), Some(60_000));
        assert_eq!(
            parse_rfc3339_ms("1970-01-01T00:00:00-00:30"),
            Some(1_800_000)
        );
        for bad in ["yesterday", "1970-01-01", "1970-01-01T00:00:00+25:00", ""] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }
}
