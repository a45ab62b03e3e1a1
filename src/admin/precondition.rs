//! `If-Match` on the webhook resource: API clients make their own writes
//! compare-and-set against the `ETag` (the webhook's revision) they read.

use hyper::HeaderMap;
use hyper::header::IF_MATCH;

/// What a request's `If-Match` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IfMatch {
    /// No header: the write applies to whatever revision is current.
    Absent,
    /// `*`: any existing revision.
    Any,
    /// Only one of these revisions (tags that are not ours match nothing).
    Revisions(Vec<u64>),
}

impl IfMatch {
    /// Reads the header of `headers`.
    pub(crate) fn from_headers(headers: &HeaderMap) -> IfMatch {
        let values: Vec<&str> = headers
            .get_all(IF_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        if values.is_empty() {
            return IfMatch::Absent;
        }
        if values.contains(&"*") {
            return IfMatch::Any;
        }
        // Our tags are strong; a weak one never matches for a write.
        IfMatch::Revisions(
            values
                .iter()
                .filter_map(|v| v.strip_prefix('"')?.strip_suffix('"')?.parse().ok())
                .collect(),
        )
    }

    /// Whether a webhook at `revision` satisfies it.
    pub(crate) fn allows(&self, revision: u64) -> bool {
        match self {
            IfMatch::Absent | IfMatch::Any => true,
            IfMatch::Revisions(r) => r.contains(&revision),
        }
    }

    /// Whether the client pinned a revision (a conflict is then its 412,
    /// not a reason to read again and retry).
    pub(crate) fn pinned(&self) -> bool {
        matches!(self, IfMatch::Revisions(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> IfMatch {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(IF_MATCH, v.parse().unwrap());
        }
        IfMatch::from_headers(&h)
    }

    #[test]
    fn tags_stars_and_garbage() {
        assert_eq!(parse(&[]), IfMatch::Absent);
        assert_eq!(parse(&["*"]), IfMatch::Any);
        assert_eq!(parse(&["\"3\", \"5\""]), IfMatch::Revisions(vec![3, 5]));
        assert_eq!(parse(&["\"3\"", "W/\"5\""]), IfMatch::Revisions(vec![3]));
        let junk = parse(&["nonsense"]);
        assert!(
            junk.pinned() && !junk.allows(0),
            "an unknown tag matches nothing"
        );
        assert!(parse(&["\"7\""]).allows(7) && !parse(&["\"7\""]).allows(8));
        assert!(IfMatch::Any.allows(9) && !IfMatch::Any.pinned());
    }
}
