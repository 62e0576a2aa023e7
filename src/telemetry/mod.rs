//! The recorder: the one place events become Prometheus series, log lines,
//! the `/api/v1/targets` state and (through [`otlp`]) OTLP metrics and
//! traces. Canaries call [`Recorder::emit`] and know nothing else about
//! telemetry.
//!
//! The recorder orchestrates; each job has its module: [`catalogue`] (every
//! metric declared once), `measure` (what each event changes in them),
//! `prometheus` (series storage and `/metrics`), [`state`] (the API's
//! view), `log` (the log line of each event), [`otlp`] (export) and
//! `process` (the `process_*` metrics).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::time::Instant;

use crate::apps::{AppTracker, Outcome};
use crate::config::OtlpSettings;
use crate::events::{Event, EventSink};
use crate::lag::SchedulingLag;
use crate::model::{Identity, StoreKind, TargetInfo};

pub mod catalogue;
pub mod drills;
mod log;
mod measure;
pub mod otlp;
mod process;
mod prometheus;
mod shard;
pub mod state;

use catalogue::LabelSpace;
use drills::{DrillEnd, DrillStart, LastDrill};
use otlp::{Otlp, OtlpError};
use prometheus::{DrillSeries, SeriesHandle};
use state::{Filter, Shared, States, Summary, TargetState};

/// Turns events into series, logs and API state.
pub struct Recorder {
    registry: Registry,
    states: States,
    series: Arc<prometheus::Table>,
    /// The agent's own lateness (exported with the series).
    lag: Arc<SchedulingLag>,
    /// The OTLP consumer, when export is configured.
    otlp: Option<Otlp>,
    /// Applications and the drills of their dependencies.
    apps: Mutex<AppTracker>,
    /// Whether `apps` tracks any app: without one, events skip its lock.
    any_apps: AtomicBool,
    /// This agent's shard and how many targets it kept.
    agent: shard::AgentSeries,
    /// Drills run through the API.
    drills: DrillSeries,
    /// Who else hears every event (a drill's observer, while it runs).
    tap: RwLock<Option<Arc<dyn EventSink>>>,
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
        let states = States::default();
        let series = Arc::<prometheus::Table>::default();
        let lag = Arc::new(SchedulingLag::new());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(process::ProcessCollector));
        let ours = registry.sub_registry_with_prefix(catalogue::PREFIX);
        prometheus::register(ours, &states, &series, &lag);
        let agent = shard::AgentSeries::register(ours);
        let drills = DrillSeries::register(ours);
        let otlp = otlp
            .map(|settings| Otlp::build(settings, &states, ours))
            .transpose()?;
        Ok(Self {
            registry,
            states,
            series,
            lag,
            otlp,
            apps: Mutex::default(),
            any_apps: AtomicBool::new(false),
            agent,
            drills,
            tap: RwLock::new(None),
        })
    }

    /// Says which shard this agent is (`k/n`) and how many targets it
    /// watches (`dbcanary_agent_info`, `dbcanary_agent_targets`).
    pub fn set_shard(&self, shard: &str, targets: usize) {
        self.agent.set(shard, targets);
    }

    /// Flushes and stops OTLP export within `budget` (blocking; outage spans
    /// still open end with status error). Nothing to do without OTLP.
    pub fn shutdown_export(&self, budget: Duration) {
        if let Some(o) = &self.otlp {
            o.shutdown(budget);
        }
    }

    /// The agent's own lateness, which the canaries ask about and
    /// `/metrics` exports.
    pub fn lag(&self) -> Arc<SchedulingLag> {
        self.lag.clone()
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

    /// `{"targets": [...]}` for the targets `filter` selects, in name
    /// order, as JSON. Each target is locked alone while it is written (no
    /// copy of every state): the canaries go on meanwhile.
    pub fn targets_json(&self, filter: &Filter) -> serde_json::Result<Vec<u8>> {
        self.check_apps();
        let handles = match &filter.target {
            Some(name) => self.states.get(name).into_iter().collect(),
            None => self.states.handles(),
        };
        let mut out = Vec::with_capacity(64 + handles.len() * 512);
        out.extend_from_slice(b"{\"targets\":[");
        let mut first = true;
        for h in &handles {
            let st = state::lock(h);
            if !filter.selects(&st) {
                continue;
            }
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            let drills = {
                let apps = self.apps.lock().expect("apps lock");
                apps.is_app(&st.name).then(|| apps.drills(&st.name))
            };
            match drills {
                // An application shows its dependencies' last drills.
                Some(dependencies) => {
                    let mut app = st.clone();
                    app.dependencies = dependencies;
                    serde_json::to_writer(&mut out, &app)?;
                }
                None => serde_json::to_writer(&mut out, &*st)?,
            }
        }
        out.extend_from_slice(b"]}");
        Ok(out)
    }

    /// Counts per state and store, and the targets down now.
    pub fn summary(&self, now: Instant) -> Summary {
        self.check_apps();
        let mut summary = Summary::default();
        for h in self.states.handles() {
            summary.add(&state::lock(&h), now);
        }
        summary.finish()
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

    /// Registers a target, an application with the targets it depends on
    /// (and the deadline to recover after their outages). Its series start
    /// at zero, so that rates work from the first event and dashboards show
    /// every target at once.
    ///
    /// A target registered again under its name (a reload changed it and
    /// started a new canary) keeps its series and its API history, so that
    /// counters continue and alerts see no gap, as long as its store and
    /// label values are the same; from now on only the new canary's events
    /// count.
    pub fn add_target(&self, t: &TargetInfo, depends_on: &[String], deadline: Duration) {
        let labels = LabelSpace::new(t.own_results, depends_on);
        let kept = match self.states.get(&t.name) {
            Some(h) => {
                let mut st = state::lock(&h);
                let same = st.store == t.store
                    && self.series.layout_of(&t.name).as_ref() == Some(&(labels.clone(), t.detail));
                if same {
                    st.instance = t.instance;
                    st.endpoint.clone_from(&t.endpoint);
                }
                same
            }
            None => false,
        };
        if !kept {
            self.states.insert(TargetState::new(t));
        }
        {
            let mut apps = self.apps.lock().expect("apps lock");
            apps.remove(&t.name);
            if !depends_on.is_empty() {
                apps.add(&t.name, depends_on, deadline);
            }
            self.any_apps.store(!apps.is_empty(), Ordering::Relaxed);
        }
        if let Some(o) = &self.otlp {
            o.add_target(t, &labels);
        }
        if !kept {
            self.series.add(t, labels);
        }
    }

    /// Hands every event of a registered target to `tap` as well (after
    /// the recorder took it), until it is set to `None`.
    pub fn set_tap(&self, tap: Option<Arc<dyn EventSink>>) {
        *self.tap.write().unwrap_or_else(|e| e.into_inner()) = tap;
    }

    /// Whether target `name` is healthy now (connected, or an app's last
    /// check passed), and who answers it; `None` for an unknown target.
    pub fn health(&self, name: &str) -> Option<(bool, Option<Identity>)> {
        let h = self.states.get(name)?;
        let st = state::lock(&h);
        let up = st.connected_mono.is_some() && st.current_outage.is_none();
        Some((up, st.identity.clone()))
    }

    /// The store kind of target `name` (its `store` label).
    fn store_of(&self, name: &str) -> Option<StoreKind> {
        self.states.get(name).map(|h| state::lock(&h).store)
    }

    /// A drill run through the API is about to act: its span opens.
    pub fn drill_begins(&self, d: &DrillStart) {
        if let Some(store) = self.store_of(&d.store) {
            self.drills.seed(&d.store, store);
        }
        if let Some(o) = &self.otlp {
            o.drill_begins(d);
        }
    }

    /// A drill run through the API is over: it is counted, becomes the
    /// `last_drill` of each of its targets, and its span ends.
    pub fn drill_ended(&self, d: &DrillEnd) {
        if let Some(store) = self.store_of(&d.start.store) {
            self.drills.seed(&d.start.store, store);
            self.drills.count(&d.start.store, store, d.result);
        }
        let last = Box::new(LastDrill::of(d));
        for name in d.start.names() {
            if let Some(h) = self.states.get(name) {
                state::lock(&h).last_drill = Some(last.clone());
            }
        }
        if let Some(o) = &self.otlp {
            o.drill_ended(d);
        }
    }

    /// Counts a canary task restarted after a panic.
    pub fn canary_restarted(&self, t: &TargetInfo) {
        let changes = [measure::CANARY_RESTART];
        self.series.apply(&t.name, &changes, None);
        if let Some(o) = &self.otlp {
            o.apply(t, &changes);
        }
    }

    /// Removes a target's state and every series it had, unless another
    /// canary of it took over since (see [`Recorder::add_target`]).
    pub fn remove_target(&self, t: &TargetInfo) {
        if self
            .states
            .get(&t.name)
            .is_some_and(|h| state::lock(&h).instance != t.instance)
        {
            return;
        }
        self.states.remove(&t.name);
        {
            let mut apps = self.apps.lock().expect("apps lock");
            apps.remove(&t.name);
            self.any_apps.store(!apps.is_empty(), Ordering::Relaxed);
        }
        self.series.remove(&t.name);
        self.drills.remove(&t.name, t.store);
        if let Some(o) = &self.otlp {
            o.remove_target(t);
        }
    }

    /// Where the canary of registered target `t` sends its events: the
    /// target's state and series found once, so that an event (a probe
    /// every interval, thousands of canaries) takes no lookup by name under
    /// the lock of every target's map. The recorder itself for a target
    /// not registered (its events are dropped).
    pub fn sink_for(self: &Arc<Self>, t: &TargetInfo) -> Arc<dyn EventSink> {
        match (self.states.get(&t.name), self.series.handle(&t.name)) {
            (Some(state), Some(series)) => Arc::new(TargetSink {
                recorder: self.clone(),
                state,
                series,
            }),
            _ => self.clone(),
        }
    }

    /// Turns one event of `t` into series, the state, a log line and
    /// (through [`otlp`]) OTLP instruments and spans. Events of a canary
    /// another one replaced, or of a target removed since, are dropped.
    fn record(&self, t: &TargetInfo, state: &Shared, series: &SeriesHandle, event: &Event) {
        // A probe changes neither the state nor the log: the most frequent
        // event stays cheap. Anything else reaches the state first: a loss
        // is "down" on the API before anything else is done about it.
        if matches!(event, Event::Probe { .. }) {
            if !state::lock(state).takes(t) {
                return;
            }
        } else {
            let first = {
                let mut st = state::lock(state);
                if !st.takes(t) {
                    return;
                }
                st.apply(event)
            };
            log::event(t, event, first);
        }
        let changes = measure::event(event);
        // The OTLP consumer sees the event before the series: an outage's
        // span gives the trace id its Prometheus observation carries as
        // exemplar, and the app drills that follow the outage carry in the
        // API.
        let trace_id = self
            .otlp
            .as_ref()
            .and_then(|o| o.on_event(t, event, &changes));
        series.apply(&changes, trace_id.as_deref());
        if self.any_apps.load(Ordering::Relaxed) {
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
        if let Some(tap) = self.tap.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            tap.emit(t, event);
        }
    }

    /// Turns app recovery outcomes into series, log lines, API events and
    /// (through [`otlp`]) OTLP instruments and recovery spans.
    fn apply(&self, outcomes: Vec<Outcome>) {
        for o in outcomes {
            let (app, changes) = measure::outcome(&o);
            if let Some(x) = &self.otlp {
                x.on_outcome(&o, app, &changes);
            }
            self.series.apply(app, &changes, None);
            let Some(message) = log::outcome(&o) else {
                continue;
            };
            if let Some(h) = self.states.get(app) {
                state::lock(&h).remember(&Event::Notice { message });
            }
        }
    }
}

impl EventSink for Recorder {
    fn emit(&self, t: &TargetInfo, event: &Event) {
        // Events of a target no longer registered are dropped.
        let (Some(state), Some(series)) = (self.states.get(&t.name), self.series.handle(&t.name))
        else {
            return;
        };
        self.record(t, &state, &series, event);
    }
}

/// The sink of one registered target's canary (see [`Recorder::sink_for`]).
struct TargetSink {
    recorder: Arc<Recorder>,
    state: Shared,
    series: SeriesHandle,
}

impl EventSink for TargetSink {
    fn emit(&self, t: &TargetInfo, event: &Event) {
        self.recorder.record(t, &self.state, &self.series, event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MetricDetail;

    /// Keeps the names of the targets whose events it heard.
    #[derive(Default)]
    struct Heard(Mutex<Vec<String>>);

    impl EventSink for Heard {
        fn emit(&self, t: &TargetInfo, _: &Event) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{}#{}", t.name, t.instance));
        }
    }

    fn target(store: StoreKind, instance: u64) -> TargetInfo {
        TargetInfo {
            name: "cache".into(),
            store,
            endpoint: "127.0.0.1:1".into(),
            own_results: &[],
            instance,
            detail: MetricDetail::Basic,
        }
    }

    #[test]
    fn a_canarys_own_sink_counts_only_while_its_canary_is_the_targets() {
        let recorder = Arc::new(Recorder::new());
        let heard = Arc::new(Heard::default());
        recorder.set_tap(Some(heard.clone()));
        let connected = Event::Connected {
            identity: Identity::default(),
        };
        let first = target(StoreKind::Redis, 1);
        recorder.add_target(&first, &[], Duration::ZERO);
        let sink = recorder.sink_for(&first);
        sink.emit(&first, &connected);
        assert_eq!(recorder.health("cache").map(|h| h.0), Some(true));
        // Another store under the same name: a new state, which the first
        // canary's last events do not reach.
        let second = target(StoreKind::Mysql, 2);
        recorder.add_target(&second, &[], Duration::ZERO);
        sink.emit(&first, &connected);
        assert_eq!(recorder.health("cache").map(|h| h.0), Some(false));
        // The same store again: the state is kept, and taken by the new
        // canary alone.
        let second_sink = recorder.sink_for(&second);
        let third = target(StoreKind::Mysql, 3);
        recorder.add_target(&third, &[], Duration::ZERO);
        second_sink.emit(&second, &connected);
        recorder.sink_for(&third).emit(&third, &connected);
        // Removed: nothing counts any more.
        let third_sink = recorder.sink_for(&third);
        recorder.remove_target(&third);
        third_sink.emit(&third, &connected);
        assert!(recorder.health("cache").is_none());
        assert_eq!(*heard.0.lock().unwrap(), ["cache#1", "cache#3"]);
    }
}
