//! End-to-end OTLP export: the real agent against a real `redis-server`,
//! sending to an OTLP receiver that lives inside the test (the collector's
//! gRPC `TraceService`/`MetricsService`, and an HTTP/protobuf endpoint). The
//! tests assert what a user of a trace view or a metrics backend would see:
//! one `dbcanary.outage` span per outage with its attributes and its
//! `dbcanary.connect` children, an outage histogram counted once, the
//! exemplar on `/metrics` naming that span's trace, no credential anywhere,
//! a collector that is down costing neither probing nor memory, and an
//! application's recovery after a Redis restart as a span in the Redis
//! outage's trace.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use prost::Message;
use support::app::app_toml;
use support::drill::restart_script;
use support::redis::RedisServer;
use support::{Agent, DISCONNECTS, OUTAGES, PROBES, Pacing, check, free_port, poll_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const UP_WITHIN: Duration = Duration::from_secs(10);
const EXPORTED_WITHIN: Duration = Duration::from_secs(20);
const PASSWORD: &str = "otlp-S3cret-pw";

/// What the receiver got.
#[derive(Default)]
struct Received {
    spans: Vec<ResourceSpans>,
    metrics: Vec<ResourceMetrics>,
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Received>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.got
            .lock()
            .unwrap()
            .spans
            .extend(req.into_inner().resource_spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.got
            .lock()
            .unwrap()
            .metrics
            .extend(req.into_inner().resource_metrics);
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

impl Receiver {
    /// A gRPC receiver on a free port; stops when the test's runtime ends.
    async fn grpc() -> (Receiver, SocketAddr) {
        let r = Receiver::default();
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(r.clone()))
            .add_service(MetricsServiceServer::new(r.clone()))
            .serve(addr);
        tokio::spawn(server);
        wait_listening(addr).await;
        (r, addr)
    }

    /// An HTTP/protobuf receiver (`/v1/traces`, `/v1/metrics`) on a free port.
    async fn http() -> (Receiver, SocketAddr) {
        use axum::body::Bytes;
        use axum::routing::post;
        let r = Receiver::default();
        let (rt, rm) = (r.clone(), r.clone());
        let app = axum::Router::new()
            .route(
                "/v1/traces",
                post(move |body: Bytes| async move {
                    let req = ExportTraceServiceRequest::decode(body).expect("trace request");
                    rt.got.lock().unwrap().spans.extend(req.resource_spans);
                    protobuf(ExportTraceServiceResponse::default().encode_to_vec())
                }),
            )
            .route(
                "/v1/metrics",
                post(move |body: Bytes| async move {
                    let req = ExportMetricsServiceRequest::decode(body).expect("metrics request");
                    rm.got.lock().unwrap().metrics.extend(req.resource_metrics);
                    protobuf(ExportMetricsServiceResponse::default().encode_to_vec())
                }),
            );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", free_port()))
            .await
            .expect("bind the HTTP receiver");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        wait_listening(addr).await;
        (r, addr)
    }

    fn spans(&self) -> Vec<Span> {
        let got = self.got.lock().unwrap();
        got.spans
            .iter()
            .flat_map(|rs| rs.scope_spans.iter().flat_map(|ss| ss.spans.clone()))
            .collect()
    }

    fn resource_attributes(&self) -> Vec<KeyValue> {
        let got = self.got.lock().unwrap();
        got.spans
            .iter()
            .filter_map(|rs| rs.resource.as_ref())
            .chain(got.metrics.iter().filter_map(|rm| rm.resource.as_ref()))
            .flat_map(|r| r.attributes.clone())
            .collect()
    }

    /// The latest data point count of `dbcanary.outage.duration` with this
    /// target and kind, with the histogram's bounds and temporality.
    fn outage_histogram(&self, target: &str, kind: &str) -> Option<(u64, Vec<f64>, i32)> {
        let got = self.got.lock().unwrap();
        let mut last = None;
        for rm in &got.metrics {
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    if m.name != "dbcanary.outage.duration" {
                        continue;
                    }
                    assert_eq!(m.unit, "s", "unit of dbcanary.outage.duration");
                    let Some(metric::Data::Histogram(h)) = &m.data else {
                        panic!("dbcanary.outage.duration is not a histogram: {m:?}");
                    };
                    for p in &h.data_points {
                        if attr(&p.attributes, "dbcanary.target").as_deref() == Some(target)
                            && attr(&p.attributes, "dbcanary.outage.kind")
                                .or_else(|| attr(&p.attributes, "kind"))
                                .as_deref()
                                == Some(kind)
                        {
                            last = Some((
                                p.count,
                                p.explicit_bounds.clone(),
                                h.aggregation_temporality,
                            ));
                        }
                    }
                }
            }
        }
        last
    }

    /// The latest value of the app recovery metric `name` for `app` and
    /// dependency `cache`: a histogram's count, a gauge's or a counter's
    /// value; the unit is checked on the way.
    fn app_metric(&self, name: &str, app: &str) -> Option<f64> {
        let got = self.got.lock().unwrap();
        let mut last = None;
        let ours = |attrs: &[KeyValue]| {
            attr(attrs, "dbcanary.target").as_deref() == Some(app)
                && attr(attrs, "dependency").as_deref() == Some("cache")
        };
        let number = |v: &Option<number_data_point::Value>| match v {
            Some(number_data_point::Value::AsInt(i)) => Some(*i as f64),
            Some(number_data_point::Value::AsDouble(d)) => Some(*d),
            None => None,
        };
        for m in got
            .metrics
            .iter()
            .flat_map(|rm| rm.scope_metrics.iter())
            .flat_map(|sm| sm.metrics.iter())
            .filter(|m| m.name == name)
        {
            match &m.data {
                Some(metric::Data::Histogram(h)) => {
                    assert_eq!(m.unit, "s", "unit of {name}");
                    for p in h.data_points.iter().filter(|p| ours(&p.attributes)) {
                        last = Some(p.count as f64);
                    }
                }
                Some(metric::Data::Gauge(g)) => {
                    for p in g.data_points.iter().filter(|p| ours(&p.attributes)) {
                        last = number(&p.value);
                    }
                }
                Some(metric::Data::Sum(s)) => {
                    assert!(s.is_monotonic, "{name} is a counter");
                    for p in s.data_points.iter().filter(|p| ours(&p.attributes)) {
                        last = number(&p.value);
                    }
                }
                other => panic!("{name}: unexpected data {other:?}"),
            }
        }
        last
    }

    fn metric_names(&self) -> Vec<String> {
        let got = self.got.lock().unwrap();
        let mut names: Vec<String> = got
            .metrics
            .iter()
            .flat_map(|rm| rm.scope_metrics.iter())
            .flat_map(|sm| sm.metrics.iter().map(|m| m.name.clone()))
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

fn protobuf(body: Vec<u8>) -> axum::response::Response {
    use axum::response::IntoResponse;
    ([("content-type", "application/x-protobuf")], body).into_response()
}

async fn wait_listening(addr: SocketAddr) {
    poll_until(
        Duration::from_secs(10),
        "the receiver listening",
        async || {
            tokio::net::TcpStream::connect(addr)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    )
    .await;
}

fn value_text(v: &Option<AnyValue>) -> Option<String> {
    match v.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| value_text(&kv.value))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `[otlp]` for a receiver at `endpoint`, exporting every 300 ms.
fn otlp_toml(endpoint: &str, protocol: &str) -> String {
    format!(
        "[otlp]\nendpoint = {endpoint:?}\nprotocol = {protocol:?}\nexport_interval = \"300ms\"\ntimeout = \"2s\"\nheaders = {{ authorization = \"Bearer {PASSWORD}-token\" }}\nresource_attributes = {{ \"deployment.environment.name\" = \"test\" }}\n"
    )
}

/// `GET /metrics` asking for OpenMetrics (the harness's client asks for
/// anything, which gets the Prometheus text format).
async fn openmetrics(addr: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!(
            "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("OpenMetrics scrape timed out")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP answer");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "not OpenMetrics: {head}"
    );
    body.to_string()
}

/// The trace ids of the exemplars on `dbcanary_outage_duration_seconds`
/// buckets of `target` (at `metrics = "basic"`, one histogram of every kind).
fn exemplar_trace_ids(body: &str, target: &str) -> Vec<String> {
    body.lines()
        .filter(|l| l.starts_with("dbcanary_outage_duration_seconds_bucket{"))
        .filter(|l| l.contains(&format!("target=\"{target}\"")))
        .filter_map(|l| l.split_once(" # {trace_id=\""))
        .filter_map(|(_, rest)| rest.split_once('"').map(|(id, _)| id.to_string()))
        .collect()
}

/// The restart drill every transport must carry: one outage span with its
/// attributes and connect children, the outage histogram counted once, the
/// exemplar naming the span's trace, no credential anywhere.
async fn restart_drill(protocol: &str) {
    let (receiver, addr) = match protocol {
        "grpc" => Receiver::grpc().await,
        _ => Receiver::http().await,
    };
    let mut redis = RedisServer::start_with("redis", &[], Some(PASSWORD)).await;
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", redis.port);
    let mut agent = Agent::builder()
        .pacing(Pacing::FAST)
        .toml(&otlp_toml(&format!("http://{addr}"), protocol))
        .target("cache", &url)
        .start_up(UP_WITHIN)
        .await;

    redis.kill();
    agent.wait_up("cache", false, UP_WITHIN).await;
    redis.start_again().await;
    agent
        .wait_count(OUTAGES, "cache", "restart", 1.0, UP_WITHIN)
        .await;

    let outage = poll_until(EXPORTED_WITHIN, "a dbcanary.outage span", async || {
        let spans = receiver.spans();
        let outages: Vec<Span> = spans
            .iter()
            .filter(|s| s.name == "dbcanary.outage")
            .cloned()
            .collect();
        match outages.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(spans.iter().map(|s| s.name.clone()).collect::<Vec<_>>()),
        }
    })
    .await;
    let a = |k: &str| attr(&outage.attributes, k);
    assert_eq!(a("dbcanary.target").as_deref(), Some("cache"));
    assert_eq!(a("db.system.name").as_deref(), Some("redis"));
    assert_eq!(a("server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(a("server.port"), Some(redis.port.to_string()));
    assert_eq!(a("dbcanary.outage.kind").as_deref(), Some("restart"));
    let cause = a("dbcanary.outage.cause").expect("cause");
    assert!(
        ["closed", "reset", "error", "timeout"].contains(&cause.as_str()),
        "{cause}"
    );
    assert_eq!(a("error.type"), Some(cause));
    let attempts: i64 = a("dbcanary.outage.attempts").unwrap().parse().unwrap();
    assert!(attempts >= 1, "attempts {attempts}");
    let resolution: f64 = a("dbcanary.outage.resolution_s").unwrap().parse().unwrap();
    assert!((0.0..=1.0).contains(&resolution), "resolution {resolution}");
    let (before, after) = (
        a("dbcanary.server.id.before").unwrap(),
        a("dbcanary.server.id.after").unwrap(),
    );
    assert!(
        !before.is_empty() && before != after,
        "run_id before {before:?}, after {after:?}"
    );
    // Wall-clock span: as long as the measured outage, and ended.
    let span_s = (outage.end_time_unix_nano - outage.start_time_unix_nano) as f64 / 1e9;
    let measured = agent.metrics().await.sum(
        "dbcanary_outage_duration_seconds_sum",
        &[("target", "cache")],
    );
    assert!(
        (span_s - measured).abs() < 0.05,
        "span lasts {span_s} s, outage measured {measured} s"
    );
    let status = outage.status.clone().unwrap_or_default();
    assert_ne!(
        status.code, 2,
        "a resolved outage is not an error: {status:?}"
    );

    let connects: Vec<Span> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.name == "dbcanary.connect")
        .collect();
    let children: Vec<&Span> = connects
        .iter()
        .filter(|s| s.trace_id == outage.trace_id && s.parent_span_id == outage.span_id)
        .collect();
    assert!(
        !children.is_empty(),
        "no dbcanary.connect child of the outage span among {connects:?}"
    );
    let last = children
        .iter()
        .max_by_key(|s| s.end_time_unix_nano)
        .unwrap();
    assert_eq!(
        attr(&last.attributes, "dbcanary.connect.result").as_deref(),
        Some("ok")
    );
    for c in &children {
        assert!(
            c.start_time_unix_nano >= outage.start_time_unix_nano
                && c.end_time_unix_nano <= outage.end_time_unix_nano + 1_000_000,
            "connect span outside its outage: {c:?}"
        );
    }

    let (count, bounds, temporality) = poll_until(
        EXPORTED_WITHIN,
        "dbcanary.outage.duration count 1",
        async || match receiver.outage_histogram("cache", "restart") {
            Some(h) if h.0 == 1 => Ok(h),
            other => Err((other, receiver.metric_names())),
        },
    )
    .await;
    assert_eq!(count, 1);
    assert_eq!(temporality, 2, "cumulative temporality");
    assert_eq!(bounds.first(), Some(&0.001));
    assert_eq!(bounds.last(), Some(&300.0));
    poll_until(EXPORTED_WITHIN, "the OTLP metric names", async || {
        let names = receiver.metric_names();
        let want = [
            "dbcanary.up",
            "dbcanary.disconnects",
            "dbcanary.connect.attempts",
            "dbcanary.connect.duration",
            "dbcanary.probes",
            "dbcanary.probe.duration",
            "dbcanary.failovers",
            "dbcanary.restarts",
            "dbcanary.outage.in_progress",
        ];
        check(want.iter().all(|n| names.iter().any(|x| x == n)), names)
    })
    .await;

    let resource = receiver.resource_attributes();
    assert_eq!(attr(&resource, "service.name").as_deref(), Some("dbcanary"));
    assert!(attr(&resource, "service.version").is_some());
    assert!(attr(&resource, "host.name").is_some());
    assert_eq!(
        attr(&resource, "deployment.environment.name").as_deref(),
        Some("test")
    );

    // The exemplar names the span's trace, in OpenMetrics only.
    let body = openmetrics(agent.listen).await;
    let ids = exemplar_trace_ids(&body, "cache");
    assert_eq!(
        ids,
        vec![hex(&outage.trace_id)],
        "exemplars on the outage histogram:\n{body}"
    );
    let text = agent.get("/metrics").await.body;
    assert!(
        !text.contains("trace_id"),
        "the Prometheus text format carries no exemplar"
    );
    assert!(text.contains("dbcanary_otlp_dropped_total"), "{text}");
    support::promtool_check_metrics(&text);

    // No credential in any attribute the receiver got, nor in the log.
    let all = format!("{:?}{:?}", receiver.spans(), receiver.resource_attributes());
    assert!(
        !all.contains(PASSWORD),
        "the password reached the collector"
    );
    assert!(
        !agent.log().contains(PASSWORD),
        "the password is in the log"
    );
    assert!(
        dropped(&agent, &["traces", "metrics"]).await == 0.0,
        "nothing dropped while the collector is up"
    );

    // An outage still open at SIGTERM is flushed, as an error.
    redis.kill();
    agent.wait_up("cache", false, UP_WITHIN).await;
    let (status, took) = agent.terminate(Duration::from_secs(8)).await;
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    let open = poll_until(
        Duration::from_secs(5),
        "the unresolved outage span",
        async || {
            let spans: Vec<Span> = receiver
                .spans()
                .into_iter()
                .filter(|s| s.name == "dbcanary.outage" && s.trace_id != outage.trace_id)
                .collect();
            match spans.as_slice() {
                [one] => Ok(one.clone()),
                other => Err(other.len()),
            }
        },
    )
    .await;
    assert_eq!(open.status.unwrap_or_default().code, 2, "status error");
    assert_eq!(attr(&open.attributes, "dbcanary.outage.kind"), None);
}

/// `dbcanary_otlp_dropped_total` summed over `signals`.
async fn dropped(agent: &Agent, signals: &[&str]) -> f64 {
    let m = agent.metrics().await;
    signals
        .iter()
        .map(|s| m.value_or_zero("dbcanary_otlp_dropped_total", &[("signal", s)]))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_drill_over_grpc() {
    restart_drill("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_drill_over_http_protobuf() {
    restart_drill("http/protobuf").await;
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// A collector that is down for the whole test: probing and `/metrics` go
/// on, what export loses is counted, and memory stays bounded over well
/// over 1,000 events (fast probes plus 300 outages).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_costs_neither_probing_nor_memory() {
    // Nothing listens there.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let redis = RedisServer::start().await;
    let agent = Agent::builder()
        .pacing(Pacing::every("20ms", "300ms").backoff("5ms", "50ms"))
        .toml(&format!(
            "[otlp]\nendpoint = {nowhere:?}\nexport_interval = \"200ms\"\ntimeout = \"500ms\"\n"
        ))
        .target("cache", &redis.url())
        .log("dbcanary=info,warn")
        .start_up(UP_WITHIN)
        .await;

    let drill = async |n: usize| {
        for _ in 0..n {
            let id = redis.wait_canary("cache", UP_WITHIN).await;
            redis.client_kill(id).await;
            redis.wait_new_canary("cache", Some(id), UP_WITHIN).await;
        }
    };
    // Warm up (allocator, exporter, first failures), then measure.
    drill(30).await;
    agent.wait_up("cache", true, UP_WITHIN).await;
    let rss_before = vm_rss_kib(agent.pid());
    let probes_before = agent
        .value(
            "dbcanary_probes_total",
            &[("target", "cache"), ("result", "ok")],
        )
        .await;
    let t0 = Instant::now();
    drill(300).await;
    agent
        .wait_count(DISCONNECTS, "cache", "closed", 1.0, UP_WITHIN)
        .await;
    agent.wait_up("cache", true, UP_WITHIN).await;
    // (A kill that lands during a reconnect is part of the outage before.)
    poll_until(UP_WITHIN, "300 outages ended", async || {
        let outages = agent.metrics().await.sum(
            "dbcanary_outage_duration_seconds_count",
            &[("target", "cache")],
        );
        check(outages >= 300.0, outages)
    })
    .await;
    let m = agent.metrics().await;
    // Probing kept its pace (every 20 ms while up; generous bound).
    let probes = m.count(PROBES, "cache", "ok") - probes_before;
    let secs = t0.elapsed().as_secs_f64();
    assert!(
        probes >= secs * 5.0,
        "{probes} probes in {secs:.1} s with the collector down"
    );
    let events = probes + 4.0 * 300.0;
    assert!(events >= 1000.0, "only {events} events");
    // What export lost is counted, for both signals.
    poll_until(
        EXPORTED_WITHIN,
        "dropped spans and metrics counted",
        async || {
            let m = agent.metrics().await;
            let t = m.value_or_zero("dbcanary_otlp_dropped_total", &[("signal", "traces")]);
            let x = m.value_or_zero("dbcanary_otlp_dropped_total", &[("signal", "metrics")]);
            check(t >= 300.0 && x > 0.0, (t, x))
        },
    )
    .await;
    let rss_after = vm_rss_kib(agent.pid());
    assert!(
        rss_after < rss_before + 20 * 1024,
        "VmRSS grew from {rss_before} KiB to {rss_after} KiB over 300 outages"
    );
    let log = agent.log();
    let warnings = log
        .lines()
        .filter(|l| l.contains("OTLP export failed"))
        .count();
    assert!(
        (1..=4).contains(&warnings),
        "{warnings} export warnings (rate-limited to one a minute):\n{log}"
    );
}

/// The names of the agent's threads (`comm`, at most 15 characters).
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .collect()
}

/// No endpoint, no exporter: no OpenTelemetry thread and no self-metric.
/// The standard variable alone is enough to turn export on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_endpoint_no_export_threads_and_the_standard_variable_turns_it_on() {
    let redis = RedisServer::start().await;
    let plain = Agent::start_up(Pacing::FAST, &[("cache", &redis.url())], UP_WITHIN).await;
    let names = thread_names(plain.pid());
    assert!(
        !names.iter().any(|n| n.starts_with("OpenTelemetry")),
        "{names:?}"
    );
    assert!(!plain.get("/metrics").await.body.contains("otlp"));

    let (receiver, addr) = Receiver::grpc().await;
    let by_env = Agent::builder()
        .pacing(Pacing::FAST)
        .target("cache", &redis.url())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{addr}"))
        .env("OTEL_METRIC_EXPORT_INTERVAL", "300")
        .start_up(UP_WITHIN)
        .await;
    let names = thread_names(by_env.pid());
    assert!(
        names.iter().any(|n| n.starts_with("OpenTelemetry")),
        "{names:?}"
    );
    poll_until(EXPORTED_WITHIN, "metrics exported", async || {
        let names = receiver.metric_names();
        check(names.iter().any(|n| n == "dbcanary.up"), names)
    })
    .await;
}

/// A collector that accepts connections and never answers cannot hold the
/// agent past its 5 s SIGTERM budget, even with an outage span to flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_collector_does_not_delay_sigterm() {
    let silent = tokio::net::TcpListener::bind(("127.0.0.1", free_port()))
        .await
        .unwrap();
    let addr = silent.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = silent.accept().await {
            keep.lock().unwrap().push(conn);
        }
    });
    let mut redis = RedisServer::start().await;
    let mut agent = Agent::builder()
        .pacing(Pacing::FAST)
        .toml(&format!(
            "[otlp]\nendpoint = \"http://{addr}\"\nprotocol = \"http/protobuf\"\nexport_interval = \"200ms\"\n"
        ))
        .target("cache", &redis.url())
        .start_up(UP_WITHIN)
        .await;
    redis.kill();
    agent.wait_up("cache", false, UP_WITHIN).await;
    // Let an export start and hang.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, took) = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    assert!(
        !held.lock().unwrap().is_empty(),
        "the agent never connected"
    );
}

/// A minimal application for an `http` target: `/health` answers 200 while
/// `healthy` is set, 503 otherwise. Stops with the test's runtime.
async fn start_app(healthy: Arc<AtomicBool>) -> String {
    use axum::http::StatusCode;
    let router = axum::Router::new().route(
        "/health",
        axum::routing::get(move || async move {
            if healthy.load(Ordering::SeqCst) {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", free_port()))
        .await
        .expect("bind the test application");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    wait_listening(addr).await;
    format!("http://{addr}/health")
}

/// The link targets of a span, as (trace id, span id).
fn links(s: &Span) -> Vec<(Vec<u8>, Vec<u8>)> {
    s.links
        .iter()
        .map(|l| (l.trace_id.clone(), l.span_id.clone()))
        .collect()
}

/// A Redis restart drill with two applications depending on Redis: one
/// that stays healthy throughout (recovery lag 0) and one that is
/// unhealthy until after its 2 s deadline. Each drill outcome is a
/// `dbcanary.app.recovery` span in the Redis outage's trace, a child of the
/// `dbcanary.outage` span and linked to it; the API names that trace; the
/// recovery metrics arrive under their OpenTelemetry names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_recovery_is_a_span_in_its_dependency_outage_trace() {
    let (receiver, addr) = Receiver::grpc().await;
    let mut redis = RedisServer::start().await;
    let stuck_healthy = Arc::new(AtomicBool::new(true));
    let steady = start_app(Arc::new(AtomicBool::new(true))).await;
    let stuck = start_app(stuck_healthy.clone()).await;
    let agent = Agent::builder()
        .pacing(Pacing::FAST)
        .toml(&otlp_toml(&format!("http://{addr}"), "grpc"))
        .target("cache", &redis.url())
        .toml(&app_toml("steady", &steady, &["cache"], "10s"))
        .toml(&app_toml("stuck", &stuck, &["cache"], "2s"))
        .start()
        .await;
    for t in ["cache", "steady", "stuck"] {
        agent.wait_up(t, true, UP_WITHIN).await;
    }

    stuck_healthy.store(false, Ordering::SeqCst);
    agent.wait_up("stuck", false, UP_WITHIN).await;
    redis.kill();
    agent.wait_up("cache", false, UP_WITHIN).await;
    redis.start_again().await;
    let stuck_labels = [("target", "stuck"), ("dependency", "cache")];
    agent
        .wait_at_least("dbcanary_app_not_recovered", &stuck_labels, 1.0, UP_WITHIN)
        .await;
    stuck_healthy.store(true, Ordering::SeqCst);
    agent
        .wait_at_least(
            "dbcanary_app_recovery_lag_seconds_count",
            &stuck_labels,
            1.0,
            UP_WITHIN,
        )
        .await;
    agent
        .wait_at_least(
            "dbcanary_app_recovery_lag_seconds_count",
            &[("target", "steady"), ("dependency", "cache")],
            1.0,
            UP_WITHIN,
        )
        .await;

    let (outage, recoveries) = poll_until(
        EXPORTED_WITHIN,
        "the Redis outage span and three app recovery spans",
        async || {
            let spans = receiver.spans();
            let outages: Vec<&Span> = spans
                .iter()
                .filter(|s| {
                    s.name == "dbcanary.outage"
                        && attr(&s.attributes, "dbcanary.target").as_deref() == Some("cache")
                })
                .collect();
            let recoveries: Vec<Span> = spans
                .iter()
                .filter(|s| s.name == "dbcanary.app.recovery")
                .cloned()
                .collect();
            match outages.as_slice() {
                [one] if recoveries.len() == 3 => Ok(((*one).clone(), recoveries)),
                _ => Err(spans.iter().map(|s| s.name.clone()).collect::<Vec<_>>()),
            }
        },
    )
    .await;

    let of = |app: &str| -> Vec<&Span> {
        let mut v: Vec<&Span> = recoveries
            .iter()
            .filter(|s| attr(&s.attributes, "dbcanary.target").as_deref() == Some(app))
            .collect();
        v.sort_by_key(|s| s.end_time_unix_nano);
        v
    };
    for r in &recoveries {
        let a = |k: &str| attr(&r.attributes, k);
        assert_eq!(hex(&r.trace_id), hex(&outage.trace_id), "same trace: {r:?}");
        assert_eq!(
            r.parent_span_id, outage.span_id,
            "child of the outage: {r:?}"
        );
        assert_eq!(
            links(r),
            vec![(outage.trace_id.clone(), outage.span_id.clone())],
            "linked to the outage"
        );
        assert_eq!(
            r.start_time_unix_nano, outage.end_time_unix_nano,
            "starts when Redis was restored"
        );
        assert_eq!(a("dbcanary.app.dependency").as_deref(), Some("cache"));
    }

    let [steady_span] = of("steady")[..] else {
        panic!("one recovery span of the steady app: {recoveries:?}")
    };
    let a = |k: &str| attr(&steady_span.attributes, k);
    assert_eq!(a("dbcanary.app.recovered").as_deref(), Some("true"));
    assert_eq!(a("dbcanary.app.recovery_lag_s").as_deref(), Some("0"));
    assert_eq!(a("dbcanary.app.deadline_s").as_deref(), Some("10"));
    assert_eq!(a("dbcanary.app.late").as_deref(), Some("false"));
    assert_ne!(steady_span.status.clone().unwrap_or_default().code, 2);
    assert_eq!(
        steady_span.end_time_unix_nano, steady_span.start_time_unix_nano,
        "lag 0: the app never went down"
    );

    let [missed, late] = of("stuck")[..] else {
        panic!("two recovery spans of the stuck app: {recoveries:?}")
    };
    let status = missed.status.clone().unwrap_or_default();
    assert_eq!(status.code, 2, "a missed deadline is an error: {status:?}");
    assert_eq!(status.message, "not recovered within 2s");
    assert_eq!(
        missed.end_time_unix_nano - missed.start_time_unix_nano,
        2_000_000_000,
        "ends at the deadline"
    );
    let a = |k: &str| attr(&missed.attributes, k);
    assert_eq!(a("dbcanary.app.recovered").as_deref(), Some("false"));
    assert_eq!(a("dbcanary.app.deadline_s").as_deref(), Some("2"));
    assert_eq!(a("dbcanary.app.recovery_lag_s"), None);
    let a = |k: &str| attr(&late.attributes, k);
    assert_eq!(a("dbcanary.app.recovered").as_deref(), Some("true"));
    assert_eq!(a("dbcanary.app.late").as_deref(), Some("true"));
    let lag: f64 = a("dbcanary.app.recovery_lag_s").unwrap().parse().unwrap();
    assert!(lag > 2.0, "recovered after its 2 s deadline: lag {lag} s");
    let span_s = (late.end_time_unix_nano - late.start_time_unix_nano) as f64 / 1e9;
    assert!((span_s - lag).abs() < 1e-3, "span {span_s} s, lag {lag} s");
    assert_ne!(late.status.clone().unwrap_or_default().code, 2);

    // The API names the outage's trace on each app's last drill.
    for app in ["steady", "stuck"] {
        let t = agent.target(app).await;
        assert_eq!(
            t["dependencies"]["cache"]["outage_trace_id"].as_str(),
            Some(hex(&outage.trace_id).as_str()),
            "{t}"
        );
    }

    // The recovery series, under their OpenTelemetry names.
    poll_until(EXPORTED_WITHIN, "the app recovery metrics", async || {
        let got = [
            receiver.app_metric("dbcanary.app.recovery_lag", "steady"),
            receiver.app_metric("dbcanary.app.recovery_lag", "stuck"),
            receiver.app_metric("dbcanary.app.not_recovered", "steady"),
            receiver.app_metric("dbcanary.app.not_recovered", "stuck"),
            receiver.app_metric("dbcanary.app.unrecovered", "steady"),
            receiver.app_metric("dbcanary.app.unrecovered", "stuck"),
        ];
        let want = [1.0, 1.0, 0.0, 0.0, 0.0, 1.0].map(Some);
        check(got == want, got)
    })
    .await;
}

/// A restart drill through the API (an `exec` the configuration allows):
/// one `dbcanary.drill` span with its action and result, whose children
/// are the Redis outage it caused and one `dbcanary.drill.app` span per
/// app, in the same trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_drill_is_a_span_whose_children_are_the_outage_and_the_apps() {
    let (receiver, addr) = Receiver::grpc().await;
    let redis = RedisServer::start().await;
    let steady = start_app(Arc::new(AtomicBool::new(true))).await;
    let agent = Agent::builder()
        .pacing(Pacing::FAST)
        .basic_auth("ops", "api-pw")
        .toml("[drills]\nenabled = true\nallow_exec = true\n")
        .toml(&otlp_toml(&format!("http://{addr}"), "grpc"))
        .target("cache", &redis.url())
        .toml(&app_toml("steady", &steady, &["cache"], "10s"))
        .start()
        .await;
    for t in ["cache", "steady"] {
        agent.wait_up(t, true, UP_WITHIN).await;
    }
    let data = tempfile::tempdir().unwrap();
    let (script, _server) = restart_script(&redis, data.path());
    let request = serde_json::json!({ "store": "cache", "action": "restart", "exec": script });
    let r = agent
        .request("POST", "/api/v1/drills", &request.to_string())
        .await;
    assert_eq!(r.status, 202, "{}", r.body);

    let (drill, children) = poll_until(
        EXPORTED_WITHIN + support::drill::DRILL_WITHIN,
        "the drill span and its children",
        async || {
            let spans = receiver.spans();
            let drill = spans.iter().find(|s| s.name == "dbcanary.drill").cloned();
            let Some(drill) = drill else {
                return Err(spans.iter().map(|s| s.name.clone()).collect::<Vec<_>>());
            };
            let children: Vec<Span> = spans
                .iter()
                .filter(|s| s.parent_span_id == drill.span_id)
                .cloned()
                .collect();
            if children.len() >= 2 {
                Ok((drill, children))
            } else {
                Err(spans.iter().map(|s| s.name.clone()).collect())
            }
        },
    )
    .await;
    let a = |k: &str| attr(&drill.attributes, k);
    assert_eq!(a("dbcanary.drill.action").as_deref(), Some("restart"));
    assert_eq!(a("dbcanary.drill.result").as_deref(), Some("passed"));
    assert_eq!(a("dbcanary.target").as_deref(), Some("cache"));
    let names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
    let outage = children
        .iter()
        .find(|s| s.name == "dbcanary.outage")
        .unwrap_or_else(|| panic!("the outage is a child of the drill: {names:?}"));
    assert_eq!(
        attr(&outage.attributes, "dbcanary.outage.kind").as_deref(),
        Some("restart")
    );
    let app = children
        .iter()
        .find(|s| s.name == "dbcanary.drill.app")
        .unwrap_or_else(|| panic!("the app is a child of the drill: {names:?}"));
    assert_eq!(
        attr(&app.attributes, "dbcanary.target").as_deref(),
        Some("steady")
    );
    for c in &children {
        assert_eq!(hex(&c.trace_id), hex(&drill.trace_id), "same trace: {c:?}");
    }
}
