//! The `dbcanary.drill` span of a drill run through the API: from the
//! action to the verdict. The outages of the drill's targets that begin
//! while it is open are its children (see [`DrillSpans::parent`]), and so
//! is one `dbcanary.drill.app` span per app: from the moment the app was
//! first seen unhealthy to its recovery (or to the verdict, in error when
//! it did not recover).

use std::sync::Mutex;
use std::time::SystemTime;

use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, Span};

use crate::telemetry::drills::{DrillEnd, DrillResult, DrillStart};

/// The drill whose span is open.
struct Open {
    span: Span,
    context: SpanContext,
    /// The store and the apps.
    names: Vec<String>,
}

/// The drill spans (one drill runs at a time).
pub(super) struct DrillSpans {
    tracer: SdkTracer,
    open: Mutex<Option<Open>>,
}

fn common(d: &DrillStart) -> Vec<KeyValue> {
    vec![
        KeyValue::new("dbcanary.drill.id", d.id.clone()),
        KeyValue::new("dbcanary.drill.number", i64::from(d.number)),
        KeyValue::new("dbcanary.drill.action", d.action),
    ]
}

impl DrillSpans {
    pub(super) fn new(tracer: SdkTracer) -> Self {
        Self {
            tracer,
            open: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Open>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the span of a drill about to act.
    pub(super) fn begins(&self, d: &DrillStart) {
        let span = self.start(d, SystemTime::now());
        let context = span.span_context().clone();
        *self.lock() = Some(Open {
            span,
            context,
            names: d.names().cloned().collect(),
        });
    }

    fn start(&self, d: &DrillStart, at: SystemTime) -> Span {
        let mut attrs = common(d);
        attrs.push(KeyValue::new("dbcanary.target", d.store.clone()));
        attrs.push(KeyValue::new("dbcanary.drill.apps", d.apps.join(",")));
        self.tracer.build_with_context(
            SpanBuilder::from_name("dbcanary.drill")
                .with_kind(SpanKind::Internal)
                .with_start_time(at)
                .with_attributes(attrs),
            &Context::new(),
        )
    }

    /// The parent of a new span of `target`: the open drill's, when the
    /// target takes part in it.
    pub(super) fn parent(&self, target: &str) -> Context {
        match self.lock().as_ref() {
            Some(o) if o.names.iter().any(|n| n == target) => {
                Context::new().with_remote_span_context(o.context.clone())
            }
            _ => Context::new(),
        }
    }

    /// Ends the drill's span with its verdict, after a child span per app.
    /// A drill that never acted (not healthy first) had no span yet: it
    /// gets one from its start.
    pub(super) fn ended(&self, d: &DrillEnd) {
        let open = self.lock().take();
        let (mut span, context) = match open {
            Some(o) => (o.span, o.context),
            None => {
                let span = self.start(&d.start, d.started_at);
                let context = span.span_context().clone();
                (span, context)
            }
        };
        let parent = Context::new().with_remote_span_context(context);
        for a in &d.apps {
            let mut attrs = common(&d.start);
            attrs.push(KeyValue::new("dbcanary.target", a.name.clone()));
            attrs.push(KeyValue::new(
                "dbcanary.app.dependency",
                d.start.store.clone(),
            ));
            attrs.push(KeyValue::new("dbcanary.drill.app.result", a.result));
            if let Some(lag) = a.lag {
                attrs.push(KeyValue::new(
                    "dbcanary.app.recovery_lag_s",
                    lag.as_secs_f64(),
                ));
            }
            let mut child = self.tracer.build_with_context(
                SpanBuilder::from_name("dbcanary.drill.app")
                    .with_kind(SpanKind::Internal)
                    .with_start_time(a.from)
                    .with_attributes(attrs),
                &parent,
            );
            if a.result == "not_recovered" {
                child.set_status(Status::error("did not recover within its deadline"));
            }
            child.end_with_timestamp(a.to.max(a.from));
        }
        span.set_attribute(KeyValue::new("dbcanary.drill.result", d.result.as_str()));
        if d.result != DrillResult::Passed {
            span.set_status(Status::error(
                d.reason.clone().unwrap_or_else(|| d.result.as_str().into()),
            ));
        }
        span.end_with_timestamp(d.ended_at.max(d.started_at));
    }
}
