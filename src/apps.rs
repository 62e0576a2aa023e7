//! App recovery: for every `http` target with `depends_on`, how long after a
//! dependency's outage ends the application answers healthy again (the app
//! recovery lag), or that it did not within its `recovery_deadline`. A pure
//! state machine fed with events; the recorder and `watch` turn its
//! outcomes into series, API state and lines.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use crate::events::Event;
use crate::model::ProbeResult;
use crate::model::ser::{opt_secs as ser_opt_secs, secs as ser_secs, time as ser_time};

/// How the last drill of a dependency ended for the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Recovery {
    /// The dependency is back; the app has not answered healthy yet.
    Pending,
    Recovered,
    /// Still unhealthy past the recovery deadline.
    NotRecovered,
    /// The dependency went away again before the app recovered.
    Interrupted,
}

/// One drill of a dependency, as the app lived it.
#[derive(Debug, Clone, Serialize)]
pub struct AppDrill {
    /// How long the dependency was gone.
    #[serde(serialize_with = "ser_secs", rename = "dependency_outage_s")]
    pub dependency_outage: Duration,
    /// Wall-clock moment the dependency was restored.
    #[serde(serialize_with = "ser_time")]
    pub restored_at: SystemTime,
    pub result: Recovery,
    /// Dependency restore to the app's first healthy probe (0 when the app
    /// was healthy when the dependency came back).
    #[serde(serialize_with = "ser_opt_secs", rename = "lag_s")]
    pub lag: Option<Duration>,
    /// The trace id (hex) of the dependency's `dbcanary.outage` span, when
    /// OTLP traces are exported.
    pub outage_trace_id: Option<String>,
}

/// What a drill came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Recovered {
        app: String,
        dependency: String,
        lag: Duration,
        dependency_outage: Duration,
        /// Wall-clock moment the dependency was restored (its outage's end).
        restored_at: SystemTime,
        deadline: Duration,
        /// After the deadline had been declared missed.
        late: bool,
    },
    NotRecovered {
        app: String,
        dependency: String,
        deadline: Duration,
        dependency_outage: Duration,
        /// Wall-clock moment the dependency was restored (its outage's end).
        restored_at: SystemTime,
    },
    /// The dependency failed again while the app was declared unrecovered.
    Cleared { app: String, dependency: String },
}

struct Pending {
    restored_at: Instant,
    /// The same moment on the wall clock, as the dependency's outage report
    /// gives it.
    restored_wall: SystemTime,
    flagged: bool,
}

#[derive(Default)]
struct Dep {
    pending: Option<Pending>,
    last: Option<AppDrill>,
}

struct App {
    deadline: Duration,
    /// Since when the app answers healthy (None while unhealthy).
    healthy_since: Option<Instant>,
    deps: BTreeMap<String, Dep>,
}

/// Every app and its dependencies' drills.
#[derive(Default)]
pub struct AppTracker {
    apps: BTreeMap<String, App>,
}

impl AppTracker {
    /// Starts tracking `app`, which depends on `deps`.
    pub fn add(&mut self, app: &str, deps: &[String], deadline: Duration) {
        self.apps.insert(
            app.to_string(),
            App {
                deadline,
                healthy_since: None,
                deps: deps.iter().map(|d| (d.clone(), Dep::default())).collect(),
            },
        );
    }

    /// Stops tracking `app`.
    pub fn remove(&mut self, app: &str) {
        self.apps.remove(app);
    }

    /// Whether any app is tracked.
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    /// Whether `name` is a tracked app.
    pub fn is_app(&self, name: &str) -> bool {
        self.apps.contains_key(name)
    }

    /// The last drill of every dependency of `app`.
    pub fn drills(&self, app: &str) -> BTreeMap<String, Option<AppDrill>> {
        self.apps
            .get(app)
            .map(|a| {
                a.deps
                    .iter()
                    .map(|(n, d)| (n.clone(), d.last.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Gives the current drill of every app depending on `dependency` the
    /// trace id of the outage it follows. Call it right after feeding that
    /// dependency's `Restored`.
    pub fn trace_outage(&mut self, dependency: &str, trace_id: &str) {
        for app in self.apps.values_mut() {
            if let Some(last) = app.deps.get_mut(dependency).and_then(|d| d.last.as_mut()) {
                last.outage_trace_id = Some(trace_id.to_string());
            }
        }
    }

    /// Feeds one event of target `name` (an app, a dependency, or neither).
    pub fn on_event(&mut self, name: &str, event: &Event, now: Instant) -> Vec<Outcome> {
        let mut out = self.check(now);
        for (app_name, app) in self.apps.iter_mut() {
            if app_name == name {
                match event {
                    Event::Connected { .. } => {
                        app.healthy_since = Some(now);
                        for (dep_name, dep) in app.deps.iter_mut() {
                            if let Some(o) = finish(app_name, app.deadline, dep_name, dep, now) {
                                out.push(o);
                            }
                        }
                    }
                    Event::Probe {
                        result: ProbeResult::Ok,
                        ..
                    } => {
                        let since = *app.healthy_since.get_or_insert(now);
                        for (dep_name, dep) in app.deps.iter_mut() {
                            if let Some(o) = finish(app_name, app.deadline, dep_name, dep, since) {
                                out.push(o);
                            }
                        }
                    }
                    Event::Disconnected { .. } => app.healthy_since = None,
                    _ => {}
                }
            }
            if let Some(dep) = app.deps.get_mut(name) {
                match event {
                    Event::Disconnected { .. } => {
                        if let Some(p) = dep.pending.take() {
                            if let Some(last) = &mut dep.last
                                && last.result == Recovery::Pending
                            {
                                last.result = Recovery::Interrupted;
                            }
                            if p.flagged {
                                out.push(Outcome::Cleared {
                                    app: app_name.clone(),
                                    dependency: name.to_string(),
                                });
                            }
                        }
                    }
                    Event::Restored(r) => {
                        dep.pending = Some(Pending {
                            restored_at: now,
                            restored_wall: r.ended_at,
                            flagged: false,
                        });
                        dep.last = Some(AppDrill {
                            dependency_outage: r.duration,
                            restored_at: r.ended_at,
                            result: Recovery::Pending,
                            lag: None,
                            outage_trace_id: None,
                        });
                    }
                    _ => {}
                }
            }
        }
        out
    }

    /// Declares the drills past their deadline not recovered.
    pub fn check(&mut self, now: Instant) -> Vec<Outcome> {
        let mut out = Vec::new();
        for (app_name, app) in self.apps.iter_mut() {
            if app.healthy_since.is_some() {
                continue;
            }
            for (dep_name, dep) in app.deps.iter_mut() {
                let Some(p) = &mut dep.pending else { continue };
                if p.flagged || now.duration_since(p.restored_at) <= app.deadline {
                    continue;
                }
                p.flagged = true;
                let mut outage = Duration::ZERO;
                if let Some(last) = &mut dep.last {
                    last.result = Recovery::NotRecovered;
                    outage = last.dependency_outage;
                }
                out.push(Outcome::NotRecovered {
                    app: app_name.clone(),
                    dependency: dep_name.clone(),
                    deadline: app.deadline,
                    dependency_outage: outage,
                    restored_at: p.restored_wall,
                });
            }
        }
        out
    }
}

/// Ends a pending drill: the app answers healthy, healthy since `since`.
fn finish(
    app: &str,
    deadline: Duration,
    dep_name: &str,
    dep: &mut Dep,
    since: Instant,
) -> Option<Outcome> {
    let p = dep.pending.take()?;
    let lag = since.saturating_duration_since(p.restored_at);
    let mut outage = Duration::ZERO;
    if let Some(last) = &mut dep.last {
        last.result = Recovery::Recovered;
        last.lag = Some(lag);
        outage = last.dependency_outage;
    }
    Some(Outcome::Recovered {
        app: app.to_string(),
        dependency: dep_name.to_string(),
        lag,
        dependency_outage: outage,
        restored_at: p.restored_wall,
        deadline,
        late: p.flagged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::OutageReport;
    use crate::model::{DisconnectCause, OutageKind};

    fn lost() -> Event {
        Event::lost_at(DisconnectCause::Closed, SystemTime::now())
    }

    fn restored(d: Duration) -> Event {
        restored_at(d, SystemTime::now())
    }

    /// A restore whose outage ended at `ended` on the wall clock.
    fn restored_at(d: Duration, ended: SystemTime) -> Event {
        Event::Restored(Box::new(OutageReport::exact(
            ended - d,
            d,
            DisconnectCause::Closed,
            OutageKind::Restart,
        )))
    }

    fn connected() -> Event {
        Event::Connected {
            identity: crate::model::Identity::default(),
        }
    }

    fn ok_probe() -> Event {
        Event::Probe {
            result: ProbeResult::Ok,
            duration: Duration::ZERO,
        }
    }

    fn tracker() -> AppTracker {
        let mut t = AppTracker::default();
        t.add("app", &["db".to_string()], Duration::from_secs(2));
        t
    }

    #[test]
    fn lag_is_restore_to_first_healthy_probe() {
        let mut t = tracker();
        let t0 = Instant::now();
        assert!(t.on_event("app", &connected(), t0).is_empty());
        t.on_event("db", &lost(), t0);
        t.on_event("app", &lost(), t0 + Duration::from_millis(100));
        t.on_event(
            "db",
            &restored(Duration::from_secs(1)),
            t0 + Duration::from_secs(1),
        );
        let out = t.on_event("app", &connected(), t0 + Duration::from_millis(1500));
        assert!(matches!(
            &out[..],
            [Outcome::Recovered { lag, late: false, .. }] if *lag == Duration::from_millis(500)
        ));
        let d = t.drills("app")["db"].clone().unwrap();
        assert_eq!(d.result, Recovery::Recovered);
    }

    #[test]
    fn an_app_healthy_at_restore_has_lag_zero() {
        let mut t = tracker();
        let t0 = Instant::now();
        t.on_event("app", &connected(), t0);
        t.on_event("db", &lost(), t0);
        t.on_event(
            "db",
            &restored(Duration::from_secs(1)),
            t0 + Duration::from_secs(1),
        );
        let out = t.on_event("app", &ok_probe(), t0 + Duration::from_millis(1200));
        assert!(matches!(&out[..], [Outcome::Recovered { lag, .. }] if lag.is_zero()));
    }

    #[test]
    fn an_app_back_before_its_store_has_lag_zero() {
        let mut t = tracker();
        let t0 = Instant::now();
        t.on_event("app", &connected(), t0);
        t.on_event("db", &lost(), t0);
        // The app fails during the outage and is healthy again before the
        // store is restored (it does not need the store for /health).
        t.on_event("app", &lost(), t0 + Duration::from_millis(100));
        t.on_event("app", &connected(), t0 + Duration::from_millis(300));
        let out = t.on_event(
            "db",
            &restored(Duration::from_secs(1)),
            t0 + Duration::from_secs(1),
        );
        assert!(out.is_empty(), "{out:?}");
        let out = t.on_event("app", &ok_probe(), t0 + Duration::from_millis(1200));
        assert!(matches!(&out[..], [Outcome::Recovered { lag, late: false, .. }] if lag.is_zero()));
        assert_eq!(
            t.drills("app")["db"].clone().unwrap().lag,
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn past_the_deadline_not_recovered_once_then_late_recovery_or_cleared() {
        let mut t = tracker();
        let t0 = Instant::now();
        t.on_event("app", &connected(), t0);
        t.on_event("db", &lost(), t0);
        t.on_event("app", &lost(), t0);
        t.on_event("db", &restored(Duration::from_secs(1)), t0);
        assert!(t.check(t0 + Duration::from_secs(1)).is_empty());
        let out = t.check(t0 + Duration::from_secs(3));
        assert!(matches!(&out[..], [Outcome::NotRecovered { .. }]));
        assert!(
            t.check(t0 + Duration::from_secs(4)).is_empty(),
            "once per drill"
        );
        assert_eq!(
            t.drills("app")["db"].as_ref().unwrap().result,
            Recovery::NotRecovered
        );
        // The dependency fails again: the flag is cleared.
        let out = t.on_event("db", &lost(), t0 + Duration::from_secs(5));
        assert!(matches!(&out[..], [Outcome::Cleared { .. }]));
        // Next drill: the app comes back late.
        t.on_event(
            "db",
            &restored(Duration::from_secs(1)),
            t0 + Duration::from_secs(6),
        );
        t.check(t0 + Duration::from_secs(9));
        let out = t.on_event("app", &connected(), t0 + Duration::from_secs(10));
        assert!(matches!(
            &out[..],
            [Outcome::Recovered { late: true, lag, .. }] if *lag == Duration::from_secs(4)
        ));
    }

    #[test]
    fn outcomes_carry_the_restore_moment_and_the_drill_its_outage_trace() {
        const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
        let mut t = tracker();
        let t0 = Instant::now();
        let ended = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        t.on_event("app", &connected(), t0);
        t.on_event("db", &lost(), t0);
        t.on_event("app", &lost(), t0);
        t.on_event("db", &restored_at(Duration::from_secs(1), ended), t0);
        t.trace_outage("db", TRACE);
        let json = serde_json::to_value(t.drills("app")).unwrap();
        assert_eq!(json["db"]["outage_trace_id"], TRACE, "{json}");
        let out = t.check(t0 + Duration::from_secs(3));
        assert!(
            matches!(&out[..], [Outcome::NotRecovered { restored_at, .. }] if *restored_at == ended),
            "{out:?}"
        );
        let out = t.on_event("app", &connected(), t0 + Duration::from_secs(4));
        assert!(
            matches!(
                &out[..],
                [Outcome::Recovered { restored_at, deadline, late: true, .. }]
                    if *restored_at == ended && *deadline == Duration::from_secs(2)
            ),
            "{out:?}"
        );
        // The next drill has no trace id until its own outage's is given.
        t.on_event("db", &lost(), t0 + Duration::from_secs(5));
        t.on_event(
            "db",
            &restored(Duration::from_secs(1)),
            t0 + Duration::from_secs(6),
        );
        let json = serde_json::to_value(t.drills("app")).unwrap();
        assert!(json["db"]["outage_trace_id"].is_null(), "{json}");
    }
}
