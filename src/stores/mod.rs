//! The stores dbcanary watches, behind one [`Store`] trait. Store code knows
//! its protocol and nothing else: no metrics, no spans, no HTTP. The generic
//! canary drives every store the same way and owns all timing.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::events::{ConnectResult, DisconnectCause, FailoverSource};

pub mod http;
pub mod mongodb;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod sentinel;

/// Which kind of store a target is, decided by its URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    Redis,
    RedisSentinel,
    Mysql,
    Mongodb,
    Postgresql,
    Http,
}

impl StoreKind {
    /// The store kind for a URL scheme, if dbcanary knows the scheme.
    pub fn from_scheme(scheme: &str) -> Option<Self> {
        Some(match scheme {
            "redis" | "rediss" => Self::Redis,
            "redis+sentinel" | "rediss+sentinel" => Self::RedisSentinel,
            "mysql" | "mariadb" => Self::Mysql,
            "mongodb" | "mongodb+srv" => Self::Mongodb,
            "postgres" | "postgresql" => Self::Postgresql,
            "http" | "https" => Self::Http,
            _ => return None,
        })
    }

    /// The `store` label value (Sentinel targets are Redis targets).
    pub fn label(self) -> &'static str {
        match self {
            Self::Redis | Self::RedisSentinel => "redis",
            Self::Mysql => "mysql",
            Self::Mongodb => "mongodb",
            Self::Postgresql => "postgresql",
            Self::Http => "http",
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The role of the server that answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    Replica,
}

impl Role {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Replica => "replica",
        }
    }
}

/// What the agent learns about the server behind the endpoint on every
/// (re)connect (SPEC "identity"). Every field is optional: a store fills in
/// what it can, and classification says which missing field stopped it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Identity {
    /// Stable id of the server (Redis `run_id`, MySQL `server_uuid`, ...).
    pub server_id: Option<String>,
    pub role: Option<Role>,
    /// Server uptime when the identity was read.
    #[serde(serialize_with = "ser_opt_secs", rename = "uptime_s")]
    pub uptime: Option<Duration>,
    /// Id of the server process, where the store reports one without an
    /// uptime (MongoDB `topologyVersion.processId`).
    pub process_id: Option<String>,
    /// A topology epoch that only moves forward (MongoDB `electionId`,
    /// PostgreSQL timeline).
    pub epoch: Option<String>,
    /// The address actually reached (`host:port`).
    pub address: Option<String>,
    pub version: Option<String>,
    /// Store-specific extras shown in the API (e.g. Redis `master_replid`).
    pub details: BTreeMap<String, String>,
    /// When the identity was read (monotonic), to extrapolate the uptime.
    #[serde(skip)]
    pub read_at: Option<Instant>,
}

fn ser_opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// A failed connection attempt, with its bounded kind.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ConnectError {
    pub result: ConnectResult,
    /// Human-readable, free of credentials.
    pub message: String,
}

impl ConnectError {
    pub fn new(result: ConnectResult, message: impl Into<String>) -> Self {
        Self {
            result,
            message: message.into(),
        }
    }
}

/// A failed probe.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProbeError {
    pub cause: DisconnectCause,
    pub message: String,
}

impl ProbeError {
    pub fn new(cause: DisconnectCause, message: impl Into<String>) -> Self {
        Self {
            cause,
            message: message.into(),
        }
    }
}

/// Resolves when the transport reports the connection gone, so that loss is
/// seen the moment it happens rather than at the next probe. A store whose
/// driver hides this hands out [`CloseSignal::never`] and relies on probes.
pub struct CloseSignal(Option<Pin<Box<dyn Future<Output = DisconnectCause> + Send>>>);

impl CloseSignal {
    /// A signal fed by the store's transport: `wait` resolves when the
    /// connection is gone.
    pub fn new(wait: impl Future<Output = DisconnectCause> + Send + 'static) -> Self {
        Self(Some(Box::pin(wait)))
    }

    /// No transport signal: detection is bounded by the probe interval.
    pub fn never() -> Self {
        Self(None)
    }

    /// Waits for the transport to report the connection gone.
    pub async fn closed(&mut self) -> DisconnectCause {
        match &mut self.0 {
            Some(wait) => wait.await,
            None => std::future::pending().await,
        }
    }
}

/// A new canary connection.
pub struct Connected<C> {
    pub conn: C,
    pub identity: Identity,
    pub closed: CloseSignal,
}

/// News the store pushes about its topology, outside any connection.
#[derive(Debug, Clone)]
pub enum Announcement {
    /// The store announced a failover (Sentinel `+switch-master`, a new
    /// MongoDB primary), learned from `source`.
    Failover {
        source: FailoverSource,
        from: String,
        to: String,
    },
    /// Something to tell the operator (e.g. every sentinel unreachable).
    Notice(String),
}

/// One store implementation. The canary wraps every call in its own timeout,
/// so an implementation may simply await its driver.
pub trait Store: Send + Sync + 'static {
    type Conn: Send + 'static;

    /// Opens a canary connection: TCP, TLS, auth, handshake, identity read.
    fn connect(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Connected<Self::Conn>, ConnectError>> + Send;

    /// One cheap round trip.
    fn probe(&self, conn: &mut Self::Conn) -> impl Future<Output = Result<(), ProbeError>> + Send;

    /// Re-reads the identity on a live connection (role changes without an
    /// outage).
    fn identify(
        &self,
        conn: &mut Self::Conn,
    ) -> impl Future<Output = Result<Identity, ProbeError>> + Send;

    /// Closes the connection politely.
    fn close(&self, conn: Self::Conn) -> impl Future<Output = ()> + Send;

    /// Whether [`Store::announce`] reports every primary change itself. A
    /// role flip seen on an identity refresh is then not counted as a
    /// failover again: the refresh may see it just before the announcement.
    fn announces_role_changes(&self) -> bool {
        false
    }

    /// Runs until `tx` is closed, pushing the store's topology news. Stores
    /// without announcements never send anything.
    fn announce(&self, tx: mpsc::Sender<Announcement>) -> impl Future<Output = ()> + Send {
        async move { tx.closed().await }
    }
}

/// Checks the store-specific parts of a target's URL (query options, host
/// count) when the configuration is read, so that a bad URL is a config
/// error rather than a canary that never starts. The reason never contains
/// the URL.
pub fn check_url(kind: StoreKind, url: &crate::dburl::DbUrl) -> Result<(), String> {
    match kind {
        StoreKind::Mysql => mysql::check_url(url),
        StoreKind::Mongodb => mongodb::check_url(url),
        StoreKind::Postgresql => postgres::check_url(url),
        _ => Ok(()),
    }
}

/// Resolves `host:port` before a driver does, so that a name that does not
/// resolve is reported as `dns` by type rather than by a driver's message.
pub async fn resolve(host: &str, port: u16) -> Result<(), ConnectError> {
    match tokio::net::lookup_host((host, port))
        .await
        .map(|a| a.count())
    {
        Ok(n) if n > 0 => Ok(()),
        Ok(_) => Err(ConnectError::new(
            ConnectResult::Dns,
            format!("{host} resolves to no address"),
        )),
        Err(e) => Err(ConnectError::new(
            ConnectResult::Dns,
            format!("cannot resolve {host}: {e}"),
        )),
    }
}

/// The bounded attempt result for an I/O error, decided by its kind (and,
/// for TLS, by the error type inside it).
pub fn classify_io(e: &io::Error) -> ConnectResult {
    if is_tls_error(e) {
        return ConnectResult::Tls;
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ConnectResult::Refused,
        io::ErrorKind::TimedOut => ConnectResult::Timeout,
        _ => ConnectResult::Io,
    }
}

/// The disconnect cause for an I/O error on an established connection.
pub fn disconnect_cause(e: &io::Error) -> DisconnectCause {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => DisconnectCause::Reset,
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe | io::ErrorKind::NotConnected => {
            DisconnectCause::Closed
        }
        io::ErrorKind::TimedOut => DisconnectCause::Timeout,
        _ => DisconnectCause::Error,
    }
}

/// Walks an error chain, looking through the `Arc<dyn Error>` wrappers that
/// drivers (redis-rs) put around the real error.
fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Vec<&'a (dyn std::error::Error + 'static)> {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let mut out = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(inner) = err.downcast_ref::<Shared>() {
            out.extend(chain(inner.as_ref()));
        }
        if let Some(inner) = err.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            out.push(inner as &(dyn std::error::Error + 'static));
        }
        out.push(err);
        cur = err.source();
    }
    out
}

/// Whether any error in the chain is a rustls error.
pub fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    chain(e).iter().any(|err| err.is::<rustls::Error>())
}

/// The first `io::Error` in an error's chain.
pub fn find_io_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    chain(e)
        .into_iter()
        .find_map(|err| err.downcast_ref::<io::Error>())
}

/// Runs the canary of a target until `shutdown` is cancelled: the one place
/// a store kind is mapped to its implementation for the agent.
pub async fn run_canary(
    target: crate::config::Target,
    info: std::sync::Arc<crate::events::TargetInfo>,
    sink: std::sync::Arc<dyn crate::events::EventSink>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use crate::canary::Canary;
    let s = target.settings;
    match target.kind {
        StoreKind::Redis => {
            Canary::new(
                redis::RedisStore::new(&target.name, &target.url),
                info,
                s,
                sink,
            )
            .run(shutdown)
            .await
        }
        StoreKind::RedisSentinel => {
            Canary::new(
                sentinel::SentinelStore::new(&target.name, &target.url, s.timeout),
                info,
                s,
                sink,
            )
            .run(shutdown)
            .await
        }
        StoreKind::Mysql => match mysql::MysqlStore::new(&target.name, &target.url) {
            Ok(store) => Canary::new(store, info, s, sink).run(shutdown).await,
            Err(reason) => {
                tracing::error!(target_name = %target.name, %reason, "bad MySQL URL: target not watched");
            }
        },
        StoreKind::Mongodb => {
            Canary::new(
                mongodb::MongoStore::new(&target.name, &target.url),
                info,
                s,
                sink,
            )
            .run(shutdown)
            .await
        }
        StoreKind::Http => {
            Canary::new(
                http::HttpStore::new(&target.url, &target.http, s.timeout),
                info,
                s,
                sink,
            )
            .run(shutdown)
            .await
        }
        StoreKind::Postgresql => match postgres::PostgresStore::new(&target.name, &target.url) {
            Ok(store) => Canary::new(store, info, s, sink).run(shutdown).await,
            Err(reason) => {
                tracing::error!(target_name = %target.name, %reason, "bad PostgreSQL URL: target not watched");
            }
        },
    }
}

/// Connects and probes a target once (`dbcanary check`): the identity and
/// the time it took.
pub async fn check_once(
    target: &crate::config::Target,
) -> Result<(Identity, Duration), ConnectError> {
    async fn once<S: Store>(store: S, t: Duration) -> Result<Identity, ConnectError> {
        let c = crate::canary::attempt(&store, t).await?;
        store.close(c.conn).await;
        Ok(c.identity)
    }
    let t = target.settings.timeout;
    let start = Instant::now();
    let identity = match target.kind {
        StoreKind::Redis => once(redis::RedisStore::new(&target.name, &target.url), t).await?,
        StoreKind::RedisSentinel => {
            once(
                sentinel::SentinelStore::new(&target.name, &target.url, t),
                t,
            )
            .await?
        }
        StoreKind::Mysql => {
            let store = mysql::MysqlStore::new(&target.name, &target.url)
                .map_err(|reason| ConnectError::new(ConnectResult::Protocol, reason))?;
            once(store, t).await?
        }
        StoreKind::Mongodb => once(mongodb::MongoStore::new(&target.name, &target.url), t).await?,
        StoreKind::Http => once(http::HttpStore::new(&target.url, &target.http, t), t).await?,
        StoreKind::Postgresql => {
            let store = postgres::PostgresStore::new(&target.name, &target.url)
                .map_err(|reason| ConnectError::new(ConnectResult::Protocol, reason))?;
            once(store, t).await?
        }
    };
    Ok((identity, start.elapsed()))
}
