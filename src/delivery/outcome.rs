//! The pure decision on one attempt's result: delivered, worth retrying, or
//! not worth retrying at all.

use std::time::Duration;

use super::client::Transport;
use crate::metrics::OutcomeLabel;

/// Why an attempt failed, as recorded in the job history and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The `outcome` metric label.
    pub label: OutcomeLabel,
    /// The HTTP status, if a response came back.
    pub status: Option<u16>,
    /// Human-readable error.
    pub error: String,
    /// The receiver's `Retry-After`, honoured on 429 and 503.
    pub retry_after: Option<Duration>,
}

/// What to do with a job after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A 2xx arrived within the timeout.
    Delivered,
    /// Failed; schedule a retry.
    Retry(Failure),
    /// Failed in a way another attempt cannot fix; dead-letter now.
    GiveUp(Failure),
}

/// Classifies the transport result of one attempt.
pub(crate) fn classify(transport: &Transport) -> Outcome {
    match transport {
        Transport::Response { status, .. } if (200..300).contains(status) => Outcome::Delivered,
        Transport::Response {
            status,
            retry_after,
        } => Outcome::Retry(Failure {
            label: OutcomeLabel::HttpError,
            status: Some(*status),
            error: format!("HTTP {status}"),
            retry_after: retry_after.filter(|_| matches!(status, 429 | 503)),
        }),
        Transport::Timeout(after) => Outcome::Retry(Failure {
            label: OutcomeLabel::Timeout,
            status: None,
            error: format!("no response within {} ms", after.as_millis()),
            retry_after: None,
        }),
        Transport::Connect(error) => Outcome::Retry(Failure {
            label: OutcomeLabel::ConnectError,
            status: None,
            error: error.clone(),
            retry_after: None,
        }),
        Transport::Refused(error) => Outcome::GiveUp(Failure {
            label: OutcomeLabel::ConnectError,
            status: None,
            error: error.clone(),
            retry_after: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, retry_after: Option<u64>) -> Transport {
        Transport::Response {
            status,
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn only_2xx_is_delivered() {
        for s in [200, 201, 204, 299] {
            assert_eq!(classify(&response(s, None)), Outcome::Delivered);
        }
        for s in [100, 301, 302, 304, 400, 404, 410, 500, 503] {
            assert!(
                matches!(classify(&response(s, None)), Outcome::Retry(f) if f.status == Some(s))
            );
        }
    }

    #[test]
    fn retry_after_counts_only_on_429_and_503() {
        let on = |s| match classify(&response(s, Some(60))) {
            Outcome::Retry(f) => f.retry_after,
            other => panic!("{other:?}"),
        };
        assert_eq!(on(429), Some(Duration::from_secs(60)));
        assert_eq!(on(503), Some(Duration::from_secs(60)));
        assert_eq!(on(500), None);
    }

    #[test]
    fn transport_failures_map_to_their_labels() {
        let t = classify(&Transport::Timeout(Duration::from_secs(10)));
        assert!(matches!(t, Outcome::Retry(f) if f.label == OutcomeLabel::Timeout));
        let c = classify(&Transport::Connect("refused".into()));
        assert!(matches!(c, Outcome::Retry(f) if f.label == OutcomeLabel::ConnectError));
        let r = classify(&Transport::Refused("private".into()));
        assert!(matches!(r, Outcome::GiveUp(_)));
    }
}
