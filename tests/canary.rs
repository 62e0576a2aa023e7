//! The generic canary against a scripted fake store, on tokio's paused
//! clock: drops, refusals, a different server, a restarted server, a hung
//! probe. Real stores are tested end to end in their own files.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use dbcanary::backoff::AttemptBudget;
use dbcanary::canary::{Canary, TRANSPORT_SLACK};
use dbcanary::dburl::DbUrl;
use dbcanary::events::{Event, EventSink, OutageReport};
use dbcanary::lag::SchedulingLag;
use dbcanary::model::{
    AttemptResult, ConnectResult, DisconnectCause, FailoverSource, Identity, OutageKind,
    ProbeResult, Role, StoreKind, TargetInfo,
};
use dbcanary::settings::{BackoffConfig, CanarySettings};
use dbcanary::stores::{
    Announcement, CloseSignal, ConnectError, Connected, ProbeError, Spec, Store,
};

/// What the fake server does now.
struct World {
    server_id: String,
    started: Instant,
    role: Role,
    /// Connections are refused until this moment.
    down_until: Option<Instant>,
    /// Refuse this many attempts with `auth`.
    refuse_auth: u32,
    /// Probes never answer.
    hang: bool,
    /// The next probe answers after this long, the next connect attempt
    /// takes this long (then they are quick again).
    slow_probe: Option<Duration>,
    slow_connect: Option<Duration>,
    kill: Option<oneshot::Sender<DisconnectCause>>,
    connects: u32,
    /// Where the store's announcements go, once the canary listens.
    announcer: Option<mpsc::Sender<Announcement>>,
    /// The store announces every role change itself (as MongoDB does).
    announces_roles: bool,
    /// When each probe came.
    probes: Vec<Instant>,
}

#[derive(Clone)]
struct Fake(Arc<Mutex<World>>);

impl Fake {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(World {
            server_id: "a".into(),
            started: Instant::now() - Duration::from_secs(3600),
            role: Role::Primary,
            down_until: None,
            refuse_auth: 0,
            hang: false,
            slow_probe: None,
            slow_connect: None,
            kill: None,
            connects: 0,
            announcer: None,
            announces_roles: false,
            probes: Vec::new(),
        })))
    }

    fn with<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        f(&mut self.0.lock().unwrap())
    }

    /// The server closes the canary connection.
    fn drop_connection(&self) {
        if let Some(k) = self.with(|w| w.kill.take()) {
            let _ = k.send(DisconnectCause::Closed);
        }
    }

    /// The store's topology news: server `b` (in `role`) replaced `a`
    /// behind the canary's connection.
    async fn announce_failover_to(&self, role: Role) {
        let announcer = self.with(|w| {
            w.server_id = "b".into();
            w.role = role;
            w.announcer
                .clone()
                .expect("the canary listens to announcements")
        });
        announcer
            .send(Announcement::Failover {
                source: FailoverSource::Topology,
                from: "a".into(),
                to: "b".into(),
            })
            .await
            .unwrap();
    }

    fn identity(w: &World) -> Identity {
        Identity {
            server_id: Some(w.server_id.clone()),
            role: Some(w.role),
            uptime: Some(Instant::now() - w.started),
            address: Some("fake:1".into()),
            ..Identity::default()
        }
    }
}

impl Store for Fake {
    type Options = ();
    type Conn = ();

    fn options(_: &DbUrl) -> Result<(), String> {
        Ok(())
    }

    fn new(_: Spec<'_>, _: &()) -> Self {
        Fake::new()
    }

    async fn connect(&self, _t: Duration) -> Result<Connected<()>, ConnectError> {
        if let Some(d) = self.with(|w| w.slow_connect.take()) {
            tokio::time::sleep(d).await;
        }
        let (tx, rx) = oneshot::channel();
        self.with(|w| {
            w.connects += 1;
            if w.down_until.is_some_and(|u| Instant::now() < u) {
                return Err(ConnectError::new(ConnectResult::Refused, "refused"));
            }
            if w.refuse_auth > 0 {
                w.refuse_auth -= 1;
                return Err(ConnectError::new(ConnectResult::Auth, "wrong password"));
            }
            w.kill = Some(tx);
            Ok(Connected {
                conn: (),
                identity: Fake::identity(w),
                closed: CloseSignal::new(
                    async move { rx.await.unwrap_or(DisconnectCause::Closed) },
                ),
                serving_since: None,
            })
        })
    }

    async fn probe(&self, _c: &mut ()) -> Result<(), ProbeError> {
        self.with(|w| w.probes.push(Instant::now()));
        if self.with(|w| w.hang) {
            std::future::pending::<()>().await;
        }
        if let Some(d) = self.with(|w| w.slow_probe.take()) {
            tokio::time::sleep(d).await;
        }
        Ok(())
    }

    async fn identify(&self, _c: &mut ()) -> Result<Identity, ProbeError> {
        Ok(self.with(|w| Fake::identity(w)))
    }

    async fn close(&self, _c: ()) {}

    fn announces_role_changes(&self) -> bool {
        self.with(|w| w.announces_roles)
    }

    async fn announce(&self, tx: mpsc::Sender<Announcement>) {
        self.with(|w| w.announcer = Some(tx.clone()));
        tx.closed().await
    }
}

#[derive(Default)]
struct Collect(Mutex<Vec<Event>>);

impl EventSink for Collect {
    fn emit(&self, _t: &TargetInfo, e: &Event) {
        self.0.lock().unwrap().push(e.clone());
    }
}

impl Collect {
    fn restored(&self) -> Vec<OutageReport> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Restored(r) => Some((**r).clone()),
                _ => None,
            })
            .collect()
    }

    fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.0.lock().unwrap().iter().filter(|e| f(e)).count()
    }

    /// Waits (on the paused clock) until `n` outages have ended.
    async fn until_restored(&self, n: usize) -> Vec<OutageReport> {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let r = self.restored();
            if r.len() >= n {
                return r;
            }
            assert!(Instant::now() < deadline, "no restore within the deadline");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn until(&self, f: impl Fn(&Event) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(600);
        while self.count(&f) == 0 {
            assert!(
                Instant::now() < deadline,
                "event not seen within the deadline"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn settings() -> CanarySettings {
    CanarySettings {
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        backoff: BackoffConfig {
            initial: Duration::from_millis(50),
            multiplier: 2.0,
            max: Duration::from_secs(1),
            ..BackoffConfig::default()
        },
        identity_every: 3,
        metrics: Default::default(),
    }
}

fn start(fake: &Fake, sink: &Arc<Collect>) -> CancellationToken {
    start_with(fake, sink, None)
}

/// Starts a canary, drawing its attempts from `budget` when given.
fn start_with(
    fake: &Fake,
    sink: &Arc<Collect>,
    budget: Option<Arc<AttemptBudget>>,
) -> CancellationToken {
    start_lagging(fake, sink, budget, None)
}

/// Starts a canary that asks `lag` about the agent's own lateness.
fn start_lagging(
    fake: &Fake,
    sink: &Arc<Collect>,
    budget: Option<Arc<AttemptBudget>>,
    lag: Option<Arc<SchedulingLag>>,
) -> CancellationToken {
    let token = CancellationToken::new();
    let info = Arc::new(TargetInfo {
        name: "t".into(),
        store: StoreKind::Redis,
        endpoint: "fake:1".into(),
        own_results: &[],
        instance: 1,
        detail: Default::default(),
    });
    let s: Arc<dyn EventSink> = sink.clone();
    let mut canary = Canary::new(fake.clone(), info, settings(), s);
    if let Some(b) = budget {
        canary = canary.with_budget(b);
    }
    if let Some(l) = lag {
        canary = canary.with_lag(l);
    }
    let t = token.clone();
    tokio::spawn(async move { canary.run(t).await });
    token
}

fn is_connected(e: &Event) -> bool {
    matches!(e, Event::Connected { .. })
}

/// A fake store set up by `prepare`, and a canary on it that has connected.
async fn connected(prepare: impl FnOnce(&mut World)) -> (Fake, Arc<Collect>, CancellationToken) {
    let (fake, sink) = (Fake::new(), Arc::new(Collect::default()));
    fake.with(prepare);
    let stop = start(&fake, &sink);
    sink.until(is_connected).await;
    (fake, sink, stop)
}

#[tokio::test(start_paused = true)]
async fn dropped_connection_to_a_running_server_is_network() {
    let (fake, sink, _stop) = connected(|_| {}).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    fake.drop_connection();
    let r = sink.until_restored(1).await;
    assert_eq!(r[0].kind, OutageKind::Network, "{}", r[0].reason);
    assert_eq!(r[0].cause, DisconnectCause::Closed);
    assert_eq!(r[0].attempts, 1, "reconnects at once");
    // The transport said so at once: the start window is one (here
    // instant) round trip plus the agent's own wake-up, the end window the
    // (here instant) reconnect.
    assert_eq!(r[0].resolution, TRANSPORT_SLACK);
    assert_eq!(r[0].duration, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn refusals_are_counted_and_the_outage_measured() {
    let (fake, sink, _stop) = connected(|_| {}).await;
    let down = Duration::from_secs(3);
    fake.with(|w| {
        w.down_until = Some(Instant::now() + down);
        w.started = Instant::now() + down;
    });
    fake.drop_connection();
    let r = sink.until_restored(1).await;
    let o = &r[0];
    assert_eq!(o.kind, OutageKind::Restart, "{}", o.reason);
    assert!(o.attempts > 3, "attempts {}", o.attempts);
    assert!(o.duration >= down, "{:?}", o.duration);
    assert!(
        o.duration <= down + o.resolution,
        "{:?} > {down:?} + {:?}",
        o.duration,
        o.resolution
    );
    assert!(
        o.resolution <= Duration::from_secs(1) + Duration::from_millis(10),
        "backoff max bounds the error bar"
    );
    let refused = sink.count(|e| {
        matches!(
            e,
            Event::ConnectAttempt {
                result: AttemptResult::Connect(ConnectResult::Refused),
                ..
            }
        )
    });
    assert_eq!(refused as u32, o.attempts - 1);
}

#[tokio::test(start_paused = true)]
async fn another_long_running_server_is_a_failover() {
    let (fake, sink, _stop) = connected(|_| {}).await;
    fake.with(|w| {
        w.server_id = "b".into();
        w.started = Instant::now() - Duration::from_secs(7200);
        w.refuse_auth = 0;
    });
    fake.drop_connection();
    let r = sink.until_restored(1).await;
    assert_eq!(r[0].kind, OutageKind::Failover);
    assert_eq!(
        sink.count(|e| matches!(
            e,
            Event::Failover {
                source: FailoverSource::Outage,
                ..
            }
        )),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn hung_probe_is_a_timeout_then_recovers() {
    let (fake, sink, _stop) = connected(|_| {}).await;
    fake.with(|w| w.hang = true);
    sink.until(|e| {
        matches!(
            e,
            Event::Disconnected {
                cause: DisconnectCause::Timeout,
                ..
            }
        )
    })
    .await;
    fake.with(|w| w.hang = false);
    let r = sink.until_restored(1).await;
    assert_eq!(r[0].cause, DisconnectCause::Timeout);
    assert_eq!(r[0].kind, OutageKind::Network);
}

#[tokio::test(start_paused = true)]
async fn role_flip_on_a_live_connection_is_a_topology_failover() {
    let (fake, sink, _stop) = connected(|_| {}).await;
    fake.with(|w| w.role = Role::Replica);
    sink.until(|e| {
        matches!(
            e,
            Event::Failover {
                source: FailoverSource::Topology,
                ..
            }
        )
    })
    .await;
    assert_eq!(sink.count(|e| matches!(e, Event::Disconnected { .. })), 0);
    assert_eq!(
        sink.count(|e| matches!(e, Event::IdentityChanged { .. })),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn unreachable_at_start_is_an_outage_of_unknown_start_and_shutdown_stops() {
    let (fake, sink, stop) = connected(|w| w.refuse_auth = 5).await;
    assert_eq!(
        sink.count(|e| matches!(
            e,
            Event::ConnectAttempt {
                result: AttemptResult::Connect(ConnectResult::Auth),
                ..
            }
        )),
        5
    );
    let r = sink.restored();
    assert_eq!(r.len(), 1, "the failures at start are one outage");
    assert_eq!(r[0].cause, DisconnectCause::Unreachable);
    assert!(r[0].start_unknown && r[0].bounds.start_earliest.is_none());
    assert!(r[0].longest.is_none());
    assert_eq!(r[0].kind, OutageKind::Unknown);
    assert_eq!(r[0].attempts, 6);
    assert_eq!(
        sink.count(|e| matches!(
            e,
            Event::Disconnected {
                cause: DisconnectCause::Unreachable,
                start_unknown: true,
                ..
            }
        )),
        1
    );
    stop.cancel();
    sink.until(|e| matches!(e, Event::Stopped)).await;
    let connects = fake.with(|w| w.connects);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        fake.with(|w| w.connects),
        connects,
        "no attempts after shutdown"
    );
}

#[tokio::test(start_paused = true)]
async fn announced_failover_refreshes_the_identity_at_once_and_counts_once() {
    let (fake, sink, _stop) = connected(|_| {}).await;
    // The connection now reaches another server, in another role: the
    // store's topology news says so before any periodic refresh would.
    let sent = Instant::now();
    fake.announce_failover_to(Role::Replica).await;
    sink.until(|e| matches!(e, Event::IdentityChanged { .. }))
        .await;
    assert!(
        sent.elapsed() < settings().interval,
        "identity refreshed {:?} after the announcement, not at once",
        sent.elapsed()
    );
    assert_eq!(
        sink.count(|e| matches!(e, Event::Failover { .. })),
        1,
        "the announced failover is counted once, not again as a role flip"
    );
    assert_eq!(
        sink.count(|e| matches!(
            e,
            Event::Failover {
                source: FailoverSource::Topology,
                ..
            }
        )),
        1
    );
    assert_eq!(sink.count(|e| matches!(e, Event::Disconnected { .. })), 0);
}

#[tokio::test(start_paused = true)]
async fn a_flip_seen_by_a_refresh_before_the_stores_announcement_counts_once() {
    let (fake, sink, _stop) = connected(|w| w.announces_roles = true).await;
    // A periodic refresh reaches the old primary, now a replica, before the
    // store's topology news about the new primary arrives.
    fake.with(|w| w.role = Role::Replica);
    sink.until(|e| matches!(e, Event::IdentityChanged { .. }))
        .await;
    assert_eq!(sink.count(|e| matches!(e, Event::Failover { .. })), 0);
    fake.announce_failover_to(Role::Primary).await;
    sink.until(|e| matches!(e, Event::Failover { .. })).await;
    tokio::time::sleep(settings().interval * 30).await;
    assert_eq!(
        sink.count(|e| matches!(e, Event::Failover { .. })),
        1,
        "one failover: the announced one"
    );
}

/// Counts the refused attempts.
fn refused(sink: &Collect) -> usize {
    sink.count(|e| {
        matches!(
            e,
            Event::ConnectAttempt {
                result: AttemptResult::Connect(ConnectResult::Refused),
                ..
            }
        )
    })
}

#[tokio::test(start_paused = true)]
async fn a_young_outage_is_retried_at_the_fine_cadence_and_measured_within_it() {
    let (fake, sink) = (Fake::new(), Arc::new(Collect::default()));
    let _stop = start(&fake, &sink);
    sink.until(is_connected).await;
    let down = Duration::from_secs(2);
    fake.with(|w| w.down_until = Some(Instant::now() + down));
    fake.drop_connection();
    let r = sink.until_restored(1).await;
    let o = &r[0];
    let fine = BackoffConfig::default().fine;
    assert!(
        o.duration >= down && o.duration <= down + fine,
        "{:?} for {down:?}",
        o.duration
    );
    assert!(o.shortest <= down && o.longest.is_some_and(|l| l >= down));
    assert!(o.resolution <= TRANSPORT_SLACK + fine, "{:?}", o.resolution);
    let n = refused(&sink);
    let cadence = (down.as_millis() / fine.as_millis()) as usize;
    assert!(
        (cadence - 5..=cadence + 1).contains(&n),
        "{n} refused attempts in 2 s at {fine:?}"
    );
    assert!(!o.budget_limited);
}

#[tokio::test(start_paused = true)]
async fn past_the_fine_window_the_backoff_paces_the_attempts() {
    let (fake, sink) = (Fake::new(), Arc::new(Collect::default()));
    let _stop = start(&fake, &sink);
    sink.until(is_connected).await;
    let down = Duration::from_secs(20);
    fake.with(|w| w.down_until = Some(Instant::now() + down));
    fake.drop_connection();
    let r = sink.until_restored(1).await;
    let n = refused(&sink);
    // 400 in the first 10 s; at most one a backoff wait (≥ 0, ≤ 1 s) after.
    assert!(n >= 400, "{n}");
    assert!(
        n < 400 + 200,
        "{n} refused attempts: the backoff did not take over"
    );
    assert!(r[0].resolution <= Duration::from_secs(1) + TRANSPORT_SLACK);
}

#[tokio::test(start_paused = true)]
async fn attempts_that_reach_the_server_back_off_even_when_young() {
    let (fake, sink) = (Fake::new(), Arc::new(Collect::default()));
    let _stop = start(&fake, &sink);
    sink.until(is_connected).await;
    fake.with(|w| w.refuse_auth = 10);
    let lost = Instant::now();
    fake.drop_connection();
    sink.until_restored(1).await;
    // Ten auth refusals at the fine cadence would take 250 ms.
    assert!(
        lost.elapsed() > Duration::from_millis(500),
        "{:?}: the auth refusals were retried at the fine cadence",
        lost.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_loss_starts_when_the_failed_probe_was_sent() {
    let (fake, sink) = (Fake::new(), Arc::new(Collect::default()));
    let _stop = start(&fake, &sink);
    sink.until(is_connected).await;
    fake.with(|w| w.hang = true);
    sink.until(|e| matches!(e, Event::Disconnected { .. }))
        .await;
    fake.with(|w| w.hang = false);
    let r = sink.until_restored(1).await;
    let (o, b) = (&r[0], &r[0].bounds);
    let timeout = settings().timeout;
    let detected = b.start_latest.duration_since(o.started_at).unwrap();
    assert_eq!(detected, timeout, "the estimate is when the probe was sent");
    let window = b
        .start_latest
        .duration_since(b.start_earliest.unwrap())
        .unwrap();
    assert!(
        window <= settings().interval + timeout,
        "start window {window:?}"
    );
    assert!(window >= timeout);
}

#[tokio::test(start_paused = true)]
async fn canaries_started_apart_probe_together_on_the_grid() {
    let sink = Arc::new(Collect::default());
    let mut fakes = Vec::new();
    let mut stops = Vec::new();
    for apart in [0, 3_700, 15_300] {
        tokio::time::sleep(Duration::from_micros(apart)).await;
        let fake = Fake::new();
        stops.push(start(&fake, &sink));
        fakes.push(fake);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let probes: Vec<Vec<Instant>> = fakes.iter().map(|f| f.with(|w| w.probes.clone())).collect();
    // The first probe of each is its connect's; the periodic ones follow.
    let first = probes[0][1];
    for (i, times) in probes.iter().enumerate() {
        assert!(times.len() >= 4, "canary {i} probed {} times", times.len());
        for t in &times[1..] {
            let apart = t.max(&first).duration_since(*t.min(&first));
            assert_eq!(
                apart.as_nanos() % dbcanary::grid::GRID.as_nanos(),
                0,
                "canary {i} probed {apart:?} from the first canary's first periodic probe: off the grid"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_agent_wide_budget_holds_every_canary_to_its_rate() {
    let budget = Arc::new(AttemptBudget::new(100));
    let sink = Arc::new(Collect::default());
    let fakes: Vec<Fake> = (0..20).map(|_| Fake::new()).collect();
    let down = Duration::from_secs(3);
    for f in &fakes {
        f.with(|w| w.down_until = Some(Instant::now() + down));
        start_with(f, &sink, Some(budget.clone()));
    }
    let r = sink.until_restored(20).await;
    let attempts: u32 = fakes.iter().map(|f| f.with(|w| w.connects)).sum();
    // Unlimited, 20 canaries at 20 ms would make 3,000 attempts in 3 s.
    assert!(
        attempts <= 100 * 3 + 10 + 20 + 10,
        "{attempts} attempts against a budget of 100/s"
    );
    assert!(r.iter().all(|o| o.budget_limited), "every report says so");
}

fn is_lost(e: &Event) -> bool {
    matches!(e, Event::Disconnected { .. })
}

/// The agent's ticker woke `late` after it was due, just now.
fn stalled(lag: &SchedulingLag, late: Duration) {
    let now = Instant::now();
    lag.record(now - late, now);
}

/// A probe answered after its timeout, because the agent itself was late
/// to read the answer (its ticker woke 300 ms late meanwhile), is no
/// outage: it gets one more timeout. The same slow answer while the agent
/// was on time is one.
#[tokio::test(start_paused = true)]
async fn a_probe_that_timed_out_while_the_agent_was_late_is_not_an_outage() {
    for agent_late in [true, false] {
        let (fake, sink) = (Fake::new(), Arc::new(Collect::default()));
        let lag = Arc::new(SchedulingLag::new());
        let _stop = start_lagging(&fake, &sink, None, Some(lag.clone()));
        sink.until(is_connected).await;
        // The next probe goes out in 1 s and answers 700 ms later (its
        // timeout is 500 ms); the agent stalls 200 ms after it was sent.
        fake.with(|w| w.slow_probe = Some(Duration::from_millis(700)));
        tokio::time::sleep(Duration::from_millis(1200)).await;
        if agent_late {
            stalled(&lag, Duration::from_millis(300));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        if agent_late {
            assert_eq!(sink.count(is_lost), 0, "{:?}", sink.0.lock().unwrap());
            assert_eq!(lag.retries(), 1);
            let timed_out = sink.count(|e| {
                matches!(
                    e,
                    Event::Probe {
                        result: ProbeResult::Timeout,
                        ..
                    }
                )
            });
            assert_eq!(timed_out, 0);
        } else {
            assert_eq!(sink.count(is_lost), 1, "the store was slow: an outage");
            assert_eq!(lag.retries(), 0);
        }
    }
}

/// A close the transport reported while the agent was measured late (its
/// ticker woke 300 ms late): the loss may have come that much before the
/// agent woke up to it, and the start bound says so; on time, the bound
/// stays the round trip plus [`TRANSPORT_SLACK`].
#[tokio::test(start_paused = true)]
async fn a_close_seen_while_the_agent_was_late_widens_the_start_bound() {
    for agent_late in [true, false] {
        let (fake, sink) = (Fake::new(), Arc::new(Collect::default()));
        let lag = Arc::new(SchedulingLag::new());
        let _stop = start_lagging(&fake, &sink, None, Some(lag.clone()));
        sink.until(is_connected).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let late = Duration::from_millis(300);
        if agent_late {
            stalled(&lag, late);
        }
        fake.drop_connection();
        let r = sink.until_restored(1).await;
        let earliest = r[0].bounds.start_earliest.expect("a known start");
        let width = r[0].started_at.duration_since(earliest).unwrap();
        if agent_late {
            assert!(width >= late, "{width:?} wide after a {late:?} stall");
        } else {
            assert!(width <= TRANSPORT_SLACK, "{width:?} wide, on time");
        }
    }
}

/// A first connect attempt that timed out while the agent was late goes
/// again at once and opens no outage; on time, it opens one (unreachable
/// since the start).
#[tokio::test(start_paused = true)]
async fn a_connect_that_timed_out_while_the_agent_was_late_opens_no_outage() {
    for agent_late in [true, false] {
        let (fake, sink) = (Fake::new(), Arc::new(Collect::default()));
        let lag = Arc::new(SchedulingLag::new());
        fake.with(|w| w.slow_connect = Some(Duration::from_secs(2)));
        let _stop = start_lagging(&fake, &sink, None, Some(lag.clone()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        if agent_late {
            stalled(&lag, Duration::from_millis(100));
        }
        sink.until(is_connected).await;
        let lost = sink.count(is_lost);
        assert_eq!(
            lost,
            usize::from(!agent_late),
            "{:?}",
            sink.0.lock().unwrap()
        );
        assert_eq!(lag.retries(), u64::from(agent_late));
        let attempts = sink.count(|e| matches!(e, Event::ConnectAttempt { .. }));
        assert_eq!(attempts, 2, "the timed-out one and the one that connected");
    }
}

/// A connection attempt waits while the agent is late (a wake-up late just
/// now): a wave of connects must not make it later; once on time, it goes.
#[tokio::test(start_paused = true)]
async fn a_connect_waits_while_the_agent_is_late() {
    let (fake, sink) = (Fake::new(), Arc::new(Collect::default()));
    let lag = Arc::new(SchedulingLag::new());
    stalled(&lag, Duration::from_millis(100));
    let _stop = start_lagging(&fake, &sink, None, Some(lag.clone()));
    tokio::time::sleep(dbcanary::lag::LATE_FOR / 2).await;
    let attempts = |sink: &Collect| sink.count(|e| matches!(e, Event::ConnectAttempt { .. }));
    assert_eq!(attempts(&sink), 0, "no attempt while the agent is late");
    sink.until(is_connected).await;
    assert_eq!(attempts(&sink), 1);
    assert_eq!(sink.count(is_lost), 0);
}
