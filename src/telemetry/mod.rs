//! The recorder: the one place events become Prometheus series, log lines,
//! the `/api/v1/targets` state and (through [`otlp`]) OTLP metrics and
//! traces. Canaries call [`Recorder::emit`] and know nothing else about
//! telemetry.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::time::Instant;

use crate::events::{Event, EventSink, OutageReport};
use crate::model::{
    ConnectResult, DisconnectCause, FailoverSource, Identity, OutageKind, ProbeResult, StoreKind,
    TargetInfo,
};

mod metrics;
pub mod otlp;
mod process;

use crate::apps::{AppDrill, AppTracker, Outcome};
use crate::config::OtlpSettings;
use metrics::{
    AppLabels, BuildLabels, CauseLabels, KindLabels, Metrics, ResultLabels, ServerInfoLabels,
    SignalLabels, SourceLabels, TargetLabels, TraceLabels,
};
pub use metrics::{LATENCY_BUCKETS, OUTAGE_BUCKETS};
use otlp::{Otlp, OtlpError};

/// How many events `/api/v1/targets` keeps per target.
pub const EVENTS_KEPT: usize = 50;

use crate::model::{REVISION, VERSION};

/// Where a target stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Never connected yet (an outage of unknown start is open once the
    /// first attempt failed).
    Connecting,
    Up,
    /// An outage is in progress.
    Down,
    Stopped,
}

/// An outage in progress, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CurrentOutage {
    #[serde(serialize_with = "ser_time")]
    pub since: SystemTime,
    #[serde(skip)]
    pub since_mono: Instant,
    /// Unreachable since the agent started: `since` is the agent's start,
    /// the true start is unknown.
    pub start_unknown: bool,
    pub cause: DisconnectCause,
    pub attempts: u32,
    pub last_result: Option<crate::model::AttemptResult>,
    pub last_error: Option<String>,
}

/// One remembered event.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    #[serde(serialize_with = "ser_time")]
    pub at: SystemTime,
    #[serde(flatten)]
    pub event: Event,
}

/// Everything the API tells about one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetState {
    pub name: String,
    pub store: &'static str,
    pub endpoint: String,
    pub state: Phase,
    pub identity: Option<Identity>,
    #[serde(serialize_with = "ser_opt_time")]
    pub connected_since: Option<SystemTime>,
    #[serde(skip)]
    pub connected_mono: Option<Instant>,
    pub last_error: Option<String>,
    pub current_outage: Option<CurrentOutage>,
    pub last_outage: Option<OutageReport>,
    pub outages: u64,
    /// For applications: the last drill of each dependency.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub dependencies: BTreeMap<String, Option<AppDrill>>,
    pub events: VecDeque<EventRecord>,
}

impl TargetState {
    fn new(t: &TargetInfo) -> Self {
        Self {
            name: t.name.clone(),
            store: t.store.label(),
            endpoint: t.endpoint.clone(),
            state: Phase::Connecting,
            identity: None,
            connected_since: None,
            connected_mono: None,
            last_error: None,
            current_outage: None,
            last_outage: None,
            outages: 0,
            dependencies: BTreeMap::new(),
            events: VecDeque::with_capacity(EVENTS_KEPT),
        }
    }

    fn remember(&mut self, event: &Event) {
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(EventRecord {
            at: SystemTime::now(),
            event: event.clone(),
        });
    }
}

type States = Arc<Mutex<BTreeMap<String, TargetState>>>;

/// Turns events into series, logs and API state.
pub struct Recorder {
    registry: Registry,
    metrics: Metrics,
    states: States,
    /// The OTLP consumer, when export is configured.
    otlp: Option<Otlp>,
    /// Applications and the drills of their dependencies.
    apps: Mutex<AppTracker>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// A recorder without OTLP export.
    pub fn new() -> Self {
        Self::build(None).unwrap_or_else(|e| unreachable!("no OTLP, no error: {e}"))
    }

    /// A recorder that also exports over OTLP when `otlp` is given. Call it
    /// inside the tokio runtime (the gRPC exporter's channel lives there).
    pub fn with_otlp(otlp: Option<&OtlpSettings>) -> Result<Self, OtlpError> {
        Self::build(otlp)
    }

    fn build(otlp: Option<&OtlpSettings>) -> Result<Self, OtlpError> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(process::ProcessCollector));
        let ours = registry.sub_registry_with_prefix("dbcanary");
        let metrics = Metrics::register(ours);
        let states: States = Arc::default();
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: VERSION.into(),
                revision: REVISION.into(),
            })
            .set(1);
        ours.register("build_info", "The agent itself (1)", build);
        ours.register_collector(Box::new(ClockGauges {
            states: states.clone(),
        }));
        let otlp = match otlp {
            Some(settings) => {
                let dropped =
                    Family::<SignalLabels, prometheus_client::metrics::counter::Counter>::default();
                for (on, signal) in [(settings.traces, "traces"), (settings.metrics, "metrics")] {
                    if on {
                        let _ = dropped.get_or_create(&SignalLabels {
                            signal: signal.into(),
                        });
                    }
                }
                ours.register(
                    "otlp_dropped",
                    "Spans and metric streams OTLP export dropped (queue full or collector failing), by signal",
                    dropped.clone(),
                );
                Some(Otlp::build(settings, &states, dropped)?)
            }
            None => None,
        };
        Ok(Self {
            registry,
            metrics,
            states,
            otlp,
            apps: Mutex::default(),
        })
    }

    /// Flushes and stops OTLP export within `budget` (blocking; outage spans
    /// still open end with status error). Nothing to do without OTLP.
    pub fn shutdown_export(&self, budget: Duration) {
        if let Some(o) = &self.otlp {
            o.shutdown(budget);
        }
    }

    /// Whether OTLP export is configured.
    pub fn exports(&self) -> bool {
        self.otlp.is_some()
    }

    /// The registry to encode on `/metrics` (app recovery deadlines are
    /// checked first, so a scrape sees a missed deadline at once).
    pub fn registry(&self) -> &Registry {
        self.check_apps();
        &self.registry
    }

    /// A snapshot of every target's state.
    pub fn targets(&self) -> Vec<TargetState> {
        self.check_apps();
        let mut out: Vec<TargetState> = self
            .states
            .lock()
            .expect("state lock")
            .values()
            .cloned()
            .collect();
        let apps = self.apps.lock().expect("apps lock");
        for st in &mut out {
            if apps.is_app(&st.name) {
                st.dependencies = apps.drills(&st.name);
            }
        }
        out
    }

    /// Whether any application target depends on another target.
    pub fn has_apps(&self) -> bool {
        !self.apps.lock().expect("apps lock").is_empty()
    }

    /// Declares the app drills past their deadline not recovered.
    pub fn check_apps(&self) {
        let outcomes = self.apps.lock().expect("apps lock").check(Instant::now());
        self.apply(outcomes);
    }

    /// Registers an application's dependencies (after [`Self::add_target`]):
    /// its recovery series start at zero.
    pub fn add_app(&self, app: &TargetInfo, depends_on: &[String], deadline: Duration) {
        if depends_on.is_empty() {
            return;
        }
        self.apps
            .lock()
            .expect("apps lock")
            .add(&app.name, depends_on, deadline);
        for d in depends_on {
            let l = app_labels(&app.name, d);
            let _ = self.metrics.app_recovery_lag.get_or_create(&l);
            self.metrics.app_not_recovered.get_or_create(&l).set(0);
            let _ = self.metrics.app_unrecovered.get_or_create(&l);
        }
        if let Some(o) = &self.otlp {
            o.add_app(&app.name, depends_on);
        }
    }

    /// Turns app recovery outcomes into series, log lines, API events and
    /// (through [`otlp`]) OTLP instruments and recovery spans.
    fn apply(&self, outcomes: Vec<Outcome>) {
        let m = &self.metrics;
        for o in outcomes {
            if let Some(x) = &self.otlp {
                x.on_outcome(&o);
            }
            let (app, message) = match o {
                Outcome::Recovered {
                    app,
                    dependency,
                    lag,
                    dependency_outage,
                    late,
                    ..
                } => {
                    let l = app_labels(&app, &dependency);
                    m.app_recovery_lag
                        .get_or_create(&l)
                        .observe(lag.as_secs_f64());
                    m.app_not_recovered.get_or_create(&l).set(0);
                    tracing::info!(
                        target_name = %app,
                        dependency = %dependency,
                        lag_s = lag.as_secs_f64(),
                        dependency_outage_s = dependency_outage.as_secs_f64(),
                        late,
                        "application recovered after its dependency came back"
                    );
                    let msg = format!(
                        "recovered {:.3} s after {dependency} came back ({dependency} was gone {:.3} s){}",
                        lag.as_secs_f64(),
                        dependency_outage.as_secs_f64(),
                        if late {
                            ", past the recovery deadline"
                        } else {
                            ""
                        }
                    );
                    (app, msg)
                }
                Outcome::NotRecovered {
                    app,
                    dependency,
                    deadline,
                    dependency_outage,
                    ..
                } => {
                    let l = app_labels(&app, &dependency);
                    m.app_not_recovered.get_or_create(&l).set(1);
                    m.app_unrecovered.get_or_create(&l).inc();
                    tracing::error!(
                        target_name = %app,
                        dependency = %dependency,
                        deadline_s = deadline.as_secs_f64(),
                        dependency_outage_s = dependency_outage.as_secs_f64(),
                        "application did not recover after its dependency came back"
                    );
                    let msg = format!(
                        "not recovered {} after {dependency} came back ({dependency} was gone {:.3} s)",
                        humantime::format_duration(deadline),
                        dependency_outage.as_secs_f64()
                    );
                    (app, msg)
                }
                Outcome::Cleared { app, dependency } => {
                    m.app_not_recovered
                        .get_or_create(&app_labels(&app, &dependency))
                        .set(0);
                    continue;
                }
            };
            let event = Event::Notice { message };
            let mut states = self.states.lock().expect("state lock");
            if let Some(st) = states.get_mut(&app) {
                st.remember(&event);
            }
        }
    }

    /// Registers a target's series at zero, so that rates work from the
    /// first event and dashboards show every target at once.
    pub fn add_target(&self, t: &TargetInfo) {
        self.states
            .lock()
            .expect("state lock")
            .insert(t.name.clone(), TargetState::new(t));
        let l = labels(t);
        self.metrics.up.get_or_create(&l).set(0);
        for r in [ProbeResult::Ok, ProbeResult::Error, ProbeResult::Timeout] {
            let _ = self
                .metrics
                .probes
                .get_or_create(&with_result(t, r.as_str()));
        }
        for r in connect_results(t) {
            let _ = self
                .metrics
                .connect_attempts
                .get_or_create(&with_result(t, r));
        }
        for c in DisconnectCause::ALL {
            let _ = self.metrics.disconnects.get_or_create(&cause_labels(t, c));
        }
        for s in FAILOVER_SOURCES {
            let _ = self.metrics.failovers.get_or_create(&source_labels(t, s));
        }
        // Outage histograms too: rate() cannot count a series' first sample,
        // so a series born at 1 would hide the first outage of its kind.
        for k in OUTAGE_KINDS {
            let _ = self
                .metrics
                .outage_duration
                .get_or_create(&kind_labels(t, k));
        }
        let _ = self.metrics.restarts.get_or_create(&l);
        let _ = self.metrics.canary_restarts.get_or_create(&l);
        if let Some(o) = &self.otlp {
            o.add_target(t);
        }
    }

    /// Counts a canary task restarted after a panic.
    pub fn canary_restarted(&self, t: &TargetInfo) {
        self.metrics.canary_restarts.get_or_create(&labels(t)).inc();
        if let Some(o) = &self.otlp {
            o.canary_restarted(t);
        }
    }

    /// Runs `f` on the target's state; events of a target that is not (or
    /// no longer) registered are dropped.
    fn state<R: Default>(&self, t: &TargetInfo, f: impl FnOnce(&mut TargetState) -> R) -> R {
        let mut states = self.states.lock().expect("state lock");
        states.get_mut(&t.name).map(f).unwrap_or_default()
    }

    fn known(&self, t: &TargetInfo) -> bool {
        self.states
            .lock()
            .expect("state lock")
            .contains_key(&t.name)
    }

    /// Removes a target's state and every series it had.
    pub fn remove_target(&self, t: &TargetInfo) {
        let st = self.states.lock().expect("state lock").remove(&t.name);
        let l = labels(t);
        let m = &self.metrics;
        let deps: Vec<String> = {
            let mut apps = self.apps.lock().expect("apps lock");
            let deps = apps.drills(&t.name).into_keys().collect();
            apps.remove(&t.name);
            deps
        };
        for d in deps {
            let al = app_labels(&t.name, &d);
            m.app_recovery_lag.remove(&al);
            m.app_not_recovered.remove(&al);
            m.app_unrecovered.remove(&al);
        }
        m.up.remove(&l);
        for f in [&m.probe_duration, &m.connect_duration] {
            f.remove(&l);
        }
        for f in [&m.restarts, &m.canary_restarts] {
            f.remove(&l);
        }
        m.last_outage_end.remove(&l);
        for r in ["ok", "error", "timeout"] {
            m.probes.remove(&with_result(t, r));
        }
        for r in connect_results(t) {
            m.connect_attempts.remove(&with_result(t, r));
        }
        for c in DisconnectCause::ALL {
            m.disconnects.remove(&cause_labels(t, c));
        }
        for s in FAILOVER_SOURCES {
            m.failovers.remove(&source_labels(t, s));
        }
        for k in OUTAGE_KINDS {
            m.outage_duration.remove(&kind_labels(t, k));
        }
        if let Some(id) = st.and_then(|s| s.identity) {
            m.server_info.remove(&server_labels(t, &id));
        }
        if let Some(o) = &self.otlp {
            o.remove_target(t);
        }
    }

    fn set_server_info(&self, t: &TargetInfo, st: &mut TargetState, id: &Identity) {
        if let Some(old) = &st.identity {
            self.metrics.server_info.remove(&server_labels(t, old));
        }
        self.metrics
            .server_info
            .get_or_create(&server_labels(t, id))
            .set(1);
        st.identity = Some(id.clone());
    }
}

/// The attempt results a target can have: every store's, and its store's
/// own (an application check's `status` and `body`).
pub(crate) fn connect_results(t: &TargetInfo) -> impl Iterator<Item = &'static str> {
    ConnectResult::ALL
        .iter()
        .map(|r| r.as_str())
        .chain(t.own_results.iter().copied())
}

const OUTAGE_KINDS: [OutageKind; 4] = [
    OutageKind::Network,
    OutageKind::Restart,
    OutageKind::Failover,
    OutageKind::Unknown,
];

pub(crate) const FAILOVER_SOURCES: [FailoverSource; 3] = [
    FailoverSource::Outage,
    FailoverSource::Sentinel,
    FailoverSource::Topology,
];

fn cause_labels(t: &TargetInfo, c: DisconnectCause) -> CauseLabels {
    CauseLabels {
        target: t.name.clone(),
        store: t.store.label().into(),
        cause: c.as_str().into(),
    }
}

fn source_labels(t: &TargetInfo, s: FailoverSource) -> SourceLabels {
    SourceLabels {
        target: t.name.clone(),
        store: t.store.label().into(),
        source: s.as_str().into(),
    }
}

fn kind_labels(t: &TargetInfo, k: OutageKind) -> KindLabels {
    KindLabels {
        target: t.name.clone(),
        store: t.store.label().into(),
        kind: k.as_str().into(),
    }
}

fn app_labels(app: &str, dependency: &str) -> AppLabels {
    AppLabels {
        target: app.to_string(),
        store: StoreKind::Http.label().into(),
        dependency: dependency.to_string(),
    }
}

fn labels(t: &TargetInfo) -> TargetLabels {
    TargetLabels {
        target: t.name.clone(),
        store: t.store.label().into(),
    }
}

fn with_result(t: &TargetInfo, result: &str) -> ResultLabels {
    ResultLabels {
        target: t.name.clone(),
        store: t.store.label().into(),
        result: result.into(),
    }
}

fn server_labels(t: &TargetInfo, id: &Identity) -> ServerInfoLabels {
    ServerInfoLabels {
        target: t.name.clone(),
        store: t.store.label().into(),
        server_id: id.server_id.clone().unwrap_or_default(),
        role: id.role.map(|r| r.as_str()).unwrap_or("unknown").into(),
        version: id.version.clone().unwrap_or_default(),
        address: id.address.clone().unwrap_or_default(),
    }
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

impl EventSink for Recorder {
    fn emit(&self, t: &TargetInfo, event: &Event) {
        if !self.known(t) {
            return;
        }
        // The OTLP consumer sees the event first: an outage's span gives the
        // trace id its Prometheus observation carries as exemplar, and the
        // app drills that follow the outage carry in the API.
        let trace_id = self.otlp.as_ref().and_then(|o| o.on_event(t, event));
        self.record(t, event, trace_id.clone());
        let outcomes = {
            let mut apps = self.apps.lock().expect("apps lock");
            let outcomes = apps.on_event(&t.name, event, Instant::now());
            if let (Event::Restored(_), Some(id)) = (event, &trace_id) {
                apps.trace_outage(&t.name, id);
            }
            outcomes
        };
        self.apply(outcomes);
    }
}

impl Recorder {
    fn record(&self, t: &TargetInfo, event: &Event, trace_id: Option<String>) {
        let l = labels(t);
        match event {
            Event::Started => {
                tracing::info!(target_name = %t.name, store = %t.store, endpoint = %t.endpoint, "canary started");
            }
            Event::ConnectAttempt {
                result,
                duration,
                error,
            } => {
                self.metrics
                    .connect_attempts
                    .get_or_create(&with_result(t, result.as_str()))
                    .inc();
                if result.is_ok() {
                    self.metrics
                        .connect_duration
                        .get_or_create(&l)
                        .observe(duration.as_secs_f64());
                    return;
                }
                self.state(t, |st| {
                    st.last_error.clone_from(error);
                    if let Some(o) = &mut st.current_outage {
                        o.attempts += 1;
                        o.last_result = Some(*result);
                        o.last_error.clone_from(error);
                    }
                });
                let err = error.as_deref().unwrap_or("");
                tracing::debug!(target_name = %t.name, result = result.as_str(), error = err, "connection attempt failed");
            }
            Event::Connected { identity } => {
                self.metrics.up.get_or_create(&l).set(1);
                let first = self.state(t, |st| {
                    let first = st.state == Phase::Connecting;
                    st.state = Phase::Up;
                    st.connected_since = Some(SystemTime::now());
                    st.connected_mono = Some(Instant::now());
                    st.current_outage = None;
                    st.last_error = None;
                    self.set_server_info(t, st, identity);
                    st.remember(event);
                    first
                });
                if first {
                    tracing::info!(
                        target_name = %t.name,
                        server_id = identity.server_id.as_deref().unwrap_or(""),
                        role = identity.role.map(|r| r.as_str()).unwrap_or("unknown"),
                        address = identity.address.as_deref().unwrap_or(""),
                        "connected"
                    );
                }
            }
            Event::Probe { result, duration } => {
                self.metrics
                    .probes
                    .get_or_create(&with_result(t, result.as_str()))
                    .inc();
                self.metrics
                    .probe_duration
                    .get_or_create(&l)
                    .observe(duration.as_secs_f64());
            }
            Event::Disconnected {
                cause,
                started_at,
                since,
                start_unknown,
                detail,
                ..
            } => {
                self.metrics.up.get_or_create(&l).set(0);
                self.metrics
                    .disconnects
                    .get_or_create(&cause_labels(t, *cause))
                    .inc();
                self.state(t, |st| {
                    // A target that never answered stays `connecting`, its
                    // outage (of unknown start) shown beside it.
                    if !*start_unknown {
                        st.state = Phase::Down;
                    }
                    st.connected_since = None;
                    st.connected_mono = None;
                    st.current_outage = Some(CurrentOutage {
                        since: *started_at,
                        since_mono: *since,
                        start_unknown: *start_unknown,
                        cause: *cause,
                        attempts: 0,
                        last_result: None,
                        last_error: None,
                    });
                    st.remember(event);
                });
                if *start_unknown {
                    tracing::warn!(target_name = %t.name, detail = %detail, "cannot connect (unreachable since the start); retrying");
                } else {
                    tracing::warn!(target_name = %t.name, cause = cause.as_str(), detail = %detail, "connection lost");
                }
            }
            Event::Restored(r) => {
                self.metrics
                    .outage_duration
                    .get_or_create(&kind_labels(t, r.kind))
                    .observe(
                        r.duration.as_secs_f64(),
                        trace_id.map(|trace_id| TraceLabels { trace_id }),
                        None,
                    );
                if r.kind == OutageKind::Restart {
                    self.metrics.restarts.get_or_create(&l).inc();
                }
                self.metrics
                    .last_outage_end
                    .get_or_create(&l)
                    .set(unix_secs(r.ended_at));
                self.state(t, |st| {
                    st.last_outage = Some((**r).clone());
                    st.outages += 1;
                    st.remember(event);
                });
                tracing::warn!(
                    target_name = %t.name,
                    outage_s = r.duration.as_secs_f64(),
                    kind = r.kind.as_str(),
                    reason = %r.reason,
                    attempts = r.attempts,
                    resolution_s = r.resolution.as_secs_f64(),
                    "connection restored"
                );
            }
            Event::Failover { source, from, to } => {
                self.metrics
                    .failovers
                    .get_or_create(&source_labels(t, *source))
                    .inc();
                self.state(t, |st| st.remember(event));
                tracing::warn!(target_name = %t.name, source = source.as_str(), from = from.as_deref().unwrap_or(""), to = %to, "failover");
            }
            Event::IdentityChanged { identity } => {
                self.state(t, |st| {
                    self.set_server_info(t, st, identity);
                    st.remember(event);
                });
                tracing::info!(target_name = %t.name, role = identity.role.map(|r| r.as_str()).unwrap_or("unknown"), "server identity changed");
            }
            Event::Notice { message } => {
                self.state(t, |st| st.remember(event));
                tracing::warn!(target_name = %t.name, "{message}");
            }
            Event::Stopped => {
                self.state(t, |st| {
                    st.state = Phase::Stopped;
                    st.remember(event);
                });
                tracing::debug!(target_name = %t.name, "canary stopped");
            }
        }
    }
}

/// Gauges that depend on the clock, computed at scrape time:
/// `dbcanary_connection_age_seconds` and `dbcanary_outage_in_progress_seconds`.
#[derive(Debug)]
struct ClockGauges {
    states: States,
}

impl Collector for ClockGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = Instant::now();
        let rows: Vec<(TargetLabels, f64, f64)> = self
            .states
            .lock()
            .expect("state lock")
            .values()
            .filter(|s| s.state != Phase::Stopped)
            .map(|s| {
                let age = s.connected_mono.map_or(0.0, |c| (now - c).as_secs_f64());
                let outage = s
                    .current_outage
                    .as_ref()
                    .map_or(0.0, |o| (now - o.since_mono).as_secs_f64());
                (
                    TargetLabels {
                        target: s.name.clone(),
                        store: s.store.into(),
                    },
                    age,
                    outage,
                )
            })
            .collect();
        for (name, help, pick) in [
            (
                "connection_age_seconds",
                "Age of the current canary connection (0 while down)",
                0usize,
            ),
            (
                "outage_in_progress_seconds",
                "Length of the current outage, 0 when up",
                1usize,
            ),
        ] {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (l, age, outage) in &rows {
                let v = if pick == 0 { *age } else { *outage };
                ConstGauge::new(v).encode(family.encode_family(l)?)?;
            }
        }
        Ok(())
    }
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_rfc3339_micros(*t).to_string())
}

fn ser_opt_time<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ser_time(t, s),
        None => s.serialize_none(),
    }
}
