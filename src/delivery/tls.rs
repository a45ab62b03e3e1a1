//! TLS of deliveries: the roots trusted (the Mozilla roots built in through
//! `webpki-roots`, plus `WF_EXTRA_CA_FILE`'s), and one connection pool per
//! client certificate (mTLS), so that a connection made with a webhook's
//! certificate only ever carries that certificate's requests.
//!
//! A pool lives as long as a prepared webhook holds it (`prepared.rs`):
//! replacing a certificate makes the next prepared copy use a new pool
//! (new connections, the new certificate) while requests in flight finish
//! on the old one, which goes once the last of them drops it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use sha2::{Digest, Sha256};

use crate::subscription::TlsClient;
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

/// The pools of the client certificates in use, by the certificate's and
/// key's digest (two webhooks with the same certificate share one), with
/// when each certificate expires.
pub(super) struct Identities<C> {
    pools: Mutex<HashMap<[u8; 32], InUse<C>>>,
}

/// A pool while someone holds it, and its certificate's `notAfter`.
type InUse<C> = (Weak<C>, i64);

impl<C> Default for Identities<C> {
    fn default() -> Self {
        Identities {
            pools: Mutex::new(HashMap::new()),
        }
    }
}

impl<C> Identities<C> {
    /// The pool of `tls`'s certificate, made by `make` if none is in use.
    pub(super) fn get(
        &self,
        tls: &TlsClient,
        make: impl FnOnce(Identity) -> Result<C, String>,
    ) -> Result<Arc<C>, String> {
        let digest: [u8; 32] = Sha256::new()
            .chain_update(tls.cert_pem.as_bytes())
            .chain_update([0])
            .chain_update(tls.key_pem.0.as_bytes())
            .finalize()
            .into();
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = pools.get(&digest).and_then(|(p, _)| p.upgrade()) {
            return Ok(pool);
        }
        let pool = Arc::new(make(tls.identity()?)?);
        pools.retain(|_, (p, _)| p.strong_count() > 0);
        pools.insert(digest, (Arc::downgrade(&pool), tls.not_after));
        Ok(pool)
    }

    /// The certificates in use that expire within 30 days of `now` (Unix
    /// seconds), or have expired.
    pub(super) fn expiring(&self, now: i64) -> usize {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let soon = now + crate::subscription::tls_client::EXPIRY_WARNING_SECS;
        pools
            .values()
            .filter(|(p, not_after)| p.strong_count() > 0 && *not_after <= soon)
            .count()
    }

    /// Pools in use.
    #[cfg(test)]
    fn in_use(&self) -> usize {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.values().filter(|(p, _)| p.strong_count() > 0).count()
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

    #[test]
    fn one_pool_per_certificate_while_it_is_in_use() {
        use crate::subscription::tls_client::testing::self_signed;
        let identities: Identities<u32> = Identities::default();
        let tls = |name: &str, days: i64| {
            let (cert, key) = self_signed(name, days);
            TlsClient::parse(&cert, &key).unwrap()
        };
        let (a, b) = (tls("a.example", 90), tls("b.example", 10));
        let made = std::cell::Cell::new(0);
        let make = |_: Identity| -> Result<u32, String> {
            made.set(made.get() + 1);
            Ok(made.get())
        };
        let first = identities.get(&a, make).unwrap();
        let again = identities.get(&a, make).unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the same certificate, the same pool"
        );
        let other = identities.get(&b, make).unwrap();
        assert_eq!((*first, *other, identities.in_use()), (1, 2, 2));
        let now = crate::clock::unix_secs();
        assert_eq!(identities.expiring(now), 1, "b expires in 10 days");
        assert_eq!(identities.expiring(now + 80 * 86_400), 2);
        drop((first, again));
        assert_eq!(identities.in_use(), 1, "a pool no one holds goes");
        let renewed = identities.get(&a, make).unwrap();
        assert_eq!(*renewed, 3, "a certificate used again gets a new pool");
        let mut broken = a.clone();
        broken.key_pem.0 = "not a key".into();
        assert!(identities.get(&broken, make).is_err());
    }
}
