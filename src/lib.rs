//! dbcanary holds one long-lived canary connection per data store, notices the
//! moment it drops, measures how long until the store answers again, and tells
//! a network drop from a restart from a failover.
//!
//! # Layout
//!
//! - [`config`]: the configuration file, environment overrides and target
//!   discovery, validated into runtime types.
//! - [`agent`]: the supervisor: one canary task per target, shutdown.
//! - [`canary`]: the one generic state machine (connect → up → down → up)
//!   every store runs through; it only emits [`events`].
//! - [`classify`]: identity before and after an outage → its kind.
//! - [`backoff`]: exponential backoff with full jitter.
//! - [`lag`]: the agent's own lateness, so that a timeout while the agent
//!   was late is not taken for the store's.
//! - [`stores`]: one module per store behind the [`stores::Store`] trait.
//! - [`telemetry`]: the recorder that turns events into series, log lines
//!   and the API state. [`telemetry::catalogue`] declares every metric
//!   once (Prometheus and OTel names, help, unit, instrument, label,
//!   seeding); `measure` maps each event to its changes once; `prometheus`
//!   keeps each target's series in one record and encodes `/metrics`;
//!   [`telemetry::state`] is the `/api/v1/targets` view; `log` writes each
//!   event's line; [`telemetry::otlp`] exports over OTLP (`export`
//!   pipelines, `metrics` built from the catalogue, `traces`).
//! - [`listener`]: `/metrics`, `/healthz`, `/readyz`, `/api/v1/targets`,
//!   with its timeouts and connection limit.
//! - [`dburl`]: database URLs with several hosts, and their redaction.
//! - [`cli`], [`check`], [`watch`]: the command line.
#![forbid(unsafe_code)]

pub mod agent;
pub mod apps;
pub mod backoff;
pub mod canary;
pub mod check;
pub mod classify;
pub mod cli;
pub mod config;
pub mod dburl;
pub mod events;
pub mod lag;
pub mod listener;
pub mod model;
pub mod settings;
pub mod stores;
pub mod telemetry;
pub mod tls;
pub mod watch;
