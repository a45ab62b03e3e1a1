//! Events in: the envelope producers publish, its validation, and the event
//! catalogue that says which types exist.

mod catalogue;
mod envelope;
mod minify;

pub use catalogue::{Catalogue, CatalogueEntry, TEST_EVENT, TEST_EVENT_BODY};
pub use envelope::{Event, MAX_ENVELOPE_BYTES, RejectReason, Rejection, is_valid_application_id};
pub use minify::minify_json;
