//! MongoDB, standalone or replica set, through the official `mongodb` driver.
//!
//! The driver owns its sockets and reconnects by itself, so the canary's
//! "connection" is a whole driver [`Client`]: every (re)connect builds a
//! fresh one (and shuts the previous one down), its pool is capped at one
//! connection, and the outage an application lives through is measured as
//! first failed probe → first successful probe. Between probes the driver's
//! own events say what it knows: a cleared pool (or a connection closed by an
//! error) on the server the canary talks to is a lost connection, and a
//! different primary — or the same one with a higher `electionId` — in the
//! topology is a failover announcement, recorded even when no probe failed.
//!
//! URL: `mongodb://[user:password@]h1[:port][,h2...]/[db][?options]` or
//! `mongodb+srv://[user:password@]cluster.example.com/[db][?options]`: every
//! driver option applies (`replicaSet`, `directConnection`, `tls`,
//! `authSource`, `heartbeatFrequencyMS`, `serverMonitoringMode`...), except
//! that `appName` is always `dbcanary:<target>`, and `connectTimeoutMS` and
//! `serverSelectionTimeoutMS` are always the target's `timeout` (never the
//! driver's 30 s). `heartbeatFrequencyMS` defaults to 1 s here (the driver
//! says 10 s); the driver refuses less than 500 ms.

mod error;
mod hello;
mod watch;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mongodb::Client;
use mongodb::bson::{Document, doc};
use mongodb::error::{Error as DriverError, ErrorKind};
use mongodb::event::EventHandler;
use mongodb::options::{ClientOptions, ConnectionString, ServerAddress};
use mongodb::{options::ReadPreference, options::SelectionCriteria};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::dburl::DbUrl;
use crate::model::{ConnectResult, FailoverSource, Identity};
use crate::stores::{
    Announcement, CloseSignal, ConnectError, Connected, Notices, ProbeError, Spec, Store, resolve,
};
use error::{driver_cause, driver_result};
pub use hello::parse_hello;
use watch::{ClientWatch, PrimarySeen};

/// Heartbeat frequency unless the URL gives `heartbeatFrequencyMS`.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// The driver's minimum heartbeat frequency.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(500);

/// Checks a `mongodb://` URL the way the driver will read it, when the
/// configuration is loaded. The reason never contains the URL or password.
fn check_url(url: &DbUrl) -> Result<(), String> {
    if url.scheme == "mongodb+srv" && url.hosts.len() != 1 {
        return Err("a mongodb+srv URL names exactly one DNS name (no list of hosts)".into());
    }
    let mut probe = url.clone();
    if probe.has_password() {
        // Parse without the real secret, so no driver message can carry it.
        probe.set_password(Some("password".into()));
    }
    let cs = ConnectionString::parse(driver_uri(&probe))
        .map_err(|e| format!("not a usable MongoDB URL: {}", e.kind))?;
    if let Some(hb) = cs.heartbeat_frequency
        && hb < MIN_HEARTBEAT
    {
        return Err(format!(
            "heartbeatFrequencyMS must be at least {} (the driver's minimum), got {}",
            MIN_HEARTBEAT.as_millis(),
            hb.as_millis()
        ));
    }
    Ok(())
}

/// The connection string handed to the driver, password included.
/// `mongodb+srv` names a DNS name without a port, which [`DbUrl`] always
/// fills in: render it without one.
pub fn driver_uri(url: &DbUrl) -> String {
    if url.scheme != "mongodb+srv" {
        return url.expose();
    }
    let rendered = url.expose_with_hosts(&[]);
    let after_scheme = rendered.find("://").map_or(0, |i| i + 3);
    let authority_end = rendered[after_scheme..]
        .find('/')
        .map_or(rendered.len(), |i| after_scheme + i);
    let at = rendered[after_scheme..authority_end]
        .rfind('@')
        .map_or(after_scheme, |i| after_scheme + i + 1);
    let mut out = rendered;
    out.insert_str(at, &url.first_host().host);
    out
}

// ---------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------

/// A canary client.
pub struct MongoConn {
    client: Client,
    watch: Arc<ClientWatch>,
    /// From `buildInfo` at connect (a version changes only with a restart,
    /// which is a new client).
    version: Option<String>,
}

/// A MongoDB target.
pub struct MongoStore {
    target: String,
    url: DbUrl,
    /// Every client's primaries go here; [`Store::announce`] reads them.
    primaries_tx: mpsc::UnboundedSender<PrimarySeen>,
    primaries_rx: Mutex<Option<mpsc::UnboundedReceiver<PrimarySeen>>>,
    /// The last client handed out, shut down at the next connect so that
    /// exactly one canary client exists.
    current: Mutex<Option<Client>>,
    /// The server the last connected client's canary used.
    last_primary: Mutex<Option<ServerAddress>>,
    /// What the operator should know (see [`MongoStore::lint`]).
    notices: Notices,
    lint_said: std::sync::atomic::AtomicBool,
    /// How long a pooled connection may idle: the driver keeps one pool per
    /// member, and after a step-down the canary's connection to the old
    /// primary would otherwise linger beside the new one.
    max_idle: Duration,
}

impl MongoStore {
    /// A URL that names one member and no `replicaSet` while the server is
    /// in a replica set: the canary (and an app using that URL) stays with
    /// that member and does not follow a failover. Said once.
    fn lint(&self, identity: &Identity) {
        let Some(set) = identity.details.get("set_name") else {
            return;
        };
        let single = self.url.hosts.len() == 1 && self.url.scheme == "mongodb";
        if single
            && self.url.query_param("replicaSet").is_none()
            && !self
                .lint_said
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            self.notices.say(format!(
                "the URL names one host and no replicaSet, but the server is a member of replica set {set:?}: an application using this URL does not follow a failover; list the members and add ?replicaSet={set}"
            ));
        }
    }

    /// Removes anything of the password from a driver message.
    fn scrub(&self, message: String) -> String {
        match self.url.password() {
            Some(p) if !p.is_empty() => {
                let encoded =
                    percent_encoding::utf8_percent_encode(p, percent_encoding::NON_ALPHANUMERIC)
                        .to_string();
                message.replace(p, "***").replace(&encoded, "***")
            }
            _ => message,
        }
    }

    fn error(&self, e: &DriverError) -> ConnectError {
        let (result, message) = driver_result(e);
        ConnectError::new(result, self.scrub(message))
    }

    fn probe_error(&self, e: &DriverError) -> ProbeError {
        ProbeError::new(driver_cause(e), self.scrub(e.kind.to_string()))
    }

    /// Resolves the URL's hosts before the driver does, so that names that
    /// do not resolve are `dns` by type. One resolving host is enough.
    async fn resolve_hosts(&self) -> Result<(), ConnectError> {
        if self.url.scheme == "mongodb+srv" {
            // The driver's SRV lookup reports `DnsResolve` itself.
            return Ok(());
        }
        let mut last = None;
        for h in &self.url.hosts {
            match resolve(&h.host, h.port).await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ConnectError::new(ConnectResult::Dns, "no host in the URL")))
    }

    async fn client_options(
        &self,
        timeout: Duration,
        watch: &Arc<ClientWatch>,
    ) -> Result<ClientOptions, ConnectError> {
        let mut o = ClientOptions::parse(driver_uri(&self.url))
            .await
            .map_err(|e| self.error(&e))?;
        o.app_name = Some(format!("dbcanary:{}", self.target));
        o.connect_timeout = Some(timeout);
        o.server_selection_timeout = Some(timeout);
        o.heartbeat_freq.get_or_insert(DEFAULT_HEARTBEAT);
        // One connection for the canary's commands; the driver's monitors
        // hold their own (one per member, two when streaming).
        o.max_pool_size = Some(1);
        o.min_pool_size = Some(0);
        o.max_idle_time = Some(self.max_idle);
        let w = watch.clone();
        o.sdam_event_handler = Some(EventHandler::callback(move |e| w.on_sdam(e)));
        let w = watch.clone();
        o.cmap_event_handler = Some(EventHandler::callback(move |e| w.on_cmap(e)));
        let w = watch.clone();
        o.command_event_handler = Some(EventHandler::callback(move |e| w.on_command(e)));
        Ok(o)
    }

    /// A fresh client and the identity of the primary, within `timeout`.
    async fn open(&self, timeout: Duration) -> Result<Connected<MongoConn>, ConnectError> {
        let start = Instant::now();
        self.resolve_hosts().await?;
        let last = self.last_primary.lock().expect("primary lock").clone();
        let watch = ClientWatch::new(self.primaries_tx.clone(), last);
        let options = self.client_options(timeout, &watch).await?;
        let client = Client::with_options(options).map_err(|e| self.error(&e))?;
        // Remember it at once: should this attempt time out, the next
        // connect still shuts it down.
        *self.current.lock().expect("client lock") = Some(client.clone());
        // Answer before the canary's own bound so that a stall is classified
        // (no primary → not_ready) rather than reported as a bare timeout.
        let margin = (timeout / 10).clamp(Duration::from_millis(10), Duration::from_millis(100));
        let stall_at = start + timeout.saturating_sub(margin);
        let reply = {
            let hello = hello(&client);
            tokio::pin!(hello);
            let mut revision = watch.revision.subscribe();
            loop {
                if let Some(e) = watch.all_failed() {
                    return Err(ConnectError::new(e.result, self.scrub(e.message)));
                }
                tokio::select! {
                    r = &mut hello => match r {
                        Ok(reply) => break reply,
                        Err(e) if matches!(*e.kind, ErrorKind::ServerSelection { .. }) => {
                            let e = watch.stalled(start.elapsed());
                            return Err(ConnectError::new(e.result, self.scrub(e.message)));
                        }
                        Err(e) => return Err(self.error(&e)),
                    },
                    _ = tokio::time::sleep_until(stall_at) => {
                        let e = watch.stalled(start.elapsed());
                        return Err(ConnectError::new(e.result, self.scrub(e.message)));
                    }
                    // `watch` holds the sender: this never fails.
                    _ = revision.changed() => {}
                }
            }
        };
        let version = build_version(&client).await;
        *self.last_primary.lock().expect("primary lock") = watch.canary_address();
        let mut identity = parse_hello(&reply, watch.canary_server());
        identity.version.clone_from(&version);
        self.lint(&identity);
        let mut lost = watch.lost.subscribe();
        let closed = CloseSignal::new(async move {
            loop {
                if let Some(cause) = *lost.borrow_and_update() {
                    return cause;
                }
                if lost.changed().await.is_err() {
                    // The client is gone: the canary dropped it on purpose.
                    std::future::pending::<()>().await;
                }
            }
        });
        let serving_since = watch.serving_since();
        Ok(Connected {
            conn: MongoConn {
                client,
                watch,
                version,
            },
            identity,
            closed,
            serving_since,
        })
    }
}

/// Shuts a client down: monitors stop, connections close. Sessions are not
/// waited for (the canary holds no cursor or session).
async fn shut_down(client: Client) {
    client.shutdown().immediate(true).await;
}

fn primary() -> SelectionCriteria {
    SelectionCriteria::ReadPreference(ReadPreference::Primary)
}

async fn hello(client: &Client) -> Result<Document, DriverError> {
    client
        .database("admin")
        .run_command(doc! { "hello": 1 })
        .selection_criteria(primary())
        .await
}

/// The server version from `buildInfo` (needs no privilege); `None` if the
/// server does not say.
async fn build_version(client: &Client) -> Option<String> {
    let reply = client
        .database("admin")
        .run_command(doc! { "buildInfo": 1 })
        .selection_criteria(primary())
        .await
        .ok()?;
    reply.get_str("version").ok().map(str::to_string)
}

impl Store for MongoStore {
    /// Nothing beyond what the driver reads from the URL itself, which is
    /// checked here the way the driver will read it.
    type Options = ();
    type Conn = MongoConn;

    fn options(url: &DbUrl) -> Result<(), String> {
        check_url(url)
    }

    fn notices(&self) -> Vec<String> {
        self.notices.take()
    }

    fn new(spec: Spec<'_>, _: &()) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            target: spec.name.to_string(),
            url: spec.url.clone(),
            primaries_tx: tx,
            primaries_rx: Mutex::new(Some(rx)),
            current: Mutex::new(None),
            last_primary: Mutex::new(None),
            max_idle: (spec.settings.interval * 3).max(Duration::from_secs(1)),
            notices: Notices::default(),
            lint_said: std::sync::atomic::AtomicBool::new(false),
        }
    }

    async fn connect(&self, timeout: Duration) -> Result<Connected<Self::Conn>, ConnectError> {
        // Shut the previous client down while the new one connects; whatever
        // is left when the new one is up winds down in the background (its
        // monitors have been told to stop).
        let previous = self.current.lock().expect("client lock").take();
        let open = self.open(timeout);
        tokio::pin!(open);
        match previous {
            None => open.await,
            Some(old) => {
                let shutdown = shut_down(old);
                tokio::pin!(shutdown);
                let mut shut = false;
                loop {
                    tokio::select! {
                        r = &mut open => return r,
                        _ = &mut shutdown, if !shut => shut = true,
                    }
                }
            }
        }
    }

    async fn probe(&self, conn: &mut Self::Conn) -> Result<(), ProbeError> {
        conn.client
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .selection_criteria(primary())
            .await
            .map(|_| ())
            .map_err(|e| self.probe_error(&e))
    }

    async fn identify(&self, conn: &mut Self::Conn) -> Result<Identity, ProbeError> {
        let reply = hello(&conn.client)
            .await
            .map_err(|e| self.probe_error(&e))?;
        let mut id = parse_hello(&reply, conn.watch.canary_server());
        id.version.clone_from(&conn.version);
        Ok(id)
    }

    async fn close(&self, conn: Self::Conn) {
        self.current.lock().expect("client lock").take();
        shut_down(conn.client).await;
    }

    /// Every primary change reaches [`Self::announce`] through the client's
    /// topology monitoring; an identity refresh routed by a stale topology
    /// to the old primary may see its flip first.
    fn announces_role_changes(&self) -> bool {
        true
    }

    async fn announce(&self, tx: mpsc::Sender<Announcement>) {
        let rx = self.primaries_rx.lock().expect("primaries lock").take();
        let Some(mut rx) = rx else {
            tx.closed().await;
            return;
        };
        let mut known: Option<PrimarySeen> = None;
        loop {
            let seen = tokio::select! {
                _ = tx.closed() => return,
                s = rx.recv() => match s {
                    Some(s) => s,
                    None => return,
                },
            };
            let Some(k) = &known else {
                known = Some(seen);
                continue;
            };
            let moved = k.address != seen.address;
            let re_elected =
                !moved && matches!((k.election_id, seen.election_id), (Some(a), Some(b)) if b > a);
            if !moved && !re_elected {
                // The same primary, or a stale report of it.
                if seen.election_id > k.election_id {
                    known = Some(seen);
                }
                continue;
            }
            let mut to = seen.describe(re_elected);
            if moved && let Some(e) = seen.election_id {
                let _ = write!(to, " (electionId {})", e.to_hex());
            }
            let announcement = Announcement::Failover {
                source: FailoverSource::Topology,
                from: k.describe(re_elected),
                to,
            };
            known = Some(seen);
            if tx.send(announcement).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;
    use mongodb::bson::oid::ObjectId;

    #[test]
    fn hello_of_a_primary() {
        let e = ObjectId::parse_str("7fffffff0000000000000003").unwrap();
        let p = ObjectId::parse_str("65f000000000000000000001").unwrap();
        let reply = doc! {
            "isWritablePrimary": true, "secondary": false, "setName": "rs0",
            "setVersion": 2, "me": "db1:27017", "primary": "db1:27017",
            "electionId": e, "topologyVersion": { "processId": p, "counter": 0_i64 },
        };
        let id = parse_hello(&reply, Some("db1:27017".into()));
        assert_eq!(id.role, Some(Role::Primary));
        assert_eq!(id.server_id.as_deref(), Some("db1:27017"));
        assert_eq!(id.epoch.as_deref(), Some("7fffffff0000000000000003"));
        assert_eq!(id.process_id.as_deref(), Some("65f000000000000000000001"));
        assert_eq!(id.details["set_name"], "rs0");
        assert_eq!(id.details["set_version"], "2");
    }

    #[test]
    fn hello_of_a_standalone_and_a_secondary() {
        let id = parse_hello(
            &doc! { "ismaster": true, "maxWireVersion": 21 },
            Some("127.0.0.1:27017".into()),
        );
        assert_eq!(id.role, Some(Role::Primary));
        assert_eq!(id.server_id.as_deref(), Some("127.0.0.1:27017"));
        assert!(id.epoch.is_none() && id.process_id.is_none());
        let id = parse_hello(
            &doc! { "isWritablePrimary": false, "secondary": true, "me": "db2:27017" },
            None,
        );
        assert_eq!(id.role, Some(Role::Replica));
        assert_eq!(id.address.as_deref(), Some("db2:27017"));
    }

    #[test]
    fn srv_urls_lose_the_default_port() {
        let u = DbUrl::parse("mongodb+srv://u:p%40ss@cluster0.example.com/app?retryWrites=true")
            .unwrap();
        assert_eq!(
            driver_uri(&u),
            "mongodb+srv://u:p%40ss@cluster0.example.com/app?retryWrites=true"
        );
        let u = DbUrl::parse("mongodb+srv://cluster0.example.com").unwrap();
        assert_eq!(driver_uri(&u), "mongodb+srv://cluster0.example.com");
        let u = DbUrl::parse("mongodb://a,b:27018/?replicaSet=rs0").unwrap();
        assert_eq!(driver_uri(&u), "mongodb://a:27017,b:27018/?replicaSet=rs0");
    }

    #[test]
    fn urls_are_checked_without_echoing_the_password() {
        let ok = DbUrl::parse("mongodb://u:hunter2@a,b/?replicaSet=rs0&heartbeatFrequencyMS=500")
            .unwrap();
        assert!(check_url(&ok).is_ok());
        let fast = DbUrl::parse("mongodb://u:hunter2@a/?heartbeatFrequencyMS=100").unwrap();
        let e = check_url(&fast).unwrap_err();
        assert!(e.contains("heartbeatFrequencyMS"), "{e}");
        let bad = DbUrl::parse("mongodb://u:hunter2@a/?nosuchoption=1&w=banana").unwrap();
        if let Err(e) = check_url(&bad) {
            assert!(!e.contains("hunter2"), "{e}");
        }
        let srv = DbUrl::parse("mongodb+srv://a,b/").unwrap();
        assert!(check_url(&srv).is_err());
    }
}
