//! What each event and each app drill outcome changes in the catalogue's
//! metrics, written once: the Prometheus series and the OTLP instruments
//! both apply these changes. Metrics read from the target's state (`up`,
//! who answers, ...) change with the state and are not listed here.

use crate::apps::Outcome;
use crate::events::Event;
use crate::model::{OutageKind, unix_secs};

use super::catalogue::Id;

/// How a change moves a metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    /// A counter goes up.
    Add(u64),
    /// A gauge takes a value.
    Set(f64),
    /// A histogram counts an observation.
    Observe(f64),
}

/// One change to one series of a target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change<'a> {
    pub metric: Id,
    /// The value of the metric's extra label, if it has one.
    pub label: Option<&'a str>,
    pub op: Op,
}

impl<'a> Change<'a> {
    fn new(metric: Id, label: Option<&'a str>, op: Op) -> Self {
        Self { metric, label, op }
    }
}

/// A canary task restarted after a panic.
pub const CANARY_RESTART: Change<'static> = Change {
    metric: Id::CanaryRestarts,
    label: None,
    op: Op::Add(1),
};

/// The changes of one event: at most four, kept inline (a probe's two are
/// the agent's most frequent work, and allocate nothing).
#[derive(Debug, Clone, Copy)]
pub struct Changes<'a> {
    items: [Change<'a>; 4],
    len: usize,
}

impl<'a> Changes<'a> {
    const NONE: Self = Self {
        items: [CANARY_RESTART; 4],
        len: 0,
    };

    fn of(list: &[Change<'a>]) -> Self {
        let mut c = Self::NONE;
        c.items[..list.len()].copy_from_slice(list);
        c.len = list.len();
        c
    }

    fn push(&mut self, change: Change<'a>) {
        self.items[self.len] = change;
        self.len += 1;
    }
}

impl<'a> std::ops::Deref for Changes<'a> {
    type Target = [Change<'a>];

    fn deref(&self) -> &[Change<'a>] {
        &self.items[..self.len]
    }
}

/// What one event of a target changes.
pub fn event(event: &Event) -> Changes<'_> {
    match event {
        Event::ConnectAttempt {
            result, duration, ..
        } => {
            let mut changes = Changes::of(&[Change::new(
                Id::ConnectAttempts,
                Some(result.as_str()),
                Op::Add(1),
            )]);
            if result.is_ok() {
                changes.push(Change::new(
                    Id::ConnectDuration,
                    None,
                    Op::Observe(duration.as_secs_f64()),
                ));
            }
            changes
        }
        Event::Probe { result, duration } => Changes::of(&[
            Change::new(Id::Probes, Some(result.as_str()), Op::Add(1)),
            Change::new(Id::ProbeDuration, None, Op::Observe(duration.as_secs_f64())),
        ]),
        Event::Disconnected { cause, .. } => Changes::of(&[Change::new(
            Id::Disconnects,
            Some(cause.as_str()),
            Op::Add(1),
        )]),
        Event::Restored(r) => {
            let mut changes = Changes::of(&[
                Change::new(
                    Id::OutageDuration,
                    Some(r.kind.as_str()),
                    Op::Observe(r.duration.as_secs_f64()),
                ),
                Change::new(Id::Outages, Some(r.kind.as_str()), Op::Add(1)),
            ]);
            if r.kind == OutageKind::Restart {
                changes.push(Change::new(Id::Restarts, None, Op::Add(1)));
            }
            changes.push(Change::new(
                Id::LastOutageEnd,
                None,
                Op::Set(unix_secs(r.ended_at)),
            ));
            changes
        }
        Event::Failover { source, .. } => Changes::of(&[Change::new(
            Id::Failovers,
            Some(source.as_str()),
            Op::Add(1),
        )]),
        Event::Started
        | Event::Connected { .. }
        | Event::IdentityChanged { .. }
        | Event::Notice { .. }
        | Event::Stopped => Changes::NONE,
    }
}

/// What an app drill's outcome changes, and the app whose series they are.
pub fn outcome(o: &Outcome) -> (&str, Vec<Change<'_>>) {
    match o {
        Outcome::Recovered {
            app,
            dependency,
            lag,
            ..
        } => (
            app,
            vec![
                Change::new(
                    Id::AppRecoveryLag,
                    Some(dependency),
                    Op::Observe(lag.as_secs_f64()),
                ),
                Change::new(Id::AppNotRecovered, Some(dependency), Op::Set(0.0)),
            ],
        ),
        Outcome::NotRecovered {
            app, dependency, ..
        } => (
            app,
            vec![
                Change::new(Id::AppNotRecovered, Some(dependency), Op::Set(1.0)),
                Change::new(Id::AppUnrecovered, Some(dependency), Op::Add(1)),
            ],
        ),
        Outcome::Cleared { app, dependency } => (
            app,
            vec![Change::new(
                Id::AppNotRecovered,
                Some(dependency),
                Op::Set(0.0),
            )],
        ),
    }
}

/// Events for the tests: an outage of 40 ms of `kind`, an ok probe, an ok
/// connect attempt.
#[cfg(test)]
pub(super) fn sample_events(kind: OutageKind) -> [Event; 3] {
    use std::time::{Duration, SystemTime};

    use crate::events::OutageReport;
    use crate::model::{ConnectResult, DisconnectCause, Identity, ProbeResult};
    [
        Event::Restored(Box::new(OutageReport {
            reason: String::new(),
            attempts: 1,
            resolution: Duration::from_millis(20),
            before: None,
            after: Identity::default(),
            ..OutageReport::exact(
                SystemTime::now(),
                Duration::from_millis(40),
                DisconnectCause::Closed,
                kind,
            )
        })),
        Event::Probe {
            result: ProbeResult::Ok,
            duration: Duration::from_millis(1),
        },
        Event::ConnectAttempt {
            result: ConnectResult::Ok.into(),
            duration: Duration::from_millis(1),
            error: None,
        },
    ]
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::model::{AttemptResult, DisconnectCause, FailoverSource, ProbeResult};
    use crate::telemetry::catalogue::{Instrument, Label, LabelSpace, Seed};

    /// The encoders' samples with a restart (so that it is counted), and
    /// an app's own attempt result, a timed-out probe, a loss and an
    /// announced failover.
    fn events() -> Vec<Event> {
        let mut all = Vec::from(sample_events(OutageKind::Restart));
        all.extend([
            Event::ConnectAttempt {
                result: AttemptResult::Own("status"),
                duration: Duration::from_millis(1),
                error: None,
            },
            Event::Probe {
                result: ProbeResult::Timeout,
                duration: Duration::from_millis(1),
            },
            Event::lost_at(DisconnectCause::Reset, SystemTime::now()),
            Event::Failover {
                source: FailoverSource::Topology,
                from: None,
                to: String::new(),
            },
        ]);
        all
    }

    fn outcomes() -> Vec<Outcome> {
        let (app, dependency) = ("shop".to_string(), "cache".to_string());
        vec![
            Outcome::Recovered {
                app: app.clone(),
                dependency: dependency.clone(),
                lag: Duration::ZERO,
                dependency_outage: Duration::ZERO,
                restored_at: SystemTime::now(),
                deadline: Duration::ZERO,
                late: false,
            },
            Outcome::NotRecovered {
                app: app.clone(),
                dependency: dependency.clone(),
                deadline: Duration::ZERO,
                dependency_outage: Duration::ZERO,
                restored_at: SystemTime::now(),
            },
            Outcome::Cleared { app, dependency },
        ]
    }

    /// Every change fits its metric: a value of its label, an operation of
    /// its instrument, and a metric that is stored rather than read.
    #[test]
    fn every_change_fits_its_catalogue_entry() {
        let space = LabelSpace::new(&["status"], &["cache".to_string()]);
        let events = events();
        let outcomes = outcomes();
        let changes = events
            .iter()
            .flat_map(|e| event(e).to_vec())
            .chain(outcomes.iter().flat_map(|o| outcome(o).1))
            .chain([CANARY_RESTART]);
        let mut seen = Vec::new();
        for c in changes {
            let m = c.metric.metric();
            assert!(!matches!(m.seed, Seed::State(_)), "{}", m.name);
            assert_ne!(m.label, Label::Server);
            assert!(
                m.label.values(&space).any(|v| v == c.label),
                "{}: {:?}",
                m.name,
                c.label
            );
            let fits = matches!(
                (m.instrument, c.op),
                (Instrument::Counter, Op::Add(_))
                    | (Instrument::Gauge(_), Op::Set(_))
                    | (Instrument::Histogram { .. }, Op::Observe(_))
            );
            assert!(fits, "{}: {:?}", m.name, c.op);
            seen.push(c.metric);
        }
        for m in &crate::telemetry::catalogue::CATALOGUE {
            if !matches!(m.seed, Seed::State(_)) {
                assert!(seen.contains(&m.id), "{} is never changed", m.name);
            }
        }
    }
}
