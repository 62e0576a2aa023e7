//! The events canaries emit: the only thing a store's canary tells the rest of
//! the agent. Telemetry (metrics, logs, API state, `watch` lines) is derived
//! from these and nothing else, so every output tells the same story.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use tokio::time::Instant;

use crate::model::ser::{
    opt_secs as ser_opt_secs, opt_time as ser_opt_time, secs as ser_secs, time as ser_time,
};
use crate::model::{
    AttemptResult, DisconnectCause, FailoverSource, Identity, OutageKind, ProbeResult, TargetInfo,
};

/// What the canary saw of an outage's two ends: the earliest and the latest
/// moment each can have been.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bounds {
    /// The last moment the connection was known good; absent when the
    /// target had not answered since the agent started.
    #[serde(serialize_with = "ser_opt_time")]
    pub start_earliest: Option<SystemTime>,
    /// When the loss was detected.
    #[serde(serialize_with = "ser_time")]
    pub start_latest: SystemTime,
    /// The last moment the store was seen not serving (the start of the
    /// last failed reconnect attempt, the end of one that timed out; or the
    /// detection).
    #[serde(serialize_with = "ser_time")]
    pub end_earliest: SystemTime,
    /// When the store was seen serving again: the first successful probe
    /// on the new connection, or the moment a driver saw it serving within
    /// that attempt (`Connected::serving_since`).
    #[serde(serialize_with = "ser_time")]
    pub end_latest: SystemTime,
}

/// An outage that has ended.
#[derive(Debug, Clone, Serialize)]
pub struct OutageReport {
    /// The estimated moment the connection was lost: when the transport
    /// reported it, or when the probe that failed was sent; the agent's
    /// start for a target unreachable since then.
    #[serde(serialize_with = "ser_time")]
    pub started_at: SystemTime,
    /// Wall-clock moment the store was seen serving again (see
    /// [`Bounds::end_latest`]).
    #[serde(serialize_with = "ser_time")]
    pub ended_at: SystemTime,
    /// The reconnect latency, `ended_at - started_at` (monotonic clock).
    #[serde(serialize_with = "ser_secs")]
    pub duration: Duration,
    /// Where each end can lie.
    pub bounds: Bounds,
    /// The shortest and longest the outage can have been, from the bounds
    /// (no longest when the start is unknown).
    #[serde(serialize_with = "ser_secs", rename = "duration_min")]
    pub shortest: Duration,
    #[serde(serialize_with = "ser_opt_secs", rename = "duration_max")]
    pub longest: Option<Duration>,
    /// The target had not answered since the agent started: the outage
    /// began no later than the agent's start.
    pub start_unknown: bool,
    pub cause: DisconnectCause,
    pub kind: OutageKind,
    /// Why the kind is `unknown`, or what decided it.
    pub reason: String,
    /// Reconnect attempts, the successful one included.
    pub attempts: u32,
    /// The width of the bounds (both windows; the end window alone when the
    /// start is unknown): the error bar of `duration`.
    #[serde(serialize_with = "ser_secs")]
    pub resolution: Duration,
    /// The agent-wide attempt budget held some attempts back, widening the
    /// resolution.
    pub budget_limited: bool,
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
    /// The canary connection was lost (or the target did not answer its
    /// first attempt): an outage begins.
    Disconnected {
        cause: DisconnectCause,
        /// Wall-clock moment of detection.
        #[serde(serialize_with = "ser_time", rename = "detected_at")]
        at: SystemTime,
        /// The estimated moment of the loss (see [`OutageReport::started_at`]).
        #[serde(serialize_with = "ser_time")]
        started_at: SystemTime,
        /// The same on the monotonic clock, for the outage in progress.
        #[serde(skip)]
        since: Instant,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        start_unknown: bool,
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
    /// every Sentinel unreachable, or a Redis server without RESP3).
    Notice { message: String },
    /// The canary task stopped (shutdown or target removed).
    Stopped,
}

/// Receives every event of every canary.
pub trait EventSink: Send + Sync + 'static {
    fn emit(&self, target: &TargetInfo, event: &Event);
}

#[cfg(test)]
impl Event {
    /// A loss detected, and estimated, at `at` (for tests).
    pub fn lost_at(cause: DisconnectCause, at: SystemTime) -> Self {
        Self::Disconnected {
            cause,
            at,
            started_at: at,
            since: Instant::now(),
            start_unknown: false,
            detail: String::new(),
        }
    }
}

#[cfg(test)]
impl OutageReport {
    /// An outage whose bounds are its estimate (for tests).
    pub fn exact(
        started_at: SystemTime,
        duration: Duration,
        cause: DisconnectCause,
        kind: OutageKind,
    ) -> Self {
        let ended_at = started_at + duration;
        Self {
            started_at,
            ended_at,
            duration,
            bounds: Bounds {
                start_earliest: Some(started_at),
                start_latest: started_at,
                end_earliest: ended_at,
                end_latest: ended_at,
            },
            shortest: duration,
            longest: Some(duration),
            start_unknown: false,
            cause,
            kind,
            reason: String::new(),
            attempts: 1,
            resolution: Duration::ZERO,
            budget_limited: false,
            before: None,
            after: Identity::default(),
        }
    }
}
