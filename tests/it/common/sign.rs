//! Signature checks written independently of the service's code, as a
//! receiver would write them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bridge API: `v1=` + uppercase hex HMAC-SHA256 of the body, keyed with the
/// whole secret string.
pub fn bridge(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!(
        "v1={}",
        hex::encode(mac.finalize().into_bytes()).to_uppercase()
    )
}

/// Standard Webhooks: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body`, keyed
/// with the base64-decoded part after `whsec_`.
pub fn standard(secret: &str, id: &str, ts: &str, body: &[u8]) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}
