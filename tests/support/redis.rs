//! Real `redis-server` processes for the tests: standalone servers that can
//! be killed, restarted on the same port, stopped and continued, and a
//! Sentinel setup (one master, one replica, three sentinels).
//!
//! The harness talks to the servers over its own connections (raw RESP for
//! the readiness `PING`, the `redis` crate for everything else), each bounded
//! by a timeout, so a SIGSTOPped server never hangs a test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ::redis::{AsyncConnectionConfig, FromRedisValue, RedisResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::process::{ServerKind, ServerProcess};
use super::{Proc, check, exactly_one_new, poll_until, require_binary};

/// The `redis-server` binary, or a failure saying how to install it.
pub fn redis_server_bin() -> PathBuf {
    require_binary("redis-server", "redis-server")
}

pub use super::Moment;

/// `redis-server` as a [`ServerKind`]: a plain server with extra
/// arguments, or a sentinel reading `sentinel.conf` in its directory;
/// serving once it answers `PING`.
pub struct Redis {
    /// Extra command-line arguments (`--replicaof ...`).
    pub args: Vec<String>,
    password: Option<String>,
    sentinel: bool,
}

impl ServerKind for Redis {
    const READY_WITHIN: Duration = Duration::from_secs(10);

    fn command(&self, port: u16, dir: &Path) -> Command {
        let mut cmd = Command::new(redis_server_bin());
        if self.sentinel {
            cmd.arg(dir.join("sentinel.conf")).arg("--sentinel");
            return cmd;
        }
        cmd.args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(dir);
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        cmd.args(&self.args);
        cmd
    }

    async fn ready(&mut self, port: u16, _proc: &Proc) -> bool {
        ping_raw(port, self.password.as_deref()).await
    }
}

/// One `redis-server` on a free loopback port, killed when dropped. It can
/// be killed and started again on the same port (a restart).
pub type RedisServer = ServerProcess<Redis>;

impl RedisServer {
    /// A plain server: no persistence, no password.
    pub async fn start() -> RedisServer {
        Self::start_with("redis", &[], None).await
    }

    /// A server with extra command-line arguments (`--replicaof ...`) and
    /// optionally `--requirepass`.
    pub async fn start_with(name: &str, args: &[&str], password: Option<&str>) -> RedisServer {
        let mut s = Self::not_started(name, args, password);
        s.launch().await;
        s
    }

    /// A server with its port chosen but not running yet: start it with
    /// [`RedisServer::start_again`].
    pub fn not_started(name: &str, args: &[&str], password: Option<&str>) -> RedisServer {
        let kind = Redis {
            args: args.iter().map(|a| a.to_string()).collect(),
            password: password.map(str::to_string),
            sentinel: false,
        };
        ServerProcess::new(name, "dbcanary-redis-", kind)
    }

    /// `redis://127.0.0.1:PORT` (without the password).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts it again with different extra arguments (e.g. `--replicaof`).
    pub async fn start_again_with(&mut self, args: &[&str]) -> Moment {
        self.kind.args = args.iter().map(|a| a.to_string()).collect();
        self.launch().await
    }

    /// The harness's own connection (RESP2, bounded timeouts).
    pub async fn conn(&self) -> RedisResult<::redis::aio::MultiplexedConnection> {
        let mut url = format!("redis://127.0.0.1:{}", self.port);
        if let Some(p) = &self.kind.password {
            url = format!("redis://:{p}@127.0.0.1:{}", self.port);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        ::redis::Client::open(url)?
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Runs one command on a fresh connection, bounded by 3 s.
    pub async fn query<T: FromRedisValue>(&self, args: &[&str]) -> RedisResult<T> {
        let fut = async {
            let mut c = self.conn().await?;
            let mut cmd = ::redis::cmd(args[0]);
            for a in &args[1..] {
                cmd.arg(*a);
            }
            cmd.query_async(&mut c).await
        };
        match tokio::time::timeout(Duration::from_secs(3), fut).await {
            Ok(r) => r,
            Err(_) => Err(::redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{args:?} on {} timed out", self.name),
            ))),
        }
    }

    /// `CLIENT LIST`, parsed.
    pub async fn clients(&self) -> RedisResult<Vec<ClientInfo>> {
        let text: String = self.query(&["CLIENT", "LIST"]).await?;
        Ok(parse_client_list(&text))
    }

    /// The connections named `dbcanary:<target>`.
    pub async fn canary_clients(&self, target: &str) -> RedisResult<Vec<ClientInfo>> {
        let name = format!("dbcanary:{target}");
        Ok(self
            .clients()
            .await?
            .into_iter()
            .filter(|c| c.name == name)
            .collect())
    }

    /// Waits until exactly one canary connection of `target` exists, and
    /// returns its id.
    pub async fn wait_canary(&self, target: &str, limit: Duration) -> i64 {
        self.wait_new_canary(target, None, limit).await
    }

    /// Waits until exactly one canary connection of `target` exists and it
    /// is not `not` (the one just killed), and returns its id.
    pub async fn wait_new_canary(&self, target: &str, not: Option<i64>, limit: Duration) -> i64 {
        let what = format!("one dbcanary:{target} connection on {}", self.name);
        let ids = async || match self.canary_clients(target).await {
            Ok(cs) => cs.iter().map(|c| c.id).collect(),
            Err(_) => Vec::new(),
        };
        exactly_one_new(limit, &what, not, ids).await
    }

    /// Waits until `target` has exactly `n` canary connections on the
    /// server (`what` names the wait in a failure).
    pub async fn wait_canaries(&self, target: &str, n: usize, limit: Duration, what: &str) {
        poll_until(limit, what, async || {
            let got = self.canary_clients(target).await.map(|c| c.len());
            check(matches!(&got, Ok(k) if *k == n), got)
        })
        .await;
    }

    /// `CLIENT KILL ID <id>`; returns the moment just before the command.
    pub async fn client_kill(&self, id: i64) -> Moment {
        let mut c = self.conn().await.expect("connect for CLIENT KILL");
        let at = Moment::now();
        let killed: i64 = ::redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(&mut c)
            .await
            .expect("CLIENT KILL ID");
        assert_eq!(killed, 1, "CLIENT KILL ID {id} killed {killed} clients");
        at
    }

    /// `INFO <section>` as `key → value`.
    pub async fn info(
        &self,
        section: &str,
    ) -> RedisResult<std::collections::BTreeMap<String, String>> {
        let text: String = self.query(&["INFO", section]).await?;
        Ok(text
            .lines()
            .filter_map(|l| l.trim_end().split_once(':'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }
}

/// One line of `CLIENT LIST`.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub id: i64,
    pub name: String,
    pub addr: String,
}

fn parse_client_list(text: &str) -> Vec<ClientInfo> {
    text.lines()
        .filter_map(|line| {
            let mut id = None;
            let mut name = String::new();
            let mut addr = String::new();
            for kv in line.split_whitespace() {
                match kv.split_once('=') {
                    Some(("id", v)) => id = v.parse().ok(),
                    Some(("name", v)) => name = v.to_string(),
                    Some(("addr", v)) => addr = v.to_string(),
                    _ => {}
                }
            }
            Some(ClientInfo {
                id: id?,
                name,
                addr,
            })
        })
        .collect()
}

/// Whether a server on `port` answers `PING` with `+PONG` within 200 ms
/// (raw RESP: cheaper and more exact than a driver's connection set-up).
pub async fn ping_raw(port: u16, password: Option<&str>) -> bool {
    let fut = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut req = String::new();
        if let Some(p) = password {
            req.push_str(&format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{p}\r\n", p.len()));
        }
        req.push_str("*1\r\n$4\r\nPING\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 256];
        loop {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return Some(false);
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if text.contains("+PONG\r\n") {
                return Some(true);
            }
            if text.starts_with('-') || text.contains("\r\n-") {
                return Some(false);
            }
        }
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(200), fut).await,
        Ok(Some(true))
    )
}

// ---------------------------------------------------------------------------
// Sentinel
// ---------------------------------------------------------------------------

/// The master name every Sentinel setup monitors.
pub const MASTER_NAME: &str = "mymaster";

/// One `redis-server FILE --sentinel`, with its own writable directory
/// (Sentinel rewrites its config file).
pub struct Sentinel {
    pub port: u16,
    server: RedisServer,
}

impl Sentinel {
    async fn start(i: usize, master_port: u16) -> Sentinel {
        let kind = Redis {
            args: Vec::new(),
            password: None,
            sentinel: true,
        };
        let mut server = ServerProcess::new(&format!("sentinel{i}"), "dbcanary-sentinel-", kind);
        let port = server.port;
        std::fs::write(
            server.dir().join("sentinel.conf"),
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 3000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir = server.dir().display()
            ),
        )
        .expect("write sentinel.conf");
        server.launch().await;
        Sentinel { port, server }
    }

    pub async fn query<T: FromRedisValue>(&self, args: &[&str]) -> RedisResult<T> {
        self.server.query(args).await
    }

    /// `SENTINEL get-master-addr-by-name`.
    pub async fn master_addr(&self) -> RedisResult<Option<(String, u16)>> {
        self.query(&["SENTINEL", "get-master-addr-by-name", MASTER_NAME])
            .await
    }

    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// One master, one replica and three sentinels (quorum 2), ready for a
/// failover: the replica is in sync and every sentinel knows the replica and
/// the two other sentinels.
pub struct SentinelSetup {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinels: Vec<Sentinel>,
}

impl SentinelSetup {
    pub async fn start() -> SentinelSetup {
        // Diskless sync without delay, or the replica link takes 5 s.
        let master =
            RedisServer::start_with("master", &["--repl-diskless-sync-delay", "0"], None).await;
        let mport = master.port.to_string();
        let replica = RedisServer::start_with(
            "replica",
            &[
                "--replicaof",
                "127.0.0.1",
                &mport,
                "--repl-diskless-sync-delay",
                "0",
            ],
            None,
        )
        .await;
        poll_until(
            Duration::from_secs(20),
            "the replica in sync with the master",
            async || {
                let info = replica
                    .info("replication")
                    .await
                    .map_err(|e| e.to_string())?;
                let link = info.get("master_link_status").cloned().unwrap_or_default();
                check(link == "up", format!("master_link_status={link:?}"))
            },
        )
        .await;
        let mut sentinels = Vec::new();
        for i in 0..3 {
            sentinels.push(Sentinel::start(i, master.port).await);
        }
        let setup = SentinelSetup {
            master,
            replica,
            sentinels,
        };
        setup.wait_settled(Duration::from_secs(30)).await;
        setup
    }

    /// `redis+sentinel://s1,s2,s3/mymaster`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// Waits until every sentinel knows the replica and the two other
    /// sentinels, and agrees that a failover can be authorised.
    pub async fn wait_settled(&self, limit: Duration) {
        poll_until(
            limit,
            "every sentinel to know the replica and its peers",
            async || {
                for s in &self.sentinels {
                    let replicas: Vec<::redis::Value> = s
                        .query(&["SENTINEL", "replicas", MASTER_NAME])
                        .await
                        .map_err(|e| e.to_string())?;
                    let peers: Vec<::redis::Value> = s
                        .query(&["SENTINEL", "sentinels", MASTER_NAME])
                        .await
                        .map_err(|e| e.to_string())?;
                    let quorum: RedisResult<String> =
                        s.query(&["SENTINEL", "ckquorum", MASTER_NAME]).await;
                    if replicas.len() != 1 || peers.len() != 2 || quorum.is_err() {
                        return Err(format!(
                            "sentinel {}: {} replicas, {} peers, ckquorum {quorum:?}",
                            s.port,
                            replicas.len(),
                            peers.len()
                        ));
                    }
                }
                Ok(())
            },
        )
        .await;
    }

    /// Everything the servers logged, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = format!(
            "--- master ---\n{}\n--- replica ---\n{}\n",
            self.master.log(),
            self.replica.log()
        );
        for (i, x) in self.sentinels.iter().enumerate() {
            s.push_str(&format!("--- sentinel{i} ---\n{}\n", x.log()));
        }
        s
    }
}
