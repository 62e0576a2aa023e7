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
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::Proc;
use super::process::{ServerKind, ServerProcess};

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

/// When a member process started listening, by its own clock.
#[derive(Debug, Clone)]
pub struct Started {
    pub process_id: String,
    pub at: SystemTime,
}

/// A `mockmongo.py` member as a [`ServerKind`], serving once it printed
/// one more `READY processId=... at=...` line.
pub struct MockMember {
    /// The JSON file it re-reads its hello fields from.
    state: PathBuf,
    /// Speak only TLS (mockupdb's self-signed certificate).
    tls: bool,
    /// `READY` lines seen so far (one per start).
    readies: usize,
    /// What the last `READY` line said.
    started: Option<Started>,
}

impl ServerKind for MockMember {
    const READY_WITHIN: Duration = Duration::from_secs(20);
    const LOOK_EVERY: Duration = Duration::from_millis(10);

    fn command(&self, port: u16, _dir: &Path) -> Command {
        let mut cmd = Command::new(python());
        cmd.arg("-u")
            .arg(script())
            .arg("--port")
            .arg(port.to_string())
            .arg("--state")
            .arg(&self.state);
        if self.tls {
            cmd.arg("--tls");
        }
        cmd
    }

    async fn ready(&mut self, _port: u16, proc: &Proc) -> bool {
        let out = proc.stdout_text();
        let Some(line) = out
            .lines()
            .filter(|l| l.starts_with("READY "))
            .nth(self.readies)
        else {
            return false;
        };
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(k))
                .unwrap_or_else(|| panic!("no {k} in {line:?}"))
                .to_string()
        };
        let at: f64 = field("at=").parse().expect("at=");
        self.started = Some(Started {
            process_id: field("processId="),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs_f64(at),
        });
        self.readies += 1;
        true
    }

    /// The process is gone: so are its process id and its connection count.
    fn killed(&mut self) {
        self.started = None;
        let _ = std::fs::remove_file(self.state.with_extension("json.conns"));
    }
}

/// One member process, killed when dropped; a restart (`start` again) is a
/// new process, with a new process id.
pub type Member = ServerProcess<MockMember>;

impl Member {
    /// A member with its port chosen and its hello written, not running.
    pub fn not_started(name: &str, hello: &Value) -> Member {
        Self::with_tls(name, hello, false)
    }

    fn with_tls(name: &str, hello: &Value, tls: bool) -> Member {
        let dir = tempfile::Builder::new()
            .prefix("dbcanary-mongo-")
            .tempdir()
            .expect("tempdir");
        let kind = MockMember {
            state: dir.path().join(format!("{name}.json")),
            tls,
            readies: 0,
            started: None,
        };
        let m = ServerProcess::in_dir(name, dir, kind);
        m.set_hello(hello);
        m
    }

    /// A running standalone server (`isWritablePrimary`, no set).
    pub async fn standalone(name: &str) -> Member {
        let mut m = Member::not_started(name, &json!({ "isWritablePrimary": true }));
        m.start().await;
        m
    }

    /// A running standalone server that speaks only TLS, with a self-signed
    /// certificate that only `tlsInsecure=true` accepts.
    pub async fn standalone_tls(name: &str) -> Member {
        let mut m = Member::with_tls(name, &json!({ "isWritablePrimary": true }), true);
        m.start().await;
        m
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn state(&self) -> &Path {
        &self.kind.state
    }

    /// `topologyVersion.processId` of the running process.
    pub fn process_id(&self) -> Option<String> {
        Some(self.kind.started.as_ref()?.process_id.clone())
    }

    /// Replaces the member's hello fields (atomically: the member never
    /// reads half a file).
    pub fn set_hello(&self, hello: &Value) {
        let tmp = self.state().with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(hello).expect("json")).expect("write");
        std::fs::rename(&tmp, self.state()).expect("rename state");
    }

    /// Waits for the spawned process to listen; returns what it said then.
    async fn wait_started(&mut self) -> Started {
        self.wait_ready().await;
        self.kind.started.clone().expect("a READY line")
    }

    /// Starts the process (again: a restart, with a new process id) and
    /// waits until it listens.
    pub async fn start(&mut self) -> Started {
        self.spawn();
        self.wait_started().await
    }

    /// Client connections the running process has open, as it last wrote
    /// them down (every 10 ms).
    pub fn connections(&self) -> Option<usize> {
        std::fs::read_to_string(self.state().with_extension("json.conns"))
            .ok()?
            .trim()
            .parse()
            .ok()
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
            rs.members
                .push(Member::not_started(&format!("rs{i}"), &json!({})));
        }
        rs.write_hellos();
        for m in &mut rs.members {
            m.spawn();
        }
        for m in &mut rs.members {
            m.wait_started().await;
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
