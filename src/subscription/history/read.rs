//! Reading the history back: attempts from their stream entries, the
//! API's view of one, filters, and the health figures from the hash.

use std::collections::HashMap;

use deadpool_redis::redis;
use serde_json::{Value, json};

use super::{Attempt, AttemptFilter, BUCKET_MS, HOUR_MS, HealthFigures, Kind, bucket, hour};
use crate::subscription::webhook::rfc3339_millis;

pub(super) fn matches(a: &Attempt, filter: &AttemptFilter) -> bool {
    filter.success.is_none_or(|s| a.succeeded() == s)
        && filter.event_id.as_deref().is_none_or(|e| a.event_id == e)
        && filter
            .event_type
            .as_deref()
            .is_none_or(|t| a.event_type == t)
}

/// The API's JSON of one attempt.
pub(super) fn view(a: &Attempt) -> Value {
    json!({
        "at": rfc3339_millis(a.at_ms),
        "event_id": a.event_id,
        "type": a.event_type,
        "attempt": a.attempt,
        "status": a.status,
        "error": a.error,
        "error_class": a.error_class,
        "duration_ms": a.duration_ms,
        "sent": a.sent,
        "kind": a.kind.as_str(),
    })
}

pub(super) fn fields(entry: &redis::streams::StreamId) -> HashMap<&str, String> {
    entry
        .map
        .keys()
        .filter_map(|k| Some((k.as_str(), entry.get::<String>(k)?)))
        .collect()
}

pub(super) fn parse(f: &HashMap<&str, String>) -> Option<Attempt> {
    let kind = match f.get("k").map(String::as_str) {
        Some("replay") => Kind::Replay,
        Some("test") => Kind::Test,
        _ => Kind::Delivery,
    };
    let class = f.get("c").map(|c| match c.as_str() {
        "http_error" => "http_error",
        "timeout" => "timeout",
        "connect_error" => "connect_error",
        "auth_error" => "auth_error",
        "circuit_open" => "circuit_open",
        _ => "deferred",
    });
    Some(Attempt {
        at_ms: f.get("a")?.parse().ok()?,
        event_id: f.get("e")?.clone(),
        event_type: f.get("t").cloned().unwrap_or_default(),
        attempt: f.get("n").and_then(|n| n.parse().ok()).unwrap_or(0),
        status: f.get("s").and_then(|s| s.parse().ok()),
        error_class: class,
        error: f.get("r").cloned(),
        duration_ms: f.get("d").and_then(|d| d.parse().ok()).unwrap_or(0),
        sent: f.get("x").map(String::as_str) != Some("0"),
        kind,
    })
}

/// A webhook's health figures from its hash at `now` (ms), and the fields
/// of buckets too old to count (to be deleted).
pub(super) fn figures_of(hash: &HashMap<String, String>, now: i64) -> (HealthFigures, Vec<String>) {
    let mut figures = HealthFigures::default();
    let mut counts = Counts {
        day_start: bucket(now) - 23 * 3600 * 1000 - 11 * BUCKET_MS,
        week_start: hour(now) - 167 * HOUR_MS,
        ..Counts::default()
    };
    for (field, value) in hash {
        let number = value.parse::<i64>().unwrap_or(0);
        match field.split_once(':') {
            Some((kind @ ("s" | "f" | "S" | "F"), at)) => counts.add(field, kind, at, number),
            _ => match field.as_str() {
                "last_success" => figures.last_success_ms = Some(number),
                "last_failure" => {
                    let error = hash.get("last_error").cloned().unwrap_or_default();
                    figures.last_failure = Some((number, error));
                }
                "waiting" => figures.waiting = number.max(0) as u64,
                _ => {}
            },
        }
    }
    let hour_start = now - 3600 * 1000;
    let mut sorted: Vec<(i64, u64, u64)> = counts
        .buckets
        .into_iter()
        .map(|(at, (s, f))| (at, s, f))
        .collect();
    sorted.sort_unstable();
    for &(at, s, f) in &sorted {
        figures.day.0 += s;
        figures.day.1 += f;
        // A bucket counts for the hour if it overlaps it.
        if at + BUCKET_MS > hour_start {
            figures.hour.0 += s;
            figures.hour.1 += f;
        }
    }
    figures.buckets = sorted;
    figures.hours = counts
        .hours
        .into_iter()
        .map(|(at, (s, f))| (at, s, f))
        .collect();
    figures.hours.sort_unstable();
    (figures, counts.stale)
}

/// Successes and failures per 5-minute bucket and per hour, as read.
#[derive(Default)]
struct Counts {
    buckets: HashMap<i64, (u64, u64)>,
    hours: HashMap<i64, (u64, u64)>,
    /// Fields of buckets older than the day (or hours older than the week).
    stale: Vec<String>,
    day_start: i64,
    week_start: i64,
}

impl Counts {
    /// Field `field` (`s:<at>`, `f:<at>`, `S:<at>`, `F:<at>`) counting `n`.
    fn add(&mut self, field: &str, kind: &str, at: &str, n: i64) {
        let Ok(at) = at.parse::<i64>() else { return };
        let (map, start) = match kind == "S" || kind == "F" {
            true => (&mut self.hours, self.week_start),
            false => (&mut self.buckets, self.day_start),
        };
        if at < start {
            self.stale.push(field.to_string());
            return;
        }
        let slot = map.entry(at).or_default();
        let n = n.max(0) as u64;
        if kind.eq_ignore_ascii_case("s") {
            slot.0 += n;
        } else {
            slot.1 += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_attempt_reads_back_as_written() {
        let fields: HashMap<&str, String> = [
            ("a", "1700000000123"),
            ("e", "evt_1"),
            ("t", "item.created"),
            ("n", "2"),
            ("c", "timeout"),
            ("r", "no response within 500 ms"),
            ("d", "501"),
            ("k", "replay"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
        let a = parse(&fields).unwrap();
        assert!(a.sent && !a.succeeded());
        let v = view(&a);
        assert_eq!(v["at"], "2023-11-14T22:13:20.123Z");
        assert_eq!((&v["attempt"], &v["status"]), (&json!(2), &Value::Null));
        assert_eq!(
            (&v["error_class"], &v["kind"]),
            (&json!("timeout"), &json!("replay"))
        );
        let filter = AttemptFilter {
            success: Some(false),
            event_id: Some("evt_1".into()),
            event_type: None,
        };
        assert!(matches(&a, &filter));
        assert!(!matches(
            &a,
            &AttemptFilter {
                success: Some(true),
                ..filter
            }
        ));
    }

    #[test]
    fn health_figures_count_the_day_and_the_hour_and_name_stale_buckets() {
        let now = 10 * 24 * HOUR_MS;
        let recent = bucket(now - 10 * 60 * 1000);
        let earlier = bucket(now - 5 * HOUR_MS);
        let old = bucket(now - 30 * HOUR_MS);
        let hash: HashMap<String, String> = [
            (format!("s:{recent}"), "3"),
            (format!("f:{recent}"), "1"),
            (format!("s:{earlier}"), "5"),
            (format!("f:{old}"), "7"),
            (format!("S:{}", hour(now)), "8"),
            ("last_success".to_string(), "123"),
            ("waiting".to_string(), "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
        let (figures, stale) = figures_of(&hash, now);
        assert_eq!(figures.day, (8, 1), "the day's buckets, not the old one");
        assert_eq!(figures.hour, (3, 1), "the last hour's bucket only");
        assert_eq!(stale, vec![format!("f:{old}")]);
        assert_eq!(figures.hours, vec![(hour(now), 8, 0)]);
        assert_eq!((figures.last_success_ms, figures.waiting), (Some(123), 2));
    }
}
