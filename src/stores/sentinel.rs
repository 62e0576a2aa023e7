//! Redis through Sentinel: ask the sentinels which server is the master,
//! hold the canary on that master, and follow `+switch-master`
//! announcements. Sentinels are spoken to with the canary's own RESP
//! client ([`crate::stores::redis::link`]), in RESP2: a short connection per
//! question, and one subscribed connection whose messages are read as they
//! come (its end is seen as an EOF, like a canary connection's).
//!
//! URL: `redis+sentinel://[user:password@]s1:26379,s2:26379/<master>[/<db>]`
//! with optional `?sentinel_username=...&sentinel_password=...` when the
//! sentinels have their own credentials. The user-info password is the
//! master's.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::dburl::{DbUrl, HostPort};
use crate::model::{ConnectResult, FailoverSource, Identity, Role};
use crate::stores::redis::resp::Value;
use crate::stores::redis::{
    Link, RedisNode, auth_args, auth_error, connect_error, identify, ping, probe_error, unexpected,
};
use crate::stores::{Announcement, ConnectError, Connected, ProbeError, Spec, Store};

/// The channel Sentinel announces a new master on.
const SWITCH_MASTER: &str = "+switch-master";
/// Pause before trying the sentinels again when none answered.
const RETRY_SENTINELS: Duration = Duration::from_secs(1);

/// How to talk to the sentinels themselves.
#[derive(Clone)]
struct SentinelClient {
    username: Option<String>,
    password: Option<String>,
    master_name: String,
    /// Bound of each sentinel connection and round trip.
    timeout: Duration,
}

impl SentinelClient {
    /// `what`, bounded by the sentinel timeout.
    async fn bounded<T>(
        &self,
        sentinel: &HostPort,
        what: impl Future<Output = Result<T, ConnectError>>,
    ) -> Result<T, ConnectError> {
        tokio::time::timeout(self.timeout, what)
            .await
            .unwrap_or_else(|_| {
                Err(ConnectError::new(
                    ConnectResult::Timeout,
                    format!(
                        "sentinel {sentinel} did not answer within {}",
                        humantime::format_duration(self.timeout)
                    ),
                ))
            })
    }

    /// A connection to one sentinel, logged in with the sentinel
    /// credentials when there are any.
    async fn conn(&self, addr: &HostPort) -> Result<Link, ConnectError> {
        self.bounded(addr, async {
            let mut link = Link::open(addr, None).await?;
            if let Some(p) = self.password.as_deref() {
                link.call(&auth_args(self.username.as_deref(), p))
                    .await
                    .map_err(|e| auth_error(&e, Some(p), true))?;
            }
            Ok(link)
        })
        .await
    }

    /// Asks one sentinel for the master's address.
    async fn ask(self, sentinel: HostPort) -> Result<HostPort, ConnectError> {
        let mut conn = self.conn(&sentinel).await?;
        let question: [&[u8]; 3] = [
            b"SENTINEL",
            b"get-master-addr-by-name",
            self.master_name.as_bytes(),
        ];
        let reply = self
            .bounded(&sentinel, async {
                conn.call(&question).await.map_err(|e| connect_error(&e))
            })
            .await?;
        let addr = match reply.items() {
            Some([host, port]) => {
                let port = port.text().and_then(|p| p.parse().ok());
                match (host.text(), port) {
                    (Some(host), Some(port)) => Some(HostPort { host, port }),
                    _ => None,
                }
            }
            _ if reply == Value::Nil => {
                return Err(ConnectError::new(
                    ConnectResult::NotReady,
                    format!(
                        "sentinel {sentinel} does not know a master named {:?}",
                        self.master_name
                    ),
                ));
            }
            _ => None,
        };
        addr.ok_or_else(|| connect_error(&unexpected("SENTINEL get-master-addr-by-name", &reply)))
    }
}

/// A Redis master found through Sentinel.
pub struct SentinelStore {
    node: RedisNode,
    sentinels: Vec<HostPort>,
    client: SentinelClient,
    /// The last master the sentinels named (or announced).
    master: Mutex<Option<HostPort>>,
    /// Whether falling back to that master was said, since a sentinel last
    /// answered.
    fallback_said: AtomicBool,
}

/// What a `redis+sentinel://` URL says beyond the sentinels' addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelOptions {
    /// The master's name (the first part of the path).
    pub master_name: String,
    /// The database number (the second part; 0 when it names none).
    pub db: i64,
    /// `rediss+sentinel`: TLS to the master.
    pub tls: bool,
}

impl SentinelStore {
    fn master_name(&self) -> &str {
        &self.client.master_name
    }

    /// Asks every sentinel at once; the first answer wins. With no answer,
    /// the last known master is tried.
    async fn resolve_master(&self) -> Result<HostPort, ConnectError> {
        let mut asks = JoinSet::new();
        for s in self.sentinels.clone() {
            asks.spawn(self.client.clone().ask(s));
        }
        let mut last_err = None;
        while let Some(r) = asks.join_next().await {
            match r {
                Ok(Ok(addr)) => {
                    self.fallback_said.store(false, Ordering::Relaxed);
                    return Ok(addr);
                }
                Ok(Err(e)) => last_err = Some(e),
                Err(e) => last_err = Some(ConnectError::new(ConnectResult::Io, e.to_string())),
            }
        }
        let cached = self.master.lock().expect("master lock").clone();
        match cached {
            Some(addr) => {
                if !self.fallback_said.swap(true, Ordering::Relaxed) {
                    self.node.notices.say(format!(
                        "no sentinel answered: trying the last known master {addr} of {}",
                        self.master_name()
                    ));
                }
                Ok(addr)
            }
            None => Err(last_err.map_or_else(
                || ConnectError::new(ConnectResult::NotReady, "no sentinel configured"),
                |e| {
                    ConnectError::new(
                        e.result,
                        format!("no sentinel answered (last error: {})", e.message),
                    )
                },
            )),
        }
    }

    /// Subscribes to `+switch-master` on one sentinel and forwards
    /// announcements until that sentinel goes away.
    async fn follow(
        &self,
        sentinel: &HostPort,
        tx: &mpsc::Sender<Announcement>,
    ) -> Result<(), ConnectError> {
        let mut conn = self.client.conn(sentinel).await?;
        self.client
            .bounded(sentinel, async {
                conn.call(&[b"SUBSCRIBE", SWITCH_MASTER.as_bytes()])
                    .await
                    .map_err(|e| connect_error(&e))
            })
            .await?;
        tracing::debug!(%sentinel, master = %self.master_name(), "following +switch-master");
        loop {
            // Each message is a reply of its own, under the reply limits; an
            // error (the sentinel gone, garbage) ends the subscription.
            let message = tokio::select! {
                _ = tx.closed() => return Ok(()),
                m = conn.reply() => m,
            };
            let Ok(message) = message else {
                return Ok(());
            };
            let payload = match message.items() {
                Some([kind, channel, payload])
                    if kind.text().as_deref() == Some("message")
                        && channel.text().as_deref() == Some(SWITCH_MASTER) =>
                {
                    payload.text()
                }
                _ => None,
            };
            let Some(payload) = payload else { continue };
            if let Some((from, to)) = parse_switch_master(&payload, self.master_name()) {
                *self.master.lock().expect("master lock") = Some(to.clone());
                let _ = tx
                    .send(Announcement::Failover {
                        source: FailoverSource::Sentinel,
                        from: from.to_string(),
                        to: to.to_string(),
                    })
                    .await;
            }
        }
    }
}

/// Parses `<name> <old-ip> <old-port> <new-ip> <new-port>`.
fn parse_switch_master(payload: &str, name: &str) -> Option<(HostPort, HostPort)> {
    let parts: Vec<&str> = payload.split_whitespace().collect();
    if parts.len() != 5 || parts[0] != name {
        return None;
    }
    let hp = |h: &str, p: &str| {
        Some(HostPort {
            host: h.to_string(),
            port: p.parse().ok()?,
        })
    };
    Some((hp(parts[1], parts[2])?, hp(parts[3], parts[4])?))
}

impl Store for SentinelStore {
    type Options = SentinelOptions;
    type Conn = (Link, HostPort);

    fn options(url: &DbUrl) -> Result<SentinelOptions, String> {
        let mut parts = url.path.splitn(2, '/');
        let master_name = parts.next().unwrap_or_default().to_string();
        if master_name.is_empty() {
            return Err(
                "the URL path must be the master name: redis+sentinel://s1:26379,s2:26379/<master>[/<db>]".into(),
            );
        }
        let db = super::redis::database(parts.next().unwrap_or_default())?;
        let query = url.query.as_deref().unwrap_or("");
        for (key, _) in url::form_urlencoded::parse(query.as_bytes()) {
            if key != "sentinel_username" && key != "sentinel_password" {
                return Err(format!(
                    "unknown URL parameter {key:?} (known: sentinel_username, sentinel_password)"
                ));
            }
        }
        Ok(SentinelOptions {
            master_name,
            db,
            tls: url.scheme.starts_with("rediss"),
        })
    }

    fn new(spec: Spec<'_>, o: &SentinelOptions) -> Self {
        let url = spec.url;
        Self {
            node: RedisNode::new(spec.name, url, o.tls, o.db, false),
            sentinels: url.hosts.clone(),
            client: SentinelClient {
                username: url.query_param("sentinel_username"),
                password: url.query_param("sentinel_password"),
                master_name: o.master_name.clone(),
                timeout: spec.settings.timeout,
            },
            master: Mutex::new(None),
            fallback_said: AtomicBool::new(false),
        }
    }

    fn notices(&self) -> Vec<String> {
        self.node.notices.take()
    }

    async fn connect(&self, _timeout: Duration) -> Result<Connected<Self::Conn>, ConnectError> {
        // (The canary bounds the whole attempt.)
        let addr = self.resolve_master().await?;
        let c = self.node.open(&addr).await?;
        if c.identity.role != Some(Role::Primary) {
            return Err(ConnectError::new(
                ConnectResult::NotReady,
                format!("{addr}, named master by Sentinel, is not a master (yet)"),
            ));
        }
        *self.master.lock().expect("master lock") = Some(addr.clone());
        Ok(Connected {
            conn: (c.conn, addr),
            identity: c.identity,
            closed: c.closed,
            serving_since: c.serving_since,
        })
    }

    async fn probe(&self, conn: &mut Self::Conn) -> Result<(), ProbeError> {
        ping(&mut conn.0).await
    }

    async fn identify(&self, conn: &mut Self::Conn) -> Result<Identity, ProbeError> {
        let mut id = identify(&mut conn.0).await.map_err(|e| probe_error(&e))?;
        id.address = Some(conn.1.to_string());
        Ok(id)
    }

    async fn close(&self, conn: Self::Conn) {
        drop(conn);
    }

    async fn announce(&self, tx: mpsc::Sender<Announcement>) {
        let mut all_down_reported = false;
        loop {
            let mut followed_one = false;
            for s in &self.sentinels {
                if tx.is_closed() {
                    return;
                }
                match self.follow(s, &tx).await {
                    Ok(()) => {
                        followed_one = true;
                        if all_down_reported {
                            all_down_reported = false;
                            let _ = tx
                                .send(Announcement::Notice(format!(
                                    "sentinel {s} reachable again"
                                )))
                                .await;
                        }
                    }
                    Err(e) => tracing::debug!(sentinel = %s, error = %e, "cannot follow sentinel"),
                }
            }
            if !followed_one && !all_down_reported {
                all_down_reported = true;
                let _ = tx
                    .send(Announcement::Notice(format!(
                        "no sentinel of {} answers: keeping the current master connection, failovers are seen only as outages until a sentinel is back",
                        self.master_name()
                    )))
                    .await;
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(RETRY_SENTINELS) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_switch_master() {
        let (from, to) =
            parse_switch_master("mymaster 127.0.0.1 7001 127.0.0.1 7002", "mymaster").unwrap();
        assert_eq!(from.to_string(), "127.0.0.1:7001");
        assert_eq!(to.to_string(), "127.0.0.1:7002");
        assert!(parse_switch_master("other 127.0.0.1 7001 127.0.0.1 7002", "mymaster").is_none());
    }
}
