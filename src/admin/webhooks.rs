//! Webhook and token handlers: create, list, read, update, delete, rotate the
//! secret, send the test event; and application tokens for the operator.

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::ETAG;
use hyper::{Response, StatusCode};
use serde_json::json;

use super::context::{AdminState, Call, Reply};
use super::error::ApiError;
use super::http::{json_response, no_content};
use super::precondition::IfMatch;
use super::request::{Fields, read_fields};
use super::webhook_fields::{
    authorization_free, valid_auth, valid_events, valid_headers, valid_name, valid_ordering,
    valid_rate_limit, valid_tls_client, valid_url,
};
use crate::clock;
use crate::delivery::{AttemptResult, Outcome, Signer};
use crate::event::{TEST_EVENT, TEST_EVENT_BODY};
use crate::operational::OperationalEvent;
use crate::subscription::{
    Auth, Ordering, RateLimit, StoredSecret, TlsClient, Webhook, Write, new_secret,
};

/// Most webhooks an application may have.
pub(super) const WEBHOOK_LIMIT: usize = 10;

/// `GET /v1/applications/{app}/webhooks`.
pub(super) async fn list(state: &AdminState, call: Call) -> Reply {
    let hooks = state.store.list(&call.app).await?;
    let views = with_failing(state, &call.app, &hooks).await?;
    Ok(json_response(StatusCode::OK, &json!(views)))
}

/// `POST /v1/applications/{app}/webhooks`.
pub(super) async fn create(state: &AdminState, call: Call) -> Reply {
    let app = call.app.as_str();
    let fields = read_fields(call.body, FIELDS).await?;
    let url = fields
        .string("url", "invalid_url")?
        .ok_or_else(|| ApiError::invalid("url", "invalid_url", "is required"))?;
    let url = valid_url(state, &url).await?;
    let name = valid_name(fields.string("name", "invalid_name")?)?;
    let events = fields
        .strings("events", "invalid_events")?
        .ok_or_else(|| ApiError::invalid("events", "invalid_events", "is required"))?;
    let events = valid_events(state, events)?;
    let enabled = fields
        .boolean("enabled", "invalid_enabled")?
        .unwrap_or(true);
    let ordering = valid_ordering(&fields)?.unwrap_or_default();
    let rate_limit = valid_rate_limit(&fields)?.flatten();
    let filter = super::filters::valid(&fields)?.flatten();
    let headers = valid_headers(&fields)?.unwrap_or_default();
    let tls_client = valid_tls_client(&fields)?.flatten();
    let auth = valid_auth(state, &fields).await?.flatten();
    let now = clock::unix_secs();
    let hook = Webhook {
        id: format!("wh_{}", uuid::Uuid::new_v4().simple()),
        application_id: app.to_string(),
        url,
        name,
        events,
        enabled,
        disabled_reason: (!enabled).then(|| "admin".to_string()),
        disabled_at: (!enabled).then_some(now),
        created_at: now,
        updated_at: now,
        secrets: vec![StoredSecret {
            value: crate::config::Redacted(new_secret()),
            expires_at: None,
        }],
        revision: 0,
        ordering,
        rate_limit,
        filter,
        headers,
        tls_client,
        auth,
    };
    authorization_free(&hook)?;
    state.store.create(&hook, WEBHOOK_LIMIT).await?;
    tracing::info!(application_id = app, webhook_id = %hook.id, "webhook created");
    announce(state, "webhook.created", &hook);
    let view = hook.view_with_secret();
    Ok(tagged(json_response(StatusCode::CREATED, &view), &hook))
}

/// The fields a webhook's create and PATCH accept.
const FIELDS: &[&str] = &[
    "url",
    "name",
    "events",
    "enabled",
    "ordering",
    "rate_limit",
    "filter",
    "headers",
    "tls_client",
    "auth",
];

/// `GET /v1/applications/{app}/webhooks/{id}`.
pub(super) async fn get(state: &AdminState, call: Call) -> Reply {
    let hook = find(state, &call.app, &call.id).await?;
    let view = with_failing(state, &call.app, std::slice::from_ref(&hook)).await?;
    Ok(tagged(json_response(StatusCode::OK, &view[0]), &hook))
}

/// The public views of `hooks`, each with `failing`: whether its recent
/// requests all failed (a streak announced as `webhook.failing`).
async fn with_failing(
    state: &AdminState,
    app: &str,
    hooks: &[Webhook],
) -> Result<Vec<serde_json::Value>, ApiError> {
    let ids: Vec<&str> = hooks.iter().map(|h| h.id.as_str()).collect();
    let failing = state.lifecycle.failing(app, &ids).await?;
    Ok(hooks
        .iter()
        .zip(failing)
        .map(|(hook, failing)| {
            let mut view = hook.view();
            view["failing"] = failing.into();
            view
        })
        .collect())
}

/// The response with the webhook's `ETag` (its revision).
fn tagged(mut response: Response<Full<Bytes>>, hook: &Webhook) -> Response<Full<Bytes>> {
    if let Ok(value) = hook.etag().parse() {
        response.headers_mut().insert(ETAG, value);
    }
    response
}

/// Reads webhook `id`, changes it with `change` and writes it back,
/// compare-and-set: if another write came in between, it reads again and
/// reapplies `change` (so concurrent PATCHes, rotations and toggles never
/// undo each other), unless the client pinned the revision with `If-Match`,
/// which then gets 412. Returns the webhook as written.
async fn write(
    state: &AdminState,
    app: &str,
    id: &str,
    if_match: &IfMatch,
    mut change: impl FnMut(&mut Webhook) -> Result<(), ApiError>,
) -> Result<Webhook, ApiError> {
    for attempt in 0..WRITE_ATTEMPTS {
        if attempt > 0 {
            // Losers of a race spread out, so many writers all get through.
            let most = 1u64 << attempt.min(6);
            let pause = rand::Rng::random_range(&mut rand::rng(), 0..=most);
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        }
        let mut hook = find(state, app, id).await?;
        if !if_match.allows(hook.revision) {
            return Err(ApiError::precondition_failed());
        }
        change(&mut hook)?;
        match state.store.update(&hook).await? {
            Write::Done => {
                hook.revision += 1;
                return Ok(hook);
            }
            Write::Missing => return Err(ApiError::not_found("webhook")),
            Write::Conflict if if_match.pinned() => return Err(ApiError::precondition_failed()),
            Write::Conflict => continue,
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "write_conflict",
        "the webhook kept changing while this write was applied; try again",
    ))
}

/// How often a write reads again after losing a race, before giving up.
const WRITE_ATTEMPTS: u32 = 32;

/// `PATCH /v1/applications/{app}/webhooks/{id}`.
pub(super) async fn update(state: &AdminState, call: Call) -> Reply {
    let fields = read_fields(call.body, FIELDS).await?;
    let changes = Changes::validate(state, &fields).await?;
    // Whether the write that landed turned the webhook on or off.
    let mut toggled = false;
    let hook = write(state, &call.app, &call.id, &call.if_match, |hook| {
        toggled = changes.apply(hook, clock::unix_secs());
        hook.updated_at = clock::unix_secs();
        // Extra headers and `auth` together, whichever this PATCH changed.
        authorization_free(hook)
    })
    .await?;
    announce(state, "webhook.updated", &hook);
    if toggled && hook.enabled {
        state
            .lifecycle
            .enabled(&hook.application_id, &hook.id)
            .await;
        state.endpoints.forget(&hook.id);
        state
            .metrics
            .set_open_circuits(state.endpoints.open_circuits());
        tracing::info!(application_id = %hook.application_id, webhook_id = %hook.id, "webhook enabled");
    } else if toggled {
        state.lifecycle.disabled(&hook, "admin");
    }
    Ok(tagged(json_response(StatusCode::OK, &hook.view()), &hook))
}

/// A PATCH's fields, validated once (the URL check may resolve DNS), then
/// applied to whichever revision the write reads.
struct Changes {
    url: Option<String>,
    name: Option<Option<String>>,
    events: Option<Vec<String>>,
    enabled: Option<bool>,
    ordering: Option<Ordering>,
    rate_limit: Option<Option<RateLimit>>,
    filter: Option<Option<String>>,
    headers: Option<BTreeMap<String, String>>,
    tls_client: Option<Option<TlsClient>>,
    auth: Option<Option<Auth>>,
}

impl Changes {
    async fn validate(state: &AdminState, fields: &Fields) -> Result<Changes, ApiError> {
        let url = match fields.has("url") {
            true => {
                let url = fields
                    .string("url", "invalid_url")?
                    .ok_or_else(|| ApiError::invalid("url", "invalid_url", "must not be null"))?;
                Some(valid_url(state, &url).await?)
            }
            false => None,
        };
        let name = match fields.has("name") {
            true => Some(valid_name(fields.string("name", "invalid_name")?)?),
            false => None,
        };
        let events = match fields.has("events") {
            true => Some(valid_events(
                state,
                fields.strings("events", "invalid_events")?.ok_or_else(|| {
                    ApiError::invalid("events", "invalid_events", "must not be null")
                })?,
            )?),
            false => None,
        };
        let enabled = match fields.has("enabled") {
            true => Some(
                fields
                    .boolean("enabled", "invalid_enabled")?
                    .ok_or_else(|| {
                        ApiError::invalid("enabled", "invalid_enabled", "must not be null")
                    })?,
            ),
            false => None,
        };
        Ok(Changes {
            url,
            name,
            events,
            enabled,
            ordering: valid_ordering(fields)?,
            rate_limit: valid_rate_limit(fields)?,
            filter: super::filters::valid(fields)?,
            headers: valid_headers(fields)?,
            tls_client: valid_tls_client(fields)?,
            auth: valid_auth(state, fields).await?,
        })
    }

    /// Applies the changes; whether `enabled` flipped (disabling by hand
    /// records the reason `admin`, enabling clears the reason).
    fn apply(&self, hook: &mut Webhook, now: i64) -> bool {
        if let Some(url) = &self.url {
            hook.url = url.clone();
        }
        if let Some(name) = &self.name {
            hook.name = name.clone();
        }
        if let Some(events) = &self.events {
            hook.events = events.clone();
        }
        if let Some(ordering) = self.ordering {
            hook.ordering = ordering;
        }
        if let Some(rate_limit) = self.rate_limit {
            hook.rate_limit = rate_limit;
        }
        if let Some(filter) = &self.filter {
            hook.filter = filter.clone();
        }
        if let Some(headers) = &self.headers {
            hook.headers = headers.clone();
        }
        if let Some(tls_client) = &self.tls_client {
            hook.tls_client = tls_client.clone();
        }
        if let Some(auth) = &self.auth {
            hook.auth = auth.clone();
        }
        match self.enabled {
            Some(enabled) => hook.set_enabled(enabled, "admin", now),
            None => false,
        }
    }
}

/// `DELETE /v1/applications/{app}/webhooks/{id}`; with `If-Match`, only
/// at that revision.
pub(super) async fn delete(state: &AdminState, call: Call) -> Reply {
    let (app, id, if_match) = (call.app.as_str(), call.id.as_str(), &call.if_match);
    let revision = match if_match {
        IfMatch::Revisions(_) => {
            let hook = find(state, app, id).await?;
            if !if_match.allows(hook.revision) {
                return Err(ApiError::precondition_failed());
            }
            Some(hook.revision)
        }
        IfMatch::Absent | IfMatch::Any => None,
    };
    match state.store.delete(app, id, revision).await? {
        Write::Done => {}
        Write::Missing => return Err(ApiError::not_found("webhook")),
        Write::Conflict => return Err(ApiError::precondition_failed()),
    }
    tracing::info!(application_id = app, webhook_id = id, "webhook deleted");
    state
        .lifecycle
        .announce(OperationalEvent::new("webhook.deleted", app, id));
    Ok(no_content())
}

/// `POST /v1/applications/{app}/webhooks/{id}/rotate-secret`.
pub(super) async fn rotate(state: &AdminState, call: Call) -> Reply {
    let (app, id, if_match) = (call.app.as_str(), call.id.as_str(), &call.if_match);
    let secret = new_secret();
    let hook = write(state, app, id, if_match, |hook| {
        hook.rotate(secret.clone(), clock::unix_secs());
        Ok(())
    })
    .await?;
    tracing::info!(
        application_id = app,
        webhook_id = id,
        "webhook secret rotated"
    );
    announce(state, "webhook.updated", &hook);
    let view = hook.view_with_secret();
    Ok(tagged(json_response(StatusCode::OK, &view), &hook))
}

/// `POST /v1/applications/{app}/webhooks/{id}/test`: delivers TEST_EVENT now,
/// whatever the webhook's breaker says (the test is the probe); where this
/// process delivers to the webhook too, the result reaches its breaker, so a
/// fixed receiver's success closes the circuit at once.
pub(super) async fn test(state: &AdminState, call: Call) -> Reply {
    let (app, id) = (call.app.as_str(), call.id.as_str());
    let hook = find(state, app, id).await?;
    let signer = Signer::new(&hook.valid_secrets(clock::unix_secs()));
    let event_id = format!("test_{}", uuid::Uuid::new_v4().simple());
    let identity = hook.tls_client.as_ref().map(|t| state.client.identity(t));
    let tokens = hook.auth.as_ref().map(|a| state.client.tokens(&hook.id, a));
    let result = state
        .client
        .deliver(crate::delivery::Attempt {
            target: &state.client.check(&hook.url),
            event_id: &event_id,
            attempt: 1,
            body: TEST_EVENT_BODY.as_bytes(),
            signer: &signer,
            sequence: None,
            headers: &crate::delivery::request_headers(&hook),
            identity: identity.as_ref(),
            auth: tokens.as_deref(),
        })
        .await;
    let outcome = crate::delivery::classify(&result.transport);
    record_test(state, app, id, event_id, &result, &outcome);
    // A fixed receiver's success ends its failure streak (webhook.recovered).
    if outcome == Outcome::Delivered {
        state.lifecycle.streak_ended(app, id);
    }
    if let Some(endpoint) = state.endpoints.get(id) {
        if endpoint.record(outcome == Outcome::Delivered) {
            state
                .metrics
                .set_open_circuits(state.endpoints.open_circuits());
        }
    }
    tracing::info!(
        application_id = app,
        webhook_id = id,
        event_type = TEST_EVENT,
        "test event sent"
    );
    Ok(json_response(
        StatusCode::OK,
        &test_report(&result, &outcome),
    ))
}

/// The test call's attempt, in the webhook's history.
fn record_test(
    state: &AdminState,
    app: &str,
    id: &str,
    event_id: String,
    result: &AttemptResult,
    outcome: &Outcome,
) {
    let failure = match outcome {
        Outcome::Delivered => None,
        Outcome::Retry(f) | Outcome::GiveUp(f) => Some(f),
    };
    let attempt = crate::subscription::Attempt {
        at_ms: clock::unix_millis() - result.duration.as_millis() as i64,
        event_id,
        event_type: TEST_EVENT.to_string(),
        attempt: 1,
        status: result.transport.status(),
        error_class: failure.map(|f| f.label.as_str()),
        error: failure.map(|f| f.error.clone()),
        duration_ms: result.duration.as_millis() as u64,
        sent: true,
        kind: crate::subscription::Kind::Test,
    };
    state.history.record(app, id, attempt);
}

fn test_report(result: &AttemptResult, outcome: &Outcome) -> serde_json::Value {
    let (delivered, status, error) = match outcome {
        Outcome::Delivered => (true, result.transport.status(), None),
        Outcome::Retry(f) | Outcome::GiveUp(f) => (false, f.status, Some(f.error.clone())),
    };
    json!({
        "delivered": delivered,
        "status": status,
        "error": error,
        "duration_ms": result.duration.as_millis() as u64,
    })
}

/// Publishes operational event `kind` about `hook`, with its public view.
fn announce(state: &AdminState, kind: &'static str, hook: &Webhook) {
    state.lifecycle.announce(
        OperationalEvent::new(kind, &hook.application_id, &hook.id).with("webhook", hook.view()),
    );
}

pub(super) async fn find(state: &AdminState, app: &str, id: &str) -> Result<Webhook, ApiError> {
    state
        .store
        .get(app, id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))
}
