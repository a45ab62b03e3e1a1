//! Deliver: the job wire format, signing, the HTTP client, the pure
//! classification of an attempt, and the worker consuming `{ns}.deliver`.

mod client;
mod endpoint;
mod hand_on;
pub mod job;
mod outcome;
mod prepared;
mod signing;
mod target;
mod worker;

pub use client::{Attempt, AttemptResult, DeliveryClient, Transport, USER_AGENT_VALUE};
pub use endpoint::{Admit, BreakerConfig, Endpoints};
pub use job::{AttemptRecord, DeliveryJob};
pub use outcome::{Failure, Outcome, classify};
pub use prepared::{Prepared, PreparedWebhooks};
pub use signing::{Signer, bridge_signature, standard_signature};
pub use target::{TargetPolicy, is_public};
pub use worker::{DeliverContext, handle_job};
