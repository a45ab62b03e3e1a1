//! Deliver: signing, the HTTP client, the pure
//! classification of an attempt, and the worker consuming `{ns}.deliver`.

mod client;
mod context;
mod disposition;
mod endpoint;
mod host;
mod outcome;
mod prepared;
mod publish;
mod signing;
mod target;
mod worker;

pub use client::{Attempt, AttemptResult, DeliveryClient, Transport, USER_AGENT_VALUE};
pub use context::DeliverContext;
pub use endpoint::{Admit, BreakerConfig, Endpoint, Endpoints};
pub use outcome::{Failure, Outcome, classify};
pub use prepared::{Prepared, PreparedWebhooks};
pub use signing::{Signer, bridge_signature, standard_signature};
pub use target::{TargetPolicy, is_public};
pub use worker::handle_job;
