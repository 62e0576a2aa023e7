//! Redis actions: kill-clients (`CLIENT LIST`, then `CLIENT KILL ID` for
//! everyone but the canary and the drill itself — `CLIENT KILL TYPE normal
//! SKIPME yes` would take the canary too), `SHUTDOWN`, and through Sentinel
//! `SENTINEL FAILOVER`. The admin connection speaks RESP2 with the drill
//! credential and bounded connect and response timeouts.

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, IntoConnectionInfo, ProtocolVersion, RedisError};

use crate::dburl::HostPort;
use crate::model::ConnectResult;
use crate::stores::Options;
use crate::stores::{ConnectError, classify_io};
use crate::tls::find_io_error;

use super::{ADMIN_TIMEOUT, ActionCtx, ActionDone, ActionError, FailureKind, bounded};
use crate::drill::plan::Action;

/// Classifies a redis-rs error during the admin connection's set-up by its
/// type (the canary's own connection has its own client, see
/// `stores::redis::link`).
fn driver_error(e: &RedisError) -> ConnectError {
    use redis::ServerErrorKind;
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

/// Who may log in where.
struct Login<'a> {
    username: Option<&'a str>,
    password: Option<&'a str>,
    tls: bool,
    insecure: bool,
    db: i64,
}

/// Opens an admin connection to `addr` and names it.
async fn open(
    addr: &HostPort,
    login: &Login<'_>,
    name: &str,
) -> Result<MultiplexedConnection, ActionError> {
    let what = format!("redis {addr}");
    let scheme = if login.tls { "rediss" } else { "redis" };
    let fragment = if login.insecure { "#insecure" } else { "" };
    let info = format!("{scheme}://{addr}/{}{fragment}", login.db)
        .into_connection_info()
        .map_err(|e| ActionError::new(FailureKind::Connect, format!("bad address {addr}: {e}")))?;
    let mut settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP2);
    if let Some(u) = login.username {
        settings = settings.set_username(u);
    }
    if let Some(p) = login.password {
        settings = settings.set_password(p);
    }
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(ADMIN_TIMEOUT))
        .set_response_timeout(Some(ADMIN_TIMEOUT));
    let fail = |e: &RedisError| {
        let c = driver_error(e);
        ActionError::connect(c.result, &what, &c.message)
    };
    let client = redis::Client::open(info.set_redis_settings(settings)).map_err(|e| fail(&e))?;
    let mut conn = bounded(
        &what,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await?
    .map_err(|e| fail(&e))?;
    bounded(
        &what,
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(name)
            .query_async::<()>(&mut conn),
    )
    .await?
    .map_err(|e| command_error(&what, "CLIENT SETNAME", &e))?;
    Ok(conn)
}

/// A failed command, classified: a missing ACL permission, or the server's
/// refusal in its words.
fn command_error(what: &str, command: &str, e: &RedisError) -> ActionError {
    let kind = if e.code() == Some("NOPERM") {
        FailureKind::Permission
    } else if e.kind() == ErrorKind::Io || e.is_connection_dropped() {
        FailureKind::Connect
    } else {
        FailureKind::Refused
    };
    ActionError::new(kind, format!("{what} refused {command}: {e}"))
}

/// The server to act on, and how to log in there: the store's own address,
/// or for Sentinel the master the canary is connected to.
fn server<'a>(ctx: &'a ActionCtx<'_>) -> Result<(HostPort, Login<'a>), ActionError> {
    let url = &ctx.plan.admin.url;
    let (tls, db, addr) = match &ctx.plan.store.options {
        Options::Redis(o) => (o.tls, o.db, ctx.plan.admin.url.first_host().clone()),
        Options::RedisSentinel(o) => {
            let addr = ctx
                .canary
                .and_then(|i| i.address.as_deref())
                .and_then(parse_host_port)
                .ok_or_else(|| {
                    ActionError::new(
                        FailureKind::Unknown,
                        "the canary does not know which master it is connected to",
                    )
                })?;
            (o.tls, o.db, addr)
        }
        _ => unreachable!("only Redis targets come here"),
    };
    Ok((
        addr,
        Login {
            username: url.username.as_deref(),
            password: url.password(),
            tls,
            insecure: url.fragment.as_deref() == Some("insecure"),
            db,
        },
    ))
}

fn parse_host_port(s: &str) -> Option<HostPort> {
    let (host, port) = s.rsplit_once(':')?;
    Some(HostPort {
        host: host.trim_matches(['[', ']']).to_string(),
        port: port.parse().ok()?,
    })
}

/// One line of `CLIENT LIST`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Client {
    id: i64,
    addr: String,
    name: String,
    user: String,
}

fn parse_clients(text: &str) -> Vec<Client> {
    text.lines()
        .filter_map(|line| {
            let mut c = Client {
                id: -1,
                addr: String::new(),
                name: String::new(),
                user: String::new(),
            };
            for kv in line.split_whitespace() {
                match kv.split_once('=') {
                    Some(("id", v)) => c.id = v.parse().ok()?,
                    Some(("addr", v)) => c.addr = v.to_string(),
                    Some(("name", v)) => c.name = v.to_string(),
                    Some(("user", v)) => c.user = v.to_string(),
                    _ => {}
                }
            }
            (c.id >= 0).then_some(c)
        })
        .collect()
}

/// Whom kill-clients kills: not the drill itself, not the canary, and with
/// `--kill-user` only that user's clients.
fn victims<'c>(
    clients: &'c [Client],
    own_id: i64,
    canary: &str,
    user: Option<&str>,
) -> Vec<&'c Client> {
    clients
        .iter()
        .filter(|c| c.id != own_id && c.name != canary)
        .filter(|c| user.is_none_or(|u| c.user == u))
        .collect()
}

/// `CLIENT LIST TYPE normal` and `TYPE pubsub`, then `CLIENT KILL ID` for
/// each client but the canary and the drill's own connection.
pub async fn kill_clients(ctx: &ActionCtx<'_>) -> Result<ActionDone, ActionError> {
    let Action::KillClients { user, .. } = &ctx.plan.action else {
        unreachable!("only kill-clients comes here")
    };
    let (addr, login) = server(ctx)?;
    let what = format!("redis {addr}");
    let mut conn = open(&addr, &login, &ctx.admin_name()).await?;
    let own_id: i64 = bounded(&what, redis::cmd("CLIENT").arg("ID").query_async(&mut conn))
        .await?
        .map_err(|e| command_error(&what, "CLIENT ID", &e))?;
    let mut clients = Vec::new();
    for kind in ["normal", "pubsub"] {
        let text: String = bounded(
            &what,
            redis::cmd("CLIENT")
                .arg("LIST")
                .arg("TYPE")
                .arg(kind)
                .query_async(&mut conn),
        )
        .await?
        .map_err(|e| command_error(&what, "CLIENT LIST", &e))?;
        clients.extend(parse_clients(&text));
    }
    let canary = ctx.canary_name();
    let canary_seen = clients.iter().any(|c| c.name == canary);
    let mut killed = Vec::new();
    // One at a time, so that a refusal is the server's own, typed error.
    for c in victims(&clients, own_id, &canary, user.as_deref()) {
        let n: i64 = bounded(
            &what,
            redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(c.id)
                .query_async(&mut conn),
        )
        .await?
        .map_err(|e| command_error(&what, "CLIENT KILL", &e).after(&killed))?;
        // 0: the client left in the meantime.
        if n > 0 {
            killed.push(if c.name.is_empty() {
                format!("id {} ({})", c.id, c.addr)
            } else {
                format!("id {} ({}, {})", c.id, c.addr, c.name)
            });
        }
    }
    super::killed(
        &killed,
        canary_seen,
        &format!("the canary {canary} and the drill's own connection"),
        "is the canary connected to another server?",
    )
}

/// `SHUTDOWN`: the server closes the connection as it exits, which is the
/// success.
pub async fn shutdown(ctx: &ActionCtx<'_>) -> Result<ActionDone, ActionError> {
    let (addr, login) = server(ctx)?;
    let what = format!("redis {addr}");
    let mut conn = open(&addr, &login, &ctx.admin_name()).await?;
    match bounded(&what, redis::cmd("SHUTDOWN").query_async::<()>(&mut conn)).await? {
        Ok(()) => Ok(ActionDone::said(format!("SHUTDOWN sent to {addr}"))),
        Err(e) if e.kind() == ErrorKind::Io || e.is_connection_dropped() => Ok(ActionDone::said(
            format!("SHUTDOWN sent to {addr}: the server closed the connection as it exited"),
        )),
        Err(e) => Err(command_error(&what, "SHUTDOWN", &e)),
    }
}

/// `SENTINEL FAILOVER <master>` on the first sentinel that answers.
pub async fn sentinel_failover(ctx: &ActionCtx<'_>) -> Result<ActionDone, ActionError> {
    let Options::RedisSentinel(o) = &ctx.plan.store.options else {
        unreachable!("only Sentinel targets come here")
    };
    let url = &ctx.plan.admin.url;
    let username = url.query_param("sentinel_username");
    let password = url.query_param("sentinel_password");
    let login = Login {
        username: username.as_deref(),
        password: password.as_deref(),
        tls: false,
        insecure: false,
        db: 0,
    };
    let mut unreachable = Vec::new();
    for sentinel in &url.hosts {
        let what = format!("sentinel {sentinel}");
        let mut conn = match open(sentinel, &login, &ctx.admin_name()).await {
            Ok(c) => c,
            Err(e) if matches!(e.kind, FailureKind::Connect | FailureKind::Timeout) => {
                unreachable.push(e.message);
                continue;
            }
            Err(e) => return Err(e),
        };
        let answer = bounded(
            &what,
            redis::cmd("SENTINEL")
                .arg("FAILOVER")
                .arg(&o.master_name)
                .query_async::<String>(&mut conn),
        )
        .await?;
        return match answer {
            Ok(_) => Ok(ActionDone::said(format!(
                "{what} accepted SENTINEL FAILOVER {}",
                o.master_name
            ))),
            Err(e) => Err(command_error(
                &what,
                &format!("SENTINEL FAILOVER {}", o.master_name),
                &e,
            )),
        };
    }
    Err(ActionError::new(
        FailureKind::Connect,
        format!("no sentinel answered: {}", unreachable.join("; ")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "id=3 addr=127.0.0.1:5000 laddr=127.0.0.1:6379 fd=8 name=dbcanary:cache age=9 user=default\n\
                        id=7 addr=127.0.0.1:5001 laddr=127.0.0.1:6379 fd=9 name= age=5 user=app\n\
                        id=8 addr=127.0.0.1:5002 laddr=127.0.0.1:6379 fd=10 name=dbcanary-drill:cache age=0 user=admin\n\
                        id=9 addr=127.0.0.1:5003 laddr=127.0.0.1:6379 fd=11 name=worker age=5 user=default\n";

    #[test]
    fn kill_clients_spares_the_canary_and_itself() {
        let clients = parse_clients(LIST);
        assert_eq!(clients.len(), 4);
        let ids = |v: Vec<&Client>| v.iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(victims(&clients, 8, "dbcanary:cache", None)), [7, 9]);
        assert_eq!(
            ids(victims(&clients, 8, "dbcanary:cache", Some("app"))),
            [7]
        );
        assert_eq!(
            parse_host_port("[::1]:6380"),
            Some(HostPort {
                host: "::1".into(),
                port: 6380
            })
        );
    }
}
