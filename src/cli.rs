//! Command-line definitions (SPEC "Command line").

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Canary connections to your databases: see what a long-lived client lives
/// through on restarts and failovers.
#[derive(Debug, Parser)]
#[command(name = "dbcanary", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Clone, Args, Default)]
pub struct RunArgs {
    /// Configuration file (TOML, or YAML by extension).
    #[arg(long, short, global = true, env = "DBCANARY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listen address for /metrics and the API (overrides agent.listen):
    /// `127.0.0.1:9838`, `[::1]:9838` or `localhost:9838`.
    #[arg(long, value_parser = crate::config::listen_addr)]
    pub listen: Option<SocketAddr>,
    #[command(flatten)]
    pub shard: ShardArg,
}

/// `--shard`, for the commands that read the target list.
#[derive(Debug, Clone, Args, Default)]
pub struct ShardArg {
    /// Keep only this shard's targets: "k/n", or "ordinal/n" (k from the host
    /// name's trailing -<digits>, as a StatefulSet names its pods); overrides
    /// agent.shard.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (the default).
    Run(RunOnly),
    /// Connect and probe every target once, print who answers; exit 1 if any fails.
    Check(CheckArgs),
    /// Ad-hoc canaries on URLs: one line per event, a summary on Ctrl-C.
    Watch(WatchArgs),
    /// Cause a fault on purpose and judge whether every app came back: exit
    /// 0 all recovered, 1 an app did not, 2 usage, 3 drill not performed.
    Drill(Box<crate::drill::DrillArgs>),
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Args)]
pub struct RunOnly {
    /// Listen address for /metrics and the API (overrides agent.listen):
    /// `127.0.0.1:9838`, `[::1]:9838` or `localhost:9838`.
    #[arg(long, value_parser = crate::config::listen_addr)]
    pub listen: Option<SocketAddr>,
    #[command(flatten)]
    pub shard: ShardArg,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Only this target.
    #[arg(long)]
    pub target: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub shard: ShardArg,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Store URLs to watch (redis://, redis+sentinel://, ...).
    #[arg(required = true)]
    pub urls: Vec<String>,
    /// Probe interval.
    #[arg(long, default_value = "1s")]
    pub interval: String,
    /// An application health URL (http:// or https://) that depends on every
    /// store given (or on those of --depends-on): the summary says how long
    /// after each store outage the app recovered. Repeatable.
    #[arg(long = "app", value_name = "URL")]
    pub apps: Vec<String>,
    /// A store URL (one of those given) the applications depend on, when
    /// they should not depend on all of them. Repeatable.
    #[arg(long = "depends-on", value_name = "URL")]
    pub depends_on: Vec<String>,
    /// How long after a store is back its applications may stay unhealthy
    /// before they count as not recovered.
    #[arg(long, default_value = "30s")]
    pub recovery_deadline: String,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print it with secrets redacted, and
    /// which targets this shard keeps.
    Check(ShardArg),
}
