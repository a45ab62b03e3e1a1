//! The admin HTTP API (contract section 6), health and metrics, and the
//! dashboard page, on hyper 1.x.

mod auth;
mod dashboard;
mod dead_letters;
mod error;
mod precondition;
mod request;
mod router;
mod server;
mod webhooks;

pub use auth::{Principal, Role, hash_token, new_token};
pub use error::ApiError;
pub use router::AdminState;
pub use server::serve;
