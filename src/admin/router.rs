//! Routes requests to handlers; every error, including unknown paths (404)
//! and wrong methods (405), is a JSON error.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::auth::{self, Principal};
use super::error::ApiError;
use super::precondition::IfMatch;
use super::{dashboard, dead_letters, webhooks};
use crate::config::Redacted;
use crate::dead_letter::DeadLetters;
use crate::delivery::{DeliveryClient, Endpoints, TargetPolicy};
use crate::event::Catalogue;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::subscription::Store;

/// Everything handlers share.
pub struct AdminState {
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
}

/// A JSON response with `status`.
pub fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// An empty 204.
pub fn no_content() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// Handles one request.
pub async fn route(state: Arc<AdminState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    dispatch(&state, req).await.unwrap_or_else(|e| e.response())
}

async fn dispatch(
    state: &AdminState,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    match segments.as_slice() {
        ["healthz"] => only(&method, Method::GET, "GET")
            .map(|_| json_response(StatusCode::OK, &json!({"status": "ok"}))),
        ["readyz"] => only(&method, Method::GET, "GET").map(|_| readyz(state)),
        ["metrics"] => only(&method, Method::GET, "GET").map(|_| metrics(state)),
        ["dashboard", rest @ ..] if state.api_enabled => {
            only(&method, Method::GET, "GET")?;
            if !path.starts_with("/dashboard/") {
                return Ok(dashboard::redirect());
            }
            Ok(dashboard::asset(rest)
                .unwrap_or_else(|| dashboard::secured(ApiError::not_found("route").response())))
        }
        ["v1", rest @ ..] if state.api_enabled => api(state, req, &method, rest).await,
        _ => Err(ApiError::not_found("route")),
    }
}

fn only(method: &Method, expected: Method, allowed: &'static str) -> Result<(), ApiError> {
    if *method == expected {
        Ok(())
    } else {
        Err(ApiError::method_not_allowed(allowed))
    }
}

async fn api(
    state: &AdminState,
    req: Request<Incoming>,
    method: &Method,
    rest: &[&str],
) -> Result<Response<Full<Bytes>>, ApiError> {
    // Unknown routes are 404 before authentication: nothing to protect there.
    let known = matches!(
        rest,
        ["event-types"]
            | ["me"]
            | ["applications", _, "tokens"]
            | ["applications", _, "webhooks"]
            | ["applications", _, "webhooks", _]
            | ["applications", _, "webhooks", _, "rotate-secret" | "test"]
            | ["dead-letters"]
            | ["dead-letters", _]
            | ["dead-letters", _, "replay"]
    );
    if !known {
        return Err(ApiError::not_found("route"));
    }
    let query = req.uri().query().map(str::to_string);
    let if_match = IfMatch::from_headers(req.headers());
    let principal =
        auth::authenticate(req.headers(), state.operator_token.as_ref(), &state.store).await?;
    let m = method.clone();
    match rest {
        ["event-types"] => {
            only(&m, Method::GET, "GET")?;
            Ok(json_response(
                StatusCode::OK,
                &json!(state.catalogue.entries()),
            ))
        }
        ["me"] => {
            only(&m, Method::GET, "GET")?;
            Ok(json_response(StatusCode::OK, &principal.view()))
        }
        ["applications", app, "tokens"] => {
            only(&m, Method::POST, "POST")?;
            webhooks::create_token(state, &principal, app, req.into_body()).await
        }
        ["applications", app, "webhooks"] => match m {
            Method::GET => webhooks::list(state, &principal, app).await,
            Method::POST => webhooks::create(state, &principal, app, req.into_body()).await,
            _ => Err(ApiError::method_not_allowed("GET, POST")),
        },
        ["applications", app, "webhooks", id] => match m {
            Method::GET => webhooks::get(state, &principal, app, id).await,
            Method::PATCH => {
                webhooks::update(state, &principal, app, id, &if_match, req.into_body()).await
            }
            Method::DELETE => webhooks::delete(state, &principal, app, id, &if_match).await,
            _ => Err(ApiError::method_not_allowed("GET, PATCH, DELETE")),
        },
        ["applications", app, "webhooks", id, action] => {
            only(&m, Method::POST, "POST")?;
            if *action == "test" {
                webhooks::test(state, &principal, app, id).await
            } else {
                webhooks::rotate(state, &principal, app, id, &if_match).await
            }
        }
        ["dead-letters"] => {
            only(&m, Method::GET, "GET")?;
            dead_letters::list(state, &principal, query.as_deref()).await
        }
        ["dead-letters", "replay"] => {
            only(&m, Method::POST, "POST")?;
            dead_letters::replay_matching(state, &principal, req.into_body()).await
        }
        ["dead-letters", id] => match m {
            Method::GET => dead_letters::show(state, &principal, id).await,
            Method::DELETE => dead_letters::discard(state, &principal, id).await,
            _ => Err(ApiError::method_not_allowed("GET, DELETE")),
        },
        ["dead-letters", id, "replay"] => {
            only(&m, Method::POST, "POST")?;
            dead_letters::replay(state, &principal, id).await
        }
        _ => Err(ApiError::not_found("route")),
    }
}

fn readyz(state: &AdminState) -> Response<Full<Bytes>> {
    match state.health.not_ready_reason() {
        None => json_response(StatusCode::OK, &json!({"status": "ready"})),
        Some(reason) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", reason).response()
        }
    }
}

fn metrics(state: &AdminState) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(state.metrics.render())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// Checks the caller may act on `app` (`None` = read, `Some(Admin)` = write).
pub fn authorize(
    principal: &Principal,
    app: &str,
    need: Option<auth::Role>,
) -> Result<(), ApiError> {
    principal.authorize(app, need)?;
    if !crate::event::is_valid_application_id(app) {
        return Err(ApiError::invalid(
            "application_id",
            "invalid_application_id",
            "must be 1-128 characters of [A-Za-z0-9_.-]",
        ));
    }
    Ok(())
}
