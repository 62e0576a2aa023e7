//! How a canary paces itself: plain data that the configuration fills in
//! and the canary, the backoff and the stores read.

use std::time::Duration;

use crate::model::MetricDetail;

/// How a canary paces itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CanarySettings {
    /// Time between probes.
    pub interval: Duration,
    /// Bound of every probe and every connection attempt.
    pub timeout: Duration,
    pub backoff: BackoffConfig,
    /// Re-read the identity every this many probes (0 = never).
    pub identity_every: u32,
    /// What the target exports on `/metrics` (`metrics = "basic"` or
    /// `"detailed"`).
    pub metrics: MetricDetail,
}

impl Default for CanarySettings {
    /// The built-in defaults (`[defaults]` when nothing is given).
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            backoff: BackoffConfig::default(),
            identity_every: 10,
            metrics: MetricDetail::Basic,
        }
    }
}

/// Reconnect pacing (`backoff = { initial, multiplier, max, fine, fine_for,
/// fine_not_ready }`): while an outage is young, attempts that cost the
/// server nothing (a refused or unanswered connect) come every `fine`, so
/// that the moment the store answers again is known that precisely; so do
/// the first `fine_not_ready` attempts a store answers with "not ready"
/// (starting up, shutting down, loading: it is about to serve, and each
/// such answer costs it a rejected connection); everything else, and every
/// attempt after `fine_for`, waits the exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffConfig {
    pub initial: Duration,
    pub multiplier: f64,
    pub max: Duration,
    /// The fine cadence (attempt start to attempt start).
    pub fine: Duration,
    /// How long into an outage the fine cadence lasts (zero: never).
    pub fine_for: Duration,
    /// How many "not ready" answers of one outage are retried at the fine
    /// cadence (zero: they all back off).
    pub fine_not_ready: u32,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(50),
            multiplier: 2.0,
            max: Duration::from_secs(1),
            fine: Duration::from_millis(20),
            fine_for: Duration::from_secs(10),
            fine_not_ready: 40,
        }
    }
}

/// The agent-wide limit on connection attempts, so that thousands of
/// canaries whose stores all went away at once do not hammer a network.
pub const DEFAULT_ATTEMPTS_PER_SECOND: u32 = 10_000;
