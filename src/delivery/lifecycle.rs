//! A webhook's life as its deliveries see it: disabled when the receiver
//! says so (`410 Gone`, `webhook-delivery: disable`) or after failing for
//! `WF_AUTO_DISABLE_AFTER`; announced as failing after a streak of failed
//! requests and as recovered at the first success after it. Streaks live in
//! Redis, so every process counts towards the same one; each change is an
//! operational event.
//!
//! None of it holds up a delivery: the Redis calls and the disabling run in
//! tasks of their own, and a healthy webhook costs Redis nothing per
//! delivery (a success ends a streak only after this process saw a failure,
//! or every few seconds in case another process did).

use std::sync::Arc;
use std::time::Duration;

use super::endpoint::Endpoint;
use super::streak::Streaks;
use crate::clock;
use crate::metrics::Metrics;
use crate::operational::{Operational, OperationalEvent};
use crate::subscription::{Store, StoreError, Webhook};

/// How often, at most, a success checks for a streak another process saw
/// (shorter when `WF_AUTO_DISABLE_AFTER` is short).
const STREAK_CHECK: Duration = Duration::from_secs(10);

/// The rules and what they act on; shared by every delivery and the API.
pub(crate) struct Lifecycle {
    store: Store,
    streaks: Streaks,
    operational: Operational,
    metrics: Arc<Metrics>,
    /// `WF_DISABLE_ON_GONE`.
    pub(crate) disable_on_gone: bool,
    /// `WF_AUTO_DISABLE_AFTER`.
    auto_disable_after: Duration,
    /// Failed requests that make a streak failing (and are needed to
    /// disable): `WF_CIRCUIT_BREAKER_THRESHOLD`.
    threshold: u32,
}

impl Lifecycle {
    /// The lifecycle of `store`'s webhooks, announced through `operational`.
    pub(crate) fn new(
        store: Store,
        operational: Operational,
        metrics: Arc<Metrics>,
        disable_on_gone: bool,
        auto_disable_after: Duration,
        threshold: u32,
    ) -> Arc<Self> {
        Arc::new(Lifecycle {
            streaks: Streaks::new(store.clone()),
            store,
            operational,
            metrics,
            disable_on_gone,
            auto_disable_after,
            threshold: threshold.max(1),
        })
    }

    fn check_every(&self) -> Duration {
        STREAK_CHECK.min(self.auto_disable_after / 10)
    }

    /// Whether each of `ids` (webhooks of `app`) is in a streak announced
    /// as failing.
    pub(crate) async fn failing(&self, app: &str, ids: &[&str]) -> Result<Vec<bool>, StoreError> {
        self.streaks.failing(app, ids).await
    }

    /// Publishes `event` (the API's webhook changes).
    pub(crate) fn announce(&self, event: OperationalEvent) {
        self.operational.publish(event);
    }

    /// Disables webhook `id` of `app` for `reason` unless it already is;
    /// announces it when this call disabled it. The webhook as written.
    pub(crate) async fn disable(
        &self,
        app: &str,
        id: &str,
        reason: &'static str,
    ) -> Result<Option<Webhook>, StoreError> {
        let now = clock::unix_secs();
        let written = self
            .store
            .modify(app, id, |hook| hook.set_enabled(false, reason, now))
            .await?;
        if let Some(hook) = &written {
            self.disabled(hook, reason);
        }
        Ok(written)
    }

    /// Counts and announces that `hook` was just disabled for `reason`.
    pub(crate) fn disabled(&self, hook: &Webhook, reason: &str) {
        tracing::warn!(application_id = %hook.application_id, webhook_id = %hook.id, reason, "webhook disabled");
        self.metrics.webhook_disabled(reason);
        self.announce(
            OperationalEvent::new("webhook.disabled", &hook.application_id, &hook.id)
                .reason(reason)
                .with("webhook", hook.view()),
        );
    }

    /// Disables the webhook in the background (the receiver asked).
    pub(crate) fn disable_later(self: &Arc<Self>, app: &str, id: &str, reason: &'static str) {
        let (this, app, id) = (self.clone(), app.to_string(), id.to_string());
        tokio::spawn(async move {
            if let Err(e) = this.disable(&app, &id, reason).await {
                tracing::warn!(error = %crate::logging::Chain(&e), webhook_id = %id, reason, "cannot disable webhook; the next such answer tries again");
            }
        });
    }

    /// A failed attempt (`sent`: a request went out; else short-circuited)
    /// of webhook `id`: counts it in the streak, announces the streak once
    /// it is failing, disables the webhook once it has failed long enough.
    pub(crate) fn failed(self: &Arc<Self>, endpoint: &Endpoint, app: &str, id: &str, sent: bool) {
        endpoint.note_failure();
        // Attempts without a request only move the clock: once in a while.
        if !sent && !endpoint.unsent_failure_due(self.check_every()) {
            return;
        }
        let (this, app, id) = (self.clone(), app.to_string(), id.to_string());
        tokio::spawn(async move {
            let streak = match this
                .streaks
                .failed(&app, &id, sent, this.threshold, this.auto_disable_after)
                .await
            {
                Ok(streak) => streak,
                Err(e) => {
                    tracing::debug!(error = %crate::logging::Chain(&e), "failure streak not counted");
                    return;
                }
            };
            if streak.announce_failing {
                tracing::warn!(application_id = %app, webhook_id = %id, failures = streak.failures, "webhook failing");
                this.announce(
                    OperationalEvent::new("webhook.failing", &app, &id)
                        .with("failures", streak.failures.into()),
                );
            }
            if streak.disable
                && let Err(e) = this.disable(&app, &id, "failing").await
            {
                tracing::warn!(error = %crate::logging::Chain(&e), webhook_id = %id, "cannot disable failing webhook; the next failure tries again");
            }
        });
    }

    /// A successful delivery to webhook `id`: ends its streak, announcing
    /// the recovery of a failing one.
    pub(crate) fn succeeded(self: &Arc<Self>, endpoint: &Endpoint, app: &str, id: &str) {
        if endpoint.success_ends_streak(self.check_every()) {
            self.streak_ended(app, id);
        }
    }

    /// Ends webhook `id`'s streak now (a success outside the delivery path:
    /// the test call), announcing the recovery of a failing one.
    pub(crate) fn streak_ended(self: &Arc<Self>, app: &str, id: &str) {
        let (this, app, id) = (self.clone(), app.to_string(), id.to_string());
        tokio::spawn(async move {
            match this.streaks.succeeded(&app, &id).await {
                Ok(true) => {
                    tracing::info!(application_id = %app, webhook_id = %id, "webhook recovered");
                    this.announce(OperationalEvent::new("webhook.recovered", &app, &id));
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(error = %crate::logging::Chain(&e), "failure streak not ended")
                }
            }
        });
    }

    /// A job of webhook `webhook_id` was dead-lettered.
    pub(crate) fn dead_lettered(&self, app: &str, webhook_id: &str, event_id: &str, reason: &str) {
        self.announce(
            OperationalEvent::new("delivery.dead_lettered", app, webhook_id)
                .reason(reason)
                .event(event_id),
        );
    }

    /// Webhook `id` was enabled again: its streak starts over.
    pub(crate) async fn enabled(&self, app: &str, id: &str) {
        if let Err(e) = self.streaks.restart(app, id).await {
            tracing::warn!(error = %crate::logging::Chain(&e), webhook_id = %id, "failure streak not restarted");
        }
    }
}
