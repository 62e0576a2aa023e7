//! HAProxy in `mode tcp`, to put a primary and its replica (as `backup`)
//! behind one endpoint: the failover a client behind a proxy sees. Store
//! neutral (plain TCP health checks), so the MariaDB and the PostgreSQL
//! tests share it; each store's URL of the proxy is its own `url_for`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::{ServerKind, ServerProcess};
use super::{Proc, require_binary};

/// The `haproxy` binary, or a failure saying how to install it.
pub fn haproxy_bin() -> PathBuf {
    require_binary("haproxy", "haproxy")
}

/// `haproxy -db -f haproxy.cfg` as a [`ServerKind`], serving once its
/// port accepts a connection.
pub struct HaProxyKind;

impl ServerKind for HaProxyKind {
    const READY_WITHIN: Duration = Duration::from_secs(10);
    const LOOK_EVERY: Duration = Duration::from_millis(10);

    fn command(&self, _port: u16, dir: &Path) -> Command {
        let mut cmd = Command::new(haproxy_bin());
        cmd.arg("-db").arg("-f").arg(dir.join("haproxy.cfg"));
        cmd
    }

    async fn ready(&mut self, port: u16, _proc: &Proc) -> bool {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    }
}

/// HAProxy in `mode tcp` in front of a primary, with a `backup` server
/// that takes the traffic once the primary's health checks fail; killed
/// when dropped. Its `log()` has the health checks' verdicts.
pub type HaProxy = ServerProcess<HaProxyKind>;

impl HaProxy {
    /// Starts HAProxy listening on a free port and waits until it accepts.
    /// Health checks are plain TCP connects every 100 ms; two failures mark
    /// a server down.
    pub async fn start(primary: u16, backup: u16) -> HaProxy {
        let mut server = ServerProcess::new("haproxy", "dbcanary-haproxy-", HaProxyKind);
        let port = server.port;
        std::fs::write(
            server.dir().join("haproxy.cfg"),
            format!(
                "global\n  maxconn 200\n\
                 defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 1h\n  timeout server 1h\n  retries 1\n\
                 listen mysql\n  bind 127.0.0.1:{port}\n  option redispatch\n\
                 \x20 server primary 127.0.0.1:{primary} check inter 100ms fall 2 rise 2 on-marked-down shutdown-sessions\n\
                 \x20 server replica 127.0.0.1:{backup} check inter 100ms fall 2 rise 2 backup\n"
            ),
        )
        .expect("write haproxy.cfg");
        server.launch().await;
        server
    }
}
