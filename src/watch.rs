//! `dbcanary watch URL...`: ad-hoc canaries that print one line per event as
//! it happens and, on Ctrl-C, a summary of every drill (outage) seen.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::apps::{AppTracker, Outcome, Recovery};
use crate::backoff::AttemptBudget;
use crate::canary::RunCanary;
use crate::config::{Target, TargetSource};
use crate::dburl::DbUrl;
use crate::events::{Event, EventSink, OutageReport};
use crate::lag::SchedulingLag;
use crate::model::{DisconnectCause, StoreKind, TargetInfo};
use crate::settings::{CanarySettings, DEFAULT_ATTEMPTS_PER_SECOND};
use crate::stores::with_store;

/// A URL `watch` cannot use.
#[derive(Debug, thiserror::Error)]
#[error("argument {index}: {reason}")]
pub struct WatchError {
    pub index: usize,
    pub reason: String,
}

/// Builds ad-hoc targets from store URLs and application URLs (`--app`);
/// each is named by its endpoint. Every application depends on the stores
/// named by `depends_on` (each one of `urls`), or on every store when it is
/// empty, with `deadline` as its recovery deadline.
pub fn targets_with_apps(
    urls: &[String],
    apps: &[String],
    depends_on: &[String],
    interval: Duration,
    deadline: Duration,
) -> Result<Vec<Target>, WatchError> {
    let mut out = targets(urls, interval)?;
    let mut taken = Vec::new();
    distinct_names(&mut out, &mut taken);
    if apps.is_empty() && !depends_on.is_empty() {
        return Err(WatchError {
            index: urls.len() + 1,
            reason: "--depends-on needs at least one --app".into(),
        });
    }
    let stores = if depends_on.is_empty() {
        out.iter().map(|t| t.name.clone()).collect()
    } else {
        depends_on
            .iter()
            .map(|d| {
                let wanted = DbUrl::parse(d).ok();
                out.iter()
                    .find(|t| Some(&t.url) == wanted.as_ref())
                    .map(|t| t.name.clone())
                    .ok_or_else(|| WatchError {
                        index: urls.len() + 1,
                        reason: format!(
                            "--depends-on {} is not one of the store URLs given",
                            wanted.map_or_else(|| "(not a URL)".to_string(), |u| u.redacted())
                        ),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut app_targets = targets(apps, interval).map_err(|e| WatchError {
        index: e.index + urls.len(),
        reason: e.reason,
    })?;
    distinct_names(&mut app_targets, &mut taken);
    for (i, t) in app_targets.iter_mut().enumerate() {
        if t.kind() != StoreKind::Http {
            return Err(WatchError {
                index: urls.len() + i + 1,
                reason: "--app takes an http:// or https:// URL".into(),
            });
        }
        t.depends_on.clone_from(&stores);
        t.recovery_deadline = deadline;
    }
    out.extend(app_targets);
    Ok(out)
}

/// Gives targets that share an endpoint distinct names (`host:port`,
/// `host:port#2`, ...), so that their lines and summaries stay apart.
fn distinct_names(targets: &mut [Target], taken: &mut Vec<String>) {
    for t in targets {
        let mut name = t.name.clone();
        let mut n = 1;
        while taken.contains(&name) {
            n += 1;
            name = format!("{}#{n}", t.name);
        }
        taken.push(name.clone());
        t.name = name;
    }
}

/// Builds ad-hoc targets from URLs; each is named by its endpoint.
pub fn targets(urls: &[String], interval: Duration) -> Result<Vec<Target>, WatchError> {
    let mut settings = CanarySettings::default();
    settings.interval = interval;
    settings.timeout = settings
        .timeout
        .min(interval.max(Duration::from_millis(100)));
    urls.iter()
        .enumerate()
        .map(|(i, u)| {
            let err = |reason: String| WatchError {
                index: i + 1,
                reason,
            };
            let url = DbUrl::parse(u).map_err(|e| err(e.to_string()))?;
            let sentinel = StoreKind::from_scheme(&url.scheme) == Some(StoreKind::RedisSentinel);
            let name = if url.path.is_empty() || !sentinel {
                url.endpoint()
            } else {
                format!("{}/{}", url.endpoint(), url.path)
            };
            Target::from_url(name, url, settings, TargetSource::CommandLine).map_err(err)
        })
        .collect()
}

/// One outage seen by `watch`.
#[derive(Debug, Clone)]
struct Drill {
    lost_at: SystemTime,
    cause: DisconnectCause,
    /// Unreachable since the watch began.
    start_unknown: bool,
    report: Option<OutageReport>,
}

/// Prints events as lines and remembers drills for the summary.
pub struct WatchSink {
    out: Mutex<Box<dyn Write + Send>>,
    width: usize,
    drills: Mutex<BTreeMap<String, Vec<Drill>>>,
    started: SystemTime,
    /// Applications and their dependencies' drills.
    apps: Mutex<AppTracker>,
    /// What each drill came to, per application, in order.
    app_drills: Mutex<BTreeMap<String, Vec<String>>>,
}

impl WatchSink {
    pub fn new(out: Box<dyn Write + Send>, names: &[String]) -> Self {
        Self {
            out: Mutex::new(out),
            width: names.iter().map(|n| n.len()).max().unwrap_or(0),
            drills: Mutex::new(names.iter().map(|n| (n.clone(), Vec::new())).collect()),
            started: SystemTime::now(),
            apps: Mutex::default(),
            app_drills: Mutex::default(),
        }
    }

    /// Tracks the recovery of the application `t` (targets with
    /// `depends_on` only).
    pub fn track_app(&self, t: &Target) {
        if t.depends_on.is_empty() {
            return;
        }
        self.apps
            .lock()
            .expect("apps lock")
            .add(&t.name, &t.depends_on, t.recovery_deadline);
        self.app_drills
            .lock()
            .expect("app drills lock")
            .insert(t.name.clone(), Vec::new());
    }

    /// Prints and remembers what app drills came to.
    fn app_outcomes(&self, outcomes: Vec<Outcome>) {
        for o in outcomes {
            let (app, text) = match o {
                Outcome::Recovered {
                    app,
                    dependency,
                    lag,
                    dependency_outage,
                    late,
                    ..
                } => (
                    app,
                    format!(
                        "{dependency} gone {}, app recovered {} after it came back{}",
                        secs(dependency_outage),
                        secs(lag),
                        if late {
                            " (past the recovery deadline)"
                        } else {
                            ""
                        }
                    ),
                ),
                Outcome::NotRecovered {
                    app,
                    dependency,
                    deadline,
                    dependency_outage,
                    ..
                } => (
                    app,
                    format!(
                        "{dependency} gone {}, app NOT recovered {} after it came back",
                        secs(dependency_outage),
                        humantime::format_duration(deadline)
                    ),
                ),
                Outcome::Cleared { .. } => continue,
            };
            self.line(&app, &text);
            self.app_drills
                .lock()
                .expect("app drills lock")
                .entry(app)
                .or_default()
                .push(text);
        }
    }

    fn line(&self, target: &str, text: &str) {
        let now = chrono::Local::now().format("%H:%M:%S%.3f");
        let mut out = self.out.lock().expect("out lock");
        let _ = writeln!(out, "{now} {target:<w$}  {text}", w = self.width);
        let _ = out.flush();
    }

    /// The targets that never answered while watched.
    pub fn never_up(&self) -> Vec<String> {
        self.drills
            .lock()
            .expect("drills lock")
            .iter()
            .filter(|(_, list)| list.iter().any(|d| d.start_unknown && d.report.is_none()))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The summary printed on Ctrl-C.
    pub fn summary(&self) -> String {
        let outcomes = self
            .apps
            .lock()
            .expect("apps lock")
            .check(tokio::time::Instant::now());
        self.app_outcomes(outcomes);
        let watched = SystemTime::now()
            .duration_since(self.started)
            .unwrap_or_default();
        let drills = self.drills.lock().expect("drills lock");
        let mut s = format!(
            "summary after {}:\n",
            humantime::format_duration(Duration::from_secs(watched.as_secs()))
        );
        for (name, list) in drills.iter() {
            let ended: Vec<&OutageReport> = list.iter().filter_map(|d| d.report.as_ref()).collect();
            let open = list.iter().filter(|d| d.report.is_none()).count();
            s.push_str(&format!(
                "  {name:<w$}  {} outage{}",
                list.len(),
                if list.len() == 1 { "" } else { "s" },
                w = self.width
            ));
            if let Some(max) = ended.iter().map(|r| r.duration).max() {
                let total: Duration = ended.iter().map(|r| r.duration).sum();
                s.push_str(&format!(", longest {}, total {}", secs(max), secs(total)));
            }
            if list.iter().any(|d| d.start_unknown && d.report.is_none()) {
                s.push_str(", never came up");
            } else if open > 0 {
                s.push_str(", still down at exit");
            }
            s.push('\n');
            for d in list {
                let at = chrono::DateTime::<chrono::Local>::from(d.lost_at).format("%H:%M:%S%.3f");
                match &d.report {
                    Some(r) => s.push_str(&format!(
                        "    {at} lost ({}), restored after {}, {} attempt{}, {}\n",
                        d.cause.as_str(),
                        secs(r.duration),
                        r.attempts,
                        if r.attempts == 1 { "" } else { "s" },
                        r.kind.as_str()
                    )),
                    None => s.push_str(&format!(
                        "    {at} lost ({}), not restored\n",
                        d.cause.as_str()
                    )),
                }
            }
        }
        let apps = self.apps.lock().expect("apps lock");
        for (app, lines) in self.app_drills.lock().expect("app drills lock").iter() {
            s.push_str(&format!("  app {app}:\n"));
            for l in lines {
                s.push_str(&format!("    {l}\n"));
            }
            for (dep, drill) in apps.drills(app) {
                if let Some(d) = drill
                    && d.result == Recovery::Pending
                {
                    s.push_str(&format!(
                        "    {dep} gone {}, app not recovered yet at exit\n",
                        secs(d.dependency_outage)
                    ));
                }
            }
            if lines.is_empty() {
                s.push_str("    no drill of its dependencies seen\n");
            }
        }
        s
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// What the bounds allow: `2.001-2.030 s`, or `at least 2.001 s` when the
/// start is unknown.
fn range(r: &OutageReport) -> String {
    match r.longest {
        Some(l) => format!("{:.3}-{:.3} s", r.shortest.as_secs_f64(), l.as_secs_f64()),
        None => format!("at least {}, down before the watch began", secs(r.shortest)),
    }
}

impl EventSink for WatchSink {
    fn emit(&self, t: &TargetInfo, event: &Event) {
        self.print(t, event);
        let outcomes = self.apps.lock().expect("apps lock").on_event(
            &t.name,
            event,
            tokio::time::Instant::now(),
        );
        self.app_outcomes(outcomes);
    }
}

impl WatchSink {
    fn print(&self, t: &TargetInfo, event: &Event) {
        match event {
            Event::Connected { identity } => {
                let mut text = format!(
                    "connected to {}",
                    identity.address.as_deref().unwrap_or(&t.endpoint)
                );
                let role = identity.role.map(|r| r.as_str()).unwrap_or("unknown role");
                text.push_str(&format!(" ({role}"));
                if let Some(v) = &identity.version {
                    text.push_str(&format!(", {} {v}", t.store));
                }
                if let Some(id) = &identity.server_id {
                    text.push_str(&format!(", id {}", &id[..id.len().min(12)]));
                }
                text.push(')');
                self.line(&t.name, &text);
            }
            Event::Disconnected {
                cause,
                started_at,
                start_unknown,
                detail,
                ..
            } => {
                // Attempts during an outage are not reported one by one.
                self.drills
                    .lock()
                    .expect("drills lock")
                    .entry(t.name.clone())
                    .or_default()
                    .push(Drill {
                        lost_at: *started_at,
                        cause: *cause,
                        start_unknown: *start_unknown,
                        report: None,
                    });
                let text = if *start_unknown {
                    format!("cannot connect (unreachable since the start): {detail}")
                } else {
                    format!("lost ({}): {detail}", cause.as_str())
                };
                self.line(&t.name, &text);
            }
            Event::Restored(r) => {
                if let Some(d) = self
                    .drills
                    .lock()
                    .expect("drills lock")
                    .get_mut(&t.name)
                    .and_then(|l| l.last_mut())
                {
                    d.report = Some((**r).clone());
                }
                self.line(
                    &t.name,
                    &format!(
                        "restored after {} ({}), {} attempt{}, {} ({})",
                        secs(r.duration),
                        range(r),
                        r.attempts,
                        if r.attempts == 1 { "" } else { "s" },
                        r.kind.as_str(),
                        r.reason,
                    ),
                );
            }
            Event::Failover { source, from, to } => self.line(
                &t.name,
                &format!(
                    "failover ({}): {} -> {to}",
                    source.as_str(),
                    from.as_deref().unwrap_or("?")
                ),
            ),
            Event::IdentityChanged { identity } => self.line(
                &t.name,
                &format!(
                    "now {}",
                    identity.role.map(|r| r.as_str()).unwrap_or("unknown role")
                ),
            ),
            Event::Notice { message } => self.line(&t.name, message),
            _ => {}
        }
    }
}

/// Watches until `shutdown` is cancelled, then returns the summary.
pub async fn run(
    targets: Vec<Target>,
    sink: Arc<WatchSink>,
    shutdown: CancellationToken,
) -> String {
    let mut set = JoinSet::new();
    let budget = Arc::new(AttemptBudget::new(DEFAULT_ATTEMPTS_PER_SECOND));
    let lag = Arc::new(SchedulingLag::new());
    set.spawn({
        let (lag, stop) = (lag.clone(), shutdown.clone());
        async move { lag.run(stop).await }
    });
    for t in targets {
        sink.track_app(&t);
        let run = RunCanary {
            info: t.info(),
            settings: t.settings,
            sink: sink.clone(),
            budget: budget.clone(),
            lag: lag.clone(),
            shutdown: shutdown.clone(),
        };
        set.spawn(async move { with_store(t.spec(), &t.options, run).await });
    }
    shutdown.cancelled().await;
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while set.join_next().await.is_some() {}
    })
    .await;
    sink.summary()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn apps_depend_on_every_store_or_on_those_named() {
        let urls = strings(&["redis://127.0.0.1:6379", "mysql://u:hunter2@127.0.0.1:3306"]);
        let apps = strings(&["http://127.0.0.1:8080/health"]);
        let second = Duration::from_secs(1);
        let all = targets_with_apps(&urls, &apps, &[], second, second).unwrap();
        assert_eq!(
            all[2].depends_on,
            ["127.0.0.1:6379", "127.0.0.1:3306"],
            "{all:?}"
        );
        let one = targets_with_apps(
            &urls,
            &apps,
            &strings(&["mysql://u:hunter2@127.0.0.1:3306"]),
            second,
            second,
        )
        .unwrap();
        assert_eq!(one[2].depends_on, ["127.0.0.1:3306"]);
        assert_eq!(one[2].recovery_deadline, second);
        let e = targets_with_apps(
            &urls,
            &apps,
            &strings(&["mysql://u:hunter2@127.0.0.1:3307"]),
            second,
            second,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "argument 3: --depends-on mysql://u:***@127.0.0.1:3307 is not one of the store URLs given"
        );
        let e = targets_with_apps(&urls, &[], &urls, second, second)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--depends-on needs at least one --app"), "{e}");
    }

    #[test]
    fn urls_on_one_endpoint_get_distinct_names() {
        let urls = strings(&["redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/1"]);
        let apps = strings(&["http://127.0.0.1:6379/health"]);
        let second = Duration::from_secs(1);
        let all = targets_with_apps(&urls, &apps, &[], second, second).unwrap();
        let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["127.0.0.1:6379", "127.0.0.1:6379#2", "127.0.0.1:6379#3"]
        );
        assert_eq!(all[2].depends_on, ["127.0.0.1:6379", "127.0.0.1:6379#2"]);
    }
}
