//! The end-to-end test harness: real server processes on free loopback
//! ports, the real `dbcanary` binary with a config written into a temporary
//! directory, and small clients for its `/metrics` and `/api/v1/targets`.
//!
//! Store-neutral on purpose: every store's support module (`redis`, ...)
//! builds on [`Proc`], [`free_port`], [`require_binary`] and [`poll_until`].
//! Timing rules: wait for conditions with deadlines (never a bare sleep as
//! synchronisation), and keep bounds generous, since the suite runs on small
//! shared machines.
#![allow(dead_code)]

pub mod app;
pub mod certs;
pub mod mariadb;
pub mod mongo;
pub mod mysql_hostile;
pub mod postgres;
pub mod redis;

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Fast pacing for tests: probe every 200 ms, reconnect quickly.
pub const FAST_DEFAULTS: &str = r#"
[defaults]
interval = "200ms"
timeout = "300ms"
backoff = { initial = "20ms", multiplier = 2.0, max = "200ms" }
"#;

// ---------------------------------------------------------------------------
// Ports, binaries, processes
// ---------------------------------------------------------------------------

/// Ports handed out in this process, so two tests never get the same one.
static PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free loopback port below the kernel's ephemeral range, so that no
/// outgoing connection (the agent's own reconnect attempts included) can be
/// given it as a local port while a test's server is down.
pub fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = if low > 12000 {
        (10000, low)
    } else {
        (61000, 65000)
    };
    let mut given = PORTS.lock().unwrap();
    let given = given.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let port = rand::random_range(from..to);
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port found in {from}..{to}");
}

/// The path of a server binary, or a loud failure saying how to install it.
/// Tests never skip because a server is missing.
pub fn require_binary(name: &str, install: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(
        [
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/usr/local/bin",
            "/usr/local/sbin",
        ]
        .map(PathBuf::from),
    );
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{name}` is not installed, and this test needs the real server.\n\
         Install it with:  sudo apt-get install -y --no-install-recommends {install}\n\
         (or run ./scripts/test, which installs every server the tests use)"
    );
}

/// Unix signals the harness sends (by number: no libc dependency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Int,
    Kill,
    Term,
    Stop,
    Cont,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Self::Int => "INT",
            Self::Kill => "KILL",
            Self::Term => "TERM",
            Self::Stop => "STOP",
            Self::Cont => "CONT",
        }
    }
}

/// Sends a signal to a process by PID.
pub fn signal(pid: u32, sig: Signal) {
    let status = Command::new("kill")
        .arg(format!("-{}", sig.name()))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run kill(1)");
    assert!(status.success(), "kill -{} {pid} failed", sig.name());
}

/// A moment the harness acted, on both clocks: monotonic for lengths,
/// wall-clock to compare with the agent's RFC 3339 timestamps.
#[derive(Debug, Clone, Copy)]
pub struct Moment {
    pub mono: Instant,
    pub wall: SystemTime,
}

impl Moment {
    pub fn now() -> Self {
        Self {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// A child process that is killed (SIGKILL, by PID) and reaped when dropped,
/// whatever state it is in (even SIGSTOPped). Its stdout and stderr go to
/// files, so tests can read what it said.
pub struct Proc {
    name: String,
    child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr captured to `<dir>/<name>.out`
    /// and `<dir>/<name>.err` (appended, so a restarted server keeps its
    /// history).
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Proc {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let open = |p: &Path| {
            File::options()
                .create(true)
                .append(true)
                .open(p)
                .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
        };
        cmd.stdin(Stdio::null())
            .stdout(open(&stdout))
            .stderr(open(&stderr));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal and returns the moment just before it.
    pub fn signal_at(&self, sig: Signal) -> Moment {
        let at = Moment::now();
        self.signal(sig);
        at
    }

    pub fn signal(&self, sig: Signal) {
        signal(self.pid(), sig);
    }

    /// SIGKILL, and wait until the process is gone (its ports released).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit status if the process has ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits up to `limit` for the process to exit.
    pub async fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The last lines of both outputs, for failure messages.
    pub fn tail(&self, lines: usize) -> String {
        let tail = |s: String| {
            let v: Vec<&str> = s.lines().collect();
            v[v.len().saturating_sub(lines)..].join("\n")
        };
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            tail(self.stdout_text()),
            self.name,
            tail(self.stderr_text())
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`, ...).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

// ---------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------

/// Polls `f` every 20 ms until it returns `Some`, or panics after `limit`
/// naming what was awaited and the last value seen.
pub async fn poll_until<T, L: std::fmt::Debug>(
    limit: Duration,
    what: &str,
    mut f: impl AsyncFnMut() -> Result<T, L>,
) -> T {
    let start = Instant::now();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) => {
                if start.elapsed() >= limit {
                    panic!("timed out after {limit:?} waiting for {what}; last seen: {last:?}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `Ok(())` when `cond`, else `Err(last)`: shorthand inside [`poll_until`].
pub fn check<L>(cond: bool, last: L) -> Result<(), L> {
    if cond { Ok(()) } else { Err(last) }
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// A response of [`http_get`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// A minimal HTTP/1.0 GET (the server closes the connection after the
/// answer, so no chunked bodies), bounded by 5 s.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<HttpResponse> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no header end in {text:?}"),
            )
        })?;
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "bad status line")
            })?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Ok(HttpResponse {
            status,
            headers,
            body: body.to_string(),
        })
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "HTTP GET timed out",
            ))
        })
}

// ---------------------------------------------------------------------------
// Prometheus text
// ---------------------------------------------------------------------------

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    fn matches(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.name == name
            && labels
                .iter()
                .all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }
}

/// A parsed `/metrics` body.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Outages of `target` so far, of any kind (the outage histogram counts).
    pub fn outages(&self, target: &str) -> f64 {
        self.sum(
            "dbcanary_outage_duration_seconds_count",
            &[("target", target)],
        )
    }

    /// Parses the Prometheus text format (comments skipped, label values
    /// unescaped). Panics on a line it cannot read: the exposition is part
    /// of the product.
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| parse_sample(l).unwrap_or_else(|| panic!("unreadable /metrics line: {l:?}")))
            .collect();
        Metrics {
            text: text.to_string(),
            samples,
        }
    }

    /// Every sample of `name` whose labels include all of `labels`.
    pub fn series(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.matches(name, labels))
            .collect()
    }

    /// The value of the one sample of `name` with `labels`; `None` if there
    /// is none. Panics if several match (the test must say which it means).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found = self.series(name, labels);
        match found.as_slice() {
            [] => None,
            [one] => Some(one.value),
            many => panic!("{} series of {name} match {labels:?}: {many:?}", many.len()),
        }
    }

    /// Like [`Metrics::value`], 0 when the series does not exist.
    pub fn value_or_zero(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// The sum over every matching sample.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series(name, labels).iter().map(|s| s.value).sum()
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if rest.starts_with('{') {
        let mut chars = rest[1..].char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i + 2,
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        let (_, c) = chars.next()?;
                        match c {
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            '"' => break,
                            other => value.push(other),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                other => key.push(other),
            }
        };
        rest = &rest[end..];
    }
    let value = match rest.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

// ---------------------------------------------------------------------------
// The agent
// ---------------------------------------------------------------------------

/// The path of the binary under test.
pub fn dbcanary_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dbcanary"))
}

/// A `dbcanary` command with a clean environment: only `PATH` and `HOME`
/// (no stray `*_REDIS_URL` or `DBCANARY__*` from the developer's shell).
pub fn dbcanary_command() -> Command {
    let mut cmd = Command::new(dbcanary_bin());
    cmd.env_clear();
    for k in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    cmd
}

/// One `[[target]]` table.
pub fn target_toml(name: &str, url: &str) -> String {
    format!("\n[[target]]\nname = {name:?}\nurl = {url:?}\n")
}

/// How to start an agent.
pub struct AgentBuilder {
    body: String,
    log_filter: String,
    env: Vec<(String, String)>,
}

impl AgentBuilder {
    /// Appends TOML (defaults, targets) after the `[agent]` and
    /// `[discovery]` tables the harness writes.
    pub fn toml(mut self, text: &str) -> Self {
        self.body.push_str(text);
        self.body.push('\n');
        self
    }

    /// Adds a `[[target]]` with only a name and a URL.
    pub fn target(self, name: &str, url: &str) -> Self {
        let t = target_toml(name, url);
        self.toml(&t)
    }

    /// `RUST_LOG` of the agent (default `dbcanary=debug,info`).
    pub fn log(mut self, filter: &str) -> Self {
        self.log_filter = filter.to_string();
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Writes the config, starts `dbcanary --config FILE` and waits until
    /// `/readyz` answers 200.
    pub async fn start(self) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("dbcanary-agent-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let listen: SocketAddr = ([127, 0, 0, 1], port).into();
        let config = dir.path().join("dbcanary.toml");
        let text = format!(
            "[agent]\nlisten = \"{listen}\"\n\n[discovery]\nenv = false\n\n{}",
            self.body
        );
        std::fs::write(&config, &text).expect("write config");
        let mut cmd = dbcanary_command();
        cmd.arg("--config")
            .arg(&config)
            .env("RUST_LOG", &self.log_filter);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let proc = Proc::spawn("dbcanary", cmd, dir.path());
        let mut agent = Agent {
            listen,
            config,
            config_text: text,
            proc,
            dir,
        };
        let start = Instant::now();
        loop {
            if let Some(status) = agent.proc.try_wait() {
                panic!(
                    "the agent exited at start-up ({status}):\n{}",
                    agent.proc.tail(50)
                );
            }
            if let Ok(r) = http_get(listen, "/readyz").await
                && r.status == 200
            {
                break;
            }
            if start.elapsed() > Duration::from_secs(15) {
                panic!(
                    "the agent was not ready within 15 s:\n{}",
                    agent.proc.tail(50)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        agent
    }
}

/// A running `dbcanary` agent, killed when dropped.
pub struct Agent {
    pub listen: SocketAddr,
    pub config: PathBuf,
    pub config_text: String,
    pub proc: Proc,
    dir: tempfile::TempDir,
}

impl Agent {
    /// An agent with the fast test defaults ([`FAST_DEFAULTS`]) unless the
    /// test's TOML gives its own `[defaults]`.
    pub fn builder() -> AgentBuilder {
        AgentBuilder {
            body: String::new(),
            log_filter: "dbcanary=debug,info".into(),
            env: Vec::new(),
        }
    }

    /// Starts an agent with [`FAST_DEFAULTS`] and these `(name, url)` targets.
    pub async fn start(targets: &[(&str, &str)]) -> Agent {
        let mut b = Agent::builder().toml(FAST_DEFAULTS);
        for (name, url) in targets {
            b = b.target(name, url);
        }
        b.start().await
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Panics (with the agent's log) if the agent has exited.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.proc.try_wait() {
            panic!("the agent exited ({status}):\n{}", self.proc.tail(60));
        }
    }

    pub async fn get(&self, path: &str) -> HttpResponse {
        http_get(self.listen, path)
            .await
            .unwrap_or_else(|e| panic!("GET {path} from the agent: {e}\n{}", self.proc.tail(40)))
    }

    /// Scrapes `/metrics`.
    pub async fn metrics(&self) -> Metrics {
        let r = self.get("/metrics").await;
        assert_eq!(r.status, 200, "/metrics answered {}: {}", r.status, r.body);
        Metrics::parse(&r.body)
    }

    /// `/api/v1/targets` as JSON.
    pub async fn api(&self) -> serde_json::Value {
        let r = self.get("/api/v1/targets").await;
        assert_eq!(
            r.status, 200,
            "/api/v1/targets answered {}: {}",
            r.status, r.body
        );
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("API JSON: {e}: {}", r.body))
    }

    /// One target of `/api/v1/targets`.
    pub async fn target(&self, name: &str) -> serde_json::Value {
        let api = self.api().await;
        api["targets"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no target {name:?} in {api}"))
    }

    /// A metric value, with the agent log in the failure message if missing.
    pub async fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let m = self.metrics().await;
        m.value(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in /metrics:\n{}", m.text))
    }

    /// Waits until `dbcanary_up{target=name}` is `want`.
    pub async fn wait_up(&self, target: &str, want: bool, limit: Duration) {
        let v = if want { 1.0 } else { 0.0 };
        poll_until(
            limit,
            &format!("dbcanary_up{{target={target:?}}} == {v}"),
            async || {
                let got = self
                    .metrics()
                    .await
                    .value("dbcanary_up", &[("target", target)]);
                check(got == Some(v), got)
            },
        )
        .await;
    }

    /// The `restored` events of a target (API), oldest first.
    pub async fn restored(&self, target: &str) -> Vec<serde_json::Value> {
        let t = self.target(target).await;
        events(&t, "restored").into_iter().cloned().collect()
    }

    /// Waits until `target` has had at least `n` outages (of any kind).
    pub async fn wait_outages(&self, target: &str, n: f64, limit: Duration) {
        poll_until(limit, &format!("{n} outages of {target}"), async || {
            let got = self.metrics().await.outages(target);
            check(got >= n, got)
        })
        .await;
    }

    /// Waits until the sum of the `name{labels}` series is at least `min`,
    /// and returns it.
    pub async fn wait_at_least(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        min: f64,
        limit: Duration,
    ) -> f64 {
        poll_until(limit, &format!("{name}{labels:?} >= {min}"), async || {
            // Summed, so that leaving out a label (say `kind`) means "any".
            let got = self.metrics().await.sum(name, labels);
            if got >= min { Ok(got) } else { Err(got) }
        })
        .await
    }

    /// The agent's log so far (stderr, where `tracing` writes).
    pub fn log(&self) -> String {
        self.proc.stderr_text()
    }

    /// Sends SIGTERM and returns the exit status and how long it took;
    /// panics if the agent is still running after `limit`.
    pub async fn terminate(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let t0 = Instant::now();
        self.proc.signal(Signal::Term);
        match self.proc.wait_timeout(limit).await {
            Some(s) => (s, t0.elapsed()),
            None => panic!(
                "the agent did not exit within {limit:?} of SIGTERM:\n{}",
                self.proc.tail(40)
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// API helpers
// ---------------------------------------------------------------------------

/// The events of a target (API), optionally only those of one kind.
pub fn events<'a>(target: &'a serde_json::Value, kind: &str) -> Vec<&'a serde_json::Value> {
    target["events"]
        .as_array()
        .map(|es| es.iter().filter(|e| e["event"] == kind).collect())
        .unwrap_or_default()
}

/// Parses an RFC 3339 timestamp of the API.
pub fn parse_time(v: &serde_json::Value) -> SystemTime {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("bad timestamp {s:?}: {e}"))
}

/// `b - a` in seconds, negative when `b` is before `a`.
pub fn secs_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Waits for a future with a deadline, panicking with `what` on timeout.
pub async fn within<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

/// `promtool check metrics` on a `/metrics` body (Prometheus text format):
/// panics with what promtool said unless it reports nothing.
pub fn promtool_check_metrics(body: &str) {
    use std::io::Write;
    let promtool = require_binary("promtool", "prometheus");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool check metrics");
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(body.as_bytes())
        .expect("feed /metrics to promtool");
    let out = child.wait_with_output().expect("promtool check metrics");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics ({}) complains about /metrics:\n{said}\n--- /metrics ---\n{body}",
        out.status
    );
}

// ---------------------------------------------------------------------------
// Shared drills
// ---------------------------------------------------------------------------

/// The planted-password drill every store with passwords shares: target
/// `orders` has the wrong password `planted` in its URL (`bad_url`), target
/// `billing` reads `planted-file` from a `password_file` for `bare_url`.
/// Both must fail with `result="auth"`, the API must show the server's
/// `reason`, and the password must appear in no metric, API answer, log
/// line or `config check` output.
pub async fn wrong_password_drill(
    defaults: &str,
    bad_url: &str,
    bare_url: &str,
    planted: &str,
    reason: &str,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, format!("{planted}-file\n")).expect("write password file");
    let from_file = format!(
        "[[target]]\nname = \"billing\"\nurl = {bare_url:?}\npassword_file = {:?}\n",
        pw_file.display().to_string()
    );
    let mut agent = Agent::builder()
        .toml(defaults)
        .target("orders", bad_url)
        .toml(&from_file)
        .start()
        .await;
    for t in ["orders", "billing"] {
        agent
            .wait_at_least(
                "dbcanary_connect_attempts_total",
                &[("target", t), ("result", "auth")],
                3.0,
                Duration::from_secs(15),
            )
            .await;
    }
    agent.assert_alive();
    let m = agent.metrics().await;
    assert_eq!(m.value("dbcanary_up", &[("target", "orders")]), Some(0.0));
    let api = agent.get("/api/v1/targets").await.body;
    assert!(api.contains(reason), "the reason is shown: {api}");
    let out = dbcanary_command()
        .args(["config", "check", "--config"])
        .arg(&agent.config)
        .output()
        .expect("run dbcanary config check");
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        shown.contains(":***@"),
        "the passwords show as ***: {shown}"
    );
    let log = agent.log();
    for (what, text) in [
        ("metrics", &m.text),
        ("API", &api),
        ("log", &log),
        ("config check", &shown),
    ] {
        assert!(
            !text.contains(planted),
            "the password appears in the {what}:\n{text}"
        );
    }
    assert!(
        log.contains("auth"),
        "the failed attempts are logged:\n{log}"
    );
}
