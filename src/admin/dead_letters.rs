//! Dead-letter endpoints (operator only): list with filters and a cursor,
//! show, replay one or all matching, discard.

use hyper::StatusCode;
use serde_json::json;

use super::context::{AdminState, Call, Reply};
use super::error::ApiError;
use super::http::{json_response, no_content};
use super::request::{limit_param, read_fields, unknown_parameter};
use crate::dead_letter::{DeadLetterError, Filter};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

impl From<DeadLetterError> for ApiError {
    fn from(e: DeadLetterError) -> Self {
        match e {
            DeadLetterError::NotFound => ApiError::not_found("dead letter"),
            DeadLetterError::WebhookDeleted => {
                ApiError::new(StatusCode::CONFLICT, "webhook_deleted", e.to_string())
            }
            DeadLetterError::Store(s) => s.into(),
            other => {
                tracing::error!(error = %crate::logging::Chain(&other), "dead letter operation failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "broker_unavailable",
                    "RabbitMQ is unavailable; retry shortly",
                )
            }
        }
    }
}

/// `GET /v1/dead-letters?application_id=&webhook_id=&type=&limit=&cursor=`.
pub(super) async fn list(state: &AdminState, call: Call) -> Reply {
    let query = call.query.as_deref();
    let mut filter = Filter::default();
    let (mut limit, mut cursor) = (DEFAULT_LIMIT, None);
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let value = value.into_owned();
        let keep = |v: String| (!v.is_empty()).then_some(v);
        match key.as_ref() {
            "application_id" => filter.application_id = keep(value),
            "webhook_id" => filter.webhook_id = keep(value),
            "type" => filter.event_type = keep(value),
            "limit" => limit = limit_param(&value, MAX_LIMIT)?,
            "cursor" if value.is_empty() => {}
            "cursor" => {
                cursor = Some(value.parse::<u64>().map_err(|_| {
                    ApiError::invalid(
                        "cursor",
                        "invalid_cursor",
                        "must be a next_cursor returned by a previous page",
                    )
                })?)
            }
            other => {
                return Err(unknown_parameter(
                    other,
                    "application_id, webhook_id, type, limit, cursor",
                ));
            }
        }
    }
    let page = state.dead_letters.page(&filter, cursor, limit).await?;
    let items: Vec<_> = page.items.iter().map(|(id, d)| d.view(id)).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"items": items, "next_cursor": page.next_cursor}),
    ))
}

/// `GET /v1/dead-letters/{id}`.
pub(super) async fn show(state: &AdminState, call: Call) -> Reply {
    let id = call.id.as_str();
    let letter = state.dead_letters.get(id).await?;
    Ok(json_response(StatusCode::OK, &letter.view(id)))
}

/// `POST /v1/dead-letters/{id}/replay`.
pub(super) async fn replay(state: &AdminState, call: Call) -> Reply {
    let id = call.id.as_str();
    state.dead_letters.replay(id).await?;
    tracing::info!(dead_letter_id = id, "dead letter replayed");
    Ok(json_response(
        StatusCode::OK,
        &json!({"id": id, "replayed": 1}),
    ))
}

/// `DELETE /v1/dead-letters/{id}`.
pub(super) async fn discard(state: &AdminState, call: Call) -> Reply {
    let id = call.id.as_str();
    state.dead_letters.discard(id).await?;
    tracing::info!(dead_letter_id = id, "dead letter discarded");
    Ok(no_content())
}

/// `POST /v1/dead-letters/replay` `{"application_id"?, "webhook_id"?,
/// "type"?, "since"?, "until"?}`: in the order the events were first
/// received, paced at `WF_REPLAY_RATE` (the answer comes when all are
/// replayed).
pub(super) async fn replay_matching(state: &AdminState, call: Call) -> Reply {
    let fields = read_fields(
        call.body,
        &["application_id", "webhook_id", "type", "since", "until"],
    )
    .await?;
    let filter = Filter {
        application_id: fields.string("application_id", "invalid_application_id")?,
        webhook_id: fields.string("webhook_id", "invalid_webhook_id")?,
        event_type: fields.string("type", "invalid_type")?,
        since_ms: fields.time("since", "invalid_since")?,
        until_ms: fields.time("until", "invalid_until")?,
    };
    let result = state.dead_letters.replay_matching(&filter).await?;
    tracing::info!(replayed = result.replayed, "dead letters replayed");
    Ok(json_response(
        StatusCode::OK,
        &json!({"replayed": result.replayed, "skipped_webhook_deleted": result.skipped_webhook_deleted}),
    ))
}
