//! Real MariaDB servers (`mariadb-install-db` + `mariadbd`) for the tests,
//! on free loopback ports, each in its own temporary data directory: they
//! can be killed, started again on the same port and data directory (a
//! restart), stopped and continued, set up as a GTID replica of another and
//! promoted. Plus HAProxy in `mode tcp` to put a primary and its replica
//! (as `backup`) behind one endpoint.
//!
//! The harness talks to the servers as `root` over its own TCP connections
//! (`mysql_async`), each call bounded by a timeout, so a SIGSTOPped server
//! never hangs a test.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};

use super::Moment;
use super::{Proc, Signal, free_port, require_binary};

/// Bound of every harness query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The `mariadbd` binary, or a failure saying how to install it.
pub fn mariadbd_bin() -> PathBuf {
    require_binary("mariadbd", "mariadb-server")
}

fn install_db_bin() -> PathBuf {
    require_binary("mariadb-install-db", "mariadb-server")
}

/// The `haproxy` binary, or a failure saying how to install it.
pub fn haproxy_bin() -> PathBuf {
    require_binary("haproxy", "haproxy")
}

/// One `mariadbd` on a free loopback port with its own data directory,
/// killed when dropped.
pub struct MariaDb {
    pub port: u16,
    name: String,
    dir: tempfile::TempDir,
    args: Vec<String>,
    proc: Option<Proc>,
}

impl MariaDb {
    /// A fresh server (new data directory), started and answering.
    /// `args` are extra `mariadbd` options (`--server-id=2`, ...).
    pub async fn start(name: &str, args: &[&str]) -> MariaDb {
        let dir = tempfile::Builder::new()
            .prefix("dbcanary-mariadb-")
            .tempdir()
            .expect("tempdir");
        // A private tmpdir: the bootstrap's temporary tables are named
        // after small pids and collide in a shared /tmp when several
        // installs run at once.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).expect("mkdir tmp");
        let out = Command::new(install_db_bin())
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .args([
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .output()
            .expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut db = MariaDb {
            port: free_port(),
            name: name.to_string(),
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
            proc: None,
        };
        db.launch().await;
        db
    }

    /// `mysql://user[:password]@127.0.0.1:PORT/`.
    pub fn url(&self, user: &str, password: Option<&str>) -> String {
        url_for(self.port, user, password)
    }

    pub fn pid(&self) -> u32 {
        self.proc.as_ref().expect("server running").pid()
    }

    /// Starts `mariadbd` and waits until `root` can log in over TCP;
    /// returns the moment it first could.
    async fn launch(&mut self) -> Moment {
        assert!(self.proc.is_none(), "{} already running", self.name);
        let d = self.dir.path();
        let mut cmd = Command::new(mariadbd_bin());
        cmd.arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", d.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .arg(format!("--tmpdir={}", d.join("tmp").display()))
            .arg(format!("--port={}", self.port))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--host-cache-size=0",
                "--max-connect-errors=1000000",
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=16M",
                "--skip-innodb-doublewrite",
                "--innodb-flush-log-at-trx-commit=2",
            ])
            .args(&self.args);
        self.proc = Some(Proc::spawn(&self.name, cmd, d));
        self.wait_ready(Duration::from_secs(30)).await
    }

    async fn wait_ready(&mut self, limit: Duration) -> Moment {
        let start = Instant::now();
        loop {
            if let Some(p) = &mut self.proc
                && let Some(status) = p.try_wait()
            {
                panic!(
                    "{} exited at start-up ({status}):\n{}\n--- error.log ---\n{}",
                    self.name,
                    p.tail(30),
                    self.log()
                );
            }
            if let Ok(Ok(c)) =
                tokio::time::timeout(Duration::from_secs(1), Conn::new(admin_opts(self.port))).await
            {
                let at = Moment::now();
                let _ = tokio::time::timeout(Duration::from_secs(1), c.disconnect()).await;
                return at;
            }
            if start.elapsed() > limit {
                panic!(
                    "{} did not accept a login within {limit:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGKILL, waiting until the process is gone; returns the moment just
    /// before the signal (ground truth for the outage start).
    pub fn kill(&mut self) -> Moment {
        let mut p = self.proc.take().expect("server running");
        let at = Moment::now();
        p.kill();
        at
    }

    /// Starts the server again on its port and data directory; returns the
    /// moment it first accepted a login (ground truth for the outage end).
    pub async fn start_again(&mut self) -> Moment {
        self.launch().await
    }

    /// SIGSTOP: the server hangs, its sockets stay open.
    pub fn pause(&self) -> Moment {
        self.proc
            .as_ref()
            .expect("server running")
            .signal_at(Signal::Stop)
    }

    /// SIGCONT after [`MariaDb::pause`].
    pub fn resume(&self) -> Moment {
        self.proc
            .as_ref()
            .expect("server running")
            .signal_at(Signal::Cont)
    }

    /// A new `root` connection (TCP), bounded.
    pub async fn conn(&self) -> Conn {
        tokio::time::timeout(QUERY_TIMEOUT, Conn::new(admin_opts(self.port)))
            .await
            .unwrap_or_else(|_| {
                panic!("{}: no root connection within {QUERY_TIMEOUT:?}", self.name)
            })
            .unwrap_or_else(|e| panic!("{}: root connection: {e}", self.name))
    }

    /// A new connection as `user` (TCP), bounded.
    pub async fn conn_as(&self, user: &str, password: &str) -> mysql_async::Result<Conn> {
        let opts = admin_opts(self.port).user(Some(user)).pass(Some(password));
        tokio::time::timeout(QUERY_TIMEOUT, Conn::new(opts))
            .await
            .unwrap_or_else(|_| panic!("{}: no connection within {QUERY_TIMEOUT:?}", self.name))
    }

    /// Runs statements (`;`-separated) as `root`.
    pub async fn exec(&self, sql: &str) {
        let mut c = self.conn().await;
        tokio::time::timeout(QUERY_TIMEOUT, c.query_drop(sql))
            .await
            .unwrap_or_else(|_| panic!("{}: {sql:?} timed out", self.name))
            .unwrap_or_else(|e| panic!("{}: {sql:?}: {e}", self.name));
        let _ = tokio::time::timeout(QUERY_TIMEOUT, c.disconnect()).await;
    }

    /// Runs a query as `root`; every value as text (`NULL` as `None`).
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let mut c = self.conn().await;
        let rows: Vec<Row> = tokio::time::timeout(QUERY_TIMEOUT, c.query(sql))
            .await
            .unwrap_or_else(|_| panic!("{}: {sql:?} timed out", self.name))
            .unwrap_or_else(|e| panic!("{}: {sql:?}: {e}", self.name));
        let _ = tokio::time::timeout(QUERY_TIMEOUT, c.disconnect()).await;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| {
                        r.get_opt::<Option<String>, _>(i)
                            .and_then(Result::ok)
                            .flatten()
                    })
                    .collect()
            })
            .collect()
    }

    /// Creates a user with `USAGE` only, plus `extra_grants` (e.g.
    /// `"SLAVE MONITOR"`), logging in from anywhere.
    pub async fn create_user(&self, user: &str, password: &str, extra_grants: Option<&str>) {
        let mut sql = format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'; GRANT USAGE ON *.* TO '{user}'@'%'"
        );
        if let Some(g) = extra_grants {
            sql.push_str(&format!("; GRANT {g} ON *.* TO '{user}'@'%'"));
        }
        self.exec(&sql).await;
    }

    /// The ids of the sessions of `user` (from the process list).
    pub async fn sessions_of(&self, user: &str) -> Vec<u64> {
        self.rows(&format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{user}' ORDER BY ID"
        ))
        .await
        .into_iter()
        .filter_map(|r| r.first().cloned().flatten()?.parse().ok())
        .collect()
    }

    /// The one session of `user` (a canary's), once there is exactly one
    /// and it is not `not`; panics after 10 s.
    pub async fn one_session_of(&self, user: &str, not: Option<u64>) -> u64 {
        super::poll_until(
            Duration::from_secs(10),
            &format!("exactly one new session of {user}"),
            async || {
                let s = self.sessions_of(user).await;
                match s.as_slice() {
                    [one] if Some(*one) != not => Ok(*one),
                    _ => Err(s),
                }
            },
        )
        .await
    }

    /// `KILL CONNECTION id` from another session; returns the moment just
    /// before.
    pub async fn kill_connection(&self, id: u64) -> Moment {
        let mut c = self.conn().await;
        let at = Moment::now();
        tokio::time::timeout(QUERY_TIMEOUT, c.query_drop(format!("KILL CONNECTION {id}")))
            .await
            .unwrap_or_else(|_| panic!("{}: KILL timed out", self.name))
            .unwrap_or_else(|e| panic!("{}: KILL CONNECTION {id}: {e}", self.name));
        let _ = tokio::time::timeout(QUERY_TIMEOUT, c.disconnect()).await;
        at
    }

    /// Makes this server a GTID replica of `primary` and waits until both
    /// replication threads run.
    pub async fn replicate_from(&self, primary: &MariaDb) {
        self.exec(&format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', \
             MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE",
            primary.port
        ))
        .await;
        let start = Instant::now();
        loop {
            let mut c = self.conn().await;
            let row: Option<Row> =
                tokio::time::timeout(QUERY_TIMEOUT, c.query_first("SHOW SLAVE STATUS"))
                    .await
                    .expect("SHOW SLAVE STATUS timed out")
                    .expect("SHOW SLAVE STATUS");
            let _ = tokio::time::timeout(QUERY_TIMEOUT, c.disconnect()).await;
            let col = |n: &str| {
                row.as_ref()
                    .and_then(|r| r.get_opt::<Option<String>, _>(n))
                    .and_then(Result::ok)
                    .flatten()
            };
            let (io, sql) = (col("Slave_IO_Running"), col("Slave_SQL_Running"));
            if io.as_deref() == Some("Yes") && sql.as_deref() == Some("Yes") {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{} did not start replicating: io={io:?} sql={sql:?} error={:?}",
                self.name,
                col("Last_IO_Error")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Promotes a replica: `STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only=0`.
    pub async fn promote(&self) {
        self.exec("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0")
            .await;
    }

    /// The server's error log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

fn admin_opts(port: u16) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("root"))
        .prefer_socket(false)
}

/// `mysql://user[:password]@127.0.0.1:PORT/`.
pub fn url_for(port: u16, user: &str, password: Option<&str>) -> String {
    match password {
        Some(p) => format!("mysql://{user}:{p}@127.0.0.1:{port}/"),
        None => format!("mysql://{user}@127.0.0.1:{port}/"),
    }
}

/// HAProxy in `mode tcp` in front of a primary, with a `backup` server
/// that takes the traffic once the primary's health checks fail.
pub struct HaProxy {
    pub port: u16,
    _dir: tempfile::TempDir,
    proc: Proc,
}

impl HaProxy {
    /// Starts HAProxy listening on a free port and waits until it accepts.
    /// Health checks are plain TCP connects every 100 ms; two failures mark
    /// a server down.
    pub async fn start(primary: u16, backup: u16) -> HaProxy {
        let dir = tempfile::Builder::new()
            .prefix("dbcanary-haproxy-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  maxconn 200\n\
                 defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 1h\n  timeout server 1h\n  retries 1\n\
                 listen mysql\n  bind 127.0.0.1:{port}\n  option redispatch\n\
                 \x20 server primary 127.0.0.1:{primary} check inter 100ms fall 2 rise 2 on-marked-down shutdown-sessions\n\
                 \x20 server replica 127.0.0.1:{backup} check inter 100ms fall 2 rise 2 backup\n"
            ),
        )
        .expect("write haproxy.cfg");
        let mut cmd = Command::new(haproxy_bin());
        cmd.arg("-db").arg("-f").arg(&cfg);
        let mut proc = Proc::spawn("haproxy", cmd, dir.path());
        let start = Instant::now();
        loop {
            if let Some(status) = proc.try_wait() {
                panic!("haproxy exited at start-up ({status}):\n{}", proc.tail(30));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "haproxy did not listen within 10 s:\n{}",
                proc.tail(30)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        HaProxy {
            port,
            _dir: dir,
            proc,
        }
    }

    /// `mysql://user[:password]@127.0.0.1:PORT/` through the proxy.
    pub fn url(&self, user: &str, password: Option<&str>) -> String {
        url_for(self.port, user, password)
    }

    pub fn log(&self) -> String {
        self.proc.tail(40)
    }
}
