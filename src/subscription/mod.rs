//! Subscriptions: the webhook records in Redis, API tokens, the event-id
//! marker, the attempt history, and the in-process cache the fan-out and
//! delivery paths read from. (Ordering's state is in `crate::ordering`.)

pub mod auth;
mod cache;
mod cipher;
pub mod headers;
mod history;
mod kept;
mod markers;
pub mod rate_limit;
mod redis_pool;
mod store;
pub mod tls_client;
mod webhook;

pub use auth::Auth;
pub(crate) use cache::SubscriptionCache;
pub use cipher::CipherError;
pub(crate) use history::{Attempt, AttemptFilter, History, Kind};
pub(crate) use kept::KeptConnection;
pub(crate) use markers::EventMarkers;
pub(crate) use markers::{MARKER_TTL, Marker};
pub use rate_limit::RateLimit;
pub use redis_pool::PoolSetupError;
pub use store::{Store, StoreError, Write};
pub use tls_client::TlsClient;
pub use webhook::StoredSecret;
pub use webhook::{Ordering, Webhook};
pub(crate) use webhook::{new_secret, rfc3339, rfc3339_millis};
