//! What a drill's canaries saw, kept as evidence: an [`EventSink`] fed by
//! the canaries of the store and the apps (the drill's own, or an agent's),
//! which remembers every app check with the moment it was sent, every
//! outage and failover of the store, and who answered the store's canary.
//! Events of targets it was not told about are ignored, so the agent can
//! hand it all of its events.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::time::Instant;

use crate::events::{Event, EventSink, OutageReport};
use crate::model::{
    DisconnectCause, FailoverSource, Identity, ProbeResult, Role, StoreKind, TargetInfo,
};

use super::judge::{Check, Outage, Server};

/// Says a line about a target (its name, the text) as things happen.
pub type Progress = Box<dyn Fn(&str, &str) + Send + Sync>;

/// One outage of the store's canary, as seen.
#[derive(Debug, Clone)]
pub struct SeenOutage {
    /// The estimated loss (the canary's `since`).
    pub lost: Instant,
    pub cause: DisconnectCause,
    pub detail: String,
    /// When it was restored, and the canary's report of it.
    pub restored: Option<(Instant, Box<OutageReport>)>,
}

/// A failover the store's canary reported.
#[derive(Debug, Clone)]
pub struct SeenFailover {
    pub at: Instant,
    pub source: FailoverSource,
    pub from: Option<String>,
    pub to: String,
}

/// Everything seen of one target.
#[derive(Debug, Default)]
struct Log {
    app: bool,
    up: bool,
    last_error: Option<String>,
    identity: Option<Identity>,
    servers: Vec<(Instant, Server)>,
    checks: Vec<Check>,
    outages: Vec<SeenOutage>,
    failovers: Vec<SeenFailover>,
}

/// What the store's canary saw since the drill began.
#[derive(Debug, Clone, Default)]
pub struct StoreSeen {
    pub outages: Vec<SeenOutage>,
    pub failovers: Vec<SeenFailover>,
    pub servers: Vec<(Instant, Server)>,
    /// Who answers the canary now (none while it is down).
    pub identity: Option<Identity>,
}

/// The evidence of a drill's canaries.
pub struct Observer {
    logs: Mutex<BTreeMap<String, Log>>,
    progress: Progress,
}

/// Who answered, as the judge compares servers.
pub fn server(id: &Identity) -> Server {
    Server {
        id: id.server_id.clone(),
        address: id.address.clone(),
        primary: id.role == Some(Role::Primary),
    }
}

impl Observer {
    /// Observes the targets `names`; `progress` hears of every change of
    /// state as it happens.
    pub fn new(names: &[String], progress: Progress) -> Self {
        Self {
            logs: Mutex::new(names.iter().map(|n| (n.clone(), Log::default())).collect()),
            progress,
        }
    }

    fn logs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Log>> {
        self.logs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts from what the agent already knows of `name`: whether it is
    /// healthy and who answers it (a drill through the API uses canaries
    /// that connected long before it began, and would otherwise wait for
    /// news of a health it already has).
    pub fn prime(&self, name: &str, app: bool, up: bool, identity: Option<Identity>) {
        if let Some(log) = self.logs().get_mut(name) {
            log.app = app;
            log.up = up;
            if identity.is_some() {
                log.identity = identity;
            }
        }
    }

    /// Says a line about `who` to whoever follows the drill.
    pub fn say(&self, who: &str, text: &str) {
        (self.progress)(who, text);
    }

    /// Forgets what is older than `at` (the start of a drill), keeping an
    /// outage still open then.
    pub fn begin(&self, at: Instant) {
        for log in self.logs().values_mut() {
            log.checks.retain(|c| c.sent >= at);
            log.servers.retain(|(t, _)| *t >= at);
            log.failovers.retain(|f| f.at >= at);
            log.outages
                .retain(|o| o.restored.as_ref().is_none_or(|(t, _)| *t >= at));
        }
    }

    /// The targets among `names` that are not healthy now, with what was
    /// last said of them.
    pub fn unhealthy(&self, names: &[String]) -> Vec<(String, Option<String>)> {
        let logs = self.logs();
        names
            .iter()
            .filter(|n| !logs.get(*n).is_some_and(|l| l.up))
            .map(|n| (n.clone(), logs.get(n).and_then(|l| l.last_error.clone())))
            .collect()
    }

    /// Who answers the canary of `name` now.
    pub fn identity(&self, name: &str) -> Option<Identity> {
        self.logs().get(name).and_then(|l| l.identity.clone())
    }

    /// The last error said of `name`.
    pub fn last_error(&self, name: &str) -> Option<String> {
        self.logs().get(name).and_then(|l| l.last_error.clone())
    }

    /// The checks of app `name` since the drill began.
    pub fn checks(&self, name: &str) -> Vec<Check> {
        self.logs()
            .get(name)
            .map(|l| l.checks.clone())
            .unwrap_or_default()
    }

    /// What the canary of store `name` saw since the drill began.
    pub fn store(&self, name: &str) -> StoreSeen {
        self.logs()
            .get(name)
            .map(|l| StoreSeen {
                outages: l.outages.clone(),
                failovers: l.failovers.clone(),
                servers: l.servers.clone(),
                identity: l.identity.clone().filter(|_| l.up),
            })
            .unwrap_or_default()
    }

    /// The outages of store `name`, as the judge reads them.
    pub fn outages(&self, name: &str) -> Vec<Outage> {
        self.logs()
            .get(name)
            .map(|l| {
                l.outages
                    .iter()
                    .map(|o| Outage {
                        lost: o.lost,
                        restored: o.restored.as_ref().map(|(t, _)| *t),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl EventSink for Observer {
    fn emit(&self, target: &TargetInfo, event: &Event) {
        let now = Instant::now();
        let mut said = None;
        {
            let mut logs = self.logs();
            let Some(log) = logs.get_mut(&target.name) else {
                return;
            };
            log.app = target.store == StoreKind::Http;
            let check = |sent: Instant, healthy| Check { sent, healthy };
            match event {
                Event::ConnectAttempt {
                    result,
                    duration,
                    error,
                } => {
                    if log.app {
                        log.checks.push(check(
                            now.checked_sub(*duration).unwrap_or(now),
                            result.is_ok(),
                        ));
                    }
                    if let Some(e) = error {
                        log.last_error = Some(e.clone());
                    }
                }
                Event::Probe { result, duration } => {
                    if log.app {
                        log.checks.push(check(
                            now.checked_sub(*duration).unwrap_or(now),
                            *result == ProbeResult::Ok,
                        ));
                    }
                }
                Event::Connected { identity } => {
                    if !log.up {
                        said = Some(if log.app {
                            "healthy".to_string()
                        } else {
                            format!(
                                "connected to {}",
                                identity.address.as_deref().unwrap_or(&target.endpoint)
                            )
                        });
                    }
                    log.up = true;
                    log.servers.push((now, server(identity)));
                    log.identity = Some(identity.clone());
                }
                Event::IdentityChanged { identity } => {
                    log.servers.push((now, server(identity)));
                    log.identity = Some(identity.clone());
                    said = Some(format!(
                        "now {}",
                        identity.role.map_or("of unknown role", |r| r.as_str())
                    ));
                }
                Event::Disconnected {
                    cause,
                    since,
                    detail,
                    ..
                } => {
                    log.up = false;
                    log.last_error = Some(detail.clone());
                    said = Some(if log.app {
                        detail.clone()
                    } else {
                        format!("lost ({}): {detail}", cause.as_str())
                    });
                    if !log.app {
                        log.outages.push(SeenOutage {
                            lost: *since,
                            cause: *cause,
                            detail: detail.clone(),
                            restored: None,
                        });
                    }
                }
                Event::Restored(r) => {
                    if let Some(o) = log.outages.last_mut().filter(|o| o.restored.is_none()) {
                        o.restored = Some((now, r.clone()));
                    }
                    if !log.app {
                        said = Some(format!(
                            "back after {:.3} s ({})",
                            r.duration.as_secs_f64(),
                            r.kind.as_str()
                        ));
                    }
                }
                Event::Failover { source, from, to } => {
                    log.failovers.push(SeenFailover {
                        at: now,
                        source: *source,
                        from: from.clone(),
                        to: to.clone(),
                    });
                    said = Some(format!(
                        "failover ({}): {} -> {to}",
                        source.as_str(),
                        from.as_deref().unwrap_or("?")
                    ));
                }
                Event::Notice { message } => said = Some(message.clone()),
                Event::Started | Event::Stopped => {}
            }
        }
        if let Some(text) = said {
            (self.progress)(&target.name, &text);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::model::{AttemptResult, ConnectResult, OutageKind};

    fn info(name: &str, store: StoreKind) -> TargetInfo {
        TargetInfo {
            name: name.into(),
            store,
            endpoint: "127.0.0.1:1".into(),
            own_results: &[],
            instance: 1,
            detail: crate::model::MetricDetail::Basic,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn checks_carry_the_moment_they_were_sent_and_outages_their_restore() {
        let said = Arc::new(Mutex::new(Vec::new()));
        let s = said.clone();
        let names = ["db".to_string(), "app".to_string()];
        let o = Observer::new(
            &names,
            Box::new(move |t, text| s.lock().unwrap().push(format!("{t}: {text}"))),
        );
        let app = info("app", StoreKind::Http);
        let db = info("db", StoreKind::Redis);
        let t0 = Instant::now();
        assert_eq!(o.unhealthy(&names).len(), 2);
        o.emit(
            &app,
            &Event::ConnectAttempt {
                result: AttemptResult::Connect(ConnectResult::Ok),
                duration: Duration::from_millis(30),
                error: None,
            },
        );
        o.emit(
            &app,
            &Event::Connected {
                identity: Identity::default(),
            },
        );
        o.emit(
            &db,
            &Event::Connected {
                identity: Identity {
                    address: Some("127.0.0.1:1".into()),
                    role: Some(Role::Primary),
                    ..Identity::default()
                },
            },
        );
        assert!(o.unhealthy(&names).is_empty());
        tokio::time::advance(Duration::from_millis(100)).await;
        o.emit(
            &app,
            &Event::Probe {
                result: ProbeResult::Error,
                duration: Duration::from_millis(20),
            },
        );
        o.emit(
            &db,
            &Event::lost_at(DisconnectCause::Closed, SystemTime::now()),
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        o.emit(
            &db,
            &Event::Restored(Box::new(OutageReport::exact(
                SystemTime::now(),
                Duration::from_millis(100),
                DisconnectCause::Closed,
                OutageKind::Restart,
            ))),
        );
        let checks = o.checks("app");
        assert_eq!(
            checks,
            [
                Check {
                    sent: t0 - Duration::from_millis(30),
                    healthy: true
                },
                Check {
                    sent: t0 + Duration::from_millis(80),
                    healthy: false
                },
            ]
        );
        let outages = o.outages("db");
        assert_eq!(outages.len(), 1);
        assert_eq!(outages[0].restored, Some(t0 + Duration::from_millis(200)));
        // A new drill forgets the checks before it and the ended outage.
        o.begin(t0 + Duration::from_millis(250));
        assert!(o.checks("app").is_empty());
        assert!(o.outages("db").is_empty());
        let said = said.lock().unwrap().join("\n");
        assert!(said.contains("app: healthy"), "{said}");
        assert!(said.contains("db: connected to 127.0.0.1:1"), "{said}");
        assert!(said.contains("db: back after 0.100 s (restart)"), "{said}");
        // Targets it was not told about are ignored.
        o.emit(&info("other", StoreKind::Redis), &Event::Started);
    }
}
