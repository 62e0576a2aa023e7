//! The agent's own lateness. A probe or connect that times out while the
//! agent itself was late (a busy runtime, a starved process) says nothing
//! about the store: the answer may have sat in the socket while nobody
//! read it. A ticker wakes every [`TICK`] and records how late it woke;
//! canaries ask [`SchedulingLag::was_late`] before they declare a timeout
//! the store's, and retry once at once instead when it says yes (see
//! `canary`). The most lateness of the last [`WINDOW`] is exported as
//! `dbcanary_agent_scheduling_lag_seconds`, and the retries as
//! `dbcanary_agent_late_timeouts_total`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the ticker wakes.
pub const TICK: Duration = Duration::from_millis(50);

/// Lateness from which a timeout is suspect: more than the wake-up jitter
/// of a healthy runtime, far less than any probe timeout.
pub const LATE: Duration = Duration::from_millis(25);

/// How long after a late wake-up the agent still counts as late now
/// ([`SchedulingLag::late_now`]).
pub const LATE_FOR: Duration = Duration::from_millis(100);

/// How far back the exported maximum reaches.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Slots of one second each: the window's maximum is theirs.
const SLOTS: usize = 10;

/// The agent's lateness, shared by the ticker that measures it, every
/// canary that asks about it and the exposition that exports it.
#[derive(Debug)]
pub struct SchedulingLag {
    origin: Instant,
    /// Per second of the window: `(which second, most lateness in ns)`.
    slots: Mutex<[(u64, u64); SLOTS]>,
    /// When the ticker last woke (ns since `origin`).
    last_tick: AtomicU64,
    /// When a late tick last woke (ns since `origin`; 0: never).
    last_late: AtomicU64,
    /// Whether a ticker runs: only then does a ticker that has not woken
    /// for a while mean that the runtime is late right now.
    running: AtomicBool,
    retries: AtomicU64,
}

impl Default for SchedulingLag {
    fn default() -> Self {
        Self::new()
    }
}

impl SchedulingLag {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            slots: Mutex::new([(0, 0); SLOTS]),
            last_tick: AtomicU64::new(0),
            last_late: AtomicU64::new(0),
            running: AtomicBool::new(false),
            retries: AtomicU64::new(0),
        }
    }

    fn ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The ticker: wakes every [`TICK`] until `stop`, recording how late.
    pub async fn run(&self, stop: CancellationToken) {
        self.running.store(true, Ordering::Release);
        let mut next = Instant::now() + TICK;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(next) => {}
            }
            let woke = Instant::now();
            self.record(next, woke);
            // After a long stall, the next tick is a period from now rather
            // than a burst of catch-up ticks.
            next = (next + TICK).max(woke + TICK / 2);
        }
        self.running.store(false, Ordering::Release);
    }

    /// A wake-up due at `due` happened at `woke`.
    pub fn record(&self, due: Instant, woke: Instant) {
        let late = woke.saturating_duration_since(due);
        let at = self.ns(woke);
        self.last_tick.fetch_max(at, Ordering::AcqRel);
        if late >= LATE {
            self.last_late.fetch_max(at.max(1), Ordering::AcqRel);
        }
        let second = at / 1_000_000_000;
        let late_ns = u64::try_from(late.as_nanos()).unwrap_or(u64::MAX);
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut slots[(second % SLOTS as u64) as usize];
        if slot.0 != second {
            *slot = (second, 0);
        }
        slot.1 = slot.1.max(late_ns);
    }

    /// Whether the agent was late at some moment between `since` and now,
    /// or woke late itself for a timer due at `due`: a timeout then is
    /// suspect.
    pub fn was_late(&self, since: Instant, due: Instant) -> bool {
        let now = Instant::now();
        if now.saturating_duration_since(due) >= LATE {
            return true;
        }
        let last_late = self.last_late.load(Ordering::Acquire);
        if last_late != 0 && last_late >= self.ns(since) {
            return true;
        }
        self.overdue(now)
    }

    /// Whether the agent is late right now: a wake-up within the last
    /// [`LATE_FOR`] was late, or the ticker is overdue. Work that can wait
    /// (a connection attempt) waits while it is, rather than make it later.
    pub fn late_now(&self) -> bool {
        let now = Instant::now();
        let last_late = self.last_late.load(Ordering::Acquire);
        let lately = u64::try_from(LATE_FOR.as_nanos()).unwrap_or(u64::MAX);
        (last_late != 0 && self.ns(now).saturating_sub(last_late) < lately) || self.overdue(now)
    }

    /// A ticker that is overdue: the runtime has not run it yet.
    fn overdue(&self, now: Instant) -> bool {
        self.running.load(Ordering::Acquire)
            && self
                .ns(now)
                .saturating_sub(self.last_tick.load(Ordering::Acquire))
                >= u64::try_from((TICK + LATE).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The most lateness of the last [`WINDOW`] (ticks not run yet
    /// included: an overdue ticker is late by how overdue it is).
    pub fn recent_max(&self) -> Duration {
        let now = self.ns(Instant::now());
        let second = now / 1_000_000_000;
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let recorded = slots
            .iter()
            .filter(|(s, _)| second.saturating_sub(*s) < SLOTS as u64)
            .map(|(_, late)| *late)
            .max()
            .unwrap_or(0);
        let overdue = if self.running.load(Ordering::Acquire) {
            let due = self.last_tick.load(Ordering::Acquire)
                + u64::try_from(TICK.as_nanos()).unwrap_or(u64::MAX);
            now.saturating_sub(due)
        } else {
            0
        };
        Duration::from_nanos(recorded.max(overdue))
    }

    /// Counts a timeout retried because the agent was late.
    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Timeouts retried so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_late_wake_up_makes_what_spans_it_suspect_and_is_the_recent_max() {
        let lag = SchedulingLag::new();
        tokio::time::advance(Duration::from_secs(2)).await;
        let sent = Instant::now();
        assert!(!lag.was_late(sent, sent));
        tokio::time::advance(Duration::from_millis(300)).await;
        let woke = Instant::now();
        lag.record(woke - Duration::from_millis(200), woke);
        assert!(lag.was_late(sent, woke));
        assert_eq!(lag.recent_max(), Duration::from_millis(200));
        // Lateness before a probe was sent is not its business.
        tokio::time::advance(Duration::from_millis(10)).await;
        let later = Instant::now();
        assert!(!lag.was_late(later, later));
        // A timer that itself fired late is.
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(lag.was_late(later, later));
        // Late now, for a while after the late wake-up.
        assert!(!lag.late_now());
        lag.record(Instant::now() - LATE, Instant::now());
        assert!(lag.late_now());
        tokio::time::advance(LATE_FOR).await;
        assert!(!lag.late_now());
        // The window forgets.
        tokio::time::advance(WINDOW + Duration::from_secs(1)).await;
        assert_eq!(lag.recent_max(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn an_overdue_ticker_means_late_now() {
        let lag = std::sync::Arc::new(SchedulingLag::new());
        let stop = CancellationToken::new();
        let ticker = tokio::spawn({
            let (lag, stop) = (lag.clone(), stop.clone());
            async move { lag.run(stop).await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = Instant::now();
        assert!(!lag.was_late(now, now));
        assert!(lag.recent_max() < LATE);
        stop.cancel();
        ticker.await.unwrap();
    }
}
