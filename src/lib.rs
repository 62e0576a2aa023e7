//! dbcanary holds one long-lived canary connection per data store, notices the
//! moment it drops, measures how long until the store answers again, and tells
//! a network drop from a restart from a failover.
//!
//! # Layout
//!
//! - [`config`]: the configuration file, environment overrides and target
//!   discovery, validated into runtime types; [`config::files`] reads the
//!   target files, [`config::shard`] splits the target list between agents.
//! - [`agent`]: the supervisor: one canary task per target, shutdown.
//! - [`sources`]: the task that keeps the agent's target list current
//!   (target files, each reloaded configuration).
//! - [`canary`]: the one generic state machine (connect → up → down → up)
//!   every store runs through; it only emits [`events`].
//! - [`classify`]: identity before and after an outage → its kind.
//! - [`backoff`]: exponential backoff with full jitter.
//! - [`stores`]: one module per store behind the [`stores::Store`] trait.
//! - [`telemetry`]: the recorder that turns events into series, log lines
//!   and the API state. [`telemetry::catalogue`] declares every metric
//!   once (Prometheus and OTel names, help, unit, instrument, label,
//!   seeding); `measure` maps each event to its changes once; `prometheus`
//!   keeps each target's series in one record and encodes `/metrics`;
//!   [`telemetry::state`] is the `/api/v1/targets` view; `log` writes each
//!   event's line; [`telemetry::otlp`] exports over OTLP (`export`
//!   pipelines, `metrics` built from the catalogue, `traces`).
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, `/api/v1/targets`.
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
pub mod listener;
pub mod model;
pub mod settings;
pub mod sources;
pub mod stores;
pub mod telemetry;
pub mod tls;
pub mod watch;
