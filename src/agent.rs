//! The supervisor: starts the HTTP listener and one canary task per target,
//! restarts a canary that panics (and counts it), and on shutdown lets every
//! canary close its connection within the time budget.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Target, TargetSource};
use crate::events::{EventSink, TargetInfo};
use crate::http::{AppState, serve};
use crate::stores::run_canary;
use crate::telemetry::Recorder;

/// How long canaries get to close politely on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// The static facts of a target that its events carry.
pub fn target_info(t: &Target) -> Arc<TargetInfo> {
    Arc::new(TargetInfo {
        name: t.name.clone(),
        store: t.kind,
        endpoint: t.url.endpoint(),
    })
}

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AgentError> {
    let listener = TcpListener::bind(config.agent.listen)
        .await
        .map_err(|source| AgentError::Listen {
            addr: config.agent.listen,
            source,
        })?;
    let listen = listener.local_addr().unwrap_or(config.agent.listen);
    let recorder = Arc::new(Recorder::new());
    let ready = Arc::new(AtomicBool::new(false));
    let http_stop = CancellationToken::new();
    let mut http = JoinSet::new();
    http.spawn(serve(
        listener,
        AppState {
            recorder: recorder.clone(),
            ready: ready.clone(),
        },
        http_stop.clone(),
    ));
    tracing::info!(%listen, targets = config.targets.len(), version = crate::telemetry::VERSION, "dbcanary listening");
    if config.otlp.as_ref().is_some_and(|o| !o.endpoint.is_empty()) {
        tracing::warn!(
            "[otlp] is configured, but OTLP export is not available in this version yet: nothing is exported"
        );
    }
    if config.uses_local_defaults() {
        tracing::info!("no targets configured or discovered: watching the local default ports");
    }

    let canary_stop = CancellationToken::new();
    let mut canaries = JoinSet::new();
    let mut by_task: HashMap<Id, usize> = HashMap::new();
    let infos: Vec<Arc<TargetInfo>> = config.targets.iter().map(target_info).collect();
    for (i, t) in config.targets.iter().enumerate() {
        let supported = t.kind.supported();
        recorder.add_target(&infos[i], supported);
        if let TargetSource::Env(var) = &t.source {
            tracing::info!(target_name = %t.name, variable = %var, url = %t.url, "target discovered from the environment");
        }
        if !supported {
            tracing::error!(target_name = %t.name, store = %t.kind, "store not supported yet by this version: target not watched");
            continue;
        }
        let id = spawn(&mut canaries, t, &infos[i], &recorder, &canary_stop);
        by_task.insert(id, i);
    }
    ready.store(true, Ordering::Release);

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(done) = canaries.join_next_with_id() => {
                let (id, panicked) = match done {
                    Ok((id, ())) => (id, false),
                    Err(e) => (e.id(), e.is_panic()),
                };
                let Some(i) = by_task.remove(&id) else { continue };
                if panicked {
                    tracing::error!(target_name = %config.targets[i].name, "canary task panicked: restarting it");
                    recorder.canary_restarted(&infos[i]);
                    let id = spawn(&mut canaries, &config.targets[i], &infos[i], &recorder, &canary_stop);
                    by_task.insert(id, i);
                }
            }
        }
    }

    tracing::info!("shutting down");
    canary_stop.cancel();
    if tokio::time::timeout(SHUTDOWN_GRACE, async {
        while canaries.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!("some canaries did not stop in time; aborting them");
        canaries.shutdown().await;
    }
    http_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), http.join_next()).await;
    Ok(())
}

fn spawn(
    set: &mut JoinSet<()>,
    t: &Target,
    info: &Arc<TargetInfo>,
    recorder: &Arc<Recorder>,
    stop: &CancellationToken,
) -> Id {
    let sink: Arc<dyn EventSink> = recorder.clone();
    set.spawn(run_canary(t.clone(), info.clone(), sink, stop.clone()))
        .id()
}
