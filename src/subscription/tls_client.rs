//! A webhook's client certificate (`tls_client`, mTLS): the chain and key
//! in PEM as given, checked once when written (the chain parses, the key
//! parses and belongs to the first certificate), with the first
//! certificate's subject and expiry kept for the views. The key is sealed
//! at rest like the signing secrets (`cipher.rs`) and never shown again.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::Redacted;

/// Longest PEM text accepted for the chain or the key (a chain of a few
/// certificates is a few kilobytes).
const MAX_PEM_BYTES: usize = 64 * 1024;

/// How long before its expiry a client certificate is flagged (the
/// dashboard, `webhooks_client_certificates_expiring`).
pub const EXPIRY_WARNING_SECS: i64 = 30 * 24 * 3600;

/// A client certificate and its key, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsClient {
    /// The certificate chain in PEM, the webhook's own certificate first.
    pub cert_pem: String,
    /// The private key in PEM (PKCS#8, PKCS#1 or SEC1); sealed at rest.
    #[serde(with = "super::webhook::redacted_string")]
    pub key_pem: Redacted<String>,
    /// The first certificate's subject, as shown.
    pub subject: String,
    /// Unix seconds after which the first certificate is no longer valid.
    pub not_after: i64,
}

/// The parsed chain and key, ready for a TLS client configuration.
pub(crate) type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

impl TlsClient {
    /// A client certificate from the API's `cert_pem` and `key_pem`, or why
    /// not (the chain or the key does not parse, or they do not match).
    pub fn parse(cert_pem: &str, key_pem: &str) -> Result<TlsClient, String> {
        if cert_pem.len() > MAX_PEM_BYTES || key_pem.len() > MAX_PEM_BYTES {
            return Err(format!(
                "cert_pem and key_pem are at most {MAX_PEM_BYTES} bytes each"
            ));
        }
        let chain = chain(cert_pem)?;
        let (subject, not_after) = described(&chain[0])?;
        let key = key(key_pem)?;
        let provider = rustls::crypto::ring::default_provider();
        rustls::sign::CertifiedKey::from_der(chain.clone(), key, &provider).map_err(
            |e| match e {
                rustls::Error::InconsistentKeys(_) => {
                    "key_pem is not the key of the first certificate of cert_pem".to_string()
                }
                other => format!("key_pem is not usable: {other}"),
            },
        )?;
        Ok(TlsClient {
            cert_pem: cert_pem.to_string(),
            key_pem: Redacted(key_pem.to_string()),
            subject,
            not_after,
        })
    }

    /// The same checks of a stored record (an import), which must hold the
    /// subject and expiry of its own chain.
    pub(crate) fn check(&self) -> Result<(), String> {
        let parsed = TlsClient::parse(&self.cert_pem, &self.key_pem.0)?;
        if (parsed.subject.as_str(), parsed.not_after) != (self.subject.as_str(), self.not_after) {
            return Err("subject and not_after are not those of cert_pem".into());
        }
        Ok(())
    }

    /// The chain and key for a TLS client configuration.
    pub(crate) fn identity(&self) -> Result<Identity, String> {
        Ok((chain(&self.cert_pem)?, key(&self.key_pem.0)?))
    }

    /// Whether it expires within [`EXPIRY_WARNING_SECS`] of `now` (Unix seconds).
    pub fn expires_soon(&self, now: i64) -> bool {
        self.not_after - now <= EXPIRY_WARNING_SECS
    }

    /// The public view: the subject and expiry, never the key.
    pub fn view(&self) -> serde_json::Value {
        json!({
            "subject": self.subject,
            "not_after": super::webhook::rfc3339(self.not_after),
        })
    }
}

fn chain(cert_pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cert_pem does not parse as PEM certificates: {e}"))?;
    if chain.is_empty() {
        return Err("cert_pem holds no CERTIFICATE block".into());
    }
    Ok(chain)
}

fn key(key_pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("key_pem does not parse as a PEM private key: {e}"))
}

/// The subject and `notAfter` (Unix seconds) of a certificate.
fn described(cert: &CertificateDer<'_>) -> Result<(String, i64), String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("cert_pem's first certificate does not parse: {e}"))?;
    Ok((
        parsed.subject().to_string(),
        parsed.validity().not_after.timestamp(),
    ))
}

/// Certificates made for tests.
#[cfg(test)]
pub(crate) mod testing {
    /// A self-signed certificate for `name` valid `days` from now, and its key, in PEM.
    pub(crate) fn self_signed(name: &str, days: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.not_after = rcgen::date_time_ymd(2000, 1, 1)
            + std::time::Duration::from_secs(
                (crate::clock::unix_secs() - 946_684_800 + days * 86_400) as u64,
            );
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

#[cfg(test)]
mod tests {
    use super::testing::self_signed;
    use super::*;

    #[test]
    fn a_certificate_and_its_key_are_kept_with_its_subject_and_expiry() {
        let (cert, key) = self_signed("receiver.example", 90);
        let tls = TlsClient::parse(&cert, &key).unwrap();
        assert_eq!(tls.subject, "CN=receiver.example");
        let left = tls.not_after - crate::clock::unix_secs();
        assert!((89 * 86_400..=90 * 86_400).contains(&left), "{left}");
        assert!(!tls.expires_soon(crate::clock::unix_secs()));
        assert_eq!(tls.view()["subject"], "CN=receiver.example");
        assert!(!tls.view().to_string().contains("PRIVATE KEY"));
        assert!(!format!("{tls:?}").contains("PRIVATE KEY"));
        tls.check().unwrap();
        let (soon, soon_key) = self_signed("soon.example", 10);
        let soon = TlsClient::parse(&soon, &soon_key).unwrap();
        assert!(soon.expires_soon(crate::clock::unix_secs()));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (cert, _) = self_signed("a.example", 90);
        let (_, other_key) = self_signed("b.example", 90);
        let why = TlsClient::parse(&cert, &other_key).unwrap_err();
        assert!(
            why.contains("not the key of the first certificate"),
            "{why}"
        );
    }

    #[test]
    fn a_record_whose_subject_is_not_its_certificates_is_refused() {
        let (cert, key) = self_signed("a.example", 90);
        let mut tls = TlsClient::parse(&cert, &key).unwrap();
        tls.subject = "CN=someone.else".into();
        assert!(tls.check().unwrap_err().contains("subject"));
    }

    #[test]
    fn what_is_not_a_certificate_and_its_key_is_refused_naming_the_part() {
        let refused = |cert: &str, key: &str| TlsClient::parse(cert, key).unwrap_err();
        assert!(refused("", "").contains("cert_pem holds no CERTIFICATE"));
        assert!(refused("hello", "").contains("cert_pem"));
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(refused(garbage, "").contains("first certificate does not parse"));
        let long = "x".repeat(MAX_PEM_BYTES + 1);
        assert!(refused(&long, "").contains("at most"));
    }
}
