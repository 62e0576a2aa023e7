//! Redis through Sentinel: ask the sentinels which server is the master,
//! hold the canary on that master, and follow `+switch-master`
//! announcements. The driver's own `ConnectionManager` is not
//! Sentinel-aware (redis-rs #1438), so resolution is done here.
//!
//! URL: `redis+sentinel://[user:password@]s1:26379,s2:26379/<master>[/<db>]`
//! with optional `?sentinel_username=...&sentinel_password=...` when the
//! sentinels have their own credentials. The user-info password is the
//! master's.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::{AsyncConnectionConfig, IntoConnectionInfo, ProtocolVersion, PushKind};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::dburl::{DbUrl, HostPort};
use crate::model::{ConnectResult, FailoverSource, Identity, Role};
use crate::stores::redis::{
    RedisConn, RedisNode, Transport, connect_error, identify, ping, probe_error,
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
    async fn conn(
        &self,
        addr: &HostPort,
        push: Option<mpsc::UnboundedSender<redis::PushInfo>>,
    ) -> Result<RedisConn, ConnectError> {
        let protocol = if push.is_some() {
            ProtocolVersion::RESP3
        } else {
            ProtocolVersion::RESP2
        };
        let info = format!("redis://{addr}")
            .into_connection_info()
            .map_err(|e| connect_error(&e))?;
        let mut settings = info.redis_settings().clone().set_protocol(protocol);
        if let Some(u) = &self.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &self.password {
            settings = settings.set_password(p);
        }
        let mut config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        if let Some(tx) = push {
            config = config.set_push_sender(tx);
        }
        let open = async {
            Transport::open(addr, None)
                .await?
                .handshake(&settings, config)
                .await
                .map_err(|e| connect_error(&e))
        };
        tokio::time::timeout(self.timeout, open)
            .await
            .unwrap_or_else(|_| {
                Err(ConnectError::new(
                    ConnectResult::Timeout,
                    format!(
                        "sentinel {addr} did not answer within {}",
                        humantime::format_duration(self.timeout)
                    ),
                ))
            })
    }

    /// Asks one sentinel for the master's address.
    async fn ask(self, sentinel: HostPort) -> Result<HostPort, ConnectError> {
        let mut conn = self.conn(&sentinel, None).await?;
        let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master_name)
            .query_async(conn.round_trip())
            .await
            .map_err(|e| connect_error(&e))?;
        match addr {
            Some((host, port)) => Ok(HostPort { host, port }),
            None => Err(ConnectError::new(
                ConnectResult::NotReady,
                format!(
                    "sentinel {sentinel} does not know a master named {:?}",
                    self.master_name
                ),
            )),
        }
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
        let (ptx, mut prx) = mpsc::unbounded_channel();
        let mut conn = self.client.conn(sentinel, Some(ptx)).await?;
        conn.round_trip()
            .subscribe(SWITCH_MASTER)
            .await
            .map_err(|e| connect_error(&e))?;
        tracing::debug!(%sentinel, master = %self.master_name(), "following +switch-master");
        loop {
            let push = tokio::select! {
                _ = tx.closed() => return Ok(()),
                p = prx.recv() => p,
            };
            let Some(push) = push else { return Ok(()) };
            if push.kind == PushKind::Disconnection {
                return Ok(());
            }
            // Each announcement is one round trip's worth of reading.
            conn.round_trip();
            let Some(msg) = redis::Msg::from_push_info(push) else {
                continue;
            };
            let Ok(payload) = msg.get_payload::<String>() else {
                continue;
            };
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
    type Conn = (RedisConn, HostPort);

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

    async fn connect(&self, timeout: Duration) -> Result<Connected<Self::Conn>, ConnectError> {
        let addr = self.resolve_master().await?;
        let c = self.node.open(&addr, timeout).await?;
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
        })
    }

    async fn probe(&self, conn: &mut Self::Conn) -> Result<(), ProbeError> {
        ping(conn.0.round_trip()).await
    }

    async fn identify(&self, conn: &mut Self::Conn) -> Result<Identity, ProbeError> {
        let mut id = identify(conn.0.round_trip())
            .await
            .map_err(|e| probe_error(&e))?;
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
