//! Events in: the envelope producers publish, its validation, and the event
//! catalogue that says which types exist.

mod catalogue;
mod envelope;
mod minify;

pub(crate) use catalogue::TEST_EVENT_BODY;
pub use catalogue::{Catalogue, CatalogueEntry, TEST_EVENT};
pub(crate) use envelope::bounded_key;
pub(crate) use envelope::is_valid_application_id;
pub use envelope::{Event, RejectReason, Rejection};
