//! A webhook's delivery history and health:
//! `GET /v1/applications/{app}/webhooks/{id}/attempts` (newest first, with
//! filters and a cursor) and `GET .../health` (success ratios, durations,
//! last success and failure, breaker, jobs waiting in retry tiers and in the
//! backlog, and the last 24 h per 5-minute bucket and the last 7 days per
//! hour for the dashboard's chart).

use hyper::StatusCode;
use serde_json::json;

use super::context::{AdminState, Call, Reply};
use super::error::ApiError;
use super::http::json_response;
use super::request::{limit_param, unknown_parameter};
use super::webhooks::find;
use crate::subscription::{AttemptFilter, rfc3339_millis};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

/// `GET /v1/applications/{app}/webhooks/{id}/attempts?status=&event_id=&type=&limit=&cursor=`.
pub(super) async fn attempts(state: &AdminState, call: Call) -> Reply {
    let (app, id) = (call.app.as_str(), call.id.as_str());
    let mut filter = AttemptFilter::default();
    let (mut limit, mut cursor) = (DEFAULT_LIMIT, None);
    let query = call.query.as_deref().unwrap_or("");
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        let keep = |v: String| (!v.is_empty()).then_some(v);
        match key.as_ref() {
            "status" => {
                filter.success = match value.as_str() {
                    "" => None,
                    "success" => Some(true),
                    "failure" => Some(false),
                    _ => {
                        return Err(ApiError::invalid(
                            "status",
                            "invalid_status",
                            "must be \"success\" or \"failure\"",
                        ));
                    }
                }
            }
            "event_id" => filter.event_id = keep(value),
            "type" => filter.event_type = keep(value),
            "limit" => limit = limit_param(&value, MAX_LIMIT)?,
            "cursor" if value.is_empty() => {}
            "cursor" => cursor = Some(valid_cursor(value)?),
            other => {
                return Err(unknown_parameter(
                    other,
                    "status, event_id, type, limit, cursor",
                ));
            }
        }
    }
    find(state, app, id).await?;
    let (items, next) = state
        .history
        .page(app, id, &filter, limit, cursor.as_deref())
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"items": items, "next_cursor": next}),
    ))
}

/// A cursor is a stream entry id, `<ms>-<seq>`.
fn valid_cursor(value: String) -> Result<String, ApiError> {
    let ok = value
        .split_once('-')
        .is_some_and(|(a, b)| a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok());
    match ok {
        true => Ok(value),
        false => Err(ApiError::invalid(
            "cursor",
            "invalid_cursor",
            "must be a next_cursor returned by a previous page",
        )),
    }
}

/// `GET /v1/applications/{app}/webhooks/{id}/health`.
pub(super) async fn health(state: &AdminState, call: Call) -> Reply {
    let (app, id) = (call.app.as_str(), call.id.as_str());
    let hook = find(state, app, id).await?;
    let figures = state.history.health(app, id).await?;
    // This process's breaker if it delivers to the webhook; else what the
    // shared failure streak says (a failing streak is one that opened it).
    let breaker = match state.endpoints.get(id) {
        Some(endpoint) => endpoint.breaker_state(),
        None => match state.lifecycle.failing(app, &[id]).await?.first() {
            Some(true) => "open",
            _ => "closed",
        },
    };
    let backlog = state.backlogs.depth(id).await?;
    let ratio = |(s, f): (u64, u64)| (s + f > 0).then(|| s as f64 / (s + f) as f64);
    let buckets: Vec<_> = figures
        .buckets
        .iter()
        .map(|&(at, s, f)| json!({"at": rfc3339_millis(at), "successes": s, "failures": f}))
        .collect();
    let hours: Vec<_> = figures
        .hours
        .iter()
        .map(|&(at, s, f)| json!({"at": rfc3339_millis(at), "successes": s, "failures": f}))
        .collect();
    let (p50, p99) = figures.durations_1h.unzip();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "enabled": hook.enabled,
            "disabled_reason": hook.disabled_reason,
            "success_ratio_1h": ratio(figures.hour),
            "requests_1h": figures.hour.0 + figures.hour.1,
            "success_ratio_24h": ratio(figures.day),
            "requests_24h": figures.day.0 + figures.day.1,
            "duration_p50_ms_1h": p50,
            "duration_p99_ms_1h": p99,
            "last_success_at": figures.last_success_ms.map(rfc3339_millis),
            "last_failure_at": figures.last_failure.as_ref().map(|(at, _)| rfc3339_millis(*at)),
            "last_error": figures.last_failure.map(|(_, e)| e),
            "breaker": breaker,
            "waiting_in_retry": figures.waiting,
            "backlog": backlog,
            "buckets": buckets,
            "buckets_7d": hours,
        }),
    ))
}
