//! The actions a drill performs on a store, one file per store (and one for
//! `--exec`): each opens its own admin connection with the drill credential
//! (never the canary's connection), bounds every call by [`ADMIN_TIMEOUT`],
//! and says what it did in one line, or fails with a classified error. No
//! message carries a password: the report scrubs them once more anyway.

use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::model::{AttemptResult, ConnectResult, Identity, StoreKind};

use super::plan::{Action, Plan};
use super::redact::Secrets;

mod exec;
mod mongodb;
mod mysql;
mod postgres;
mod redis;

pub use exec::ExecReport;

/// The bound of every admin call (connect, list, kill, step down).
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What kind of failure an action met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// No admin connection (refused, DNS, TLS, I/O).
    Connect,
    /// The credential was refused at login.
    Auth,
    /// Logged in, but not allowed to do it (a missing privilege).
    Permission,
    /// The server (or Sentinel) declined, saying why.
    Refused,
    /// No answer within the bound.
    Timeout,
    /// The `--exec` command failed (non-zero exit, or it could not start).
    Command,
    /// Ctrl-C during the action.
    Interrupted,
    /// It found nothing to do (kill-clients with no client to kill).
    NoEffect,
    /// What the action needs is not known (e.g. which master the canary is
    /// on).
    Unknown,
}

/// A failed action.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ActionError {
    pub kind: FailureKind,
    /// Free of credentials.
    pub message: String,
    /// The `--exec` command's outcome, when it ran.
    pub exec: Option<Box<ExecReport>>,
}

impl ActionError {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            exec: None,
        }
    }

    /// A failed connection attempt of a store's own classification.
    fn connect(result: AttemptResult, what: &str, message: &str) -> Self {
        let kind = if result == AttemptResult::Connect(ConnectResult::Auth) {
            FailureKind::Auth
        } else if result == AttemptResult::Connect(ConnectResult::Timeout) {
            FailureKind::Timeout
        } else {
            FailureKind::Connect
        };
        Self::new(kind, format!("cannot connect to {what}: {message}"))
    }

    /// Says which connections were already killed when this error stopped
    /// kill-clients: the drill did part of its work.
    fn after(mut self, killed: &[String]) -> Self {
        if !killed.is_empty() {
            self.message
                .push_str(&format!(" (after killing {})", some_of(killed)));
        }
        self
    }

    fn timeout(what: &str) -> Self {
        Self::new(
            FailureKind::Timeout,
            format!(
                "{what} did not answer within {}",
                humantime::format_duration(ADMIN_TIMEOUT)
            ),
        )
    }
}

/// A successful action.
#[derive(Debug, Clone)]
pub struct ActionDone {
    /// What was done, in one line.
    pub detail: String,
    pub exec: Option<Box<ExecReport>>,
}

impl ActionDone {
    fn said(detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
            exec: None,
        }
    }
}

/// What an action gets to work with.
pub struct ActionCtx<'a> {
    pub plan: &'a Plan,
    /// Who answers the store's canary now: its connection id (spared by
    /// kill-clients), the master it is on (Sentinel).
    pub canary: Option<&'a Identity>,
    /// Which drill of the plan this is (1-based), for `--exec`.
    pub number: u32,
    pub secrets: &'a Secrets,
    pub shutdown: &'a CancellationToken,
}

impl ActionCtx<'_> {
    /// The canary's connection name (Redis `CLIENT SETNAME`, PostgreSQL
    /// `application_name`, MySQL `program_name`), which kill-clients spares.
    fn canary_name(&self) -> String {
        format!("dbcanary:{}", self.plan.store.name)
    }

    /// The name the drill's own admin connection announces.
    fn admin_name(&self) -> String {
        format!("dbcanary-drill:{}", self.plan.store.name)
    }

    /// A detail of the canary's identity (`connection_id`, `backend_pid`).
    fn canary_detail(&self, key: &str) -> Option<&str> {
        self.canary
            .and_then(|i| i.details.get(key))
            .map(String::as_str)
    }
}

/// Performs the plan's action once, stopping early on Ctrl-C.
pub async fn perform(ctx: &ActionCtx<'_>) -> Result<ActionDone, ActionError> {
    let kind = ctx.plan.store.kind();
    let work = async {
        match (&ctx.plan.action, kind) {
            (Action::Exec { .. }, _) => exec::run(ctx).await,
            (Action::KillClients { .. }, StoreKind::Redis | StoreKind::RedisSentinel) => {
                redis::kill_clients(ctx).await
            }
            (Action::KillClients { .. }, StoreKind::Mysql) => mysql::kill_clients(ctx).await,
            (Action::KillClients { .. }, StoreKind::Postgresql) => {
                postgres::kill_clients(ctx).await
            }
            (Action::Failover, StoreKind::RedisSentinel) => redis::sentinel_failover(ctx).await,
            (Action::Failover, StoreKind::Mongodb) => mongodb::step_down(ctx).await,
            (Action::Shutdown, StoreKind::Redis | StoreKind::RedisSentinel) => {
                redis::shutdown(ctx).await
            }
            (action, kind) => Err(ActionError::new(
                FailureKind::Unknown,
                format!("{} is not available for {kind}", action.name().as_str()),
            )),
        }
    };
    tokio::select! {
        r = work => r,
        // The exec action handles Ctrl-C itself (it kills its command).
        _ = ctx.shutdown.cancelled(), if !matches!(ctx.plan.action, Action::Exec { .. }) => {
            Err(ActionError::new(FailureKind::Interrupted, "interrupted (Ctrl-C) during the action"))
        }
    }
}

/// Awaits an admin call within [`ADMIN_TIMEOUT`].
async fn bounded<T>(what: &str, f: impl IntoFuture<Output = T>) -> Result<T, ActionError> {
    tokio::time::timeout(ADMIN_TIMEOUT, f)
        .await
        .map_err(|_| ActionError::timeout(what))
}

/// `n thing` / `n things`.
fn count(n: usize, thing: &str) -> String {
    format!("{n} {thing}{}", if n == 1 { "" } else { "s" })
}

/// A few items of a list, for a one-line detail.
fn some_of(items: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut s = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        s.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    s
}

/// What kill-clients did: the connections it killed, whether it saw the
/// canary's (which it spared, as it says in `spared`). Killing nothing is a
/// drill not performed: nothing happened to any app. `blind` says why the
/// drill's user may not see the others, when the canary's was not seen
/// either.
fn killed(
    killed: &[String],
    canary_seen: bool,
    spared: &str,
    blind: &str,
) -> Result<ActionDone, ActionError> {
    if killed.is_empty() {
        let mut message = format!(
            "nothing was killed: no client connection was seen but those spared ({spared})"
        );
        if !canary_seen {
            message.push_str(&format!(", and not even the canary's: {blind}"));
        }
        return Err(ActionError::new(FailureKind::NoEffect, message));
    }
    let mut s = format!(
        "killed {} (sparing {spared}): {}",
        count(killed.len(), "client connection"),
        some_of(killed)
    );
    if !canary_seen {
        s.push_str("; the canary's own connection was not among them (is it connected elsewhere?)");
    }
    Ok(ActionDone::said(s))
}
