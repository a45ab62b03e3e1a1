//! The delivery job: one event for one webhook, as it travels through
//! `{ns}.deliver` and the retry tiers. A wire type shared by ingest (which
//! writes it), delivery (which runs it) and the dead letters (which keep and
//! replay it), so it sits below all three. Versioned (`v`) for rolling
//! deploys: fields added later are optional, so the previous release reads
//! what this one writes and the other way round.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The wire version this release writes.
pub(crate) const JOB_VERSION: u32 = 1;

/// One finished attempt, kept in the job's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Whether a request was sent: false when the webhook's circuit was open
    /// and the attempt was short-circuited (absent in older jobs: sent).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub sent: bool,
    /// Unix milliseconds when the attempt started.
    pub at_ms: i64,
    /// HTTP status, if a response came back.
    pub status: Option<u16>,
    /// Error text when no 2xx came back (never contains secrets).
    pub error: Option<String>,
    /// How long the attempt took.
    pub duration_ms: u64,
}

impl AttemptRecord {
    /// A pass that sent no request because the webhook's circuit was open:
    /// the job's history says so (dead letters show it as not sent), and it
    /// moves the job one tier on in the schedule, as a failed request does.
    pub(crate) fn short_circuited(at_ms: i64, why: &str) -> AttemptRecord {
        AttemptRecord {
            sent: false,
            at_ms,
            status: None,
            error: Some(why.to_string()),
            duration_ms: 0,
        }
    }
}

/// A delivery job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryJob {
    /// Wire version; readers refuse versions they do not know.
    pub v: u32,
    /// Event id, sent as `Webhook-Id`.
    pub event_id: String,
    /// Owning application.
    pub application_id: String,
    /// Target webhook.
    pub webhook_id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The exact delivery body, the same bytes on every attempt.
    pub body: Box<RawValue>,
    /// Unix milliseconds when the service first received the event (or the replay).
    pub received_at_ms: i64,
    /// Microseconds past `received_at_ms` (0-999): events received in the
    /// same millisecond keep their order (catch-ups replay in it); absent in
    /// jobs written before it existed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub received_at_us: u32,
    /// Attempts made so far, oldest first.
    #[serde(default)]
    pub attempts: Vec<AttemptRecord>,
    /// Times the job was deferred without an attempt (its webhook
    /// saturated); absent in jobs written before it existed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deferrals: u32,
    /// An operator's replay: its next attempt is sent even while the
    /// webhook's circuit is open, as the probe (cleared after that attempt).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub probe: bool,
    /// A replay of a dead letter (every attempt, not only the first, is
    /// recorded as a replay in the webhook's history).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
    /// Its place among the events of one ordering key, for a webhook with
    /// `ordering: per_key`; none for unordered delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<JobOrder>,
    /// Times it waited, without an attempt, for an earlier event of its
    /// key (never counted as a deferral).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub holds: u32,
}

/// A job's place in its key's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOrder {
    /// The ordering key.
    pub key: String,
    /// 1-based number of the event among its key's events for this webhook
    /// (`Webhook-Sequence`).
    pub seq: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// The one field every wire version keeps: read first, so a newer layout is
/// reported as a version, not as malformed.
#[derive(Deserialize)]
pub(crate) struct Versioned {
    pub(crate) v: u32,
}

/// Why a message on `{ns}.deliver` is not a job this release can run.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Not the JSON of a job.
    #[error("malformed job")]
    Malformed(#[from] serde_json::Error),
    /// Written by a release with another wire version.
    #[error("unsupported job version {0}")]
    Version(u32),
}

impl JobError {
    /// The bounded code: the `reason` label of `webhooks_jobs_rejected_total`.
    pub fn code(&self) -> &'static str {
        match self {
            JobError::Malformed(_) => "malformed_job",
            JobError::Version(_) => "unsupported_job_version",
        }
    }

    /// The `x-reject-reason` header: the code and what was found.
    pub fn reason(&self) -> String {
        match self {
            JobError::Malformed(e) => format!("malformed_job: {e}"),
            JobError::Version(v) => format!("unsupported_job_version: {v}"),
        }
    }
}

impl DeliveryJob {
    /// A first-attempt job for `webhook_id`.
    /// A job of `event` for `webhook_id`, received at `received_us` (Unix
    /// microseconds).
    pub fn new(event: &crate::event::Event, webhook_id: &str, received_us: i64) -> DeliveryJob {
        DeliveryJob {
            v: JOB_VERSION,
            event_id: event.id.clone(),
            application_id: event.application_id.clone(),
            webhook_id: webhook_id.to_string(),
            event_type: event.event_type.clone(),
            body: RawValue::from_string(event.body.clone()).expect("the body is valid JSON"),
            received_at_ms: received_us.div_euclid(1000),
            received_at_us: received_us.rem_euclid(1000) as u32,
            attempts: Vec::new(),
            deferrals: 0,
            probe: false,
            replay: false,
            order: None,
            holds: 0,
        }
    }

    /// Decodes a job, refusing other versions (whatever else they hold).
    pub fn decode(bytes: &[u8]) -> Result<DeliveryJob, JobError> {
        // One parse on the hot path; the version alone only when that fails.
        match serde_json::from_slice::<DeliveryJob>(bytes) {
            Ok(job) if job.v == JOB_VERSION => Ok(job),
            Ok(job) => Err(JobError::Version(job.v)),
            Err(e) => match serde_json::from_slice::<Versioned>(bytes) {
                Ok(other) if other.v != JOB_VERSION => Err(JobError::Version(other.v)),
                _ => Err(JobError::Malformed(e)),
            },
        }
    }

    /// The wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a job serializes")
    }

    /// The 1-based number of the next request (`Webhook-Attempt`): attempts
    /// short-circuited by an open circuit sent nothing and do not count.
    pub(crate) fn next_attempt(&self) -> u32 {
        self.requests_sent() + 1
    }

    /// The passes that ended in a delay tier, failed requests and
    /// short-circuits alike: the retry schedule's position.
    pub(crate) fn failed_passes(&self) -> u32 {
        self.attempts.len() as u32
    }

    /// How many requests were actually sent for this job.
    pub(crate) fn requests_sent(&self) -> u32 {
        self.attempts.iter().filter(|a| a.sent).count() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Catalogue, Event};

    #[test]
    fn the_body_survives_encoding_byte_for_byte() {
        let text = r#"{"id":"e","application_id":"a","type":"item.created","timestamp":1,"content":{"z":1,"a":"\u00e9"}}"#;
        let event = Event::parse(text.as_bytes(), None, &Catalogue::embedded(), 0).unwrap();
        let job = DeliveryJob::new(&event, "wh_1", 5_123_456);
        let back = DeliveryJob::decode(&job.encode()).unwrap();
        assert_eq!(back.body.get(), event.body);
        assert_eq!(back.next_attempt(), 1);
        // Received at 5,123.456 ms: the microseconds keep the order of
        // events received in the same millisecond.
        assert_eq!((back.received_at_ms, back.received_at_us), (5_123, 456));
    }

    #[test]
    fn short_circuited_attempts_are_not_requests() {
        let record = |sent| AttemptRecord {
            sent,
            at_ms: 0,
            status: None,
            error: None,
            duration_ms: 0,
        };
        let text = r#"{"v":1,"event_id":"e","application_id":"a","webhook_id":"w","type":"t","body":{},"received_at_ms":0}"#;
        let mut job = DeliveryJob::decode(text.as_bytes()).unwrap();
        job.attempts = vec![record(true), record(false), record(false)];
        assert_eq!(job.next_attempt(), 2);
        let back = DeliveryJob::decode(&job.encode()).unwrap();
        assert_eq!(back.attempts, job.attempts);
        // A record written before `sent` existed was a request.
        let old: AttemptRecord =
            serde_json::from_str(r#"{"at_ms":1,"status":500,"error":"x","duration_ms":2}"#)
                .unwrap();
        assert!(old.sent);
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused() {
        assert!(matches!(
            DeliveryJob::decode(b"nope"),
            Err(JobError::Malformed(_))
        ));
        let future = br#"{"v":2,"event_id":"e","application_id":"a","webhook_id":"w","type":"t","body":{},"received_at_ms":0}"#;
        assert!(matches!(
            DeliveryJob::decode(future),
            Err(JobError::Version(2))
        ));
        // A newer layout is a version, whatever fields it dropped or added.
        let reshaped = br#"{"v":3,"target":{"id":"w"}}"#;
        let e = DeliveryJob::decode(reshaped).unwrap_err();
        assert_eq!(e.reason(), "unsupported_job_version: 3");
        assert_eq!(e.code(), "unsupported_job_version");
    }
}
