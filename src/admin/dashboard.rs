//! The dashboard: a static page (HTML, CSS, vanilla JS) embedded in the
//! binary and served at `/dashboard/`. It is a client of the `/v1` API with
//! the token the user pastes; these routes themselves need no token and
//! serve nothing but the three files.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, LOCATION, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{Response, StatusCode};

use super::error::ApiError;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

/// Scripts, styles and API calls from this origin only; no inline script or
/// style, no frames, no plugins, no form posts elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Serves `path` (`/dashboard` or under `/dashboard/`): GET only; the
/// redirect, a file, or a 404 with the page's security headers.
pub(super) fn serve(method: &hyper::Method, path: &str) -> Result<Response<Full<Bytes>>, ApiError> {
    if method != hyper::Method::GET {
        return Err(ApiError::method_not_allowed("GET".to_string()));
    }
    let Some(rest) = path.strip_prefix("/dashboard/") else {
        return Ok(redirect());
    };
    let rest: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    Ok(asset(&rest).unwrap_or_else(|| secured(ApiError::not_found("route").response())))
}

/// The file at `rest` (the path segments after `dashboard`), if any.
pub(crate) fn asset(rest: &[&str]) -> Option<Response<Full<Bytes>>> {
    let (body, content_type) = match rest {
        [] | [""] | ["index.html"] => (INDEX, "text/html; charset=utf-8"),
        ["app.js"] => (SCRIPT, "text/javascript; charset=utf-8"),
        ["style.css"] => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure(h);
    Some(r)
}

/// `/dashboard` without the slash: the page's relative links need it.
pub(super) fn redirect() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    r.headers_mut()
        .insert(LOCATION, HeaderValue::from_static("/dashboard/"));
    secure(r.headers_mut());
    r
}

/// `response` with the page's security headers (e.g. a 404 under `/dashboard/`).
pub(crate) fn secured(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    secure(response.headers_mut());
    response
}

fn secure(h: &mut hyper::HeaderMap) {
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_no_inline_script_and_nothing_from_elsewhere() {
        assert!(!INDEX.contains("<script>"), "inline script");
        assert!(!INDEX.contains(" style="), "inline style");
        for external in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
            assert!(!INDEX.contains(external), "loads {external}…");
        }
        assert!(
            !SCRIPT.contains("innerHTML"),
            "API data must be set as text"
        );
    }

    #[test]
    fn every_file_carries_the_security_headers() {
        for path in [&[][..], &["app.js"], &["style.css"]] {
            let r = asset(path).expect("served");
            assert_eq!(r.headers()[X_FRAME_OPTIONS], "DENY");
            assert!(
                r.headers()[CONTENT_SECURITY_POLICY]
                    .to_str()
                    .unwrap()
                    .contains("script-src 'self'")
            );
        }
        assert!(asset(&["secrets.txt"]).is_none());
    }
}
