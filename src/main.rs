//! The `dbcanary` binary: command line → config → agent, check, watch or
//! drill → exit code (0 ok, 1 a check failed or the agent could not start,
//! 2 bad configuration or arguments; `drill` adds 3, see its module).
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

use dbcanary::cli::{Cli, Command, ConfigCommand};
use dbcanary::config::{self, Config, ConfigError, LogFormat, ProcessEnv, Split, TargetSource};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // rustls with the ring provider, for every TLS connection of the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dbcanary: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(dispatch(cli));
    // Do not wait on a blocking task still flushing OTLP past the budget.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}

fn load(cli: &Cli) -> Result<Config, ExitCode> {
    load_with(cli.run.config.as_deref(), shard_arg(cli).as_deref()).map_err(|e| {
        eprintln!("dbcanary: configuration refused: {e}");
        ExitCode::from(2)
    })
}

/// The configuration, with the command line's `--shard` over `agent.shard`.
fn load_with(file: Option<&Path>, shard: Option<&str>) -> Result<Config, ConfigError> {
    let mut c = config::load(file, &ProcessEnv)?;
    if let Some(s) = shard {
        c.agent.shard = config::Shard::parse(s, &ProcessEnv).map_err(|reason| ConfigError {
            file: "command line".into(),
            key: "--shard".into(),
            reason,
        })?;
    }
    Ok(c)
}

/// The `--shard` of the command given.
fn shard_arg(cli: &Cli) -> Option<String> {
    match &cli.command {
        None => cli.run.shard.shard.clone(),
        Some(Command::Run(r)) => r.shard.shard.clone().or(cli.run.shard.shard.clone()),
        Some(Command::Check(a)) => a.shard.shard.clone(),
        Some(Command::Config {
            command: ConfigCommand::Check(s),
        }) => s.shard.clone(),
        _ => None,
    }
}

/// What this shard keeps of the configuration's and the target files'
/// targets, for the commands that run once: a refused target file is a
/// configuration error there (the agent logs it and goes on).
fn watched(cfg: &Config) -> Result<Split, ExitCode> {
    let mut files = config::TargetFiles::new(cfg);
    let scan = files.scan(cfg, &ProcessEnv, true);
    for e in &scan.errors {
        eprintln!("dbcanary: configuration refused: {e}");
    }
    if scan.errors.is_empty() {
        Ok(files.watched(cfg))
    } else {
        Err(ExitCode::from(2))
    }
}

/// The agent's log writer: a thread of its own writes the lines to stderr,
/// in batches, so that a canary that logs (thousands at once when a server
/// takes their connections with it) does not wait for the write. No line is
/// dropped: at [`LOG_LINES_QUEUED`] lines waiting, the next one waits its
/// turn. The guard writes what is left when the agent ends.
fn agent_log_writer() -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_LINES_QUEUED)
        .thread_name("dbcanary-log")
        .finish(std::io::BufWriter::new(std::io::stderr()))
}

/// Log lines the agent's writer holds at most (a few MiB).
const LOG_LINES_QUEUED: usize = 16 << 10;

/// Logs to `writer` (stderr), filtered by `RUST_LOG` (`target=level`
/// directives, e.g. `dbcanary=debug,info`) or else by `default_level`. A
/// plain target filter rather than `EnvFilter`: no regex engine runs, which
/// keeps its code pages out of the agent's resident memory.
fn init_logs<W>(format: LogFormat, default_level: &str, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let default = || default_level.parse::<Targets>().unwrap_or_default();
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => v.parse::<Targets>().unwrap_or_else(|e| {
            eprintln!("dbcanary: RUST_LOG={v:?} ignored: {e}; logging at {default_level}");
            default()
        }),
        _ => default(),
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    let registry = tracing_subscriber::registry();
    match format {
        LogFormat::Text => registry.with(layer.with_filter(filter)).init(),
        LogFormat::Json => registry
            .with(
                layer
                    .json()
                    .flatten_event(true)
                    // The `target` field is the dbcanary target, as on /metrics;
                    // the module path would take the same key.
                    .with_target(false)
                    .with_filter(filter),
            )
            .init(),
    }
}

/// Cancels the token on SIGTERM or SIGINT; passes SIGHUP on as a reload
/// request (or ignores it, for commands that do not reload).
fn on_signals(token: CancellationToken, reload: Option<tokio::sync::mpsc::Sender<()>>) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => match &reload {
                    Some(tx) => {
                        tracing::info!("SIGHUP: reloading the configuration");
                        let _ = tx.try_send(());
                    }
                    None => tracing::debug!("SIGHUP ignored"),
                },
            }
        }
        token.cancel();
    });
}

async fn dispatch(cli: Cli) -> ExitCode {
    match &cli.command {
        None | Some(Command::Run(_)) => {
            let mut cfg = match load(&cli) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let listen = match &cli.command {
                Some(Command::Run(r)) => r.listen.or(cli.run.listen),
                _ => cli.run.listen,
            };
            if let Some(l) = listen {
                cfg.agent.listen = l;
            }
            let (writer, _written_at_exit) = agent_log_writer();
            init_logs(cfg.agent.log_format, "info", writer);
            for w in &cfg.warnings {
                tracing::warn!("{w}");
            }
            let token = CancellationToken::new();
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            on_signals(token.clone(), Some(tx));
            let file = cli.run.config.clone();
            let shard = shard_arg(&cli);
            let reloads = dbcanary::agent::Reloads {
                requests: rx,
                load: Box::new(move || {
                    let mut c = load_with(file.as_deref(), shard.as_deref())?;
                    if let Some(l) = listen {
                        c.agent.listen = l;
                    }
                    Ok(c)
                }),
            };
            match dbcanary::agent::run(cfg, Some(reloads), token).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        Some(Command::Check(args)) => {
            let mut cfg = match load(&cli) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logs(cfg.agent.log_format, "warn", std::io::stderr);
            for w in &cfg.warnings {
                tracing::warn!("{w}");
            }
            let split = match watched(&cfg) {
                Ok(s) => s,
                Err(code) => return code,
            };
            if let Some(name) = &args.target
                && !split.kept.iter().any(|t| &t.name == name)
            {
                let names: Vec<&str> = split.kept.iter().map(|t| t.name.as_str()).collect();
                let shard = if split.shard.count > 1 {
                    format!(" in shard {}", split.shard)
                } else {
                    String::new()
                };
                eprintln!(
                    "dbcanary: no target named {name:?}{shard}; the targets are: {}",
                    names.join(", ")
                );
                return ExitCode::from(2);
            }
            cfg.targets = split.kept;
            let rows = dbcanary::check::check(&cfg, args.target.as_deref()).await;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).unwrap_or_default()
                );
            } else {
                print!("{}", dbcanary::check::table(&rows));
            }
            if rows.iter().all(|r| r.ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Some(Command::Watch(args)) => {
            init_logs(LogFormat::Text, "error", std::io::stderr);
            let interval = match config::parse_duration(&args.interval) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    eprintln!("dbcanary: --interval must be greater than zero");
                    return ExitCode::from(2);
                }
                Err(e) => {
                    eprintln!("dbcanary: --interval: {e}");
                    return ExitCode::from(2);
                }
            };
            let deadline = match config::parse_duration(&args.recovery_deadline) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("dbcanary: --recovery-deadline: {e}");
                    return ExitCode::from(2);
                }
            };
            let targets = match dbcanary::watch::targets_with_apps(
                &args.urls,
                &args.apps,
                &args.depends_on,
                interval,
                deadline,
            ) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("dbcanary: {e}");
                    return ExitCode::from(2);
                }
            };
            let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
            let sink = Arc::new(dbcanary::watch::WatchSink::new(
                Box::new(std::io::stdout()),
                &names,
            ));
            let token = CancellationToken::new();
            on_signals(token.clone(), None);
            let summary = dbcanary::watch::run(targets, sink.clone(), token).await;
            print!("{summary}");
            let never = sink.never_up();
            if never.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!("dbcanary: never came up: {}", never.join(", "));
                ExitCode::from(1)
            }
        }
        Some(Command::Drill(args)) => {
            init_logs(LogFormat::Text, "error", std::io::stderr);
            let token = CancellationToken::new();
            on_signals(token.clone(), None);
            let code = dbcanary::drill::command::command(
                args,
                cli.run.config.as_deref(),
                &ProcessEnv,
                token,
            )
            .await;
            ExitCode::from(code)
        }
        Some(Command::Config {
            command: ConfigCommand::Check(_),
        }) => {
            let (cfg, split) = match load(&cli).and_then(|c| watched(&c).map(|s| (c, s))) {
                Ok(both) => both,
                Err(code) => return code,
            };
            // The targets files keep theirs: the TOML shows the main
            // configuration's that this shard keeps, and reads back as it.
            let own = split
                .kept
                .iter()
                .filter(|t| !matches!(t.source, TargetSource::TargetsFile(_)));
            let shown = Config {
                targets: own.cloned().collect(),
                ..cfg
            };
            print!("{}", config::effective_toml(&shown));
            for w in &shown.warnings {
                eprintln!("dbcanary: warning: {w}");
            }
            for t in &split.kept {
                eprintln!(
                    "dbcanary: target {} ({}) from {}",
                    t.name,
                    t.kind(),
                    t.source
                );
            }
            if split.shard.count > 1 {
                eprintln!(
                    "dbcanary: shard {} keeps {} of {} targets ({} left to the other shards)",
                    split.shard,
                    split.kept.len(),
                    split.kept.len() + split.left,
                    split.left
                );
            }
            let n = split.kept.len();
            eprintln!(
                "dbcanary: configuration OK ({n} target{})",
                if n == 1 { "" } else { "s" }
            );
            ExitCode::SUCCESS
        }
    }
}
