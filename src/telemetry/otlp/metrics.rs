//! The OTLP metrics: one OpenTelemetry instrument per catalogue entry that
//! has an OpenTelemetry name, built by walking the catalogue. They take the
//! same changes as the Prometheus series (`measure`); the gauges read from
//! a target's state are observed from it at each collection.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, ObservableGauge};
use tokio::time::Instant;

use super::attributes;
use crate::model::StoreKind;
use crate::telemetry::catalogue::{self, CATALOGUE, LabelSpace, Metric, Number, Read, Seed};
use crate::telemetry::measure::{Change, Op};
use crate::telemetry::state::{Phase, States};

/// One catalogue entry's instrument.
enum Instrument {
    Counter(Counter<u64>),
    IntGauge(Gauge<i64>),
    Gauge(Gauge<f64>),
    Histogram(Histogram<f64>),
    /// Read from the state; kept so that its callback stays registered.
    ObservedInt(ObservableGauge<i64>),
    ObservedFloat(ObservableGauge<f64>),
}

/// The instruments, by catalogue entry.
pub(super) struct Instruments {
    /// None for what is not exported over OTLP.
    by_id: Vec<Option<Instrument>>,
}

impl Instruments {
    pub(super) fn new(meter: &Meter, states: &States) -> Self {
        Self {
            by_id: CATALOGUE
                .iter()
                .map(|m| m.otel.map(|name| build(meter, m, name, states)))
                .collect(),
        }
    }

    /// Zero-valued series for a new target, as on `/metrics` (a histogram
    /// cannot be seeded: it starts with its first observation).
    pub(super) fn seed(&self, target: &str, store: StoreKind, labels: &LabelSpace) {
        for (m, instrument) in CATALOGUE.iter().zip(&self.by_id) {
            let Some(instrument) = instrument else {
                continue;
            };
            for value in m.label.values(labels).filter(|v| m.seeded(*v)) {
                let a = attrs(target, store, m, value);
                match instrument {
                    Instrument::Counter(i) => i.add(0, &a),
                    Instrument::IntGauge(i) => i.record(0, &a),
                    Instrument::Gauge(i) => i.record(0.0, &a),
                    Instrument::Histogram(_)
                    | Instrument::ObservedInt(_)
                    | Instrument::ObservedFloat(_) => {}
                }
            }
        }
    }

    /// Applies the changes to a target's series.
    pub(super) fn apply(&self, target: &str, store: StoreKind, changes: &[Change]) {
        for c in changes {
            let Some(instrument) = &self.by_id[c.metric as usize] else {
                continue;
            };
            let a = attrs(target, store, c.metric.metric(), c.label);
            match (instrument, c.op) {
                (Instrument::Counter(i), Op::Add(n)) => i.add(n, &a),
                // Whole numbers by construction (flags).
                (Instrument::IntGauge(i), Op::Set(v)) => i.record(v as i64, &a),
                (Instrument::Gauge(i), Op::Set(v)) => i.record(v, &a),
                (Instrument::Histogram(i), Op::Observe(v)) => i.record(v, &a),
                // `measure` only pairs an instrument with its own operation.
                _ => {}
            }
        }
    }
}

fn build(meter: &Meter, m: &'static Metric, name: &'static str, states: &States) -> Instrument {
    let unit = m.unit.map_or("", catalogue::Unit::otel);
    let help = m.help;
    match (m.instrument, m.seed) {
        (catalogue::Instrument::Gauge(Number::Int), Seed::State(read)) => {
            let states = states.clone();
            Instrument::ObservedInt(
                meter
                    .i64_observable_gauge(name)
                    .with_description(help)
                    .with_unit(unit)
                    .with_callback(move |o| observe(&states, read, |v, a| o.observe(v as i64, a)))
                    .build(),
            )
        }
        (catalogue::Instrument::Gauge(Number::Float), Seed::State(read)) => {
            let states = states.clone();
            Instrument::ObservedFloat(
                meter
                    .f64_observable_gauge(name)
                    .with_description(help)
                    .with_unit(unit)
                    .with_callback(move |o| observe(&states, read, |v, a| o.observe(v, a)))
                    .build(),
            )
        }
        (catalogue::Instrument::Counter, _) => Instrument::Counter(
            meter
                .u64_counter(name)
                .with_description(help)
                .with_unit(unit)
                .build(),
        ),
        (catalogue::Instrument::Gauge(Number::Int), _) => Instrument::IntGauge(
            meter
                .i64_gauge(name)
                .with_description(help)
                .with_unit(unit)
                .build(),
        ),
        (catalogue::Instrument::Gauge(Number::Float), _) => Instrument::Gauge(
            meter
                .f64_gauge(name)
                .with_description(help)
                .with_unit(unit)
                .build(),
        ),
        (catalogue::Instrument::Histogram { buckets, .. }, _) => Instrument::Histogram(
            meter
                .f64_histogram(name)
                .with_description(help)
                .with_unit(unit)
                .with_boundaries(buckets.to_vec())
                .build(),
        ),
    }
}

/// Reads `read` from every target whose canary runs (a stopped one is no
/// longer observed) and hands each value on with its attributes.
fn observe(states: &States, read: Read, mut f: impl FnMut(f64, &[KeyValue])) {
    let now = Instant::now();
    for h in states.handles() {
        let st = crate::telemetry::state::lock(&h);
        if st.state == Phase::Stopped {
            continue;
        }
        if let Some(v) = read(&st, now) {
            f(v, &attributes::target(&st.name, st.store));
        }
    }
}

/// A series' attributes: the target's, and the metric's extra label.
fn attrs(target: &str, store: StoreKind, m: &Metric, value: Option<&str>) -> Vec<KeyValue> {
    let mut a = attributes::target(target, store);
    if let (Some(key), Some(value)) = (m.label.key(), value) {
        a.push(KeyValue::new(key, value.to_string()));
    }
    a
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    use super::*;
    use crate::apps::Outcome;
    use crate::telemetry::catalogue::{Id, OUTAGE_BUCKETS};
    use crate::telemetry::measure;

    #[test]
    fn app_recovery_instruments_carry_the_prometheus_series() {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        let m = Instruments::new(&provider.meter("test"), &States::default());
        let outcome = |o: Outcome| {
            let (app, changes) = measure::outcome(&o);
            m.apply(app, StoreKind::Http, &changes);
        };
        let restored_at = SystemTime::now();
        m.seed(
            "shop",
            StoreKind::Http,
            &LabelSpace::new(&[], &["cache".to_string()]),
        );
        outcome(Outcome::Recovered {
            app: "shop".into(),
            dependency: "cache".into(),
            lag: Duration::from_millis(500),
            dependency_outage: Duration::from_millis(40),
            restored_at,
            deadline: Duration::from_secs(30),
            late: false,
        });
        outcome(Outcome::NotRecovered {
            app: "shop".into(),
            dependency: "cache".into(),
            deadline: Duration::from_secs(30),
            dependency_outage: Duration::from_millis(40),
            restored_at,
        });

        let name = |id: Id| id.metric().otel.unwrap();
        let apps = [Id::AppRecoveryLag, Id::AppNotRecovered, Id::AppUnrecovered].map(name);
        let collect = || {
            exporter.reset();
            provider.force_flush().unwrap();
            let rm = exporter.get_finished_metrics().unwrap();
            let mut out = BTreeMap::new();
            for m in rm
                .iter()
                .flat_map(|r| r.scope_metrics())
                .flat_map(|s| s.metrics())
                .filter(|m| apps.contains(&m.name()))
            {
                let key = |a: &mut dyn Iterator<Item = &KeyValue>| {
                    let a: Vec<String> = a.map(|kv| format!("{}={}", kv.key, kv.value)).collect();
                    assert_eq!(
                        a,
                        ["dbcanary.target=shop", "dependency=cache"],
                        "{}",
                        m.name()
                    );
                };
                let v = match m.data() {
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                        let p = h.data_points().next().unwrap();
                        key(&mut p.attributes());
                        assert_eq!(m.unit(), "s");
                        assert_eq!(p.bounds().collect::<Vec<_>>(), OUTAGE_BUCKETS);
                        format!("count {} sum {}", p.count(), p.sum())
                    }
                    AggregatedMetrics::I64(MetricData::Gauge(g)) => {
                        let p = g.data_points().next().unwrap();
                        key(&mut p.attributes());
                        p.value().to_string()
                    }
                    AggregatedMetrics::U64(MetricData::Sum(s)) => {
                        let p = s.data_points().next().unwrap();
                        key(&mut p.attributes());
                        assert!(s.is_monotonic());
                        p.value().to_string()
                    }
                    other => panic!("{}: {other:?}", m.name()),
                };
                out.insert(m.name().to_string(), v);
            }
            out
        };
        let got = collect();
        assert_eq!(got[name(Id::AppRecoveryLag)], "count 1 sum 0.5");
        assert_eq!(got[name(Id::AppNotRecovered)], "1");
        assert_eq!(got[name(Id::AppUnrecovered)], "1");
        outcome(Outcome::Cleared {
            app: "shop".into(),
            dependency: "cache".into(),
        });
        assert_eq!(collect()[name(Id::AppNotRecovered)], "0");
    }

    #[test]
    fn every_catalogue_entry_with_an_otel_name_is_exported_with_its_unit() {
        use crate::model::{OutageKind, TargetInfo};
        use crate::telemetry::state::TargetState;

        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        let states = States::default();
        let t = TargetInfo {
            name: "shop".into(),
            store: StoreKind::Http,
            endpoint: "127.0.0.1:1".into(),
            own_results: &[],
            instance: 1,
            detail: Default::default(),
        };
        states.insert(TargetState::new(&t));
        let m = Instruments::new(&provider.meter("test"), &states);
        m.seed(
            &t.name,
            t.store,
            &LabelSpace::new(&[], &["cache".to_string()]),
        );
        for e in &measure::sample_events(OutageKind::Network) {
            m.apply(&t.name, t.store, &measure::event(e));
        }
        m.apply(&t.name, t.store, &[measure::CANARY_RESTART]);
        let recovered = Outcome::Recovered {
            app: t.name.clone(),
            dependency: "cache".into(),
            lag: Duration::ZERO,
            dependency_outage: Duration::ZERO,
            restored_at: SystemTime::now(),
            deadline: Duration::ZERO,
            late: false,
        };
        let (app, changes) = measure::outcome(&recovered);
        m.apply(app, t.store, &changes);

        provider.force_flush().unwrap();
        let rm = exporter.get_finished_metrics().unwrap();
        let got: BTreeMap<String, String> = rm
            .iter()
            .flat_map(|r| r.scope_metrics())
            .flat_map(|s| s.metrics())
            .map(|m| (m.name().to_string(), m.unit().to_string()))
            .collect();
        let want: BTreeMap<String, String> = CATALOGUE
            .iter()
            .filter_map(|m| {
                let unit = m.unit.map_or("", catalogue::Unit::otel);
                m.otel.map(|name| (name.to_string(), unit.to_string()))
            })
            .collect();
        assert_eq!(got, want);
    }
}
