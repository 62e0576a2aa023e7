//! PostgreSQL kill-clients: `pg_terminate_backend()` for every client
//! backend of the target's database but the canary (its backend pid and
//! `application_name = 'dbcanary:<target>'`) and the drill's own, one at a
//! time so that a refusal says which backend and why. The backends are
//! listed first: a role may see them without `pg_signal_backend`, and the
//! report says who was terminated.

use tokio::task::JoinSet;
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::stores::Options;
use crate::stores::postgres::connect_error;

use super::{ADMIN_TIMEOUT, ActionCtx, ActionDone, ActionError, FailureKind, bounded};
use crate::drill::plan::Action;

/// Client backends of the database, but the drill's own and the canary's.
const LIST: &str = "SELECT pid, usename::text, application_name, client_addr::text \
     FROM pg_stat_activity \
     WHERE backend_type = 'client backend' AND datname = COALESCE($1, current_database()) \
       AND pid <> pg_backend_pid() AND application_name <> $2 AND NOT (pid = ANY($3)) \
       AND ($4::text IS NULL OR usename::text = $4) AND ($5::text IS NULL OR application_name = $5) \
     ORDER BY pid";

fn refused(what: &str, e: &tokio_postgres::Error) -> ActionError {
    let kind = match e.code() {
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => FailureKind::Permission,
        Some(_) => FailureKind::Refused,
        None => FailureKind::Connect,
    };
    let text = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    };
    ActionError::new(kind, format!("{what}: {text}"))
}

/// The database whose backends are terminated: the target URL's, else the
/// one a login without a database gets (the user's name); `None` leaves it
/// to the admin connection's own.
fn target_database(ctx: &ActionCtx<'_>) -> Option<String> {
    let url = &ctx.plan.store.url;
    if url.path.is_empty() {
        url.username.clone()
    } else {
        Some(decoded(&url.path))
    }
}

fn decoded(path: &str) -> String {
    percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned()
}

/// `pg_terminate_backend()` for every client backend but the spared ones.
pub async fn kill_clients(ctx: &ActionCtx<'_>) -> Result<ActionDone, ActionError> {
    let Action::KillClients { user, application } = &ctx.plan.action else {
        unreachable!("only kill-clients comes here")
    };
    let Options::Postgresql(o) = &ctx.plan.admin.options else {
        unreachable!("only PostgreSQL targets come here")
    };
    let url = &ctx.plan.admin.url;
    let addr = url.first_host();
    let what = format!("postgresql {addr}");
    let database = target_database(ctx);
    let mut config = tokio_postgres::Config::new();
    config
        .host(&addr.host)
        .port(addr.port)
        .application_name(ctx.admin_name())
        .ssl_mode(o.driver_ssl_mode())
        .channel_binding(o.channel_binding)
        .connect_timeout(ADMIN_TIMEOUT);
    if let Some(u) = &url.username {
        config.user(u);
    }
    if let Some(p) = url.password() {
        config.password(p);
    }
    let dbname = if url.path.is_empty() {
        database.clone()
    } else {
        Some(decoded(&url.path))
    };
    if let Some(d) = &dbname {
        config.dbname(d);
    }
    let tls = o
        .tls_config()
        .map_err(|reason| ActionError::new(FailureKind::Connect, reason))?;
    let (client, connection) = bounded(&what, config.connect(MakeRustlsConnect::new(tls)))
        .await?
        .map_err(|e| {
            let c = connect_error(&e);
            ActionError::connect(c.result, &what, &c.message)
        })?;
    // The driver's connection runs until the client is dropped; the set
    // ends it with this function at the latest.
    let mut driver = JoinSet::new();
    driver.spawn(connection);
    let spared: Vec<i32> = ctx
        .canary_detail("backend_pid")
        .and_then(|p| p.parse().ok())
        .into_iter()
        .collect();
    let canary = ctx.canary_name();
    let rows = bounded(
        &what,
        client.query(LIST, &[&database, &canary, &spared, user, application]),
    )
    .await?
    .map_err(|e| refused(&format!("{what} refused to list pg_stat_activity"), &e))?;
    let mut killed = Vec::new();
    for row in &rows {
        let pid: i32 = row.get(0);
        let role: Option<String> = row.get(1);
        let app: Option<String> = row.get(2);
        let from: Option<String> = row.get(3);
        let done = bounded(
            &what,
            client.query_one("SELECT pg_terminate_backend($1)", &[&pid]),
        )
        .await?;
        match done {
            Ok(r) if r.get::<_, bool>(0) => killed.push(format!(
                "pid {pid} ({}{}{})",
                role.as_deref().unwrap_or("?"),
                from.map(|f| format!("@{f}")).unwrap_or_default(),
                app.filter(|a| !a.is_empty())
                    .map(|a| format!(", {a}"))
                    .unwrap_or_default()
            )),
            // Gone by itself in the meantime.
            Ok(_) => {}
            Err(e) => {
                let err = refused(&format!("{what} refused pg_terminate_backend({pid})"), &e);
                return Err(err.after(&killed));
            }
        }
    }
    let canary_seen = bounded(
        &what,
        client.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1) OR application_name = $2",
            &[&spared, &canary],
        ),
    )
    .await?
    .map(|r| r.get::<_, i64>(0) > 0)
    .unwrap_or(false);
    super::killed(
        &killed,
        canary_seen,
        &format!("the canary {canary} and the drill's own backend"),
        "is the target's database the one the canary uses?",
    )
}
