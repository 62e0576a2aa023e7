//! Redis: the canary's connection speaks RESP itself ([`link`], [`resp`]):
//! `HELLO 3` with the credentials and the connection's name, or RESP2
//! (`AUTH`, `CLIENT SETNAME`) when a server refuses it; `SELECT`, `INFO` for
//! the identity, `PING` as the probe. With its own reader the canary sees a
//! closed connection the moment the socket reports it, on either protocol,
//! and a connection costs a few hundred bytes, not a driver's buffers, task
//! and channels (issue #14: 10,000 canaries on one agent).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::dburl::{DbUrl, HostPort};
use crate::model::{ConnectResult, DisconnectCause, Identity, Role};
use crate::stores::{
    ConnectError, Connected, Notices, ProbeError, Spec, Store, classify_io, disconnect_cause,
    resolve,
};

pub mod link;
pub mod resp;

pub use link::{Error, Link};
use resp::Value;

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

    /// Opens a canary connection to `addr`: `HELLO 3` (RESP2 when refused)
    /// with the credentials and the connection's name, the database,
    /// identity.
    pub async fn open(&self, addr: &HostPort) -> Result<Connected<Link>, ConnectError> {
        resolve(&addr.host, addr.port).await?;
        let mut link = Link::open(addr, self.tls.then_some(self.insecure)).await?;
        let password = self.password.as_deref();
        let mut hello: Vec<&[u8]> = vec![b"HELLO", b"3"];
        if let Some(p) = password {
            let user = self.username.as_deref().unwrap_or("default");
            hello.extend([&b"AUTH"[..], user.as_bytes(), p.as_bytes()]);
        }
        hello.extend([&b"SETNAME"[..], self.client_name.as_bytes()]);
        // `INFO` goes with `HELLO`, in the same round trip: a reconnect
        // wave of thousands of canaries waits for one answer each, not two.
        let [hello_reply, info_reply] = link
            .pipeline([&hello, &INFO])
            .await
            .map_err(|e| auth_error(&e, password, false))?;
        let mut info = Some(info_reply);
        if let Value::Error(e) = hello_reply {
            let e = Error::Server(e);
            if !refuses_resp3(&e) {
                return Err(auth_error(&e, password, false));
            }
            if !self.resp2_logged.swap(true, Ordering::Relaxed) {
                self.notices.say(format!(
                    "server {addr} does not speak RESP3: falling back to RESP2 (a closed connection is still seen at once)"
                ));
            }
            if let Some(p) = password {
                let auth = auth_args(self.username.as_deref(), p);
                link.call(&auth)
                    .await
                    .map_err(|e| auth_error(&e, password, true))?;
            }
            link.call(&[b"CLIENT", b"SETNAME", self.client_name.as_bytes()])
                .await
                .map_err(|e| connect_error(&e))?;
            // The INFO sent with HELLO was answered before the login.
            info = None;
        }
        if self.db != 0 {
            link.call(&[b"SELECT", self.db.to_string().as_bytes()])
                .await
                .map_err(|e| connect_error(&e))?;
        }
        let info = match info {
            Some(v) => v,
            None => link.call(&INFO).await.map_err(|e| connect_error(&e))?,
        };
        let mut identity = info_identity(info).map_err(|e| connect_error(&e))?;
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
        let closed = link.close_signal();
        Ok(Connected {
            conn: link,
            identity,
            closed,
            serving_since: None,
        })
    }
}

/// `AUTH [user] password`, as a command's arguments.
pub fn auth_args<'a>(user: Option<&'a str>, password: &'a str) -> Vec<&'a [u8]> {
    let mut args: Vec<&[u8]> = vec![b"AUTH"];
    args.extend(user.map(str::as_bytes));
    args.push(password.as_bytes());
    args
}

/// Whether the server refused `HELLO 3`: `NOPROTO`, or an unknown command
/// (a server before 6, or `HELLO` renamed away), in either wording
/// (``unknown command `HELLO` `` before 7, `'HELLO'` since).
fn refuses_resp3(e: &Error) -> bool {
    match e {
        Error::Server(s) => {
            s.code == "NOPROTO"
                || (s.code == "ERR"
                    && s.message.starts_with("unknown command")
                    && s.message.contains("HELLO"))
        }
        _ => false,
    }
}

fn identity_port(id: &Identity) -> Option<u16> {
    id.details.get("tcp_port")?.parse().ok()
}

/// Reads `INFO server`, `replication` and `persistence` into an identity.
pub async fn identify(link: &mut Link) -> Result<Identity, Error> {
    info_identity(link.call(&INFO).await?)
}

/// The command the identity is read with.
const INFO: [&[u8]; 4] = [b"INFO", b"server", b"replication", b"persistence"];

/// The identity an `INFO` reply gives.
fn info_identity(reply: Value) -> Result<Identity, Error> {
    match reply {
        Value::Bytes(text) => Ok(parse_info(&String::from_utf8_lossy(&text))),
        Value::Error(e) => Err(Error::Server(e)),
        other => Err(unexpected("INFO", &other)),
    }
}

/// A reply of the wrong type, as a protocol error.
pub fn unexpected(command: &str, v: &Value) -> Error {
    let kind = match v {
        Value::Nil => "nil",
        Value::Int(_) => "an integer",
        Value::Bytes(_) => "a string",
        Value::Error(_) => "an error",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        Value::Push(_) => "a push",
    };
    Error::Protocol(format!("{command} answered {kind}"))
}

/// The `INFO` fields kept in [`Identity::details`].
const DETAILS: [&str; 6] = [
    "loading",
    "master_replid",
    "tcp_port",
    "redis_mode",
    "master_host",
    "master_port",
];

/// Parses the `key:value` lines of `INFO`, in one pass that keeps only the
/// fields the identity needs (the reply has about a hundred; a canary reads
/// it every `identity_every` probes).
pub fn parse_info(text: &str) -> Identity {
    let mut id = Identity::default();
    for (k, v) in text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim_end().split_once(':'))
    {
        match k {
            "run_id" => id.server_id = Some(v.to_string()),
            "role" => {
                id.role = match v {
                    "master" => Some(Role::Primary),
                    "slave" | "replica" => Some(Role::Replica),
                    _ => None,
                }
            }
            "uptime_in_seconds" => id.uptime = v.parse().ok().map(Duration::from_secs),
            "redis_version" => id.version = Some(v.to_string()),
            _ if DETAILS.contains(&k) => {
                id.details.insert(k.to_string(), v.to_string());
            }
            _ => {}
        }
    }
    id
}

/// Classifies a failed command during connection set-up.
pub fn connect_error(e: &Error) -> ConnectError {
    let result = match e {
        Error::Io(io) => classify_io(io),
        Error::Closed => ConnectResult::Io,
        Error::Protocol(_) => ConnectResult::Protocol,
        Error::Server(s) => match s.code.as_str() {
            "WRONGPASS" | "NOAUTH" | "NOPERM" => ConnectResult::Auth,
            "LOADING" | "MASTERDOWN" => ConnectResult::NotReady,
            _ => ConnectResult::Protocol,
        },
    };
    ConnectError::new(result, e.to_string())
}

/// Classifies a failed `HELLO` (by its code, as any command) or `AUTH`
/// (any error reply is `auth`: old servers say `ERR invalid password`).
/// The server's words never carry the password (an unknown command's
/// message echoes its arguments).
pub fn auth_error(e: &Error, password: Option<&str>, auth: bool) -> ConnectError {
    let mut c = connect_error(e);
    if auth && matches!(e, Error::Server(_)) {
        c.result = ConnectResult::Auth.into();
    }
    if let Some(p) = password.filter(|p| !p.is_empty()) {
        c.message = c.message.replace(p, "<password>");
    }
    c
}

/// Classifies a failed command on a live connection.
pub fn probe_error(e: &Error) -> ProbeError {
    let cause = match e {
        Error::Io(io) => disconnect_cause(io),
        Error::Closed => DisconnectCause::Closed,
        Error::Server(_) | Error::Protocol(_) => DisconnectCause::Error,
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
pub async fn ping(link: &mut Link) -> Result<(), ProbeError> {
    link.call(&[b"PING"])
        .await
        .map(|_| ())
        .map_err(|e| probe_error(&e))
}

impl Store for RedisStore {
    type Options = RedisOptions;
    type Conn = Link;

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

    async fn connect(&self, _timeout: Duration) -> Result<Connected<Self::Conn>, ConnectError> {
        // (The canary bounds the whole attempt.)
        self.node.open(&self.addr).await
    }

    async fn probe(&self, conn: &mut Self::Conn) -> Result<(), ProbeError> {
        ping(conn).await
    }

    async fn identify(&self, conn: &mut Self::Conn) -> Result<Identity, ProbeError> {
        let mut id = identify(conn).await.map_err(|e| probe_error(&e))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, EventSink};
    use crate::model::{StoreKind, TargetInfo};
    use std::sync::Arc;

    fn info() -> Arc<TargetInfo> {
        Arc::new(TargetInfo {
            name: "t".into(),
            store: StoreKind::Redis,
            endpoint: "127.0.0.1:1".into(),
            own_results: &[],
            instance: 1,
            detail: Default::default(),
        })
    }

    #[test]
    fn info_gives_the_identity_and_only_the_details_it_keeps() {
        let text = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n\
            run_id:abc123\r\ntcp_port:6380\r\nuptime_in_seconds:42\r\n\
            # Replication\r\nrole:slave\r\nmaster_host:10.0.0.1\r\nmaster_port:6379\r\n\
            master_replid:ffee\r\nconnected_slaves:0\r\n# Persistence\r\nloading:0\r\n\
            rdb_changes_since_last_save:0\r\n";
        let id = parse_info(text);
        assert_eq!(id.server_id.as_deref(), Some("abc123"));
        assert_eq!(id.role, Some(Role::Replica));
        assert_eq!(id.uptime, Some(Duration::from_secs(42)));
        assert_eq!(id.version.as_deref(), Some("7.0.15"));
        let details: Vec<(&str, &str)> = id
            .details
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            details,
            [
                ("loading", "0"),
                ("master_host", "10.0.0.1"),
                ("master_port", "6379"),
                ("master_replid", "ffee"),
                ("redis_mode", "standalone"),
                ("tcp_port", "6380"),
            ]
        );
        assert_eq!(parse_info("role:master\r\n").role, Some(Role::Primary));
        assert_eq!(parse_info("role:sentinel\r\n").role, None);
    }

    #[test]
    fn errors_are_classified_by_code_and_never_show_the_password() {
        let server = |code: &str, message: &str| {
            Error::Server(resp::ServerError {
                code: code.into(),
                message: message.into(),
            })
        };
        let auth = ConnectResult::Auth;
        let hello = |e: &Error| auth_error(e, Some("hunter2"), false);
        assert_eq!(hello(&server("WRONGPASS", "invalid")).result, auth);
        assert_eq!(hello(&server("NOAUTH", "HELLO must")).result, auth);
        assert_eq!(
            hello(&server("LOADING", "loading")).result,
            ConnectResult::NotReady
        );
        assert_eq!(
            hello(&server("ERR", "max number of clients reached")).result,
            ConnectResult::Protocol
        );
        let echoed = hello(&server(
            "ERR",
            "unknown command 'HELLO', with args beginning with: '3' 'AUTH' 'default' 'hunter2'",
        ));
        assert!(!echoed.message.contains("hunter2"), "{}", echoed.message);
        assert!(refuses_resp3(&server(
            "ERR",
            "unknown command 'HELLO', with args"
        )));
        assert!(refuses_resp3(&server(
            "ERR",
            "unknown command `HELLO`, with args"
        )));
        assert!(refuses_resp3(&server(
            "NOPROTO",
            "unsupported protocol version"
        )));
        assert!(!refuses_resp3(&server("ERR", "unknown command 'PING'")));
        assert_eq!(
            auth_error(&server("ERR", "invalid password"), Some("x"), true).result,
            auth
        );
        assert_eq!(
            connect_error(&Error::Protocol("garbage".into())).result,
            ConnectResult::Protocol
        );
        assert_eq!(connect_error(&Error::Closed).result, ConnectResult::Io);
        assert_eq!(probe_error(&Error::Closed).cause, DisconnectCause::Closed);
        let reset = Error::Io(std::io::ErrorKind::ConnectionReset.into());
        assert_eq!(probe_error(&reset).cause, DisconnectCause::Reset);
        assert_eq!(
            connect_error(&Error::Io(std::io::ErrorKind::ConnectionRefused.into())).result,
            ConnectResult::Refused
        );
    }

    /// What 10,000 Redis targets cost is mostly what each idle canary
    /// keeps: its connection, its task's future (sized by its largest
    /// state), its buffers (none while idle, see `link`).
    #[test]
    fn an_idle_redis_canary_stays_small() {
        struct Nop;
        impl EventSink for Nop {
            fn emit(&self, _t: &TargetInfo, _e: &Event) {}
        }
        let url = DbUrl::parse("redis://127.0.0.1:1").unwrap();
        let settings = crate::settings::CanarySettings::default();
        let spec = Spec {
            name: "a",
            url: &url,
            settings: &settings,
        };
        let store = RedisStore::new(spec, &RedisOptions { tls: false, db: 0 });
        assert!(std::mem::size_of::<Link>() <= 16);
        let canary = crate::canary::Canary::new(store, info(), settings, Arc::new(Nop));
        let task = canary.run(tokio_util::sync::CancellationToken::new());
        // (3,944 bytes with the connect and connecting futures inline, in a
        // debug build.)
        let size = std::mem::size_of_val(&task);
        assert!(size <= 2600, "a canary task's future is {size} bytes");
        drop(task);

        // The dispatch the agent spawns holds a pointer to it, not the
        // largest store's canary (6,304 bytes inline, debug build).
        let options = crate::stores::Options::Redis(RedisOptions { tls: false, db: 0 });
        let run = crate::canary::RunCanary {
            info: info(),
            settings,
            sink: Arc::new(Nop),
            budget: Arc::new(crate::backoff::AttemptBudget::new(1000)),
            lag: Default::default(),
            shutdown: Default::default(),
        };
        let spawned = crate::stores::with_store(spec, &options, run);
        let size = std::mem::size_of_val(&spawned);
        assert!(size <= 512, "the dispatch's future is {size} bytes");
    }
}
