//! Deliver: signing, the HTTP client, the pure classification of an
//! attempt, the worker draining the webhooks' backlogs, and the forwarding
//! of `{ns}.deliver` (jobs back from a delay tier) to them.

mod client;
mod context;
mod disposition;
mod drain;
mod endpoint;
mod forward;
mod host;
mod lifecycle;
mod oauth;
mod outcome;
mod pool;
mod prepared;
mod proxy;
mod publish;
mod rate;
mod shared;
mod signing;
mod streak;
mod target;
mod tls;
mod worker;

pub(crate) use client::{Attempt, AttemptResult, DeliveryClient};
pub(crate) use context::DeliverContext;
pub(crate) use drain::{Drain, drain};
pub(crate) use endpoint::{BreakerConfig, Endpoints};
pub(crate) use forward::forward_job;
pub(crate) use lifecycle::Lifecycle;
pub(crate) use outcome::{Outcome, classify};
pub(crate) use prepared::{PreparedWebhooks, request_headers};
pub(crate) use proxy::ProxySettings;
pub(crate) use rate::Rates;
pub(crate) use signing::Signer;
pub(crate) use target::TargetPolicy;
pub(crate) use tls::roots;
pub(crate) use worker::handle_job;
