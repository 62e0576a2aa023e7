//! Every metric dbcanary exports, declared once (SPEC "Metrics"): its
//! Prometheus and OpenTelemetry names, help, unit, instrument, extra label
//! and when its series exist. The Prometheus exposition and the OTLP
//! instruments are both built by walking [`CATALOGUE`], so a new metric is
//! one entry here and one line where its event is mapped (`measure`).
//!
//! Every target series also carries the target's name and store (`target`
//! and `store` on Prometheus, `dbcanary.target` and `db.system.name` over
//! OTLP); label values come only from config names and the enums of
//! [`crate::model`].

use std::collections::BTreeSet;

use tokio::time::Instant;

use super::state::{Phase, TargetState};
use crate::model::{
    ConnectResult, DisconnectCause, FailoverSource, MetricDetail, OutageKind, ProbeResult,
};

/// What every Prometheus name starts with (`dbcanary_`).
pub const PREFIX: &str = "dbcanary";

/// Outage buckets: 1 ms to 5 min.
pub const OUTAGE_BUCKETS: [f64; 17] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// Outage buckets of a target at `metrics = "basic"`, chosen from what
/// outages measure here: a dropped connection the canary reconnects at once
/// (1-10 ms), a restart (10 ms-1 s), a failover (1-10 s, where the latency
/// alert's threshold sits) and an outage nobody should wait for (up to
/// 5 min).
pub const BASIC_OUTAGE_BUCKETS: [f64; 6] = [0.001, 0.01, 0.1, 1.0, 10.0, 300.0];

/// Probe and connect buckets: 100 µs to 10 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A round trip's histogram (probes, connects).
const LATENCY: Instrument = Instrument::Histogram {
    buckets: &LATENCY_BUCKETS,
    exemplars: false,
};

/// A target metric, by its place in [`CATALOGUE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Id {
    Up,
    ProbeDuration,
    Probes,
    ConnectDuration,
    ConnectAttempts,
    Disconnects,
    OutageDuration,
    Outages,
    OutageInProgress,
    Failovers,
    Restarts,
    ServerInfo,
    ConnectionAge,
    LastOutageEnd,
    CanaryRestarts,
    AppRecoveryLag,
    AppNotRecovered,
    AppUnrecovered,
}

impl Id {
    /// This metric's declaration.
    pub fn metric(self) -> &'static Metric {
        &CATALOGUE[self as usize]
    }
}

/// One metric of a target.
#[derive(Debug)]
pub struct Metric {
    pub id: Id,
    /// The Prometheus name, without the `dbcanary_` prefix and without the
    /// unit and `_total` suffixes the exposition adds.
    pub name: &'static str,
    /// The OpenTelemetry name, when the metric is exported over OTLP too.
    pub otel: Option<&'static str>,
    /// Prometheus help and OpenTelemetry description.
    pub help: &'static str,
    pub unit: Option<Unit>,
    pub instrument: Instrument,
    pub label: Label,
    pub seed: Seed,
    /// What a target at `metrics = "basic"` has of it (`detailed` has
    /// `label` and `instrument` as declared).
    pub basic: Basic,
}

/// A metric at `metrics = "basic"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Basic {
    /// As declared.
    Same,
    /// Not exported.
    Absent,
    /// A histogram with these fewer buckets and this label instead (the
    /// outage histogram drops `kind`: `dbcanary_outages_total{kind}` counts
    /// the outages of each kind).
    Coarse {
        label: Label,
        buckets: &'static [f64],
    },
}

/// The label and buckets a target's series of a metric have.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Form {
    pub label: Label,
    /// Empty for counters and gauges.
    pub buckets: &'static [f64],
}

impl Metric {
    /// What a target at `detail` has of this metric; none: no series.
    pub fn form(&self, detail: MetricDetail) -> Option<Form> {
        let declared = Form {
            label: self.label,
            buckets: match self.instrument {
                Instrument::Histogram { buckets, .. } => buckets,
                Instrument::Counter | Instrument::Gauge(_) => &[],
            },
        };
        match (detail, self.basic) {
            (MetricDetail::Detailed, _) | (MetricDetail::Basic, Basic::Same) => Some(declared),
            (MetricDetail::Basic, Basic::Absent) => None,
            (MetricDetail::Basic, Basic::Coarse { label, buckets }) => {
                Some(Form { label, buckets })
            }
        }
    }

    /// Whether the series of label value `value` exists from the moment
    /// the target is added.
    pub fn seeded(&self, value: Option<&str>) -> bool {
        match self.seed {
            Seed::Zero => true,
            Seed::ZeroFor(values) => value.is_some_and(|v| values.contains(&v)),
            Seed::FirstMeasurement | Seed::State(_) => false,
        }
    }
}

/// The unit of a metric's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Seconds,
}

impl Unit {
    /// The OpenTelemetry (UCUM) unit.
    pub fn otel(self) -> &'static str {
        match self {
            Self::Seconds => "s",
        }
    }
}

/// What kind of instrument a metric is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Instrument {
    Counter,
    Gauge(Number),
    Histogram {
        buckets: &'static [f64],
        /// Whether each observation carries the trace id of its span as
        /// exemplar, when traces are exported (OpenMetrics only; the
        /// Prometheus text format drops it).
        exemplars: bool,
    },
}

/// Whether a gauge holds whole numbers (flags, `1`) or fractions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Number {
    Int,
    Float,
}

/// The extra label a target metric has beyond `target` and `store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    None,
    /// `result`: a probe's ([`ProbeResult`]).
    ProbeResult,
    /// `result`: a connection attempt's ([`ConnectResult`], then the
    /// target's store's own results).
    AttemptResult,
    /// `cause` ([`DisconnectCause`]).
    Cause,
    /// `kind` ([`OutageKind`]).
    Kind,
    /// `source` ([`FailoverSource`]).
    Source,
    /// `dependency`: each store an application depends on.
    Dependency,
    /// `server_id`, `role`, `version`, `address`: who answers now, read
    /// from the target's identity (one series at most).
    Server,
}

/// What a target's label values depend on beyond the enums.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSpace {
    /// The attempt results its store has of its own (an application's
    /// `status` and `body`).
    pub own_results: &'static [&'static str],
    /// The targets an application depends on, sorted, each once.
    pub dependencies: Vec<String>,
}

impl LabelSpace {
    /// The label values of a target with these own results and
    /// dependencies.
    pub fn new(own_results: &'static [&'static str], dependencies: &[String]) -> Self {
        Self {
            own_results,
            dependencies: dependencies
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        }
    }
}

impl Label {
    /// The label's key; none for [`Label::None`] and [`Label::Server`]
    /// (whose keys are the identity's).
    pub fn key(self) -> Option<&'static str> {
        match self {
            Self::None | Self::Server => None,
            Self::ProbeResult | Self::AttemptResult => Some("result"),
            Self::Cause => Some("cause"),
            Self::Kind => Some("kind"),
            Self::Source => Some("source"),
            Self::Dependency => Some("dependency"),
        }
    }

    /// How many series a target has of a metric with this label.
    pub fn count(self, space: &LabelSpace) -> usize {
        match self {
            Self::None | Self::Server => 1,
            Self::ProbeResult => ProbeResult::ALL.len(),
            Self::AttemptResult => ConnectResult::ALL.len() + space.own_results.len(),
            Self::Cause => DisconnectCause::ALL.len(),
            Self::Kind => OutageKind::ALL.len(),
            Self::Source => FailoverSource::ALL.len(),
            Self::Dependency => space.dependencies.len(),
        }
    }

    /// The label values of a target's series, in order: a single `None`
    /// when the label has no key.
    pub fn values(self, space: &LabelSpace) -> impl Iterator<Item = Option<&str>> {
        (0..self.count(space)).map(move |i| self.value(i, space))
    }

    fn value(self, i: usize, space: &LabelSpace) -> Option<&str> {
        Some(match self {
            Self::None | Self::Server => return None,
            Self::ProbeResult => ProbeResult::ALL[i].as_str(),
            Self::AttemptResult => match ConnectResult::ALL.get(i) {
                Some(r) => r.as_str(),
                None => space.own_results[i - ConnectResult::ALL.len()],
            },
            Self::Cause => DisconnectCause::ALL[i].as_str(),
            Self::Kind => OutageKind::ALL[i].as_str(),
            Self::Source => FailoverSource::ALL[i].as_str(),
            Self::Dependency => &space.dependencies[i],
        })
    }
}

/// Reads a gauge's value from a target's state (none: no series now).
pub type Read = fn(&TargetState, Instant) -> Option<f64>;

/// When a target's series of a metric exist, and where their values come
/// from.
#[derive(Debug, Clone, Copy)]
pub enum Seed {
    /// Every label value at zero from the moment the target is added, so
    /// that `rate()` counts the first event (it cannot count a series'
    /// first sample) and dashboards show every target at once. Over OTLP a
    /// histogram cannot be seeded: it starts with its first observation.
    Zero,
    /// These label values at zero (as [`Seed::Zero`]), the others from
    /// their first measurement: the ones an alert or a rate must see from
    /// the first event, without a series per rare value for every target.
    ZeroFor(&'static [&'static str]),
    /// Each series from its first measurement.
    FirstMeasurement,
    /// Read from the target's state when scraped or collected, not stored.
    State(Read),
}

/// How many target metrics there are.
pub const COUNT: usize = 18;

/// Every target metric, in exposition order (SPEC "Metrics" order).
pub static CATALOGUE: [Metric; COUNT] = [
    Metric {
        id: Id::Up,
        name: "up",
        otel: Some("dbcanary.up"),
        help: "1 while the canary connection is healthy",
        unit: None,
        instrument: Instrument::Gauge(Number::Int),
        label: Label::None,
        seed: Seed::State(up),
        basic: Basic::Same,
    },
    Metric {
        id: Id::ProbeDuration,
        name: "probe_duration",
        otel: Some("dbcanary.probe.duration"),
        help: "Probe round trip",
        unit: Some(Unit::Seconds),
        instrument: LATENCY,
        label: Label::None,
        seed: Seed::FirstMeasurement,
        basic: Basic::Absent,
    },
    Metric {
        id: Id::Probes,
        name: "probes",
        otel: Some("dbcanary.probes"),
        help: "Probes sent, by result",
        unit: None,
        instrument: Instrument::Counter,
        label: Label::ProbeResult,
        seed: Seed::ZeroFor(&["ok"]),
        basic: Basic::Same,
    },
    Metric {
        id: Id::ConnectDuration,
        name: "connect_duration",
        otel: Some("dbcanary.connect.duration"),
        help: "Successful connection set-up (TCP, TLS, auth, handshake, identity, first probe)",
        unit: Some(Unit::Seconds),
        instrument: LATENCY,
        label: Label::None,
        seed: Seed::FirstMeasurement,
        basic: Basic::Absent,
    },
    Metric {
        id: Id::ConnectAttempts,
        name: "connect_attempts",
        otel: Some("dbcanary.connect.attempts"),
        help: "Connection attempts, by result",
        unit: None,
        instrument: Instrument::Counter,
        label: Label::AttemptResult,
        seed: Seed::ZeroFor(&["ok"]),
        basic: Basic::Same,
    },
    Metric {
        id: Id::Disconnects,
        name: "disconnects",
        otel: Some("dbcanary.disconnects"),
        help: "Canary connections lost, by cause",
        unit: None,
        instrument: Instrument::Counter,
        label: Label::Cause,
        // `unreachable` happens once per canary at most: not seeded.
        seed: Seed::ZeroFor(&["closed", "reset", "timeout", "error"]),
        basic: Basic::Same,
    },
    Metric {
        id: Id::OutageDuration,
        name: "outage_duration",
        otel: Some("dbcanary.outage.duration"),
        help: "Reconnect latency per outage (detection to first successful probe), by kind at metrics = detailed",
        unit: Some(Unit::Seconds),
        instrument: Instrument::Histogram {
            buckets: &OUTAGE_BUCKETS,
            exemplars: true,
        },
        label: Label::Kind,
        seed: Seed::Zero,
        basic: Basic::Coarse {
            label: Label::None,
            buckets: &BASIC_OUTAGE_BUCKETS,
        },
    },
    Metric {
        id: Id::Outages,
        name: "outages",
        otel: Some("dbcanary.outages"),
        help: "Ended outages, by kind",
        unit: None,
        instrument: Instrument::Counter,
        label: Label::Kind,
        // The outage histogram (seeded) counts every outage from the first;
        // this one tells their kinds apart.
        seed: Seed::FirstMeasurement,
        basic: Basic::Same,
    },
    Metric {
        id: Id::OutageInProgress,
        name: "outage_in_progress",
        otel: Some("dbcanary.outage.in_progress"),
        help: "Length of the current outage, 0 when up",
        unit: Some(Unit::Seconds),
        instrument: Instrument::Gauge(Number::Float),
        label: Label::None,
        seed: Seed::State(outage_in_progress),
        basic: Basic::Same,
    },
    Metric {
        id: Id::Failovers,
        name: "failovers",
        otel: Some("dbcanary.failovers"),
        help: "Failover events, by source",
        unit: None,
        instrument: Instrument::Counter,
        label: Label::Source,
        seed: Seed::Zero,
        basic: Basic::Same,
    },
    Metric {
        id: Id::Restarts,
        name: "restarts",
        otel: Some("dbcanary.restarts"),
        help: "Server restarts seen",
        unit: None,
        instrument: Instrument::Counter,
        label: Label::None,
        seed: Seed::Zero,
        basic: Basic::Same,
    },
    Metric {
        id: Id::ServerInfo,
        name: "server_info",
        otel: None,
        help: "The server that answers now (1)",
        unit: None,
        instrument: Instrument::Gauge(Number::Int),
        label: Label::Server,
        seed: Seed::State(server_info),
        basic: Basic::Same,
    },
    Metric {
        id: Id::ConnectionAge,
        name: "connection_age",
        otel: Some("dbcanary.connection.age"),
        help: "Age of the current canary connection (0 while down)",
        unit: Some(Unit::Seconds),
        instrument: Instrument::Gauge(Number::Float),
        label: Label::None,
        seed: Seed::State(connection_age),
        basic: Basic::Same,
    },
    Metric {
        id: Id::LastOutageEnd,
        name: "last_outage_end_timestamp",
        otel: Some("dbcanary.outage.last_end"),
        help: "Unix time the last outage ended",
        unit: Some(Unit::Seconds),
        instrument: Instrument::Gauge(Number::Float),
        label: Label::None,
        seed: Seed::FirstMeasurement,
        basic: Basic::Same,
    },
    Metric {
        id: Id::CanaryRestarts,
        name: "canary_restarts",
        otel: Some("dbcanary.canary.restarts"),
        help: "Canary tasks restarted after a panic",
        unit: None,
        instrument: Instrument::Counter,
        label: Label::None,
        seed: Seed::FirstMeasurement,
        basic: Basic::Same,
    },
    Metric {
        id: Id::AppRecoveryLag,
        name: "app_recovery_lag",
        otel: Some("dbcanary.app.recovery_lag"),
        help: "Time from a dependency's restore to the application's first healthy probe (0 when the app stayed healthy)",
        unit: Some(Unit::Seconds),
        instrument: Instrument::Histogram {
            buckets: &OUTAGE_BUCKETS,
            exemplars: false,
        },
        label: Label::Dependency,
        seed: Seed::Zero,
        basic: Basic::Coarse {
            label: Label::Dependency,
            buckets: &BASIC_OUTAGE_BUCKETS,
        },
    },
    Metric {
        id: Id::AppNotRecovered,
        name: "app_not_recovered",
        otel: Some("dbcanary.app.not_recovered"),
        help: "1 while the dependency is back and the application is still unhealthy past its recovery deadline",
        unit: None,
        instrument: Instrument::Gauge(Number::Int),
        label: Label::Dependency,
        seed: Seed::Zero,
        basic: Basic::Same,
    },
    Metric {
        id: Id::AppUnrecovered,
        name: "app_unrecovered",
        otel: Some("dbcanary.app.unrecovered"),
        help: "Dependency outages after which the application did not recover within its deadline",
        unit: None,
        instrument: Instrument::Counter,
        label: Label::Dependency,
        seed: Seed::Zero,
        basic: Basic::Same,
    },
];

/// A metric of the agent itself rather than of a target (Prometheus only).
#[derive(Debug)]
pub struct AgentMetric {
    /// Without the `dbcanary_` prefix and the `_total` suffix.
    pub name: &'static str,
    pub help: &'static str,
}

/// `version` and `revision` of the agent (1).
pub const BUILD_INFO: AgentMetric = AgentMetric {
    name: "build_info",
    help: "The agent itself (1)",
};

/// The agent's own lateness: how late its scheduling ticker woke, the
/// most in the last [`crate::lag::WINDOW`].
pub const SCHEDULING_LAG: AgentMetric = AgentMetric {
    name: "agent_scheduling_lag",
    help: "How late the agent's own ticker woke up, the most in the last 10 s: when it is high, probes and connects time out because of the agent, not the store",
};

/// Timeouts that the agent retried at once because it was late itself.
pub const LATE_RETRIES: AgentMetric = AgentMetric {
    name: "agent_late_timeouts",
    help: "Probe and connect timeouts retried at once, not counted as the store's, because the agent itself was late",
};

/// What OTLP export lost, by `signal`.
pub const OTLP_DROPPED: AgentMetric = AgentMetric {
    name: "otlp_dropped",
    help: "Spans and metric streams OTLP export dropped (queue full or collector failing), by signal",
};

/// This agent's place in a fleet (1), by `shard` (`k/n`).
pub const AGENT_INFO: AgentMetric = AgentMetric {
    name: "agent_info",
    help: "This agent: its shard, k/n (1)",
};

/// How many targets this agent watches: those its shard kept.
pub const AGENT_TARGETS: AgentMetric = AgentMetric {
    name: "agent_targets",
    help: "Targets this agent watches (those its shard kept of the target list)",
};

/// Drills run through the API, by the store's `target` and `result`.
pub const DRILLS: AgentMetric = AgentMetric {
    name: "drills",
    help: "Drills run through the agent's API (POST /api/v1/drills), by the drilled store's target and result: passed, failed (an app did not recover in time), aborted (interrupted, or not performed: not healthy first, or the action failed)",
};

/// 1 from the first connection until it is lost (kept while the canary
/// stops: the last thing it knew).
fn up(st: &TargetState, _: Instant) -> Option<f64> {
    Some(if st.connected_mono.is_some() {
        1.0
    } else {
        0.0
    })
}

fn connection_age(st: &TargetState, now: Instant) -> Option<f64> {
    (st.state != Phase::Stopped).then(|| st.connected_mono.map_or(0.0, |c| (now - c).as_secs_f64()))
}

fn outage_in_progress(st: &TargetState, now: Instant) -> Option<f64> {
    (st.state != Phase::Stopped).then(|| {
        st.current_outage
            .as_ref()
            .map_or(0.0, |o| (now - o.since_mono).as_secs_f64())
    })
}

fn server_info(st: &TargetState, _: Instant) -> Option<f64> {
    st.identity.as_ref().map(|_| 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_sits_at_its_id_and_every_name_is_unique() {
        let mut names = BTreeSet::new();
        for (i, m) in CATALOGUE.iter().enumerate() {
            assert_eq!(m.id as usize, i, "{}", m.name);
            assert!(std::ptr::eq(m.id.metric(), m));
            assert!(names.insert(m.name), "{} twice", m.name);
            if let Some(otel) = m.otel {
                assert!(otel.starts_with("dbcanary."), "{otel}");
                assert!(names.insert(otel), "{otel} twice");
            }
        }
        for a in [
            &BUILD_INFO,
            &OTLP_DROPPED,
            &AGENT_INFO,
            &AGENT_TARGETS,
            &SCHEDULING_LAG,
            &LATE_RETRIES,
        ] {
            assert!(names.insert(a.name), "{} twice", a.name);
        }
    }

    #[test]
    fn what_is_read_from_the_state_is_a_gauge_and_only_it_has_the_server_labels() {
        for m in &CATALOGUE {
            let from_state = matches!(m.seed, Seed::State(_));
            if from_state {
                assert!(matches!(m.instrument, Instrument::Gauge(_)), "{}", m.name);
            }
            if m.label == Label::Server {
                assert!(from_state && m.otel.is_none(), "{}", m.name);
            }
            if let Instrument::Histogram {
                exemplars: true, ..
            } = m.instrument
            {
                assert!(m.otel.is_some(), "{}: exemplars are trace ids", m.name);
            }
        }
    }

    /// The most series a target can have at `detail` (every label value
    /// seen once), as docs/metrics.md lists them.
    fn worst_case(detail: MetricDetail, space: &LabelSpace) -> usize {
        CATALOGUE
            .iter()
            .filter_map(|m| m.form(detail))
            .map(|f| {
                let per_value = if f.buckets.is_empty() {
                    1
                } else {
                    f.buckets.len() + 3
                };
                f.label.count(space) * per_value
            })
            .sum()
    }

    #[test]
    fn a_basic_store_target_has_at_most_40_series() {
        let store = LabelSpace::new(&[], &[]);
        assert_eq!(worst_case(MetricDetail::Basic, &store), 40);
        assert!(worst_case(MetricDetail::Detailed, &store) > 100);
        // An application adds its own results and 11 per dependency.
        let app = LabelSpace::new(&["status", "body"], &["db".to_string()]);
        assert_eq!(worst_case(MetricDetail::Basic, &app), 40 + 2 + 11);
        for m in &CATALOGUE {
            if let Seed::ZeroFor(values) = m.seed {
                let space = LabelSpace::default();
                for v in values {
                    assert!(
                        m.label.values(&space).any(|l| l == Some(*v)),
                        "{}: {v}",
                        m.name
                    );
                }
            }
        }
    }

    #[test]
    fn label_values_come_from_the_model_and_the_target() {
        let space = LabelSpace::new(
            &["status", "body"],
            &["db".to_string(), "cache".to_string(), "db".to_string()],
        );
        let values = |l: Label| l.values(&space).collect::<Vec<_>>();
        assert_eq!(values(Label::None), [None]);
        assert_eq!(values(Label::Dependency), [Some("cache"), Some("db")]);
        let attempts = values(Label::AttemptResult);
        assert_eq!(attempts.len(), ConnectResult::ALL.len() + 2);
        assert_eq!(attempts[0], Some("ok"));
        assert_eq!(
            attempts[attempts.len() - 2..],
            [Some("status"), Some("body")]
        );
        assert_eq!(
            values(Label::Source),
            FailoverSource::ALL.map(|s| Some(s.as_str()))
        );
    }
}
