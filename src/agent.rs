//! The supervisor: starts the HTTP listener and one canary task per target,
//! restarts a canary that panics (and counts it), applies a reloaded
//! configuration (SIGHUP: added targets start, removed ones stop and lose
//! their series, unchanged ones keep their connection), and on shutdown lets
//! every canary close its connection and flushes OTLP export, all within the
//! 5 s budget.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::AttemptBudget;
use crate::canary::RunCanary;
use crate::config::otlp::SettingError;
use crate::config::{Config, ConfigError, OtlpSettings, ProcessEnv, Split, Target, TargetSource};
use crate::drill::service::DrillService;
use crate::lag::SchedulingLag;
use crate::listener::{AppState, Drills, Limits, serve};
use crate::model::TargetInfo;
use crate::stores::with_store;
use crate::telemetry::Recorder;
use crate::telemetry::otlp::OtlpError;

/// How long canaries get to close politely on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The whole shutdown: canaries, OTLP flush, listener (SPEC: exit within 5 s).
const SHUTDOWN_BUDGET: Duration = Duration::from_millis(4500);

/// How often app recovery deadlines are checked between events.
const APP_DEADLINE_TICK: Duration = Duration::from_millis(250);

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("agent.tls.{key}: {reason}")]
    Tls { key: &'static str, reason: String },
    #[error("OTLP export: {0}")]
    Otlp(#[from] OtlpError),
    #[error("OTLP export: {0}")]
    OtlpSetting(#[from] SettingError),
}

/// Reload requests (one message per SIGHUP) and how to read the new
/// configuration.
pub struct Reloads {
    pub requests: mpsc::Receiver<()>,
    pub load: Box<dyn Fn() -> Result<Config, ConfigError> + Send>,
}

/// A target the agent watches now.
struct Running {
    target: Target,
    info: Arc<TargetInfo>,
    /// Stops this canary alone.
    stop: CancellationToken,
    task: Id,
    /// Panics in a row (reset after [`PANIC_MEMORY`] without one), and the
    /// last one.
    panics: u32,
    last_panic: Option<Instant>,
}

/// A canary that has not panicked for this long starts its restart delays
/// from the beginning again.
const PANIC_MEMORY: Duration = Duration::from_secs(600);

/// How long a canary that panicked `panics` times in a row waits before it
/// runs again: 1 s, doubling, at most a minute. A canary that panics at
/// once must not turn into a connection storm.
fn panic_delay(panics: u32) -> Duration {
    Duration::from_secs(1u64 << panics.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// The canary tasks and what they belong to.
struct Canaries {
    recorder: Arc<Recorder>,
    /// Every canary's connection attempts draw from it.
    budget: Arc<AttemptBudget>,
    /// The agent's own lateness, which every canary asks about.
    lag: Arc<SchedulingLag>,
    /// Parent of every canary's own token.
    stop: CancellationToken,
    set: JoinSet<()>,
    by_task: HashMap<Id, String>,
    running: HashMap<String, Running>,
    /// Canaries told to stop whose series go once their task has ended.
    leaving: HashMap<Id, Arc<TargetInfo>>,
}

impl Canaries {
    fn start(&mut self, t: &Target) {
        let info = t.info();
        self.recorder
            .add_target(&info, &t.depends_on, t.recovery_deadline);
        if let TargetSource::Env(var) = &t.source {
            tracing::info!(target = %t.name, variable = %var, url = %t.url, "target discovered from the environment");
        }
        let stop = self.stop.child_token();
        let task = self.spawn(t, &info, &stop, Duration::ZERO);
        self.running.insert(
            t.name.clone(),
            Running {
                target: t.clone(),
                info,
                stop,
                task,
                panics: 0,
                last_panic: None,
            },
        );
    }

    /// Runs a target's canary after `delay` (unless stopped first).
    fn spawn(
        &mut self,
        t: &Target,
        info: &Arc<TargetInfo>,
        stop: &CancellationToken,
        delay: Duration,
    ) -> Id {
        let run = RunCanary {
            info: info.clone(),
            settings: t.settings,
            sink: self.recorder.sink_for(info),
            budget: self.budget.clone(),
            lag: self.lag.clone(),
            shutdown: stop.clone(),
        };
        let t = t.clone();
        let stopped = stop.clone();
        let id = self
            .set
            .spawn(async move {
                tokio::select! {
                    _ = stopped.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                with_store(t.spec(), &t.options, run).await
            })
            .id();
        self.by_task.insert(id, info.name.clone());
        id
    }

    /// Stops a canary; its series are removed when its task has ended.
    fn remove(&mut self, name: &str) {
        let Some(r) = self.running.remove(name) else {
            return;
        };
        r.stop.cancel();
        self.by_task.remove(&r.task);
        self.leaving.insert(r.task, r.info);
    }

    /// A task ended: forget a leaving canary, restart a panicked one.
    fn ended(&mut self, id: Id, panicked: bool) {
        if let Some(info) = self.leaving.remove(&id) {
            self.recorder.remove_target(&info);
            return;
        }
        let Some(name) = self.by_task.remove(&id) else {
            return;
        };
        if !panicked {
            return;
        }
        let Some(r) = self.running.get_mut(&name) else {
            return;
        };
        let now = Instant::now();
        if r.last_panic.is_none_or(|t| now - t > PANIC_MEMORY) {
            r.panics = 0;
        }
        r.panics += 1;
        r.last_panic = Some(now);
        let delay = panic_delay(r.panics);
        tracing::error!(target = %name, panics = r.panics, "canary task panicked: restarting it in {}", humantime::format_duration(delay));
        let (t, info, stop) = (r.target.clone(), r.info.clone(), r.stop.clone());
        self.recorder.canary_restarted(&info);
        let id = self.spawn(&t, &info, &stop, delay);
        if let Some(r) = self.running.get_mut(&name) {
            r.task = id;
        }
    }

    /// Says what the agent now watches of its shard.
    fn applied(&self, split: &Split) {
        self.recorder
            .set_shard(&split.shard.to_string(), split.kept.len());
        tracing::info!(shard = %split.shard, targets = split.kept.len(), left_to_other_shards = split.left, "target list applied");
    }

    /// Applies a new target list: unchanged targets keep their canary.
    fn apply(&mut self, targets: &[Target]) {
        let gone: Vec<String> = self
            .running
            .iter()
            .filter(|(name, r)| {
                targets
                    .iter()
                    .all(|t| &t.name != *name || !t.runs_as(&r.target))
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in &gone {
            let changed = targets.iter().any(|t| &t.name == name);
            tracing::info!(target = %name, "{}", if changed { "target changed: restarting its canary" } else { "target removed" });
            self.remove(name);
        }
        for t in targets {
            if !self.running.contains_key(&t.name) {
                if !gone.contains(&t.name) {
                    tracing::info!(target = %t.name, "target added");
                }
                self.start(t);
            }
        }
    }
}

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    mut reloads: Option<Reloads>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let tls = match &config.agent.tls {
        Some(files) => Some(
            crate::tls::server_config(files)
                .map_err(|(key, reason)| AgentError::Tls { key, reason })?,
        ),
        None => None,
    };
    let listener = TcpListener::bind(config.agent.listen)
        .await
        .map_err(|source| AgentError::Listen {
            addr: config.agent.listen,
            source,
        })?;
    let listen = listener.local_addr().unwrap_or(config.agent.listen);
    let otlp = OtlpSettings::resolve(config.otlp.as_ref(), &ProcessEnv)?;
    let recorder = Arc::new(Recorder::with_otlp(otlp.as_ref())?);
    if let Some(o) = &otlp {
        tracing::info!(endpoint = %crate::telemetry::otlp::redact_endpoint(&o.endpoint), protocol = o.transport.as_str(), traces = o.traces, metrics = o.metrics, "OTLP export on");
    }
    let (files, first) = crate::sources::start(&config);
    let drills = config
        .drills
        .enabled
        .then(|| Arc::new(DrillService::new(recorder.clone(), &config, &first.kept)));
    let ready = Arc::new(AtomicBool::new(false));
    let http_stop = CancellationToken::new();
    let mut http = JoinSet::new();
    http.spawn(serve(
        listener,
        tls,
        config.agent.basic_auth.clone(),
        AppState {
            recorder: recorder.clone(),
            ready: ready.clone(),
            drills: drills.clone().map(|d| d as Arc<dyn Drills>),
        },
        Limits::for_targets(config.targets.len()),
        http_stop.clone(),
    ));
    let lag = recorder.lag();
    http.spawn({
        let (lag, stop) = (lag.clone(), http_stop.clone());
        async move {
            lag.run(stop).await;
            Ok(())
        }
    });
    tracing::info!(%listen, tls = config.agent.tls.is_some(), basic_auth = config.agent.basic_auth.is_some(), drills = config.drills.enabled, targets = first.kept.len(), shard = %first.shard, left_to_other_shards = first.left, version = crate::model::VERSION, "dbcanary listening");
    if config.uses_local_defaults() {
        tracing::info!("no targets configured or discovered: watching the local default ports");
    }

    let mut canaries = Canaries {
        recorder,
        budget: Arc::new(AttemptBudget::new(config.agent.attempts_per_second)),
        lag,
        stop: CancellationToken::new(),
        set: JoinSet::new(),
        by_task: HashMap::new(),
        running: HashMap::new(),
        leaving: HashMap::new(),
    };
    for t in &first.kept {
        canaries.start(t);
    }
    canaries.applied(&first);
    ready.store(true, Ordering::Release);
    // One task keeps the target list current (target files, and each
    // reloaded configuration): every new list it publishes is applied here.
    let (mains, main_rx) = watch::channel(Arc::new(config.clone()));
    let (plans_tx, mut plans) = watch::channel(Arc::new(first));
    let mut sources = JoinSet::new();
    sources.spawn(crate::sources::watch(
        files,
        main_rx,
        plans_tx,
        shutdown.clone(),
    ));
    let mut current = config;
    // App recovery deadlines pass without any event: check them on a tick
    // too (events, scrapes and API reads check them as well), and only when
    // there are apps: an idle agent does not wake up for nothing.
    let mut deadlines = tokio::time::interval(APP_DEADLINE_TICK);
    deadlines.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        let apps = canaries.recorder.has_apps();
        let reload = async {
            match reloads.as_mut() {
                Some(r) => r.requests.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // First: the sources task ends on the same token, and its end
            // is not news then.
            biased;
            _ = shutdown.cancelled() => break,
            _ = deadlines.tick(), if apps => canaries.recorder.check_apps(),
            Some(()) = reload => {
                let Some(r) = reloads.as_ref() else { continue };
                match (r.load)().map_err(|e| e.to_string()).and_then(|new| refuse_reload(&current, new)) {
                    Ok(new) => {
                        if new.agent.listen != current.agent.listen {
                            tracing::warn!(old = %current.agent.listen, new = %new.agent.listen, "agent.listen changes only on restart");
                        }
                        if new.agent.tls != current.agent.tls || new.agent.basic_auth != current.agent.basic_auth {
                            tracing::warn!("agent.tls and agent.basic_auth change only on restart");
                        }
                        if new.otlp != current.otlp {
                            tracing::warn!("[otlp] changes only on restart");
                        }
                        if new.drills != current.drills {
                            tracing::warn!("[drills] changes only on restart");
                        }
                        for w in &new.warnings {
                            tracing::warn!("{w}");
                        }
                        tracing::info!(targets = new.targets.len(), "configuration reloaded");
                        current = new;
                    }
                    Err(reason) => tracing::error!(error = %reason, "configuration reload refused; the previous configuration keeps running"),
                }
                // Applied once the target files were read again with it.
                mains.send_replace(Arc::new(current.clone()));
            }
            Ok(()) = plans.changed() => {
                let plan = plans.borrow_and_update().clone();
                canaries.apply(&plan.kept);
                if let Some(d) = &drills {
                    d.set_targets(&current, &plan.kept);
                }
                canaries.applied(&plan);
            }
            Some(ended) = sources.join_next() => {
                tracing::error!(error = ?ended.err(), "the target list is no longer kept current (reloads and target files are not applied); restart the agent");
            }
            Some(done) = canaries.set.join_next_with_id() => {
                match done {
                    Ok((id, ())) => canaries.ended(id, false),
                    Err(e) => canaries.ended(e.id(), e.is_panic()),
                }
            }
        }
    }

    tracing::info!("shutting down");
    let began = std::time::Instant::now();
    // A drill running ends "aborted" while its canaries still run.
    if let Some(d) = &drills {
        d.stop().await;
    }
    // The sources task stops on the same token.
    let _ = tokio::time::timeout(Duration::from_secs(1), sources.join_next()).await;
    let recorder = canaries.recorder.clone();
    canaries.stop.cancel();
    if tokio::time::timeout(SHUTDOWN_GRACE, async {
        while canaries.set.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!("some canaries did not stop in time; aborting them");
        canaries.set.shutdown().await;
    }
    if recorder.exports() {
        // What the canaries' last events produced (an open outage's span
        // ends with status error) goes out now, in what is left of the
        // budget; the flush blocks, so it runs off the async workers.
        let budget = SHUTDOWN_BUDGET
            .saturating_sub(began.elapsed())
            .clamp(Duration::from_millis(300), Duration::from_secs(2));
        let flush = tokio::task::spawn_blocking(move || recorder.shutdown_export(budget));
        if tokio::time::timeout(budget + Duration::from_millis(200), flush)
            .await
            .is_err()
        {
            tracing::warn!("OTLP flush did not finish in time");
        }
    }
    http_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), http.join_next()).await;
    Ok(())
}

/// A reloaded configuration that would silently stop watching: one that
/// falls back to the local default ports (an empty file, as a config tool
/// that truncates before it writes leaves for a moment), or one whose
/// targets are none of those it had (another file), unless those were the
/// local defaults. Such a change needs a
/// restart. This compares the main configuration only (every shard's
/// targets): the target files change on their own, file by file, and a
/// main file without targets (they all come from target files) or one that
/// gives up its own to target files is no such change.
fn refuse_reload(current: &Config, new: Config) -> Result<Config, String> {
    if new.uses_local_defaults() && !current.uses_local_defaults() {
        return Err(
            "it configures no target (and would fall back to the local default ports); restart the agent to apply it".into(),
        );
    }
    // The local defaults give way to the first real targets (the file of a
    // fresh install, filled in).
    if !current.targets.is_empty()
        && !current.uses_local_defaults()
        && !new.targets.is_empty()
        && !current
            .targets
            .iter()
            .any(|t| new.targets.iter().any(|n| n.name == t.name))
    {
        return Err(format!(
            "it keeps none of the {} running targets; restart the agent to replace them all",
            current.targets.len()
        ));
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_canary_waits_longer_each_time_up_to_a_minute() {
        let delays: Vec<u64> = (1..=9).map(|n| panic_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
