//! `dbcanary drill`: cause a fault on purpose (kill every client
//! connection, fail the primary over, run the user's restart command) and
//! judge whether every application came back within its deadline.
//!
//! - [`plan`]: what a drill does, checked before anything is touched.
//! - [`observe`]: an event sink keeping what the canaries of the store and
//!   the apps saw, as evidence.
//! - [`judge`]: the verdict, a pure function of the evidence and the time.
//! - `action`: the actions, one admin connection (or command) each.
//! - [`report`]: the report as JSON, text and JUnit XML.
//! - [`command`]: the command line around [`run`].
//!
//! The core is [`run`]: it takes a checked [`Plan`] and an [`Observer`]
//! that canaries of the plan's targets feed (the command line starts its
//! own, fast ones; the agent can hand it its events), and gives a
//! [`DrillReport`].

use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub mod args;
pub mod command;
pub mod judge;
pub mod observe;
pub mod plan;
pub mod report;
pub mod service;

mod action;
mod redact;

pub use args::DrillArgs;
pub use observe::Observer;
pub use plan::{Plan, PlanError};
pub use redact::Secrets;
pub use report::{DrillReport, DrillRun};

use action::{ActionCtx, ActionError, FailureKind};
use judge::{AppEvidence, AppVerdict, Evidence, Judgement, StoreVerdict};
use report::{
    ActionReport, AppReport, AppResult, FailoverView, OutageView, Outcome, ServerView, StoreReport,
    StoreState,
};

/// How often a waiting drill looks at the evidence again.
const LOOK_EVERY: Duration = Duration::from_millis(20);

/// The two clocks at the start of the action: offsets in the report are
/// from this moment.
#[derive(Debug, Clone, Copy)]
struct Began {
    mono: Instant,
    wall: SystemTime,
}

impl Began {
    /// Seconds from the start of the action to `t` (negative before it).
    fn offset(&self, t: Instant) -> f64 {
        if t >= self.mono {
            (t - self.mono).as_secs_f64()
        } else {
            -(self.mono - t).as_secs_f64()
        }
    }
}

/// What a caller hears of each drill as it goes (the agent tells its
/// telemetry); the command line needs nothing of it: `()`.
pub trait Hooks: Send + Sync {
    /// Drill `number` is about to act on the store.
    fn acting(&self, _number: u32) {}
    /// A drill is over (or was given up before it acted).
    fn done(&self, _run: &DrillRun) {}
}

impl Hooks for () {}

/// Runs every drill of `plan` in turn, judging each from what `observer`
/// saw, until one does not pass or `shutdown` is cancelled. The canaries
/// of the plan's targets must be feeding `observer`.
pub async fn run(
    plan: &Plan,
    observer: &Observer,
    hooks: &dyn Hooks,
    shutdown: &CancellationToken,
) -> DrillReport {
    let secrets = plan.secrets();
    let mut drills = Vec::new();
    let mut stopped = None;
    for number in 1..=plan.repeat {
        let d = drill_once(plan, observer, hooks, number, &secrets, shutdown).await;
        hooks.done(&d);
        let result = d.result;
        drills.push(d);
        if result != Outcome::Passed {
            if number < plan.repeat {
                stopped = Some(format!(
                    "drill{} {} to {} not run: drill {number} did not pass",
                    if plan.repeat - number == 1 { "" } else { "s" },
                    number + 1,
                    plan.repeat
                ));
            }
            break;
        }
    }
    DrillReport::new(plan.view(&secrets), drills, stopped)
}

/// Waits until the store and every app are healthy, within the plan's
/// ready timeout; the reason why not otherwise.
async fn ready(
    plan: &Plan,
    observer: &Observer,
    shutdown: &CancellationToken,
) -> Result<(), (Outcome, String)> {
    let names = plan.names();
    let until = Instant::now() + plan.timing.ready_timeout;
    loop {
        let unhealthy = observer.unhealthy(&names);
        if unhealthy.is_empty() {
            return Ok(());
        }
        if Instant::now() >= until {
            let who = unhealthy
                .iter()
                .map(|(n, why)| match why {
                    Some(w) => format!("{n} ({w})"),
                    None => n.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err((
                Outcome::NotPerformed,
                format!(
                    "not healthy within {}, nothing was done: {who}",
                    humantime::format_duration(plan.timing.ready_timeout)
                ),
            ));
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                return Err((Outcome::Aborted, "interrupted before the action: nothing was done".into()));
            }
            _ = tokio::time::sleep(LOOK_EVERY) => {}
        }
    }
}

/// The evidence of the drill that began at `began`.
fn evidence(
    plan: &Plan,
    observer: &Observer,
    began: Instant,
    acted: Instant,
    failover_from: Option<&judge::Server>,
) -> Evidence {
    let store = observer.store(&plan.store.name);
    Evidence {
        began,
        acted,
        settle: plan.timing.settle,
        restore_timeout: plan.timing.restore_timeout,
        failover_from: failover_from.cloned(),
        outages: observer.outages(&plan.store.name),
        servers: store.servers,
        apps: plan
            .apps
            .iter()
            .map(|a| AppEvidence {
                deadline: a.recovery_deadline,
                grace: a.settings.timeout + LOOK_EVERY,
                checks: observer.checks(&a.name),
            })
            .collect(),
    }
}

/// One drill: ready, act, watch until judged.
async fn drill_once(
    plan: &Plan,
    observer: &Observer,
    hooks: &dyn Hooks,
    number: u32,
    secrets: &Secrets,
    shutdown: &CancellationToken,
) -> DrillRun {
    let mut run = DrillRun {
        number,
        started_at: SystemTime::now(),
        result: Outcome::Passed,
        reason: None,
        action: None,
        store: None,
        apps: Vec::new(),
    };
    if let Err((outcome, reason)) = ready(plan, observer, shutdown).await {
        run.result = outcome;
        run.reason = Some(secrets.scrub(&reason));
        run.apps = plan
            .apps
            .iter()
            .map(|a| app_report(a, AppResult::NotJudged, None, observer, secrets))
            .collect();
        return run;
    }
    let store = &plan.store.name;
    observer.say(
        store,
        &format!(
            "drill {number} of {}: {}",
            plan.repeat,
            plan.action.name().as_str()
        ),
    );
    let baseline = observer.identity(store);
    let began = Began {
        mono: Instant::now(),
        wall: SystemTime::now(),
    };
    run.started_at = began.wall;
    observer.begin(began.mono);
    hooks.acting(number);
    let ctx = ActionCtx {
        plan,
        canary: baseline.as_ref(),
        number,
        secrets,
        shutdown,
    };
    let done = action::perform(&ctx).await;
    let acted = Instant::now();
    let took = acted - began.mono;
    match &done {
        Ok(d) => observer.say(store, &secrets.scrub(&d.detail)),
        Err(e) => observer.say(store, &secrets.scrub(&format!("the action failed: {e}"))),
    }
    let failed = match done {
        Ok(d) => {
            run.action = Some(ActionReport {
                ok: true,
                took,
                detail: secrets.scrub(&d.detail),
                failure: None,
                exec: d.exec,
            });
            None
        }
        Err(ActionError {
            kind,
            message,
            exec,
        }) => {
            let message = secrets.scrub(&message);
            run.action = Some(ActionReport {
                ok: false,
                took,
                detail: message.clone(),
                failure: Some(kind),
                exec,
            });
            Some((kind, message))
        }
    };
    let failover_from = matches!(plan.action, plan::Action::Failover)
        .then(|| baseline.as_ref().map(observe::server).unwrap_or_default());
    let (judgement, aborted) = if failed.is_some() {
        (None, false)
    } else {
        let mut aborted = false;
        let j = loop {
            let e = evidence(plan, observer, began.mono, acted, failover_from.as_ref());
            let j = judge::judge(&e, Instant::now());
            if j.done() {
                break j;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    aborted = true;
                    break j;
                }
                _ = tokio::time::sleep(LOOK_EVERY) => {}
            }
        };
        (Some(j), aborted)
    };
    run.store = Some(store_report(
        plan,
        observer,
        began,
        baseline.as_ref(),
        judgement.as_ref(),
        secrets,
    ));
    run.apps = apps_report(plan, observer, began, judgement.as_ref(), secrets);
    let (result, reason) = verdict(plan, failed, judgement.as_ref(), aborted, &run.apps);
    observer.say(
        store,
        &format!(
            "drill {number}: {}{}",
            result.shout(),
            reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
    );
    run.result = result;
    run.reason = reason;
    run
}

/// A drill's outcome and, unless it passed, why.
fn verdict(
    plan: &Plan,
    failed: Option<(FailureKind, String)>,
    judgement: Option<&Judgement>,
    aborted: bool,
    apps: &[AppReport],
) -> (Outcome, Option<String>) {
    if let Some((kind, message)) = failed {
        let outcome = if kind == FailureKind::Interrupted {
            Outcome::Aborted
        } else {
            Outcome::NotPerformed
        };
        return (outcome, Some(format!("the action failed: {message}")));
    }
    let wait = humantime::format_duration(plan.timing.restore_timeout);
    match judgement.map(|j| j.store) {
        Some(StoreVerdict::NotBack) => {
            return (
                Outcome::Failed,
                Some(format!("the store did not come back within {wait}")),
            );
        }
        Some(StoreVerdict::NoFailover) => {
            return (
                Outcome::NotPerformed,
                Some(format!(
                    "no failover seen: no other primary answered the canary within {wait}"
                )),
            );
        }
        _ => {}
    }
    let not_recovered: Vec<&str> = apps
        .iter()
        .filter(|a| a.result == AppResult::NotRecovered)
        .map(|a| a.name.as_str())
        .collect();
    if !not_recovered.is_empty() {
        return (
            Outcome::Failed,
            Some(format!(
                "{} did not recover within {}",
                not_recovered.join(", "),
                if not_recovered.len() == 1 {
                    "its deadline"
                } else {
                    "their deadlines"
                }
            )),
        );
    }
    if aborted {
        return (
            Outcome::Aborted,
            Some("interrupted (Ctrl-C) before every app was judged".into()),
        );
    }
    (Outcome::Passed, None)
}

fn store_report(
    plan: &Plan,
    observer: &Observer,
    began: Began,
    baseline: Option<&crate::model::Identity>,
    judgement: Option<&Judgement>,
    secrets: &Secrets,
) -> StoreReport {
    let seen = observer.store(&plan.store.name);
    let (state, over) = match judgement.map(|j| j.store) {
        Some(StoreVerdict::Back { over }) => (StoreState::Back, Some(began.offset(over))),
        Some(StoreVerdict::NotBack) => (StoreState::NotBack, None),
        Some(StoreVerdict::NoFailover) => (StoreState::NoFailover, None),
        _ => (StoreState::Unsettled, None),
    };
    StoreReport {
        state,
        over_at_s: over,
        outages: seen
            .outages
            .iter()
            .map(|o| OutageView {
                lost_at_s: began.offset(o.lost),
                restored_at_s: o.restored.as_ref().map(|(t, _)| began.offset(*t)),
                cause: o.cause,
                detail: secrets.scrub(&o.detail),
                report: o.restored.as_ref().map(|(_, r)| {
                    let mut r = (**r).clone();
                    r.reason = secrets.scrub(&r.reason);
                    r
                }),
            })
            .collect(),
        failovers: seen
            .failovers
            .iter()
            .map(|f| FailoverView {
                at_s: began.offset(f.at),
                source: f.source,
                from: f.from.clone(),
                to: f.to.clone(),
            })
            .collect(),
        before: baseline.map(ServerView::of),
        after: seen.identity.as_ref().map(ServerView::of),
    }
}

fn app_report(
    app: &crate::config::Target,
    result: AppResult,
    unhealthy_at: Option<f64>,
    observer: &Observer,
    secrets: &Secrets,
) -> AppReport {
    let last_error = match result {
        AppResult::NotRecovered | AppResult::NotJudged => observer.last_error(&app.name),
        _ => None,
    };
    AppReport {
        name: app.name.clone(),
        url: app.url.redacted(),
        recovery_deadline: app.recovery_deadline,
        result,
        lag: None,
        lag_min: None,
        unhealthy_at_s: unhealthy_at,
        last_error: last_error.map(|e| secrets.scrub(&e)),
    }
}

fn apps_report(
    plan: &Plan,
    observer: &Observer,
    began: Began,
    judgement: Option<&Judgement>,
    secrets: &Secrets,
) -> Vec<AppReport> {
    plan.apps
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let j = judgement.and_then(|j| j.apps.get(i));
            let unhealthy = j.and_then(|j| j.first_unhealthy).map(|t| began.offset(t));
            let verdict = j.map_or(AppVerdict::NotJudged, |j| j.verdict);
            let result = match verdict {
                AppVerdict::Unaffected => AppResult::Unaffected,
                AppVerdict::Recovered { .. } => AppResult::Recovered,
                AppVerdict::NotRecovered => AppResult::NotRecovered,
                AppVerdict::Pending | AppVerdict::NotJudged => AppResult::NotJudged,
            };
            let mut r = app_report(a, result, unhealthy, observer, secrets);
            match verdict {
                AppVerdict::Unaffected => {
                    r.lag = Some(Duration::ZERO);
                    r.lag_min = Some(Duration::ZERO);
                }
                AppVerdict::Recovered { lag, lag_min } => {
                    r.lag = Some(lag);
                    r.lag_min = Some(lag_min);
                }
                _ => {}
            }
            r
        })
        .collect()
}
