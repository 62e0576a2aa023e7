//! MySQL and MariaDB (`mysql://`, `mariadb://`): one dedicated
//! `mysql_async::Conn` per canary — never a `Pool`, which would silently
//! replace a dropped connection and hide the very outage we measure.
//!
//! - The probe is `COM_PING`.
//! - The identity is read on every (re)connect and on every refresh:
//!   `@@server_uuid` where the server has it (MySQL), otherwise a stable
//!   hash of `@@hostname`, `@@port`, `@@datadir`, `@@server_id` (MariaDB has
//!   no server UUID); `@@version`; `Uptime`; `@@read_only`; and whether the
//!   server replicates (`SHOW REPLICA STATUS`, or `SHOW SLAVE STATUS` on
//!   servers that predate it). Role = replica when it replicates or is
//!   read-only.
//! - The connection announces itself with the connect attribute
//!   `program_name=dbcanary:<target>` (visible in
//!   `performance_schema.session_connect_attrs` where that is enabled): the
//!   driver sends arbitrary connect attributes, so this is exactly what the
//!   SPEC asks for.
//! - `mysql_async` has no idle-close signal: it notices a closed connection
//!   only when it next reads or writes, and it exposes neither its socket nor
//!   an event for EOF. Detection of a server-side close is therefore bounded
//!   by the probe interval ([`CloseSignal::never`]).
//! - The driver has no connect or read timeout of its own; the canary bounds
//!   every call with `tokio::time::timeout`. What the driver does have and we
//!   set: no Unix-socket switch (`prefer_socket=false`, or a loopback URL
//!   would bypass a proxy in front of the server), `TCP_NODELAY`, no
//!   statement cache.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{
    ClientIdentity, Conn, DriverError, Error, IoError, Opts, OptsBuilder, Row, ServerError, SslOpts,
};

use crate::dburl::{DbUrl, HostPort};
use crate::model::{ConnectResult, DisconnectCause, Identity, Role};
use crate::stores::{
    CloseSignal, ConnectError, Connected, Notices, ProbeError, Spec, Store, classify_io,
    disconnect_cause, resolve,
};
use crate::tls::{find_io_error, is_tls_error};

/// How long a dropped connection gets to send `COM_QUIT` before its socket
/// is simply closed.
const QUIT_WITHIN: Duration = Duration::from_secs(1);

/// Server error codes the canary tells apart (same numbers on MySQL and
/// MariaDB unless noted).
mod code {
    pub const CON_COUNT: u16 = 1040; // ER_CON_COUNT_ERROR: too many connections
    pub const DBACCESS_DENIED: u16 = 1044;
    pub const ACCESS_DENIED: u16 = 1045;
    pub const BAD_DB: u16 = 1049;
    pub const SERVER_SHUTDOWN: u16 = 1053;
    pub const PARSE_ERROR: u16 = 1064;
    pub const HOST_IS_BLOCKED: u16 = 1129;
    pub const HOST_NOT_PRIVILEGED: u16 = 1130;
    pub const TOO_MANY_USER_CONNECTIONS: u16 = 1203; // global max_user_connections
    pub const USER_LIMIT_REACHED: u16 = 1226; // the account's MAX_USER_CONNECTIONS
    pub const SPECIFIC_ACCESS_DENIED: u16 = 1227;
    pub const NOT_SUPPORTED_AUTH_MODE: u16 = 1251;
    pub const ACCESS_DENIED_NO_PASSWORD: u16 = 1698;
    pub const CONNECTION_KILLED: u16 = 1927; // MariaDB
    pub const SERVER_OFFLINE_MODE: u16 = 3032; // MySQL
    pub const ACCOUNT_LOCKED_MYSQL: u16 = 3118; // MySQL ER_ACCOUNT_HAS_BEEN_LOCKED
    pub const SECURE_TRANSPORT_REQUIRED: u16 = 3159; // MySQL
    pub const USER_IS_BLOCKED: u16 = 4150; // MariaDB
    pub const ACCOUNT_LOCKED_MARIADB: u16 = 4151; // MariaDB
}

/// `?ssl-mode=` (MySQL client names; `-` or `_`, any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain text.
    Disabled,
    /// TLS when the server offers it, without verifying its certificate;
    /// plain text otherwise (the default, as for the `mysql` client).
    Preferred,
    /// TLS or fail, without verifying the certificate.
    Required,
    /// TLS, certificate chain verified against `ssl-ca` (or the built-in
    /// web roots). See the caveat on host names in [`MysqlOptions::parse`].
    VerifyCa,
    /// TLS, certificate chain and host name verified.
    VerifyIdentity,
}

/// The connection options of a MySQL/MariaDB URL beyond user, password,
/// host, port and database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlOptions {
    pub ssl_mode: SslMode,
    /// `ssl-ca`: PEM file of the CA(s) to trust instead of the web roots.
    pub ssl_ca: Option<PathBuf>,
    /// `ssl-cert` and `ssl-key`: client certificate chain and key (PEM).
    pub ssl_cert: Option<PathBuf>,
    pub ssl_key: Option<PathBuf>,
    /// `ssl-server-name`: the name to check the certificate against
    /// (and send as SNI) instead of the URL host.
    pub ssl_server_name: Option<String>,
}

impl MysqlOptions {
    /// Parses and checks the query string of a `mysql://` URL:
    /// `ssl-mode` (`disabled`, `preferred` = default, `required`,
    /// `verify_ca`, `verify_identity`), `ssl-ca`, `ssl-cert`, `ssl-key`,
    /// `ssl-server-name`. Unknown parameters are refused, so that a typo is
    /// not silently ignored.
    ///
    /// Caveat: `mysql_async` 0.37 skips the host-name check of `verify_ca`
    /// by matching the text of a rustls error that rustls 0.23 no longer
    /// writes, so `verify_ca` checks the host name too. Use
    /// `ssl-server-name` when the certificate names another host than the
    /// URL (e.g. behind a proxy).
    pub fn parse(url: &DbUrl) -> Result<Self, String> {
        let mut o = MysqlOptions {
            ssl_mode: SslMode::Preferred,
            ssl_ca: None,
            ssl_cert: None,
            ssl_key: None,
            ssl_server_name: None,
        };
        let query = url.query.as_deref().unwrap_or("");
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let norm = key.to_ascii_lowercase().replace('_', "-");
            match norm.as_str() {
                "ssl-mode" | "sslmode" => {
                    o.ssl_mode = match value.to_ascii_lowercase().replace('-', "_").as_str() {
                        "disabled" | "disable" => SslMode::Disabled,
                        "preferred" | "prefer" => SslMode::Preferred,
                        "required" | "require" => SslMode::Required,
                        "verify_ca" => SslMode::VerifyCa,
                        "verify_identity" | "verify_full" => SslMode::VerifyIdentity,
                        other => {
                            return Err(format!(
                                "ssl-mode {other:?} is not one of disabled, preferred, required, verify_ca, verify_identity"
                            ));
                        }
                    }
                }
                "ssl-ca" => o.ssl_ca = Some(readable(&key, &value)?),
                "ssl-cert" => o.ssl_cert = Some(readable(&key, &value)?),
                "ssl-key" => o.ssl_key = Some(readable(&key, &value)?),
                "ssl-server-name" => {
                    if value.is_empty() {
                        return Err("ssl-server-name is empty".into());
                    }
                    o.ssl_server_name = Some(value.into_owned());
                }
                _ => {
                    return Err(format!(
                        "unknown URL parameter {key:?} (known: ssl-mode, ssl-ca, ssl-cert, ssl-key, ssl-server-name)"
                    ));
                }
            }
        }
        if o.ssl_cert.is_some() != o.ssl_key.is_some() {
            return Err("ssl-cert and ssl-key go together".into());
        }
        if o.ssl_mode == SslMode::Disabled
            && (o.ssl_ca.is_some() || o.ssl_cert.is_some() || o.ssl_server_name.is_some())
        {
            return Err("ssl-ca, ssl-cert, ssl-key and ssl-server-name need an ssl-mode other than disabled".into());
        }
        Ok(o)
    }

    /// The driver's TLS options for the mode (`None` = plain text).
    fn ssl_opts(&self) -> Option<SslOpts> {
        let verify = match self.ssl_mode {
            SslMode::Disabled => return None,
            SslMode::Preferred | SslMode::Required => false,
            SslMode::VerifyCa | SslMode::VerifyIdentity => true,
        };
        let mut ssl = SslOpts::default()
            .with_danger_accept_invalid_certs(!verify)
            .with_danger_skip_domain_validation(self.ssl_mode != SslMode::VerifyIdentity);
        if let Some(ca) = &self.ssl_ca {
            // Like the mysql client: ssl-ca replaces the trust store. Without
            // verification the built-in roots stay, since the driver builds a
            // verifier (which refuses an empty store) even when unused.
            ssl = ssl
                .with_root_certs(vec![ca.clone().into()])
                .with_disable_built_in_roots(verify);
        }
        if let (Some(cert), Some(key)) = (&self.ssl_cert, &self.ssl_key) {
            ssl = ssl.with_client_identity(Some(ClientIdentity::new(
                cert.clone().into(),
                key.clone().into(),
            )));
        }
        if let Some(name) = &self.ssl_server_name {
            ssl = ssl.with_danger_tls_hostname_override(Some(name.clone()));
        }
        Some(ssl)
    }
}

fn readable(key: &str, value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    std::fs::metadata(&path).map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
    Ok(path)
}

/// Which statement reads the replication status on this server.
const REPL_UNKNOWN: u8 = 0;
const REPL_REPLICA: u8 = 1;
const REPL_SLAVE: u8 = 2;

/// A MySQL or MariaDB target.
pub struct MysqlStore {
    addr: HostPort,
    base: OptsBuilder,
    options: MysqlOptions,
    /// `preferred` only: the server offered no TLS, so speak plain text
    /// without first trying TLS again (each refused TLS attempt costs the
    /// server an unauthenticated connection and a log line).
    no_tls_offered: AtomicBool,
    /// Which of `SHOW REPLICA STATUS` / `SHOW SLAVE STATUS` works.
    repl_statement: AtomicU8,
    /// Whether the missing replication privilege was logged.
    repl_denied_logged: AtomicBool,
    /// Whether "too many connections" was said for the current streak.
    too_many_logged: AtomicBool,
    notices: Notices,
}

impl MysqlStore {
    /// Builds the store from options [`MysqlOptions::parse`] accepted.
    fn build(target: &str, url: &DbUrl, options: MysqlOptions) -> Self {
        let addr = url.first_host().clone();
        let db = (!url.path.is_empty()).then(|| {
            percent_encoding::percent_decode_str(&url.path)
                .decode_utf8_lossy()
                .into_owned()
        });
        let base = OptsBuilder::default()
            .ip_or_hostname(addr.host.clone())
            .tcp_port(addr.port)
            .user(url.username.clone())
            .pass(url.password().map(str::to_string))
            .db_name(db)
            .prefer_socket(false)
            .tcp_nodelay(true)
            .stmt_cache_size(0)
            .connect_attribute("program_name", format!("dbcanary:{target}"));
        Self {
            addr,
            base,
            options,
            no_tls_offered: AtomicBool::new(false),
            repl_statement: AtomicU8::new(REPL_UNKNOWN),
            repl_denied_logged: AtomicBool::new(false),
            too_many_logged: AtomicBool::new(false),
            notices: Notices::default(),
        }
    }

    fn opts(&self, tls: bool) -> Opts {
        let ssl = if tls { self.options.ssl_opts() } else { None };
        self.base.clone().ssl_opts(ssl).into()
    }

    /// TCP, TLS as the mode says, authentication.
    async fn open(&self) -> Result<Conn, Error> {
        let preferred = self.options.ssl_mode == SslMode::Preferred;
        let try_tls = self.options.ssl_mode != SslMode::Disabled
            && !(preferred && self.no_tls_offered.load(Ordering::Relaxed));
        match Conn::new(self.opts(try_tls)).await {
            Err(Error::Driver(DriverError::NoClientSslFlagFromServer)) if preferred => {
                self.no_tls_offered.store(true, Ordering::Relaxed);
                self.notices.say(
                    "ssl-mode=preferred: the server offers no TLS, the canary speaks plain text",
                );
                Conn::new(self.opts(false)).await
            }
            r => r,
        }
    }

    /// Reads the identity on a live connection.
    async fn read_identity(&self, conn: &mut Conn) -> Result<Identity, Error> {
        let rows: Vec<Row> = conn
            .query(
                "SHOW GLOBAL VARIABLES WHERE Variable_name IN \
                 ('server_uuid','hostname','port','datadir','server_id','read_only','version')",
            )
            .await?;
        let vars: BTreeMap<String, String> = rows
            .iter()
            .filter_map(|r| Some((text(r, 0)?, text(r, 1)?)))
            .collect();
        let uptime: Option<Row> = conn.query_first("SHOW GLOBAL STATUS LIKE 'Uptime'").await?;
        let uptime = uptime
            .as_ref()
            .and_then(|r| text(r, 1))
            .and_then(|s| s.parse::<u64>().ok());
        let repl = self.replication(conn).await?;
        let mut id = build_identity(&vars, uptime, &repl, &self.addr);
        id.details
            .insert("connection_id".into(), conn.id().to_string());
        Ok(id)
    }

    /// Whether the server replicates, from whichever statement it speaks.
    async fn replication(&self, conn: &mut Conn) -> Result<Replication, Error> {
        let mut which = self.repl_statement.load(Ordering::Relaxed);
        loop {
            let stmt = if which == REPL_SLAVE {
                "SHOW SLAVE STATUS"
            } else {
                "SHOW REPLICA STATUS"
            };
            match conn.query_first::<Row, _>(stmt).await {
                Ok(row) => {
                    self.repl_statement.store(
                        if which == REPL_SLAVE {
                            REPL_SLAVE
                        } else {
                            REPL_REPLICA
                        },
                        Ordering::Relaxed,
                    );
                    return Ok(row.map_or(Replication::None, |r| replication_row(&r)));
                }
                Err(Error::Server(e)) if e.code == code::PARSE_ERROR && which != REPL_SLAVE => {
                    which = REPL_SLAVE;
                }
                Err(Error::Server(e)) if e.code == code::SPECIFIC_ACCESS_DENIED => {
                    if !self.repl_denied_logged.swap(true, Ordering::Relaxed) {
                        self.notices.say(
                            "the canary's user may not read the replication status (grant SLAVE MONITOR on MariaDB, REPLICATION CLIENT on MySQL): the role comes from read_only alone",
                        );
                    }
                    return Ok(Replication::Unknown);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn connect_error(&self, e: &Error) -> ConnectError {
        let err = connect_error(e);
        if let Error::Server(s) = e
            && is_too_many(s.code)
            && !self.too_many_logged.swap(true, Ordering::Relaxed)
        {
            self.notices.say(format!(
                "the server refuses new connections: too many connections (server, user or account limit, error {}); attempts count as not_ready until it accepts again",
                s.code
            ));
        }
        err
    }
}

/// A value of a row as text (NULL and non-text values are `None`).
fn text(row: &Row, i: usize) -> Option<String> {
    row.get_opt::<Option<String>, _>(i)?.ok()?
}

/// A named column of a row as text.
fn column(row: &Row, name: &str) -> Option<String> {
    row.get_opt::<Option<String>, _>(name)?.ok()?
}

/// What the replication status says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// Not configured as a replica.
    None,
    /// A replica whose threads run (or try to connect), with its source.
    Running { source: Option<String> },
    /// Configured but both threads stopped.
    Stopped { source: Option<String> },
    /// Not readable (privilege missing).
    Unknown,
}

fn replication_row(r: &Row) -> Replication {
    let col = |names: [&str; 2]| names.iter().find_map(|n| column(r, n));
    let io = col(["Slave_IO_Running", "Replica_IO_Running"]);
    let sql = col(["Slave_SQL_Running", "Replica_SQL_Running"]);
    let host = col(["Master_Host", "Source_Host"]).filter(|h| !h.is_empty());
    let port = col(["Master_Port", "Source_Port"]);
    let source = host.map(|h| match port {
        Some(p) => format!("{h}:{p}"),
        None => h,
    });
    let running = |v: &Option<String>| matches!(v.as_deref(), Some("Yes" | "Connecting"));
    if running(&io) || running(&sql) {
        Replication::Running { source }
    } else {
        Replication::Stopped { source }
    }
}

/// A stable 64-bit FNV-1a hash, hex: the same input gives the same id in
/// every build (std's hashers promise no such thing).
fn stable_hash(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Builds the identity from `SHOW GLOBAL VARIABLES`, the uptime and the
/// replication status. `url_addr` gives the host of the address reached;
/// its port is the server's own `@@port` (which differs behind a proxy).
pub fn build_identity(
    vars: &BTreeMap<String, String>,
    uptime_s: Option<u64>,
    repl: &Replication,
    url_addr: &HostPort,
) -> Identity {
    let get = |k: &str| vars.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let port = get("port").and_then(|p| p.parse::<u16>().ok());
    let server_id = match get("server_uuid") {
        Some(uuid) => Some(uuid.to_string()),
        None => match (
            get("hostname"),
            get("port"),
            get("datadir"),
            get("server_id"),
        ) {
            (Some(h), Some(p), Some(d), Some(s)) => Some(stable_hash(&[h, p, d, s])),
            _ => None,
        },
    };
    let read_only = get("read_only").map(|v| v.eq_ignore_ascii_case("ON") || v == "1");
    let replicating = matches!(repl, Replication::Running { .. });
    let role = match (read_only, repl) {
        (_, Replication::Running { .. }) => Some(Role::Replica),
        (Some(true), _) => Some(Role::Replica),
        (Some(false), _) => Some(Role::Primary),
        (None, _) => None,
    };
    let mut details = BTreeMap::new();
    for k in ["hostname", "port", "datadir", "server_id", "read_only"] {
        if let Some(v) = get(k) {
            details.insert(k.to_string(), v.to_string());
        }
    }
    let (state, source) = match repl {
        Replication::None => ("none", None),
        Replication::Running { source } => ("running", source.as_ref()),
        Replication::Stopped { source } => ("stopped", source.as_ref()),
        Replication::Unknown => ("unknown", None),
    };
    details.insert("replication".into(), state.into());
    if let Some(s) = source {
        details.insert("replication_source".into(), s.clone());
    }
    details.insert(
        "role_from".into(),
        match repl {
            Replication::Unknown => {
                "read_only only (no privilege to read the replication status)".into()
            }
            _ if replicating => "replication status".into(),
            _ => "read_only and replication status".into(),
        },
    );
    Identity {
        server_id,
        role,
        uptime: uptime_s.map(Duration::from_secs),
        address: Some(
            HostPort {
                host: url_addr.host.clone(),
                port: port.unwrap_or(url_addr.port),
            }
            .to_string(),
        ),
        version: get("version").map(str::to_string),
        details,
        ..Identity::default()
    }
}

/// An error as one readable line, without the driver's nested
/// "Input/output error: Input/output error:" prefixes. Never holds a
/// password: the driver's messages carry user and host at most.
fn message(e: &Error) -> String {
    match e {
        Error::Io(IoError::Io(io)) => io.to_string(),
        Error::Io(IoError::Tls(tls)) => format!("TLS: {tls}"),
        Error::Driver(d) => d.to_string(),
        Error::Server(s) => s.to_string(),
        other => other.to_string(),
    }
}

/// Classifies a driver error during connection set-up by its type and, for
/// server errors, by the error code.
pub fn connect_error(e: &Error) -> ConnectError {
    let result = match e {
        Error::Io(IoError::Io(io)) => classify_io(io),
        Error::Io(IoError::Tls(_)) => ConnectResult::Tls,
        Error::Driver(d) => match d {
            DriverError::NoClientSslFlagFromServer => ConnectResult::Tls,
            DriverError::UnknownAuthPlugin { .. }
            | DriverError::MysqlOldPasswordDisabled
            | DriverError::CleartextPluginDisabled => ConnectResult::Auth,
            DriverError::ConnectionClosed => ConnectResult::Io,
            _ => ConnectResult::Protocol,
        },
        Error::Server(s) => server_result(s),
        Error::Other(other) => match find_io_error(other.as_ref()) {
            Some(io) => classify_io(io),
            None if is_tls_error(other.as_ref()) => ConnectResult::Tls,
            None => ConnectResult::Protocol,
        },
        Error::Url(_) => ConnectResult::Protocol,
    };
    ConnectError::new(result, message(e))
}

fn server_result(s: &ServerError) -> ConnectResult {
    match s.code {
        code::ACCESS_DENIED
        | code::ACCESS_DENIED_NO_PASSWORD
        | code::DBACCESS_DENIED
        | code::BAD_DB
        | code::HOST_NOT_PRIVILEGED
        | code::HOST_IS_BLOCKED
        | code::NOT_SUPPORTED_AUTH_MODE
        | code::SPECIFIC_ACCESS_DENIED
        | code::ACCOUNT_LOCKED_MYSQL
        | code::ACCOUNT_LOCKED_MARIADB
        | code::USER_IS_BLOCKED => ConnectResult::Auth,
        c if is_too_many(c) => ConnectResult::NotReady,
        code::SERVER_SHUTDOWN | code::SERVER_OFFLINE_MODE | code::CONNECTION_KILLED => {
            ConnectResult::NotReady
        }
        code::SECURE_TRANSPORT_REQUIRED => ConnectResult::Tls,
        _ => ConnectResult::Protocol,
    }
}

/// Whether a server error is a connection limit ("too many connections"
/// for the server, the user or the account): the server is there but
/// refuses more connections for now.
fn is_too_many(code: u16) -> bool {
    matches!(
        code,
        code::CON_COUNT | code::TOO_MANY_USER_CONNECTIONS | code::USER_LIMIT_REACHED
    )
}

/// Classifies a driver error on a live connection.
pub fn probe_error(e: &Error) -> ProbeError {
    let cause = match e {
        Error::Io(IoError::Io(io)) => disconnect_cause(io),
        Error::Driver(DriverError::ConnectionClosed) => DisconnectCause::Closed,
        // The server says goodbye with an error packet, then closes.
        Error::Server(s) if matches!(s.code, code::CONNECTION_KILLED | code::SERVER_SHUTDOWN) => {
            DisconnectCause::Closed
        }
        _ => DisconnectCause::Error,
    };
    ProbeError::new(cause, message(e))
}

/// The canary's connection. Dropping it (the canary drops a connection it
/// gave up on) sends `COM_QUIT` in the background within [`QUIT_WITHIN`]:
/// the driver's own drop would do so without any time bound, which on a
/// hung server leaves a task and a socket behind for as long as it hangs.
pub struct MysqlConn(Option<Conn>);

impl MysqlConn {
    fn get(&mut self) -> Result<&mut Conn, Error> {
        self.0
            .as_mut()
            .ok_or(Error::Driver(DriverError::ConnectionClosed))
    }
}

impl Drop for MysqlConn {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            // `disconnect` marks the connection closed before writing, so
            // when the bound cancels it the driver does not try again: the
            // socket is just closed.
            rt.spawn(async move {
                let _ = tokio::time::timeout(QUIT_WITHIN, conn.disconnect()).await;
            });
        }
    }
}

impl Store for MysqlStore {
    type Options = MysqlOptions;
    type Conn = MysqlConn;

    /// Checks a `mysql://`/`mariadb://` URL: one host, no fragment, a
    /// database name without '/', and the query options.
    fn options(url: &DbUrl) -> Result<MysqlOptions, String> {
        if url.hosts.len() > 1 {
            return Err(
                "a MySQL/MariaDB URL names one host (put a proxy in front of several)".into(),
            );
        }
        if url.fragment.is_some() {
            return Err("a MySQL/MariaDB URL takes no #fragment".into());
        }
        if url.path.contains('/') {
            return Err("the URL path is the database name and holds no '/'".into());
        }
        MysqlOptions::parse(url)
    }

    fn new(spec: Spec<'_>, options: &MysqlOptions) -> Self {
        Self::build(spec.name, spec.url, options.clone())
    }

    fn notices(&self) -> Vec<String> {
        self.notices.take()
    }

    async fn connect(&self, _timeout: Duration) -> Result<Connected<Self::Conn>, ConnectError> {
        resolve(&self.addr.host, self.addr.port).await?;
        let conn = self.open().await.map_err(|e| self.connect_error(&e))?;
        let mut conn = MysqlConn(Some(conn));
        let identity = {
            let c = conn.get().map_err(|e| connect_error(&e))?;
            self.read_identity(c)
                .await
                .map_err(|e| self.connect_error(&e))?
        };
        self.too_many_logged.store(false, Ordering::Relaxed);
        Ok(Connected {
            conn,
            identity,
            // No idle-close signal from mysql_async: see the module docs.
            closed: CloseSignal::never(),
        })
    }

    async fn probe(&self, conn: &mut Self::Conn) -> Result<(), ProbeError> {
        let c = conn.get().map_err(|e| probe_error(&e))?;
        c.ping().await.map_err(|e| probe_error(&e))
    }

    async fn identify(&self, conn: &mut Self::Conn) -> Result<Identity, ProbeError> {
        let c = conn.get().map_err(|e| probe_error(&e))?;
        self.read_identity(c).await.map_err(|e| probe_error(&e))
    }

    async fn close(&self, mut conn: Self::Conn) {
        if let Some(c) = conn.0.take() {
            let _ = c.disconnect().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp() -> HostPort {
        HostPort {
            host: "127.0.0.1".into(),
            port: 6033,
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const MARIADB: &[(&str, &str)] = &[
        ("hostname", "db1"),
        ("port", "3307"),
        ("datadir", "/var/lib/mysql/"),
        ("server_id", "1"),
        ("read_only", "OFF"),
        ("version", "10.11.19-MariaDB"),
    ];

    #[test]
    fn mariadb_id_is_a_stable_hash_and_address_uses_the_server_port() {
        let id = build_identity(&vars(MARIADB), Some(42), &Replication::None, &hp());
        let again = build_identity(&vars(MARIADB), Some(43), &Replication::None, &hp());
        assert_eq!(id.server_id, again.server_id);
        assert_eq!(
            id.server_id.as_deref(),
            Some(stable_hash(&["db1", "3307", "/var/lib/mysql/", "1"]).as_str())
        );
        assert_eq!(id.role, Some(Role::Primary));
        assert_eq!(id.address.as_deref(), Some("127.0.0.1:3307"));
        assert_eq!(id.uptime, Some(Duration::from_secs(42)));
        assert_eq!(id.version.as_deref(), Some("10.11.19-MariaDB"));
        let mut other = vars(MARIADB);
        other.insert("server_id".into(), "2".into());
        let other = build_identity(&other, Some(1), &Replication::None, &hp());
        assert_ne!(other.server_id, id.server_id);
    }

    #[test]
    fn stable_hash_is_pinned() {
        // Changing this breaks server ids across agent upgrades.
        assert_eq!(stable_hash(&["a", "b"]), stable_hash(&["a", "b"]));
        assert_ne!(stable_hash(&["ab", ""]), stable_hash(&["a", "b"]));
        assert_eq!(stable_hash(&[]), "cbf29ce484222325");
    }

    #[test]
    fn mysql_uses_server_uuid() {
        let mut v = vars(MARIADB);
        v.insert(
            "server_uuid".into(),
            "3e11fa47-71ca-11e1-9e33-c80aa9429562".into(),
        );
        let id = build_identity(&v, Some(1), &Replication::None, &hp());
        assert_eq!(
            id.server_id.as_deref(),
            Some("3e11fa47-71ca-11e1-9e33-c80aa9429562")
        );
    }

    #[test]
    fn role_from_read_only_and_replication() {
        let ro = vars(&[("read_only", "ON")]);
        let rw = vars(&[("read_only", "OFF")]);
        let running = Replication::Running {
            source: Some("10.0.0.1:3306".into()),
        };
        let stopped = Replication::Stopped { source: None };
        assert_eq!(
            build_identity(&ro, None, &Replication::None, &hp()).role,
            Some(Role::Replica)
        );
        assert_eq!(
            build_identity(&rw, None, &running, &hp()).role,
            Some(Role::Replica)
        );
        assert_eq!(
            build_identity(&rw, None, &stopped, &hp()).role,
            Some(Role::Primary)
        );
        let unknown = build_identity(&rw, None, &Replication::Unknown, &hp());
        assert_eq!(unknown.role, Some(Role::Primary));
        assert!(unknown.details["role_from"].contains("read_only only"));
        let r = build_identity(&rw, None, &running, &hp());
        assert_eq!(r.details["replication_source"], "10.0.0.1:3306");
        assert_eq!(
            build_identity(&BTreeMap::new(), None, &Replication::None, &hp()).role,
            None
        );
    }

    #[test]
    fn server_errors_are_classified_by_code() {
        let s = |code| {
            connect_error(&Error::Server(ServerError {
                code,
                message: "m".into(),
                state: "HY000".into(),
            }))
            .result
        };
        assert_eq!(s(1045), ConnectResult::Auth);
        assert_eq!(s(1040), ConnectResult::NotReady);
        assert_eq!(s(1226), ConnectResult::NotReady);
        assert_eq!(s(3159), ConnectResult::Tls);
        assert_eq!(s(1053), ConnectResult::NotReady);
        assert_eq!(s(1064), ConnectResult::Protocol);
        let refused = Error::Io(IoError::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(connect_error(&refused).result, ConnectResult::Refused);
        let eof = Error::Io(IoError::Io(std::io::Error::from(
            std::io::ErrorKind::UnexpectedEof,
        )));
        assert_eq!(probe_error(&eof).cause, DisconnectCause::Closed);
        let tls = Error::Driver(DriverError::NoClientSslFlagFromServer);
        assert_eq!(connect_error(&tls).result, ConnectResult::Tls);
    }

    #[test]
    fn url_options() {
        let p = |u: &str| MysqlOptions::parse(&DbUrl::parse(u).unwrap());
        assert_eq!(p("mysql://h/db").unwrap().ssl_mode, SslMode::Preferred);
        assert_eq!(
            p("mariadb://h/?ssl-mode=DISABLED").unwrap().ssl_mode,
            SslMode::Disabled
        );
        assert_eq!(
            p("mysql://h/?ssl_mode=verify-identity").unwrap().ssl_mode,
            SslMode::VerifyIdentity
        );
        assert!(p("mysql://h/?ssl-mode=sometimes").is_err());
        assert!(
            p("mysql://h/?sslca=/x")
                .unwrap_err()
                .contains("unknown URL parameter")
        );
        assert!(p("mysql://h/?ssl-mode=required&ssl-ca=/nonexistent/ca.pem").is_err());
        assert!(p("mysql://h/?ssl-mode=disabled&ssl-server-name=x").is_err());
        let e =
            <MysqlStore as Store>::options(&DbUrl::parse("mysql://u:hunter2@a,b/?x=1").unwrap())
                .unwrap_err();
        assert!(!e.contains("hunter2"));
        assert!(
            p("mysql://h/?ssl-mode=required")
                .unwrap()
                .ssl_opts()
                .is_some()
        );
        assert!(
            p("mysql://h/?ssl-mode=disabled")
                .unwrap()
                .ssl_opts()
                .is_none()
        );
    }
}
