//! `dbcanary drill` on the command line: the plan from the flags (and the
//! configuration), `--dry-run`, the confirmation nothing destructive
//! happens without, the drill's own fast canaries, progress lines on
//! stderr, and the report on stdout (text or `--json`) and in `--junit`.
//! Gives the exit code: 0 passed, 1 an app did not recover, 2 usage or
//! configuration, 3 the drill could not be performed (or was interrupted).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backoff::AttemptBudget;
use crate::canary::RunCanary;
use crate::config::{self, Env};
use crate::lag::SchedulingLag;
use crate::settings::DEFAULT_ATTEMPTS_PER_SECOND;
use crate::stores::with_store;

use super::args::DrillArgs;
use super::observe::Observer;
use super::plan::{BOTH, Plan};
use super::redact::Secrets;

/// Exit codes.
const USAGE: u8 = 2;
const NOT_PERFORMED: u8 = 3;

/// How long the canaries get to close once the drill is over.
const CLOSE_WITHIN: Duration = Duration::from_secs(3);

/// Runs `dbcanary drill` and returns its exit code. `config_file` is
/// `--config` (or `DBCANARY_CONFIG`); `shutdown` is cancelled by Ctrl-C.
pub async fn command(
    args: &DrillArgs,
    config_file: Option<&Path>,
    env: &dyn Env,
    shutdown: CancellationToken,
) -> u8 {
    let cfg = match (&args.url, config_file) {
        (Some(_), Some(_)) => {
            eprintln!("dbcanary: drill: {BOTH}");
            return USAGE;
        }
        (None, Some(file)) => match config::load(Some(file), env) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("dbcanary: configuration refused: {e}");
                return USAGE;
            }
        },
        _ => None,
    };
    let plan = match Plan::from_args(args, cfg.as_ref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("dbcanary: drill: {e}");
            return USAGE;
        }
    };
    let secrets = plan.secrets();
    if args.dry_run {
        let view = plan.view(&secrets);
        show(args.json, &view, &secrets, || {
            format!("{}dry run: nothing was done\n", view.text())
        });
        return 0;
    }
    if !args.yes
        && let Err(reason) = confirm(&plan, &secrets, &shutdown).await
    {
        eprintln!("dbcanary: drill: {reason}");
        return USAGE;
    }
    let progress_secrets = secrets.clone();
    let width = plan.names().iter().map(String::len).max().unwrap_or(0);
    let observer = Arc::new(Observer::new(
        &plan.names(),
        Box::new(move |who, text| {
            let now = chrono::Local::now().format("%H:%M:%S%.3f");
            let line = progress_secrets.scrub(text);
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{now} {who:<width$}  {line}");
        }),
    ));
    let canaries = shutdown.child_token();
    let budget = Arc::new(AttemptBudget::new(DEFAULT_ATTEMPTS_PER_SECOND));
    let lag = Arc::new(SchedulingLag::new());
    let mut set = JoinSet::new();
    set.spawn({
        let (lag, stop) = (lag.clone(), canaries.clone());
        async move { lag.run(stop).await }
    });
    for t in std::iter::once(&plan.store).chain(&plan.apps).cloned() {
        let run = RunCanary {
            info: t.info(),
            settings: t.settings,
            sink: observer.clone(),
            budget: budget.clone(),
            lag: lag.clone(),
            shutdown: canaries.clone(),
        };
        set.spawn(async move { with_store(t.spec(), &t.options, run).await });
    }
    let report = super::run(&plan, &observer, &(), &shutdown).await;
    canaries.cancel();
    let _ = tokio::time::timeout(CLOSE_WITHIN, async {
        while set.join_next().await.is_some() {}
    })
    .await;
    show(args.json, &report, &secrets, || report.text());
    let mut code = report.exit_code;
    if let Some(path) = &args.junit
        && let Err(e) = std::fs::write(path, report.junit())
    {
        eprintln!("dbcanary: drill: cannot write {}: {e}", path.display());
        if code == 0 {
            code = NOT_PERFORMED;
        }
    }
    code
}

/// Prints `value` as JSON or as its text on stdout, every known secret
/// masked once more (its strings were scrubbed when they were made).
fn show<T: Serialize>(json: bool, value: &T, secrets: &Secrets, text: impl FnOnce() -> String) {
    if json {
        let mut v = serde_json::to_value(value).unwrap_or_default();
        secrets.mask_json(&mut v);
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!("{}", secrets.mask(&text()));
    }
}

/// Asks on the terminal before anything is done; without a terminal (and
/// without `--yes`), refuses.
async fn confirm(
    plan: &Plan,
    secrets: &Secrets,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let what = format!(
        "{} on {} ({})",
        plan.action.name().as_str(),
        plan.store.name,
        plan.store.url.endpoint()
    );
    let does = secrets.mask(&plan.describe());
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Err(format!(
            "refusing to run {what} without --yes (there is no terminal to ask): nothing was done. \
             What it would do: {does}"
        ));
    }
    eprint!(
        "dbcanary drill: {what}, {} time{}:\n  {does}\nType yes to go on: ",
        plan.repeat,
        if plan.repeat == 1 { "" } else { "s" }
    );
    let _ = std::io::stderr().flush();
    // A blocking read cannot be cancelled: on Ctrl-C the answer is simply
    // not awaited, and the runtime's bounded shutdown leaves the thread.
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    });
    tokio::select! {
        a = answer => match a {
            Ok(Ok(line)) if line.trim() == "yes" => Ok(()),
            _ => Err("not confirmed: nothing was done".into()),
        },
        _ = shutdown.cancelled() => Err("interrupted: nothing was done".into()),
    }
}
