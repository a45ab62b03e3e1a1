//! The pure decision on one attempt's result: delivered, worth retrying, or
//! not worth retrying at all.

use std::time::Duration;

use super::client::{Directive, Transport};
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
            ..
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
        Transport::Auth(error) => Outcome::Retry(Failure {
            label: OutcomeLabel::AuthError,
            status: None,
            error: error.clone(),
            retry_after: None,
        }),
        Transport::PolicyRefused(error) => Outcome::GiveUp(Failure {
            label: OutcomeLabel::ConnectError,
            status: None,
            error: error.clone(),
            retry_after: None,
        }),
    }
}

/// What a receiver's answer asks of the webhook or the message, beyond
/// its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Disable the webhook, for this reason (`gone`, `receiver_requested`).
    Disable(&'static str),
    /// Stop retrying this message (`webhook-delivery: abort-message` on a
    /// failed attempt).
    Abort,
}

/// The receiver's signal in `transport`: `webhook-delivery: disable` (on
/// any status), a `410 Gone` (unless `disable_on_gone` is off), or
/// `webhook-delivery: abort-message` on a failure.
pub(crate) fn signal(transport: &Transport, disable_on_gone: bool) -> Option<Signal> {
    let Transport::Response {
        status, directive, ..
    } = transport
    else {
        return None;
    };
    match directive {
        Some(Directive::Disable) => Some(Signal::Disable("receiver_requested")),
        _ if *status == 410 && disable_on_gone => Some(Signal::Disable("gone")),
        Some(Directive::AbortMessage) if !(200..300).contains(status) => Some(Signal::Abort),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, retry_after: Option<u64>) -> Transport {
        Transport::Response {
            status,
            retry_after: retry_after.map(Duration::from_secs),
            directive: None,
        }
    }

    fn asking(status: u16, header: &str) -> Transport {
        Transport::Response {
            status,
            retry_after: None,
            directive: Directive::parse(header),
        }
    }

    #[test]
    fn receivers_can_say_stop() {
        assert_eq!(
            signal(&response(410, None), true),
            Some(Signal::Disable("gone"))
        );
        assert_eq!(signal(&response(410, None), false), None, "rule off");
        for status in [200, 404, 500] {
            assert_eq!(
                signal(&asking(status, " Disable "), false),
                Some(Signal::Disable("receiver_requested"))
            );
        }
        assert_eq!(
            signal(&asking(500, "abort-message"), true),
            Some(Signal::Abort)
        );
        assert_eq!(signal(&asking(200, "abort-message"), true), None);
        assert_eq!(signal(&asking(500, "stop please"), true), None);
        assert_eq!(signal(&response(500, None), true), None);
        assert_eq!(
            signal(&Transport::Timeout(Duration::from_secs(1)), true),
            None
        );
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
        let r = classify(&Transport::PolicyRefused("private".into()));
        assert!(matches!(r, Outcome::GiveUp(_)));
    }
}
