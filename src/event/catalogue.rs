//! The event catalogue: data embedded in the binary (`catalogue.json`) that a
//! deployment may replace with `WF_EVENT_CATALOGUE`, so a new type needs no code.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The type sent only by the "send a test" call.
pub const TEST_EVENT: &str = "TEST_EVENT";

/// The exact body of every test delivery (contract section 4).
pub(crate) const TEST_EVENT_BODY: &str = r#"{"content":{"item_id":1234567890,"status":0,"user_uuid":"9a95b38f-f98b-417a-988b-9d0d584893e7"},"timestamp":1611681789,"type":"TEST_EVENT"}"#;

const EMBEDDED: &str = include_str!("catalogue.json");

/// One event type of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueEntry {
    /// The event type, also the routing key on `{ns}.events`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// `AIS`, `PIS`, or none for internal types.
    pub area: Option<String>,
    /// What the event means.
    pub description: String,
    /// Whether a webhook may subscribe to it.
    pub subscribable: bool,
    /// JSON pointer (RFC 6901) of its ordering key inside `content`, e.g.
    /// `/item_id`; none: its events are delivered unordered unless the
    /// producer sets `x-ordering-key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
}

/// The set of known event types.
#[derive(Debug, Clone)]
pub struct Catalogue {
    entries: Vec<CatalogueEntry>,
    types: HashSet<String>,
    /// Event type -> the JSON pointer of its ordering key.
    keys: HashMap<String, String>,
}

impl Catalogue {
    /// The catalogue embedded in the binary.
    pub fn embedded() -> Self {
        Self::from_json(EMBEDDED).expect("the embedded catalogue is valid")
    }

    /// Loads a deployment's catalogue file.
    pub(crate) fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_json(&text)
    }

    /// Parses and checks a catalogue: unique, non-empty types of at most 128 chars.
    pub(crate) fn from_json(text: &str) -> Result<Self, String> {
        let entries: Vec<CatalogueEntry> =
            serde_json::from_str(text).map_err(|e| format!("not a valid catalogue: {e}"))?;
        let mut types = HashSet::new();
        for entry in &entries {
            let t = &entry.event_type;
            if t.is_empty() || t.len() > 128 || t.contains(['*', '#']) {
                return Err(format!("invalid event type `{t}`"));
            }
            if !types.insert(t.clone()) {
                return Err(format!("event type `{t}` appears twice"));
            }
            if let Some(p) = &entry.ordering_key
                && !p.starts_with('/')
            {
                return Err(format!(
                    "ordering_key of `{t}` must be a JSON pointer starting with `/`, not `{p}`"
                ));
            }
        }
        if !entries.iter().any(|e| e.subscribable) {
            return Err("no subscribable event type".into());
        }
        let keys = entries
            .iter()
            .filter_map(|e| Some((e.event_type.clone(), e.ordering_key.clone()?)))
            .collect();
        Ok(Catalogue {
            entries,
            types,
            keys,
        })
    }

    /// Every entry, in file order.
    pub fn entries(&self) -> &[CatalogueEntry] {
        &self.entries
    }

    /// Whether `event_type` exists.
    pub fn contains(&self, event_type: &str) -> bool {
        self.types.contains(event_type)
    }

    /// The JSON pointer of `event_type`'s ordering key inside `content`.
    pub(crate) fn ordering_key(&self, event_type: &str) -> Option<&str> {
        self.keys.get(event_type).map(String::as_str)
    }

    /// Whether a webhook may subscribe to `event_type`.
    pub(crate) fn is_subscribable(&self, event_type: &str) -> bool {
        self.entries
            .iter()
            .any(|e| e.subscribable && e.event_type == event_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalogue_has_the_contract_types() {
        let c = Catalogue::embedded();
        let subscribable: Vec<&str> = c
            .entries()
            .iter()
            .filter(|e| e.subscribable)
            .map(|e| e.event_type.as_str())
            .collect();
        assert_eq!(subscribable.len(), 11);
        assert!(c.is_subscribable("payment.link.updated"));
        assert!(c.contains(TEST_EVENT) && !c.is_subscribable(TEST_EVENT));
        assert!(!c.contains("item.deleted"));
        assert_eq!(c.ordering_key("item.refreshed"), Some("/item_id"));
        assert_eq!(c.ordering_key("item.account.updated"), Some("/account_id"));
        assert_eq!(c.ordering_key("transfer.updated"), Some("/transfer_id"));
        assert_eq!(c.ordering_key(TEST_EVENT), None);
    }

    #[test]
    fn catalogue_round_trips_through_json() {
        let c = Catalogue::embedded();
        let text = serde_json::to_string(c.entries()).unwrap();
        assert_eq!(Catalogue::from_json(&text).unwrap().entries(), c.entries());
    }

    #[test]
    fn a_deployment_can_add_a_type_without_code() {
        let c = Catalogue::from_json(
            r#"[{"type":"card.created","area":"AIS","description":"x","subscribable":true}]"#,
        )
        .unwrap();
        assert!(c.is_subscribable("card.created"));
    }

    #[test]
    fn bad_catalogues_are_refused() {
        let dup = r#"[{"type":"a","area":null,"description":"","subscribable":true},
                      {"type":"a","area":null,"description":"","subscribable":true}]"#;
        assert!(Catalogue::from_json(dup).unwrap_err().contains("twice"));
        assert!(Catalogue::from_json("{}").is_err());
        let wildcard = r#"[{"type":"a.#","area":null,"description":"","subscribable":true}]"#;
        assert!(Catalogue::from_json(wildcard).is_err());
        let pointer = r#"[{"type":"a","area":null,"description":"","subscribable":true,"ordering_key":"id"}]"#;
        let e = Catalogue::from_json(pointer).unwrap_err();
        assert!(e.contains("JSON pointer"), "{e}");
    }

    #[test]
    fn test_event_body_is_compact_json_in_contract_order() {
        let v: serde_json::Value = serde_json::from_str(TEST_EVENT_BODY).unwrap();
        assert_eq!(v["type"], TEST_EVENT);
        assert!(TEST_EVENT_BODY.starts_with(r#"{"content":{"item_id":1234567890,"#));
    }
}
