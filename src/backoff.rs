//! Exponential backoff with full jitter between reconnect attempts: the
//! n-th wait is uniform in `[0, min(max, initial * multiplier^n)]`, so that
//! many canaries (or many agents) do not retry in lockstep.

use std::time::Duration;

use rand::Rng;

use crate::settings::BackoffConfig;

/// The state of one series of attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
}

impl Backoff {
    pub fn new(config: BackoffConfig) -> Self {
        Self { config, attempt: 0 }
    }

    /// The ceiling of the next wait, before jitter.
    pub fn ceiling(&self) -> Duration {
        let exp = self
            .config
            .multiplier
            .powi(self.attempt.min(64) as i32)
            .min(1e9);
        let secs = (self.config.initial.as_secs_f64() * exp).min(self.config.max.as_secs_f64());
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// The next wait (full jitter), advancing the series.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        if ceiling.is_zero() {
            return ceiling;
        }
        rand::rng().random_range(Duration::ZERO..=ceiling)
    }

    /// Starts a new series (after a successful connect).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_up_to_max_with_jitter_below_ceiling() {
        let mut b = Backoff::new(BackoffConfig {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max: Duration::from_millis(700),
        });
        let ceilings: Vec<_> = (0..5)
            .map(|_| {
                let c = b.ceiling();
                assert!(b.next_delay() <= c);
                c.as_millis()
            })
            .collect();
        assert_eq!(ceilings, vec![100, 200, 400, 700, 700]);
        b.reset();
        assert_eq!(b.ceiling().as_millis(), 100);
    }

    #[test]
    fn jitter_spreads_waits() {
        let mut b = Backoff::new(BackoffConfig {
            initial: Duration::from_secs(1),
            multiplier: 1.0,
            max: Duration::from_secs(1),
        });
        let waits: std::collections::HashSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(waits.len() > 10, "full jitter gives distinct waits");
    }
}
