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

mod error;
mod identity;
mod options;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Connection, Error};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::dburl::{DbUrl, HostPort};
use crate::model::{ConnectResult, DisconnectCause, Identity, Role};
use crate::stores::bounded::{Bounded, ROUND_TRIP_BYTES, ReadBudget};
use crate::stores::{
    CloseSignal, ConnectError, Connected, Notices, ProbeError, Spec, Store, classify_io, resolve,
};

use error::cause_of;
pub use error::{connect_error, probe_error};
use identity::read_facts;
pub use identity::{Facts, build_identity};
pub use options::{PgOptions, SessionAttrs, SslMode};

/// How long a dropped connection gets to send `Terminate` before its task
/// gives up on it (a hung server must not keep a task and a socket alive).
const QUIT_WITHIN: Duration = Duration::from_secs(1);

/// The canary's connection: the client, and the task driving the
/// driver's `Connection`. Dropping it drops the client, so the driver says
/// `Terminate` and ends; the task is told to give up after `QUIT_WITHIN`
/// should a hung server not take even that.
pub struct PgConn {
    client: Client,
    /// What the connection may still read this round trip.
    budget: Arc<ReadBudget>,
    /// Dropped with the connection: starts the task's `QUIT_WITHIN`.
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
            serving_since: None,
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
    use super::error::sqlstate_result;
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
        let c = crate::classify::classify(Some(&id), &id, Duration::from_millis(100), false);
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
