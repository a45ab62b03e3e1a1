//! What a handler is given: the state every request shares, and one call
//! (who is asking, the path's parameters, the query, `If-Match`, the body).
//! Handlers import this, never the router.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper::body::Incoming;

use super::auth::Principal;
use super::error::ApiError;
use super::precondition::IfMatch;
use crate::config::Redacted;
use crate::dead_letter::DeadLetters;
use crate::delivery::{DeliveryClient, Endpoints, Lifecycle, TargetPolicy};
use crate::event::Catalogue;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::subscription::{History, Store};

/// A handler's answer.
pub(crate) type Reply = Result<Response<Full<Bytes>>, ApiError>;

/// Everything handlers share.
pub(crate) struct AdminState {
    /// `WF_ADMIN_TOKEN`.
    pub operator_token: Option<Redacted<String>>,
    /// Whether the `/v1` API is served (`api` role).
    pub api_enabled: bool,
    /// Redis store.
    pub store: Store,
    /// Event types.
    pub catalogue: Arc<Catalogue>,
    /// For the test call.
    pub client: DeliveryClient,
    /// Callback URL rules.
    pub policy: TargetPolicy,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub health: Arc<Health>,
    /// Dead letters.
    pub dead_letters: Arc<DeadLetters>,
    /// This process's per-webhook breakers, told of a test call's result.
    pub endpoints: Arc<Endpoints>,
    /// Disabling and operational events.
    pub lifecycle: Arc<Lifecycle>,
    /// The webhooks' attempt history and health.
    pub history: History,
    /// Which webhooks have a backlog, and how deep each is.
    pub backlogs: crate::backlog::Registry,
}

/// One request, as the route table hands it to a handler: its access rule
/// has already been checked.
pub(crate) struct Call {
    /// Who is asking (`None` on public routes).
    pub who: Option<Principal>,
    /// The `{app}` path parameter, if the route has one.
    pub app: String,
    /// The `{id}` path parameter, if the route has one.
    pub id: String,
    /// The raw query string.
    pub query: Option<String>,
    /// The `If-Match` header.
    pub if_match: IfMatch,
    /// The request body, unread.
    pub body: Incoming,
}
