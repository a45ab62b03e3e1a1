//! The admin HTTP API (contract section 6), health and metrics, and the
//! dashboard page, on hyper 1.x.

mod auth;
mod catch_up_state;
mod context;
mod dashboard;
mod dead_letters;
mod error;
mod filters;
mod history;
mod http;
mod precondition;
mod replay;
mod request;
mod router;
mod routes;
mod server;
mod status;
mod tokens;
mod webhook_fields;
mod webhooks;

pub(crate) use context::AdminState;
pub use router::operations;
pub(crate) use server::serve;
