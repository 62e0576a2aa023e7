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

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mongodb::bson::{Bson, Document, doc, oid::ObjectId};
use mongodb::error::{Error as DriverError, ErrorKind};
use mongodb::event::EventHandler;
use mongodb::event::cmap::{CmapEvent, ConnectionClosedReason};
use mongodb::event::command::CommandEvent;
use mongodb::event::sdam::SdamEvent;
use mongodb::options::{ClientOptions, ConnectionString, ServerAddress};
use mongodb::{Client, ServerType};
use mongodb::{options::ReadPreference, options::SelectionCriteria};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::dburl::DbUrl;
use crate::model::{ConnectResult, DisconnectCause, FailoverSource, Identity, Role};
use crate::stores::{
    Announcement, CloseSignal, ConnectError, Connected, ProbeError, Spec, Store, classify_io,
    disconnect_cause, resolve,
};

/// Heartbeat frequency unless the URL gives `heartbeatFrequencyMS`.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// The driver's minimum heartbeat frequency.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(500);

/// Server error codes that mean "answering, but not serving as primary yet"
/// (ShutdownInProgress, PrimarySteppedDown, NotWritablePrimary,
/// InterruptedAtShutdown, InterruptedDueToReplStateChange,
/// NotPrimaryNoSecondaryOk, NotPrimaryOrSecondary).
const NOT_READY_CODES: [i32; 7] = [91, 189, 10107, 11600, 11602, 13435, 13436];
/// Unauthorized, AuthenticationFailed.
const AUTH_CODES: [i32; 2] = [13, 18];

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
// What the driver tells one client, through its event handlers
// ---------------------------------------------------------------------------

/// The outcome of the last heartbeat of one server.
#[derive(Debug, Clone)]
enum Heartbeat {
    Ok {
        election_id: Option<ObjectId>,
    },
    Failed {
        result: ConnectResult,
        message: String,
    },
}

/// A primary as one client's topology sees it.
#[derive(Debug, Clone, PartialEq)]
struct PrimarySeen {
    address: String,
    election_id: Option<ObjectId>,
}

impl PrimarySeen {
    fn describe(&self, with_election: bool) -> String {
        match (&self.election_id, with_election) {
            (Some(e), true) => format!("{} (electionId {})", self.address, e.to_hex()),
            _ => self.address.clone(),
        }
    }
}

#[derive(Default)]
struct WatchState {
    /// Where the canary's last command went: the server whose loss is the
    /// canary's loss.
    canary_server: Option<ServerAddress>,
    /// Every server of the latest topology description, with its type.
    servers: Vec<(ServerAddress, ServerType)>,
    /// The last heartbeat outcome per server.
    heartbeats: HashMap<ServerAddress, Heartbeat>,
    /// The primary of the latest topology description.
    primary: Option<ServerAddress>,
    /// The last primary reported to the store.
    reported: Option<PrimarySeen>,
    /// The server the previous client's canary used: while no command has
    /// gone anywhere yet, the one whose silence makes a timeout.
    last_primary: Option<ServerAddress>,
}

/// Shared between one client's event handlers and the canary.
struct ClientWatch {
    state: Mutex<WatchState>,
    /// Bumped on every topology event, so a connect can wait for news.
    revision: watch::Sender<u64>,
    /// Set once when the canary's server is lost.
    lost: watch::Sender<Option<DisconnectCause>>,
    /// Primaries seen, to the store's announcer.
    primaries: mpsc::UnboundedSender<PrimarySeen>,
}

impl ClientWatch {
    fn new(
        primaries: mpsc::UnboundedSender<PrimarySeen>,
        last_primary: Option<ServerAddress>,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(WatchState {
                last_primary,
                ..WatchState::default()
            }),
            revision: watch::Sender::new(0),
            lost: watch::Sender::new(None),
            primaries,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WatchState> {
        // A panic in a handler leaves plain data behind: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_sdam(&self, event: SdamEvent) {
        {
            let mut st = self.lock();
            match event {
                SdamEvent::ServerHeartbeatSucceeded(e) => {
                    let election_id = e.reply.get_object_id("electionId").ok();
                    st.heartbeats
                        .insert(e.server_address, Heartbeat::Ok { election_id });
                }
                SdamEvent::ServerHeartbeatFailed(e) => {
                    let (result, message) = driver_result(&e.failure);
                    st.heartbeats
                        .insert(e.server_address, Heartbeat::Failed { result, message });
                }
                SdamEvent::TopologyDescriptionChanged(e) => {
                    let servers = e.new_description.servers();
                    st.primary = servers
                        .iter()
                        .find(|(_, s)| s.server_type() == ServerType::RsPrimary)
                        .map(|(a, _)| (*a).clone());
                    st.servers = servers
                        .iter()
                        .map(|(a, s)| ((*a).clone(), s.server_type()))
                        .collect();
                }
                _ => return,
            }
            self.report_primary(&mut st);
        }
        self.revision.send_modify(|r| *r = r.wrapping_add(1));
    }

    /// Reports the primary to the store when it (or its electionId) moved.
    fn report_primary(&self, st: &mut WatchState) {
        let Some(primary) = st.primary.clone() else {
            return;
        };
        let election_id = match st.heartbeats.get(&primary) {
            Some(Heartbeat::Ok { election_id }) => *election_id,
            _ => None,
        };
        let seen = PrimarySeen {
            address: primary.to_string(),
            election_id,
        };
        if st.reported.as_ref() != Some(&seen) {
            st.reported = Some(seen.clone());
            let _ = self.primaries.send(seen);
        }
    }

    fn on_cmap(&self, event: CmapEvent) {
        let address = match &event {
            CmapEvent::PoolCleared(e) => &e.address,
            CmapEvent::ConnectionClosed(e) if e.reason == ConnectionClosedReason::Error => {
                &e.address
            }
            _ => return,
        };
        let cause = {
            let st = self.lock();
            if st.canary_server.as_ref() != Some(address) {
                return;
            }
            match st.heartbeats.get(address) {
                Some(Heartbeat::Failed {
                    result: ConnectResult::Timeout,
                    ..
                }) => DisconnectCause::Timeout,
                _ => DisconnectCause::Closed,
            }
        };
        self.lost.send_if_modified(|lost| {
            if lost.is_none() {
                *lost = Some(cause);
                true
            } else {
                false
            }
        });
    }

    fn on_command(&self, event: CommandEvent) {
        if let CommandEvent::Started(e) = event {
            self.lock().canary_server = Some(e.connection.address);
        }
    }

    /// The server the canary's last command went to.
    fn canary_server(&self) -> Option<String> {
        self.lock().canary_server.as_ref().map(ToString::to_string)
    }

    fn canary_address(&self) -> Option<ServerAddress> {
        self.lock().canary_server.clone()
    }

    /// When every server of the topology failed its heartbeat (nothing
    /// answers at all): the failure, as a plain TCP connect would report it.
    fn all_failed(&self) -> Option<ConnectError> {
        let st = self.lock();
        if st.servers.is_empty() {
            return None;
        }
        let mut worst: Option<(ConnectResult, String)> = None;
        for (addr, ty) in &st.servers {
            if *ty != ServerType::Unknown {
                return None;
            }
            match st.heartbeats.get(addr) {
                Some(Heartbeat::Failed { result, message }) => {
                    if worst.as_ref().is_none_or(|(w, _)| rank(*result) > rank(*w)) {
                        worst = Some((*result, format!("{addr}: {message}")));
                    }
                }
                _ => return None,
            }
        }
        worst.map(|(r, m)| ConnectError::new(r, m))
    }

    /// Why no primary could be selected in time, from what the topology
    /// knows: members that answer but none primary is `not_ready`.
    fn stalled(&self, waited: Duration) -> ConnectError {
        let st = self.lock();
        // The primary the canary last used hangs (a stopped process, a
        // black-holed network): that is a timeout, whatever the others say.
        if let Some(addr) = st.canary_server.as_ref().or(st.last_primary.as_ref())
            && let Some(Heartbeat::Failed {
                result: ConnectResult::Timeout,
                message,
            }) = st.heartbeats.get(addr)
        {
            return ConnectError::new(
                ConnectResult::Timeout,
                format!("the primary {addr} does not answer: {message}"),
            );
        }
        let answering: Vec<String> = st
            .servers
            .iter()
            .filter(|(_, t)| *t != ServerType::Unknown)
            .map(|(a, t)| format!("{a} is {t:?}"))
            .collect();
        if !answering.is_empty() {
            return ConnectError::new(
                ConnectResult::NotReady,
                format!("no primary: {}", answering.join(", ")),
            );
        }
        let failed = st.heartbeats.iter().find_map(|(a, h)| match h {
            Heartbeat::Failed { result, message } => Some((*result, format!("{a}: {message}"))),
            Heartbeat::Ok { .. } => None,
        });
        match failed {
            Some((result, message)) => ConnectError::new(result, message),
            None => ConnectError::new(
                ConnectResult::Timeout,
                format!(
                    "no server answered within {}",
                    humantime::format_duration(Duration::from_millis(waited.as_millis() as u64))
                ),
            ),
        }
    }
}

/// Which failure to report when members fail differently: the one an
/// operator must act on first.
fn rank(r: ConnectResult) -> u8 {
    match r {
        ConnectResult::Auth => 7,
        ConnectResult::Tls => 6,
        ConnectResult::Dns => 5,
        ConnectResult::Protocol => 4,
        ConnectResult::Refused => 3,
        ConnectResult::Timeout => 2,
        ConnectResult::Io => 1,
        ConnectResult::NotReady | ConnectResult::Ok => 0,
    }
}

/// The attempt result for a driver error, decided by its kind and code.
fn driver_result(e: &DriverError) -> (ConnectResult, String) {
    let result = match &*e.kind {
        ErrorKind::Authentication { .. } => ConnectResult::Auth,
        ErrorKind::DnsResolve { .. } => ConnectResult::Dns,
        ErrorKind::InvalidTlsConfig { .. } => ConnectResult::Tls,
        ErrorKind::Io(io) => classify_io(io),
        ErrorKind::ServerSelection { .. } => ConnectResult::NotReady,
        ErrorKind::ConnectionPoolCleared { .. } => ConnectResult::Io,
        ErrorKind::Command(c) if AUTH_CODES.contains(&c.code) => ConnectResult::Auth,
        ErrorKind::Command(c) if NOT_READY_CODES.contains(&c.code) => ConnectResult::NotReady,
        _ => ConnectResult::Protocol,
    };
    (result, e.kind.to_string())
}

/// The disconnect cause for a driver error on a live client.
fn driver_cause(e: &DriverError) -> DisconnectCause {
    match &*e.kind {
        ErrorKind::Io(io) => disconnect_cause(io),
        ErrorKind::ServerSelection { .. } => DisconnectCause::Timeout,
        ErrorKind::ConnectionPoolCleared { .. } => DisconnectCause::Closed,
        _ => DisconnectCause::Error,
    }
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
    /// How long a pooled connection may idle: the driver keeps one pool per
    /// member, and after a step-down the canary's connection to the old
    /// primary would otherwise linger beside the new one.
    max_idle: Duration,
}

impl MongoStore {
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
        Ok(Connected {
            conn: MongoConn {
                client,
                watch,
                version,
            },
            identity,
            closed,
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

/// The identity in a `hello` reply. `address` is where the driver sent it.
pub fn parse_hello(reply: &Document, address: Option<String>) -> Identity {
    let me = reply.get_str("me").ok().map(str::to_string);
    let writable = reply
        .get_bool("isWritablePrimary")
        .or_else(|_| reply.get_bool("ismaster"))
        .unwrap_or(false);
    let secondary = reply.get_bool("secondary").unwrap_or(false);
    let role = if writable {
        Some(Role::Primary)
    } else if secondary {
        Some(Role::Replica)
    } else {
        None
    };
    let process_id = reply
        .get_document("topologyVersion")
        .ok()
        .and_then(|tv| tv.get_object_id("processId").ok())
        .map(|p| p.to_hex());
    let mut details = std::collections::BTreeMap::new();
    if let Ok(s) = reply.get_str("setName") {
        details.insert("set_name".to_string(), s.to_string());
    }
    if let Some(v) = reply.get("setVersion").and_then(bson_int) {
        details.insert("set_version".to_string(), v.to_string());
    }
    if let Ok(p) = reply.get_str("primary") {
        details.insert("primary".to_string(), p.to_string());
    }
    if let Some(m) = &me {
        details.insert("me".to_string(), m.clone());
    }
    if reply.get_str("msg").ok() == Some("isdbgrid") {
        details.insert("mongos".to_string(), "true".to_string());
    }
    let address = address.or_else(|| me.clone());
    Identity {
        server_id: me.or_else(|| address.clone()),
        role,
        uptime: None,
        process_id,
        epoch: reply.get_object_id("electionId").ok().map(|e| e.to_hex()),
        address,
        version: None,
        details,
        ..Identity::default()
    }
}

fn bson_int(b: &Bson) -> Option<i64> {
    match b {
        Bson::Int32(v) => Some((*v).into()),
        Bson::Int64(v) => Some(*v),
        Bson::Double(v) if v.fract() == 0.0 => Some(*v as i64),
        _ => None,
    }
}

impl Store for MongoStore {
    /// Nothing beyond what the driver reads from the URL itself, which is
    /// checked here the way the driver will read it.
    type Options = ();
    type Conn = MongoConn;

    fn options(url: &DbUrl) -> Result<(), String> {
        check_url(url)
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
