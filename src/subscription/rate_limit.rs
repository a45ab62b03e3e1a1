//! A webhook's rate limit (`rate_limit` in the API): at most `requests` per
//! `per`, for every process of the namespace together. The value and its
//! validation; `delivery` enforces it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The most `requests` a rate limit may name.
pub const MAX_REQUESTS: u32 = 100_000;

/// `{"requests": N, "per": "1s" | "1m" | "1h"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Requests allowed per window, 1 to [`MAX_REQUESTS`].
    pub requests: u32,
    /// The window.
    pub per: Per,
}

/// A rate limit's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Per {
    /// `1s`.
    #[serde(rename = "1s")]
    Second,
    /// `1m`.
    #[serde(rename = "1m")]
    Minute,
    /// `1h`.
    #[serde(rename = "1h")]
    Hour,
}

impl Per {
    /// The API word.
    pub fn as_str(self) -> &'static str {
        match self {
            Per::Second => "1s",
            Per::Minute => "1m",
            Per::Hour => "1h",
        }
    }

    /// The window's length.
    pub fn duration(self) -> Duration {
        match self {
            Per::Second => Duration::from_secs(1),
            Per::Minute => Duration::from_secs(60),
            Per::Hour => Duration::from_secs(3600),
        }
    }
}

impl RateLimit {
    /// Reads the API's value: `null` is no limit; anything but an object with
    /// exactly an integer `requests` (1 to 100000) and a `per` of `1s`, `1m`
    /// or `1h` is an error saying what is wrong.
    pub fn from_json(value: &Value) -> Result<Option<RateLimit>, &'static str> {
        const SHAPE: &str =
            "must be null or {\"requests\": 1-100000, \"per\": \"1s\" | \"1m\" | \"1h\"}";
        let object = match value {
            Value::Null => return Ok(None),
            Value::Object(o) => o,
            _ => return Err(SHAPE),
        };
        if object.keys().any(|k| k != "requests" && k != "per") {
            return Err(SHAPE);
        }
        let requests = object
            .get("requests")
            .and_then(Value::as_u64)
            .filter(|n| (1..=u64::from(MAX_REQUESTS)).contains(n))
            .ok_or(SHAPE)? as u32;
        let per = match object.get("per").and_then(Value::as_str) {
            Some("1s") => Per::Second,
            Some("1m") => Per::Minute,
            Some("1h") => Per::Hour,
            _ => return Err(SHAPE),
        };
        Ok(Some(RateLimit { requests, per }))
    }

    /// The API's view.
    pub fn view(&self) -> Value {
        json!({"requests": self.requests, "per": self.per.as_str()})
    }

    /// The time between two requests when they are spread evenly.
    pub fn interval(&self) -> Duration {
        self.per.duration() / self.requests.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documented_shape_is_a_rate_limit() {
        let ok = RateLimit::from_json(&json!({"requests": 100, "per": "1m"})).unwrap();
        assert_eq!(
            ok,
            Some(RateLimit {
                requests: 100,
                per: Per::Minute
            })
        );
        assert_eq!(ok.unwrap().interval(), Duration::from_millis(600));
        assert_eq!(RateLimit::from_json(&Value::Null), Ok(None));
        for bad in [
            json!({"requests": 0, "per": "1s"}),
            json!({"requests": 100_001, "per": "1s"}),
            json!({"requests": 1.5, "per": "1s"}),
            json!({"requests": "5", "per": "1s"}),
            json!({"requests": 5, "per": "2s"}),
            json!({"requests": 5}),
            json!({"per": "1s"}),
            json!({"requests": 5, "per": "1s", "burst": 2}),
            json!("5/s"),
            json!(5),
        ] {
            assert!(RateLimit::from_json(&bad).is_err(), "{bad}");
        }
        let view = RateLimit::from_json(&json!({"requests": 5, "per": "1h"}))
            .unwrap()
            .unwrap()
            .view();
        assert_eq!(view, json!({"requests": 5, "per": "1h"}));
    }
}
