//! How a canary paces itself: plain data that the configuration fills in
//! and the canary, the backoff and the stores read.

use std::time::Duration;

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
}

impl Default for CanarySettings {
    /// The built-in defaults (`[defaults]` when nothing is given).
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            backoff: BackoffConfig::default(),
            identity_every: 10,
        }
    }
}

/// Backoff settings (`backoff = { initial, multiplier, max }`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffConfig {
    pub initial: Duration,
    pub multiplier: f64,
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(50),
            multiplier: 2.0,
            max: Duration::from_secs(1),
        }
    }
}
