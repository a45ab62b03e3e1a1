//! Content filters in the API: the `filter` field of create and PATCH, and
//! `POST /v1/applications/{app}/webhooks/filter-check`, which tries one on
//! an event before it is saved.

use hyper::StatusCode;
use serde_json::{Value, json};

use super::context::{AdminState, Call, Reply};
use super::error::ApiError;
use super::http::json_response;
use super::request::{Fields, read_fields};
use crate::filter::{Filter, Variables};

/// `filter`, when present: `null` (none) or a CEL expression that compiles
/// and passes the checks of `crate::filter`.
pub(super) fn valid(fields: &Fields) -> Result<Option<Option<String>>, ApiError> {
    match fields.raw("filter") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(source)) => compiled(source).map(|_| Some(Some(source.clone()))),
        Some(_) => Err(invalid("must be a string (a CEL expression) or null")),
    }
}

fn compiled(source: &str) -> Result<Filter, ApiError> {
    Filter::compile(source).map_err(|e| invalid(e.to_string()))
}

fn invalid(why: impl Into<String>) -> ApiError {
    ApiError::invalid("filter", "invalid_filter", why)
}

/// `POST /v1/applications/{app}/webhooks/filter-check` with `{"filter",
/// "event"}`: `{"matches": true | false}`. The event is an envelope as
/// producers publish it; a missing `application_id` is the path's, a
/// missing `id`, `type` or `timestamp` is empty (or now). A filter that
/// fails on the event (a missing field) does not match, as at fan-out.
pub(super) async fn check(_state: &AdminState, call: Call) -> Reply {
    let fields = read_fields(call.body, &["filter", "event"]).await?;
    let filter = match fields.raw("filter") {
        Some(Value::String(source)) => compiled(source)?,
        None | Some(Value::Null) => return Err(invalid("is required")),
        Some(_) => return Err(invalid("must be a string (a CEL expression)")),
    };
    let Some(Value::Object(event)) = fields.raw("event") else {
        return Err(ApiError::invalid(
            "event",
            "invalid_event",
            "is required: an event envelope, a JSON object",
        ));
    };
    let text = |name: &str| event.get(name).and_then(Value::as_str);
    let variables = Variables::new(
        text("id").unwrap_or_default(),
        text("application_id").unwrap_or(&call.app),
        text("type").unwrap_or_default(),
        event
            .get("timestamp")
            .cloned()
            .unwrap_or_else(|| json!(crate::clock::unix_secs())),
        event.get("content").unwrap_or(&Value::Null),
    );
    let matches = filter.matches(&variables).unwrap_or(false);
    Ok(json_response(
        StatusCode::OK,
        &json!({ "matches": matches }),
    ))
}
