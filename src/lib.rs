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
//! [`dead_letter`] (list, replay, discard), [`admin`] (HTTP API and the
//! dashboard page), [`metrics`], [`health`], [`backoff`], [`clock`],
//! [`config`], [`logging`] (buffered stderr), and [`app`] (wiring and
//! shutdown order).
//!
//! Words around failures, the same in code, metrics, logs and docs:
//! *reject* (an invalid envelope, to `{ns}.rejected`), *defer* (a job put
//! back in a delay tier without a request), *schedule a retry* (after a
//! failed request), *dead-letter* (given up), *drop* (its webhook is gone).

pub mod admin;
pub mod app;
pub mod backoff;
pub mod broker;
pub mod clock;
pub mod config;
pub mod consume;
pub mod dead_letter;
pub mod delivery;
pub mod event;
pub mod health;
pub mod ingest;
pub mod job;
pub mod logging;
pub mod metrics;
pub mod retry;
pub mod subscription;
pub mod units;

pub use app::run;
pub use config::Settings;
