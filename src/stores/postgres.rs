//! PostgreSQL (`postgres://`, `postgresql://`): one dedicated
//! `tokio_postgres::Client` per canary, never a pool (which would silently
//! replace a dropped connection and hide the very outage we measure).
//!
//! - The probe is an empty simple query (`""`): one round trip, no parse,
//!   no plan, nothing logged by the server.
//! - The connection announces itself with `application_name=dbcanary:<target>`
//!   (visible in `pg_stat_activity`).
//! - tokio-postgres hands out the connection's I/O as a `Connection` future
//!   that the caller drives: it ends the moment the server closes the socket
//!   (EOF), resets it, or says goodbye with a `FATAL` (`pg_terminate_backend`,
//!   shutdown). That end is the canary's [`CloseSignal`]: loss is seen when
//!   it happens, not at the next probe.
//! - The identity is read on every (re)connect and on every refresh, with
//!   read-only functions any role may run on PostgreSQL ≥ 10 by default:
//!   `pg_is_in_recovery()`, `pg_postmaster_start_time()`,
//!   `inet_server_addr()`/`inet_server_port()`, `server_version`, and on a
//!   primary the timeline of the current WAL file; plus `system_identifier`
//!   from `pg_control_system()` and, on a replica, the timeline of the last
//!   restart point from `pg_control_checkpoint()` where the role may execute
//!   them (a hardened server may revoke them: the identity then lacks those
//!   fields and says so, and outages it cannot tell apart are `unknown`).
//! - The server id is `<system_identifier>/<address>`: a physical replica
//!   shares its primary's system identifier, so the identifier alone cannot
//!   tell the promoted replica from the old primary behind one endpoint.
//! - TLS is rustls (ring), with libpq's `sslmode` semantics.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_postgres::config::{ChannelBinding, SslMode as DriverSslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Connection, Error, SimpleQueryMessage};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::dburl::{DbUrl, HostPort};
use crate::model::{ConnectResult, DisconnectCause, Identity, Role};
use crate::stores::bounded::{Bounded, ROUND_TRIP_BYTES, ReadBudget};
use crate::stores::{
    CloseSignal, ConnectError, Connected, Notices, ProbeError, Spec, Store, classify_io,
    disconnect_cause, resolve,
};
use crate::tls::{self, ClientTls, Roots, Verify, find_io_error, is_tls_error};

/// How long a dropped connection gets to send `Terminate` before its task
/// gives up on it (a hung server must not keep a task and a socket alive).
const QUIT_WITHIN: Duration = Duration::from_secs(1);

/// `?sslmode=` (libpq's names and meanings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain text.
    Disable,
    /// TLS when the server offers it, plain text otherwise (the default, as
    /// for libpq).
    Prefer,
    /// TLS or fail.
    Require,
    /// TLS, certificate chain verified.
    VerifyCa,
    /// TLS, certificate chain and host name verified.
    VerifyFull,
}

/// `?target_session_attrs=`: which server the canary accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAttrs {
    /// Any server that answers (the default).
    Any,
    /// A server that is not in recovery.
    Primary,
    /// A server whose sessions are not read-only by default.
    ReadWrite,
}

/// The connection options of a PostgreSQL URL beyond user, password, host,
/// port and database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    pub ssl_mode: SslMode,
    /// `sslrootcert`: PEM file of the CA(s) to trust instead of the built-in
    /// web roots. As with libpq, giving it makes `prefer` and `require`
    /// verify the certificate chain too.
    pub ssl_root_cert: Option<PathBuf>,
    /// `sslcert` and `sslkey`: client certificate chain and key (PEM).
    pub ssl_cert: Option<PathBuf>,
    pub ssl_key: Option<PathBuf>,
    pub session: SessionAttrs,
    pub channel_binding: ChannelBinding,
    /// `connect_timeout` (seconds), bounded by the target's `timeout`.
    pub connect_timeout: Option<Duration>,
}

const KNOWN: &str =
    "sslmode, sslrootcert, sslcert, sslkey, target_session_attrs, channel_binding, connect_timeout";

impl PgOptions {
    /// Parses and checks the query string of a `postgres://` URL. Unknown
    /// parameters are refused, so that a typo is not silently ignored.
    pub fn parse(url: &DbUrl) -> Result<Self, String> {
        let mut o = PgOptions {
            ssl_mode: SslMode::Prefer,
            ssl_root_cert: None,
            ssl_cert: None,
            ssl_key: None,
            session: SessionAttrs::Any,
            channel_binding: ChannelBinding::Prefer,
            connect_timeout: None,
        };
        let query = url.query.as_deref().unwrap_or("");
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "sslmode" => {
                    o.ssl_mode = match value.as_ref() {
                        "disable" => SslMode::Disable,
                        "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(format!(
                                "sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                            ));
                        }
                    }
                }
                "sslrootcert" => o.ssl_root_cert = Some(readable(&key, &value)?),
                "sslcert" => o.ssl_cert = Some(readable(&key, &value)?),
                "sslkey" => o.ssl_key = Some(readable(&key, &value)?),
                "target_session_attrs" => {
                    o.session = match value.as_ref() {
                        "any" => SessionAttrs::Any,
                        "primary" => SessionAttrs::Primary,
                        "read-write" => SessionAttrs::ReadWrite,
                        other => {
                            return Err(format!(
                                "target_session_attrs {other:?} is not one of any, primary, read-write"
                            ));
                        }
                    }
                }
                "channel_binding" => {
                    o.channel_binding = match value.as_ref() {
                        "disable" => ChannelBinding::Disable,
                        "prefer" => ChannelBinding::Prefer,
                        "require" => ChannelBinding::Require,
                        other => {
                            return Err(format!(
                                "channel_binding {other:?} is not one of disable, prefer, require"
                            ));
                        }
                    }
                }
                "connect_timeout" => {
                    let secs: u64 = value.parse().map_err(|_| {
                        format!("connect_timeout {value:?} is not a whole number of seconds")
                    })?;
                    // libpq: 0 (or nothing) waits forever; here the target's
                    // timeout bounds it anyway.
                    o.connect_timeout = (secs > 0).then(|| Duration::from_secs(secs));
                }
                "application_name" => {
                    return Err(
                        "application_name is set by the canary itself (dbcanary:<target>)".into(),
                    );
                }
                _ => {
                    return Err(format!("unknown URL parameter {key:?} (known: {KNOWN})"));
                }
            }
        }
        if o.ssl_cert.is_some() != o.ssl_key.is_some() {
            return Err("sslcert and sslkey go together".into());
        }
        if o.ssl_mode == SslMode::Disable && (o.ssl_root_cert.is_some() || o.ssl_cert.is_some()) {
            return Err(
                "sslrootcert, sslcert and sslkey need an sslmode other than disable".into(),
            );
        }
        if o.ssl_mode == SslMode::Disable && o.channel_binding == ChannelBinding::Require {
            return Err("channel_binding=require needs TLS (an sslmode other than disable)".into());
        }
        Ok(o)
    }

    /// The driver's TLS mode: `verify-*` are `require` to the driver, the
    /// verification is the rustls configuration's business.
    pub fn driver_ssl_mode(&self) -> DriverSslMode {
        match self.ssl_mode {
            SslMode::Disable => DriverSslMode::Disable,
            SslMode::Prefer => DriverSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverSslMode::Require,
        }
    }

    /// The rustls configuration for the mode, read from the files now (so a
    /// rotated certificate is picked up at the next reconnect).
    pub fn tls_config(&self) -> Result<ClientConfig, String> {
        let verify_chain = matches!(self.ssl_mode, SslMode::VerifyCa | SslMode::VerifyFull)
            || (self.ssl_root_cert.is_some() && self.ssl_mode != SslMode::Disable);
        let verify = match self.ssl_mode {
            _ if !verify_chain => Verify::Nothing,
            SslMode::VerifyFull => Verify::Full,
            _ => Verify::Chain,
        };
        tls::client_config(&ClientTls {
            verify,
            roots: match self.ssl_root_cert.as_deref() {
                Some(p) => Roots::File(("sslrootcert", p)),
                None => Roots::Web,
            },
            identity: match (&self.ssl_cert, &self.ssl_key) {
                (Some(cert), Some(key)) => Some((("sslcert", cert), ("sslkey", key))),
                _ => None,
            },
        })
    }
}

fn readable(key: &str, value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    std::fs::metadata(&path).map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
    Ok(path)
}

/// The identity query every role may run (PostgreSQL ≥ 10). The timeline of
/// a primary comes from its current WAL file name (its first 8 hex digits),
/// which moves the moment a replica is promoted; `pg_walfile_name` refuses
/// to run during recovery, hence the `CASE`. The last two columns say
/// whether the `pg_control_*` functions may be run.
const IDENTITY_SQL: &str = "SELECT pg_is_in_recovery(), \
     extract(epoch FROM clock_timestamp() - pg_postmaster_start_time()), \
     to_char(pg_postmaster_start_time() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
     host(inet_server_addr()), inet_server_port(), \
     current_setting('server_version'), current_setting('default_transaction_read_only'), \
     pg_backend_pid(), \
     CASE WHEN pg_is_in_recovery() THEN NULL ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END, \
     has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE'), \
     has_function_privilege('pg_catalog.pg_control_checkpoint()', 'EXECUTE')";

/// What the identity queries returned, as text (`None` = SQL NULL or not
/// readable).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub in_recovery: Option<bool>,
    pub uptime_s: Option<f64>,
    pub started_at: Option<String>,
    pub server_addr: Option<String>,
    pub server_port: Option<u16>,
    pub version: Option<String>,
    pub read_only_default: Option<bool>,
    pub backend_pid: Option<String>,
    /// The current WAL file's timeline on a primary (hex).
    pub wal_timeline_hex: Option<String>,
    pub system_identifier: Option<String>,
    /// The last checkpoint's (or restart point's) timeline.
    pub checkpoint_timeline: Option<String>,
    /// Identity fields the role may not read, with the function they need.
    pub missing: Vec<&'static str>,
}

/// The first row of a simple query's answer, as text.
fn first_row(messages: &[SimpleQueryMessage]) -> Option<Vec<Option<String>>> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => {
            Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
        }
        _ => None,
    })
}

fn pg_bool(v: &Option<String>) -> Option<bool> {
    match v.as_deref() {
        Some("t" | "on") => Some(true),
        Some("f" | "off") => Some(false),
        _ => None,
    }
}

/// Reads the identity facts on a live connection: one query every role may
/// run, and one for the `pg_control_*` functions the role may execute.
async fn read_facts(client: &Client) -> Result<Facts, Error> {
    let row = first_row(&client.simple_query(IDENTITY_SQL).await?).unwrap_or_default();
    let col = |i: usize| row.get(i).cloned().flatten();
    let mut f = Facts {
        in_recovery: pg_bool(&col(0)),
        uptime_s: col(1).and_then(|s| s.parse().ok()),
        started_at: col(2),
        server_addr: col(3),
        server_port: col(4).and_then(|s| s.parse().ok()),
        version: col(5),
        read_only_default: pg_bool(&col(6)),
        backend_pid: col(7),
        wal_timeline_hex: col(8),
        ..Facts::default()
    };
    let may_system = pg_bool(&col(9)) == Some(true);
    let may_checkpoint = pg_bool(&col(10)) == Some(true);
    if !may_system {
        f.missing
            .push("system_identifier (EXECUTE on pg_control_system())");
    }
    let replica = f.in_recovery == Some(true);
    if replica && !may_checkpoint {
        f.missing
            .push("timeline (EXECUTE on pg_control_checkpoint())");
    }
    let system = if may_system {
        "(SELECT system_identifier::text FROM pg_catalog.pg_control_system())"
    } else {
        "NULL"
    };
    let checkpoint = if replica && may_checkpoint {
        "(SELECT timeline_id::text FROM pg_catalog.pg_control_checkpoint())"
    } else {
        "NULL"
    };
    if may_system || (replica && may_checkpoint) {
        let sql = format!("SELECT {system}, {checkpoint}");
        let row = first_row(&client.simple_query(&sql).await?).unwrap_or_default();
        f.system_identifier = row.first().cloned().flatten();
        f.checkpoint_timeline = row.get(1).cloned().flatten();
    }
    Ok(f)
}

/// Builds the identity from the facts. `url_addr` stands in for the
/// server's own address when it has none (never over TCP).
pub fn build_identity(f: &Facts, url_addr: &HostPort) -> Identity {
    let address = match (&f.server_addr, f.server_port) {
        (Some(host), Some(port)) => HostPort {
            host: host.clone(),
            port,
        },
        _ => url_addr.clone(),
    }
    .to_string();
    let timeline = match f.in_recovery {
        Some(false) => f
            .wal_timeline_hex
            .as_deref()
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .map(|t| t.to_string()),
        _ => f.checkpoint_timeline.clone(),
    };
    let mut details = BTreeMap::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            details.insert(k.to_string(), v);
        }
    };
    put("system_identifier", f.system_identifier.clone());
    put("timeline", timeline.clone());
    put("postmaster_start_time", f.started_at.clone());
    put("backend_pid", f.backend_pid.clone());
    put(
        "default_transaction_read_only",
        f.read_only_default
            .map(|b| if b { "on" } else { "off" }.to_string()),
    );
    put(
        "missing",
        (!f.missing.is_empty()).then(|| f.missing.join(", ")),
    );
    Identity {
        server_id: f
            .system_identifier
            .as_ref()
            .map(|sysid| format!("{sysid}/{address}")),
        role: f
            .in_recovery
            .map(|r| if r { Role::Replica } else { Role::Primary }),
        uptime: f
            .uptime_s
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64),
        // From pg_postmaster_start_time(), to the microsecond.
        uptime_resolution: Some(Duration::from_micros(1)),
        epoch: timeline,
        address: Some(address),
        version: f.version.clone(),
        details,
        ..Identity::default()
    }
}

/// The error as one readable line: the driver's kind and the server's
/// message (`FATAL: password authentication failed for user "x"`). Never
/// holds a password: neither the driver nor the server repeats it.
fn message(e: &Error) -> String {
    match std::error::Error::source(e) {
        Some(src) => format!("{e}: {}", src.to_string().replace('\n', " ")),
        None => e.to_string(),
    }
}

/// The attempt result for a server error during connection set-up.
fn sqlstate_result(code: &SqlState) -> ConnectResult {
    if code.code().starts_with("28")
        || [
            SqlState::INVALID_CATALOG_NAME,
            SqlState::INSUFFICIENT_PRIVILEGE,
        ]
        .contains(code)
    {
        // Bad password, unknown role, no pg_hba.conf entry (class 28),
        // unknown database, no CONNECT privilege on it.
        return ConnectResult::Auth;
    }
    if [
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
    ]
    .contains(code)
    {
        // Starting up, shutting down, in recovery without hot standby, out
        // of connection slots: the server is there but does not serve yet.
        return ConnectResult::NotReady;
    }
    ConnectResult::Protocol
}

/// Classifies a driver error during connection set-up: by SQLSTATE for the
/// server's errors, by type for I/O and TLS. tokio-postgres keeps its error
/// kinds private and displays each as a fixed name (never server text), so
/// that name is the only way left to tell its authentication errors
/// (including "password missing", a configuration error to the driver)
/// and a server that refuses TLS under `sslmode=require`.
pub fn connect_error(e: &Error) -> ConnectError {
    let result = if let Some(code) = e.code() {
        sqlstate_result(code)
    } else if is_tls_error(e) {
        ConnectResult::Tls
    } else if let Some(io) = find_io_error(e) {
        classify_io(io)
    } else if e.is_closed() {
        ConnectResult::Io
    } else {
        match e.to_string().as_str() {
            "authentication error" | "invalid configuration" => ConnectResult::Auth,
            "error performing TLS handshake" => ConnectResult::Tls,
            "timeout waiting for server" => ConnectResult::Timeout,
            _ => ConnectResult::Protocol,
        }
    };
    ConnectError::new(result, message(e))
}

/// The disconnect cause for an error on an established connection: a
/// server that says goodbye (`FATAL`, e.g. `pg_terminate_backend` or a
/// shutdown) and then closes, or simply closes, is `closed`.
fn cause_of(e: &Error) -> DisconnectCause {
    if e.is_closed() {
        return DisconnectCause::Closed;
    }
    if let Some(db) = e.as_db_error() {
        return if matches!(db.severity(), "FATAL" | "PANIC")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
            ]
            .contains(db.code())
        {
            DisconnectCause::Closed
        } else {
            DisconnectCause::Error
        };
    }
    match find_io_error(e) {
        Some(io) => disconnect_cause(io),
        None => DisconnectCause::Error,
    }
}

/// Classifies a driver error on a live connection.
pub fn probe_error(e: &Error) -> ProbeError {
    ProbeError::new(cause_of(e), message(e))
}

/// The canary's connection: the client, and the task driving the
/// driver's `Connection`. Dropping it drops the client, so the driver says
/// `Terminate` and ends; the task is told to give up after [`QUIT_WITHIN`]
/// should a hung server not take even that.
pub struct PgConn {
    client: Client,
    /// What the connection may still read this round trip.
    budget: Arc<ReadBudget>,
    /// Dropped with the connection: starts the task's [`QUIT_WITHIN`].
    gone: oneshot::Sender<()>,
    /// Resolves when the driver task has ended.
    ended: oneshot::Receiver<()>,
}

impl PgConn {
    /// Spawns the driver's connection future; its end is the close signal.
    fn start<S, T>(
        client: Client,
        connection: Connection<S, T>,
        budget: Arc<ReadBudget>,
    ) -> (PgConn, CloseSignal)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (gone_tx, gone_rx) = oneshot::channel::<()>();
        let (closed_tx, closed_rx) = oneshot::channel::<DisconnectCause>();
        let (ended_tx, ended_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let end = tokio::select! {
                r = &mut connection => Some(r),
                _ = gone_rx => tokio::time::timeout(QUIT_WITHIN, connection).await.ok(),
            };
            let cause = match end {
                Some(Ok(())) | None => DisconnectCause::Closed,
                Some(Err(e)) => cause_of(&e),
            };
            let _ = closed_tx.send(cause);
            let _ = ended_tx.send(());
        });
        let closed =
            CloseSignal::new(async move { closed_rx.await.unwrap_or(DisconnectCause::Closed) });
        (
            PgConn {
                client,
                budget,
                gone: gone_tx,
                ended: ended_rx,
            },
            closed,
        )
    }
}

/// A PostgreSQL target.
pub struct PostgresStore {
    target: String,
    addr: HostPort,
    user: Option<String>,
    password: Option<String>,
    dbname: Option<String>,
    options: PgOptions,
    /// Whether the missing `pg_control_*` privileges were logged.
    missing_logged: AtomicBool,
    /// Whether "too many connections" was said for the current streak.
    too_many_logged: AtomicBool,
    notices: Notices,
}

impl PostgresStore {
    /// Builds the store from options [`PgOptions::parse`] accepted.
    fn build(target: &str, url: &DbUrl, options: PgOptions) -> Self {
        let dbname = (!url.path.is_empty()).then(|| {
            percent_encoding::percent_decode_str(&url.path)
                .decode_utf8_lossy()
                .into_owned()
        });
        Self {
            target: target.to_string(),
            addr: url.first_host().clone(),
            user: url.username.clone(),
            password: url.password().map(str::to_string),
            dbname,
            options,
            missing_logged: AtomicBool::new(false),
            too_many_logged: AtomicBool::new(false),
            notices: Notices::default(),
        }
    }

    fn config(&self, timeout: Duration) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.addr.host)
            .port(self.addr.port)
            .application_name(format!("dbcanary:{}", self.target))
            .ssl_mode(self.options.driver_ssl_mode())
            .channel_binding(self.options.channel_binding)
            .connect_timeout(
                self.options
                    .connect_timeout
                    .map_or(timeout, |t| t.min(timeout)),
            );
        if let Some(u) = &self.user {
            c.user(u);
        }
        if let Some(p) = &self.password {
            c.password(p);
        }
        if let Some(d) = &self.dbname {
            c.dbname(d);
        }
        c
    }

    fn connect_error(&self, e: &Error) -> ConnectError {
        let err = connect_error(e);
        if e.code() == Some(&SqlState::TOO_MANY_CONNECTIONS)
            && !self.too_many_logged.swap(true, Ordering::Relaxed)
        {
            self.notices.say(
                "the server refuses new connections: too many connections; attempts count as not_ready until it accepts again",
            );
        }
        err
    }

    async fn identity(&self, client: &Client) -> Result<Identity, Error> {
        let facts = read_facts(client).await?;
        if !facts.missing.is_empty() && !self.missing_logged.swap(true, Ordering::Relaxed) {
            self.notices.say(format!(
                "the canary's role may not read part of the identity ({}): outages it cannot tell apart are classified unknown",
                facts.missing.join(", ")
            ));
        }
        Ok(build_identity(&facts, &self.addr))
    }

    /// Refuses a server the URL does not accept (`target_session_attrs`).
    fn check_session(&self, id: &Identity) -> Result<(), ConnectError> {
        let refuse = match self.options.session {
            SessionAttrs::Any => None,
            SessionAttrs::Primary => (id.role != Some(Role::Primary))
                .then_some("the server is in recovery and the URL asks for a primary"),
            SessionAttrs::ReadWrite => (id.role != Some(Role::Primary)
                || id
                    .details
                    .get("default_transaction_read_only")
                    .map(String::as_str)
                    != Some("off"))
            .then_some("the server does not accept writes and the URL asks for read-write"),
        };
        match refuse {
            Some(reason) => Err(ConnectError::new(ConnectResult::NotReady, reason)),
            None => Ok(()),
        }
    }
}

impl Store for PostgresStore {
    type Options = PgOptions;
    type Conn = PgConn;

    /// Checks a `postgres://`/`postgresql://` URL: one TCP host, no
    /// fragment, a database name without '/', the query options and the
    /// certificate files they name.
    fn options(url: &DbUrl) -> Result<PgOptions, String> {
        if url.hosts.len() > 1 {
            return Err("a PostgreSQL URL names one host (put a proxy in front of several)".into());
        }
        let host = &url.first_host().host;
        if host.starts_with('/') || host.to_ascii_lowercase().starts_with("%2f") {
            return Err("Unix sockets are not supported: the canary connects over TCP".into());
        }
        if url.fragment.is_some() {
            return Err("a PostgreSQL URL takes no #fragment".into());
        }
        if url.path.contains('/') {
            return Err("the URL path is the database name and holds no '/'".into());
        }
        let o = PgOptions::parse(url)?;
        o.tls_config()?;
        Ok(o)
    }

    fn new(spec: Spec<'_>, options: &PgOptions) -> Self {
        Self::build(spec.name, spec.url, options.clone())
    }

    fn notices(&self) -> Vec<String> {
        self.notices.take()
    }

    async fn connect(&self, timeout: Duration) -> Result<Connected<Self::Conn>, ConnectError> {
        resolve(&self.addr.host, self.addr.port).await?;
        let tls = self
            .options
            .tls_config()
            .map_err(|reason| ConnectError::new(ConnectResult::Tls, reason))?;
        let config = self.config(timeout);
        // The agent's own TCP stream, its reads bounded (a hostile server
        // declaring a 2 GiB message costs a `protocol` error, not memory).
        let connect_within = self
            .options
            .connect_timeout
            .map_or(timeout, |t| t.min(timeout));
        let tcp = tokio::time::timeout(
            connect_within,
            TcpStream::connect((self.addr.host.as_str(), self.addr.port)),
        )
        .await
        .map_err(|_| {
            ConnectError::new(
                ConnectResult::Timeout,
                format!(
                    "no TCP connection within {}",
                    humantime::format_duration(connect_within)
                ),
            )
        })?
        .map_err(|e| ConnectError::new(classify_io(&e), format!("{}: {e}", self.addr)))?;
        let _ = tcp.set_nodelay(true);
        let budget = ReadBudget::new(ROUND_TRIP_BYTES);
        let mut make = MakeRustlsConnect::new(tls);
        let connector =
            MakeTlsConnect::<Bounded<TcpStream>>::make_tls_connect(&mut make, &self.addr.host)
                .unwrap_or_else(|never| match never {});
        let (client, connection) = config
            .connect_raw(Bounded::new(tcp, budget.clone()), connector)
            .await
            .map_err(|e| {
                // Bytes that were no PostgreSQL message, then a close: the
                // endpoint does not speak the protocol (a server that
                // refuses says so with a SQLSTATE first).
                if e.is_closed() && e.code().is_none() && budget.used() > 0 {
                    ConnectError::new(
                        ConnectResult::Protocol,
                        "the server sent no PostgreSQL message and closed the connection",
                    )
                } else {
                    self.connect_error(&e)
                }
            })?;
        self.too_many_logged.store(false, Ordering::Relaxed);
        let (conn, closed) = PgConn::start(client, connection, budget);
        conn.budget.refill();
        let identity = self
            .identity(&conn.client)
            .await
            .map_err(|e| connect_error(&e))?;
        self.check_session(&identity)?;
        Ok(Connected {
            conn,
            identity,
            closed,
        })
    }

    async fn probe(&self, conn: &mut Self::Conn) -> Result<(), ProbeError> {
        conn.budget.refill();
        conn.client
            .simple_query("")
            .await
            .map(|_| ())
            .map_err(|e| probe_error(&e))
    }

    async fn identify(&self, conn: &mut Self::Conn) -> Result<Identity, ProbeError> {
        conn.budget.refill();
        self.identity(&conn.client)
            .await
            .map_err(|e| probe_error(&e))
    }

    async fn close(&self, conn: Self::Conn) {
        let PgConn {
            client,
            gone,
            ended,
            ..
        } = conn;
        // The driver says Terminate and ends; should it hang, the task gives
        // up QUIT_WITHIN after `gone`.
        drop(client);
        drop(gone);
        let _ = ended.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp() -> HostPort {
        HostPort {
            host: "db.example".into(),
            port: 5432,
        }
    }

    fn primary() -> Facts {
        Facts {
            in_recovery: Some(false),
            uptime_s: Some(12.5),
            started_at: Some("2026-01-01T00:00:00.000000Z".into()),
            server_addr: Some("10.0.0.5".into()),
            server_port: Some(5433),
            version: Some("15.20".into()),
            read_only_default: Some(false),
            backend_pid: Some("4242".into()),
            wal_timeline_hex: Some("0000000A".into()),
            system_identifier: Some("7712279821377455637".into()),
            checkpoint_timeline: None,
            missing: Vec::new(),
        }
    }

    #[test]
    fn identity_of_a_primary() {
        let id = build_identity(&primary(), &hp());
        assert_eq!(
            id.server_id.as_deref(),
            Some("7712279821377455637/10.0.0.5:5433")
        );
        assert_eq!(id.role, Some(Role::Primary));
        assert_eq!(id.address.as_deref(), Some("10.0.0.5:5433"));
        assert_eq!(id.epoch.as_deref(), Some("10"), "hex WAL timeline");
        assert_eq!(id.uptime, Some(Duration::from_millis(12500)));
        assert_eq!(id.version.as_deref(), Some("15.20"));
        assert_eq!(id.details["backend_pid"], "4242");
        assert!(!id.details.contains_key("missing"));
    }

    #[test]
    fn replica_timeline_comes_from_the_checkpoint_and_ipv6_is_bracketed() {
        let f = Facts {
            in_recovery: Some(true),
            wal_timeline_hex: None,
            checkpoint_timeline: Some("3".into()),
            server_addr: Some("::1".into()),
            ..primary()
        };
        let id = build_identity(&f, &hp());
        assert_eq!(id.role, Some(Role::Replica));
        assert_eq!(id.epoch.as_deref(), Some("3"));
        assert_eq!(id.address.as_deref(), Some("[::1]:5433"));
    }

    #[test]
    fn missing_privileges_leave_the_server_id_out_and_say_why() {
        let f = Facts {
            system_identifier: None,
            server_addr: None,
            missing: vec!["system_identifier (EXECUTE on pg_control_system())"],
            ..primary()
        };
        let id = build_identity(&f, &hp());
        assert_eq!(id.server_id, None);
        assert_eq!(id.address.as_deref(), Some("db.example:5432"));
        assert!(id.details["missing"].contains("pg_control_system"));
        // Without a server id, an outage of a server that kept running
        // cannot be told from a failover: unknown, naming the field.
        let c = crate::classify::classify(Some(&id), &id, Duration::from_millis(100));
        assert_eq!(c.kind, crate::model::OutageKind::Unknown);
        assert!(c.reason.contains("server id"), "{}", c.reason);
    }

    #[test]
    fn url_options() {
        let p = |u: &str| PgOptions::parse(&DbUrl::parse(u).unwrap());
        assert_eq!(p("postgres://h/db").unwrap().ssl_mode, SslMode::Prefer);
        assert_eq!(
            p("postgresql://h/db?sslmode=verify-full").unwrap().ssl_mode,
            SslMode::VerifyFull
        );
        assert_eq!(
            p("postgres://h/?target_session_attrs=primary")
                .unwrap()
                .session,
            SessionAttrs::Primary
        );
        assert_eq!(
            p("postgres://h/?connect_timeout=3")
                .unwrap()
                .connect_timeout,
            Some(Duration::from_secs(3))
        );
        assert!(p("postgres://h/?sslmode=allow").is_err());
        assert!(p("postgres://h/?sslmode=disable&channel_binding=require").is_err());
        assert!(
            p("postgres://h/?ssl-mode=require")
                .unwrap_err()
                .contains("unknown URL parameter")
        );
        assert!(p("postgres://h/?application_name=x").is_err());
        assert!(p("postgres://h/?sslrootcert=/nonexistent/ca.pem").is_err());
        let e = <PostgresStore as Store>::options(
            &DbUrl::parse("postgres://u:hunter2@a,b/db?x=1").unwrap(),
        )
        .unwrap_err();
        assert!(!e.contains("hunter2"));
        let e = <PostgresStore as Store>::options(
            &DbUrl::parse("postgres://u:hunter2@h/db?x=1").unwrap(),
        )
        .unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(
            <PostgresStore as Store>::options(
                &DbUrl::parse("postgres://u@%2Fvar%2Frun%2Fpostgresql/db").unwrap()
            )
            .is_err()
        );
        assert!(
            <PostgresStore as Store>::options(
                &DbUrl::parse("postgresql://postgres@127.0.0.1:5432").unwrap()
            )
            .is_ok()
        );
        for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            let o = p(&format!("postgres://h/?sslmode={mode}")).unwrap();
            assert!(o.tls_config().is_ok(), "{mode}");
        }
    }

    #[test]
    fn server_errors_are_classified_by_sqlstate() {
        let r = |code: &str| sqlstate_result(&SqlState::from_code(code));
        assert_eq!(r("28P01"), ConnectResult::Auth, "invalid_password");
        assert_eq!(r("28000"), ConnectResult::Auth, "no pg_hba.conf entry");
        assert_eq!(r("3D000"), ConnectResult::Auth, "unknown database");
        assert_eq!(r("42501"), ConnectResult::Auth, "no CONNECT privilege");
        assert_eq!(r("57P03"), ConnectResult::NotReady, "starting up");
        assert_eq!(r("53300"), ConnectResult::NotReady, "too many connections");
        assert_eq!(r("57P01"), ConnectResult::NotReady, "shutting down");
        assert_eq!(r("08P01"), ConnectResult::Protocol);
    }
}
