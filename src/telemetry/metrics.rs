//! Every Prometheus series dbcanary exports, named once (SPEC "Metrics").
//! Label values come only from config names and bounded enums.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// Outage buckets: 1 ms to 5 min.
pub const OUTAGE_BUCKETS: [f64; 17] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// Probe and connect buckets: 100 µs to 10 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub target: String,
    pub store: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub target: String,
    pub store: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    pub target: String,
    pub store: String,
    pub cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub target: String,
    pub store: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub target: String,
    pub store: String,
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerInfoLabels {
    pub target: String,
    pub store: String,
    pub server_id: String,
    pub role: String,
    pub version: String,
    pub address: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub target: String,
    pub store: String,
    pub dependency: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignalLabels {
    pub signal: String,
}

/// The exemplar of an outage observation: its span's trace.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceLabels {
    pub trace_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub revision: String,
}

/// Builds histograms with fixed buckets.
#[derive(Clone, Copy)]
pub struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

impl MetricConstructor<HistogramWithExemplars<TraceLabels>> for Buckets {
    fn new_metric(&self) -> HistogramWithExemplars<TraceLabels> {
        HistogramWithExemplars::new(self.0.iter().copied())
    }
}

type GaugeF = Gauge<f64, AtomicU64>;

/// The registered metric families.
pub struct Metrics {
    pub up: Family<TargetLabels, Gauge>,
    pub probe_duration: Family<TargetLabels, Histogram, Buckets>,
    pub probes: Family<ResultLabels, Counter>,
    pub connect_duration: Family<TargetLabels, Histogram, Buckets>,
    pub connect_attempts: Family<ResultLabels, Counter>,
    pub disconnects: Family<CauseLabels, Counter>,
    /// With the trace id of each outage's span as exemplar, when traces are
    /// exported (OpenMetrics only; the Prometheus text format drops it).
    pub outage_duration: Family<KindLabels, HistogramWithExemplars<TraceLabels>, Buckets>,
    pub failovers: Family<SourceLabels, Counter>,
    pub restarts: Family<TargetLabels, Counter>,
    pub server_info: Family<ServerInfoLabels, Gauge>,
    pub last_outage_end: Family<TargetLabels, GaugeF>,
    pub canary_restarts: Family<TargetLabels, Counter>,
    pub app_recovery_lag: Family<AppLabels, Histogram, Buckets>,
    pub app_not_recovered: Family<AppLabels, Gauge>,
    pub app_unrecovered: Family<AppLabels, Counter>,
}

impl Metrics {
    /// Creates the families and registers them (names without the
    /// `dbcanary_` prefix, which the registry adds).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            up: Family::default(),
            probe_duration: Family::new_with_constructor(Buckets(&LATENCY_BUCKETS)),
            probes: Family::default(),
            connect_duration: Family::new_with_constructor(Buckets(&LATENCY_BUCKETS)),
            connect_attempts: Family::default(),
            disconnects: Family::default(),
            outage_duration: Family::new_with_constructor(Buckets(&OUTAGE_BUCKETS)),
            failovers: Family::default(),
            restarts: Family::default(),
            server_info: Family::default(),
            last_outage_end: Family::default(),
            canary_restarts: Family::default(),
            app_recovery_lag: Family::new_with_constructor(Buckets(&OUTAGE_BUCKETS)),
            app_not_recovered: Family::default(),
            app_unrecovered: Family::default(),
        };
        registry.register(
            "up",
            "1 while the canary connection is healthy",
            m.up.clone(),
        );
        registry.register_with_unit(
            "probe_duration",
            "Probe round trip",
            Unit::Seconds,
            m.probe_duration.clone(),
        );
        registry.register("probes", "Probes sent, by result", m.probes.clone());
        registry.register_with_unit(
            "connect_duration",
            "Successful connection set-up (TCP, TLS, auth, handshake, identity, first probe)",
            Unit::Seconds,
            m.connect_duration.clone(),
        );
        registry.register(
            "connect_attempts",
            "Connection attempts, by result",
            m.connect_attempts.clone(),
        );
        registry.register(
            "disconnects",
            "Canary connections lost, by cause",
            m.disconnects.clone(),
        );
        registry.register_with_unit(
            "outage_duration",
            "Reconnect latency per outage (detection to first successful probe), by kind",
            Unit::Seconds,
            m.outage_duration.clone(),
        );
        registry.register(
            "failovers",
            "Failover events, by source",
            m.failovers.clone(),
        );
        registry.register("restarts", "Server restarts seen", m.restarts.clone());
        registry.register(
            "server_info",
            "The server that answers now (1)",
            m.server_info.clone(),
        );
        registry.register_with_unit(
            "last_outage_end_timestamp",
            "Unix time the last outage ended",
            Unit::Seconds,
            m.last_outage_end.clone(),
        );
        registry.register(
            "canary_restarts",
            "Canary tasks restarted after a panic",
            m.canary_restarts.clone(),
        );
        registry.register_with_unit(
            "app_recovery_lag",
            "Time from a dependency's restore to the application's first healthy probe (0 when the app stayed healthy)",
            Unit::Seconds,
            m.app_recovery_lag.clone(),
        );
        registry.register(
            "app_not_recovered",
            "1 while the dependency is back and the application is still unhealthy past its recovery deadline",
            m.app_not_recovered.clone(),
        );
        registry.register(
            "app_unrecovered",
            "Dependency outages after which the application did not recover within its deadline",
            m.app_unrecovered.clone(),
        );
        m
    }
}
