//! The events canaries emit: the only thing a store's canary tells the rest of
//! the agent. Telemetry (metrics, logs, API state, `watch` lines) is derived
//! from these and nothing else, so every output tells the same story.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::model::ser::{secs as ser_secs, time as ser_time};
use crate::model::{
    AttemptResult, DisconnectCause, FailoverSource, Identity, OutageKind, ProbeResult, TargetInfo,
};

/// An outage that has ended.
#[derive(Debug, Clone, Serialize)]
pub struct OutageReport {
    /// Wall-clock moment the disconnect was detected.
    #[serde(serialize_with = "ser_time")]
    pub started_at: SystemTime,
    /// Wall-clock moment of the first successful probe.
    #[serde(serialize_with = "ser_time")]
    pub ended_at: SystemTime,
    /// The reconnect latency (monotonic clock).
    #[serde(serialize_with = "ser_secs")]
    pub duration: Duration,
    pub cause: DisconnectCause,
    pub kind: OutageKind,
    /// Why the kind is `unknown`, or what decided it.
    pub reason: String,
    /// Reconnect attempts, the successful one included.
    pub attempts: u32,
    /// The gap between the last failed attempt and the successful one: the
    /// error bar of `duration`.
    #[serde(serialize_with = "ser_secs")]
    pub resolution: Duration,
    pub before: Option<Identity>,
    pub after: Identity,
}

/// Everything a canary reports.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The canary task started.
    Started,
    /// One connection attempt ended (successful or not).
    ConnectAttempt {
        result: AttemptResult,
        #[serde(serialize_with = "ser_secs")]
        duration: Duration,
        /// Human-readable reason, free of credentials.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A new canary connection is up (its first probe succeeded).
    Connected { identity: Identity },
    /// One probe on a healthy connection.
    Probe {
        result: ProbeResult,
        #[serde(serialize_with = "ser_secs")]
        duration: Duration,
    },
    /// The canary connection was lost: an outage begins.
    Disconnected {
        cause: DisconnectCause,
        /// Wall-clock moment of detection.
        #[serde(serialize_with = "ser_time", rename = "detected_at")]
        at: SystemTime,
        detail: String,
    },
    /// An outage ended.
    Restored(Box<OutageReport>),
    /// A failover was seen.
    Failover {
        source: FailoverSource,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        to: String,
    },
    /// The identity of the server changed without an outage (role flip).
    IdentityChanged { identity: Identity },
    /// Something the operator should know that is not an outage (for example
    /// every Sentinel unreachable, or a RESP2 server without push support).
    Notice { message: String },
    /// The canary task stopped (shutdown or target removed).
    Stopped,
}

/// Receives every event of every canary.
pub trait EventSink: Send + Sync + 'static {
    fn emit(&self, target: &TargetInfo, event: &Event);
}
