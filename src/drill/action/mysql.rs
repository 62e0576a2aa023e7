//! MySQL and MariaDB kill-clients: `KILL CONNECTION` for every session of
//! `information_schema.PROCESSLIST` but the canary's (its connection id, and
//! every session whose `program_name` is the canary's where
//! `performance_schema` shows connect attributes), the drill's own and the
//! server's own threads.
//!
//! The admin connection is `mysql_async`'s, on purpose separate from the
//! canary's store code (which is being moved to a socket of its own): it
//! only needs to log in, list and kill, with every call bounded.

use mysql_async::prelude::Queryable;
use mysql_async::{ClientIdentity, Conn, DriverError, Error, OptsBuilder, SslOpts};

use crate::stores::Options;
use crate::stores::mysql::{MysqlOptions, SslMode};

use super::{ActionCtx, ActionDone, ActionError, FailureKind, bounded};
use crate::drill::plan::Action;

/// Server error codes the drill tells apart.
const ACCESS_DENIED: [u16; 3] = [1044, 1045, 1698];
/// ER_NO_SUCH_THREAD: the session ended before it was killed.
const NO_SUCH_THREAD: u16 = 1094;
/// ER_KILL_DENIED_ERROR, ER_SPECIFIC_ACCESS_DENIED_ERROR.
const NOT_ALLOWED: [u16; 2] = [1095, 1227];

/// Sessions that are the server's own, not clients.
const SERVER_USERS: [&str; 3] = ["system user", "event_scheduler", "unauthenticated user"];
/// Commands of sessions that are not applications (replication, the
/// server's daemons, a session already being killed).
const NOT_CLIENTS: [&str; 5] = [
    "Daemon",
    "Binlog Dump",
    "Binlog Dump GTID",
    "Killed",
    "Slave_worker",
];

fn classify(e: &Error) -> FailureKind {
    match e {
        Error::Server(s) if ACCESS_DENIED.contains(&s.code) => FailureKind::Auth,
        Error::Server(s) if NOT_ALLOWED.contains(&s.code) => FailureKind::Permission,
        Error::Server(_) => FailureKind::Refused,
        _ => FailureKind::Connect,
    }
}

/// The driver's TLS options for the URL's `ssl-mode` (as the canary reads
/// them).
fn ssl_opts(o: &MysqlOptions) -> Option<SslOpts> {
    let verify = match o.ssl_mode {
        SslMode::Disabled => return None,
        SslMode::Preferred | SslMode::Required => false,
        SslMode::VerifyCa | SslMode::VerifyIdentity => true,
    };
    let mut ssl = SslOpts::default()
        .with_danger_accept_invalid_certs(!verify)
        .with_danger_skip_domain_validation(o.ssl_mode != SslMode::VerifyIdentity);
    if let Some(ca) = &o.ssl_ca {
        ssl = ssl
            .with_root_certs(vec![ca.clone().into()])
            .with_disable_built_in_roots(verify);
    }
    if let (Some(cert), Some(key)) = (&o.ssl_cert, &o.ssl_key) {
        ssl = ssl.with_client_identity(Some(ClientIdentity::new(
            cert.clone().into(),
            key.clone().into(),
        )));
    }
    if let Some(name) = &o.ssl_server_name {
        ssl = ssl.with_danger_tls_hostname_override(Some(name.clone()));
    }
    Some(ssl)
}

/// Logs in with the drill credential; `ssl-mode=preferred` falls back to
/// plain text when the server offers no TLS.
async fn open(ctx: &ActionCtx<'_>, what: &str) -> Result<Conn, ActionError> {
    let url = &ctx.plan.admin.url;
    let Options::Mysql(o) = &ctx.plan.admin.options else {
        unreachable!("only MySQL targets come here")
    };
    let addr = url.first_host();
    let base = OptsBuilder::default()
        .ip_or_hostname(addr.host.clone())
        .tcp_port(addr.port)
        .user(url.username.clone())
        .pass(url.password().map(str::to_string))
        .prefer_socket(false)
        .stmt_cache_size(0)
        .connect_attribute("program_name", ctx.admin_name());
    let fail = |e: &Error| {
        let kind = match classify(e) {
            FailureKind::Auth => FailureKind::Auth,
            _ => FailureKind::Connect,
        };
        ActionError::new(kind, format!("cannot connect to {what}: {e}"))
    };
    match bounded(what, Conn::new(base.clone().ssl_opts(ssl_opts(o)))).await? {
        Err(Error::Driver(DriverError::NoClientSslFlagFromServer))
            if o.ssl_mode == SslMode::Preferred =>
        {
            bounded(what, Conn::new(base)).await?.map_err(|e| fail(&e))
        }
        r => r.map_err(|e| fail(&e)),
    }
}

/// `ID, USER, HOST, COMMAND` of `information_schema.PROCESSLIST`.
type ProcessRow = (u64, Option<String>, Option<String>, Option<String>);

/// One session of the process list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Session {
    id: u64,
    user: String,
    host: String,
    command: String,
}

/// Whom kill-clients kills: client sessions only, not the spared ones, and
/// with `--kill-user` only that user's.
fn victims<'s>(sessions: &'s [Session], spared: &[u64], user: Option<&str>) -> Vec<&'s Session> {
    sessions
        .iter()
        .filter(|s| !spared.contains(&s.id))
        .filter(|s| !SERVER_USERS.contains(&s.user.as_str()))
        .filter(|s| !NOT_CLIENTS.contains(&s.command.as_str()))
        .filter(|s| user.is_none_or(|u| s.user == u))
        .collect()
}

/// `KILL CONNECTION` for every client session but the spared ones.
pub async fn kill_clients(ctx: &ActionCtx<'_>) -> Result<ActionDone, ActionError> {
    let Action::KillClients { user, .. } = &ctx.plan.action else {
        unreachable!("only kill-clients comes here")
    };
    let what = format!("mysql {}", ctx.plan.admin.url.endpoint());
    let mut conn = open(ctx, &what).await?;
    let failed = |e: &Error, stmt: &str| {
        ActionError::new(classify(e), format!("{what} refused {stmt}: {e}"))
    };
    let mut spared: Vec<u64> = ctx
        .canary_detail("connection_id")
        .and_then(|id| id.parse().ok())
        .into_iter()
        .collect();
    // The canary's program_name, where performance_schema shows connect
    // attributes (off by default on MariaDB): also spares the canary of an
    // agent watching this target under the same name.
    let named: Result<Vec<u64>, Error> = bounded(
        &what,
        conn.exec(
            "SELECT PROCESSLIST_ID FROM performance_schema.session_connect_attrs \
             WHERE ATTR_NAME = 'program_name' AND ATTR_VALUE = ?",
            (ctx.canary_name(),),
        ),
    )
    .await?;
    spared.extend(named.unwrap_or_default());
    if spared.is_empty() {
        return Err(ActionError::new(
            FailureKind::Unknown,
            "cannot tell the canary's session apart (its connection id is unknown): nothing was killed",
        ));
    }
    let rows: Vec<ProcessRow> = bounded(
        &what,
        conn.query(
            "SELECT ID, USER, HOST, COMMAND FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID()",
        ),
    )
    .await?
    .map_err(|e| failed(&e, "SELECT FROM information_schema.PROCESSLIST"))?;
    let sessions: Vec<Session> = rows
        .into_iter()
        .map(|(id, user, host, command)| Session {
            id,
            user: user.unwrap_or_default(),
            host: host.unwrap_or_default(),
            command: command.unwrap_or_default(),
        })
        .collect();
    let canary_seen = sessions.iter().any(|s| spared.contains(&s.id));
    let mut killed = Vec::new();
    for s in victims(&sessions, &spared, user.as_deref()) {
        let stmt = format!("KILL CONNECTION {}", s.id);
        match bounded(&what, conn.query_drop(&stmt)).await? {
            Ok(()) => killed.push(format!("id {} ({}@{})", s.id, s.user, s.host)),
            Err(Error::Server(e)) if e.code == NO_SUCH_THREAD => {}
            Err(e) => return Err(failed(&e, &stmt).after(&killed)),
        }
    }
    let _ = bounded(&what, conn.disconnect()).await;
    super::killed(
        &killed,
        canary_seen,
        "the canary's session, the drill's own and the server's threads",
        "without PROCESS, a user sees only its own sessions",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: u64, user: &str, command: &str) -> Session {
        Session {
            id,
            user: user.into(),
            host: "127.0.0.1:5000".into(),
            command: command.into(),
        }
    }

    #[test]
    fn only_client_sessions_but_the_canarys_are_killed() {
        let sessions = [
            s(1, "system user", "Daemon"),
            s(5, "canary", "Sleep"),
            s(6, "app", "Sleep"),
            s(7, "app", "Query"),
            s(8, "repl", "Binlog Dump GTID"),
            s(9, "other", "Sleep"),
        ];
        let ids = |v: Vec<&Session>| v.iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(ids(victims(&sessions, &[5], None)), [6, 7, 9]);
        assert_eq!(ids(victims(&sessions, &[5], Some("app"))), [6, 7]);
    }
}
