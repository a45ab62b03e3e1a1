//! The dead letter record: the job's event, its webhook, why it was given up,
//! and its full attempt history. Versioned for rolling deploys.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::job::{AttemptRecord, DeliveryJob, JOB_VERSION};
use crate::subscription::rfc3339;

/// The wire version this release writes.
pub(crate) const DEAD_LETTER_VERSION: u32 = 1;

/// A dead letter as stored in `{ns}.dead`; its id is derived from its stream offset.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Wire version.
    pub v: u32,
    /// Event id (`Webhook-Id`, kept by a replay).
    pub event_id: String,
    /// Owning application.
    pub application_id: String,
    /// Target webhook.
    pub webhook_id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The exact delivery body.
    pub body: Box<RawValue>,
    /// Why it was dead-lettered: `max_age_exceeded`, `circuit_open`,
    /// `webhook_disabled`, `target_refused`.
    pub reason: String,
    /// Unix ms when the event (or its last replay) was first received.
    pub received_at_ms: i64,
    /// Microseconds past `received_at_ms`, for the order of events received
    /// in the same millisecond (absent in older dead letters).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub received_at_us: u32,
    /// Unix ms when it was dead-lettered.
    pub dead_lettered_at_ms: i64,
    /// Every attempt, oldest first.
    pub history: Vec<AttemptRecord>,
    /// Its ordering key and `Webhook-Sequence`, when its webhook delivers
    /// in order per key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<crate::job::JobOrder>,
}

/// Why a message of `{ns}.dead` is not a dead letter this release can read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeadLetterFormatError {
    /// Not the JSON of a dead letter.
    #[error("malformed dead letter")]
    Malformed(#[from] serde_json::Error),
    /// Written by a release with another wire version.
    #[error("unsupported dead letter version {0}")]
    Version(u32),
}

impl DeadLetterFormatError {
    /// The bounded code: the `reason` label of `webhooks_jobs_rejected_total`.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed_dead_letter",
            Self::Version(_) => "unsupported_dead_letter_version",
        }
    }

    /// The `x-reject-reason` header: the code and what was found.
    pub(crate) fn reason(&self) -> String {
        match self {
            Self::Malformed(e) => format!("malformed_dead_letter: {e}"),
            Self::Version(v) => format!("unsupported_dead_letter_version: {v}"),
        }
    }
}

/// Which dead letters an operator asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this application's.
    pub application_id: Option<String>,
    /// Only this webhook's.
    pub webhook_id: Option<String>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only those dead-lettered at or after this time (Unix ms).
    pub since_ms: Option<i64>,
    /// Only those dead-lettered before this time (Unix ms).
    pub until_ms: Option<i64>,
}

/// The public id of the dead letter at stream `offset`.
pub fn id_of(offset: u64) -> String {
    format!("dl_{offset}")
}

/// The stream offset of a dead letter id.
pub(crate) fn offset_of(id: &str) -> Option<u64> {
    id.strip_prefix("dl_")?.parse().ok()
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn seconds(ms: i64) -> String {
    rfc3339(ms.div_euclid(1000))
}

impl DeadLetter {
    /// Decodes a dead letter, refusing versions this release does not know.
    pub(crate) fn decode(bytes: &[u8]) -> Result<DeadLetter, DeadLetterFormatError> {
        match serde_json::from_slice::<DeadLetter>(bytes) {
            Ok(letter) if letter.v == DEAD_LETTER_VERSION => Ok(letter),
            Ok(letter) => Err(DeadLetterFormatError::Version(letter.v)),
            Err(e) => match serde_json::from_slice::<crate::job::Versioned>(bytes) {
                Ok(other) if other.v != DEAD_LETTER_VERSION => {
                    Err(DeadLetterFormatError::Version(other.v))
                }
                _ => Err(DeadLetterFormatError::Malformed(e)),
            },
        }
    }

    /// A dead letter for `job`, given up for `reason` at `now_ms`.
    pub fn from_job(job: DeliveryJob, reason: &str, now_ms: i64) -> DeadLetter {
        DeadLetter {
            v: DEAD_LETTER_VERSION,
            event_id: job.event_id,
            application_id: job.application_id,
            webhook_id: job.webhook_id,
            event_type: job.event_type,
            body: job.body,
            reason: reason.to_string(),
            received_at_ms: job.received_at_ms,
            received_at_us: job.received_at_us,
            dead_lettered_at_ms: now_ms,
            history: job.attempts,
            order: job.order,
        }
    }

    /// A new job for a replay: same event id and body, a fresh max-age window;
    /// its first attempt is sent even through an open circuit (the probe).
    pub(crate) fn replay_job(&self, now_ms: i64) -> DeliveryJob {
        DeliveryJob {
            v: JOB_VERSION,
            event_id: self.event_id.clone(),
            application_id: self.application_id.clone(),
            webhook_id: self.webhook_id.clone(),
            event_type: self.event_type.clone(),
            body: self.body.clone(),
            received_at_ms: now_ms,
            received_at_us: 0,
            attempts: Vec::new(),
            deferrals: 0,
            probe: true,
            replay: true,
            order: None,
            holds: 0,
        }
    }

    /// Whether it passes `filter`.
    pub fn matches(&self, filter: &Filter) -> bool {
        let ok = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        ok(&filter.application_id, &self.application_id)
            && ok(&filter.webhook_id, &self.webhook_id)
            && ok(&filter.event_type, &self.event_type)
            && filter
                .since_ms
                .is_none_or(|t| self.dead_lettered_at_ms >= t)
            && filter.until_ms.is_none_or(|t| self.dead_lettered_at_ms < t)
    }

    /// The API's JSON object.
    pub fn view(&self, id: &str) -> Value {
        let last = self.history.last();
        let history: Vec<Value> = self
            .history
            .iter()
            .map(|a| {
                json!({
                    "at": seconds(a.at_ms), "status": a.status, "sent": a.sent,
                    "error": a.error, "duration_ms": a.duration_ms,
                })
            })
            .collect();
        let body: Value = serde_json::from_str(self.body.get()).unwrap_or(Value::Null);
        json!({
            "id": id,
            "event_id": self.event_id,
            "application_id": self.application_id,
            "webhook_id": self.webhook_id,
            "type": self.event_type,
            "reason": self.reason,
            "body": body,
            // Requests sent; `history` also lists the short-circuited ones.
            "attempts": self.history.iter().filter(|a| a.sent).count(),
            "first_attempt_at": self.history.first().map(|a| seconds(a.at_ms)),
            "last_attempt_at": last.map(|a| seconds(a.at_ms)),
            "last_status": last.and_then(|a| a.status),
            "last_error": last.and_then(|a| a.error.clone()),
            "received_at": seconds(self.received_at_ms),
            "dead_lettered_at": seconds(self.dead_lettered_at_ms),
            "history": history,
            "ordering_key": self.order.as_ref().map(|o| o.key.as_str()),
            "sequence": self.order.as_ref().map(|o| o.seq),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter() -> DeadLetter {
        let job: DeliveryJob = serde_json::from_str(
            r#"{"v":1,"event_id":"e1","application_id":"a","webhook_id":"wh_1","type":"item.created",
                "body":{"content":{},"timestamp":1,"type":"item.created"},"received_at_ms":1000,
                "attempts":[{"at_ms":1000,"status":500,"error":"HTTP 500","duration_ms":3},
                            {"at_ms":5000,"status":null,"error":"timeout","duration_ms":2000}]}"#,
        )
        .unwrap();
        DeadLetter::from_job(job, "max_age_exceeded", 9000)
    }

    #[test]
    fn ids_round_trip_through_offsets() {
        assert_eq!(offset_of(&id_of(42)), Some(42));
        assert_eq!(offset_of("dl_x"), None);
        assert_eq!(offset_of("42"), None);
    }

    #[test]
    fn the_view_carries_what_operators_need() {
        let v = letter().view("dl_7");
        assert_eq!(v["id"], "dl_7");
        assert_eq!(v["attempts"], 2);
        assert_eq!(v["last_error"], "timeout");
        assert_eq!(v["last_status"], Value::Null);
        assert_eq!(v["first_attempt_at"], "1970-01-01T00:00:01Z");
        assert_eq!(v["history"][0]["status"], 500);
        assert_eq!(v["body"]["type"], "item.created");
    }

    #[test]
    fn a_replay_keeps_the_event_id_and_body_with_a_fresh_window() {
        let d = letter();
        let job = d.replay_job(50_000);
        assert_eq!(job.event_id, "e1");
        assert_eq!(job.body.get(), d.body.get());
        assert_eq!(job.received_at_ms, 50_000);
        assert!(job.attempts.is_empty());
        assert!(job.probe, "sent through an open circuit");
    }

    #[test]
    fn filters_combine() {
        let d = letter();
        assert!(d.matches(&Filter::default()));
        let f = Filter {
            application_id: Some("a".into()),
            event_type: Some("item.created".into()),
            ..Filter::default()
        };
        assert!(d.matches(&f));
        let g = Filter {
            webhook_id: Some("wh_2".into()),
            ..Filter::default()
        };
        assert!(!d.matches(&g));
    }
}
