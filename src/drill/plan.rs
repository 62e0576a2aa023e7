//! What a drill will do, decided before anything is touched: the store and
//! the apps (from a config file or from URLs), the action with its flags,
//! the credential it acts with and the pacing. Every refusal is a usage
//! error (exit 2) that says what to do instead, and [`Plan::describe`] says
//! what will happen on which server, for `--dry-run` and the confirmation.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::config::{self, Config, Target, TargetSource, ranges};
use crate::dburl::DbUrl;
use crate::model::StoreKind;
use crate::model::ser::secs as ser_secs;
use crate::settings::CanarySettings;
use crate::stores::Options;

use super::args::{ActionName, DrillArgs};
use super::redact::Secrets;

/// A drill the command line or the agent cannot run, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

fn refuse<T>(reason: impl Into<String>) -> Result<T, PlanError> {
    Err(PlanError(reason.into()))
}

/// The fault a drill causes.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Drop every client connection but the canary's and the drill's own,
    /// optionally only those of one user (role) or application name.
    KillClients {
        user: Option<String>,
        application: Option<String>,
    },
    /// Sentinel `SENTINEL FAILOVER`, MongoDB `replSetStepDown`.
    Failover,
    /// `sh -c command` on this machine; `restart` when it was given as
    /// `--action restart`.
    Exec {
        command: String,
        timeout: Duration,
        restart: bool,
    },
    /// Redis `SHUTDOWN`, for a supervisor to start the server again.
    Shutdown,
}

impl Action {
    /// The `--action` it was given as.
    pub fn name(&self) -> ActionName {
        match self {
            Self::KillClients { .. } => ActionName::KillClients,
            Self::Failover => ActionName::Failover,
            Self::Exec { restart: false, .. } => ActionName::Exec,
            Self::Exec { restart: true, .. } | Self::Shutdown => ActionName::Restart,
        }
    }
}

/// How a drill paces itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Probe interval of every canary of the drill.
    pub interval: Duration,
    /// How long the store and the apps may take to be healthy before a drill.
    pub ready_timeout: Duration,
    /// How long after the action the store may stay down (or a failover
    /// take).
    pub restore_timeout: Duration,
    /// How long after the action a store outage still counts as its effect.
    pub settle: Duration,
}

/// The default probe interval during a drill: fine enough that a lag is
/// known to about a tenth of a second.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);
/// The default bound of an `--exec` command.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);
/// The most drills one command runs.
pub const MAX_REPEAT: u32 = 100;

/// Range of `--interval`.
const INTERVAL: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(10));
/// Range of the other waits (`--ready-timeout`, `--restore-timeout`,
/// `--exec-timeout`).
const WAIT: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));
/// Range of `--settle`.
const SETTLE: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(60));

/// The refusal of a store URL together with a configuration file.
pub const BOTH: &str = "give either a store URL or --config FILE --store NAME, not both (DBCANARY_CONFIG counts as --config)";

/// One drill, checked: what [`super::run`] performs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The store; its canary runs during the drill.
    pub store: Target,
    /// What the action connects with: the drill credential's URL when given,
    /// else the store's own (options parsed as for a target).
    pub admin: Target,
    /// Whether `admin` is a separate drill credential.
    pub drill_credential: bool,
    /// The applications judged, each with its `recovery_deadline`.
    pub apps: Vec<Target>,
    pub action: Action,
    pub repeat: u32,
    pub timing: Timing,
}

/// Parses a duration flag within `(min, max)`.
fn duration(flag: &str, v: &str, (min, max): (Duration, Duration)) -> Result<Duration, PlanError> {
    let d = config::parse_duration(v).map_err(|e| PlanError(format!("{flag}: {e}")))?;
    if d < min || d > max {
        return refuse(format!(
            "{flag} {} is out of range: use {} to {}",
            v.trim(),
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

/// The canary pacing of a drill: probes every `interval`, and reconnect
/// attempts no further apart, so that the moment a store or an app is back
/// is known within one interval.
fn drill_settings(base: CanarySettings, interval: Duration) -> CanarySettings {
    let mut s = base;
    s.interval = interval;
    s.backoff.initial = s.backoff.initial.min(interval);
    s.backoff.max = interval;
    s
}

/// Ad-hoc targets from URLs, named by their endpoint as `watch` names them,
/// probed with the default timeout.
fn url_targets(urls: &[String], what: &str) -> Result<Vec<Target>, PlanError> {
    let mut targets = crate::watch::targets(urls, DEFAULT_INTERVAL)
        .map_err(|e| PlanError(format!("{what} {}: {}", e.index, e.reason)))?;
    for t in &mut targets {
        t.settings.timeout = CanarySettings::default().timeout;
    }
    Ok(targets)
}

fn looks_like_url(s: &str) -> bool {
    s.contains("://")
}

/// The apps of a config-file drill: those named or given as URLs, or every
/// http target that depends on the store.
fn config_apps(args: &DrillArgs, cfg: &Config, store: &str) -> Result<Vec<Target>, PlanError> {
    let https = || {
        cfg.targets
            .iter()
            .filter(|t| t.kind() == StoreKind::Http)
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if args.apps.is_empty() {
        let apps: Vec<Target> = cfg
            .targets
            .iter()
            .filter(|t| t.depends_on.iter().any(|d| d == store))
            .cloned()
            .collect();
        if apps.is_empty() {
            return refuse(format!(
                "no application depends on {store:?} in the configuration: name them with --app NAME|URL"
            ));
        }
        return Ok(apps);
    }
    let mut apps = Vec::new();
    for a in &args.apps {
        if looks_like_url(a) {
            apps.extend(url_targets(std::slice::from_ref(a), "--app")?);
            continue;
        }
        match cfg.targets.iter().find(|t| &t.name == a) {
            Some(t) if t.kind() == StoreKind::Http => apps.push(t.clone()),
            Some(t) => {
                return refuse(format!(
                    "--app {a}: target {a:?} is a {} store, not an application (an http target)",
                    t.kind()
                ));
            }
            None => {
                return refuse(format!(
                    "--app {a}: no target named {a:?} (applications: {})",
                    https()
                ));
            }
        }
    }
    Ok(apps)
}

/// The action from the flags, refusing flags that do not go with it.
fn action(args: &DrillArgs) -> Result<Action, PlanError> {
    let name = args.action.as_str();
    let kill_flag = if args.kill_user.is_some() {
        Some("--kill-user")
    } else if args.kill_application.is_some() {
        Some("--kill-application")
    } else {
        None
    };
    if let Some(flag) = kill_flag
        && args.action != ActionName::KillClients
    {
        return refuse(format!(
            "{flag} goes with --action kill-clients, not {name}"
        ));
    }
    if args.exec_timeout.is_some() && args.exec.is_none() {
        return refuse("--exec-timeout goes with --exec CMD");
    }
    if args.allow_shutdown && (args.action != ActionName::Restart || args.exec.is_some()) {
        return refuse("--allow-shutdown goes with --action restart without --exec");
    }
    let exec = |restart| -> Result<Action, PlanError> {
        let command = match &args.exec {
            Some(c) if !c.trim().is_empty() => c.clone(),
            Some(_) => return refuse("--exec is empty"),
            None => unreachable!("checked by the caller"),
        };
        let timeout = match &args.exec_timeout {
            Some(v) => duration("--exec-timeout", v, WAIT)?,
            None => DEFAULT_EXEC_TIMEOUT,
        };
        Ok(Action::Exec {
            command,
            timeout,
            restart,
        })
    };
    match args.action {
        ActionName::KillClients | ActionName::Failover if args.exec.is_some() => refuse(format!(
            "--exec goes with --action exec or restart; --action {name} does its own work on the server"
        )),
        ActionName::KillClients => Ok(Action::KillClients {
            user: args.kill_user.clone(),
            application: args.kill_application.clone(),
        }),
        ActionName::Failover => Ok(Action::Failover),
        ActionName::Exec if args.exec.is_none() => {
            refuse("--action exec needs --exec CMD (run with sh -c on this machine)")
        }
        ActionName::Exec => exec(false),
        ActionName::Restart if args.exec.is_some() => exec(true),
        ActionName::Restart if args.allow_shutdown => Ok(Action::Shutdown),
        ActionName::Restart => refuse(
            "--action restart needs --exec CMD, the command that restarts the store (e.g. \"systemctl restart redis\"); \
             for Redis, --allow-shutdown sends SHUTDOWN instead and leaves the start to your supervisor",
        ),
    }
}

impl Plan {
    /// Builds the plan of `dbcanary drill` from its flags and, in config
    /// mode, the loaded configuration.
    pub fn from_args(args: &DrillArgs, config: Option<&Config>) -> Result<Self, PlanError> {
        let interval = duration("--interval", &args.interval, INTERVAL)?;
        let timing = Timing {
            interval,
            ready_timeout: duration("--ready-timeout", &args.ready_timeout, WAIT)?,
            restore_timeout: duration("--restore-timeout", &args.restore_timeout, WAIT)?,
            settle: duration("--settle", &args.settle, SETTLE)?,
        };
        if !(1..=MAX_REPEAT).contains(&args.repeat) {
            return refuse(format!("--repeat must be 1 to {MAX_REPEAT}"));
        }
        if let Some(parent) = args.junit.as_deref().and_then(Path::parent)
            && !parent.as_os_str().is_empty()
            && !parent.is_dir()
        {
            return refuse(format!(
                "--junit: directory {} does not exist",
                parent.display()
            ));
        }
        let action = action(args)?;
        let (store, mut apps) = match (&args.url, config) {
            (Some(_), Some(_)) => return refuse(BOTH),
            (None, None) => {
                return refuse("give the store to drill: a URL, or --config FILE --store NAME");
            }
            (Some(url), None) => {
                if args.store.is_some() {
                    return refuse(
                        "--store names a target of --config; with a URL, the URL is the store",
                    );
                }
                if args.apps.is_empty() {
                    return refuse("a drill judges applications: give at least one --app URL");
                }
                if let Some(a) = args.apps.iter().find(|a| !looks_like_url(a)) {
                    return refuse(format!(
                        "--app {a}: without --config, an app is an http:// or https:// health URL"
                    ));
                }
                let store = url_targets(std::slice::from_ref(url), "the store URL")?.remove(0);
                (store, url_targets(&args.apps, "--app")?)
            }
            (None, Some(cfg)) => {
                let stores = || {
                    cfg.targets
                        .iter()
                        .filter(|t| t.kind() != StoreKind::Http)
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let Some(name) = &args.store else {
                    return refuse(format!(
                        "--config needs --store NAME, the target to drill (stores: {})",
                        stores()
                    ));
                };
                let Some(store) = cfg.targets.iter().find(|t| &t.name == name) else {
                    return refuse(format!(
                        "--store {name}: no target named {name:?} (stores: {})",
                        stores()
                    ));
                };
                if store.kind() == StoreKind::Http {
                    return refuse(format!(
                        "{name} is an application (an http target): drill the store it depends on"
                    ));
                }
                (store.clone(), config_apps(args, cfg, name)?)
            }
        };
        if let Some(v) = &args.recovery_deadline {
            let d = duration("--recovery-deadline", v, ranges::DEADLINE)?;
            for a in &mut apps {
                a.recovery_deadline = d;
            }
        }
        let drill_url = match &args.drill_url {
            Some(u) => Some(DbUrl::parse(u).map_err(|e| PlanError(format!("--drill-url: {e}")))?),
            None => store.drill_url.as_ref().map(|d| d.url.clone()),
        };
        let drill_credential = drill_url.is_some();
        let admin = match drill_url {
            Some(url) => Target::from_url(
                store.name.clone(),
                url,
                store.settings,
                TargetSource::CommandLine,
            )
            .map_err(|reason| PlanError(format!("the drill URL: {reason}")))?,
            None => store.clone(),
        };
        let mut plan = Plan {
            store,
            admin,
            drill_credential,
            apps,
            action,
            repeat: args.repeat,
            timing,
        };
        plan.store.settings = drill_settings(plan.store.settings, interval);
        for a in &mut plan.apps {
            a.settings = drill_settings(a.settings, interval);
        }
        plan.check()?;
        Ok(plan)
    }

    /// Checks that the action can be done on this store, with these apps:
    /// what any caller (the command line, the agent's API) must pass.
    pub fn check(&self) -> Result<(), PlanError> {
        let kind = self.store.kind();
        let name = &self.store.name;
        if kind == StoreKind::Http {
            return refuse(format!(
                "{name} is an application (an http target): drill the store it depends on"
            ));
        }
        if self.apps.is_empty() {
            return refuse("a drill judges applications: give at least one --app");
        }
        for (i, a) in self.apps.iter().enumerate() {
            if a.kind() != StoreKind::Http {
                return refuse(format!(
                    "--app {}: an app is an http:// or https:// health URL",
                    a.url.redacted()
                ));
            }
            if self.apps[..i].iter().any(|b| b.name == a.name) {
                return refuse(format!("--app {} is given twice", a.name));
            }
        }
        if self.admin.kind() != kind {
            return refuse(format!(
                "the drill URL is a {} URL, the store a {} URL: give a URL of the same store",
                self.admin.url.scheme, self.store.url.scheme
            ));
        }
        match (&self.action, kind) {
            (Action::KillClients { .. }, StoreKind::Mongodb) => refuse(
                "kill-clients is not available for MongoDB: killAllSessions ends sessions and cursors but \
                 leaves every connection open, so an application would not see a disconnect. \
                 Use --action failover (replSetStepDown) or --action exec with a command that restarts mongod",
            ),
            (
                Action::KillClients {
                    application: Some(_),
                    ..
                },
                k,
            ) if k != StoreKind::Postgresql => refuse(
                "--kill-application matches PostgreSQL's application_name; other stores have no such filter (use --kill-user)",
            ),
            (Action::Failover, StoreKind::Redis) => refuse(
                "a redis:// target has no failover of its own: drill it through Sentinel \
                 (a redis+sentinel:// URL), or run your HA tool's command with --action exec",
            ),
            (Action::Failover, StoreKind::Mysql | StoreKind::Postgresql) => refuse(format!(
                "failover of {kind} belongs to its HA tool (Orchestrator, Patroni, repmgr, your cloud's API): \
                 run its command with --action exec --exec CMD"
            )),
            (Action::Shutdown, k) if !matches!(k, StoreKind::Redis | StoreKind::RedisSentinel) => {
                refuse("--allow-shutdown sends Redis SHUTDOWN; for other stores give --exec CMD")
            }
            _ => Ok(()),
        }
    }

    /// The names of every canary of the drill: the store's first.
    pub fn names(&self) -> Vec<String> {
        std::iter::once(&self.store)
            .chain(&self.apps)
            .map(|t| t.name.clone())
            .collect()
    }

    /// The secrets the drill's output must not show.
    pub fn secrets(&self) -> Secrets {
        let targets: Vec<&Target> = std::iter::once(&self.store).chain(&self.apps).collect();
        Secrets::of(&targets, &[&self.admin.url])
    }

    /// Who the action logs in as, for the plan.
    fn login(&self) -> String {
        let user = self
            .admin
            .url
            .username
            .as_deref()
            .unwrap_or("the URL's default user");
        let source = if self.drill_credential {
            "the drill credential"
        } else {
            "the canary's credential"
        };
        format!("as {user} ({source})")
    }

    /// What the action does on which server, in one sentence.
    pub fn describe(&self) -> String {
        let name = &self.store.name;
        let canary = format!("dbcanary:{name}");
        let at = self.admin.url.endpoint();
        let login = self.login();
        match (&self.action, self.store.kind()) {
            (Action::KillClients { user, application }, kind) => {
                let only = match (user, application) {
                    (Some(u), Some(a)) => format!(", only those of user {u} named {a}"),
                    (Some(u), None) => format!(", only those of user {u}"),
                    (None, Some(a)) => format!(", only those named {a}"),
                    (None, None) => String::new(),
                };
                match kind {
                    StoreKind::Redis => format!(
                        "on {at} {login}: CLIENT LIST TYPE normal and TYPE pubsub, then CLIENT KILL ID for every client \
                         except the canary ({canary}) and the drill's own connection{only}; the server keeps running"
                    ),
                    StoreKind::RedisSentinel => format!(
                        "on the master the canary is connected to (as the sentinels {at} name it) {login}: \
                         CLIENT LIST TYPE normal and TYPE pubsub, then CLIENT KILL ID for every client except the canary \
                         ({canary}) and the drill's own connection{only}; the server keeps running"
                    ),
                    StoreKind::Mysql => format!(
                        "on {at} {login}: KILL CONNECTION for every session in information_schema.PROCESSLIST except \
                         the canary's, the drill's own and the server's own threads{only}; the server keeps running"
                    ),
                    _ => format!(
                        "on {at} {login}: pg_terminate_backend() for every client backend of the target's database \
                         except the canary (application_name {canary}) and the drill's own{only}; the server keeps running"
                    ),
                }
            }
            (Action::Failover, StoreKind::RedisSentinel) => {
                let master = match &self.store.options {
                    Options::RedisSentinel(o) => o.master_name.clone(),
                    _ => String::new(),
                };
                format!(
                    "SENTINEL FAILOVER {master} on the first of the sentinels {at} that answers: a replica becomes the master"
                )
            }
            (Action::Failover, _) => format!(
                "replSetStepDown (60 s, secondaryCatchUpPeriodSecs 10) on the primary of {at} {login}: \
                 a secondary is elected primary"
            ),
            (
                Action::Exec {
                    command, timeout, ..
                },
                _,
            ) => format!(
                "runs sh -c {:?} on this machine (killed after {})",
                crate::dburl::redact_text(command),
                humantime::format_duration(*timeout)
            ),
            (Action::Shutdown, _) => format!(
                "SHUTDOWN on the {}server {at} {login}: the server exits (saving if it persists) and your supervisor \
                 must start it again",
                if self.store.kind() == StoreKind::RedisSentinel {
                    "master "
                } else {
                    ""
                }
            ),
        }
    }

    /// The plan as the report and `--dry-run` show it, secrets masked.
    pub fn view(&self, secrets: &Secrets) -> PlanView {
        PlanView {
            target: self.store.name.clone(),
            store: self.store.kind().label(),
            url: self.store.url.redacted(),
            action: self.action.name(),
            does: secrets.mask(&self.describe()),
            drill_credential: self.drill_credential.then(|| self.admin.url.redacted()),
            apps: self
                .apps
                .iter()
                .map(|a| AppView {
                    name: a.name.clone(),
                    url: a.url.redacted(),
                    recovery_deadline: a.recovery_deadline,
                })
                .collect(),
            repeat: self.repeat,
            interval: self.timing.interval,
            ready_timeout: self.timing.ready_timeout,
            restore_timeout: self.timing.restore_timeout,
            settle: self.timing.settle,
        }
    }
}

/// The plan, as printed.
#[derive(Debug, Clone, Serialize)]
pub struct PlanView {
    pub target: String,
    pub store: &'static str,
    pub url: String,
    pub action: ActionName,
    /// What the action does on which server.
    pub does: String,
    /// The drill credential's URL (redacted), when one is given.
    pub drill_credential: Option<String>,
    pub apps: Vec<AppView>,
    pub repeat: u32,
    #[serde(serialize_with = "ser_secs", rename = "interval_s")]
    pub interval: Duration,
    #[serde(serialize_with = "ser_secs", rename = "ready_timeout_s")]
    pub ready_timeout: Duration,
    #[serde(serialize_with = "ser_secs", rename = "restore_timeout_s")]
    pub restore_timeout: Duration,
    #[serde(serialize_with = "ser_secs", rename = "settle_s")]
    pub settle: Duration,
}

/// One app of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct AppView {
    pub name: String,
    pub url: String,
    #[serde(serialize_with = "ser_secs", rename = "recovery_deadline_s")]
    pub recovery_deadline: Duration,
}

impl PlanView {
    /// `kill-clients on cache (redis redis://...), 3 drills`.
    pub fn headline(&self) -> String {
        format!(
            "{} on {} ({} {}), {} drill{}",
            self.action.as_str(),
            self.target,
            self.store,
            self.url,
            self.repeat,
            if self.repeat == 1 { "" } else { "s" },
        )
    }

    /// The plan as text, for `--dry-run`.
    pub fn text(&self) -> String {
        let mut s = format!(
            "drill plan: {}\n  does     {}\n",
            self.headline(),
            self.does
        );
        if let Some(c) = &self.drill_credential {
            s.push_str(&format!("  acts as  {c}\n"));
        }
        for a in &self.apps {
            s.push_str(&format!(
                "  app      {} ({}), recovery deadline {}\n",
                a.name,
                a.url,
                humantime::format_duration(a.recovery_deadline)
            ));
        }
        s.push_str(&format!(
            "  pacing   probes every {}, ready within {}, store back within {}, settle {}\n",
            humantime::format_duration(self.interval),
            humantime::format_duration(self.ready_timeout),
            humantime::format_duration(self.restore_timeout),
            humantime::format_duration(self.settle)
        ));
        s
    }
}

#[cfg(test)]
mod tests;
