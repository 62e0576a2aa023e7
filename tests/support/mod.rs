//! The end-to-end test harness: real server processes on free loopback
//! ports, the real `dbcanary` binary with a config written into a temporary
//! directory, and small clients for its `/metrics` and `/api/v1/targets`.
//!
//! Store-neutral on purpose: every store's support module (`redis`, ...)
//! builds on [`process::ServerProcess`] (one server process: start, ready,
//! kill, stop/cont, restart on the same port), [`require_binary`] and
//! [`poll_until`]; every test agent's pacing is one [`Pacing`].
//! Timing rules: wait for conditions with deadlines (never a bare sleep as
//! synchronisation), and keep bounds generous, since the suite runs on small
//! shared machines.
#![allow(dead_code)]

pub mod app;
pub mod certs;
pub mod drill;
pub mod haproxy;
pub mod hostile;
pub mod mariadb;
pub mod mongo;
pub mod mysql_hostile;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod redis;

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use process::{ServerKind, ServerProcess};

// ---------------------------------------------------------------------------
// Pacing
// ---------------------------------------------------------------------------

/// How fast a test agent probes and reconnects, written as its
/// `[defaults]` table: the one place the tests' pacing TOML is written.
#[derive(Debug, Clone, Copy)]
pub struct Pacing<'a> {
    interval: &'a str,
    timeout: &'a str,
    /// `(initial, max)` of a doubling backoff; `None`: the built-in one.
    backoff: Option<(&'a str, &'a str)>,
    identity_every: Option<u32>,
}

impl<'a> Pacing<'a> {
    /// What most tests use: a probe every 200 ms bounded by 300 ms,
    /// reconnecting after 20 ms, doubling up to 200 ms.
    pub const FAST: Pacing<'static> = Pacing::every("200ms", "300ms");

    /// A probe every `interval` bounded by `timeout`, with the fast
    /// backoff of [`Pacing::FAST`].
    pub const fn every(interval: &'a str, timeout: &'a str) -> Self {
        Pacing {
            interval,
            timeout,
            backoff: Some(("20ms", "200ms")),
            identity_every: None,
        }
    }

    /// A doubling backoff from `initial` up to `max` instead.
    pub const fn backoff(self, initial: &'a str, max: &'a str) -> Self {
        Pacing {
            backoff: Some((initial, max)),
            ..self
        }
    }

    /// The agent's built-in backoff instead.
    pub const fn builtin_backoff(self) -> Self {
        Pacing {
            backoff: None,
            ..self
        }
    }

    /// The identity read again every `n` probes.
    pub const fn identity_every(self, n: u32) -> Self {
        Pacing {
            identity_every: Some(n),
            ..self
        }
    }

    /// The `[defaults]` table.
    pub fn toml(&self) -> String {
        let mut t = format!(
            "\n[defaults]\ninterval = {:?}\ntimeout = {:?}\n",
            self.interval, self.timeout
        );
        if let Some(n) = self.identity_every {
            t.push_str(&format!("identity_every = {n}\n"));
        }
        if let Some((initial, max)) = self.backoff {
            t.push_str(&format!(
                "backoff = {{ initial = {initial:?}, multiplier = 2.0, max = {max:?} }}\n"
            ));
        }
        t
    }
}

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
    Hup,
    Int,
    Kill,
    Term,
    Stop,
    Cont,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Self::Hup => "HUP",
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
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            tail_lines(&self.stdout_text(), lines),
            self.name,
            tail_lines(&self.stderr_text(), lines)
        )
    }
}

/// The last `n` lines of `text`.
pub fn tail_lines(text: &str, n: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(n)..].join("\n")
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

/// Polls `list` until it holds exactly one item, and that one is not
/// `not` (a replaced session, say); returns it.
pub async fn exactly_one_new<T: Copy + PartialEq + std::fmt::Debug>(
    limit: Duration,
    what: &str,
    not: Option<T>,
    mut list: impl AsyncFnMut() -> Vec<T>,
) -> T {
    poll_until(limit, what, async || {
        let s = list().await;
        match s.as_slice() {
            [one] if Some(*one) != not => Ok(*one),
            _ => Err(s),
        }
    })
    .await
}

/// The first column of query rows (every value as text, `NULL` as `None`)
/// parsed as `T`, leaving out what does not parse: the ids of sessions.
pub fn first_column<T: std::str::FromStr>(rows: Vec<Vec<Option<String>>>) -> Vec<T> {
    rows.into_iter()
        .filter_map(|r| r.into_iter().next().flatten()?.parse().ok())
        .collect()
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
    http_request(addr, "GET", path, &[], "").await
}

/// A minimal HTTP/1.0 request with `headers` and `body`, bounded by 5 s.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<HttpResponse> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).await?;
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
                "HTTP request timed out",
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

/// A counter the tests watch, by target and the one label that says what
/// happened: [`Agent::wait_count`] and [`Metrics::count`] take one.
#[derive(Debug, Clone, Copy)]
pub struct Counter {
    /// The series' name on `/metrics`.
    pub name: &'static str,
    /// The label, besides `target`, that says what happened.
    pub label: &'static str,
}

impl Counter {
    const fn by(name: &'static str, label: &'static str) -> Counter {
        Counter { name, label }
    }
}

/// Ended outages by `kind`.
pub const OUTAGES: Counter = Counter::by("dbcanary_outages_total", "kind");
/// Connection attempts by `result`.
pub const ATTEMPTS: Counter = Counter::by("dbcanary_connect_attempts_total", "result");
/// Lost connections by `cause`.
pub const DISCONNECTS: Counter = Counter::by("dbcanary_disconnects_total", "cause");
/// Failovers by `source`.
pub const FAILOVERS: Counter = Counter::by("dbcanary_failovers_total", "source");
/// Probes by `result`.
pub const PROBES: Counter = Counter::by("dbcanary_probes_total", "result");

/// A parsed `/metrics` body.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Outages of `target` so far, of any kind.
    pub fn outages(&self, target: &str) -> f64 {
        self.sum(OUTAGES.name, &[("target", target)])
    }

    /// `target`'s `counter` with its label at `value` (say `DISCONNECTS`
    /// with `cause="closed"`), 0 when there is no such series.
    pub fn count(&self, counter: Counter, target: &str, value: &str) -> f64 {
        self.value_or_zero(counter.name, &[("target", target), (counter.label, value)])
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

/// One `[[target]]` table with more `key = value` lines (`extra`).
pub fn target_toml_with(name: &str, url: &str, extra: &str) -> String {
    format!("{}{extra}\n", target_toml(name, url))
}

/// How to start an agent.
pub struct AgentBuilder {
    body: String,
    /// Lines of the `[agent]` table beyond `listen`.
    agent: String,
    /// Lines of the `[discovery]` table beyond `env = false`.
    discovery: String,
    targets: Vec<String>,
    log_filter: String,
    env: Vec<(String, String)>,
    /// `agent.basic_auth`: the user and the password.
    auth: Option<(String, String)>,
}

impl AgentBuilder {
    /// Protects the listener with basic auth (`user`, `password`): the
    /// harness's own requests carry them.
    pub fn basic_auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.into(), password.into()));
        self
    }

    /// Adds keys to the `[agent]` table (`attempts_per_second = 500`).
    pub fn agent_toml(mut self, text: &str) -> Self {
        self.agent.push_str(text);
        self
    }

    /// Adds keys to the `[discovery]` table (`files = [...]`).
    pub fn discovery_toml(mut self, text: &str) -> Self {
        self.discovery.push_str(text);
        self
    }

    /// Appends TOML (defaults, targets) after the `[agent]` and
    /// `[discovery]` tables the harness writes.
    pub fn toml(mut self, text: &str) -> Self {
        self.body.push_str(text);
        self.body.push('\n');
        self
    }

    /// The `[defaults]` table of `pacing`.
    pub fn pacing(self, pacing: Pacing) -> Self {
        self.toml(&pacing.toml())
    }

    /// Adds a `[[target]]` with only a name and a URL.
    pub fn target(self, name: &str, url: &str) -> Self {
        self.target_with(name, url, "")
    }

    /// Adds a `[[target]]` with more `key = value` lines (`extra`), say its
    /// own `interval` or a `password_file`.
    pub fn target_with(mut self, name: &str, url: &str, extra: &str) -> Self {
        self.targets.push(name.to_string());
        let t = if extra.is_empty() {
            target_toml(name, url)
        } else {
            target_toml_with(name, url, extra)
        };
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
        let auth = self.auth.as_ref().map(|(user, password)| {
            use base64::Engine;
            let pair = format!("{user}:{password}");
            let header = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            );
            let hash = bcrypt::hash(password, 4).expect("bcrypt");
            let toml =
                format!("\n[agent.basic_auth]\nusername = {user:?}\npassword_hash = {hash:?}\n");
            (header, toml)
        });
        let kind = AgentKind {
            log_filter: self.log_filter,
            env: self.env,
            auth: auth.as_ref().map(|(h, _)| h.clone()),
        };
        let mut server = ServerProcess::new("dbcanary", "dbcanary-agent-", kind);
        let listen: SocketAddr = ([127, 0, 0, 1], server.port).into();
        let config = server.dir().join(AgentKind::CONFIG);
        let text = format!(
            "[agent]\nlisten = \"{listen}\"\n{}\n{}[discovery]\nenv = false\n{}\n{}",
            self.agent,
            auth.as_ref().map_or("", |(_, t)| t.as_str()),
            self.discovery,
            self.body
        );
        std::fs::write(&config, &text).expect("write config");
        server.launch().await;
        Agent {
            listen,
            config,
            config_text: text,
            auth: auth.map(|(h, _)| h),
            server,
        }
    }

    /// Like [`AgentBuilder::start`], then waits until every target given
    /// with [`AgentBuilder::target`] or [`AgentBuilder::target_with`] is up.
    pub async fn start_up(self, limit: Duration) -> Agent {
        let targets = self.targets.clone();
        let agent = self.start().await;
        for t in &targets {
            agent.wait_up(t, true, limit).await;
        }
        agent
    }
}

/// The agent as a [`ServerKind`]: `dbcanary --config dbcanary.toml` in its
/// directory, serving once `/readyz` answers 200.
pub struct AgentKind {
    log_filter: String,
    env: Vec<(String, String)>,
    /// The `Authorization` header, when the listener wants one.
    auth: Option<String>,
}

impl AgentKind {
    /// The config file's name in the agent's directory.
    const CONFIG: &str = "dbcanary.toml";
}

impl ServerKind for AgentKind {
    const READY_WITHIN: Duration = Duration::from_secs(15);
    const LOOK_EVERY: Duration = Duration::from_millis(20);

    fn command(&self, _port: u16, dir: &Path) -> Command {
        let mut cmd = dbcanary_command();
        cmd.arg("--config")
            .arg(dir.join(Self::CONFIG))
            .env("RUST_LOG", &self.log_filter);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    async fn ready(&mut self, port: u16, _proc: &Proc) -> bool {
        let auth: Vec<(&str, &str)> = self
            .auth
            .iter()
            .map(|h| ("Authorization", h.as_str()))
            .collect();
        let readyz = http_request(([127, 0, 0, 1], port).into(), "GET", "/readyz", &auth, "").await;
        matches!(readyz, Ok(r) if r.status == 200)
    }
}

/// A running `dbcanary` agent, killed when dropped.
pub struct Agent {
    pub listen: SocketAddr,
    pub config: PathBuf,
    pub config_text: String,
    /// The `Authorization` header of the harness's requests, if any.
    auth: Option<String>,
    server: ServerProcess<AgentKind>,
}

impl Agent {
    /// An agent with the built-in defaults unless the test's TOML (or
    /// [`AgentBuilder::pacing`]) gives its own `[defaults]`.
    pub fn builder() -> AgentBuilder {
        AgentBuilder {
            body: String::new(),
            agent: String::new(),
            discovery: String::new(),
            targets: Vec::new(),
            log_filter: "dbcanary=debug,info".into(),
            env: Vec::new(),
            auth: None,
        }
    }

    /// Starts an agent with [`Pacing::FAST`] and these `(name, url)` targets.
    pub async fn start(targets: &[(&str, &str)]) -> Agent {
        Self::fast(targets).start().await
    }

    /// Starts an agent with `pacing` and these `(name, url)` targets, and
    /// waits until every target is up.
    pub async fn start_up(pacing: Pacing<'_>, targets: &[(&str, &str)], limit: Duration) -> Agent {
        Self::with(pacing, targets).start_up(limit).await
    }

    fn fast(targets: &[(&str, &str)]) -> AgentBuilder {
        Self::with(Pacing::FAST, targets)
    }

    fn with(pacing: Pacing<'_>, targets: &[(&str, &str)]) -> AgentBuilder {
        let mut b = Agent::builder().pacing(pacing);
        for (name, url) in targets {
            b = b.target(name, url);
        }
        b
    }

    pub fn dir(&self) -> &Path {
        self.server.dir()
    }

    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// The agent's process (its outputs).
    pub fn proc(&self) -> &Proc {
        self.server.proc()
    }

    /// Panics (with the agent's log) if the agent has exited.
    pub fn assert_alive(&mut self) {
        let proc = self.server.proc_mut();
        if let Some(status) = proc.try_wait() {
            panic!("the agent exited ({status}):\n{}", proc.tail(60));
        }
    }

    pub async fn get(&self, path: &str) -> HttpResponse {
        self.request("GET", path, "").await
    }

    /// `method path` with `body` (JSON), as the harness (with its
    /// credentials, if the listener wants them).
    pub async fn request(&self, method: &str, path: &str, body: &str) -> HttpResponse {
        let auth: Vec<(&str, &str)> = self
            .auth
            .iter()
            .map(|h| ("Authorization", h.as_str()))
            .collect();
        http_request(self.listen, method, path, &auth, body)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{method} {path} to the agent: {e}\n{}",
                    self.proc().tail(40)
                )
            })
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

    /// Waits until `target`'s `counter` with its label at `value` (say
    /// `ATTEMPTS` with `result="timeout"`) is at least `min`; returns it.
    pub async fn wait_count(
        &self,
        counter: Counter,
        target: &str,
        value: &str,
        min: f64,
        limit: Duration,
    ) -> f64 {
        let labels = [("target", target), (counter.label, value)];
        self.wait_at_least(counter.name, &labels, min, limit).await
    }

    /// The first `disconnected` event of `target` (API), and how many
    /// seconds after `cause` (what the harness did) it was detected.
    pub async fn first_loss(&self, target: &str, cause: Moment) -> (serde_json::Value, f64) {
        let t = self.target(target).await;
        let lost = events(&t, "disconnected")[0].clone();
        let detected = secs_between(cause.wall, parse_time(&lost["detected_at"]));
        (lost, detected)
    }

    /// Not a test: drops the canary's connection to `target` `n` times,
    /// each with `drop(i, last)` (returning what it dropped and when), and
    /// waits for each outage to end. Returns, in milliseconds, how long
    /// after each drop the loss was detected and how long each outage was.
    pub async fn measure_drops<T: Copy>(
        &self,
        target: &str,
        n: u32,
        mut drop: impl AsyncFnMut(u32, Option<T>) -> (T, Moment),
    ) -> (Vec<f64>, Vec<f64>) {
        let (mut detected, mut outage) = (Vec::new(), Vec::new());
        let mut last = None;
        for i in 0..n {
            let (dropped, at) = drop(i, last).await;
            last = Some(dropped);
            self.wait_outages(target, f64::from(i + 1), Duration::from_secs(10))
                .await;
            let t = self.target(target).await;
            let lost = events(&t, "disconnected");
            let seen = parse_time(&lost.last().unwrap()["detected_at"]);
            detected.push(secs_between(at.wall, seen) * 1000.0);
            let restored = events(&t, "restored");
            outage.push(restored.last().unwrap()["duration"].as_f64().unwrap() * 1000.0);
        }
        (detected, outage)
    }

    /// The agent's log so far (stderr, where `tracing` writes).
    pub fn log(&self) -> String {
        self.proc().stderr_text()
    }

    /// Sends SIGTERM and returns the exit status and how long it took;
    /// panics if the agent is still running after `limit`.
    pub async fn terminate(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let t0 = Instant::now();
        let proc = self.server.proc_mut();
        proc.signal(Signal::Term);
        match proc.wait_timeout(limit).await {
            Some(s) => (s, t0.elapsed()),
            None => panic!(
                "the agent did not exit within {limit:?} of SIGTERM:\n{}",
                proc.tail(40)
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

/// A `disconnected` event seen by the transport itself, well before the
/// next probe: within 1 s of `cause` (what the harness did) and saying so.
pub fn assert_seen_by_the_transport(lost: &serde_json::Value, cause: SystemTime, what: &str) {
    let lag = secs_between(cause, parse_time(&lost["detected_at"]));
    assert!(
        (0.0..1.0).contains(&lag),
        "loss seen {lag:.3} s after {what}: not event-driven ({lost})"
    );
    assert!(
        lost["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("transport"),
        "{lost}"
    );
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
// The binary's other commands
// ---------------------------------------------------------------------------

/// Runs `dbcanary check ARGS --config FILE` on a config of these
/// `(name, url)` targets only; returns what it did.
pub fn dbcanary_check(args: &[&str], targets: &[(&str, &str)]) -> Output {
    dbcanary_check_with(args, "", targets)
}

/// [`dbcanary_check`] with `head` (tables such as `[defaults]`) first.
fn dbcanary_check_with(args: &[&str], head: &str, targets: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("dbcanary.toml");
    let text: String = std::iter::once(head.to_string())
        .chain(targets.iter().map(|(n, u)| target_toml(n, u)))
        .collect();
    std::fs::write(&config, text).expect("write config");
    dbcanary_command()
        .arg("check")
        .args(args)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run dbcanary check")
}

/// `dbcanary check --json` on `(name, url, result)` cases: each target's
/// row must have that `result` (`ok`, `tls`, ...). Judged on the result,
/// not the speed: a 5 s timeout (a debug build's TLS handshakes and SCRAM
/// logins, nine at once beside other tests, took over the default 500 ms).
pub fn assert_check_results(cases: &[(&str, String, &str)]) {
    let targets: Vec<(&str, &str)> = cases.iter().map(|(n, u, _)| (*n, u.as_str())).collect();
    let out = dbcanary_check_with(&["--json"], "[defaults]\ntimeout = \"5s\"\n", &targets);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json: {e}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    for (name, _, want) in cases {
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["target"] == *name)
            .unwrap_or_else(|| panic!("no row {name} in {rows}"));
        assert_eq!(row["result"], *want, "{name}: {row}");
    }
}

/// A `dbcanary watch ARGS` run, its output captured; killed when dropped.
pub struct Watch {
    pub proc: Proc,
    _dir: tempfile::TempDir,
}

impl Watch {
    /// Starts `dbcanary watch ARGS`.
    pub fn start(args: &[&str]) -> Watch {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = dbcanary_command();
        cmd.arg("watch").args(args);
        let proc = Proc::spawn("watch", cmd, dir.path());
        Watch { proc, _dir: dir }
    }

    /// What it printed so far.
    pub fn stdout(&self) -> String {
        self.proc.stdout_text()
    }

    /// The last lines of its outputs, for failure messages.
    pub fn tail(&self) -> String {
        self.proc.tail(20)
    }

    /// Waits until what it printed satisfies `done`.
    pub async fn wait_for(&self, limit: Duration, what: &str, done: impl Fn(&str) -> bool) {
        poll_until(limit, what, async || {
            let out = self.stdout();
            check(done(&out), self.tail())
        })
        .await;
    }

    /// Ctrl-C (SIGINT); returns the exit status, or panics saying `what`
    /// if it is still running after `limit`.
    pub async fn interrupt(&mut self, limit: Duration, what: &str) -> ExitStatus {
        self.proc.signal(Signal::Int);
        match self.proc.wait_timeout(limit).await {
            Some(status) => status,
            None => panic!("{what}:\n{}", self.tail()),
        }
    }
}

// ---------------------------------------------------------------------------
// Shared drills
// ---------------------------------------------------------------------------

/// The planted-password drill every store with passwords shares: target
/// `orders` has the wrong password `planted` in its URL (`url(Some(..))`),
/// target `billing` reads `planted-file` from a `password_file` for the URL
/// without a password (`url(None)`). Both must fail with `result="auth"`,
/// the API must show the server's `reason`, and the password must appear
/// in no metric, API answer, log line or `config check` output.
pub async fn wrong_password_drill(
    pacing: Pacing<'_>,
    url: impl Fn(Option<&str>) -> String,
    planted: &str,
    reason: &str,
) {
    let (bad_url, bare_url) = (url(Some(planted)), url(None));
    let dir = tempfile::tempdir().expect("tempdir");
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, format!("{planted}-file\n")).expect("write password file");
    let from_file = format!("password_file = {:?}", pw_file.display().to_string());
    let mut agent = Agent::builder()
        .pacing(pacing)
        .target("orders", &bad_url)
        .target_with("billing", &bare_url, &from_file)
        .start()
        .await;
    for t in ["orders", "billing"] {
        agent
            .wait_count(ATTEMPTS, t, "auth", 3.0, Duration::from_secs(15))
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
