//! The values every key is checked against: duration ranges, the listen
//! address, target names, and the canary settings of `[defaults]` and of
//! each target.

use std::net::SocketAddr;
use std::time::Duration;

use super::{ConfigError, RawBackoff};
use crate::model::MetricDetail;
use crate::settings::CanarySettings;

pub(super) struct Ctx<'a> {
    pub(super) file: &'a str,
}

impl Ctx<'_> {
    /// A refusal; whatever value the reason quotes has its credentials
    /// masked (a URL pasted where a name belongs, say).
    pub(super) fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            key: key.into(),
            // Reasons quote values, and a URL pasted into the wrong key
            // (a name, a duration, the listen address) may carry a password.
            reason: crate::dburl::redact_text(&reason.into()),
        }
    }

    /// A whole number of `what` (TOML has one number type for users: `3.0`
    /// is accepted, `2.5` is not).
    fn count(&self, key: &str, n: f64, what: &str) -> Result<u32, ConfigError> {
        if n.fract() != 0.0 || !(0.0..=f64::from(u32::MAX)).contains(&n) {
            return Err(self.err(key, format!("must be a whole number of {what}, got {n}")));
        }
        Ok(n as u32)
    }

    /// A duration within `range` (every duration has one: an absurd value
    /// would otherwise overflow the clock or send thousands of probes a
    /// second).
    pub(super) fn ranged(
        &self,
        key: &str,
        v: &str,
        (min, max): (Duration, Duration),
    ) -> Result<Duration, ConfigError> {
        let d = parse_duration(v).map_err(|r| self.err(key, r))?;
        if d.is_zero() && !min.is_zero() {
            return Err(self.err(key, "must be greater than zero"));
        }
        if d < min || d > max {
            return Err(self.err(
                key,
                format!(
                    "{} is out of range: use {} to {}",
                    v.trim(),
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            ));
        }
        Ok(d)
    }

    pub(super) fn settings(
        &self,
        prefix: &str,
        raw: &RawSettingsRef<'_>,
        base: CanarySettings,
    ) -> Result<CanarySettings, ConfigError> {
        let mut s = base;
        if let Some(v) = raw.interval {
            s.interval = self.ranged(&format!("{prefix}interval"), v, ranges::INTERVAL)?;
        }
        if let Some(v) = raw.timeout {
            s.timeout = self.ranged(&format!("{prefix}timeout"), v, ranges::TIMEOUT)?;
        }
        if let Some(b) = raw.backoff {
            if let Some(v) = &b.initial {
                s.backoff.initial =
                    self.ranged(&format!("{prefix}backoff.initial"), v, ranges::BACKOFF)?;
            }
            if let Some(m) = b.multiplier {
                if !(1.0..=100.0).contains(&m) {
                    return Err(self.err(
                        format!("{prefix}backoff.multiplier"),
                        format!("must be between 1.0 and 100.0, got {m}"),
                    ));
                }
                s.backoff.multiplier = m;
            }
            if let Some(v) = &b.max {
                s.backoff.max = self.ranged(&format!("{prefix}backoff.max"), v, ranges::BACKOFF)?;
            }
            if s.backoff.max < s.backoff.initial {
                return Err(self.err(
                    format!("{prefix}backoff.max"),
                    "must not be smaller than backoff.initial",
                ));
            }
            if let Some(v) = &b.fine {
                s.backoff.fine = self.ranged(&format!("{prefix}backoff.fine"), v, ranges::FINE)?;
            }
            if let Some(v) = &b.fine_for {
                s.backoff.fine_for =
                    self.ranged(&format!("{prefix}backoff.fine_for"), v, ranges::FINE_FOR)?;
            }
            if let Some(n) = b.fine_not_ready {
                s.backoff.fine_not_ready = self.count(
                    &format!("{prefix}backoff.fine_not_ready"),
                    n,
                    "attempts (0 = \"not ready\" answers always back off)",
                )?;
            }
        }
        if let Some(n) = raw.identity_every {
            s.identity_every = self.count(
                &format!("{prefix}identity_every"),
                n,
                "probes (0 = only on connect)",
            )?;
        }
        if let Some(v) = raw.metrics {
            s.metrics = MetricDetail::parse(v).ok_or_else(|| {
                self.err(
                    format!("{prefix}metrics"),
                    format!("unknown value {v:?}: use \"basic\" (at most 40 series per target) or \"detailed\" (per-kind outage buckets, probe and connect latency histograms)"),
                )
            })?;
        }
        Ok(s)
    }
}

pub(super) struct RawSettingsRef<'a> {
    pub(super) interval: Option<&'a str>,
    pub(super) timeout: Option<&'a str>,
    pub(super) backoff: Option<&'a RawBackoff>,
    pub(super) identity_every: Option<f64>,
    pub(super) metrics: Option<&'a str>,
}

/// The range of every duration key.
pub mod ranges {
    use std::time::Duration;

    const MS: Duration = Duration::from_millis(1);
    const SEC: Duration = Duration::from_secs(1);
    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86400);

    pub const INTERVAL: (Duration, Duration) = (Duration::from_millis(10), DAY);
    pub const TIMEOUT: (Duration, Duration) = (Duration::from_millis(10), HOUR);
    pub const BACKOFF: (Duration, Duration) = (MS, HOUR);
    pub const FINE: (Duration, Duration) = (Duration::from_millis(5), SEC);
    pub const FINE_FOR: (Duration, Duration) = (Duration::ZERO, HOUR);
    pub const DEADLINE: (Duration, Duration) = (Duration::from_millis(10), DAY);
    /// `[otlp] timeout` and `export_interval`.
    pub const OTLP: (Duration, Duration) = (Duration::from_millis(10), DAY);
    /// `discovery.refresh_interval`.
    pub const REFRESH: (Duration, Duration) = (Duration::from_millis(100), HOUR);
}

/// A listen address: `127.0.0.1:9838`, `[::1]:9838`, or a host name with a
/// port (`localhost:9838`), resolved now to its first address.
pub fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    let example = "write e.g. \"127.0.0.1:9838\", \"[::1]:9838\" or \"localhost:9838\"";
    if !text.contains(':') {
        return Err(format!("{text:?} is not an address with a port: {example}"));
    }
    match std::net::ToSocketAddrs::to_socket_addrs(text) {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{text:?} resolves to no address")),
        Err(e) => Err(format!(
            "{text:?} is not an address like \"127.0.0.1:9838\" ({e}); {example}"
        )),
    }
}

/// Parses `"500ms"`, `"1s"`, `"2m"`.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    humantime::parse_duration(v.trim()).map_err(|e| {
        format!(
            "invalid duration {:?} ({e}); write e.g. \"500ms\", \"1s\", \"2m\"",
            crate::dburl::redact_text(v)
        )
    })
}

/// Whether a target name is acceptable (`[a-z0-9_-]+`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}
