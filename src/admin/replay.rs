//! A webhook's catch-up: `POST /v1/applications/{app}/webhooks/{id}/replay`
//! replays its dead letters (optionally those written between `since` and
//! `until`) in the order their events were first received, paced at
//! `WF_REPLAY_RATE`; `GET` on the same path shows the progress, from any
//! process (it is kept in Redis).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::StatusCode;
use serde_json::json;

use super::catch_up_state::{CatchUps, ReplayProgress};
use super::context::{AdminState, Call, Reply};
use super::error::ApiError;
use super::http::json_response;
use super::request::read_fields;
use super::webhooks::find;
use crate::dead_letter::{DeadLetter, DeadLetters, Filter};
use crate::metrics::Metrics;

/// How often a running catch-up writes its progress (and renews its lock).
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// How long a catch-up's lock outlives its runner's last renewal (a runner
/// that crashed frees the webhook for another catch-up after this).
const LOCK_TTL: Duration = Duration::from_secs(10);

/// `POST /v1/applications/{app}/webhooks/{id}/replay`
/// `{"since"?, "until"?, "dry_run"?}`: 202 `{"total"}`; with `dry_run`,
/// 200 `{"total"}` and nothing is replayed (the dashboard's count).
pub(super) async fn start(state: &AdminState, call: Call) -> Reply {
    let (app, id) = (call.app.clone(), call.id.clone());
    let (filter, dry_run) = request(call, &app, &id).await?;
    let hook = find(state, &app, &id).await?;
    if dry_run {
        let total = state.dead_letters.matching(&filter).await?.len();
        return Ok(json_response(StatusCode::OK, &json!({"total": total})));
    }
    if !hook.enabled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "webhook_disabled",
            "the webhook is disabled: enable it first, or its replayed events become dead letters again",
        ));
    }
    // One catch-up per webhook at a time, in this process or any other, or
    // two would replay the same dead letters.
    let owner = format!("runner_{}", uuid::Uuid::new_v4().simple());
    let catch_ups = CatchUps::new(state.store.clone());
    if !catch_ups.lock(&app, &id, &owner, LOCK_TTL).await? {
        return Err(running_error());
    }
    let started = async {
        let letters = state.dead_letters.matching(&filter).await?;
        let progress = ReplayProgress {
            total: letters.len() as u64,
            replayed: 0,
            state: "running".into(),
        };
        catch_ups.set_progress(&app, &id, &progress).await?;
        Ok::<_, ApiError>(letters)
    };
    let letters = match started.await {
        Ok(letters) => letters,
        Err(e) => {
            let _ = catch_ups.unlock(&app, &id, &owner).await;
            return Err(e);
        }
    };
    let total = letters.len() as u64;
    tracing::info!(application_id = %app, webhook_id = %id, total, "catch-up replay started");
    let catch_up = CatchUp {
        dead_letters: state.dead_letters.clone(),
        catch_ups,
        metrics: state.metrics.clone(),
        app,
        id,
        owner,
    };
    tokio::spawn(catch_up.run(letters));
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({"total": total}),
    ))
}

/// The dead letters a catch-up of webhook `id` of `app` replays (the
/// body's `since` and `until`), and whether it is a dry run.
async fn request(call: Call, app: &str, id: &str) -> Result<(Filter, bool), ApiError> {
    let fields = read_fields(call.body, &["since", "until", "dry_run"]).await?;
    let filter = Filter {
        application_id: Some(app.to_string()),
        webhook_id: Some(id.to_string()),
        since_ms: fields.time("since", "invalid_since")?,
        until_ms: fields.time("until", "invalid_until")?,
        ..Filter::default()
    };
    let dry_run = fields
        .boolean("dry_run", "invalid_dry_run")?
        .unwrap_or(false);
    Ok((filter, dry_run))
}

fn running_error() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "replay_running",
        "a catch-up replay of this webhook is running (in this or another process); follow it with GET on this path",
    )
}

/// What a catch-up runs with, owned: it outlives the request.
struct CatchUp {
    dead_letters: Arc<DeadLetters>,
    catch_ups: CatchUps,
    metrics: Arc<Metrics>,
    app: String,
    id: String,
    /// This runner's name on the webhook's catch-up lock.
    owner: String,
}

impl CatchUp {
    async fn run(self, letters: Vec<(String, DeadLetter)>) {
        let total = letters.len() as u64;
        self.metrics.replay_pending(total as i64);
        let done = AtomicU64::new(0);
        let replay = self.dead_letters.replay_paced(&letters, |n| {
            self.metrics.replay_pending(-1);
            done.store(n as u64, Ordering::Relaxed);
        });
        // Progress is written every PROGRESS_EVERY while the replay runs.
        let report = async {
            loop {
                tokio::time::sleep(PROGRESS_EVERY).await;
                let replayed = done.load(Ordering::Relaxed);
                self.record(total, replayed, "running").await;
                let renewed = self
                    .catch_ups
                    .lock(&self.app, &self.id, &self.owner, LOCK_TTL)
                    .await;
                if let Ok(false) = renewed {
                    tracing::warn!(webhook_id = %self.id, "catch-up lock lost to another runner");
                }
            }
        };
        let result = tokio::select! {
            result = replay => result,
            _ = report => unreachable!("the report loop never ends"),
        };
        let left = total - done.load(Ordering::Relaxed);
        self.metrics.replay_pending(-(left as i64));
        let (replayed, state) = match &result {
            Ok(r) => ((r.replayed + r.skipped_webhook_deleted) as u64, "done"),
            Err(e) => {
                tracing::warn!(error = %crate::logging::Chain(e), webhook_id = %self.id, "catch-up replay stopped");
                (done.load(Ordering::Relaxed), "failed")
            }
        };
        self.record(total, replayed, state).await;
        if let Err(e) = self
            .catch_ups
            .unlock(&self.app, &self.id, &self.owner)
            .await
        {
            tracing::warn!(error = %crate::logging::Chain(&e), "catch-up lock not released; it expires by itself");
        }
        tracing::info!(application_id = %self.app, webhook_id = %self.id, replayed, state, "catch-up replay ended");
    }

    async fn record(&self, total: u64, replayed: u64, state: &str) {
        let progress = ReplayProgress {
            total,
            replayed,
            state: state.into(),
        };
        if let Err(e) = self
            .catch_ups
            .set_progress(&self.app, &self.id, &progress)
            .await
        {
            tracing::warn!(error = %crate::logging::Chain(&e), "catch-up progress not recorded");
        }
    }
}

/// `GET /v1/applications/{app}/webhooks/{id}/replay`: `{"total",
/// "replayed", "state"}` of the latest catch-up.
pub(super) async fn progress(state: &AdminState, call: Call) -> Reply {
    let (app, id) = (call.app.as_str(), call.id.as_str());
    find(state, app, id).await?;
    let progress = CatchUps::new(state.store.clone())
        .progress(app, id)
        .await?
        .ok_or_else(|| ApiError::not_found("replay"))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"total": progress.total, "replayed": progress.replayed, "state": progress.state}),
    ))
}
