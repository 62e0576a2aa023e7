//! The one server-process helper every server handle of the harness is
//! built on (`redis-server`, `mariadbd`, `postgres`, the mockupdb members,
//! HAProxy, Prometheus, the agent itself): a process on a free loopback port
//! with its own temporary directory, started and awaited until it serves,
//! killed (SIGKILL), stopped and continued (SIGSTOP/SIGCONT), and started
//! again on the same port and directory (a restart).
//!
//! A server says only what differs, as a [`ServerKind`]: its settings, its
//! command line and how to tell that it serves. Everything about the process
//! (spawning, waiting with a deadline, failing loudly with its log, the
//! ground-truth [`Moment`]s) is written once, here. A store's handle is this
//! type with its kind (`pub type MariaDb = ServerProcess<Mariadbd>`), so
//! `port`, `pid()`, `kill()`, `pause()`, `resume()` and `start_again()` are
//! the same for every server; the store's module adds its own verbs
//! (`url()`, `kill_connection()`, ...) in an `impl` block of its own.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Moment, Proc, Signal, free_port, tail_lines};

/// What one kind of server is to the harness.
pub trait ServerKind {
    /// How long a start may take before the test fails.
    const READY_WITHIN: Duration;

    /// How often to look whether it serves yet: often, where the moment it
    /// first does is ground truth for an outage's end.
    const LOOK_EVERY: Duration = Duration::from_millis(5);

    /// The command that starts the server on `port`, with `dir` its own
    /// directory (data, configuration, logs).
    fn command(&self, port: u16, dir: &Path) -> Command;

    /// One bounded look: does the process just started (`proc`) serve on
    /// `port` yet? `proc` is there for servers that say so in their output.
    async fn ready(&mut self, port: u16, proc: &Proc) -> bool;

    /// What the server logged beyond its stdout and stderr (a log file in
    /// `dir`), for failure messages.
    fn log(&self, _dir: &Path) -> String {
        String::new()
    }

    /// After a SIGKILL of the server: forget what its process said.
    fn killed(&mut self) {}

    /// When the handle of a running server is dropped, before its process
    /// is killed: a server whose children would outlive a SIGKILL shuts
    /// them down here.
    fn dropped(&self, _dir: &Path) {}
}

/// One server process: killed (SIGKILL) when dropped, whatever its state.
pub struct ServerProcess<K: ServerKind> {
    /// The name of its output files and of failure messages.
    pub name: String,
    /// Its loopback port, the same across restarts.
    pub port: u16,
    /// What kind of server it is (its command-line settings, for one).
    pub kind: K,
    // (Fields drop in this order: the process goes before its directory.)
    proc: Option<Proc>,
    dir: tempfile::TempDir,
}

impl<K: ServerKind> ServerProcess<K> {
    /// A server with a free port and a new temporary directory (named
    /// after `prefix`), not running yet.
    pub fn new(name: &str, prefix: &str, kind: K) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("tempdir");
        Self::in_dir(name, dir, kind)
    }

    /// Like [`ServerProcess::new`], in a directory the caller prepared.
    pub fn in_dir(name: &str, dir: tempfile::TempDir, kind: K) -> Self {
        ServerProcess {
            name: name.to_string(),
            port: free_port(),
            kind,
            proc: None,
            dir,
        }
    }

    /// The server's own directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the harness started it and has not killed it since.
    pub fn is_running(&self) -> bool {
        self.proc.is_some()
    }

    /// The running process.
    pub fn proc(&self) -> &Proc {
        self.proc
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.name))
    }

    /// The running process, to wait for it or signal it.
    pub fn proc_mut(&mut self) -> &mut Proc {
        self.proc
            .as_mut()
            .unwrap_or_else(|| panic!("{} is not running", self.name))
    }

    /// The PID of the running process.
    pub fn pid(&self) -> u32 {
        self.proc().pid()
    }

    /// Spawns the process without waiting for it (to start several servers
    /// at once); [`ServerProcess::wait_ready`] waits.
    pub fn spawn(&mut self) {
        assert!(self.proc.is_none(), "{} is already running", self.name);
        let cmd = self.kind.command(self.port, self.dir.path());
        self.proc = Some(Proc::spawn(&self.name, cmd, self.dir.path()));
    }

    /// Waits until the spawned process serves; returns the moment it first
    /// did (ground truth for the end of an outage). Panics, with its log,
    /// if it exits or does not serve within [`ServerKind::READY_WITHIN`].
    pub async fn wait_ready(&mut self) -> Moment {
        let start = Instant::now();
        loop {
            let proc = self
                .proc
                .as_mut()
                .unwrap_or_else(|| panic!("{} was not spawned", self.name));
            if let Some(status) = proc.try_wait() {
                panic!(
                    "{} exited at start-up ({status}):\n{}",
                    self.name,
                    self.log()
                );
            }
            if self.kind.ready(self.port, proc).await {
                return Moment::now();
            }
            if start.elapsed() > K::READY_WITHIN {
                panic!(
                    "{} did not serve within {:?}:\n{}",
                    self.name,
                    K::READY_WITHIN,
                    self.log()
                );
            }
            tokio::time::sleep(K::LOOK_EVERY).await;
        }
    }

    /// Spawns the server and waits until it serves; returns the moment it
    /// first did.
    pub async fn launch(&mut self) -> Moment {
        self.spawn();
        self.wait_ready().await
    }

    /// Starts the server again after [`ServerProcess::kill`] (or the first
    /// time, for a server made but not started): a restart on the same port
    /// and directory; returns the moment it first served again (ground
    /// truth for the end of an outage).
    pub async fn start_again(&mut self) -> Moment {
        self.launch().await
    }

    /// SIGKILL, waiting until the process is gone (its port released);
    /// returns the moment just before the signal (ground truth for the
    /// start of an outage).
    pub fn kill(&mut self) -> Moment {
        let mut p = self
            .proc
            .take()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        let at = Moment::now();
        p.kill();
        self.kind.killed();
        at
    }

    /// After the server was stopped by other means (`pg_ctl stop`): reaps
    /// the process, so that it can be started again.
    pub fn stopped(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// SIGSTOP: the server hangs, its sockets stay open.
    pub fn pause(&self) -> Moment {
        self.proc().signal_at(Signal::Stop)
    }

    /// SIGCONT after [`ServerProcess::pause`].
    pub fn resume(&self) -> Moment {
        self.proc().signal_at(Signal::Cont)
    }

    /// What the server wrote to its stdout (`"out"`) or stderr (`"err"`)
    /// so far, over all its runs (the files are appended to).
    pub fn output(&self, stream: &str) -> String {
        let path = self.dir().join(format!("{}.{stream}", self.name));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// The last lines of everything the server said (stdout, stderr, its
    /// kind's log file), for failure messages.
    pub fn log(&self) -> String {
        format!(
            "--- {name} stdout ---\n{}\n--- {name} stderr ---\n{}\n{}",
            tail_lines(&self.output("out"), 40),
            tail_lines(&self.output("err"), 40),
            tail_lines(&self.kind.log(self.dir()), 40),
            name = self.name
        )
    }
}

impl<K: ServerKind> Drop for ServerProcess<K> {
    fn drop(&mut self) {
        if self.proc.is_some() {
            self.kind.dropped(self.dir.path());
        }
    }
}
