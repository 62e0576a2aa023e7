//! OTLP export: the recorder's second consumer. The same events that become
//! Prometheus series become OpenTelemetry instruments (`metrics`) and
//! outage traces (`traces`), sent to a collector over gRPC or HTTP/protobuf
//! by the pipelines of `export`, which never let export hurt probing.

use std::time::{Duration, Instant};

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus_client::registry::Registry;

use crate::apps::Outcome;
use crate::config::OtlpSettings;
use crate::events::Event;
use crate::model::{StoreKind, TargetInfo};
use crate::telemetry::catalogue::LabelSpace;
use crate::telemetry::drills::{DrillEnd, DrillStart};
use crate::telemetry::measure::Change;
use crate::telemetry::state::States;

mod attributes;
mod drill;
mod export;
mod metrics;
mod traces;

use export::Losses;
use metrics::Instruments;
use traces::Tracing;

/// Why OTLP export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("cannot build the OTLP {signal} exporter: {source}")]
    Build {
        signal: &'static str,
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// The OTLP consumer of the recorder.
pub struct Otlp {
    tracing: Option<Tracing>,
    meters: Option<(SdkMeterProvider, Instruments)>,
    /// What export dropped, for the word at shutdown.
    losses: Losses,
    /// The collector, as the log may show it (no credentials).
    endpoint: String,
}

/// The collector's URL for a log line: without user info or query.
pub fn redact_endpoint(endpoint: &str) -> String {
    match url::Url::parse(endpoint) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "(unparsable)".into(),
    }
}

impl Otlp {
    /// Builds the exporters (inside the tokio runtime: the gRPC channel
    /// lives on it) and registers what they drop in `registry` (the
    /// `dbcanary_` one); the observed gauges read `states`.
    pub(super) fn build(
        s: &OtlpSettings,
        states: &States,
        registry: &mut Registry,
    ) -> Result<Self, OtlpError> {
        let losses = Losses::register(registry, s);
        let resource = export::resource(s);
        let tracing = if s.traces {
            let provider =
                export::tracer_provider(s, resource.clone(), &losses).map_err(|source| {
                    OtlpError::Build {
                        signal: "traces",
                        source,
                    }
                })?;
            Some(Tracing::new(provider))
        } else {
            None
        };
        let meters = if s.metrics {
            let provider =
                export::meter_provider(s, resource, losses.clone()).map_err(|source| {
                    OtlpError::Build {
                        signal: "metrics",
                        source,
                    }
                })?;
            let instruments = Instruments::new(&provider.meter("dbcanary"), states);
            Some((provider, instruments))
        } else {
            None
        };
        Ok(Self {
            tracing,
            meters,
            losses,
            endpoint: redact_endpoint(&s.endpoint),
        })
    }

    /// Zero-valued series for a new target, as on `/metrics`.
    pub(super) fn add_target(&self, t: &TargetInfo, labels: &LabelSpace) {
        if let Some((_, m)) = &self.meters {
            m.seed(&t.name, t.store, labels);
        }
    }

    /// Forgets a removed target's last outage span.
    pub(super) fn remove_target(&self, t: &TargetInfo) {
        if let Some(tr) = &self.tracing {
            tr.forget(&t.name);
        }
    }

    /// Takes one event and what it changes; for `Restored`, returns the
    /// trace id (hex) of the outage's span, for the exemplar.
    pub(super) fn on_event(
        &self,
        t: &TargetInfo,
        event: &Event,
        changes: &[Change],
    ) -> Option<String> {
        self.apply(t, changes);
        self.tracing.as_ref().and_then(|tr| tr.on_event(t, event))
    }

    /// Applies changes that no event carries (a canary restart).
    pub(super) fn apply(&self, t: &TargetInfo, changes: &[Change]) {
        if let Some((_, m)) = &self.meters {
            m.apply(&t.name, t.store, changes);
        }
    }

    /// Takes what an app drill came to and what it changes in the series of
    /// `app`: the recovery instruments, and a `dbcanary.app.recovery` span
    /// in the dependency outage's trace.
    pub(super) fn on_outcome(&self, o: &Outcome, app: &str, changes: &[Change]) {
        if let Some((_, m)) = &self.meters {
            // Apps are `http` targets.
            m.apply(app, StoreKind::Http, changes);
        }
        if let Some(tr) = &self.tracing {
            tr.recovery(o);
        }
    }

    /// Opens the span of a drill about to act.
    pub(super) fn drill_begins(&self, d: &DrillStart) {
        if let Some(tr) = &self.tracing {
            tr.drills.begins(d);
        }
    }

    /// Ends the drill's span with its verdict.
    pub(super) fn drill_ended(&self, d: &DrillEnd) {
        if let Some(tr) = &self.tracing {
            tr.drills.ended(d);
        }
    }

    /// Ends every open outage span with status error ("unresolved at
    /// shutdown"), then flushes and stops both exporters within `budget`.
    /// Blocking: call it off the async workers.
    pub fn shutdown(&self, budget: Duration) {
        let start = Instant::now();
        let mut failed = Vec::new();
        if let Some(tr) = &self.tracing {
            tr.end_all("unresolved at shutdown");
            if let Err(e) = tr.provider.shutdown_with_timeout(budget) {
                failed.push(format!("traces: {e}"));
            }
        }
        if let Some((provider, _)) = &self.meters {
            let left = budget
                .saturating_sub(start.elapsed())
                .max(Duration::from_millis(100));
            if let Err(e) = provider.shutdown_with_timeout(left) {
                failed.push(format!("metrics: {e}"));
            }
        }
        // One plain sentence, not the SDK's "Failed to shutdown" per signal.
        if !failed.is_empty() {
            tracing::warn!(
                collector = %self.endpoint,
                dropped = self.losses.total(),
                detail = %failed.join("; "),
                "OTLP: the collector was unreachable at shutdown: the last export was not delivered ({} spans and metric streams dropped since the start)",
                self.losses.total()
            );
        }
    }
}
