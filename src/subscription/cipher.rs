//! Webhook secrets at rest: sealed with ChaCha20-Poly1305 under `WF_SECRET_KEY`
//! as `enc:v1:<base64(nonce | ciphertext)>`. Values without the prefix are
//! plaintext from before a key was set and keep working.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

const PREFIX: &str = "enc:v1:";
const NONCE_LEN: usize = 12;

/// Why a stored secret cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    /// Sealed, but this process has no `WF_SECRET_KEY`.
    #[error("secret is encrypted but WF_SECRET_KEY is not set")]
    NoKey,
    /// Sealed under another key, or damaged.
    #[error("secret cannot be decrypted with WF_SECRET_KEY")]
    Undecryptable,
}

/// Seals and opens stored secrets; without a key it stores plaintext.
#[derive(Clone)]
pub(crate) struct SecretCipher {
    aead: Option<ChaCha20Poly1305>,
}

impl SecretCipher {
    /// A cipher for `key` (none: plaintext storage).
    pub(crate) fn new(key: Option<&[u8; 32]>) -> Self {
        SecretCipher {
            aead: key.map(|k| ChaCha20Poly1305::new(Key::from_slice(k))),
        }
    }

    /// The stored form of `secret`.
    pub(crate) fn seal(&self, secret: &str) -> String {
        let Some(aead) = &self.aead else {
            return secret.to_string();
        };
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = aead
            .encrypt(&nonce, secret.as_bytes())
            .expect("encryption of a short secret cannot fail");
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        format!("{PREFIX}{}", STANDARD.encode(bytes))
    }

    /// The secret from its stored form.
    pub(crate) fn open(&self, stored: &str) -> Result<String, CipherError> {
        let Some(b64) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_string());
        };
        let aead = self.aead.as_ref().ok_or(CipherError::NoKey)?;
        let bytes = STANDARD
            .decode(b64)
            .map_err(|_| CipherError::Undecryptable)?;
        if bytes.len() <= NONCE_LEN {
            return Err(CipherError::Undecryptable);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let plain = aead
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| CipherError::Undecryptable)?;
        String::from_utf8(plain).map_err(|_| CipherError::Undecryptable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key() {
        let c = SecretCipher::new(Some(&[7u8; 32]));
        let sealed = c.seal("whsec_abc");
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("whsec_abc"));
        assert_ne!(sealed, c.seal("whsec_abc"), "a fresh nonce each time");
        assert_eq!(c.open(&sealed).unwrap(), "whsec_abc");
        let other = SecretCipher::new(Some(&[8u8; 32]));
        assert!(matches!(
            other.open(&sealed),
            Err(CipherError::Undecryptable)
        ));
        assert!(matches!(
            SecretCipher::new(None).open(&sealed),
            Err(CipherError::NoKey)
        ));
    }

    #[test]
    fn plaintext_keeps_working_and_no_key_means_plaintext() {
        let c = SecretCipher::new(Some(&[7u8; 32]));
        assert_eq!(c.open("whsec_old").unwrap(), "whsec_old");
        assert_eq!(SecretCipher::new(None).seal("whsec_x"), "whsec_x");
    }
}
