//! TLS of deliveries: the roots trusted (the Mozilla roots built in through
//! `webpki-roots`, plus `WF_EXTRA_CA_FILE`'s), and one connection pool per
//! client certificate (mTLS), so that a connection made with a webhook's
//! certificate only ever carries that certificate's requests.
//!
//! The pools are shared while in use (`shared.rs`): replacing a
//! certificate makes the next prepared copy use a new pool (new
//! connections, the new certificate) while requests in flight finish on
//! the old one, which goes once the last of them drops it.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::subscription::tls_client::Identity;

/// The roots trusted: the built-in ones and `extra` (`WF_EXTRA_CA_FILE`'s,
/// checked when the settings were read).
pub(crate) fn roots(extra: &[CertificateDer<'static>]) -> RootCertStore {
    let mut roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    roots.add_parsable_certificates(extra.iter().cloned());
    roots
}

/// A client configuration trusting `roots`, presenting `identity` if any.
pub(super) fn config(
    roots: &Arc<RootCertStore>,
    identity: Option<Identity>,
) -> Result<ClientConfig, String> {
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots.clone());
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("client certificate not usable: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn the_extra_roots_are_trusted_besides_the_built_in_ones() {
        use crate::subscription::tls_client::testing::self_signed;
        let built_in = roots(&[]).len();
        assert!(built_in > 100);
        let (cert, _) = self_signed("private-ca.example", 90);
        let cert = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        assert_eq!(roots(&[cert]).len(), built_in + 1);
    }
}
