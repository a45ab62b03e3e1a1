//! webhook-fanout: fans banking events out of RabbitMQ to signed webhook
//! deliveries, with retries through TTL delay tiers and dead letters.
//!
//! ```text
//! producer ─► {ns}.events ─► {ns}.ingest ─► ingest::handle_event
//!                                            │ event::Event::parse (else ─► {ns}.rejected)
//!                                            │ subscription::SubscriptionCache (Redis + memory)
//!                                            │ ingest::fan_out ─► one delivery::DeliveryJob per webhook
//!                                            ▼ broker::ConfirmedPublisher (confirmed, then ack)
//!             {ns}.deliveries ─► {ns}.deliver ─► delivery::handle_job
//!                    ▲                            │ delivery::Signer, delivery::DeliveryClient
//!                    │ TTL expiry                 │ delivery::classify ─► Delivered | Retry | GiveUp
//!             {ns}.retry.<delay> ◄── retry::RetrySchedule::next ──┤
//!                                                                 ▼ past max age, disabled webhook
//!                                            dead_letter::park ─► {ns}.dead (stream) ─► list, replay, discard
//! ```
//!
//! Modules, following the data: [`event`] (envelope, catalogue),
//! [`subscription`] (Redis store, secret cipher, cache), [`broker`]
//! (connection, topology, confirmed publisher, queue depths), [`consume`]
//! (the shared consumer loop), [`ingest`] (fan out), [`delivery`] (deliver:
//! client, signing, SSRF policy, endpoint caps and breakers, outcome, hand
//! on), [`retry`] (the schedule), [`dead_letter`] (park, list, replay,
//! discard), [`admin`] (HTTP API and the dashboard page), [`metrics`],
//! [`health`], [`backoff`], [`clock`], [`config`], [`logging`] (buffered
//! stderr), and [`app`] (wiring and shutdown order).

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

pub use app::run;
pub use config::Settings;
