//! The Prometheus side of the recorder: each target's series kept in one
//! compact record, and one collector that encodes catalogue × targets on
//! `/metrics`.
//!
//! A target's record holds bare numbers laid out by catalogue entry and
//! label value; the label strings are spelled out only while encoding, so
//! thousands of targets stay cheap to keep and quick to scrape. The gauges
//! that are a function of the target's state are read from it at scrape
//! time instead of being stored.

use std::collections::BTreeMap;
use std::iter;
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{self, Registry};
use tokio::time::Instant;

use super::catalogue::{
    BUILD_INFO, CATALOGUE, COUNT, DRILLS, Form, Instrument, LATE_RETRIES, Label, LabelSpace,
    Metric, Number, Read, SCHEDULING_LAG, Seed, Unit,
};
use super::drills::DrillResult;
use super::measure::{Change, Op};
use super::state::{self, Shared, States, TargetState};
use crate::lag::SchedulingLag;
use crate::model::{MetricDetail, REVISION, StoreKind, TargetInfo, VERSION};

/// The exemplar of an observation: its span's trace.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TraceLabels {
    trace_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    revision: String,
}

/// Registers the build info, the agent's own lateness and the collector
/// of every target series in `registry` (the `dbcanary_` one).
pub fn register(
    registry: &mut Registry,
    states: &States,
    table: &Arc<Table>,
    lag: &Arc<SchedulingLag>,
) {
    let build = Family::<BuildLabels, Gauge>::default();
    build
        .get_or_create(&BuildLabels {
            version: VERSION.into(),
            revision: REVISION.into(),
        })
        .set(1);
    registry.register(BUILD_INFO.name, BUILD_INFO.help, build);
    registry.register_collector(Box::new(AgentLag(lag.clone())));
    registry.register_collector(Box::new(Exposition {
        states: states.clone(),
        table: table.clone(),
    }));
}

/// The agent's own lateness and the timeouts it retried because of it.
#[derive(Debug)]
struct AgentLag(Arc<SchedulingLag>);

impl Collector for AgentLag {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let lag = encoder.encode_descriptor(
            SCHEDULING_LAG.name,
            &format!("{}.", SCHEDULING_LAG.help),
            Some(&SECONDS),
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.0.recent_max().as_secs_f64()).encode(lag)?;
        let retries = encoder.encode_descriptor(
            LATE_RETRIES.name,
            &format!("{}.", LATE_RETRIES.help),
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.0.retries()).encode(retries)
    }
}

/// Where a stored metric's values live in a [`Series`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    Counter,
    Gauge,
    Histogram,
    /// Histograms whose observations carry exemplars.
    Exemplars,
}

/// How a metric is kept, when it is kept rather than read from the state.
fn kept(m: &Metric) -> Option<Kept> {
    if let Seed::State(_) = m.seed {
        return None;
    }
    Some(match m.instrument {
        Instrument::Counter => Kept::Counter,
        Instrument::Gauge(_) => Kept::Gauge,
        Instrument::Histogram {
            exemplars: false, ..
        } => Kept::Histogram,
        Instrument::Histogram {
            exemplars: true, ..
        } => Kept::Exemplars,
    })
}

/// A histogram's counts; its bounds are its form's. The buckets are
/// allocated with the first observation.
#[derive(Debug, Default)]
struct Hist {
    sum: f64,
    count: u64,
    /// Per bucket, the overflow (`+Inf`) bucket last; empty until observed.
    buckets: Box<[u64]>,
}

impl Hist {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; bounds.len() + 1].into();
        }
        self.sum += v;
        self.count += 1;
        // As prometheus-client: the first bound at or above; NaN overflows.
        let i = bounds.iter().position(|b| *b >= v).unwrap_or(bounds.len());
        self.buckets[i] += 1;
    }
}

fn encode_hist(mut enc: MetricEncoder, bounds: &[f64], h: &Hist) -> Result<(), std::fmt::Error> {
    let buckets: Vec<(f64, u64)> = bounds
        .iter()
        .copied()
        .chain(iter::once(f64::INFINITY))
        .zip(h.buckets.iter().copied().chain(iter::repeat(0)))
        .collect();
    enc.encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)
}

/// Where a target's values of one metric are: how they are kept, where
/// they start, and the label and buckets they have at the target's detail.
#[derive(Debug, Clone, Copy)]
struct Slot {
    kind: Kept,
    base: usize,
    form: Form,
}

/// One target's stored series.
#[derive(Debug)]
struct Series {
    target: String,
    store: &'static str,
    labels: LabelSpace,
    detail: MetricDetail,
    /// By catalogue entry; none: read from the state, or no series at
    /// this detail.
    slots: [Option<Slot>; COUNT],
    counters: Box<[u64]>,
    /// None: not set yet (no series).
    gauges: Box<[Option<f64>]>,
    histograms: Box<[Hist]>,
    /// None: not observed yet.
    exemplars: Box<[Option<HistogramWithExemplars<TraceLabels>>]>,
}

impl Series {
    fn new(t: &TargetInfo, labels: LabelSpace) -> Self {
        let mut slots = [None; COUNT];
        let mut lens = [0usize; 4];
        for m in &CATALOGUE {
            let (Some(kind), Some(form)) = (kept(m), m.form(t.detail)) else {
                continue;
            };
            let len = &mut lens[kind as usize];
            slots[m.id as usize] = Some(Slot {
                kind,
                base: *len,
                form,
            });
            *len += form.label.count(&labels);
        }
        let mut s = Self {
            target: t.name.clone(),
            store: t.store.label(),
            detail: t.detail,
            slots,
            counters: vec![0; lens[Kept::Counter as usize]].into(),
            gauges: vec![None; lens[Kept::Gauge as usize]].into(),
            histograms: iter::repeat_with(Hist::default)
                .take(lens[Kept::Histogram as usize])
                .collect(),
            exemplars: iter::repeat_with(|| None)
                .take(lens[Kept::Exemplars as usize])
                .collect(),
            labels,
        };
        for m in &CATALOGUE {
            let Some(slot) = s.slots[m.id as usize].filter(|s| s.kind == Kept::Gauge) else {
                continue;
            };
            for (i, value) in slot.form.label.values(&s.labels).enumerate() {
                if m.seeded(value) {
                    s.gauges[slot.base + i] = Some(0.0);
                }
            }
        }
        s
    }

    fn apply(&mut self, c: &Change, exemplar: Option<&str>) {
        let Some(slot) = self.slots[c.metric as usize] else {
            return;
        };
        // The value's place: a label the form dropped takes every change
        // in its one series; a value the target does not have is none.
        let i = match slot.form.label {
            Label::None => 0,
            label => match label.values(&self.labels).position(|v| v == c.label) {
                Some(i) => i,
                None => return,
            },
        };
        let i = slot.base + i;
        let bounds = slot.form.buckets;
        match (slot.kind, c.op) {
            (Kept::Counter, Op::Add(n)) => self.counters[i] += n,
            (Kept::Gauge, Op::Set(v)) => self.gauges[i] = Some(v),
            (Kept::Histogram, Op::Observe(v)) => self.histograms[i].observe(bounds, v),
            (Kept::Exemplars, Op::Observe(v)) => self.exemplars[i]
                .get_or_insert_with(|| HistogramWithExemplars::new(bounds.iter().copied()))
                .observe(
                    v,
                    exemplar.map(|t| TraceLabels {
                        trace_id: t.to_string(),
                    }),
                    None,
                ),
            // `measure` only pairs an instrument with its own operation.
            _ => {}
        }
    }

    /// Whether the `i`th value of `slot` (label value `value`) is a
    /// series now.
    fn present(&self, m: &Metric, slot: Slot, i: usize, value: Option<&str>) -> bool {
        let seeded = m.seeded(value);
        let j = slot.base + i;
        match slot.kind {
            Kept::Counter => seeded || self.counters[j] > 0,
            Kept::Gauge => self.gauges[j].is_some(),
            Kept::Histogram => seeded || self.histograms[j].count > 0,
            Kept::Exemplars => seeded || self.exemplars[j].is_some(),
        }
    }

    fn any(&self, m: &Metric) -> bool {
        let Some(slot) = self.slots[m.id as usize] else {
            return false;
        };
        slot.form
            .label
            .values(&self.labels)
            .enumerate()
            .any(|(i, v)| self.present(m, slot, i, v))
    }

    /// Encodes this target's series of `m` into its family.
    fn encode(&self, m: &Metric, family: &mut MetricEncoder) -> Result<(), std::fmt::Error> {
        let Some(slot) = self.slots[m.id as usize] else {
            return Ok(());
        };
        for (i, value) in slot.form.label.values(&self.labels).enumerate() {
            if !self.present(m, slot, i, value) {
                continue;
            }
            let j = slot.base + i;
            let pairs = [
                ("target", self.target.as_str()),
                ("store", self.store),
                (
                    slot.form.label.key().unwrap_or_default(),
                    value.unwrap_or_default(),
                ),
            ];
            let labels = &pairs[..if value.is_some() { 3 } else { 2 }];
            let enc = family.encode_family(&labels)?;
            let bounds = slot.form.buckets;
            match slot.kind {
                Kept::Counter => ConstCounter::new(self.counters[j]).encode(enc)?,
                Kept::Gauge => encode_gauge(m, self.gauges[j].unwrap_or_default(), enc)?,
                Kept::Histogram => encode_hist(enc, bounds, &self.histograms[j])?,
                Kept::Exemplars => match &self.exemplars[j] {
                    Some(h) => h.encode(enc)?,
                    None => encode_hist(enc, bounds, &Hist::default())?,
                },
            }
        }
        Ok(())
    }
}

fn encode_gauge(m: &Metric, v: f64, enc: MetricEncoder) -> Result<(), std::fmt::Error> {
    match m.instrument {
        // Whole numbers by construction (flags, 1).
        Instrument::Gauge(Number::Int) => ConstGauge::new(v as i64).encode(enc),
        _ => ConstGauge::new(v).encode(enc),
    }
}

/// Every target's stored series, by name. Each target has its own lock, so
/// that a scrape holds up one canary's event at most briefly.
#[derive(Debug, Default)]
pub struct Table {
    targets: Mutex<BTreeMap<String, Arc<Mutex<Series>>>>,
}

impl Table {
    /// Starts a target's series (the seeded ones at zero).
    pub fn add(&self, t: &TargetInfo, labels: LabelSpace) {
        self.lock()
            .insert(t.name.clone(), Arc::new(Mutex::new(Series::new(t, labels))));
    }

    /// The label values and the detail a target's series were made for.
    pub fn layout_of(&self, name: &str) -> Option<(LabelSpace, MetricDetail)> {
        let series = self.lock().get(name).cloned()?;
        let s = lock(&series);
        Some((s.labels.clone(), s.detail))
    }

    /// Drops every series of a target.
    pub fn remove(&self, name: &str) {
        self.lock().remove(name);
    }

    /// Applies `changes` to the series of `target` (if it is known); the
    /// histograms that take exemplars get `exemplar`'s trace id.
    pub fn apply(&self, target: &str, changes: &[Change], exemplar: Option<&str>) {
        if let Some(series) = self.handle(target) {
            series.apply(changes, exemplar);
        }
    }

    /// The series of `target`, to change without a lookup by name.
    pub fn handle(&self, target: &str) -> Option<SeriesHandle> {
        self.lock().get(target).cloned().map(SeriesHandle)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Mutex<Series>>>> {
        self.targets.lock().expect("series table lock")
    }
}

/// One target's series, as [`Table::handle`] found them.
#[derive(Debug, Clone)]
pub struct SeriesHandle(Arc<Mutex<Series>>);

impl SeriesHandle {
    /// Applies `changes` (see [`Table::apply`]).
    pub fn apply(&self, changes: &[Change], exemplar: Option<&str>) {
        let mut series = lock(&self.0);
        for c in changes {
            series.apply(c, exemplar);
        }
    }
}

fn lock(s: &Mutex<Series>) -> MutexGuard<'_, Series> {
    s.lock().expect("series lock")
}

/// Encodes catalogue × targets.
#[derive(Debug)]
struct Exposition {
    states: States,
    table: Arc<Table>,
}

/// `dbcanary_*_seconds` families carry their unit (OpenMetrics `# UNIT`).
static SECONDS: registry::Unit = registry::Unit::Seconds;

fn descriptor<'a>(
    encoder: &'a mut DescriptorEncoder,
    m: &'a Metric,
) -> Result<MetricEncoder<'a>, std::fmt::Error> {
    let metric_type = match m.instrument {
        Instrument::Counter => MetricType::Counter,
        Instrument::Gauge(_) => MetricType::Gauge,
        Instrument::Histogram { .. } => MetricType::Histogram,
    };
    let unit = m.unit.map(|u| match u {
        Unit::Seconds => &SECONDS,
    });
    // Help ends with a full stop, as the registry writes it for families.
    encoder.encode_descriptor(m.name, &format!("{}.", m.help), unit, metric_type)
}

impl Exposition {
    /// Which metrics of the catalogue any target has now: one pass over
    /// the targets, each locked once (a metric that none has would
    /// otherwise cost a pass of its own to find out).
    fn present(series: &[Arc<Mutex<Series>>], states: &[Shared], now: Instant) -> [bool; COUNT] {
        let mut present = [false; COUNT];
        for s in series {
            let s = lock(s);
            for m in &CATALOGUE {
                if !matches!(m.seed, Seed::State(_)) && !present[m.id as usize] {
                    present[m.id as usize] = s.any(m);
                }
            }
        }
        for h in states {
            let st = state::lock(h);
            for m in &CATALOGUE {
                if let Seed::State(read) = m.seed
                    && !present[m.id as usize]
                {
                    present[m.id as usize] = read(&st, now).is_some();
                }
            }
        }
        present
    }

    fn encode_stored(
        encoder: &mut DescriptorEncoder,
        m: &Metric,
        series: &[Arc<Mutex<Series>>],
    ) -> Result<(), std::fmt::Error> {
        let mut family = descriptor(encoder, m)?;
        for s in series {
            lock(s).encode(m, &mut family)?;
        }
        Ok(())
    }

    /// The gauges read from the states: each target is locked alone while
    /// its line is written. A target that has none now is skipped.
    fn encode_read(
        encoder: &mut DescriptorEncoder,
        m: &Metric,
        read: Read,
        states: &[Shared],
        now: Instant,
    ) -> Result<(), std::fmt::Error> {
        let mut family = descriptor(encoder, m)?;
        for h in states {
            let st = state::lock(h);
            let Some(v) = read(&st, now) else {
                continue;
            };
            let (pairs, n) = read_labels(m.label, &st);
            let labels = &pairs[..n];
            encode_gauge(m, v, family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The labels of a series read from `st`, and how many there are:
/// `target` and `store`, then for [`Label::Server`] who answers.
fn read_labels(label: Label, st: &TargetState) -> ([(&'static str, &str); 6], usize) {
    let mut pairs = [
        ("target", st.name.as_str()),
        ("store", st.store.label()),
        ("server_id", ""),
        ("role", ""),
        ("version", ""),
        ("address", ""),
    ];
    match (label, &st.identity) {
        (Label::Server, Some(id)) => {
            pairs[2].1 = id.server_id.as_deref().unwrap_or_default();
            pairs[3].1 = id.role.map_or("unknown", |r| r.as_str());
            pairs[4].1 = id.version.as_deref().unwrap_or_default();
            pairs[5].1 = id.address.as_deref().unwrap_or_default();
            (pairs, 6)
        }
        _ => (pairs, 2),
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = Instant::now();
        let series: Vec<Arc<Mutex<Series>>> = self.table.lock().values().cloned().collect();
        let states = self.states.handles();
        let present = Self::present(&series, &states, now);
        for m in CATALOGUE.iter().filter(|m| present[m.id as usize]) {
            match m.seed {
                Seed::State(read) => Self::encode_read(&mut encoder, m, read, &states, now)?,
                _ => Self::encode_stored(&mut encoder, m, &series)?,
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DrillLabels {
    target: String,
    store: &'static str,
    result: &'static str,
}

/// `dbcanary_drills_total`, an agent-wide family: a target drilled through
/// the API gains its three series then, so that a target never drilled
/// costs none (and the per-target series stay within their bound).
#[derive(Debug)]
pub struct DrillSeries {
    total: Family<DrillLabels, Counter>,
}

impl DrillSeries {
    pub fn register(registry: &mut Registry) -> Self {
        let total = Family::default();
        registry.register(DRILLS.name, DRILLS.help, total.clone());
        Self { total }
    }

    fn labels(target: &str, store: StoreKind, result: DrillResult) -> DrillLabels {
        DrillLabels {
            target: target.to_string(),
            store: store.label(),
            result: result.as_str(),
        }
    }

    /// Every result of `target` at zero, if not there yet.
    pub fn seed(&self, target: &str, store: StoreKind) {
        for r in DrillResult::ALL {
            let _ = self.total.get_or_create(&Self::labels(target, store, r));
        }
    }

    pub fn count(&self, target: &str, store: StoreKind, result: DrillResult) {
        self.total
            .get_or_create(&Self::labels(target, store, result))
            .inc();
    }

    /// A removed target's series go with it.
    pub fn remove(&self, target: &str, store: StoreKind) {
        for r in DrillResult::ALL {
            self.total.remove(&Self::labels(target, store, r));
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;
    use crate::events::Event;
    use crate::model::{Identity, OutageKind, StoreKind};
    use crate::telemetry::catalogue::{BASIC_OUTAGE_BUCKETS, Id, PREFIX};
    use crate::telemetry::measure;

    fn target(name: &str, store: StoreKind, detail: MetricDetail) -> TargetInfo {
        TargetInfo {
            name: name.into(),
            store,
            endpoint: "127.0.0.1:1".into(),
            own_results: &[],
            instance: 1,
            detail,
        }
    }

    /// A registry with two connected Redis targets that had one outage
    /// each (`cache` at `metrics = "detailed"`, whose canary also panicked
    /// once, and `plain` at `basic`), and an app depending on `cache`; the
    /// OpenMetrics text of it.
    fn exposition(exemplar: Option<&str>) -> String {
        let (states, table) = (States::default(), Arc::<Table>::default());
        let mut registry = Registry::default();
        let lag = Arc::new(SchedulingLag::new());
        register(
            registry.sub_registry_with_prefix(PREFIX),
            &states,
            &table,
            &lag,
        );
        let (cache, plain, shop) = (
            target("cache", StoreKind::Redis, MetricDetail::Detailed),
            target("plain", StoreKind::Redis, MetricDetail::Basic),
            target("shop", StoreKind::Http, MetricDetail::Basic),
        );
        let deps = ["cache".to_string()];
        for (t, deps) in [(&cache, &[][..]), (&plain, &[][..]), (&shop, &deps[..])] {
            let mut st = TargetState::new(t);
            st.apply(&Event::Connected {
                identity: Identity {
                    server_id: Some("a".into()),
                    ..Default::default()
                },
            });
            states.insert(st);
            table.add(t, LabelSpace::new(t.own_results, deps));
        }
        for e in &measure::sample_events(OutageKind::Network) {
            table.apply("cache", &measure::event(e), exemplar);
            table.apply("plain", &measure::event(e), exemplar);
        }
        table.apply("cache", &[measure::CANARY_RESTART], None);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn every_catalogue_entry_is_encoded_with_its_type_and_unit() {
        let text = exposition(None);
        for m in &CATALOGUE {
            let unit = m.unit.map_or("", |_| "_seconds");
            let family = format!("{PREFIX}_{}{unit}", m.name);
            let kind = match m.instrument {
                Instrument::Counter => "counter",
                Instrument::Gauge(_) => "gauge",
                Instrument::Histogram { .. } => "histogram",
            };
            assert!(
                text.contains(&format!("# TYPE {family} {kind}\n")),
                "{family}: {text}"
            );
            assert_eq!(
                text.contains(&format!("# UNIT {family} seconds\n")),
                m.unit.is_some(),
                "{family}"
            );
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&family) && l.contains("target=\"")),
                "{family} has no series: {text}"
            );
        }
    }

    #[test]
    fn seeded_series_exist_at_zero_and_unseeded_ones_only_once_measured() {
        let text = exposition(None);
        let count = |m: &Metric, target: &str| {
            text.lines()
                .filter(|l| {
                    l.starts_with(&format!("{PREFIX}_{}", m.name))
                        && l.contains(&format!("target=\"{target}\""))
                        && !l.contains("_bucket")
                        && !l.contains("_sum")
                })
                .count()
        };
        let outages = Id::OutageDuration.metric();
        assert_eq!(count(outages, "cache"), OutageKind::ALL.len(), "{text}");
        // At basic, one histogram for every kind, and the kinds counted.
        assert_eq!(count(outages, "shop"), 1, "{text}");
        let outages_total = Id::Outages.metric();
        assert_eq!(count(outages_total, "plain"), 1, "{text}");
        assert_eq!(count(outages_total, "shop"), 0, "{text}");
        assert_eq!(count(Id::ProbeDuration.metric(), "shop"), 0);
        assert_eq!(count(Id::ProbeDuration.metric(), "plain"), 0);
        assert_eq!(count(Id::ProbeDuration.metric(), "cache"), 1);
        assert_eq!(count(Id::CanaryRestarts.metric(), "plain"), 0);
        assert_eq!(count(Id::CanaryRestarts.metric(), "cache"), 1);
        let attempts = Id::ConnectAttempts.metric();
        assert_eq!(count(attempts, "plain"), 1, "only ok is seeded: {text}");
        assert_eq!(count(Id::LastOutageEnd.metric(), "shop"), 0);
        assert_eq!(count(Id::AppNotRecovered.metric(), "shop"), 1);
        assert_eq!(count(Id::AppNotRecovered.metric(), "cache"), 0);
        let who = format!(
            "{PREFIX}_{}{{target=\"cache\",store=\"redis\",server_id=\"a\",role=\"unknown\",version=\"\",address=\"\"}} 1\n",
            Id::ServerInfo.metric().name
        );
        assert!(text.contains(&who), "{text}");
    }

    #[test]
    fn a_basic_target_has_few_series_and_its_outage_buckets_no_kind() {
        let text = exposition(None);
        let plain: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("target=\"plain\""))
            .collect();
        assert!(plain.len() <= 40, "{}", plain.join("\n"));
        let buckets: Vec<&&str> = plain
            .iter()
            .filter(|l| l.starts_with("dbcanary_outage_duration_seconds_bucket"))
            .collect();
        assert_eq!(buckets.len(), BASIC_OUTAGE_BUCKETS.len() + 1, "{buckets:?}");
        assert!(buckets.iter().all(|l| !l.contains("kind=")), "{buckets:?}");
        assert!(
            plain.contains(
                &"dbcanary_outages_total{target=\"plain\",store=\"redis\",kind=\"network\"} 1"
            ),
            "{plain:?}"
        );
        assert!(text.contains("# TYPE dbcanary_agent_scheduling_lag_seconds gauge\n"));
        assert!(text.contains("# TYPE dbcanary_agent_late_timeouts counter\n"));
    }

    #[test]
    fn an_outage_observation_carries_its_trace_id_as_exemplar() {
        let text = exposition(Some("0af7651916cd43dd8448eb211c80319c"));
        let bucket = text
            .lines()
            .find(|l| l.contains("kind=\"network\"") && l.contains("# {"))
            .expect(&text);
        assert!(
            bucket.contains("trace_id=\"0af7651916cd43dd8448eb211c80319c\""),
            "{bucket}"
        );
        assert_eq!(exposition(None).matches("# {").count(), 0);
    }
}
