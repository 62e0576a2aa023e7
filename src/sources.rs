//! Where the agent's target list comes from, and the one task that keeps it
//! current: the main configuration (with the environment's targets) and the
//! `discovery.files`, split by the agent's shard. The task looks at the
//! files every `discovery.refresh_interval`, and at all of them again with
//! each configuration the agent hands it (one per SIGHUP); whenever what
//! this agent should watch may have changed it publishes the new list, and
//! the agent applies it, SIGHUP or file change alike, through the same path
//! (unchanged targets keep their canary).

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, ProcessEnv, Split, TargetFiles};

/// The first look at the target files, before the agent starts: what they
/// give, and what this agent watches. Refusals are logged.
pub fn start(main: &Config) -> (TargetFiles, Split) {
    let mut files = TargetFiles::new(main);
    let scan = files.scan(main, &ProcessEnv, true);
    log_refusals(&scan.errors);
    let split = files.watched(main);
    (files, split)
}

/// Logs a target file's refusal: an operator must fix the file.
fn log_refusals(errors: &[ConfigError]) {
    for e in errors {
        tracing::error!(file = %e.file, key = %e.key, reason = %e.reason, "target file refused; it keeps the targets it gave before");
    }
}

/// Keeps the target list current until `stop`: looks at the files on a
/// tick (when there are any), and at every file again for each new main
/// configuration in `mains`; publishes each new list in `plans`.
pub async fn watch(
    mut files: TargetFiles,
    mut mains: watch::Receiver<Arc<Config>>,
    plans: watch::Sender<Arc<Split>>,
    stop: CancellationToken,
) {
    let mut main = mains.borrow_and_update().clone();
    let mut tick = ticker(&main);
    loop {
        let force = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick(), if !files.is_empty() => false,
            changed = mains.changed() => {
                if changed.is_err() {
                    return;
                }
                let new = mains.borrow_and_update().clone();
                if new.discovery_refresh != main.discovery_refresh {
                    tick = ticker(&new);
                }
                main = new;
                true
            }
        };
        // Reading files may block (a slow mount): off the async workers.
        let config = main.clone();
        let scan = tokio::task::spawn_blocking(move || {
            let scan = files.scan(&config, &ProcessEnv, force);
            (files, scan)
        });
        let (back, scan) = tokio::select! {
            _ = stop.cancelled() => return,
            done = scan => match done {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!(error = %e, "reading the target files failed: the targets stay as they are until the agent restarts");
                    return;
                }
            },
        };
        files = back;
        log_refusals(&scan.errors);
        if force || scan.changed {
            plans.send_replace(Arc::new(files.watched(&main)));
        }
    }
}

/// The refresh tick of `main`, its first tick one period from now.
fn ticker(main: &Config) -> tokio::time::Interval {
    let period = main.discovery_refresh;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}
