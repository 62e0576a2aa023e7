//! Drills through the agent's API (`POST /api/v1/drills`, with `[drills]
//! enabled`): the same plan and core as `dbcanary drill`, judged from the
//! agent's own long-lived canaries, whose events the recorder hands to the
//! drill's observer while it runs. One drill runs at a time; the last
//! [`KEPT`] stay readable at `GET /api/v1/drills/{id}`, and each one's
//! result reaches `/api/v1/targets` (`last_drill`), the metrics
//! (`dbcanary_drills_total`) and the traces (a `dbcanary.drill` span).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DrillsConfig, Target};
use crate::listener::{Drills, Refusal};
use crate::model::StoreKind;
use crate::model::ser::time as ser_time;
use crate::telemetry::Recorder;
use crate::telemetry::drills::{DrillApp, DrillEnd, DrillResult, DrillStart};

use super::args::{self, ActionName, DrillArgs};
use super::observe::Observer;
use super::plan::{Action, Plan};
use super::redact::Secrets;
use super::report::{AppResult, DrillRun, Outcome};
use super::{Hooks, run};

/// How many drills stay readable (the oldest goes first).
pub const KEPT: usize = 20;

/// How long a running drill gets to end (and report "aborted") when the
/// agent stops.
const STOP_WITHIN: Duration = Duration::from_secs(1);

/// The JSON body of `POST /api/v1/drills`: the flags of `dbcanary drill
/// --config FILE`, as keys (no URLs: the targets are the agent's, and a
/// drill credential comes from the store's `drill_url_env`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DrillRequest {
    store: String,
    #[serde(default)]
    apps: Vec<String>,
    action: ActionName,
    exec: Option<String>,
    exec_timeout: Option<String>,
    kill_user: Option<String>,
    kill_application: Option<String>,
    #[serde(default)]
    allow_shutdown: bool,
    #[serde(default = "one")]
    repeat: u32,
    ready_timeout: Option<String>,
    restore_timeout: Option<String>,
    settle: Option<String>,
    recovery_deadline: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

fn one() -> u32 {
    1
}

impl DrillRequest {
    /// The flags it stands for.
    fn args(self) -> DrillArgs {
        DrillArgs {
            url: None,
            store: Some(self.store),
            apps: self.apps,
            action: self.action,
            exec: self.exec,
            exec_timeout: self.exec_timeout,
            drill_url: None,
            kill_user: self.kill_user,
            kill_application: self.kill_application,
            allow_shutdown: self.allow_shutdown,
            repeat: self.repeat,
            interval: args::INTERVAL.into(),
            ready_timeout: self
                .ready_timeout
                .unwrap_or_else(|| args::READY_TIMEOUT.into()),
            restore_timeout: self
                .restore_timeout
                .unwrap_or_else(|| args::RESTORE_TIMEOUT.into()),
            settle: self.settle.unwrap_or_else(|| args::SETTLE.into()),
            recovery_deadline: self.recovery_deadline,
            yes: true,
            dry_run: self.dry_run,
            json: true,
            junit: None,
        }
    }
}

/// `--repeat must be …` → `repeat must be …`: the plan's reasons name the
/// command line's flags, the API's keys are the same words (`--app` is
/// an entry of `apps`).
fn as_keys(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut rest = reason;
    while let Some(i) = rest.find("--") {
        out.push_str(&rest[..i]);
        let flag = &rest[i + 2..];
        let end = flag
            .find(|c: char| !(c.is_ascii_lowercase() || c == '-'))
            .unwrap_or(flag.len());
        out.push_str(&flag[..end].replace('-', "_"));
        rest = &flag[end..];
    }
    out.push_str(rest);
    out
}

/// One drill request, as the API shows it.
struct Entry {
    id: String,
    requested_at: SystemTime,
    store: String,
    action: ActionName,
    /// The plan, secrets masked.
    plan: Value,
    /// The report once it is over, secrets masked.
    report: Option<Value>,
}

impl Entry {
    fn summary(&self) -> Value {
        let result = self.report.as_ref().and_then(|r| r.get("result").cloned());
        json!({
            "id": self.id,
            "status": if self.report.is_some() { "done" } else { "running" },
            "requested_at": time(self.requested_at),
            "store": self.store,
            "action": self.action,
            "result": result,
        })
    }

    fn whole(&self) -> Value {
        let mut v = self.summary();
        v["plan"] = self.plan.clone();
        v["report"] = self.report.clone().unwrap_or(Value::Null);
        v
    }
}

fn time(t: SystemTime) -> Value {
    ser_time(&t, serde_json::value::Serializer).unwrap_or(Value::Null)
}

#[derive(Default)]
struct Book {
    /// Newest last.
    entries: VecDeque<Entry>,
    running: Option<(String, JoinHandle<()>)>,
    /// Set once the agent stops: no new drill starts.
    closed: bool,
}

/// The agent's drill service.
pub struct DrillService {
    recorder: Arc<Recorder>,
    settings: DrillsConfig,
    /// The agent's configuration with the targets it runs (its shard's,
    /// the target files' included).
    config: Mutex<Arc<Config>>,
    book: Arc<Mutex<Book>>,
    stop: CancellationToken,
}

impl DrillService {
    pub fn new(recorder: Arc<Recorder>, config: &Config, running: &[Target]) -> Self {
        let service = Self {
            recorder,
            settings: config.drills,
            config: Mutex::new(Arc::new(config.clone())),
            book: Arc::default(),
            stop: CancellationToken::new(),
        };
        service.set_targets(config, running);
        service
    }

    /// The configuration and the targets the agent runs now (after a reload
    /// or a change of the target files).
    pub fn set_targets(&self, config: &Config, running: &[Target]) {
        let mut c = config.clone();
        c.targets = running.to_vec();
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(c);
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops a running drill (it ends "aborted", its report kept) and
    /// refuses new ones: the agent is stopping.
    pub async fn stop(&self) {
        self.stop.cancel();
        let task = {
            let mut book = self.book();
            book.closed = true;
            book.running.take()
        };
        if let Some((_, task)) = task {
            let _ = tokio::time::timeout(STOP_WITHIN, task).await;
        }
    }

    /// The plan of a request, with the agent's own pacing: its canaries
    /// keep their interval.
    fn plan(&self, body: &[u8]) -> Result<(Plan, bool), Refusal> {
        let bad = |reason: String| (StatusCode::BAD_REQUEST, reason);
        let req: DrillRequest = serde_json::from_slice(body).map_err(|e| {
            bad(format!(
                "the body must be a JSON object such as {{\"store\": \"cache\", \"action\": \"kill-clients\"}}: {e}"
            ))
        })?;
        let dry_run = req.dry_run;
        let args = req.args();
        let config = self
            .config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut plan = Plan::from_args(&args, Some(&config)).map_err(|e| bad(as_keys(&e.0)))?;
        if matches!(plan.action, Action::Exec { .. }) && !self.settings.allow_exec {
            return Err((
                StatusCode::FORBIDDEN,
                "the API runs no shell command unless the configuration says [drills] allow_exec = true: use kill-clients, failover, or restart with allow_shutdown".into(),
            ));
        }
        let running = |name: &str| config.targets.iter().find(|t| t.name == name);
        for t in std::iter::once(&mut plan.store).chain(&mut plan.apps) {
            if let Some(r) = running(&t.name) {
                t.settings = r.settings;
            }
        }
        plan.timing.interval = plan.store.settings.interval;
        Ok((plan, dry_run))
    }
}

impl Drills for DrillService {
    fn start(&self, body: &[u8]) -> Result<(StatusCode, Value), Refusal> {
        let (plan, dry_run) = self.plan(body)?;
        let secrets = plan.secrets();
        let mut view = serde_json::to_value(plan.view(&secrets)).unwrap_or_default();
        secrets.mask_json(&mut view);
        if dry_run {
            return Ok((
                StatusCode::OK,
                json!({ "dry_run": true, "plan": view, "done": "nothing: a dry run" }),
            ));
        }
        let mut book = self.book();
        if book.closed {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the agent is stopping".into(),
            ));
        }
        if let Some((id, task)) = &book.running
            && !task.is_finished()
        {
            return Err((
                StatusCode::CONFLICT,
                format!("drill {id} is running: one drill at a time (GET /api/v1/drills/{id})"),
            ));
        }
        let requested_at = SystemTime::now();
        let id = requested_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            .to_string();
        let entry = Entry {
            id: id.clone(),
            requested_at,
            store: plan.store.name.clone(),
            action: plan.action.name(),
            plan: view,
            report: None,
        };
        let answer = entry.whole();
        if book.entries.len() == KEPT {
            book.entries.pop_front();
        }
        book.entries.push_back(entry);
        let task = tokio::spawn(drive(
            plan,
            secrets,
            id.clone(),
            self.recorder.clone(),
            self.book.clone(),
            self.stop.child_token(),
        ));
        book.running = Some((id, task));
        Ok((StatusCode::ACCEPTED, answer))
    }

    fn list(&self) -> Value {
        let book = self.book();
        json!({ "drills": book.entries.iter().rev().map(Entry::summary).collect::<Vec<_>>() })
    }

    fn get(&self, id: &str) -> Option<Value> {
        self.book()
            .entries
            .iter()
            .find(|e| e.id == id)
            .map(Entry::whole)
    }
}

/// Runs one drill request on the agent's canaries and keeps its report.
async fn drive(
    plan: Plan,
    secrets: Secrets,
    id: String,
    recorder: Arc<Recorder>,
    book: Arc<Mutex<Book>>,
    stop: CancellationToken,
) {
    let names = plan.names();
    let said = secrets.clone();
    let drill = id.clone();
    let observer = Arc::new(Observer::new(
        &names,
        Box::new(move |who, text| {
            tracing::info!(drill = %drill, target = %who, "{}", said.scrub(text));
        }),
    ));
    // First the tap, then what the agent knows: an event in between is
    // already in what is read.
    recorder.set_tap(Some(observer.clone()));
    for t in std::iter::once(&plan.store).chain(&plan.apps) {
        if let Some((up, identity)) = recorder.health(&t.name) {
            observer.prime(&t.name, t.kind() == StoreKind::Http, up, identity);
        }
    }
    let hooks = Telemetry {
        recorder: recorder.clone(),
        id: id.clone(),
        store: plan.store.name.clone(),
        apps: plan.apps.iter().map(|a| a.name.clone()).collect(),
        action: plan.action.name().as_str(),
    };
    let report = run(&plan, &observer, &hooks, &stop).await;
    recorder.set_tap(None);
    let mut v = serde_json::to_value(&report).unwrap_or_default();
    secrets.mask_json(&mut v);
    let mut book = book.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = book.entries.iter_mut().find(|e| e.id == id) {
        e.report = Some(v);
    }
}

/// Tells the recorder of each drill as it goes.
struct Telemetry {
    recorder: Arc<Recorder>,
    id: String,
    store: String,
    apps: Vec<String>,
    action: &'static str,
}

impl Telemetry {
    fn start(&self, number: u32) -> DrillStart {
        DrillStart {
            id: self.id.clone(),
            number,
            store: self.store.clone(),
            apps: self.apps.clone(),
            action: self.action,
        }
    }
}

impl Hooks for Telemetry {
    fn acting(&self, number: u32) {
        self.recorder.drill_begins(&self.start(number));
    }

    fn done(&self, run: &DrillRun) {
        let ended_at = SystemTime::now();
        let at = |offset: f64| {
            Duration::try_from_secs_f64(offset.max(0.0))
                .map_or(run.started_at, |d| run.started_at + d)
        };
        let over = run.store.as_ref().and_then(|s| s.over_at_s);
        let apps = run
            .apps
            .iter()
            .map(|a| {
                let from = a.unhealthy_at_s.map_or(run.started_at, at);
                let to = match (a.result, a.lag) {
                    (AppResult::Recovered, Some(lag)) => {
                        at(over.or(a.unhealthy_at_s).unwrap_or(0.0)) + lag
                    }
                    (AppResult::Unaffected, _) => from,
                    _ => ended_at,
                };
                DrillApp {
                    name: a.name.clone(),
                    result: match a.result {
                        AppResult::Unaffected => "unaffected",
                        AppResult::Recovered => "recovered",
                        AppResult::NotRecovered => "not_recovered",
                        AppResult::NotJudged => "not_judged",
                    },
                    from,
                    to,
                    lag: a.lag,
                }
            })
            .collect();
        self.recorder.drill_ended(&DrillEnd {
            start: self.start(run.number),
            result: match run.result {
                Outcome::Passed => DrillResult::Passed,
                Outcome::Failed => DrillResult::Failed,
                Outcome::NotPerformed | Outcome::Aborted => DrillResult::Aborted,
            },
            reason: run.reason.clone(),
            started_at: run.started_at,
            ended_at,
            apps,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plans_reasons_name_the_apis_keys() {
        assert_eq!(
            as_keys("--repeat must be 1 to 100"),
            "repeat must be 1 to 100"
        );
        assert_eq!(
            as_keys("give at least one --app; --kill-application needs postgres"),
            "give at least one app; kill_application needs postgres"
        );
        assert_eq!(as_keys("no flags here"), "no flags here");
    }
}
