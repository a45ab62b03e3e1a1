//! Operational events: what happened to webhooks (created, updated, deleted,
//! disabled, failing, recovered) and to deliveries (dead-lettered), published
//! persistent and confirmed to the topic exchange `{ns}.operational` with
//! the event type as routing key, for upstream services to bind queues to
//! (to e-mail a customer whose webhook was disabled, say).
//!
//! Publishing never holds up the caller: events go through a bounded queue
//! to a task with a connection of its own (opened at the first event), which
//! retries until the broker confirms them. An event is lost only if the
//! queue is full or the process stops before the broker took it; both are
//! counted (`webhooks_operational_events_lost_total`). Never a secret.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::backoff::Backoff;
use crate::broker::{ConfirmedPublisher, Names, Outgoing};
use crate::clock;
use crate::metrics::Metrics;
use crate::subscription::rfc3339_millis;

/// Events waiting for the broker, at most.
const QUEUE: usize = 10_000;
/// Events published and confirmed together, at most.
const BATCH: usize = 256;

/// One operational event, as published (JSON).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct OperationalEvent {
    /// `op_` + 32 hex chars: unique per event, for consumers to deduplicate.
    pub id: String,
    /// The routing key: `webhook.created`, ... `delivery.dead_lettered`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The application.
    pub application_id: String,
    /// The webhook.
    pub webhook_id: String,
    /// RFC 3339, UTC, milliseconds.
    pub occurred_at: String,
    /// Why (disabled, dead-lettered), where it applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The event (dead-lettered), where it applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// More about it: the webhook's public view (never its secret), failure
    /// counts.
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl OperationalEvent {
    /// An event of `kind` about webhook `webhook_id` of `app`, now.
    pub(crate) fn new(kind: &'static str, app: &str, webhook_id: &str) -> Self {
        OperationalEvent {
            id: format!("op_{}", uuid::Uuid::new_v4().simple()),
            kind,
            application_id: app.to_string(),
            webhook_id: webhook_id.to_string(),
            occurred_at: rfc3339_millis(clock::unix_millis()),
            reason: None,
            event_id: None,
            details: serde_json::Map::new(),
        }
    }

    /// With `reason`.
    pub(crate) fn reason(mut self, reason: &str) -> Self {
        self.reason = Some(reason.to_string());
        self
    }

    /// With `event_id`.
    pub(crate) fn event(mut self, event_id: &str) -> Self {
        self.event_id = Some(event_id.to_string());
        self
    }

    /// With one more field (`webhook`, `failures`, ...).
    pub(crate) fn with(mut self, key: &str, value: serde_json::Value) -> Self {
        self.details.insert(key.to_string(), value);
        self
    }
}

enum Item {
    Event(OperationalEvent),
    Flush(oneshot::Sender<()>),
}

/// The broker session's channel for operational events, while there is one.
type Slot = Arc<Mutex<Option<ConfirmedPublisher>>>;

/// Handle on the publishing task; cheap to clone.
#[derive(Clone)]
pub(crate) struct Operational {
    tx: mpsc::Sender<Item>,
    metrics: Arc<Metrics>,
    publisher: Slot,
}

impl Operational {
    /// Spawns the publishing task for namespace `names`; it publishes once
    /// a broker session lends it a channel ([`Operational::attach`]).
    pub(crate) fn start(names: Names, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let publisher = Slot::default();
        let task = Task {
            names,
            metrics: metrics.clone(),
            publisher: publisher.clone(),
        };
        tokio::spawn(task.run(rx));
        Operational {
            tx,
            metrics,
            publisher,
        }
    }

    /// Publishes on `publisher` (a confirm-mode channel of the current
    /// broker session, whose topology declares `{ns}.operational`) from now
    /// on; `None` when the session ends.
    pub(crate) fn attach(&self, publisher: Option<ConfirmedPublisher>) {
        *self.publisher.lock().unwrap_or_else(|e| e.into_inner()) = publisher;
    }

    /// Queues `event` for the broker without waiting.
    pub(crate) fn publish(&self, event: OperationalEvent) {
        tracing::debug!(kind = event.kind, webhook_id = %event.webhook_id, "operational event");
        if self.tx.try_send(Item::Event(event)).is_err() {
            tracing::warn!("operational events queue full; event lost");
            self.metrics.operational_events_lost(1);
        }
    }

    /// Waits, at most `limit`, until what was queued before is confirmed
    /// (shutdown).
    pub(crate) async fn flush(&self, limit: Duration) {
        let (done, confirmed) = oneshot::channel();
        if self.tx.try_send(Item::Flush(done)).is_ok() {
            let _ = tokio::time::timeout(limit, confirmed).await;
        }
    }
}

struct Task {
    names: Names,
    metrics: Arc<Metrics>,
    publisher: Slot,
}

impl Task {
    async fn run(self, mut rx: mpsc::Receiver<Item>) {
        let mut items = Vec::with_capacity(BATCH);
        let mut backoff = Backoff::default();
        while rx.recv_many(&mut items, BATCH).await > 0 {
            let mut events = Vec::new();
            let mut flushes = Vec::new();
            for item in items.drain(..) {
                match item {
                    Item::Event(e) => events.push(e),
                    Item::Flush(done) => flushes.push(done),
                }
            }
            // Retried until confirmed: the task's queue holds what comes
            // meanwhile, and a full queue counts what it cannot take.
            while !events.is_empty() {
                match self.send(&events).await {
                    Ok(()) => {
                        for e in events.drain(..) {
                            self.metrics.operational_event(e.kind);
                        }
                        backoff.reset();
                    }
                    Err(e) => {
                        tracing::warn!(
                            error = format!("{e:#}"),
                            events = events.len(),
                            "operational events not published yet; retrying"
                        );
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
            for done in flushes {
                let _ = done.send(());
            }
        }
    }

    async fn send(&self, events: &[OperationalEvent]) -> anyhow::Result<()> {
        let publisher = self
            .publisher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(ConfirmedPublisher::is_open)
            .ok_or_else(|| anyhow::anyhow!("no broker session"))?;
        let exchange = self.names.operational();
        let bodies: Vec<Vec<u8>> = events
            .iter()
            .map(|e| serde_json::to_vec(e).expect("an operational event serializes"))
            .collect();
        let messages: Vec<Outgoing<'_>> = events
            .iter()
            .zip(&bodies)
            .map(|(e, body)| Outgoing {
                exchange: &exchange,
                routing_key: e.kind,
                payload: body,
                headers: None,
                message_id: Some(&e.id),
            })
            .collect();
        publisher.broadcast(&messages).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_has_the_contract_fields_and_only_those_that_apply() {
        let e = OperationalEvent::new("delivery.dead_lettered", "app_1", "wh_1")
            .reason("max_age_exceeded")
            .event("evt_1");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "delivery.dead_lettered");
        assert_eq!(v["application_id"], "app_1");
        assert_eq!(v["webhook_id"], "wh_1");
        assert_eq!(v["reason"], "max_age_exceeded");
        assert_eq!(v["event_id"], "evt_1");
        assert!(v["id"].as_str().unwrap().starts_with("op_"));
        let at = v["occurred_at"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(at).is_ok(), "{at}");

        let created = OperationalEvent::new("webhook.created", "app_1", "wh_1")
            .with("webhook", serde_json::json!({"url": "https://x"}));
        let v = serde_json::to_value(&created).unwrap();
        assert!(v.get("reason").is_none() && v.get("event_id").is_none());
        assert_eq!(v["webhook"]["url"], "https://x");
    }
}
