//! The integration tests, in one binary (one link of the crate, one set-up
//! of shared helpers): a module per area, all against real RabbitMQ and
//! Redis, each test in a fresh namespace that `common` deletes afterwards.

mod common;

mod admin_api;
mod architecture;
mod backlog;
mod binary;
mod broker_restart;
mod cluster;
mod config;
mod dashboard;
mod data_safety;
mod deploy;
mod docs;
mod egress;
mod faults;
mod filters;
mod headers;
mod history;
mod isolation;
mod lifecycle;
mod metrics;
mod mtls;
mod oauth;
mod openapi;
mod ordering;
mod partitions;
mod pipeline;
mod rate_limit;
mod rejects;
mod replicas;
mod retries;
mod secrets;
mod sentinel;
mod shared_host;
mod ssrf;
