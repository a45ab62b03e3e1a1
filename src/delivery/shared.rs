//! What deliveries share while someone holds it, found by a digest of what
//! makes it: a connection pool per client certificate (`tls.rs`), a token
//! cache per webhook's OAuth2 credentials (`oauth.rs`). Prepared webhooks
//! hold them (`prepared.rs`); one goes once its last holder drops it, so a
//! replaced certificate or secret gets a new one while work in flight
//! finishes on the old.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use sha2::{Digest, Sha256};

/// Values in use, by digest.
pub(super) struct Shared<V> {
    map: Mutex<HashMap<[u8; 32], Weak<V>>>,
}

impl<V> Default for Shared<V> {
    fn default() -> Self {
        Shared {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<V> Shared<V> {
    /// The value of `digest` in use, or a new one from `make`.
    pub(super) fn get(
        &self,
        digest: [u8; 32],
        make: impl FnOnce() -> Result<V, String>,
    ) -> Result<Arc<V>, String> {
        let mut map = self.lock();
        if let Some(value) = map.get(&digest).and_then(Weak::upgrade) {
            return Ok(value);
        }
        let value = Arc::new(make()?);
        map.retain(|_, v| v.strong_count() > 0);
        map.insert(digest, Arc::downgrade(&value));
        Ok(value)
    }

    /// The values in use now.
    pub(super) fn in_use(&self) -> Vec<Arc<V>> {
        self.lock().values().filter_map(Weak::upgrade).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Weak<V>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The digest of `parts`, each length-prefixed (no two lists share one).
pub(super) fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_per_digest_while_it_is_held() {
        let shared: Shared<u32> = Shared::default();
        let made = std::cell::Cell::new(0);
        let make = || -> Result<u32, String> {
            made.set(made.get() + 1);
            Ok(made.get())
        };
        let (a, b) = (digest(&[b"a"]), digest(&[b"b"]));
        let first = shared.get(a, make).unwrap();
        let again = shared.get(a, make).unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the same digest, the same value"
        );
        let other = shared.get(b, make).unwrap();
        assert_eq!((*first, *other, shared.in_use().len()), (1, 2, 2));
        drop((first, again));
        assert_eq!(shared.in_use().len(), 1, "a value no one holds goes");
        assert_eq!(*shared.get(a, make).unwrap(), 3, "made again once needed");
        assert!(shared.get(digest(&[b"c"]), || Err("no".into())).is_err());
        assert_ne!(digest(&[b"ab", b"c"]), digest(&[b"a", b"bc"]));
    }
}
