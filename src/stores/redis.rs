//! Redis: one multiplexed connection speaking RESP3, so that the driver
//! pushes `PushKind::Disconnection` the moment the socket closes (no probe
//! needed to notice). Servers without RESP3 fall back to RESP2 and
//! probe-only detection, which is logged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ErrorKind, IntoConnectionInfo, ProtocolVersion, PushKind,
    RedisConnectionInfo, RedisError, ServerErrorKind,
};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

use crate::dburl::{DbUrl, HostPort};
use crate::model::{ConnectResult, DisconnectCause, Identity, Role};
use crate::stores::bounded::{Bounded, ROUND_TRIP_BYTES, ReadBudget};
use crate::stores::{
    CloseSignal, ConnectError, Connected, Notices, ProbeError, Spec, Store, classify_io,
    disconnect_cause, resolve,
};
use crate::tls::{self, ClientTls, Roots, Verify, find_io_error};

/// What a Redis connection runs on: TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A Redis connection whose reads are bounded (see [`crate::stores::bounded`]).
#[derive(Clone)]
pub struct RedisConn {
    pub conn: MultiplexedConnection,
    budget: Arc<ReadBudget>,
}

impl RedisConn {
    /// The connection, its read budget refilled for one more round trip.
    pub fn round_trip(&mut self) -> &mut MultiplexedConnection {
        self.budget.refill();
        &mut self.conn
    }
}

/// A stream the agent owns to a Redis server: TCP (TLS when `tls` is
/// given, the system's CAs unless it says insecure), every read drawing from
/// a budget the caller refills per round trip.
pub struct Transport {
    stream: Bounded<Box<dyn Io>>,
    budget: Arc<ReadBudget>,
}

impl Transport {
    pub async fn open(addr: &HostPort, tls: Option<bool>) -> Result<Self, ConnectError> {
        let tcp = TcpStream::connect((addr.host.as_str(), addr.port))
            .await
            .map_err(|e| ConnectError::new(classify_io(&e), format!("{addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match tls {
            None => Box::new(tcp),
            Some(insecure) => {
                let config = tls::client_config(&ClientTls {
                    verify: if insecure {
                        Verify::Nothing
                    } else {
                        Verify::Full
                    },
                    roots: Roots::System,
                    identity: None,
                })
                .map_err(|reason| ConnectError::new(ConnectResult::Tls, reason))?;
                let name = ServerName::try_from(addr.host.clone()).map_err(|_| {
                    ConnectError::new(
                        ConnectResult::Tls,
                        format!("{} is not a TLS server name", addr.host),
                    )
                })?;
                let stream = TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ConnectError::new(classify_io(&e), format!("{addr}: {e}")))?;
                Box::new(stream)
            }
        };
        let budget = ReadBudget::new(ROUND_TRIP_BYTES);
        Ok(Self {
            stream: Bounded::new(io, budget.clone()),
            budget,
        })
    }

    /// The handshake of `info` on this stream; the driver's I/O task is
    /// spawned here and ends with the connection.
    pub async fn handshake(
        self,
        info: &RedisConnectionInfo,
        config: AsyncConnectionConfig,
    ) -> Result<RedisConn, RedisError> {
        let (conn, driver) =
            MultiplexedConnection::new_with_config(info, self.stream, config).await?;
        tokio::spawn(driver);
        Ok(RedisConn {
            conn,
            budget: self.budget,
        })
    }
}

/// How to reach and log in to Redis servers: everything but the address,
/// which Sentinel decides for its targets.
pub struct RedisNode {
    client_name: String,
    tls: bool,
    /// `rediss://...#insecure`: skip certificate verification.
    insecure: bool,
    username: Option<String>,
    password: Option<String>,
    db: i64,
    /// Set once a server refused RESP3, so the fallback is said once.
    resp2_logged: AtomicBool,
    /// What the operator should know (the RESP2 fallback, a replica
    /// reached directly).
    pub notices: Notices,
    /// A plain `redis://` target, not one Sentinel chose.
    direct: bool,
    replica_said: AtomicBool,
}

impl RedisNode {
    /// `db` is the database number; `tls` selects `rediss`; `direct` is a
    /// plain `redis://` target (not one Sentinel chose).
    pub fn new(target: &str, url: &DbUrl, tls: bool, db: i64, direct: bool) -> Self {
        Self {
            client_name: format!("dbcanary:{target}"),
            tls,
            insecure: url.fragment.as_deref() == Some("insecure"),
            username: url.username.clone(),
            password: url.password().map(str::to_string),
            db,
            resp2_logged: AtomicBool::new(false),
            notices: Notices::default(),
            direct,
            replica_said: AtomicBool::new(false),
        }
    }

    /// The handshake: protocol, database, credentials.
    fn info(
        &self,
        addr: &HostPort,
        protocol: ProtocolVersion,
    ) -> Result<RedisConnectionInfo, ConnectError> {
        let info = format!("redis://{addr}/{}", self.db)
            .into_connection_info()
            .map_err(|e| {
                ConnectError::new(ConnectResult::Protocol, format!("bad address {addr}: {e}"))
            })?;
        let mut settings = info
            .redis_settings()
            .clone()
            .set_protocol(protocol)
            .set_db(self.db);
        if let Some(u) = &self.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &self.password {
            settings = settings.set_password(p);
        }
        Ok(settings)
    }

    /// Opens a canary connection to `addr`: RESP3 with a push sender when the
    /// server speaks it, `CLIENT SETNAME`, identity.
    pub async fn open(
        &self,
        addr: &HostPort,
        timeout: Duration,
    ) -> Result<Connected<RedisConn>, ConnectError> {
        resolve(&addr.host, addr.port).await?;
        let tls = self.tls.then_some(self.insecure);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(None)
            .set_push_sender(tx);
        let resp3 = self.info(addr, ProtocolVersion::RESP3)?;
        let transport = Transport::open(addr, tls).await?;
        let (mut conn, closed) = match transport.handshake(&resp3, config).await {
            Ok(conn) => {
                let closed = CloseSignal::new(async move {
                    while let Some(push) = rx.recv().await {
                        if push.kind == PushKind::Disconnection {
                            return DisconnectCause::Closed;
                        }
                    }
                    DisconnectCause::Closed
                });
                (conn, closed)
            }
            Err(e) if refuses_resp3(&e) => {
                if !self.resp2_logged.swap(true, Ordering::Relaxed) {
                    self.notices.say(format!(
                        "server {addr} does not speak RESP3: falling back to RESP2, a closed connection is detected by the next probe only"
                    ));
                }
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(None);
                let resp2 = self.info(addr, ProtocolVersion::RESP2)?;
                let conn = Transport::open(addr, tls)
                    .await?
                    .handshake(&resp2, config)
                    .await
                    .map_err(|e| connect_error(&e))?;
                (conn, CloseSignal::never())
            }
            Err(e) => return Err(connect_error(&e)),
        };
        let c = conn.round_trip();
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(&self.client_name)
            .query_async::<()>(c)
            .await
            .map_err(|e| connect_error(&e))?;
        let mut identity = identify(conn.round_trip())
            .await
            .map_err(|e| connect_error(&e))?;
        // HELLO, CLIENT and INFO are served while the dataset loads; PING is
        // not. Say so by type instead of failing the first probe.
        if identity.details.get("loading").is_some_and(|l| l == "1") {
            return Err(ConnectError::new(
                ConnectResult::NotReady,
                "the server is loading its dataset (LOADING)",
            ));
        }
        identity.address = Some(
            HostPort {
                host: addr.host.clone(),
                port: identity_port(&identity).unwrap_or(addr.port),
            }
            .to_string(),
        );
        if self.direct
            && identity.role == Some(Role::Replica)
            && !self.replica_said.swap(true, Ordering::Relaxed)
        {
            self.notices.say(format!(
                "{addr} is a replica: applications that write need the master; if Sentinel manages it, point them (and this target) at redis+sentinel:// so that they follow a failover"
            ));
        }
        Ok(Connected {
            conn,
            identity,
            closed,
        })
    }
}

/// Whether the server refused `HELLO 3`. redis-rs types this only for the
/// pre-7 wording of the error (``unknown command `HELLO` ``); newer servers
/// (or a renamed `HELLO`) say `unknown command 'HELLO'` under the generic
/// `ERR` code, so the detail is the only signal there is.
fn refuses_resp3(e: &RedisError) -> bool {
    e.kind() == ErrorKind::RESP3NotSupported
        || (e.code() == Some("ERR")
            && e.detail()
                .is_some_and(|d| d.starts_with("unknown command") && d.contains("HELLO")))
}

fn identity_port(id: &Identity) -> Option<u16> {
    id.details.get("tcp_port")?.parse().ok()
}

/// Reads `INFO server` and `INFO replication` into an identity.
pub async fn identify(conn: &mut MultiplexedConnection) -> Result<Identity, RedisError> {
    let text: String = redis::cmd("INFO")
        .arg("server")
        .arg("replication")
        .arg("persistence")
        .query_async(conn)
        .await?;
    Ok(parse_info(&text))
}

/// Parses the `key:value` lines of `INFO`.
pub fn parse_info(text: &str) -> Identity {
    let fields: BTreeMap<&str, &str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim_end().split_once(':'))
        .collect();
    let mut details = BTreeMap::new();
    for k in [
        "loading",
        "master_replid",
        "tcp_port",
        "redis_mode",
        "master_host",
        "master_port",
    ] {
        if let Some(v) = fields.get(k) {
            details.insert(k.to_string(), v.to_string());
        }
    }
    Identity {
        server_id: fields.get("run_id").map(|s| s.to_string()),
        role: fields.get("role").and_then(|r| match *r {
            "master" => Some(Role::Primary),
            "slave" | "replica" => Some(Role::Replica),
            _ => None,
        }),
        uptime: fields
            .get("uptime_in_seconds")
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs),
        version: fields.get("redis_version").map(|s| s.to_string()),
        details,
        ..Identity::default()
    }
}

/// Classifies a driver error during connection set-up by its type.
pub fn connect_error(e: &RedisError) -> ConnectError {
    let result = match e.kind() {
        ErrorKind::AuthenticationFailed => ConnectResult::Auth,
        ErrorKind::Server(ServerErrorKind::BusyLoading | ServerErrorKind::MasterDown) => {
            ConnectResult::NotReady
        }
        ErrorKind::Server(ServerErrorKind::NoPerm) => ConnectResult::Auth,
        ErrorKind::Io => match find_io_error(e) {
            Some(io) => classify_io(io),
            None => ConnectResult::Io,
        },
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => ConnectResult::Protocol,
        _ => match e.code() {
            Some("WRONGPASS" | "NOAUTH" | "NOPERM") => ConnectResult::Auth,
            Some("LOADING" | "MASTERDOWN") => ConnectResult::NotReady,
            _ if crate::tls::is_tls_error(e) => ConnectResult::Tls,
            _ => ConnectResult::Protocol,
        },
    };
    ConnectError::new(result, e.to_string())
}

/// Classifies a driver error on a live connection.
pub fn probe_error(e: &RedisError) -> ProbeError {
    let cause = match find_io_error(e) {
        Some(io) => disconnect_cause(io),
        None if e.is_connection_dropped() => DisconnectCause::Closed,
        None => DisconnectCause::Error,
    };
    ProbeError::new(cause, e.to_string())
}

/// A standalone Redis target.
pub struct RedisStore {
    node: RedisNode,
    addr: HostPort,
}

/// What a `redis://` / `rediss://` URL says beyond its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// `rediss`.
    pub tls: bool,
    /// The database number (the URL path; 0 when it names none).
    pub db: i64,
}

/// The database number of a URL path: empty is 0, else 0 to 15 (a Redis
/// server's databases unless configured otherwise).
pub fn database(path: &str) -> Result<i64, String> {
    if path.is_empty() {
        return Ok(0);
    }
    match path.parse::<i64>() {
        Ok(n) if (0..=15).contains(&n) => Ok(n),
        _ => Err(format!(
            "the URL path is the database number, 0 to 15; got {:?}",
            path.chars().take(20).collect::<String>()
        )),
    }
}

/// `PING` on a live connection.
pub async fn ping(conn: &mut MultiplexedConnection) -> Result<(), ProbeError> {
    redis::cmd("PING")
        .query_async::<String>(conn)
        .await
        .map(|_| ())
        .map_err(|e| probe_error(&e))
}

impl Store for RedisStore {
    type Options = RedisOptions;
    type Conn = RedisConn;

    fn options(url: &DbUrl) -> Result<RedisOptions, String> {
        if url.hosts.len() > 1 {
            return Err(
                "a redis:// URL names one host (use redis+sentinel:// for sentinels)".into(),
            );
        }
        if url.query.is_some() {
            return Err(
                "a redis:// URL takes no query parameters (dbcanary sets the protocol and timeouts itself)".into(),
            );
        }
        if url.fragment.as_deref().is_some_and(|f| f != "insecure") {
            return Err("the only URL #fragment a rediss:// URL takes is #insecure".into());
        }
        Ok(RedisOptions {
            tls: url.scheme == "rediss",
            db: database(&url.path)?,
        })
    }

    fn new(spec: Spec<'_>, o: &RedisOptions) -> Self {
        Self {
            node: RedisNode::new(spec.name, spec.url, o.tls, o.db, true),
            addr: spec.url.first_host().clone(),
        }
    }

    fn notices(&self) -> Vec<String> {
        self.node.notices.take()
    }

    async fn connect(&self, timeout: Duration) -> Result<Connected<Self::Conn>, ConnectError> {
        self.node.open(&self.addr, timeout).await
    }

    async fn probe(&self, conn: &mut Self::Conn) -> Result<(), ProbeError> {
        ping(conn.round_trip()).await
    }

    async fn identify(&self, conn: &mut Self::Conn) -> Result<Identity, ProbeError> {
        let mut id = identify(conn.round_trip())
            .await
            .map_err(|e| probe_error(&e))?;
        id.address = Some(
            HostPort {
                host: self.addr.host.clone(),
                port: identity_port(&id).unwrap_or(self.addr.port),
            }
            .to_string(),
        );
        Ok(id)
    }

    async fn close(&self, conn: Self::Conn) {
        drop(conn);
    }
}
