//! Signing: Bridge API's `BridgeApi-Signature` (uppercase hex HMAC-SHA256 of
//! the body, keyed with the secret string) and Standard Webhooks v1 (base64
//! HMAC-SHA256 of `id.timestamp.body`, keyed with the decoded `whsec_` part).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Precomputed HMAC key schedules for a webhook's valid secrets, newest first.
#[derive(Clone)]
pub(crate) struct Signer {
    keys: Vec<(HmacSha256, HmacSha256)>,
}

impl Signer {
    /// Prepares keys for `secrets` (newest first).
    pub(crate) fn new(secrets: &[&str]) -> Signer {
        let keys = secrets
            .iter()
            .map(|s| {
                let bridge = HmacSha256::new_from_slice(s.as_bytes()).expect("any key length");
                let standard =
                    HmacSha256::new_from_slice(&standard_key(s)).expect("any key length");
                (bridge, standard)
            })
            .collect();
        Signer { keys }
    }

    /// `v1=<HEX>[,v1=<HEX>]`.
    pub(crate) fn bridge(&self, body: &[u8]) -> String {
        let parts: Vec<String> = self
            .keys
            .iter()
            .map(|(k, _)| {
                let mut mac = k.clone();
                mac.update(body);
                format!("v1={}", hex::encode_upper(mac.finalize().into_bytes()))
            })
            .collect();
        parts.join(",")
    }

    /// `v1,<base64>[ v1,<base64>]` over `id.timestamp.body`.
    pub(crate) fn standard(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let parts: Vec<String> = self
            .keys
            .iter()
            .map(|(_, k)| {
                let mut mac = k.clone();
                mac.update(id.as_bytes());
                mac.update(b".");
                mac.update(timestamp.to_string().as_bytes());
                mac.update(b".");
                mac.update(body);
                format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
            })
            .collect();
        parts.join(" ")
    }
}

/// The Standard Webhooks key: base64-decoded part after `whsec_`; a secret that
/// is not of that form is used as raw bytes.
fn standard_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b64| STANDARD.decode(b64).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge_signature(secrets: &[&str], body: &[u8]) -> String {
        Signer::new(secrets).bridge(body)
    }

    fn standard_signature(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> String {
        Signer::new(secrets).standard(id, timestamp, body)
    }

    #[test]
    fn standard_webhooks_specification_vector() {
        // The test vector published with the Standard Webhooks specification.
        let sig = standard_signature(
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn bridge_vector_is_uppercase_hex_keyed_with_the_whole_secret() {
        // Computed independently: printf '%s' BODY | openssl dgst -sha256 -hmac SECRET
        let body = crate::event::TEST_EVENT_BODY.as_bytes();
        let sig = bridge_signature(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], body);
        assert_eq!(sig, format!("v1={}", BRIDGE_VECTOR));
    }

    const BRIDGE_VECTOR: &str = "687FB7B634466F20263310FD7524B4002605886142BCE15308CC3E9B6EA854FE";

    #[test]
    fn rotated_secrets_sign_newest_first() {
        let body = b"{}";
        let both = bridge_signature(&["new", "old"], body);
        let parts: Vec<&str> = both.split(',').collect();
        assert_eq!(
            parts,
            [
                bridge_signature(&["new"], body),
                bridge_signature(&["old"], body)
            ]
        );
        let std = standard_signature(&["whsec_AAAA", "whsec_BBBB"], "id", 1, body);
        assert_eq!(std.split(' ').count(), 2);
        assert!(std.starts_with(&standard_signature(&["whsec_AAAA"], "id", 1, body)));
    }
}
