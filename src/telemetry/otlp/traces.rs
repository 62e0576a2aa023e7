//! The traces (SPEC "Traces"): one `dbcanary.outage` span per outage with a
//! `dbcanary.connect` child per reconnect attempt, a `failover` event on it
//! (or a short `dbcanary.failover` span when there is no outage), and a
//! `dbcanary.app.recovery` span per app drill in its dependency outage's
//! trace.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use opentelemetry::trace::{
    Link, Span as _, SpanBuilder, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use super::attributes;
use super::drill::DrillSpans;
use crate::apps::Outcome;
use crate::events::{Event, OutageReport};
use crate::model::{FailoverSource, Identity, OutageKind, TargetInfo};

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

/// Outage, connect, failover and app recovery spans.
pub(super) struct Tracing {
    pub(super) provider: SdkTracerProvider,
    tracer: SdkTracer,
    open: Mutex<HashMap<String, OpenOutage>>,
    /// Per target, its last ended outage span.
    ended: Mutex<HashMap<String, EndedOutage>>,
    /// The span of the drill running through the API, if one is.
    pub(super) drills: DrillSpans,
}

impl Tracing {
    pub(super) fn new(provider: SdkTracerProvider) -> Self {
        let tracer = provider.tracer("dbcanary");
        Self {
            provider,
            drills: DrillSpans::new(tracer.clone()),
            tracer,
            open: Mutex::default(),
            ended: Mutex::default(),
        }
    }

    /// Takes one event; for `Restored`, returns the trace id (hex) of the
    /// outage's span, for the exemplar.
    pub(super) fn on_event(&self, t: &TargetInfo, event: &Event) -> Option<String> {
        let mut open = self.open.lock().expect("span lock");
        match event {
            Event::Disconnected {
                cause,
                at,
                started_at,
                start_unknown,
                ..
            } => {
                if let Some(mut old) = open.remove(&t.name) {
                    old.span
                        .set_status(Status::error("superseded by a new outage"));
                    old.span.end_with_timestamp(*at);
                }
                let mut attrs = of_target(t);
                attrs.push(KeyValue::new("dbcanary.outage.cause", cause.as_str()));
                attrs.push(KeyValue::new("error.type", cause.as_str()));
                if *start_unknown {
                    attrs.push(KeyValue::new("dbcanary.outage.start_unknown", true));
                }
                // The span begins at the estimated loss, as the outage's
                // duration does (a timed-out probe: when it was sent); it
                // is a child of the drill that caused it, if one runs.
                let span = self.tracer.build_with_context(
                    SpanBuilder::from_name("dbcanary.outage")
                        .with_kind(SpanKind::Internal)
                        .with_start_time(*started_at)
                        .with_attributes(attrs),
                    &self.drills.parent(&t.name),
                );
                let since_loss = at.duration_since(*started_at).unwrap_or_default();
                let context = span.span_context().clone();
                open.insert(
                    t.name.clone(),
                    OpenOutage {
                        span,
                        context,
                        attempts: 0,
                        started_at: *started_at,
                        started_mono: Instant::now()
                            .checked_sub(since_loss)
                            .unwrap_or_else(Instant::now),
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
                let mut attrs = of_target(t);
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
                        let mut a = of_target(t);
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
    pub(super) fn recovery(&self, o: &Outcome) {
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

    /// Forgets a removed target's last outage span.
    pub(super) fn forget(&self, target: &str) {
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

    /// Ends every open outage span with status error.
    pub(super) fn end_all(&self, why: &'static str) {
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
    let id = |i: Option<&Identity>| i.and_then(|i| i.server_id.clone()).unwrap_or_default();
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
        let addr = |i: Option<&Identity>| i.and_then(|i| i.address.clone()).unwrap_or_default();
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

/// A span's attributes naming its target and endpoint.
fn of_target(t: &TargetInfo) -> Vec<KeyValue> {
    let mut attrs = attributes::target(&t.name, t.store);
    attrs.extend(attributes::server(&t.endpoint));
    attrs
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opentelemetry_sdk::trace::{InMemorySpanExporter, SimpleSpanProcessor, SpanData};

    use super::*;
    use crate::model::{AttemptResult, ConnectResult, StoreKind};

    fn attr<'a>(s: &'a SpanData, k: &str) -> Option<&'a opentelemetry::Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| &kv.value)
    }

    fn tracing_into(exporter: &InMemorySpanExporter) -> Tracing {
        Tracing::new(
            SdkTracerProvider::builder()
                .with_span_processor(SimpleSpanProcessor::new(exporter.clone()))
                .build(),
        )
    }

    fn target() -> TargetInfo {
        TargetInfo {
            name: "cache".into(),
            store: StoreKind::Redis,
            endpoint: "10.0.0.1:6379".into(),
            own_results: &[],
            instance: 1,
            detail: Default::default(),
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
}
