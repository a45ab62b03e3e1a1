//! webhook-fanout: fans banking events out of RabbitMQ to signed webhook
//! deliveries, with retries through TTL delay tiers and dead letters.
//!
//! ```text
//! producer ─► {ns}.events ─► {ns}.ingest ─► ingest::handle_event
//!                                            │ event::Event::parse (else reject ─► {ns}.rejected)
//!                                            │ subscription::SubscriptionCache (Redis + memory)
//!                                            │ ingest::fan_out ─► one job::DeliveryJob per webhook
//!                                            ▼ broker::ConfirmedPublisher (confirmed, then ack)
//!             {ns}.deliveries ─► {ns}.deliver ─► delivery::handle_job
//!                    ▲                            │ per-webhook cap and breaker (delivery::Endpoints)
//!                    │ TTL expiry                 │ delivery::Signer, delivery::DeliveryClient
//!                    │                            ▼ one Disposition ─► one Hop (pure)
//!             {ns}.retry.<delay> ◄── defer | schedule a retry ──┤
//!                                                               ▼ dead-letter (max age, disabled, refused)
//!                                               {ns}.dead (stream) ─► dead_letter: list, replay, discard
//! ```
//!
//! Modules, following the data: [`event`] (envelope, catalogue),
//! [`subscription`] (Redis store, secret cipher, cache), [`job`] (the
//! delivery job's wire format, shared by ingest, delivery and dead letters),
//! [`broker`] (connection, topology, confirmed publisher, queue depths),
//! [`consume`] (the shared consumer loop), [`ingest`] (fan out),
//! [`delivery`] (deliver: client, signing, SSRF policy, per-webhook caps and
//! breakers, outcome, disposition), [`retry`] (the schedule),
//! [`dead_letter`] (list, replay, paced catch-up, discard),
//! [`operational`] (operational events on `{ns}.operational`), [`admin`] (HTTP API and the
//! dashboard page), [`metrics`], [`health`], [`backoff`], [`clock`],
//! [`config`], [`units`], [`logging`] (buffered stderr), and [`app`]
//! (wiring and shutdown order).
//!
//! Layers: a module uses only modules of its own layer listed before it or
//! of the layers below; `tests/it/architecture.rs` fails on any cycle, among
//! the top-level modules or among the files of one module folder.
//!
//! ```text
//! 5 wiring          app (settings -> components, run, shutdown order)
//! 4 surfaces        admin (HTTP API, route table, dashboard)
//! 3 pipeline        consume, ingest, dead_letter, delivery
//! 2 infrastructure  logging, health, broker, subscription, operational
//! 1 values          units, clock, backoff, retry, event, job, metrics, config
//! ```
//!
//! `config` depends only on values (the retry schedule, durations): `app`
//! turns settings into topology and component settings. The delivery job
//! (`job`) is a value shared by ingest, delivery and dead letters. The
//! binary's code (CLI, subcommands, signals) is in `src/bin/webhook-fanout/`.
//!
//! Words around failures, the same in code, metrics, logs and docs:
//! *reject* (an invalid envelope, to `{ns}.rejected`), *defer* (a job put
//! back in a delay tier without a request), *schedule a retry* (after a
//! failed request), *dead-letter* (given up), *drop* (its webhook is gone).

// The library's public surface is deliberate: every `pub` item is reachable
// from outside the crate (the binary, tests, benchmarks use it), or it is
// `pub(crate)`. (For the library only: test and bench helpers may be `pub`.)
#![warn(unreachable_pub)]

pub mod admin;
pub mod app;
pub mod backlog;
mod backoff;
pub mod broker;
pub mod clock;
pub mod config;
mod consume;
pub mod dead_letter;
mod delivery;
pub mod event;
mod health;
mod ingest;
pub mod job;
pub mod logging;
pub mod metrics;
mod operational;
pub mod retry;
pub mod subscription;
mod units;

pub use app::run;
pub use config::Settings;
