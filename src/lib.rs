//! dbcanary holds one long-lived canary connection per data store, notices the
//! moment it drops, measures how long until the store answers again, and tells
//! a network drop from a restart from a failover.
//!
//! # Layout
//!
//! Each layer imports only from the layers above it in this list
//! (`../shared/tools/modgraph` from the project root prints any cycle):
//!
//! - [`model`]: the words everyone speaks — [`model::StoreKind`] with one
//!   row per kind in [`model::KINDS`] (schemes and default ports, `store`
//!   label, `db.system.name`, discovery suffix, local default), the
//!   [`model::Identity`] of who answers, and the bounded enums that become
//!   label values. Imports nothing of the crate.
//! - [`settings`]: how a canary paces itself (plain data).
//! - [`dburl`]: database URLs with several hosts, and their redaction;
//!   [`tls`]: every rustls configuration, and "is this a TLS error".
//! - [`events`]: what canaries report, the only thing telemetry sees.
//! - [`classify`]: identity before and after an outage → its kind;
//!   [`backoff`]: reconnect pacing and the agent-wide attempt budget;
//!   [`lag`]: the agent's own lateness, so that a timeout while the agent
//!   was late is not taken for the store's; [`grid`]: the probes' shared
//!   10 ms grid, so that probes due together go out together.
//! - [`stores`]: the [`stores::Store`] trait, one module per store, and
//!   the one dispatch ([`stores::Options`], [`stores::with_store`]).
//! - [`canary`]: the one generic state machine every store runs through;
//!   [`apps`]: app recovery after a dependency's outage.
//! - [`config`]: the configuration file, environment overrides, discovery
//!   and `OTEL_*`, validated into runtime types; [`config::files`] reads
//!   the target files, [`config::shard`] splits the target list between
//!   agents.
//! - [`sources`]: the task that keeps the agent's target list current
//!   (target files, each reloaded configuration).
//! - [`telemetry`]: the recorder that turns events into series, log lines
//!   and the API state. [`telemetry::catalogue`] declares every metric
//!   once (Prometheus and OTel names, help, unit, instrument, label,
//!   seeding); `measure` maps each event to its changes once; `prometheus`
//!   keeps each target's series in one record and encodes `/metrics`;
//!   [`telemetry::state`] is the `/api/v1/targets` view; `log` writes each
//!   event's line; [`telemetry::otlp`] exports over OTLP (`export`
//!   pipelines, `metrics` built from the catalogue, `traces`).
//! - [`listener`]: `/metrics`, `/healthz`, `/readyz`, `/api/v1/targets`,
//!   with its timeouts and connection limit, and `/api/v1/drills`, which
//!   it hands to a [`listener::Drills`] (the agent's drill service).
//! - [`agent`]: the supervisor (one canary task per target, reload,
//!   shutdown); [`cli`], [`check`], [`watch`], [`drill`]: the command line
//!   ([`drill`] also holds the drill core, and [`drill::service`] runs it
//!   on the agent's canaries for the API).
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
pub mod drill;
pub mod events;
pub mod grid;
pub mod lag;
pub mod listener;
pub mod model;
pub mod settings;
pub mod sources;
pub mod stores;
pub mod telemetry;
pub mod tls;
pub mod watch;
