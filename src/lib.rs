//! webhook-fanout: fans banking events out of RabbitMQ to signed webhook
//! deliveries, with retries through TTL delay tiers and dead letters.
//!
//! ```text
//! producer ─► {ns}.events ─► {ns}.ingest ─► ingest::partition (the router: by application)
//!                                            ▼ {ns}.ingest.<p>, or fanned out at once (the shortcut)
//!                                            │ event::Event::parse (else reject ─► {ns}.rejected)
//!                                            │ subscription::EventMarkers (claim the id, Redis)
//!                                            │ subscription::SubscriptionCache (Redis + memory)
//!                                            │ ingest::fan_out ─► one job::DeliveryJob per webhook
//!                                            ▼ backlog::route (confirmed, then ack)
//!             {ns}.backlog.<webhook> ─► delivery::drain ─► delivery::handle_job
//!                    ▲                            │ per-webhook cap, rate and breaker (delivery::Endpoints)
//!             {ns}.deliver (back from tiers)      │ delivery::Signer, delivery::DeliveryClient
//!                    ▲                            ▼ one Disposition ─► one Hop (pure)
//!                    │ TTL expiry                                    │
//!             {ns}.retry.<delay> ◄── defer | schedule a retry ───────┤
//!                                                                    ▼ dead-letter (max age, disabled, refused)
//!                                               {ns}.dead (stream) ─► dead_letter: list, replay, discard
//! ```
//!
//! Modules, following the data: [`event`] (envelope, catalogue),
//! [`filter`] (content filters in CEL: checked at save, run at fan-out),
//! [`subscription`] (the webhook store, secret cipher, cache, event
//! markers, history), [`ordering`] (ordering per key behind one door: the
//! keys' state, numbering at ingest, the gate at delivery), [`job`] (the delivery job's wire
//! format, shared by ingest, delivery and dead letters), [`broker`]
//! (connection, topology, confirmed publisher, queue depths), [`consume`]
//! (the shared consumer loop and its acks), [`ingest`] (partitions, the
//! router, fan-out), [`backlog`] (each webhook's queue: routing to it, its
//! registry), [`delivery`] (drain the backlogs: client, signing, SSRF
//! policy, per-webhook caps, rates and breakers, lifecycle, outcome,
//! disposition), [`retry`] (the schedule), [`dead_letter`] (list, replay,
//! paced catch-up, discard), [`operational`] (operational events on
//! `{ns}.operational`), [`admin`] (HTTP API and the dashboard page),
//! [`metrics`], [`health`], [`backoff`], [`clock`], [`config`], [`units`],
//! [`logging`] (buffered stderr), and [`app`] (wiring and shutdown order).
//! Each feature keeps its Redis keys and scripts beside its code, under the
//! namespace's `{ns}:` prefix.
//!
//! Layers: a module uses only modules of its own layer listed before it or
//! of the layers below; `tests/it/architecture.rs` fails on any cycle, among
//! the top-level modules or among the files of one module folder.
//!
//! ```text
//! 5 wiring          app (settings -> components, run, shutdown order)
//! 4 surfaces        admin (HTTP API, route table, dashboard)
//! 3 pipeline        consume, ingest, dead_letter, delivery
//! 2 infrastructure  logging, health, broker, subscription, ordering, operational, backlog
//! 1 values          units, clock, backoff, retry, event, filter, job, metrics, config
//! ```
//!
//! `config` depends only on values (the retry schedule, durations): `app`
//! turns settings into topology and component settings. The delivery job
//! (`job`) is a value shared by ingest, delivery and dead letters. The
//! binary's code (CLI, subcommands, signals) is in `src/bin/webhook-fanout/`.
//!
//! # Glossary
//!
//! One word per concept, the same in code, metrics, logs and docs.
//!
//! - *namespace* (`ns`): the prefix of every exchange, queue (`{ns}.…`) and
//!   Redis key (`{ns}:…`) of one deployment.
//! - *application*: a tenant; its *webhooks* (at most 10) are the
//!   subscriptions, each a URL, event types and secrets.
//! - *event*: what a producer publishes (the *envelope*); *job*: one event
//!   for one webhook, the unit of delivery; *attempt*: one pass of a job
//!   through the worker, *sent* when a request went out.
//! - *partition*: one of the `WF_INGEST_PARTITIONS` queues `{ns}.ingest.<p>`
//!   an application's events are fanned out from; a process *holds* a
//!   partition while it alone consumes it. The *router* moves events from
//!   `{ns}.ingest` to partitions; the *shortcut* is the router fanning out
//!   itself the events of partitions its own process holds, switched at a
//!   *barrier*.
//! - *fan out*: turn one event into one job per subscribed webhook whose
//!   *filter* (a CEL expression over the event, `crate::filter`) is true.
//! - *extra headers*: a webhook's own request headers, sent with each
//!   delivery besides the service's.
//! - *backlog*: a webhook's own queue of jobs waiting for it.
//! - *cap*: requests in flight per webhook (`WF_ENDPOINT_CONCURRENCY`) or
//!   per host; a *slot* is one place under a cap. *Rate limit*: a webhook's
//!   requests per period; a request takes its *turn*.
//! - *breaker* / *circuit*: per webhook, *open* after consecutive failed
//!   requests; a *probe* is the one request let through to test it.
//! - *tier*: a delay queue `{ns}.retry.<delay>` of the retry schedule;
//!   the *hold tier* is the short one ordered jobs wait in.
//! - *reject*: an invalid envelope or job moved aside to `{ns}.rejected`
//!   with its reason. *Defer*: a job put back in a tier without a request
//!   (its circuit is open). *Schedule a retry*: after a failed request.
//!   *Dead-letter*: give up, to the stream `{ns}.dead`. *Drop*: its webhook
//!   is gone; nothing to deliver.
//! - *disposition*: how one attempt ended; *hop*: where the job goes next
//!   (ack, a tier, the dead letters), planned by a pure function.
//! - *settle*: end a broker message, by an AMQP ack, a reject or a requeue
//!   (only that; see `consume::Settle`). *Resolve*: an operator's end of a
//!   dead letter, replayed or discarded (recorded in Redis, hidden from
//!   listings).
//! - *replay*: a dead letter sent again as a new job; a *catch-up* replays
//!   what a re-enabled webhook missed, paced at `WF_REPLAY_RATE`.
//! - *marker*: the Redis record claiming an event id for fan-out (3 days).
//! - *lifecycle*: a webhook disabled (`410`, the receiver asked, failing too
//!   long) and enabled again; its *streak* is its run of failed requests.
//! - *ordering key* (*key*): what `per_key` webhooks are ordered by; each
//!   job of a key gets a *sequence* number; the key's *head* is the one
//!   being delivered, the others are *held*.
//! - *operational event*: a lifecycle change published on `{ns}.operational`.
//! - *policy refused*: a URL the SSRF policy does not allow (`target_refused`
//!   when a job's URL is refused at delivery).

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
pub mod filter;
mod health;
mod ingest;
pub mod job;
pub mod logging;
pub mod metrics;
mod operational;
mod ordering;
pub mod retry;
pub mod subscription;
mod units;

pub use app::run;
pub use config::Settings;
