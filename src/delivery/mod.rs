//! Deliver: signing, the HTTP client, the pure
//! classification of an attempt, and the worker consuming `{ns}.deliver`.

mod client;
mod context;
mod disposition;
mod endpoint;
mod heads;
mod host;
mod lifecycle;
mod order;
mod outcome;
mod prepared;
mod publish;
mod signing;
mod target;
mod worker;

pub(crate) use client::{Attempt, AttemptResult, DeliveryClient};
pub(crate) use context::DeliverContext;
pub(crate) use endpoint::{BreakerConfig, Endpoints};
pub(crate) use lifecycle::Lifecycle;
pub(crate) use outcome::{Outcome, classify};
pub(crate) use prepared::PreparedWebhooks;
pub(crate) use signing::Signer;
pub(crate) use target::TargetPolicy;
pub(crate) use worker::handle_job;
