//! Real PostgreSQL servers (`initdb`, then `postgres` in the foreground as
//! a child of the test) for the tests, on free loopback ports, each in its
//! own temporary directory: they can be restarted (`pg_ctl stop -m fast` +
//! start), crashed (`pg_ctl stop -m immediate`), cloned into a streaming
//! replica with `pg_basebackup -R` and promoted.
//!
//! `initdb` refuses to run as root: as root (CI), every PostgreSQL binary
//! runs as the `postgres` user (the child's uid and gid), in a directory
//! handed to that user. The harness talks to the servers as the superuser `postgres`
//! (trusted on loopback) over its own TCP connections, each call bounded by
//! a timeout; other roles log in with SCRAM passwords.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::process::{ServerKind, ServerProcess};
use super::{Moment, Proc, first_column, require_binary};

/// Bound of every harness query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// A PostgreSQL binary: the newest `/usr/lib/postgresql/*/bin` (Debian keeps
/// them off the PATH), else the PATH, else a failure saying how to install.
pub fn pg_bin(name: &str) -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let p = e.path().join("bin").join(name);
            p.is_file().then_some((v, p))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, p)) => p,
        None => require_binary(name, "postgresql"),
    }
}

/// Whether the tests run as root (then PostgreSQL runs as `postgres`).
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// The uid and gid of the `postgres` user.
fn postgres_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres") && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .unwrap_or_else(|| {
            panic!(
                "running as root, the tests run PostgreSQL as the `postgres` user, which does not exist.\n\
                 Install the server (it creates the user) with:  \
                 apt-get install -y --no-install-recommends postgresql"
            )
        })
}

/// A command running `bin` as the user PostgreSQL runs as, in `dir` (a
/// directory that user owns: the tools want a current directory they can
/// read).
fn pg_command(bin: &Path, dir: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(bin);
    c.current_dir(dir);
    if running_as_root() {
        let (uid, gid) = postgres_user();
        c.uid(uid).gid(gid);
    }
    c
}

/// Runs a PostgreSQL command to its end, panicking with its output if it
/// fails.
fn run(what: &str, mut cmd: Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({cmd:?}): {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A temporary directory the PostgreSQL user owns.
pub fn pg_tempdir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir");
    if running_as_root() {
        let (uid, gid) = postgres_user();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", dir.path().display()));
    }
    dir
}

/// Hands a file over to the PostgreSQL user with `mode` (a server's TLS
/// key must belong to it and be private).
pub fn hand_over(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    if running_as_root() {
        let (uid, gid) = postgres_user();
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Who may log in how: the superuser `postgres` without a password (the
/// harness; replication too), every other role with a SCRAM password.
const PG_HBA: &str = "local all all trust\n\
host all postgres 127.0.0.1/32 trust\n\
host replication postgres 127.0.0.1/32 trust\n\
host all all 127.0.0.1/32 scram-sha-256\n";

/// The `postgres` server as a [`ServerKind`], in the foreground (its log
/// on stderr), serving once the superuser can log in over TCP.
pub struct Postmaster {
    /// Extra `-c name=value` settings.
    settings: Vec<String>,
}

impl ServerKind for Postmaster {
    const READY_WITHIN: Duration = Duration::from_secs(30);

    fn command(&self, port: u16, dir: &Path) -> Command {
        let mut cmd = pg_command(&pg_bin("postgres"), dir);
        cmd.arg("-D")
            .arg(dir.join("data"))
            .args(["-p", &port.to_string()])
            .arg("-k")
            .arg(dir);
        for s in [
            "listen_addresses=127.0.0.1",
            "fsync=off",
            "full_page_writes=off",
            "synchronous_commit=off",
            "shared_buffers=16MB",
            "max_connections=30",
        ]
        .into_iter()
        .chain(self.settings.iter().map(String::as_str))
        {
            cmd.args(["-c", s]);
        }
        cmd
    }

    async fn ready(&mut self, port: u16, _proc: &Proc) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(1), admin(port)).await,
            Ok(Ok(_))
        )
    }

    /// An immediate shutdown: a SIGKILL of the postmaster alone would leave
    /// its backends behind.
    fn dropped(&self, dir: &Path) {
        let _ = pg_command(&pg_bin("pg_ctl"), dir)
            .arg("-D")
            .arg(dir.join("data"))
            .args(["stop", "-w", "-m", "immediate"])
            .output();
    }
}

/// One PostgreSQL server on a free loopback port with its own data
/// directory, stopped (immediate) when dropped. It stops and starts
/// through `pg_ctl`, as an operator would.
pub type Postgres = ServerProcess<Postmaster>;

impl Postgres {
    /// A fresh server (new cluster), started and answering.
    pub async fn start(name: &str, settings: &[&str]) -> Postgres {
        let mut pg = Self::initdb(name, settings);
        pg.launch().await;
        pg
    }

    /// A fresh cluster started as a standby with no primary and
    /// `hot_standby = off`: it listens and answers every login "the
    /// database system is not accepting connections" (`not_ready`), for
    /// good. Spawned only: it never serves.
    pub fn never_ready(name: &str) -> Postgres {
        let mut pg = Self::initdb(name, &["hot_standby=off"]);
        std::fs::write(pg.data().join("standby.signal"), "").expect("write standby.signal");
        pg.spawn();
        pg
    }

    fn initdb(name: &str, settings: &[&str]) -> Postgres {
        let dir = pg_tempdir("dbcanary-pg-");
        let mut cmd = pg_command(&pg_bin("initdb"), dir.path());
        cmd.arg("-D").arg(dir.path().join("data")).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        ]);
        run("initdb", cmd);
        let pg = Postgres::at(name, dir, settings);
        pg.write_hba();
        pg
    }

    fn at(name: &str, dir: tempfile::TempDir, settings: &[&str]) -> Postgres {
        let kind = Postmaster {
            settings: settings.iter().map(|s| s.to_string()).collect(),
        };
        ServerProcess::in_dir(name, dir, kind)
    }

    fn data(&self) -> PathBuf {
        self.dir().join("data")
    }

    fn write_hba(&self) {
        let hba = self.data().join("pg_hba.conf");
        std::fs::write(&hba, PG_HBA).expect("write pg_hba.conf");
        hand_over(&hba, 0o600);
    }

    /// A streaming replica of `primary` (`pg_basebackup -R`), started and
    /// answering (in recovery).
    pub async fn replica_of(primary: &Postgres, name: &str) -> Postgres {
        let dir = pg_tempdir("dbcanary-pg-");
        let mut cmd = pg_command(&pg_bin("pg_basebackup"), dir.path());
        cmd.args(["-h", "127.0.0.1", "-U", "postgres"])
            .arg("-p")
            .arg(primary.port.to_string())
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"]);
        run("pg_basebackup", cmd);
        let settings: Vec<&str> = primary.kind.settings.iter().map(String::as_str).collect();
        let mut pg = Postgres::at(name, dir, &settings);
        pg.launch().await;
        pg
    }

    /// `postgresql://user[:password]@127.0.0.1:PORT/postgres` plus `query`.
    pub fn url(&self, user: &str, password: Option<&str>) -> String {
        url_for(self.port, user, password)
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let mut cmd = pg_command(&pg_bin("pg_ctl"), self.dir());
        cmd.arg("-D").arg(self.data()).args(args);
        run(&format!("{}: pg_ctl {}", self.name, args.join(" ")), cmd)
    }

    /// `pg_ctl stop -m <mode>`, waiting until the server is gone.
    fn stop(&mut self, mode: &str) -> Moment {
        let down = Moment::now();
        self.pg_ctl(&["stop", "-w", "-m", mode]);
        self.stopped();
        down
    }

    /// `pg_ctl stop -m fast` (clients get `FATAL` 57P01, checkpoint, exit),
    /// then start again; returns (stop issued, first login after).
    pub async fn restart(&mut self) -> (Moment, Moment) {
        let down = self.stop("fast");
        let back = self.launch().await;
        (down, back)
    }

    /// `pg_ctl stop -m immediate` (a crash: no checkpoint, recovery at the
    /// next start), then start again; returns (crash, first login after).
    pub async fn crash_and_start(&mut self) -> (Moment, Moment) {
        let down = self.crash();
        let back = self.launch().await;
        (down, back)
    }

    /// Crashes the server and leaves it down; returns the moment before.
    pub fn crash(&mut self) -> Moment {
        self.stop("immediate")
    }

    /// `pg_ctl promote -w`: the replica leaves recovery on a new timeline.
    pub fn promote(&self) {
        self.pg_ctl(&["promote", "-w"]);
    }

    /// Runs statements (`;`-separated) as `postgres`.
    pub async fn exec(&self, sql: &str) {
        self.query(sql).await;
    }

    /// Runs a query as `postgres`; every value as text (`NULL` as `None`).
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.query(sql)
            .await
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect()
    }

    async fn query(&self, sql: &str) -> Vec<SimpleQueryMessage> {
        let c = tokio::time::timeout(QUERY_TIMEOUT, admin(self.port))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{}: no admin connection within {QUERY_TIMEOUT:?}",
                    self.name
                )
            })
            .unwrap_or_else(|e| panic!("{}: admin connection: {e}", self.name));
        tokio::time::timeout(QUERY_TIMEOUT, c.simple_query(sql))
            .await
            .unwrap_or_else(|_| panic!("{}: {sql:?} timed out", self.name))
            .unwrap_or_else(|e| panic!("{}: {sql:?}: {e:?}", self.name))
    }

    /// A login role without any privilege beyond logging in.
    pub async fn create_role(&self, role: &str, password: &str) {
        self.exec(&format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
            .await;
    }

    /// The backend pids of the sessions named `application_name`.
    pub async fn sessions_named(&self, application_name: &str) -> Vec<u32> {
        let sql = format!(
            "SELECT pid FROM pg_stat_activity WHERE application_name = '{application_name}' ORDER BY pid"
        );
        first_column(self.rows(&sql).await)
    }

    /// `pg_terminate_backend(pid)` from another session; returns the moment
    /// just before.
    pub async fn terminate(&self, pid: u32) -> Moment {
        let c = tokio::time::timeout(QUERY_TIMEOUT, admin(self.port))
            .await
            .expect("admin connection in time")
            .expect("admin connection");
        let at = Moment::now();
        let r = tokio::time::timeout(
            QUERY_TIMEOUT,
            c.simple_query(&format!("SELECT pg_terminate_backend({pid})")),
        )
        .await
        .expect("pg_terminate_backend in time")
        .expect("pg_terminate_backend");
        let done = r
            .iter()
            .any(|m| matches!(m, SimpleQueryMessage::Row(row) if row.get(0) == Some("t")));
        assert!(done, "{}: backend {pid} was not terminated", self.name);
        at
    }
}

/// A superuser connection (TCP, no TLS) whose driver task runs until the
/// client is dropped.
async fn admin(port: u16) -> Result<Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname("postgres")
        .application_name("dbcanary-test-harness")
        .connect_timeout(Duration::from_secs(1));
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// `postgresql://user[:password]@127.0.0.1:PORT/postgres`.
pub fn url_for(port: u16, user: &str, password: Option<&str>) -> String {
    match password {
        Some(p) => format!("postgresql://{user}:{p}@127.0.0.1:{port}/postgres"),
        None => format!("postgresql://{user}@127.0.0.1:{port}/postgres"),
    }
}
