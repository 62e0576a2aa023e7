//! The OTLP export pipelines: exporters for gRPC or HTTP/protobuf, and the
//! wrappers that keep export from hurting probing. Finished spans go through
//! a gate into a bounded queue (anything beyond it is dropped and counted in
//! the catalogue's `OTLP_DROPPED`), exporters run on their own threads, and
//! a failing collector earns a rate-limited warning, nothing more.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{
    ExporterBuildError, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::config::{OtlpSettings, Transport};
use crate::telemetry::catalogue::{OTLP_DROPPED, PREFIX};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignalLabels {
    signal: String,
}

/// Finished spans waiting for export, at most. Beyond it spans are dropped
/// (and counted): a collector that is down costs bounded memory.
const MAX_QUEUED_SPANS: usize = 2048;

/// A failing collector is reported at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Counts what export lost, per signal, and warns about it now and then.
#[derive(Clone)]
pub(super) struct Losses {
    dropped: Family<SignalLabels, Counter>,
    last_warning: Arc<Mutex<Option<Instant>>>,
}

impl Losses {
    /// Spans and metric streams dropped so far, every signal together.
    pub(super) fn total(&self) -> u64 {
        ["traces", "metrics"]
            .iter()
            .filter_map(|signal| {
                let labels = SignalLabels {
                    signal: (*signal).into(),
                };
                self.dropped.get(&labels).map(|c| c.get())
            })
            .sum()
    }

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
            tracing::warn!(signal, dropped = n, reason = %why, "OTLP export failed: data dropped (counted in {PREFIX}_{}_total; warned at most once a minute)", OTLP_DROPPED.name);
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

impl Losses {
    /// Registers the dropped counter in `registry` (the `dbcanary_` one),
    /// at zero for each signal exported.
    pub(super) fn register(registry: &mut Registry, s: &OtlpSettings) -> Self {
        let dropped = Family::<SignalLabels, Counter>::default();
        for (on, signal) in [(s.traces, "traces"), (s.metrics, "metrics")] {
            if on {
                let _ = dropped.get_or_create(&SignalLabels {
                    signal: signal.into(),
                });
            }
        }
        registry.register(OTLP_DROPPED.name, OTLP_DROPPED.help, dropped.clone());
        Self {
            dropped,
            last_warning: Arc::default(),
        }
    }
}

/// The traces pipeline: a batch processor behind the gate, exporting to
/// the collector.
pub(super) fn tracer_provider(
    s: &OtlpSettings,
    resource: Resource,
    losses: &Losses,
) -> Result<SdkTracerProvider, ExporterBuildError> {
    let pending = Arc::new(Pending {
        count: AtomicUsize::new(0),
    });
    let batch = BatchSpanProcessor::builder(CountingSpanExporter {
        inner: span_exporter(s)?,
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
    Ok(SdkTracerProvider::builder()
        .with_span_processor(GateProcessor {
            inner: batch,
            pending,
            losses: losses.clone(),
        })
        .with_resource(resource)
        .build())
}

/// The metrics pipeline: a periodic reader exporting to the collector.
pub(super) fn meter_provider(
    s: &OtlpSettings,
    resource: Resource,
    losses: Losses,
) -> Result<SdkMeterProvider, ExporterBuildError> {
    let reader = PeriodicReader::builder(CountingMetricExporter {
        inner: metric_exporter(s)?,
        losses,
    })
    .with_interval(s.export_interval)
    .build();
    Ok(SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(resource)
        .build())
}

/// The resource every signal carries.
pub(super) fn resource(s: &OtlpSettings) -> Resource {
    Resource::builder_empty()
        .with_attributes(
            s.resource_attributes()
                .into_iter()
                .map(|(k, v)| KeyValue::new(k.to_string(), v.to_string())),
        )
        .build()
}

fn span_exporter(s: &OtlpSettings) -> Result<opentelemetry_otlp::SpanExporter, ExporterBuildError> {
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
) -> Result<opentelemetry_otlp::MetricExporter, ExporterBuildError> {
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
