//! Running `dbcanary drill` from a test: the command with a clean
//! environment, its exit code and outputs (waited for without blocking the
//! test's runtime, which serves the test apps), its JSON report, and its
//! JUnit file read by an XML parser that is not ours (Python's
//! `xml.etree`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::redis::{RedisServer, redis_server_bin};
use super::{Proc, Signal, dbcanary_command, require_binary, signal};

/// How long a drill may take in a test: ready, act, settle, deadlines,
/// on a loaded machine.
pub const DRILL_WITHIN: Duration = Duration::from_secs(90);

/// A finished `dbcanary drill`.
#[derive(Debug)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// stdout as the JSON report (`--json`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("the report is not JSON ({e}):\n{self}"))
    }

    /// Asserts the exit code.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "exit code\n{self}");
        self
    }

    /// Everything it printed, for checks that must hold everywhere.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- exit {:?} ---\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `dbcanary drill ARGS...` in `dir` (stdin closed: no terminal) and
/// waits for it.
pub async fn drill(dir: &Path, args: &[&str]) -> Finished {
    finish(start(dir, args)).await
}

/// Starts `dbcanary drill ARGS...` in `dir` (stdin closed: no terminal).
pub fn start(dir: &Path, args: &[&str]) -> Proc {
    let mut cmd = dbcanary_command();
    cmd.arg("drill").args(args);
    Proc::spawn("drill", cmd, dir)
}

/// Starts `dbcanary drill ARGS...` on a terminal of its own (`script`),
/// which gets `answer` typed a second later. Arguments must not need
/// quoting.
pub fn on_terminal(dir: &Path, args: &[&str], answer: &str) -> Proc {
    let script = require_binary("script", "util-linux");
    let line = format!(
        "{} drill {}",
        super::dbcanary_bin().display(),
        args.join(" ")
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!(
        "(sleep 1; printf '%s\\n' {answer}) | {} -qec \"{line}\" /dev/null",
        script.display()
    ));
    Proc::spawn("drill", cmd, dir)
}

/// Waits for a drill [`start`]ed.
pub async fn finish(mut p: Proc) -> Finished {
    let status = p.wait_timeout(DRILL_WITHIN).await.unwrap_or_else(|| {
        panic!(
            "the drill still runs after {DRILL_WITHIN:?}:\n{}",
            p.tail(40)
        )
    });
    let out = Finished {
        code: status.code(),
        stdout: p.stdout_text(),
        stderr: p.stderr_text(),
    };
    // Appended files: the next drill in the same directory starts afresh.
    let _ = std::fs::remove_file(&p.stdout);
    let _ = std::fs::remove_file(&p.stderr);
    out
}

/// One test case of a JUnit file.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Case {
    pub suite: String,
    pub name: String,
    pub classname: String,
    pub failure: Option<String>,
    pub error: Option<String>,
}

const READ_JUNIT: &str = r#"
import json, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
cases = []
for suite in root.iter("testsuite"):
    for case in suite.iter("testcase"):
        f, e = case.find("failure"), case.find("error")
        cases.append({
            "suite": suite.get("name"), "name": case.get("name"),
            "classname": case.get("classname"),
            "failure": None if f is None else f.get("message"),
            "error": None if e is None else e.get("message"),
        })
print(json.dumps(cases))
"#;

/// The test cases of a JUnit XML file; panics if it does not parse.
pub fn junit_cases(path: &Path) -> Vec<Case> {
    let python = require_binary("python3", "python3");
    let out = Command::new(python)
        .args(["-c", READ_JUNIT])
        .arg(path)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "the JUnit file does not parse as XML: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(path).unwrap_or_default()
    );
    serde_json::from_slice(&out.stdout).expect("the parser's JSON")
}

/// Kills the server a drill's `exec` started (by the PID it wrote), when
/// the test ends.
pub struct PidFile(PathBuf);

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            signal(pid, Signal::Kill);
        }
    }
}

/// A shell command that restarts `redis`: kills it, and half a second
/// later starts a new server on its port (data and PID file in `data`),
/// and what kills that new server when the test ends.
pub fn restart_script(redis: &RedisServer, data: &Path) -> (String, PidFile) {
    let pid_file = PidFile(data.join("redis.pid"));
    let script = format!(
        "kill -9 {pid}; sleep 0.5; {bin} --port {port} --bind 127.0.0.1 --save '' --appendonly no \
         --protected-mode no --daemonize yes --pidfile {pidfile} --dir {dir}",
        pid = redis.pid(),
        bin = redis_server_bin().display(),
        port = redis.port,
        pidfile = pid_file.0.display(),
        dir = data.display()
    );
    (script, pid_file)
}
