//! Extra request headers per webhook (`headers`): what a receiver needs
//! besides the signature (an API key, a routing header of its gateway),
//! checked when saved so that a delivery can always carry them.

use std::collections::BTreeMap;

/// Most extra headers per webhook.
pub const MAX_HEADERS: usize = 20;
/// Longest header name and value, in bytes.
const MAX_NAME_BYTES: usize = 64;
const MAX_VALUE_BYTES: usize = 1_024;

/// Names the service sets itself or that belong to the connection (lower
/// case); `webhook-*` is reserved too.
const RESERVED: [&str; 13] = [
    "bridgeapi-signature",
    "content-type",
    "content-length",
    "host",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether `headers` may go with a webhook that has `auth`, whose
/// deliveries carry their own `Authorization`; else why not.
pub fn check_beside_auth(headers: &BTreeMap<String, String>) -> Result<(), String> {
    match headers
        .keys()
        .find(|n| n.eq_ignore_ascii_case("authorization"))
    {
        Some(name) => Err(format!(
            "`{name}` is set by the service for a webhook with `auth` and cannot be replaced"
        )),
        None => Ok(()),
    }
}

/// Whether `headers` may be sent with every delivery; else why not.
pub fn check(headers: &BTreeMap<String, String>) -> Result<(), String> {
    if headers.len() > MAX_HEADERS {
        return Err(format!(
            "has {} headers; at most {MAX_HEADERS}",
            headers.len()
        ));
    }
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if name.is_empty() || name.len() > MAX_NAME_BYTES || !name.bytes().all(is_token) {
            return Err(format!(
                "`{name}` is not a header name (1-{MAX_NAME_BYTES} letters, digits or !#$%&'*+-.^_`|~)"
            ));
        }
        if lower.starts_with("webhook-") || RESERVED.contains(&lower.as_str()) {
            return Err(format!(
                "`{name}` is set by the service or the connection and cannot be replaced"
            ));
        }
        if seen.contains(&lower) {
            return Err(format!("`{name}` is named twice (names ignore case)"));
        }
        seen.push(lower);
        let printable = value
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b));
        if value.len() > MAX_VALUE_BYTES || !printable {
            return Err(format!(
                "the value of `{name}` must be at most {MAX_VALUE_BYTES} printable ASCII characters"
            ));
        }
    }
    Ok(())
}

/// RFC 9110 token characters.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str, value: &str) -> Result<(), String> {
        check(&BTreeMap::from([(name.to_string(), value.to_string())]))
    }

    #[test]
    fn ordinary_headers_pass_and_reserved_or_malformed_ones_say_why() {
        assert_eq!(one("X-Api-Key", "k-123"), Ok(()));
        assert_eq!(one("User-Agent", "their-gateway/1"), Ok(()));
        assert_eq!(one("Authorization", "Bearer abc"), Ok(()));
        for (name, value, says) in [
            ("Webhook-Id", "x", "set by the service"),
            ("webhook-signature", "x", "set by the service"),
            ("BridgeApi-Signature", "x", "set by the service"),
            ("Content-Type", "text/plain", "set by the service"),
            ("Host", "evil", "set by the service"),
            ("Transfer-Encoding", "chunked", "set by the service"),
            ("X Bad", "x", "not a header name"),
            ("", "x", "not a header name"),
            ("X-Line", "a\r\nInjected: 1", "printable"),
            ("X-Long", &"v".repeat(1_025), "at most 1024"),
        ] {
            let why = one(name, value).expect_err(name);
            assert!(why.contains(says), "{name}: {why}");
        }
        let twice = BTreeMap::from([
            ("X-A".to_string(), "1".to_string()),
            ("x-a".to_string(), "2".to_string()),
        ]);
        assert!(check(&twice).unwrap_err().contains("named twice"));
        let many: BTreeMap<String, String> = (0..21)
            .map(|i| (format!("X-{i}"), "v".to_string()))
            .collect();
        assert!(check(&many).unwrap_err().contains("at most 20"));
    }
}
