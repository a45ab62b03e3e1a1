//! API errors: `{"error": {"code", "message"}}` with a fitting status; a
//! validation error also names the offending `field`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::subscription::StoreError;

/// An error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// snake_case code.
    pub code: &'static str,
    /// Human-readable message (never contains secrets).
    pub message: String,
    /// The request field at fault, for validation errors.
    pub field: Option<&'static str>,
    /// The methods a 405 allows, sent as the `Allow` header.
    pub allow: Option<String>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            allow: None,
        }
    }

    /// 400 for a bad field: code `invalid_<field>`, message prefixed by the field.
    pub(super) fn invalid(
        field: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: format!("{field}: {}", message.into()),
            field: Some(field),
            allow: None,
        }
    }

    /// 401.
    pub(super) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid bearer token",
        )
    }

    /// 403.
    pub(super) fn forbidden(message: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub(super) fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 412: `If-Match` names a revision that is no longer the webhook's.
    pub(super) fn precondition_failed() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "the webhook changed since the ETag in If-Match was read; read it again",
        )
    }

    /// 405, naming the allowed methods in the message and the `Allow` header.
    pub(super) fn method_not_allowed(allowed: String) -> Self {
        ApiError {
            allow: Some(allowed.clone()),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("method not allowed; allowed: {allowed}"),
            )
        }
    }

    /// The JSON response.
    pub(super) fn response(&self) -> Response<Full<Bytes>> {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(field) = self.field {
            error["field"] = json!(field);
        }
        let mut r = super::http::json_response(self.status, &json!({ "error": error }));
        if let Some(value) = self
            .allow
            .as_deref()
            .and_then(|a| HeaderValue::from_str(a).ok())
        {
            r.headers_mut().insert(ALLOW, value);
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::LimitReached => Self::new(
                StatusCode::CONFLICT,
                "webhook_limit_reached",
                "this application already has the maximum of 10 webhooks",
            ),
            other => {
                tracing::error!(error = %crate::logging::Chain(&other), "store error");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the webhook store is unavailable; retry shortly",
                )
            }
        }
    }
}
