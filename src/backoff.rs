//! The pacing of reconnect attempts: a fine cadence while an outage is
//! young and the attempts cost the server nothing, else exponential backoff
//! with full jitter (the n-th wait is uniform in
//! `[0, min(max, initial * multiplier^n)]`, so that many canaries, or many
//! agents, do not retry in lockstep); and the agent-wide attempt budget
//! every canary draws from.

use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::model::{AttemptResult, ConnectResult};
use crate::settings::BackoffConfig;

/// The state of one series of attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
    /// "Not ready" answers of this series retried at the fine cadence.
    not_ready: u32,
}

impl Backoff {
    pub fn new(config: BackoffConfig) -> Self {
        Self {
            config,
            attempt: 0,
            not_ready: 0,
        }
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
        self.not_ready = 0;
    }

    /// When the attempt after one that started at `started` and failed with
    /// `result` may start, `into_outage` into the outage: at the fine cadence
    /// while the outage is younger than `fine_for` and the attempt cost the
    /// server nothing (refused, or nothing answered) or was one of the first
    /// `fine_not_ready` "not ready" answers, else after the backoff from now.
    pub fn next_attempt(
        &mut self,
        result: AttemptResult,
        started: Instant,
        into_outage: Duration,
    ) -> Instant {
        let fine = into_outage < self.config.fine_for
            && match result {
                AttemptResult::Connect(ConnectResult::Refused | ConnectResult::Timeout) => true,
                AttemptResult::Connect(ConnectResult::NotReady)
                    if self.not_ready < self.config.fine_not_ready =>
                {
                    self.not_ready += 1;
                    true
                }
                _ => false,
            };
        if fine {
            return started + self.config.fine;
        }
        Instant::now() + self.next_delay()
    }
}

/// How long no canary of the agent may have seen a loss before the first
/// reconnects after a wave of losses go (see [`AttemptBudget::settled`]).
pub const SETTLE: Duration = Duration::from_millis(10);

/// The agent-wide budget of connection attempts per second, a token bucket
/// shared by every canary of the agent. An attempt the budget holds back
/// waits its turn: the outage's resolution widens, and its report says so.
/// It also knows when the agent's canaries last saw a loss, so that the
/// reconnects after a wave of losses wait for the wave's detections.
#[derive(Debug)]
pub struct AttemptBudget {
    per_second: f64,
    /// Tokens left (negative: attempts already promised a later turn) and
    /// when they were counted.
    state: Mutex<(f64, Instant)>,
    /// When the latest loss was detected.
    last_loss: Mutex<Option<Instant>>,
}

impl AttemptBudget {
    /// A budget of `per_second` attempts, with a burst of a hundredth of a
    /// second's worth: the first attempts after thousands of losses at once
    /// are paced too, and leave the agent's CPU to the rest of its work.
    pub fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second.max(1));
        Self {
            per_second,
            state: Mutex::new((Self::burst(per_second), Instant::now())),
            last_loss: Mutex::new(None),
        }
    }

    /// A canary detected a loss at `at`.
    pub fn lost(&self, at: Instant) {
        let mut last = self.last_loss.lock().unwrap_or_else(|e| e.into_inner());
        *last = Some(last.map_or(at, |l| l.max(at)));
    }

    /// Waits, after a loss detected at `at`, while other canaries go on
    /// detecting theirs (a server that took thousands of connections with
    /// it): until none did for [`SETTLE`]. Returns at once when no loss
    /// came after this one, as after a loss of one target alone.
    pub async fn settled(&self, at: Instant) {
        loop {
            let last = *self.last_loss.lock().unwrap_or_else(|e| e.into_inner());
            let Some(last) = last.filter(|l| *l > at) else {
                return;
            };
            let quiet = last + SETTLE;
            if Instant::now() >= quiet {
                return;
            }
            tokio::time::sleep_until(quiet).await;
        }
    }

    fn burst(per_second: f64) -> f64 {
        (per_second / 100.0).max(1.0)
    }

    /// Waits for this attempt's turn; true when the budget held it back.
    pub async fn take(&self) -> bool {
        let wait = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let (tokens, at) = *st;
            let refilled = (tokens + (now - at).as_secs_f64() * self.per_second)
                .min(Self::burst(self.per_second));
            *st = (refilled - 1.0, now);
            if refilled >= 1.0 {
                return false;
            }
            Duration::from_secs_f64((1.0 - refilled) / self.per_second)
        };
        tokio::time::sleep(wait).await;
        true
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
            ..BackoffConfig::default()
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
            ..BackoffConfig::default()
        });
        let waits: std::collections::HashSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(waits.len() > 10, "full jitter gives distinct waits");
    }

    #[tokio::test(start_paused = true)]
    async fn cheap_failures_retry_at_the_fine_cadence_while_the_outage_is_young() {
        let mut b = Backoff::new(BackoffConfig::default());
        let t = Instant::now();
        let refused = AttemptResult::Connect(ConnectResult::Refused);
        let fine = BackoffConfig::default().fine;
        assert_eq!(b.next_attempt(refused, t, Duration::from_secs(1)), t + fine);
        let late = b.next_attempt(refused, t, Duration::from_secs(11));
        assert!(late <= Instant::now() + Duration::from_secs(1));
        // An attempt that reached the server backs off, however young.
        let auth = AttemptResult::Connect(ConnectResult::Auth);
        let mut b = Backoff::new(BackoffConfig {
            initial: Duration::from_secs(1),
            multiplier: 1.0,
            max: Duration::from_secs(1),
            ..BackoffConfig::default()
        });
        let waits: Vec<_> = (0..20)
            .map(|_| b.next_attempt(auth, t, Duration::ZERO) - Instant::now())
            .collect();
        assert!(waits.iter().any(|w| *w > fine), "{waits:?}");
        assert!(b.next_attempt(AttemptResult::Own("status"), t, Duration::ZERO) >= t);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_not_ready_answers_retry_at_the_fine_cadence_then_back_off() {
        let mut b = Backoff::new(BackoffConfig {
            initial: Duration::from_secs(1),
            multiplier: 1.0,
            max: Duration::from_secs(1),
            fine_not_ready: 3,
            ..BackoffConfig::default()
        });
        let t = Instant::now();
        let young = Duration::from_secs(1);
        let not_ready = AttemptResult::Connect(ConnectResult::NotReady);
        let fine = t + BackoffConfig::default().fine;
        for _ in 0..3 {
            assert_eq!(b.next_attempt(not_ready, t, young), fine);
        }
        let waits: Vec<_> = (0..20)
            .map(|_| b.next_attempt(not_ready, t, young))
            .collect();
        assert!(waits.iter().any(|w| *w > fine), "{waits:?}");
        // A new series (after a connect) starts the count again.
        b.reset();
        assert_eq!(b.next_attempt(not_ready, t, young), fine);
        // Past fine_for, not ready backs off at once.
        let mut b = Backoff::new(b.config);
        let old = Duration::from_secs(11);
        let waits: Vec<_> = (0..20).map(|_| b.next_attempt(not_ready, t, old)).collect();
        assert!(waits.iter().any(|w| *w > fine), "{waits:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn reconnects_wait_for_a_wave_of_losses_to_settle() {
        let budget = AttemptBudget::new(100);
        let first = Instant::now();
        budget.lost(first);
        // Alone: at once.
        budget.settled(first).await;
        assert_eq!(Instant::now(), first);
        // Others still losing theirs: until none did for SETTLE.
        let wave = [1, 4, 9].map(|ms| first + Duration::from_millis(ms));
        for at in wave {
            budget.lost(at);
        }
        budget.settled(first).await;
        assert_eq!(Instant::now(), wave[2] + SETTLE);
        // The wave's last loss waits for nobody.
        budget.settled(wave[2]).await;
        assert_eq!(Instant::now(), wave[2] + SETTLE);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_holds_attempts_to_its_rate() {
        let budget = AttemptBudget::new(1000);
        let start = Instant::now();
        let mut held = 0;
        for _ in 0..110 {
            if budget.take().await {
                held += 1;
            }
        }
        // A burst of 10 (a hundredth of a second's worth), then 100 more at
        // 1000/s.
        assert_eq!(held, 100);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(99) && took <= Duration::from_millis(101),
            "{took:?}"
        );
    }
}
