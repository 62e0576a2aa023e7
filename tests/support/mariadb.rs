//! Real MariaDB servers (`mariadb-install-db` + `mariadbd`) for the tests,
//! on free loopback ports, each in its own temporary data directory: they
//! can be killed, started again on the same port and data directory (a
//! restart), stopped and continued, set up as a GTID replica of another and
//! promoted.
//!
//! The harness talks to the servers as `root` over its own TCP connections
//! (`mysql_async`), each call bounded by a timeout, so a SIGSTOPped server
//! never hangs a test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};

use super::process::{ServerKind, ServerProcess};
use super::{Moment, Proc, first_column, require_binary};

/// Bound of every harness query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The `mariadbd` binary, or a failure saying how to install it.
pub fn mariadbd_bin() -> PathBuf {
    require_binary("mariadbd", "mariadb-server")
}

fn install_db_bin() -> PathBuf {
    require_binary("mariadb-install-db", "mariadb-server")
}

/// `mariadbd` as a [`ServerKind`]: a data directory made by
/// `mariadb-install-db`, serving once `root` can log in over TCP.
pub struct Mariadbd {
    /// Extra `mariadbd` options (`--server-id=2`, ...).
    args: Vec<String>,
}

impl ServerKind for Mariadbd {
    const READY_WITHIN: Duration = Duration::from_secs(30);

    fn command(&self, port: u16, d: &Path) -> Command {
        let mut cmd = Command::new(mariadbd_bin());
        cmd.arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", d.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .arg(format!("--tmpdir={}", d.join("tmp").display()))
            .arg(format!("--port={port}"))
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
        cmd
    }

    async fn ready(&mut self, port: u16, _proc: &Proc) -> bool {
        let login = tokio::time::timeout(Duration::from_secs(1), Conn::new(admin_opts(port))).await;
        let Ok(Ok(c)) = login else {
            return false;
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), c.disconnect()).await;
        true
    }

    fn log(&self, dir: &Path) -> String {
        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
    }
}

/// One `mariadbd` on a free loopback port with its own data directory,
/// killed when dropped; `start_again` restarts it on the same port and data
/// directory.
pub type MariaDb = ServerProcess<Mariadbd>;

impl MariaDb {
    /// A fresh server (new data directory), started and answering.
    /// `args` are extra `mariadbd` options (`--server-id=2`, ...).
    pub async fn start(name: &str, args: &[&str]) -> MariaDb {
        let kind = Mariadbd {
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        let mut server = ServerProcess::new(name, "dbcanary-mariadb-", kind);
        // A private tmpdir: the bootstrap's temporary tables are named
        // after small pids and collide in a shared /tmp when several
        // installs run at once.
        let tmp = server.dir().join("tmp");
        std::fs::create_dir(&tmp).expect("mkdir tmp");
        let out = Command::new(install_db_bin())
            .arg("--no-defaults")
            .arg(format!("--datadir={}", server.dir().join("data").display()))
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
        server.launch().await;
        server
    }

    /// `mysql://user[:password]@127.0.0.1:PORT/`.
    pub fn url(&self, user: &str, password: Option<&str>) -> String {
        url_for(self.port, user, password)
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
        let sql = format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{user}' ORDER BY ID"
        );
        first_column(self.rows(&sql).await)
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
