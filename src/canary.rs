//! The one generic canary every store runs through, an explicit state
//! machine: `Connecting` (with an outage open once an attempt failed, or
//! once the connection was lost) → `Up` → `Connecting` … It owns all timing
//! (tokio's monotonic clock), the reconnect pacing, classification and the
//! outage bookkeeping with its bounds, and reports everything as
//! [`Event`]s. Store code only connects, probes and says when its
//! transport closed.
//!
//! What an outage's bounds mean (docs/measuring.md, "Outage"):
//! - start: a close the transport reports is seen within one network round
//!   trip (the last probe's) plus the agent's own wake-up
//!   ([`TRANSPORT_SLACK`], or the lateness it measured lately); a failed or
//!   timed-out probe puts the estimate where that probe was sent, between
//!   the last good answer and the failure; a target that never answered since the canary started has an
//!   unknown start, estimated at the canary's start.
//! - end: the first successful probe on a new connection (or, where a
//!   driver saw the store serving earlier within that attempt, that
//!   moment: [`Connected::serving_since`]), no earlier than the last
//!   moment the store was seen not serving (the start of the last failed
//!   attempt, the end of one that timed out).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, timeout};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::backoff::{AttemptBudget, Backoff};
use crate::classify::classify;
use crate::events::{Bounds, Event, EventSink, OutageReport};
use crate::grid::on_grid;
use crate::lag::SchedulingLag;
use crate::model::{
    AttemptResult, ConnectResult, DisconnectCause, FailoverSource, Identity, OutageKind,
    ProbeResult, TargetInfo,
};
use crate::settings::CanarySettings;
use crate::stores::{Announcement, CloseSignal, ConnectError, Connected, Store, UseStore, attempt};

/// What the start bound of a transport-reported close allows beyond the
/// last probe's round trip: the agent's own delay in waking up to it.
pub const TRANSPORT_SLACK: Duration = Duration::from_millis(10);

/// How many more timeouts a probe gets, and how many more attempts a
/// connect, while the agent stays late: a stall of the whole process (a
/// CPU-starved host) can outlast one.
pub const LATE_EXTENSIONS: u32 = 3;

/// How long a connection attempt waits at most for the agent to be on
/// time again (a host that stays starved still gets its attempts).
pub const HOLD_WHILE_LATE: Duration = Duration::from_secs(1);

/// The two clocks at one moment: events carry wall-clock times, all
/// measuring is monotonic.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    mono: Instant,
    wall: SystemTime,
}

impl Anchor {
    fn now() -> Self {
        Self {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// The wall-clock time of a monotonic moment.
    fn wall(&self, t: Instant) -> SystemTime {
        if t >= self.mono {
            self.wall + (t - self.mono)
        } else {
            self.wall - (self.mono - t)
        }
    }
}

/// When a connection was lost, as far as the canary can tell.
#[derive(Debug, Clone, Copy)]
struct Loss {
    /// The estimate.
    at: Instant,
    /// The last moment the connection was known good (`None`: never).
    earliest: Option<Instant>,
    /// The detection.
    latest: Instant,
}

/// An outage in progress.
struct Outage {
    loss: Loss,
    anchor: Anchor,
    cause: DisconnectCause,
    /// Failed attempts so far.
    attempts: u32,
    /// The last moment the store was seen not serving: the start of the
    /// last failed attempt (its refusal or "not ready" came after that, at
    /// a moment the agent may have been late to see), or the end of one
    /// that timed out (nothing answered until then).
    last_seen_down: Option<Instant>,
    budget_limited: bool,
    /// An attempt was refused: nothing listened on the port (evidence of a
    /// restart when the uptimes cannot tell).
    refused: bool,
    /// The connection lost, let go at the first attempt's turn (after the
    /// loss was told).
    connection: Option<Box<dyn Send>>,
}

/// Where the canary stands.
enum State<C> {
    /// Opening a connection; `outage` is open once the target was lost, or
    /// once the first attempt failed.
    Connecting {
        outage: Option<Outage>,
        before: Option<Identity>,
    },
    /// Connected and probing.
    Up {
        conn: C,
        identity: Identity,
        closed: CloseSignal,
    },
    Stopped,
}

/// Why the up phase ended.
enum UpEnd {
    Shutdown,
    Lost {
        cause: DisconnectCause,
        detail: String,
        loss: Loss,
    },
}

/// What the up phase knows of the last good round trip.
#[derive(Debug, Clone, Copy)]
struct Health {
    /// When the last successful round trip ended.
    last_ok: Instant,
    /// How long it took.
    rtt: Duration,
}

impl Health {
    /// A loss the transport reported just now, to an agent that may have
    /// woken up to it `slack` late.
    fn closed_now(&self, slack: Duration) -> Loss {
        let now = Instant::now();
        let allowance = self.rtt + slack;
        let earliest = now
            .checked_sub(allowance)
            .map_or(self.last_ok, |t| t.max(self.last_ok));
        Loss {
            at: now,
            earliest: Some(earliest),
            latest: now,
        }
    }

    /// A silent loss the transport's own monitoring reported just now (a
    /// MongoDB heartbeat that timed out): the server stopped answering
    /// after the last good answer, and at least `timeout` ago, when the
    /// request that timed out was sent at the latest.
    fn timed_out_now(&self, timeout: Duration) -> Loss {
        let sent = Instant::now()
            .checked_sub(timeout)
            .map_or(self.last_ok, |t| t.max(self.last_ok));
        self.failed_now(sent)
    }

    /// A loss seen by a round trip sent at `sent` that failed just now.
    fn failed_now(&self, sent: Instant) -> Loss {
        Loss {
            at: sent,
            earliest: Some(self.last_ok),
            latest: Instant::now(),
        }
    }
}

/// One canary: a store, its target and where its events go.
pub struct Canary<S: Store> {
    store: S,
    target: Arc<TargetInfo>,
    settings: CanarySettings,
    sink: Arc<dyn EventSink>,
    budget: Option<Arc<AttemptBudget>>,
    lag: Option<Arc<SchedulingLag>>,
}

impl<S: Store> Canary<S> {
    pub fn new(
        store: S,
        target: Arc<TargetInfo>,
        settings: CanarySettings,
        sink: Arc<dyn EventSink>,
    ) -> Self {
        Self {
            store,
            target,
            settings,
            sink,
            budget: None,
            lag: None,
        }
    }

    /// How late the agent may have woken up to a close the transport
    /// reported: [`TRANSPORT_SLACK`], or more when it was measured late in
    /// the last seconds (its CPU starved, its runtime busy).
    fn wake_slack(&self) -> Duration {
        self.lag
            .as_ref()
            .map_or(TRANSPORT_SLACK, |l| l.recent_max().max(TRANSPORT_SLACK))
    }

    /// Asks `lag` before taking a timeout for the store's: a probe that
    /// timed out while the agent itself was late waits one more timeout
    /// for its answer, and a connect attempt is made again at once (each
    /// up to [`LATE_EXTENSIONS`] times while the agent stays late), before
    /// a loss is declared or an outage opened.
    pub fn with_lag(mut self, lag: Arc<SchedulingLag>) -> Self {
        self.lag = Some(lag);
        self
    }

    /// Whether a timeout of what started at `since` (due at `due`) is the
    /// agent's own doing; counts it when it is.
    fn late(&self, since: Instant, due: Instant) -> bool {
        let late = self.lag.as_ref().is_some_and(|l| l.was_late(since, due));
        if late && let Some(l) = &self.lag {
            l.retried();
        }
        late
    }

    /// Draws every connection attempt from the agent-wide `budget`.
    pub fn with_budget(mut self, budget: Arc<AttemptBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    fn emit(&self, event: Event) {
        self.sink.emit(&self.target, &event);
    }

    /// Runs until `shutdown` is cancelled. The store's announcements are
    /// polled in the same task, so nothing outlives the canary.
    pub async fn run(self, shutdown: CancellationToken) {
        let (tx, rx) = mpsc::channel(16);
        let announce = async {
            self.store.announce(tx).await;
            std::future::pending::<()>().await;
        };
        tokio::select! {
            _ = self.main_loop(rx, &shutdown) => {}
            _ = announce => {}
        }
        self.emit(Event::Stopped);
    }

    async fn main_loop(&self, ann: mpsc::Receiver<Announcement>, shutdown: &CancellationToken) {
        let mut ann = Announcements(Some(ann));
        self.emit(Event::Started);
        let started = Instant::now();
        let mut backoff = Backoff::new(self.settings.backoff);
        let mut state = State::Connecting {
            outage: None,
            before: None,
        };
        loop {
            state = match state {
                // Boxed: only one of the two phases is ever live, and the
                // connecting one is the larger; an idle canary task keeps
                // only what the healthy phase needs.
                State::Connecting { outage, before } => {
                    Box::pin(self.connecting(
                        outage,
                        before,
                        started,
                        &mut backoff,
                        &mut ann,
                        shutdown,
                    ))
                    .await
                }
                State::Up {
                    conn,
                    identity,
                    closed,
                } => match self.up(conn, identity, closed, &mut ann, shutdown).await {
                    (UpEnd::Shutdown, _, _) => State::Stopped,
                    (
                        UpEnd::Lost {
                            cause,
                            detail,
                            loss,
                        },
                        identity,
                        conn,
                    ) => {
                        let mut outage = self.lost(cause, loss, false, detail);
                        outage.connection = conn.map(|c| Box::new(c) as Box<dyn Send>);
                        backoff.reset();
                        State::Connecting {
                            outage: Some(outage),
                            before: Some(identity),
                        }
                    }
                },
                State::Stopped => return,
            };
        }
    }

    /// Opens an outage and says so.
    fn lost(
        &self,
        cause: DisconnectCause,
        loss: Loss,
        start_unknown: bool,
        detail: String,
    ) -> Outage {
        let anchor = Anchor::now();
        self.emit(Event::Disconnected {
            cause,
            at: anchor.wall(loss.latest),
            started_at: anchor.wall(loss.at),
            since: loss.at,
            start_unknown,
            detail,
        });
        if let Some(budget) = &self.budget {
            budget.lost(loss.latest);
        }
        Outage {
            loss,
            anchor,
            cause,
            attempts: 0,
            last_seen_down: None,
            budget_limited: false,
            refused: false,
            connection: None,
        }
    }

    /// Attempts until one succeeds (→ `Up`) or the canary is shut down. The
    /// first attempt after a loss goes at once, as an application's would.
    async fn connecting(
        &self,
        mut outage: Option<Outage>,
        before: Option<Identity>,
        started: Instant,
        backoff: &mut Backoff,
        ann: &mut Announcements,
        shutdown: &CancellationToken,
    ) -> State<S::Conn> {
        // A timed-out attempt while the agent was late goes again at once
        // (up to [`LATE_EXTENSIONS`] times in a row), before it opens an
        // outage or waits the backoff.
        let mut late_retries = 0;
        loop {
            if shutdown.is_cancelled() {
                return State::Stopped;
            }
            // The first attempt after a loss goes at once, but after the
            // other canaries woken by the same event (a server that took
            // thousands of connections with it) have seen theirs: detection
            // first; the lost connection is let go, and the attempt made,
            // in the budget's turn.
            if let Some(detected) = outage
                .as_ref()
                .filter(|o| o.attempts == 0)
                .map(|o| o.loss.latest)
            {
                tokio::task::yield_now().await;
                if let Some(budget) = &self.budget {
                    budget.settled(detected).await;
                }
            }
            // A first connect (no outage open) waits while the agent is
            // late: its timeout would open a false outage. In an outage,
            // attempts go in the budget's turn (a late timeout then is
            // retried, and the end is what matters).
            if outage.is_none() {
                self.hold_while_late(shutdown).await;
            }
            if let Some(budget) = &self.budget
                && budget.take().await
                && let Some(o) = &mut outage
            {
                o.budget_limited = true;
            }
            if let Some(o) = &mut outage {
                drop(o.connection.take());
            }
            let attempt_start = Instant::now();
            let result = self.attempt().await;
            let attempt_end = Instant::now();
            let duration = attempt_end - attempt_start;
            match result {
                Ok(Connected {
                    conn,
                    mut identity,
                    closed,
                    serving_since,
                }) => {
                    self.emit(Event::ConnectAttempt {
                        result: ConnectResult::Ok.into(),
                        duration,
                        error: None,
                    });
                    identity.read_at.get_or_insert(attempt_end);
                    identity.read_within = duration;
                    if let Some(o) = outage {
                        let end = serving_since
                            .map_or(attempt_end, |t| t.clamp(attempt_start, attempt_end));
                        self.restored(o, before.as_ref(), &identity, end);
                    }
                    self.emit(Event::Connected {
                        identity: identity.clone(),
                    });
                    return State::Up {
                        conn,
                        identity,
                        closed,
                    };
                }
                Err(e) => {
                    let result = e.result;
                    let timed_out = result == AttemptResult::Connect(ConnectResult::Timeout);
                    if timed_out
                        && late_retries < LATE_EXTENSIONS
                        && self.late(attempt_start, attempt_start + self.settings.timeout)
                    {
                        late_retries += 1;
                        self.emit(Event::ConnectAttempt {
                            result,
                            duration,
                            error: Some(format!(
                                "{} (the agent itself was late: trying again at once)",
                                e.message
                            )),
                        });
                        continue;
                    }
                    late_retries = 0;
                    let o = outage.get_or_insert_with(|| {
                        // Never answered since the canary started: an outage
                        // whose true start is unknown.
                        let loss = Loss {
                            at: started,
                            earliest: None,
                            latest: attempt_end,
                        };
                        self.lost(DisconnectCause::Unreachable, loss, true, e.message.clone())
                    });
                    self.emit(Event::ConnectAttempt {
                        result,
                        duration,
                        error: Some(e.message),
                    });
                    o.attempts += 1;
                    o.last_seen_down = Some(if timed_out {
                        attempt_end
                    } else {
                        attempt_start
                    });
                    o.refused |= result == ConnectResult::Refused;
                    let into_outage = attempt_end - o.loss.at;
                    let until = backoff.next_attempt(result, attempt_start, into_outage);
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return State::Stopped,
                            _ = tokio::time::sleep_until(until) => break,
                            a = ann.next() => self.announced(a),
                        }
                    }
                }
            }
        }
    }

    /// Holds a connection attempt back while the agent itself is late (up
    /// to [`HOLD_WHILE_LATE`]): a wave of connects (thousands of targets
    /// starting) must not make the agent later still, and time out against
    /// stores that answer.
    async fn hold_while_late(&self, shutdown: &CancellationToken) {
        let Some(lag) = &self.lag else {
            return;
        };
        let until = Instant::now() + HOLD_WHILE_LATE;
        while lag.late_now() && Instant::now() < until && !shutdown.is_cancelled() {
            tokio::time::sleep(crate::lag::TICK).await;
        }
    }

    async fn attempt(&self) -> Result<Connected<S::Conn>, ConnectError> {
        let r = attempt(&self.store, self.settings.timeout).await;
        self.tell();
        r
    }

    /// Emits what the store has to tell the operator.
    fn tell(&self) {
        for message in self.store.notices() {
            self.emit(Event::Notice { message });
        }
    }

    fn restored(&self, o: Outage, before: Option<&Identity>, after: &Identity, end: Instant) {
        let loss = o.loss;
        let end_earliest = o.last_seen_down.unwrap_or(loss.latest).min(end);
        let duration = end.saturating_duration_since(loss.at);
        let start_width = loss
            .earliest
            .map_or(Duration::ZERO, |e| loss.latest.saturating_duration_since(e));
        let end_width = end - end_earliest;
        let longest = loss.earliest.map(|e| end.saturating_duration_since(e));
        let c = classify(before, after, longest.unwrap_or(duration), o.refused);
        let wall = |t| o.anchor.wall(t);
        let report = OutageReport {
            started_at: wall(loss.at),
            ended_at: wall(end),
            duration,
            bounds: Bounds {
                start_earliest: loss.earliest.map(wall),
                start_latest: wall(loss.latest),
                end_earliest: wall(end_earliest),
                end_latest: wall(end),
            },
            shortest: end_earliest.saturating_duration_since(loss.latest),
            longest,
            start_unknown: loss.earliest.is_none(),
            cause: o.cause,
            kind: c.kind,
            reason: c.reason,
            attempts: o.attempts + 1,
            resolution: start_width + end_width,
            budget_limited: o.budget_limited,
            before: before.cloned(),
            after: after.clone(),
        };
        let failover = report.kind == OutageKind::Failover;
        self.emit(Event::Restored(Box::new(report)));
        if failover {
            self.emit(Event::Failover {
                source: FailoverSource::Outage,
                from: before.and_then(describe),
                to: describe(after).unwrap_or_default(),
            });
        }
    }

    /// The healthy phase: probe every interval, watch the transport, re-read
    /// the identity now and then. Gives back how it ended, the identity
    /// last read and, when it was lost, the connection.
    async fn up(
        &self,
        mut conn: S::Conn,
        mut identity: Identity,
        mut closed: CloseSignal,
        ann: &mut Announcements,
        shutdown: &CancellationToken,
    ) -> (UpEnd, Identity, Option<S::Conn>) {
        let interval = self.settings.interval;
        // On the shared grid (`grid`): a late tick is skipped, not
        // delayed, so that the probes stay on it.
        let mut ticker = tokio::time::interval_at(on_grid(Instant::now() + interval), interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut probes: u32 = 0;
        let mut health = Health {
            last_ok: Instant::now(),
            rtt: identity.read_within,
        };
        // One wait for the whole phase, not one made and dropped per probe.
        let mut wait = std::pin::pin!(shutdown.cancelled());
        let mut stop = Stop {
            token: shutdown,
            wait: wait.as_mut(),
            waker: None,
        };
        loop {
            let end = tokio::select! {
                biased;
                _ = &mut stop => {
                    let _ = timeout(self.settings.timeout, self.store.close(conn)).await;
                    return (UpEnd::Shutdown, identity, None);
                }
                cause = closed.closed() => Some(if cause == DisconnectCause::Timeout {
                    UpEnd::Lost {
                        cause,
                        detail: "the store's own monitoring timed out (a silent server)".into(),
                        loss: health.timed_out_now(self.settings.timeout),
                    }
                } else {
                    UpEnd::Lost {
                        cause,
                        detail: "the transport reported the connection closed".into(),
                        loss: health.closed_now(self.wake_slack()),
                    }
                }),
                a = ann.next() => {
                    let failover = matches!(a, Announcement::Failover { .. });
                    self.announced(a);
                    // Who answers now, at once rather than at the next
                    // periodic refresh; the failover is already counted.
                    if failover {
                        self.refresh_identity(&mut conn, &mut identity, &mut health, true).await
                    } else {
                        None
                    }
                }
                _ = ticker.tick() => {
                    match self.probe(&mut conn, &mut health).await {
                        Some(lost) => Some(lost),
                        None => {
                            probes = probes.wrapping_add(1);
                            let every = self.settings.identity_every;
                            if every > 0 && probes.is_multiple_of(every) {
                                self.refresh_identity(&mut conn, &mut identity, &mut health, false).await
                            } else {
                                None
                            }
                        }
                    }
                }
            };
            if let Some(end) = end {
                return (end, identity, Some(conn));
            }
        }
    }

    /// One probe; `Some` when it lost the connection. A probe that timed
    /// out while the agent itself was late gets one more timeout to answer
    /// (the same request: its answer may be waiting in the socket).
    async fn probe(&self, conn: &mut S::Conn, health: &mut Health) -> Option<UpEnd> {
        let sent = Instant::now();
        let limit = self.settings.timeout;
        let r = {
            let mut answer = std::pin::pin!(self.store.probe(conn));
            // Each wait is judged by the agent's lateness during it alone.
            let (mut since, mut extensions) = (sent, 0);
            loop {
                match timeout(limit, &mut answer).await {
                    Err(_) if extensions < LATE_EXTENSIONS && self.late(since, since + limit) => {
                        extensions += 1;
                        since = Instant::now();
                    }
                    r => break r,
                }
            }
        };
        let duration = sent.elapsed();
        match r {
            Ok(Ok(())) => {
                self.emit(Event::Probe {
                    result: ProbeResult::Ok,
                    duration,
                });
                *health = Health {
                    last_ok: Instant::now(),
                    rtt: duration,
                };
                None
            }
            Ok(Err(e)) => {
                self.emit(Event::Probe {
                    result: ProbeResult::Error,
                    duration,
                });
                Some(UpEnd::Lost {
                    cause: e.cause,
                    detail: format!("probe failed: {}", e.message),
                    loss: health.failed_now(sent),
                })
            }
            Err(_) => {
                self.emit(Event::Probe {
                    result: ProbeResult::Timeout,
                    duration,
                });
                Some(UpEnd::Lost {
                    cause: DisconnectCause::Timeout,
                    detail: format!(
                        "probe timed out after {}",
                        humantime::format_duration(self.settings.timeout)
                    ),
                    loss: health.failed_now(sent),
                })
            }
        }
    }

    /// Re-reads the identity on the live connection; a role change is a
    /// failover seen through the store's topology, unless the store has just
    /// `announced` it or announces every role change itself.
    async fn refresh_identity(
        &self,
        conn: &mut S::Conn,
        identity: &mut Identity,
        health: &mut Health,
        announced: bool,
    ) -> Option<UpEnd> {
        let sent = Instant::now();
        let fresh = timeout(self.settings.timeout, self.store.identify(conn)).await;
        self.tell();
        let fresh = match fresh {
            Ok(Ok(mut fresh)) => {
                let now = Instant::now();
                fresh.read_at.get_or_insert(now);
                fresh.read_within = now - sent;
                health.last_ok = now;
                fresh
            }
            Ok(Err(e)) => {
                return Some(UpEnd::Lost {
                    cause: e.cause,
                    detail: format!("identity refresh failed: {}", e.message),
                    loss: health.failed_now(sent),
                });
            }
            Err(_) => {
                return Some(UpEnd::Lost {
                    cause: DisconnectCause::Timeout,
                    detail: "identity refresh timed out".into(),
                    loss: health.failed_now(sent),
                });
            }
        };
        let changed = fresh.role != identity.role || fresh.server_id != identity.server_id;
        if changed {
            // A role that became unreadable is not a failover; only a known
            // role that flipped (e.g. MySQL read_only turned on) is.
            let flipped = matches!((identity.role, fresh.role), (Some(a), Some(b)) if a != b);
            if flipped && !announced && !self.store.announces_role_changes() {
                self.emit(Event::Failover {
                    source: FailoverSource::Topology,
                    from: describe(identity),
                    to: describe(&fresh).unwrap_or_default(),
                });
            }
            self.emit(Event::IdentityChanged {
                identity: fresh.clone(),
            });
        }
        *identity = fresh;
        None
    }

    fn announced(&self, a: Announcement) {
        match a {
            Announcement::Failover { source, from, to } => self.emit(Event::Failover {
                source,
                from: Some(from),
                to,
            }),
            Announcement::Notice(message) => self.emit(Event::Notice { message }),
        }
    }
}

/// The store's announcements, as the canary waits for them: a store that
/// announces nothing (its sender is gone) costs no poll of the channel.
struct Announcements(Option<mpsc::Receiver<Announcement>>);

impl Announcements {
    async fn next(&mut self) -> Announcement {
        if let Some(rx) = &mut self.0 {
            if let Some(a) = rx.recv().await {
                return a;
            }
            self.0 = None;
        }
        std::future::pending().await
    }
}

/// The shutdown wait of a healthy phase, polled at every wake of the
/// canary (each probe): it asks the token's flag, and polls the wait
/// itself (which takes the token's lock) only the first time, once
/// cancelled, or for another waker.
struct Stop<'t, 'w> {
    token: &'t CancellationToken,
    wait: Pin<&'w mut WaitForCancellationFuture<'t>>,
    waker: Option<Waker>,
}

impl Future for Stop<'_, '_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if !this.token.is_cancelled()
            && this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        this.waker = Some(cx.waker().clone());
        this.wait.as_mut().poll(cx)
    }
}

/// `server_id@address (role)` for failover events.
fn describe(id: &Identity) -> Option<String> {
    let mut s = String::new();
    if let Some(sid) = &id.server_id {
        s.push_str(sid);
    }
    if let Some(addr) = &id.address {
        if !s.is_empty() {
            s.push('@');
        }
        s.push_str(addr);
    }
    if let Some(role) = id.role {
        s.push_str(&format!(" ({})", role.as_str()));
    }
    (!s.is_empty()).then_some(s)
}

/// Runs a target's canary until `shutdown` is cancelled: what the agent and
/// `watch` hand to [`crate::stores::with_store`].
pub struct RunCanary {
    pub info: Arc<TargetInfo>,
    pub settings: CanarySettings,
    pub sink: Arc<dyn EventSink>,
    /// The agent-wide attempt budget.
    pub budget: Arc<AttemptBudget>,
    /// The agent's own lateness.
    pub lag: Arc<SchedulingLag>,
    pub shutdown: CancellationToken,
}

impl UseStore for RunCanary {
    type Output = ();

    async fn run<S: Store>(self, store: S) {
        Canary::new(store, self.info, self.settings, self.sink)
            .with_budget(self.budget)
            .with_lag(self.lag)
            .run(self.shutdown)
            .await
    }
}
