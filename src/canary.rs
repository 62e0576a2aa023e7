//! The one generic canary every store runs through:
//! Connecting → Up → Down(backoff) → Up. It owns all timing (tokio's
//! monotonic clock), the backoff, classification and the outage bookkeeping,
//! and reports everything as [`Event`]s. Store code only connects, probes and
//! says when its transport closed.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, timeout};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::classify::classify;
use crate::events::{Event, EventSink, OutageReport};
use crate::model::{
    ConnectResult, DisconnectCause, FailoverSource, Identity, OutageKind, ProbeResult, TargetInfo,
};
use crate::settings::CanarySettings;
use crate::stores::{Announcement, CloseSignal, ConnectError, Connected, Store, UseStore, attempt};

/// An outage in progress.
struct Outage {
    started: Instant,
    started_wall: SystemTime,
    cause: DisconnectCause,
    attempts: u32,
    last_failed_attempt: Option<Instant>,
}

/// Why the up phase ended.
enum UpEnd {
    Shutdown,
    Lost {
        cause: DisconnectCause,
        detail: String,
    },
}

/// One canary: a store, its target and where its events go.
pub struct Canary<S: Store> {
    store: S,
    target: Arc<TargetInfo>,
    settings: CanarySettings,
    sink: Arc<dyn EventSink>,
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
        }
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

    async fn main_loop(&self, mut ann: mpsc::Receiver<Announcement>, shutdown: &CancellationToken) {
        self.emit(Event::Started);
        let mut backoff = Backoff::new(self.settings.backoff);
        let mut last_identity: Option<Identity> = None;
        let mut outage: Option<Outage> = None;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let attempt_start = Instant::now();
            match self.attempt().await {
                Ok(Connected {
                    conn,
                    mut identity,
                    closed,
                }) => {
                    let now = Instant::now();
                    self.emit(Event::ConnectAttempt {
                        result: ConnectResult::Ok.into(),
                        duration: now - attempt_start,
                        error: None,
                    });
                    identity.read_at.get_or_insert(now);
                    if let Some(o) = outage.take() {
                        self.restored(o, last_identity.as_ref(), &identity, now);
                    }
                    self.emit(Event::Connected {
                        identity: identity.clone(),
                    });
                    backoff.reset();
                    match self
                        .up(conn, &mut identity, closed, &mut ann, shutdown)
                        .await
                    {
                        UpEnd::Shutdown => return,
                        UpEnd::Lost { cause, detail } => {
                            let started_wall = SystemTime::now();
                            self.emit(Event::Disconnected {
                                cause,
                                at: started_wall,
                                detail,
                            });
                            outage = Some(Outage {
                                started: Instant::now(),
                                started_wall,
                                cause,
                                attempts: 0,
                                last_failed_attempt: None,
                            });
                            last_identity = Some(identity);
                            // Reconnect at once, as an application would.
                            continue;
                        }
                    }
                }
                Err(e) => {
                    self.emit(Event::ConnectAttempt {
                        result: e.result,
                        duration: attempt_start.elapsed(),
                        error: Some(e.message),
                    });
                    if let Some(o) = &mut outage {
                        o.attempts += 1;
                        o.last_failed_attempt = Some(attempt_start);
                    }
                }
            }
            let wait = backoff.next_delay();
            let until = Instant::now() + wait;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(until) => break,
                    Some(a) = ann.recv() => self.announced(a),
                }
            }
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

    fn restored(&self, o: Outage, before: Option<&Identity>, after: &Identity, now: Instant) {
        let duration = now - o.started;
        let c = classify(before, after, duration);
        let resolution = o
            .last_failed_attempt
            .map(|t| now - t)
            .unwrap_or(Duration::ZERO);
        let report = OutageReport {
            started_at: o.started_wall,
            ended_at: o.started_wall + duration,
            duration,
            cause: o.cause,
            kind: c.kind,
            reason: c.reason,
            attempts: o.attempts + 1,
            resolution,
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
    /// the identity now and then.
    async fn up(
        &self,
        mut conn: S::Conn,
        identity: &mut Identity,
        mut closed: CloseSignal,
        ann: &mut mpsc::Receiver<Announcement>,
        shutdown: &CancellationToken,
    ) -> UpEnd {
        let interval = self.settings.interval;
        let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut probes: u32 = 0;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    let _ = timeout(self.settings.timeout, self.store.close(conn)).await;
                    return UpEnd::Shutdown;
                }
                cause = closed.closed() => {
                    return UpEnd::Lost { cause, detail: "the transport reported the connection closed".into() };
                }
                Some(a) = ann.recv() => {
                    let failover = matches!(a, Announcement::Failover { .. });
                    self.announced(a);
                    // Who answers now, at once rather than at the next
                    // periodic refresh; the failover is already counted.
                    if failover
                        && let Some(lost) = self.refresh_identity(&mut conn, identity, true).await
                    {
                        return lost;
                    }
                }
                _ = ticker.tick() => {
                    let t0 = Instant::now();
                    let r = timeout(self.settings.timeout, self.store.probe(&mut conn)).await;
                    let duration = t0.elapsed();
                    match r {
                        Ok(Ok(())) => self.emit(Event::Probe { result: ProbeResult::Ok, duration }),
                        Ok(Err(e)) => {
                            self.emit(Event::Probe { result: ProbeResult::Error, duration });
                            return UpEnd::Lost { cause: e.cause, detail: format!("probe failed: {}", e.message) };
                        }
                        Err(_) => {
                            self.emit(Event::Probe { result: ProbeResult::Timeout, duration });
                            return UpEnd::Lost {
                                cause: DisconnectCause::Timeout,
                                detail: format!("probe timed out after {}", humantime::format_duration(self.settings.timeout)),
                            };
                        }
                    }
                    probes = probes.wrapping_add(1);
                    let every = self.settings.identity_every;
                    if every > 0 && probes.is_multiple_of(every)
                        && let Some(lost) = self.refresh_identity(&mut conn, identity, false).await
                    {
                        return lost;
                    }
                }
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
        announced: bool,
    ) -> Option<UpEnd> {
        let fresh = timeout(self.settings.timeout, self.store.identify(conn)).await;
        self.tell();
        let fresh = match fresh {
            Ok(Ok(mut fresh)) => {
                fresh.read_at.get_or_insert_with(Instant::now);
                fresh
            }
            Ok(Err(e)) => {
                return Some(UpEnd::Lost {
                    cause: e.cause,
                    detail: format!("identity refresh failed: {}", e.message),
                });
            }
            Err(_) => {
                return Some(UpEnd::Lost {
                    cause: DisconnectCause::Timeout,
                    detail: "identity refresh timed out".into(),
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
    pub shutdown: CancellationToken,
}

impl UseStore for RunCanary {
    type Output = ();

    async fn run<S: Store>(self, store: S) {
        Canary::new(store, self.info, self.settings, self.sink)
            .run(self.shutdown)
            .await
    }
}
