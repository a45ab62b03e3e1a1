//! The small read-only answers: liveness, readiness, metrics, the event
//! catalogue, and who the caller is.

use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::json;

use super::context::{AdminState, Call, Reply};
use super::error::ApiError;
use super::http::json_response;

/// `GET /healthz`: the process is alive.
pub(super) async fn healthz(_: &AdminState, _: Call) -> Reply {
    Ok(json_response(StatusCode::OK, &json!({"status": "ok"})))
}

/// `GET /readyz`: 200, or 503 with the reason.
pub(super) async fn readyz(state: &AdminState, _: Call) -> Reply {
    match state.health.not_ready_reason() {
        None => Ok(json_response(StatusCode::OK, &json!({"status": "ready"}))),
        Some(reason) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            reason,
        )),
    }
}

/// `GET /metrics`: the Prometheus text exposition.
pub(super) async fn metrics(state: &AdminState, _: Call) -> Reply {
    let mut r = Response::new(state.metrics.render().into());
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(r)
}

/// `GET /v1/event-types`.
pub(crate) async fn event_types(state: &AdminState, _: Call) -> Reply {
    Ok(json_response(
        StatusCode::OK,
        &json!(state.catalogue.entries()),
    ))
}

/// `GET /v1/me`: the caller's role and application.
pub(super) async fn me(_: &AdminState, call: Call) -> Reply {
    let who = call.who.ok_or_else(ApiError::unauthorized)?;
    Ok(json_response(StatusCode::OK, &who.view()))
}
