//! OTLP export: the recorder's second consumer. The same events that become
//! Prometheus series here become OpenTelemetry instruments and outage traces
//! (SPEC "Traces"), sent to a collector over gRPC or HTTP/protobuf.
//!
//! Export must never hurt probing: the recorder only hands finished spans to
//! a bounded queue (anything beyond it is dropped and counted in
//! `dbcanary_otlp_dropped_total`), exporters run on their own threads, and a
//! failing collector earns a rate-limited warning, nothing more.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::metrics::{
    Counter, Gauge, Histogram, Meter, MeterProvider as _, ObservableGauge,
};
use opentelemetry::trace::{
    Link, Span as _, SpanBuilder, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor,
};
use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::family::Family;

use super::metrics::{LATENCY_BUCKETS, OUTAGE_BUCKETS, SignalLabels};
use super::{Phase, States};
use crate::apps::Outcome;
use crate::config::{OtlpSettings, Transport};
use crate::events::{Event, OutageReport};
use crate::model::{FailoverSource, OutageKind, StoreKind, TargetInfo};

/// Finished spans waiting for export, at most. Beyond it spans are dropped
/// (and counted): a collector that is down costs bounded memory.
pub const MAX_QUEUED_SPANS: usize = 2048;

/// A failing collector is reported at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Why OTLP export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("cannot build the OTLP {signal} exporter: {source}")]
    Build {
        signal: &'static str,
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// Counts what export lost, per signal, and warns about it now and then.
#[derive(Clone)]
struct Losses {
    dropped: Family<SignalLabels, PromCounter>,
    last_warning: Arc<Mutex<Option<Instant>>>,
}

impl Losses {
    fn lost(&self, signal: &'static str, n: u64, why: &dyn std::fmt::Display) {
        if n == 0 {
            return;
        }
        self.dropped
            .get_or_create(&SignalLabels {
                signal: signal.into(),
            })
            .inc_by(n);
        let mut last = self.last_warning.lock().expect("warning lock");
        if last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(signal, dropped = n, reason = %why, "OTLP export failed: data dropped (counted in dbcanary_otlp_dropped_total; warned at most once a minute)");
        }
    }
}

/// Spans handed on but not exported yet: the gate in front of the batch
/// processor's queue.
struct Pending {
    count: AtomicUsize,
}

/// Wraps the OTLP span exporter to count what it loses.
#[derive(Debug)]
struct CountingSpanExporter {
    inner: opentelemetry_otlp::SpanExporter,
    pending: Arc<Pending>,
    losses: Losses,
}

impl std::fmt::Debug for Losses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Losses")
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pending({})", self.count.load(Ordering::Relaxed))
    }
}

/// Gives back the batch's places in the queue, however the export ends.
struct Release<'a>(&'a Pending, usize);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(self.1, Ordering::AcqRel);
    }
}

impl SpanExporter for CountingSpanExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let _release = Release(&self.pending, n);
        let r = self.inner.export(batch).await;
        if let Err(e) = &r {
            self.losses.lost("traces", n as u64, e);
        }
        r
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Lets a span into the batch processor only while fewer than
/// [`MAX_QUEUED_SPANS`] wait; counts the others as dropped.
#[derive(Debug)]
struct GateProcessor {
    inner: BatchSpanProcessor,
    pending: Arc<Pending>,
    losses: Losses,
}

impl SpanProcessor for GateProcessor {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        let admitted = self
            .pending
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_QUEUED_SPANS).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            self.inner.on_end(span);
        } else {
            self.losses.lost("traces", 1, &"the export queue is full");
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Wraps the OTLP metric exporter to count the metric streams a failed
/// export lost (they are cumulative: the next export that gets through
/// carries their totals again).
struct CountingMetricExporter {
    inner: opentelemetry_otlp::MetricExporter,
    losses: Losses,
}

impl PushMetricExporter for CountingMetricExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let r = self.inner.export(metrics).await;
        if let Err(e) = &r {
            let n: usize = metrics.scope_metrics().map(|s| s.metrics().count()).sum();
            self.losses.lost("metrics", n as u64, e);
        }
        r
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

/// The OTel instruments, one per Prometheus family.
struct Instruments {
    probes: Counter<u64>,
    probe_duration: Histogram<f64>,
    connect_attempts: Counter<u64>,
    connect_duration: Histogram<f64>,
    disconnects: Counter<u64>,
    outage_duration: Histogram<f64>,
    failovers: Counter<u64>,
    restarts: Counter<u64>,
    canary_restarts: Counter<u64>,
    last_outage_end: Gauge<f64>,
    app_recovery_lag: Histogram<f64>,
    app_not_recovered: Gauge<i64>,
    app_unrecovered: Counter<u64>,
    /// Kept so their callbacks stay registered.
    _observed: Vec<ObservableGauge<f64>>,
    _up: ObservableGauge<i64>,
}

impl Instruments {
    fn new(meter: &Meter, states: &States) -> Self {
        let s = states.clone();
        let up = meter
            .i64_observable_gauge("dbcanary.up")
            .with_description("1 while the canary connection is healthy")
            .with_callback(move |o| {
                for st in live(&s) {
                    o.observe(i64::from(st.0 == Phase::Up), &st.1);
                }
            })
            .build();
        let s = states.clone();
        let age = meter
            .f64_observable_gauge("dbcanary.connection.age")
            .with_unit("s")
            .with_description("Age of the current canary connection (0 while down)")
            .with_callback(move |o| {
                for st in live(&s) {
                    o.observe(st.2, &st.1);
                }
            })
            .build();
        let s = states.clone();
        let in_progress = meter
            .f64_observable_gauge("dbcanary.outage.in_progress")
            .with_unit("s")
            .with_description("Length of the current outage, 0 when up")
            .with_callback(move |o| {
                for st in live(&s) {
                    o.observe(st.3, &st.1);
                }
            })
            .build();
        let counter = |name: &'static str, help: &'static str| {
            meter.u64_counter(name).with_description(help).build()
        };
        let histogram = |name: &'static str, help: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(help)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        Self {
            probes: counter("dbcanary.probes", "Probes sent, by result"),
            probe_duration: histogram(
                "dbcanary.probe.duration",
                "Probe round trip",
                &LATENCY_BUCKETS,
            ),
            connect_attempts: counter(
                "dbcanary.connect.attempts",
                "Connection attempts, by result",
            ),
            connect_duration: histogram(
                "dbcanary.connect.duration",
                "Successful connection set-up",
                &LATENCY_BUCKETS,
            ),
            disconnects: counter("dbcanary.disconnects", "Canary connections lost, by cause"),
            outage_duration: histogram(
                "dbcanary.outage.duration",
                "Reconnect latency per outage (detection to first successful probe), by kind",
                &OUTAGE_BUCKETS,
            ),
            failovers: counter("dbcanary.failovers", "Failover events, by source"),
            restarts: counter("dbcanary.restarts", "Server restarts seen"),
            canary_restarts: counter(
                "dbcanary.canary.restarts",
                "Canary tasks restarted after a panic",
            ),
            last_outage_end: meter
                .f64_gauge("dbcanary.outage.last_end")
                .with_unit("s")
                .with_description("Unix time the last outage ended")
                .build(),
            app_recovery_lag: histogram(
                "dbcanary.app.recovery_lag",
                "Time from a dependency's restore to the application's first healthy probe (0 when the app stayed healthy)",
                &OUTAGE_BUCKETS,
            ),
            app_not_recovered: meter
                .i64_gauge("dbcanary.app.not_recovered")
                .with_description(
                    "1 while the dependency is back and the application is still unhealthy past its recovery deadline",
                )
                .build(),
            app_unrecovered: counter(
                "dbcanary.app.unrecovered",
                "Dependency outages after which the application did not recover within its deadline",
            ),
            _observed: vec![age, in_progress],
            _up: up,
        }
    }
}

impl Instruments {
    /// What an app drill came to, as on `/metrics`.
    fn app_outcome(&self, o: &Outcome) {
        match o {
            Outcome::Recovered {
                app,
                dependency,
                lag,
                ..
            } => {
                let a = app_attrs(app, dependency);
                self.app_recovery_lag.record(lag.as_secs_f64(), &a);
                self.app_not_recovered.record(0, &a);
            }
            Outcome::NotRecovered {
                app, dependency, ..
            } => {
                let a = app_attrs(app, dependency);
                self.app_not_recovered.record(1, &a);
                self.app_unrecovered.add(1, &a);
            }
            Outcome::Cleared { app, dependency } => {
                self.app_not_recovered
                    .record(0, &app_attrs(app, dependency));
            }
        }
    }
}

/// The attributes of an app's recovery series (an `http` target: no
/// `db.system.name`).
fn app_attrs(app: &str, dependency: &str) -> [KeyValue; 2] {
    [
        KeyValue::new("dbcanary.target", app.to_string()),
        KeyValue::new("dependency", dependency.to_string()),
    ]
}

/// (phase, attributes, connection age, outage length) of every watched target.
fn live(states: &States) -> Vec<(Phase, Vec<KeyValue>, f64, f64)> {
    let now = tokio::time::Instant::now();
    states
        .lock()
        .expect("state lock")
        .values()
        .filter(|s| s.state != Phase::Stopped)
        .map(|s| {
            let mut attrs = vec![KeyValue::new("dbcanary.target", s.name.clone())];
            if let Some(db) = db_system(s.store) {
                attrs.push(KeyValue::new("db.system.name", db));
            }
            let age = s.connected_mono.map_or(0.0, |c| (now - c).as_secs_f64());
            let outage = s
                .current_outage
                .as_ref()
                .map_or(0.0, |o| (now - o.since_mono).as_secs_f64());
            (s.state, attrs, age, outage)
        })
        .collect()
}

/// The OpenTelemetry `db.system.name` of a store label (none for `http`).
fn db_system(store_label: &str) -> Option<&'static str> {
    Some(match store_label {
        "redis" => "redis",
        "mysql" => "mysql",
        "mongodb" => "mongodb",
        "postgresql" => "postgresql",
        _ => return None,
    })
}

fn target_attrs(t: &TargetInfo) -> Vec<KeyValue> {
    let mut v = vec![KeyValue::new("dbcanary.target", t.name.clone())];
    if t.store != StoreKind::Http
        && let Some(db) = db_system(t.store.label())
    {
        v.push(KeyValue::new("db.system.name", db));
    }
    v
}

fn with(t: &TargetInfo, k: &'static str, v: &'static str) -> Vec<KeyValue> {
    let mut a = target_attrs(t);
    a.push(KeyValue::new(k, v));
    a
}

/// `server.address` and `server.port` of an endpoint (`host:port`, without
/// credentials; several hosts stay one address without a port).
fn server_attrs(endpoint: &str) -> Vec<KeyValue> {
    let single = !endpoint.contains(',');
    if single
        && let Some((host, port)) = endpoint.rsplit_once(':')
        && let Ok(port) = port.parse::<i64>()
    {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        return vec![
            KeyValue::new("server.address", host.to_string()),
            KeyValue::new("server.port", port),
        ];
    }
    vec![KeyValue::new("server.address", endpoint.to_string())]
}

/// An outage whose span is open.
struct OpenOutage {
    span: opentelemetry_sdk::trace::Span,
    context: SpanContext,
    attempts: u32,
    /// Detection, on both clocks: connect spans are placed on the outage's
    /// own time line, so that they nest inside it.
    started_at: SystemTime,
    started_mono: Instant,
    /// The successful attempt, ended with the outage (its end is clamped to
    /// the outage's end, which the canary measured just before emitting it).
    ok_attempt: Option<(SystemTime, SystemTime, Vec<KeyValue>)>,
}

impl OpenOutage {
    /// Now, on the outage's time line.
    fn now(&self) -> SystemTime {
        self.started_at + self.started_mono.elapsed()
    }
}

/// A target's last outage span, ended: an app's recovery span after that
/// outage becomes its child and links to it.
struct EndedOutage {
    context: SpanContext,
    /// The outage's end as its report gave it: the restore moment the
    /// app's drill starts from.
    ended_at: SystemTime,
}

struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    open: Mutex<HashMap<String, OpenOutage>>,
    /// Per target, its last ended outage span.
    ended: Mutex<HashMap<String, EndedOutage>>,
}

/// The OTLP consumer of the recorder.
pub struct Otlp {
    tracing: Option<Tracing>,
    meters: Option<(SdkMeterProvider, Instruments)>,
}

impl Otlp {
    /// Builds the exporters (inside the tokio runtime: the gRPC channel
    /// lives on it) and registers `dbcanary_otlp_dropped_total`.
    pub(super) fn build(
        s: &OtlpSettings,
        states: &States,
        dropped: Family<SignalLabels, PromCounter>,
    ) -> Result<Self, OtlpError> {
        let losses = Losses {
            dropped,
            last_warning: Arc::default(),
        };
        let resource = resource(s);
        let tracing = if s.traces {
            let exporter = span_exporter(s).map_err(|source| OtlpError::Build {
                signal: "traces",
                source,
            })?;
            let pending = Arc::new(Pending {
                count: AtomicUsize::new(0),
            });
            let batch = BatchSpanProcessor::builder(CountingSpanExporter {
                inner: exporter,
                pending: pending.clone(),
                losses: losses.clone(),
            })
            .with_batch_config(
                BatchConfigBuilder::default()
                    // Room for every admitted span: the gate drops, not it.
                    .with_max_queue_size(MAX_QUEUED_SPANS + 64)
                    .with_max_export_batch_size(512)
                    .with_scheduled_delay(s.export_interval.min(Duration::from_secs(5)))
                    .build(),
            )
            .build();
            let provider = SdkTracerProvider::builder()
                .with_span_processor(GateProcessor {
                    inner: batch,
                    pending,
                    losses: losses.clone(),
                })
                .with_resource(resource.clone())
                .build();
            let tracer = provider.tracer("dbcanary");
            Some(Tracing {
                provider,
                tracer,
                open: Mutex::default(),
                ended: Mutex::default(),
            })
        } else {
            None
        };
        let meters = if s.metrics {
            let exporter = metric_exporter(s).map_err(|source| OtlpError::Build {
                signal: "metrics",
                source,
            })?;
            let reader = PeriodicReader::builder(CountingMetricExporter {
                inner: exporter,
                losses,
            })
            .with_interval(s.export_interval)
            .build();
            let provider = SdkMeterProvider::builder()
                .with_reader(reader)
                .with_resource(resource)
                .build();
            let instruments = Instruments::new(&provider.meter("dbcanary"), states);
            Some((provider, instruments))
        } else {
            None
        };
        Ok(Self { tracing, meters })
    }

    /// Whether outage spans are exported (and so exemplars are given).
    pub fn traces(&self) -> bool {
        self.tracing.is_some()
    }

    /// Zero-valued series for a new target, as on `/metrics`.
    pub(super) fn add_target(&self, t: &TargetInfo) {
        let Some((_, m)) = &self.meters else { return };
        for r in ["ok", "error", "timeout"] {
            m.probes.add(0, &with(t, "result", r));
        }
        for r in super::connect_results(t) {
            m.connect_attempts.add(0, &with(t, "result", r));
        }
        for c in crate::model::DisconnectCause::ALL {
            m.disconnects.add(0, &with(t, "cause", c.as_str()));
        }
        for s in super::FAILOVER_SOURCES {
            m.failovers.add(0, &with(t, "source", s.as_str()));
        }
        m.restarts.add(0, &target_attrs(t));
        m.canary_restarts.add(0, &target_attrs(t));
    }

    /// Zero-valued recovery series for an app's dependencies, as on
    /// `/metrics` (the lag histogram starts with its first drill).
    pub(super) fn add_app(&self, app: &str, depends_on: &[String]) {
        let Some((_, m)) = &self.meters else { return };
        for d in depends_on {
            let a = app_attrs(app, d);
            m.app_not_recovered.record(0, &a);
            m.app_unrecovered.add(0, &a);
        }
    }

    /// Forgets a removed target's last outage span.
    pub(super) fn remove_target(&self, t: &TargetInfo) {
        if let Some(tr) = &self.tracing {
            tr.forget(&t.name);
        }
    }

    /// Takes what an app drill came to: the recovery instruments, and a
    /// `dbcanary.app.recovery` span in the dependency outage's trace.
    pub(super) fn on_outcome(&self, o: &Outcome) {
        if let Some((_, m)) = &self.meters {
            m.app_outcome(o);
        }
        if let Some(tr) = &self.tracing {
            tr.recovery(o);
        }
    }

    pub(super) fn canary_restarted(&self, t: &TargetInfo) {
        if let Some((_, m)) = &self.meters {
            m.canary_restarts.add(1, &target_attrs(t));
        }
    }

    /// Takes one event; for `Restored`, returns the trace id (hex) of the
    /// outage's span, for the exemplar.
    pub(super) fn on_event(&self, t: &TargetInfo, event: &Event) -> Option<String> {
        if let Some((_, m)) = &self.meters {
            self.measure(m, t, event);
        }
        self.tracing.as_ref().and_then(|tr| tr.on_event(t, event))
    }

    fn measure(&self, m: &Instruments, t: &TargetInfo, event: &Event) {
        match event {
            Event::ConnectAttempt {
                result, duration, ..
            } => {
                m.connect_attempts
                    .add(1, &with(t, "result", result.as_str()));
                if result.is_ok() {
                    m.connect_duration
                        .record(duration.as_secs_f64(), &target_attrs(t));
                }
            }
            Event::Probe { result, duration } => {
                m.probes.add(1, &with(t, "result", result.as_str()));
                m.probe_duration
                    .record(duration.as_secs_f64(), &target_attrs(t));
            }
            Event::Disconnected { cause, .. } => {
                m.disconnects.add(1, &with(t, "cause", cause.as_str()));
            }
            Event::Restored(r) => {
                m.outage_duration
                    .record(r.duration.as_secs_f64(), &with(t, "kind", r.kind.as_str()));
                if r.kind == OutageKind::Restart {
                    m.restarts.add(1, &target_attrs(t));
                }
                m.last_outage_end
                    .record(super::unix_secs(r.ended_at), &target_attrs(t));
            }
            Event::Failover { source, .. } => {
                m.failovers.add(1, &with(t, "source", source.as_str()));
            }
            _ => {}
        }
    }

    /// Ends every open outage span with status error ("unresolved at
    /// shutdown"), then flushes and stops both exporters within `budget`.
    /// Blocking: call it off the async workers.
    pub fn shutdown(&self, budget: Duration) {
        let start = Instant::now();
        if let Some(tr) = &self.tracing {
            tr.end_all("unresolved at shutdown");
            if let Err(e) = tr.provider.shutdown_with_timeout(budget) {
                tracing::warn!(error = %e, "OTLP traces not flushed at shutdown");
            }
        }
        if let Some((provider, _)) = &self.meters {
            let left = budget
                .saturating_sub(start.elapsed())
                .max(Duration::from_millis(100));
            if let Err(e) = provider.shutdown_with_timeout(left) {
                tracing::warn!(error = %e, "OTLP metrics not flushed at shutdown");
            }
        }
    }
}

impl Tracing {
    fn on_event(&self, t: &TargetInfo, event: &Event) -> Option<String> {
        let mut open = self.open.lock().expect("span lock");
        match event {
            Event::Disconnected { cause, at, .. } => {
                if let Some(mut old) = open.remove(&t.name) {
                    old.span
                        .set_status(Status::error("superseded by a new outage"));
                    old.span.end_with_timestamp(*at);
                }
                let mut attrs = target_attrs(t);
                attrs.extend(server_attrs(&t.endpoint));
                attrs.push(KeyValue::new("dbcanary.outage.cause", cause.as_str()));
                attrs.push(KeyValue::new("error.type", cause.as_str()));
                let span = self.tracer.build_with_context(
                    SpanBuilder::from_name("dbcanary.outage")
                        .with_kind(SpanKind::Internal)
                        .with_start_time(*at)
                        .with_attributes(attrs),
                    &Context::new(),
                );
                let context = span.span_context().clone();
                open.insert(
                    t.name.clone(),
                    OpenOutage {
                        span,
                        context,
                        attempts: 0,
                        started_at: *at,
                        started_mono: Instant::now(),
                        ok_attempt: None,
                    },
                );
                None
            }
            Event::ConnectAttempt {
                result,
                duration,
                error,
            } => {
                let o = open.get_mut(&t.name)?;
                o.attempts += 1;
                let end = o.now();
                let start = end.checked_sub(*duration).unwrap_or(end).max(o.started_at);
                let mut attrs = target_attrs(t);
                attrs.extend(server_attrs(&t.endpoint));
                attrs.push(KeyValue::new("dbcanary.connect.result", result.as_str()));
                attrs.push(KeyValue::new(
                    "dbcanary.connect.attempt",
                    i64::from(o.attempts),
                ));
                if result.is_ok() {
                    o.ok_attempt = Some((start, end, attrs));
                    return None;
                }
                attrs.push(KeyValue::new("error.type", result.as_str()));
                let mut span = self.connect_span(&o.context, start, attrs);
                span.set_status(Status::error(
                    error.clone().unwrap_or_else(|| result.as_str().to_string()),
                ));
                span.end_with_timestamp(end);
                None
            }
            Event::Restored(r) => {
                let mut o = open.remove(&t.name)?;
                let ended = r.ended_at.max(r.started_at);
                if let Some((start, end, attrs)) = o.ok_attempt.take() {
                    let end = end.min(ended);
                    let mut span = self.connect_span(&o.context, start.min(end), attrs);
                    span.end_with_timestamp(end);
                }
                finish(&mut o.span, r);
                self.ended.lock().expect("span lock").insert(
                    t.name.clone(),
                    EndedOutage {
                        context: o.context.clone(),
                        ended_at: r.ended_at,
                    },
                );
                Some(o.context.trace_id().to_string())
            }
            Event::Failover { source, from, to } => {
                if *source == FailoverSource::Outage {
                    // Already on the outage span (its `failover` event).
                    return None;
                }
                let attrs = vec![
                    KeyValue::new("dbcanary.failover.source", source.as_str()),
                    KeyValue::new("dbcanary.server.before", from.clone().unwrap_or_default()),
                    KeyValue::new("dbcanary.server.after", to.clone()),
                ];
                let now = SystemTime::now();
                match open.get_mut(&t.name) {
                    Some(o) => o.span.add_event_with_timestamp("failover", now, attrs),
                    None => {
                        let mut a = target_attrs(t);
                        a.extend(server_attrs(&t.endpoint));
                        a.push(KeyValue::new("dbcanary.failover.source", source.as_str()));
                        let mut span = self.tracer.build_with_context(
                            SpanBuilder::from_name("dbcanary.failover")
                                .with_kind(SpanKind::Internal)
                                .with_start_time(now)
                                .with_attributes(a),
                            &Context::new(),
                        );
                        span.add_event_with_timestamp("failover", now, attrs);
                        span.end_with_timestamp(now);
                    }
                }
                None
            }
            Event::Stopped => {
                if let Some(mut o) = open.remove(&t.name) {
                    o.span
                        .set_status(Status::error("unresolved when the canary stopped"));
                    o.span.end();
                }
                None
            }
            _ => None,
        }
    }

    /// A `dbcanary.app.recovery` span for a drill that ended, from the
    /// dependency's restore to the app's first healthy probe (or to the
    /// deadline it missed, in error): a child of the dependency's outage
    /// span, and linked to it, when that outage is the one the drill
    /// followed.
    fn recovery(&self, o: &Outcome) {
        let (app, dependency, restored_at, end, attrs, status) = match o {
            Outcome::Recovered {
                app,
                dependency,
                lag,
                restored_at,
                deadline,
                late,
                ..
            } => (
                app,
                dependency,
                *restored_at,
                *restored_at + *lag,
                vec![
                    KeyValue::new("dbcanary.app.recovered", true),
                    KeyValue::new("dbcanary.app.recovery_lag_s", lag.as_secs_f64()),
                    KeyValue::new("dbcanary.app.deadline_s", deadline.as_secs_f64()),
                    KeyValue::new("dbcanary.app.late", *late),
                ],
                None,
            ),
            Outcome::NotRecovered {
                app,
                dependency,
                deadline,
                restored_at,
                ..
            } => (
                app,
                dependency,
                *restored_at,
                *restored_at + *deadline,
                vec![
                    KeyValue::new("dbcanary.app.recovered", false),
                    KeyValue::new("dbcanary.app.deadline_s", deadline.as_secs_f64()),
                    KeyValue::new("dbcanary.app.late", false),
                ],
                Some(Status::error(format!(
                    "not recovered within {}",
                    humantime::format_duration(*deadline)
                ))),
            ),
            Outcome::Cleared { .. } => return,
        };
        let mut all = vec![
            KeyValue::new("dbcanary.target", app.clone()),
            KeyValue::new("dbcanary.app.dependency", dependency.clone()),
        ];
        all.extend(attrs);
        let mut builder = SpanBuilder::from_name("dbcanary.app.recovery")
            .with_kind(SpanKind::Internal)
            .with_start_time(restored_at)
            .with_attributes(all);
        // The dependency may have had a newer outage since (its outage span
        // ends at the drill's restore moment only if it is the drill's).
        let outage = self
            .ended
            .lock()
            .expect("span lock")
            .get(dependency)
            .filter(|e| e.ended_at == restored_at)
            .map(|e| e.context.clone());
        let parent = match outage {
            Some(ctx) => {
                builder = builder.with_links(vec![Link::with_context(ctx.clone())]);
                Context::new().with_remote_span_context(ctx)
            }
            None => Context::new(),
        };
        let mut span = self.tracer.build_with_context(builder, &parent);
        if let Some(status) = status {
            span.set_status(status);
        }
        span.end_with_timestamp(end);
    }

    fn forget(&self, target: &str) {
        self.ended.lock().expect("span lock").remove(target);
    }

    fn connect_span(
        &self,
        outage: &SpanContext,
        start: SystemTime,
        attrs: Vec<KeyValue>,
    ) -> opentelemetry_sdk::trace::Span {
        let parent = Context::new().with_remote_span_context(outage.clone());
        self.tracer.build_with_context(
            SpanBuilder::from_name("dbcanary.connect")
                .with_kind(SpanKind::Client)
                .with_start_time(start)
                .with_attributes(attrs),
            &parent,
        )
    }

    fn end_all(&self, why: &'static str) {
        let mut open = self.open.lock().expect("span lock");
        for (_, mut o) in open.drain() {
            o.span.set_attribute(KeyValue::new(
                "dbcanary.outage.attempts",
                i64::from(o.attempts),
            ));
            o.span.set_status(Status::error(why));
            o.span.end();
        }
    }
}

/// Completes an outage span from its report.
fn finish(span: &mut opentelemetry_sdk::trace::Span, r: &OutageReport) {
    let id = |i: Option<&crate::model::Identity>| {
        i.and_then(|i| i.server_id.clone()).unwrap_or_default()
    };
    let before = id(r.before.as_ref());
    let after = id(Some(&r.after));
    span.set_attribute(KeyValue::new("dbcanary.outage.kind", r.kind.as_str()));
    span.set_attribute(KeyValue::new(
        "dbcanary.outage.attempts",
        i64::from(r.attempts),
    ));
    span.set_attribute(KeyValue::new(
        "dbcanary.outage.resolution_s",
        r.resolution.as_secs_f64(),
    ));
    span.set_attribute(KeyValue::new(
        "dbcanary.outage.duration_s",
        r.duration.as_secs_f64(),
    ));
    span.set_attribute(KeyValue::new("dbcanary.server.id.before", before.clone()));
    span.set_attribute(KeyValue::new("dbcanary.server.id.after", after.clone()));
    if r.kind == OutageKind::Failover {
        let addr = |i: Option<&crate::model::Identity>| {
            i.and_then(|i| i.address.clone()).unwrap_or_default()
        };
        span.add_event_with_timestamp(
            "failover",
            r.ended_at,
            vec![
                KeyValue::new("dbcanary.failover.source", FailoverSource::Outage.as_str()),
                KeyValue::new("dbcanary.server.id.before", before),
                KeyValue::new("dbcanary.server.id.after", after),
                KeyValue::new("dbcanary.server.address.before", addr(r.before.as_ref())),
                KeyValue::new("dbcanary.server.address.after", addr(Some(&r.after))),
            ],
        );
    }
    // The outage is over: the span's status stays unset (only an outage
    // unresolved at shutdown is an error).
    span.end_with_timestamp(r.ended_at.max(r.started_at));
}

/// The resource every signal carries.
fn resource(s: &OtlpSettings) -> Resource {
    Resource::builder_empty()
        .with_attributes(
            s.resource_attributes()
                .into_iter()
                .map(|(k, v)| KeyValue::new(k.to_string(), v.to_string())),
        )
        .build()
}

fn span_exporter(
    s: &OtlpSettings,
) -> Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    let endpoint = s.signal_endpoint("/v1/traces");
    match s.transport {
        Transport::Grpc => {
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_timeout(s.timeout)
                .with_metadata(metadata(&s.headers));
            if endpoint.starts_with("https://") {
                b = b.with_tls_config(tls());
            }
            b.with_endpoint(endpoint).build()
        }
        Transport::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(s.timeout)
            .with_headers(s.headers.clone().into_iter().collect())
            .build(),
    }
}

fn metric_exporter(
    s: &OtlpSettings,
) -> Result<opentelemetry_otlp::MetricExporter, opentelemetry_otlp::ExporterBuildError> {
    let endpoint = s.signal_endpoint("/v1/metrics");
    match s.transport {
        Transport::Grpc => {
            let mut b = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_timeout(s.timeout)
                .with_metadata(metadata(&s.headers));
            if endpoint.starts_with("https://") {
                b = b.with_tls_config(tls());
            }
            b.with_endpoint(endpoint)
                .with_temporality(Temporality::Cumulative)
                .build()
        }
        Transport::HttpProtobuf => opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(s.timeout)
            .with_headers(s.headers.clone().into_iter().collect())
            .with_temporality(Temporality::Cumulative)
            .build(),
    }
}

/// Public roots for an `https://` collector (ignored for `http://`).
fn tls() -> opentelemetry_otlp::tonic_types::transport::ClientTlsConfig {
    opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new().with_enabled_roots()
}

fn metadata(
    headers: &BTreeMap<String, String>,
) -> opentelemetry_otlp::tonic_types::metadata::MetadataMap {
    use axum::http::{HeaderMap, HeaderName, HeaderValue};
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        match (
            HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(k), Ok(v)) => {
                map.insert(k, v);
            }
            // The value is a secret: name the header only.
            _ => tracing::warn!(header = %k, "otlp.headers: not a valid header; ignored"),
        }
    }
    opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttemptResult, ConnectResult, Identity};
    use opentelemetry::trace::Status;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SimpleSpanProcessor};

    fn attr<'a>(s: &'a SpanData, k: &str) -> Option<&'a opentelemetry::Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| &kv.value)
    }

    fn tracing_into(exporter: &InMemorySpanExporter) -> Tracing {
        let provider = SdkTracerProvider::builder()
            .with_span_processor(SimpleSpanProcessor::new(exporter.clone()))
            .build();
        let tracer = provider.tracer("test");
        Tracing {
            provider,
            tracer,
            open: Mutex::default(),
            ended: Mutex::default(),
        }
    }

    fn target() -> TargetInfo {
        TargetInfo {
            name: "cache".into(),
            store: StoreKind::Redis,
            endpoint: "10.0.0.1:6379".into(),
            own_results: &[],
        }
    }

    fn id(server: &str, addr: &str) -> Identity {
        Identity {
            server_id: Some(server.into()),
            address: Some(addr.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_failover_outage_is_one_span_with_connect_children_and_a_failover_event() {
        let exporter = InMemorySpanExporter::default();
        let tr = tracing_into(&exporter);
        let t = target();
        let start = SystemTime::now();
        tr.on_event(
            &t,
            &Event::lost_at(crate::model::DisconnectCause::Reset, start),
        );
        for result in [ConnectResult::Refused, ConnectResult::Ok] {
            let result = AttemptResult::from(result);
            tr.on_event(
                &t,
                &Event::ConnectAttempt {
                    result,
                    duration: Duration::from_millis(1),
                    error: (!result.is_ok()).then(|| "connection refused".into()),
                },
            );
        }
        let report = OutageReport {
            reason: "role changed".into(),
            attempts: 2,
            resolution: Duration::from_millis(20),
            before: Some(id("a", "10.0.0.2:6379")),
            after: id("b", "10.0.0.3:6379"),
            ..OutageReport::exact(
                start,
                Duration::from_millis(40),
                crate::model::DisconnectCause::Reset,
                OutageKind::Failover,
            )
        };
        let trace_id = tr.on_event(&t, &Event::Restored(Box::new(report))).unwrap();
        tr.on_event(
            &t,
            &Event::Failover {
                source: FailoverSource::Outage,
                from: Some("a".into()),
                to: "b".into(),
            },
        );
        let spans = exporter.get_finished_spans().unwrap();
        let outage = spans.iter().find(|s| s.name == "dbcanary.outage").unwrap();
        assert_eq!(outage.span_context.trace_id().to_string(), trace_id);
        assert_eq!(outage.start_time, start);
        assert_eq!(outage.end_time, start + Duration::from_millis(40));
        assert_eq!(
            attr(outage, "dbcanary.outage.kind"),
            Some(&"failover".into())
        );
        assert_eq!(attr(outage, "server.address"), Some(&"10.0.0.1".into()));
        assert_eq!(attr(outage, "server.port"), Some(&6379i64.into()));
        assert_eq!(attr(outage, "dbcanary.server.id.before"), Some(&"a".into()));
        assert_eq!(attr(outage, "dbcanary.server.id.after"), Some(&"b".into()));
        assert_eq!(outage.status, Status::Unset);
        let events: Vec<_> = outage.events.iter().collect();
        assert_eq!(events.len(), 1, "one failover event: {events:?}");
        assert_eq!(events[0].name, "failover");
        let connects: Vec<_> = spans
            .iter()
            .filter(|s| s.name == "dbcanary.connect")
            .collect();
        assert_eq!(connects.len(), 2);
        for c in &connects {
            assert_eq!(c.parent_span_id, outage.span_context.span_id());
            assert!(c.start_time >= outage.start_time && c.end_time <= outage.end_time);
        }
        assert!(matches!(connects[0].status, Status::Error { .. }));
        assert_eq!(attr(connects[0], "error.type"), Some(&"refused".into()));
        assert_eq!(spans.len(), 3, "no separate failover span during an outage");
    }

    #[test]
    fn an_announced_failover_without_outage_is_a_short_span_and_shutdown_ends_open_outages_in_error()
     {
        let exporter = InMemorySpanExporter::default();
        let tr = tracing_into(&exporter);
        let t = target();
        tr.on_event(
            &t,
            &Event::Failover {
                source: FailoverSource::Sentinel,
                from: Some("10.0.0.2:6379".into()),
                to: "10.0.0.3:6379".into(),
            },
        );
        tr.on_event(
            &t,
            &Event::lost_at(crate::model::DisconnectCause::Closed, SystemTime::now()),
        );
        tr.end_all("unresolved at shutdown");
        let spans = exporter.get_finished_spans().unwrap();
        let f = spans
            .iter()
            .find(|s| s.name == "dbcanary.failover")
            .unwrap();
        assert_eq!(f.events.iter().next().unwrap().name, "failover");
        assert_eq!(
            attr(f, "dbcanary.failover.source"),
            Some(&"sentinel".into())
        );
        let o = spans.iter().find(|s| s.name == "dbcanary.outage").unwrap();
        assert!(matches!(o.status, Status::Error { .. }), "{:?}", o.status);
        assert_eq!(attr(o, "dbcanary.outage.kind"), None);
    }

    /// An outage of `t` from `start` to `start` + 40 ms, in `tr`.
    fn outage(tr: &Tracing, t: &TargetInfo, start: SystemTime) -> OutageReport {
        tr.on_event(
            t,
            &Event::lost_at(crate::model::DisconnectCause::Closed, start),
        );
        let report = OutageReport {
            reason: String::new(),
            attempts: 1,
            resolution: Duration::from_millis(20),
            before: Some(id("a", "10.0.0.1:6379")),
            after: id("b", "10.0.0.1:6379"),
            ..OutageReport::exact(
                start,
                Duration::from_millis(40),
                crate::model::DisconnectCause::Closed,
                OutageKind::Restart,
            )
        };
        tr.on_event(t, &Event::Restored(Box::new(report.clone())));
        report
    }

    fn recovered(restored_at: SystemTime, lag: Duration, late: bool) -> Outcome {
        Outcome::Recovered {
            app: "shop".into(),
            dependency: "cache".into(),
            lag,
            dependency_outage: Duration::from_millis(40),
            restored_at,
            deadline: Duration::from_secs(30),
            late,
        }
    }

    fn recoveries(exporter: &InMemorySpanExporter) -> Vec<SpanData> {
        exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|s| s.name == "dbcanary.app.recovery")
            .collect()
    }

    #[test]
    fn an_app_recovery_is_a_child_of_the_dependency_outage_span_and_links_to_it() {
        let exporter = InMemorySpanExporter::default();
        let tr = tracing_into(&exporter);
        let report = outage(&tr, &target(), SystemTime::now());
        let lag = Duration::from_millis(250);
        tr.recovery(&recovered(report.ended_at, lag, false));

        let spans = exporter.get_finished_spans().unwrap();
        let o = spans.iter().find(|s| s.name == "dbcanary.outage").unwrap();
        let [r] = &recoveries(&exporter)[..] else {
            panic!("one recovery span: {spans:?}")
        };
        assert_eq!(r.span_context.trace_id(), o.span_context.trace_id());
        assert_eq!(r.parent_span_id, o.span_context.span_id());
        let links: Vec<&SpanContext> = r.links.iter().map(|l| &l.span_context).collect();
        assert_eq!(links, vec![&o.span_context]);
        assert_eq!(r.start_time, report.ended_at);
        assert_eq!(r.start_time, o.end_time, "starts where the outage ends");
        assert_eq!(r.end_time, report.ended_at + lag);
        assert_eq!(attr(r, "dbcanary.target"), Some(&"shop".into()));
        assert_eq!(attr(r, "dbcanary.app.dependency"), Some(&"cache".into()));
        assert_eq!(attr(r, "dbcanary.app.recovered"), Some(&true.into()));
        assert_eq!(attr(r, "dbcanary.app.recovery_lag_s"), Some(&0.25.into()));
        assert_eq!(attr(r, "dbcanary.app.deadline_s"), Some(&30.0.into()));
        assert_eq!(attr(r, "dbcanary.app.late"), Some(&false.into()));
        assert_eq!(r.status, Status::Unset);
    }

    #[test]
    fn a_missed_deadline_is_an_error_span_and_a_late_recovery_its_own_span() {
        let exporter = InMemorySpanExporter::default();
        let tr = tracing_into(&exporter);
        let report = outage(&tr, &target(), SystemTime::now());
        tr.recovery(&Outcome::NotRecovered {
            app: "shop".into(),
            dependency: "cache".into(),
            deadline: Duration::from_secs(30),
            dependency_outage: Duration::from_millis(40),
            restored_at: report.ended_at,
        });
        tr.recovery(&recovered(report.ended_at, Duration::from_secs(45), true));
        tr.recovery(&Outcome::Cleared {
            app: "shop".into(),
            dependency: "cache".into(),
        });

        let spans = recoveries(&exporter);
        let [missed, late] = &spans[..] else {
            panic!("two recovery spans, none for a cleared flag: {spans:?}")
        };
        assert_eq!(
            missed.status,
            Status::error("not recovered within 30s"),
            "{missed:?}"
        );
        assert_eq!(missed.end_time, report.ended_at + Duration::from_secs(30));
        assert_eq!(attr(missed, "dbcanary.app.recovered"), Some(&false.into()));
        assert_eq!(attr(missed, "dbcanary.app.recovery_lag_s"), None);
        assert_eq!(attr(missed, "dbcanary.app.deadline_s"), Some(&30.0.into()));
        assert_eq!(attr(late, "dbcanary.app.late"), Some(&true.into()));
        assert_eq!(attr(late, "dbcanary.app.recovered"), Some(&true.into()));
        assert_eq!(late.status, Status::Unset);
        assert_eq!(late.end_time, report.ended_at + Duration::from_secs(45));
        for s in [missed, late] {
            assert_eq!(s.span_context.trace_id(), spans[0].span_context.trace_id());
            assert_eq!(s.parent_span_id, spans[0].parent_span_id);
            assert_eq!(s.links.len(), 1);
        }
    }

    #[test]
    fn a_recovery_whose_outage_span_is_not_known_is_an_unlinked_root_span() {
        let exporter = InMemorySpanExporter::default();
        let tr = tracing_into(&exporter);
        let t = target();
        let first = outage(&tr, &t, SystemTime::now());
        // The dependency had a newer outage than the drill's.
        outage(&tr, &t, first.ended_at + Duration::from_secs(1));
        tr.recovery(&recovered(first.ended_at, Duration::ZERO, false));
        // A removed dependency's outage is forgotten.
        let last = outage(&tr, &t, first.ended_at + Duration::from_secs(2));
        tr.forget(&t.name);
        tr.recovery(&recovered(last.ended_at, Duration::ZERO, false));

        let outages: Vec<_> = exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|s| s.name == "dbcanary.outage")
            .map(|s| s.span_context.trace_id())
            .collect();
        let spans = recoveries(&exporter);
        assert_eq!(spans.len(), 2);
        for s in &spans {
            assert_eq!(s.parent_span_id, opentelemetry::trace::SpanId::INVALID);
            assert!(s.links.is_empty(), "{s:?}");
            assert!(!outages.contains(&s.span_context.trace_id()));
        }
    }

    #[test]
    fn app_recovery_instruments_carry_the_prometheus_series() {
        use opentelemetry_sdk::metrics::InMemoryMetricExporter;
        use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};

        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        let otlp = Otlp {
            tracing: None,
            meters: Some((
                provider.clone(),
                Instruments::new(&provider.meter("test"), &States::default()),
            )),
        };
        let restored_at = SystemTime::now();
        otlp.add_app("shop", &["cache".to_string()]);
        otlp.on_outcome(&recovered(restored_at, Duration::from_millis(500), false));
        otlp.on_outcome(&Outcome::NotRecovered {
            app: "shop".into(),
            dependency: "cache".into(),
            deadline: Duration::from_secs(30),
            dependency_outage: Duration::from_millis(40),
            restored_at,
        });

        let collect = || {
            exporter.reset();
            provider.force_flush().unwrap();
            let rm = exporter.get_finished_metrics().unwrap();
            let mut out = BTreeMap::new();
            for m in rm
                .iter()
                .flat_map(|r| r.scope_metrics())
                .flat_map(|s| s.metrics())
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
        assert_eq!(got["dbcanary.app.recovery_lag"], "count 1 sum 0.5");
        assert_eq!(got["dbcanary.app.not_recovered"], "1");
        assert_eq!(got["dbcanary.app.unrecovered"], "1");
        otlp.on_outcome(&Outcome::Cleared {
            app: "shop".into(),
            dependency: "cache".into(),
        });
        assert_eq!(collect()["dbcanary.app.not_recovered"], "0");
    }
}
