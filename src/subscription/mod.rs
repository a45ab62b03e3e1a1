//! Subscriptions: the webhook records in Redis, API tokens, the event-id
//! marker, and the in-process cache the fan-out and delivery paths read from.

mod cache;
mod cipher;
mod markers;
mod store;
mod webhook;

pub use cache::SubscriptionCache;
pub use cipher::{CipherError, SecretCipher};
pub use markers::EventMarkers;
pub use store::{Keys, Marker, Store, StoreError, TokenRecord, Write};
pub use webhook::{StoredSecret, Webhook, new_secret, rfc3339};
