//! MongoDB members for the tests. There is no MongoDB server package on the
//! test machines, so each member (standalone or replica-set member) is one
//! `tests/support/mockmongo.py` process — mockupdb, MongoDB's own
//! wire-protocol server library for testing drivers — on a free loopback
//! port, talking to the real Rust `mongodb` driver inside the agent.
//!
//! A member re-reads its hello fields from a JSON file, so a test switches
//! roles by rewriting it; a restart is a new process, hence a new
//! `topologyVersion.processId`. The Python comes from a venv that
//! `./scripts/test` creates; without it the tests fail, saying how to make it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::{Proc, free_port};

/// Where `./scripts/test` puts the venv (relative to the crate).
pub const VENV: &str = "target/test-venv";

fn install_hint() -> String {
    format!(
        "Create it with:  python3 -m venv {VENV} && {VENV}/bin/pip install mockupdb pymongo\n\
         (or run ./scripts/test, which does it), or point DBCANARY_TEST_PYTHON at a python \
         that can `import mockupdb`."
    )
}

/// The Python that runs the members: `$DBCANARY_TEST_PYTHON`, else the
/// project's venv. Panics, with the command that fixes it, when it is
/// missing or cannot import mockupdb. Tests never skip.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let py = std::env::var_os("DBCANARY_TEST_PYTHON")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join(VENV)
                        .join("bin/python")
                });
            if !py.exists() {
                return Err(format!(
                    "{} does not exist: the MongoDB tests need mockupdb in a venv.\n{}",
                    py.display(),
                    install_hint()
                ));
            }
            let out = Command::new(&py)
                .args(["-c", "import mockupdb, pymongo"])
                .output()
                .map_err(|e| format!("cannot run {}: {e}\n{}", py.display(), install_hint()))?;
            if !out.status.success() {
                return Err(format!(
                    "{} cannot import mockupdb/pymongo: {}\n{}",
                    py.display(),
                    String::from_utf8_lossy(&out.stderr).trim(),
                    install_hint()
                ));
            }
            Ok(py)
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/mockmongo.py")
}

/// `electionId` of term `n`, as extended JSON (real servers start theirs
/// with `7fffffff`).
pub fn election_id(term: u64) -> Value {
    json!({ "$oid": format!("7fffffff{term:016x}") })
}

/// The hex string the agent reports for term `n`.
pub fn election_hex(term: u64) -> String {
    format!("7fffffff{term:016x}")
}

/// One member process: killed when dropped.
pub struct Member {
    pub name: String,
    pub port: u16,
    dir: tempfile::TempDir,
    state: PathBuf,
    proc: Option<Proc>,
    /// `topologyVersion.processId` of the running process.
    pub process_id: Option<String>,
    readies: usize,
    /// Speak only TLS (mockupdb's self-signed certificate).
    tls: bool,
}

/// When a member process started listening, by its own clock.
#[derive(Debug, Clone)]
pub struct Started {
    pub process_id: String,
    pub at: SystemTime,
}

impl Member {
    /// A member with its port chosen and its hello written, not running.
    pub fn new(name: &str, hello: &Value) -> Member {
        let dir = tempfile::Builder::new()
            .prefix("dbcanary-mongo-")
            .tempdir()
            .expect("tempdir");
        let m = Member {
            name: name.to_string(),
            port: free_port(),
            state: dir.path().join(format!("{name}.json")),
            dir,
            proc: None,
            process_id: None,
            readies: 0,
            tls: false,
        };
        m.set_hello(hello);
        m
    }

    /// A running standalone server (`isWritablePrimary`, no set).
    pub async fn standalone(name: &str) -> Member {
        let mut m = Member::new(name, &json!({ "isWritablePrimary": true }));
        m.start().await;
        m
    }

    /// A running standalone server that speaks only TLS, with a self-signed
    /// certificate that only `tlsInsecure=true` accepts.
    pub async fn standalone_tls(name: &str) -> Member {
        let mut m = Member::new(name, &json!({ "isWritablePrimary": true }));
        m.tls = true;
        m.start().await;
        m
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Replaces the member's hello fields (atomically: the member never
    /// reads half a file).
    pub fn set_hello(&self, hello: &Value) {
        let tmp = self.state.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(hello).expect("json")).expect("write");
        std::fs::rename(&tmp, &self.state).expect("rename state");
    }

    /// Spawns the process without waiting for it.
    fn spawn(&mut self) {
        assert!(self.proc.is_none(), "{} is already running", self.name);
        let mut cmd = Command::new(python());
        cmd.arg("-u")
            .arg(script())
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--state")
            .arg(&self.state);
        if self.tls {
            cmd.arg("--tls");
        }
        self.proc = Some(Proc::spawn(&self.name, cmd, self.dir.path()));
    }

    /// Waits for the spawned process to listen.
    async fn ready(&mut self) -> Started {
        let want = self.readies + 1;
        let start = Instant::now();
        loop {
            let proc = self.proc.as_mut().expect("spawned");
            let out = proc.stdout_text();
            let readies: Vec<&str> = out.lines().filter(|l| l.starts_with("READY ")).collect();
            if readies.len() >= want {
                let line = readies[want - 1];
                let field = |k: &str| {
                    line.split_whitespace()
                        .find_map(|f| f.strip_prefix(k))
                        .unwrap_or_else(|| panic!("no {k} in {line:?}"))
                        .to_string()
                };
                let at: f64 = field("at=").parse().expect("at=");
                let started = Started {
                    process_id: field("processId="),
                    at: SystemTime::UNIX_EPOCH + Duration::from_secs_f64(at),
                };
                self.readies = want;
                self.process_id = Some(started.process_id.clone());
                return started;
            }
            if let Some(status) = proc.try_wait() {
                panic!(
                    "mock member {} exited at start ({status}):\n{}",
                    self.name,
                    proc.tail(30)
                );
            }
            if start.elapsed() > Duration::from_secs(20) {
                panic!(
                    "mock member {} did not listen within 20 s:\n{}",
                    self.name,
                    proc.tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts the process (again: a restart, with a new process id) and
    /// waits until it listens.
    pub async fn start(&mut self) -> Started {
        self.spawn();
        self.ready().await
    }

    /// SIGKILL; returns when the process is gone (its port closed).
    pub fn kill(&mut self) -> SystemTime {
        let mut p = self.proc.take().expect("member is running");
        let at = SystemTime::now();
        p.kill();
        self.process_id = None;
        let _ = std::fs::remove_file(self.state.with_extension("json.conns"));
        at
    }

    /// Client connections the running process has open, as it last wrote
    /// them down (every 10 ms).
    pub fn connections(&self) -> Option<usize> {
        std::fs::read_to_string(self.state.with_extension("json.conns"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The member's output, for failure messages.
    pub fn tail(&self) -> String {
        self.proc.as_ref().map(|p| p.tail(20)).unwrap_or_default()
    }
}

/// A replica set of mock members (`rs0`), member 0 primary at term 1.
pub struct ReplicaSet {
    pub members: Vec<Member>,
    pub term: u64,
    pub primary: Option<usize>,
}

impl ReplicaSet {
    pub const NAME: &'static str = "rs0";

    /// Starts `n` members, all at once.
    pub async fn start(n: usize) -> ReplicaSet {
        let mut rs = ReplicaSet {
            members: Vec::new(),
            term: 1,
            primary: Some(0),
        };
        for i in 0..n {
            rs.members.push(Member::new(&format!("rs{i}"), &json!({})));
        }
        rs.write_hellos();
        for m in &mut rs.members {
            m.spawn();
        }
        for m in &mut rs.members {
            m.ready().await;
        }
        rs
    }

    pub fn hosts(&self) -> Vec<String> {
        self.members.iter().map(Member::addr).collect()
    }

    /// The seed list URL with `replicaSet=rs0` and `extra` options.
    pub fn url(&self, userinfo: &str, extra: &str) -> String {
        let mut u = format!(
            "mongodb://{userinfo}{}/?replicaSet={}",
            self.hosts().join(","),
            Self::NAME
        );
        if !extra.is_empty() {
            u.push('&');
            u.push_str(extra);
        }
        u
    }

    /// The hello fields of member `i` under the current roles.
    pub fn hello(&self, i: usize) -> Value {
        let hosts = self.hosts();
        let mut h = json!({
            "setName": Self::NAME,
            "setVersion": 1,
            "hosts": hosts,
            "me": hosts[i],
            "isWritablePrimary": self.primary == Some(i),
            "secondary": self.primary != Some(i),
        });
        if let Some(p) = self.primary {
            h["primary"] = json!(hosts[p]);
            if p == i {
                h["electionId"] = election_id(self.term);
            }
        }
        h
    }

    fn write_hellos(&self) {
        for (i, m) in self.members.iter().enumerate() {
            m.set_hello(&self.hello(i));
        }
    }

    /// Makes `primary` the primary (`None`: no primary at all) at a new
    /// term, as an election would, and tells every member at once.
    pub fn elect(&mut self, primary: Option<usize>) {
        if primary.is_some() {
            self.term += 1;
        }
        self.primary = primary;
        self.write_hellos();
    }

    /// Restores a primary at the current term (the same election: used to
    /// end a "no primary" spell without a new election).
    pub fn restore(&mut self, primary: usize) {
        self.primary = Some(primary);
        self.write_hellos();
    }
}
