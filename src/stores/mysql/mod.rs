//! MySQL and MariaDB (`mysql://`, `mariadb://`): one dedicated connection
//! per canary, on a socket the canary owns and speaks the protocol on
//! itself (packets from `mysql_common`), never a pool, which would silently
//! replace a dropped connection and hide the very outage we measure.
//!
//! - A reader task holds the socket's read side while the connection is
//!   idle: a server-side close (`KILL CONNECTION`, a crash, a shutdown) is
//!   seen the moment the kernel reports EOF or a reset, not at the next
//!   probe. Drivers such as `mysql_async` read only while a command runs,
//!   which left detection bounded by the probe interval.
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
//!   `performance_schema.session_connect_attrs` where that is enabled).
//! - TLS is rustls (ring) with the MySQL client's `ssl-mode` semantics; the
//!   login and its auth plugins are in `handshake`, the packets, limits
//!   and the reader task in `wire`.
//! - Nothing here waits on the network without a bound: the canary bounds
//!   connect, probe and identity reads with its timeout, a dropped
//!   connection gets `QUIT_WITHIN` to say `COM_QUIT`, and the reader task
//!   ends with its connection.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::dburl::{DbUrl, HostPort};
use crate::model::{ConnectResult, Identity};
use crate::stores::{ConnectError, Connected, Notices, ProbeError, Spec, Store, resolve};

mod error;
mod handshake;
mod identity;
mod options;
mod rsa;
mod wire;

pub use error::{Error, ServerError, connect_error, probe_error};
pub use identity::{Replication, build_identity};
pub use options::{MysqlOptions, SslMode};

use error::{code, is_too_many};
use handshake::{Login, TlsPlan};
use identity::{replication_row, text};
use wire::Link;

/// How long a dropped connection gets to send `COM_QUIT` before its socket
/// is simply closed.
const QUIT_WITHIN: Duration = Duration::from_secs(1);

/// The identity's variables: few enough that the query's rows all fit.
const VARIABLES: &str = "SHOW GLOBAL VARIABLES WHERE Variable_name IN \
     ('server_uuid','hostname','port','datadir','server_id','read_only','version')";

/// Which statement reads the replication status on this server.
const REPL_UNKNOWN: u8 = 0;
const REPL_REPLICA: u8 = 1;
const REPL_SLAVE: u8 = 2;

/// A MySQL or MariaDB target.
pub struct MysqlStore {
    addr: HostPort,
    user: String,
    password: Option<String>,
    database: Option<String>,
    attributes: HashMap<String, String>,
    options: MysqlOptions,
    /// Whether "the server offers no TLS" was said (`preferred`).
    no_tls_said: AtomicBool,
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
        let database = (!url.path.is_empty()).then(|| {
            percent_encoding::percent_decode_str(&url.path)
                .decode_utf8_lossy()
                .into_owned()
        });
        Self {
            addr: url.first_host().clone(),
            user: url.username.clone().unwrap_or_default(),
            password: url.password().map(str::to_string),
            database,
            attributes: HashMap::from([("program_name".to_string(), format!("dbcanary:{target}"))]),
            options,
            no_tls_said: AtomicBool::new(false),
            repl_statement: AtomicU8::new(REPL_UNKNOWN),
            repl_denied_logged: AtomicBool::new(false),
            too_many_logged: AtomicBool::new(false),
            notices: Notices::default(),
        }
    }

    /// The TLS plan of the mode, its files read now.
    fn tls_plan(&self) -> Result<TlsPlan, ConnectError> {
        let tls = |reason: String| ConnectError::new(ConnectResult::Tls, reason);
        let Some(config) = self.options.tls_config().map_err(tls)? else {
            return Ok(TlsPlan::Off);
        };
        let name = self
            .options
            .ssl_server_name
            .clone()
            .unwrap_or_else(|| self.addr.host.clone());
        let name = ServerName::try_from(name.clone())
            .map_err(|_| tls(format!("{name:?} is not a name TLS can check")))?;
        let connector = TlsConnector::from(Arc::new(config));
        Ok(match self.options.ssl_mode {
            SslMode::Preferred => TlsPlan::Prefer(connector, name),
            _ => TlsPlan::Require(connector, name),
        })
    }

    /// Reads the identity on a live connection.
    async fn read_identity(&self, conn: &mut MysqlConn) -> Result<Identity, Error> {
        let link = conn.link()?;
        let rows = link.query(VARIABLES, 64).await?;
        let vars: BTreeMap<String, String> = rows
            .iter()
            .filter_map(|r| Some((text(r, 0)?, text(r, 1)?)))
            .collect();
        let uptime = link.query("SHOW GLOBAL STATUS LIKE 'Uptime'", 1).await?;
        let uptime = uptime
            .first()
            .and_then(|r| text(r, 1))
            .and_then(|s| s.parse::<u64>().ok());
        let repl = self.replication(link).await?;
        let mut id = build_identity(&vars, uptime, &repl, &self.addr);
        id.details
            .insert("connection_id".into(), conn.id.to_string());
        // The server numbers connections upwards within one process: the
        // evidence of a restart when the uptimes (whole seconds) cannot tell.
        id.connection_seq = Some(u64::from(conn.id));
        Ok(id)
    }

    /// Whether the server replicates, from whichever statement it speaks.
    async fn replication(&self, link: &mut Link) -> Result<Replication, Error> {
        let mut which = self.repl_statement.load(Ordering::Relaxed);
        loop {
            let stmt = if which == REPL_SLAVE {
                "SHOW SLAVE STATUS"
            } else {
                "SHOW REPLICA STATUS"
            };
            match link.query(stmt, 1).await {
                Ok(rows) => {
                    self.repl_statement.store(
                        if which == REPL_SLAVE {
                            REPL_SLAVE
                        } else {
                            REPL_REPLICA
                        },
                        Ordering::Relaxed,
                    );
                    return Ok(rows.first().map_or(Replication::None, replication_row));
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

/// The canary's connection. Dropping it (the canary drops a connection it
/// gave up on) sends `COM_QUIT` in the background within `QUIT_WITHIN`,
/// so a hung server never keeps a task and a socket behind; its reader
/// task ends at once.
pub struct MysqlConn {
    link: Option<Link>,
    /// The server's id of the session.
    id: u32,
}

impl MysqlConn {
    fn link(&mut self) -> Result<&mut Link, Error> {
        self.link.as_mut().ok_or_else(Error::eof)
    }
}

impl Drop for MysqlConn {
    fn drop(&mut self) {
        if let Some(link) = self.link.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = tokio::time::timeout(QUIT_WITHIN, link.quit()).await;
            });
        }
    }
}

impl Store for MysqlStore {
    type Options = MysqlOptions;
    type Conn = MysqlConn;

    /// Checks a `mysql://`/`mariadb://` URL: one host, no fragment, a
    /// database name without '/', the query options and the certificate
    /// files they name.
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
        let o = MysqlOptions::parse(url)?;
        o.tls_config()?;
        Ok(o)
    }

    fn new(spec: Spec<'_>, options: &MysqlOptions) -> Self {
        Self::build(spec.name, spec.url, options.clone())
    }

    fn notices(&self) -> Vec<String> {
        self.notices.take()
    }

    async fn connect(&self, _timeout: Duration) -> Result<Connected<Self::Conn>, ConnectError> {
        resolve(&self.addr.host, self.addr.port).await?;
        let opened = handshake::open(Login {
            host: &self.addr.host,
            port: self.addr.port,
            user: &self.user,
            password: self.password.as_deref(),
            database: self.database.as_deref(),
            attributes: &self.attributes,
            tls: self.tls_plan()?,
        })
        .await
        .map_err(|e| self.connect_error(&e))?;
        self.too_many_logged.store(false, Ordering::Relaxed);
        if opened.tls_declined && !self.no_tls_said.swap(true, Ordering::Relaxed) {
            self.notices
                .say("ssl-mode=preferred: the server offers no TLS, the canary speaks plain text");
        }
        let (link, closed) = opened.link.start_reader();
        let mut conn = MysqlConn {
            link: Some(link),
            id: opened.connection_id,
        };
        let identity = self
            .read_identity(&mut conn)
            .await
            .map_err(|e| self.connect_error(&e))?;
        Ok(Connected {
            conn,
            identity,
            closed,
            serving_since: None,
        })
    }

    async fn probe(&self, conn: &mut Self::Conn) -> Result<(), ProbeError> {
        let link = conn.link().map_err(|e| probe_error(&e))?;
        link.ping().await.map_err(|e| probe_error(&e))
    }

    async fn identify(&self, conn: &mut Self::Conn) -> Result<Identity, ProbeError> {
        self.read_identity(conn).await.map_err(|e| probe_error(&e))
    }

    async fn close(&self, mut conn: Self::Conn) {
        if let Some(link) = conn.link.take() {
            let _ = tokio::time::timeout(QUIT_WITHIN, link.quit()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_checks() {
        let o = |u: &str| <MysqlStore as Store>::options(&DbUrl::parse(u).unwrap());
        let e = o("mysql://u:hunter2@a,b/?x=1").unwrap_err();
        assert!(!e.contains("hunter2"));
        assert!(o("mysql://h/a/b").is_err());
        assert!(o("mysql://h/db#x").is_err());
        assert!(o("mysql://root@127.0.0.1:3306").is_ok());
    }

    #[test]
    fn the_connection_announces_the_target() {
        let url = DbUrl::parse("mysql://u:pw@db.example:3307/orders%2Dx").unwrap();
        let s = MysqlStore::build("orders", &url, MysqlOptions::parse(&url).unwrap());
        assert_eq!(s.attributes["program_name"], "dbcanary:orders");
        assert_eq!(s.database.as_deref(), Some("orders-x"));
        assert_eq!((s.user.as_str(), s.password.as_deref()), ("u", Some("pw")));
        assert!(matches!(s.tls_plan(), Ok(TlsPlan::Prefer(..))));
    }
}
