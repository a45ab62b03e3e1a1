//! Serves a request from the route table (`routes.rs`): finds the route
//! (unknown paths 404, wrong methods 405), checks its access rule, hands the
//! handler one `Call`. Every error is a JSON error. The dashboard's static
//! files are served by prefix, before the table.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

use super::auth::{self, Principal, Role};
use super::context::{AdminState, Call, Reply};
use super::dashboard;
use super::error::ApiError;
use super::precondition::IfMatch;
use super::routes::{Access, Found, ROUTES, Route, find};

/// Handles one request.
pub(super) async fn route(state: Arc<AdminState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    dispatch(&state, req).await.unwrap_or_else(|e| e.response())
}

async fn dispatch(state: &AdminState, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_string();
    if state.api_enabled && (path == "/dashboard" || path.starts_with("/dashboard/")) {
        return dashboard::serve(req.method(), &path);
    }
    let (route, params) = match find(ROUTES, req.method(), &path) {
        Found::Route(route, params) => (route, params),
        Found::Method(allowed) => return Err(ApiError::method_not_allowed(allowed.join(", "))),
        Found::Nothing => return Err(ApiError::not_found("route")),
    };
    // Without the `api` role only the public routes (health, metrics) exist.
    if route.access != Access::Public && !state.api_enabled {
        return Err(ApiError::not_found("route"));
    }
    let who = allowed(state, route, &req, &params.app).await?;
    let call = Call {
        who,
        query: req.uri().query().map(str::to_string),
        if_match: IfMatch::from_headers(req.headers()),
        app: params.app,
        id: params.id,
        body: req.into_body(),
    };
    route.handle(state, call).await
}

/// Checks the route's access rule; the caller, if it has to be one.
async fn allowed(
    state: &AdminState,
    route: &Route,
    req: &Request<Incoming>,
    app: &str,
) -> Result<Option<Principal>, ApiError> {
    if route.access == Access::Public {
        return Ok(None);
    }
    let who =
        auth::authenticate(req.headers(), state.operator_token.as_ref(), &state.store).await?;
    match route.access {
        Access::Public | Access::Token => {}
        Access::Operator => who.operator_only()?,
        Access::Member => who.authorize(app, None)?,
        Access::Admin => who.authorize(app, Some(Role::Admin))?,
    }
    if route.path.contains("{app}") && !crate::event::is_valid_application_id(app) {
        return Err(ApiError::invalid(
            "application_id",
            "invalid_application_id",
            "must be 1-128 characters of [A-Za-z0-9_.-]",
        ));
    }
    Ok(Some(who))
}

/// The (method, path pattern) of every operation served, for the test that
/// holds the OpenAPI document to the table.
pub fn operations() -> Vec<(&'static str, &'static str)> {
    ROUTES.iter().map(|r| (r.method.as_str(), r.path)).collect()
}
