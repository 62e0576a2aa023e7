//! The events canaries emit: the only thing a store's canary tells the rest of
//! the agent. Telemetry (metrics, logs, API state, `watch` lines) is derived
//! from these and nothing else, so every output tells the same story.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::stores::{Identity, StoreKind};

/// Result of one connection attempt (SPEC "reconnect attempt").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectResult {
    Ok,
    Refused,
    Timeout,
    Dns,
    Tls,
    Auth,
    NotReady,
    Protocol,
    Io,
    /// An application answered with a status it should not (`http` only).
    Status,
    /// An application's answer lacked the expected text (`http` only).
    Body,
}

impl ConnectResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Dns => "dns",
            Self::Tls => "tls",
            Self::Auth => "auth",
            Self::NotReady => "not_ready",
            Self::Protocol => "protocol",
            Self::Io => "io",
            Self::Status => "status",
            Self::Body => "body",
        }
    }
}

/// Why the canary connection became unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectCause {
    /// The server closed the connection (EOF).
    Closed,
    /// The connection was reset.
    Reset,
    /// A probe did not answer within the timeout.
    Timeout,
    /// A probe failed with an error.
    Error,
}

impl DisconnectCause {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Reset => "reset",
            Self::Timeout => "timeout",
            Self::Error => "error",
        }
    }
}

/// Result of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeResult {
    Ok,
    Error,
    Timeout,
}

impl ProbeResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Timeout => "timeout",
        }
    }
}

/// How an outage is classified when it ends (SPEC "outage").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutageKind {
    Failover,
    Restart,
    Network,
    Unknown,
}

impl OutageKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failover => "failover",
            Self::Restart => "restart",
            Self::Network => "network",
            Self::Unknown => "unknown",
        }
    }
}

/// Where a failover event was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverSource {
    /// An outage classified as failover.
    Outage,
    /// A Redis Sentinel `+switch-master` announcement.
    Sentinel,
    /// The store's topology monitoring saw the primary change.
    Topology,
}

impl FailoverSource {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Outage => "outage",
            Self::Sentinel => "sentinel",
            Self::Topology => "topology",
        }
    }
}

/// The static facts about the target an event belongs to.
#[derive(Debug, Clone)]
pub struct TargetInfo {
    pub name: String,
    pub store: StoreKind,
    /// Host and port of the endpoint, without credentials.
    pub endpoint: String,
}

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
        result: ConnectResult,
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

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_rfc3339_micros(*t).to_string())
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}
