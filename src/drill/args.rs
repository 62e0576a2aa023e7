//! The flags of `dbcanary drill` (SPEC "Command line"), here rather than in
//! `cli.rs` so that the drill's plan can be built from them and tested
//! without the rest of the command line.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

/// The defaults of the timing flags, as the command line writes them.
pub const INTERVAL: &str = "100ms";
pub const READY_TIMEOUT: &str = "30s";
pub const RESTORE_TIMEOUT: &str = "5m";
pub const SETTLE: &str = "1s";

/// What `--action` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionName {
    /// Drop every client connection but the canary's, without a restart.
    KillClients,
    /// Make a replica the primary: Sentinel `SENTINEL FAILOVER`, MongoDB
    /// `replSetStepDown`.
    Failover,
    /// Run `--exec CMD` (via `sh -c`).
    Exec,
    /// Run `--exec CMD` that restarts the store, or Redis `SHUTDOWN` with
    /// `--allow-shutdown`.
    Restart,
}

impl ActionName {
    /// The name as the command line writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KillClients => "kill-clients",
            Self::Failover => "failover",
            Self::Exec => "exec",
            Self::Restart => "restart",
        }
    }
}

/// `dbcanary drill`: cause a fault on purpose and judge whether every
/// application came back.
#[derive(Debug, Clone, Args)]
pub struct DrillArgs {
    /// The store to drill as a URL (redis://, redis+sentinel://, mysql://,
    /// postgresql://, mongodb://), instead of --config FILE --store NAME.
    #[arg(value_name = "URL")]
    pub url: Option<String>,
    /// With --config: the target (a store) to drill.
    #[arg(long, value_name = "NAME")]
    pub store: Option<String>,
    /// An application to judge: an http(s) health URL, or with --config the
    /// name of an http target. Repeatable. With --config and no --app: every
    /// http target that depends on the store.
    #[arg(long = "app", value_name = "NAME|URL")]
    pub apps: Vec<String>,
    /// The fault to cause.
    #[arg(long, value_enum)]
    pub action: ActionName,
    /// The command of --action exec or restart, run with `sh -c` on this
    /// machine.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// How long the --exec command may run before it is killed [default: 60s].
    #[arg(long, value_name = "D")]
    pub exec_timeout: Option<String>,
    /// The credential for the action (kill-clients, failover, SHUTDOWN), a URL
    /// of the same store, when the canary's user may not do it. Also read from
    /// DBCANARY_DRILL_URL; with --config, overrides the target's
    /// drill_url_env.
    #[arg(
        long,
        value_name = "URL",
        env = "DBCANARY_DRILL_URL",
        hide_env_values = true
    )]
    pub drill_url: Option<String>,
    /// kill-clients: only the connections of this user (Redis ACL user, MySQL
    /// user, PostgreSQL role).
    #[arg(long, value_name = "USER")]
    pub kill_user: Option<String>,
    /// kill-clients on PostgreSQL: only the backends with this
    /// application_name.
    #[arg(long, value_name = "NAME")]
    pub kill_application: Option<String>,
    /// --action restart on Redis without --exec: send SHUTDOWN (your
    /// supervisor must start the server again).
    #[arg(long)]
    pub allow_shutdown: bool,
    /// How many drills to run, one after the other.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub repeat: u32,
    /// Probe interval of the store's canary and of every app during the drill.
    #[arg(long, default_value = INTERVAL, value_name = "D")]
    pub interval: String,
    /// How long the store and every app may take to be healthy before a drill.
    #[arg(long, default_value = READY_TIMEOUT, value_name = "D")]
    pub ready_timeout: String,
    /// How long after the action the store may stay down (or the failover
    /// take) before the drill gives up on it.
    #[arg(long, default_value = RESTORE_TIMEOUT, value_name = "D")]
    pub restore_timeout: String,
    /// How long after the action a store outage still counts as caused by it.
    #[arg(long, default_value = SETTLE, value_name = "D")]
    pub settle: String,
    /// How long after the fault is over each app may take to recover
    /// [default: the app's recovery_deadline, 30s for a URL].
    #[arg(long, value_name = "D")]
    pub recovery_deadline: Option<String>,
    /// Do it without asking.
    #[arg(long)]
    pub yes: bool,
    /// Print what would be done on which server, and do nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as JUnit XML (one test case per app per drill).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}
