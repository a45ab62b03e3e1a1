//! The route table: every operation of the HTTP API declared once, with its
//! method, path pattern, who may call it and its handler. The router serves
//! from it (unknown paths 404, wrong methods 405), and the OpenAPI test reads
//! it, so the document and what is served cannot drift apart.

use std::future::Future;
use std::pin::Pin;

use hyper::Method;

use super::context::{AdminState, Call, Reply};
use super::{dead_letters, filters, history, replay, status, tokens, webhooks};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone, without a token; served whatever the process's roles.
    Public,
    /// Any valid token.
    Token,
    /// The `{app}` application's admins and members, and the operator.
    Member,
    /// The `{app}` application's admins, and the operator.
    Admin,
    /// The operator only.
    Operator,
}

/// A handler: an async function of the shared state and one call.
pub(crate) type Handler =
    for<'a> fn(&'a AdminState, Call) -> Pin<Box<dyn Future<Output = Reply> + Send + 'a>>;

/// One operation.
pub(crate) struct Route {
    /// Its method.
    pub method: Method,
    /// Its path, with `{app}` and `{id}` for parameters, as in the OpenAPI
    /// document.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    handler: Handler,
}

impl Route {
    /// Runs the handler.
    pub(crate) fn handle<'a>(
        &self,
        state: &'a AdminState,
        call: Call,
    ) -> Pin<Box<dyn Future<Output = Reply> + Send + 'a>> {
        (self.handler)(state, call)
    }
}

/// A boxed `Handler` from an async handler function.
macro_rules! handler {
    ($f:path) => {{
        fn boxed(
            state: &AdminState,
            call: Call,
        ) -> Pin<Box<dyn Future<Output = Reply> + Send + '_>> {
            Box::pin($f(state, call))
        }
        boxed as Handler
    }};
}

macro_rules! route {
    ($method:ident $path:literal, $access:ident, $f:path) => {
        Route {
            method: Method::$method,
            path: $path,
            access: Access::$access,
            handler: handler!($f),
        }
    };
}

/// Every operation served. (The dashboard's static files under
/// `/dashboard/` are served by prefix and are not part of the API.)
pub(crate) static ROUTES: &[Route] = &[
    route!(GET "/healthz", Public, status::healthz),
    route!(GET "/readyz", Public, status::readyz),
    route!(GET "/metrics", Public, status::metrics),
    route!(GET "/v1/event-types", Token, status::event_types),
    route!(GET "/v1/me", Token, status::me),
    route!(POST "/v1/applications/{app}/tokens", Operator, tokens::create_token),
    route!(GET "/v1/applications/{app}/webhooks", Member, webhooks::list),
    route!(POST "/v1/applications/{app}/webhooks", Admin, webhooks::create),
    route!(POST "/v1/applications/{app}/webhooks/filter-check", Admin, filters::check),
    route!(GET "/v1/applications/{app}/webhooks/{id}", Member, webhooks::get),
    route!(PATCH "/v1/applications/{app}/webhooks/{id}", Admin, webhooks::update),
    route!(DELETE "/v1/applications/{app}/webhooks/{id}", Admin, webhooks::delete),
    route!(POST "/v1/applications/{app}/webhooks/{id}/rotate-secret", Admin, webhooks::rotate),
    route!(POST "/v1/applications/{app}/webhooks/{id}/test", Admin, webhooks::test),
    route!(POST "/v1/applications/{app}/webhooks/{id}/replay", Admin, replay::start),
    route!(GET "/v1/applications/{app}/webhooks/{id}/replay", Member, replay::progress),
    route!(GET "/v1/applications/{app}/webhooks/{id}/attempts", Member, history::attempts),
    route!(GET "/v1/applications/{app}/webhooks/{id}/health", Member, history::health),
    route!(GET "/v1/dead-letters", Operator, dead_letters::list),
    route!(POST "/v1/dead-letters/replay", Operator, dead_letters::replay_matching),
    route!(GET "/v1/dead-letters/{id}", Operator, dead_letters::show),
    route!(DELETE "/v1/dead-letters/{id}", Operator, dead_letters::discard),
    route!(POST "/v1/dead-letters/{id}/replay", Operator, dead_letters::replay),
];

/// What the path parameters of a matched route hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Params {
    /// `{app}`.
    pub app: String,
    /// `{id}`.
    pub id: String,
}

/// How a request's method and path meet the table.
pub(crate) enum Found<'r> {
    /// This route, with these parameters.
    Route(&'r Route, Params),
    /// The path is served, but not with this method: these are.
    Method(Vec<&'r str>),
    /// No route has this path.
    Nothing,
}

/// The route for `method` and `path` (slashes at either end ignored). When
/// several patterns match, the one with fewer parameters wins
/// (`/v1/dead-letters/replay` before `/v1/dead-letters/{id}`).
pub(super) fn find<'r>(routes: &'r [Route], method: &Method, path: &str) -> Found<'r> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut matched: Vec<(&Route, Params, usize)> = routes
        .iter()
        .filter_map(|r| {
            let (params, count) = matches(r.path, &segments)?;
            Some((r, params, count))
        })
        .collect();
    if matched.is_empty() {
        return Found::Nothing;
    }
    matched.sort_by_key(|(_, _, count)| *count);
    if let Some(i) = matched.iter().position(|(r, _, _)| r.method == method) {
        let (route, params, _) = matched.swap_remove(i);
        return Found::Route(route, params);
    }
    let mut allowed: Vec<&'r str> = matched.iter().map(|(r, _, _)| r.method.as_str()).collect();
    allowed.sort();
    allowed.dedup();
    Found::Method(allowed)
}

/// The parameters (and how many) if `pattern` matches `segments`.
fn matches(pattern: &str, segments: &[&str]) -> Option<(Params, usize)> {
    let parts: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut params = Params::default();
    let mut count = 0;
    for (part, segment) in parts.iter().zip(segments) {
        match *part {
            "{app}" => params.app = segment.to_string(),
            "{id}" => params.id = segment.to_string(),
            literal if literal == *segment => continue,
            _ => return None,
        }
        count += 1;
    }
    Some((params, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &Method, path: &str) -> Option<(String, Params)> {
        match find(ROUTES, method, path) {
            Found::Route(r, p) => Some((format!("{} {}", r.method, r.path), p)),
            _ => None,
        }
    }

    #[test]
    fn paths_find_their_route_and_parameters() {
        let (r, p) = route(&Method::PATCH, "/v1/applications/a1/webhooks/wh_1/").unwrap();
        assert_eq!(r, "PATCH /v1/applications/{app}/webhooks/{id}");
        assert_eq!((p.app.as_str(), p.id.as_str()), ("a1", "wh_1"));
        let (r, _) = route(&Method::POST, "/v1/dead-letters/replay").unwrap();
        assert_eq!(r, "POST /v1/dead-letters/replay", "the literal wins");
        let (r, p) = route(&Method::GET, "/v1/dead-letters/replay").unwrap();
        assert_eq!(
            (r.as_str(), p.id.as_str()),
            ("GET /v1/dead-letters/{id}", "replay")
        );
    }

    #[test]
    fn unknown_paths_and_methods() {
        let fifth = "/v1/applications/a/webhooks/wh_1/unknown";
        assert!(matches!(find(ROUTES, &Method::POST, fifth), Found::Nothing));
        assert!(matches!(
            find(ROUTES, &Method::GET, "/v2/me"),
            Found::Nothing
        ));
        match find(ROUTES, &Method::PUT, "/v1/applications/a/webhooks/wh_1") {
            Found::Method(allowed) => assert_eq!(allowed, ["DELETE", "GET", "PATCH"]),
            _ => panic!("a known path with another method is a 405"),
        }
    }

    #[test]
    fn every_route_is_declared_once() {
        let mut seen: Vec<(String, &str)> = ROUTES
            .iter()
            .map(|r| (r.method.to_string(), r.path))
            .collect();
        seen.sort();
        let before = seen.len();
        seen.dedup();
        assert_eq!(seen.len(), before);
    }
}
