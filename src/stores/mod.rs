//! The stores dbcanary watches, behind one [`Store`] trait. Store code knows
//! its protocol and nothing else: no metrics, no spans, no HTTP. The generic
//! canary drives every store the same way and owns all timing.
//!
//! A store is one file here, one row in [`crate::model::KINDS`] and one line
//! in the `stores!` list below, which writes the one dispatch: the
//! [`Options`] a target's URL is parsed into once (when the configuration is
//! read, so a target that validates always runs) and [`with_store`], which
//! hands the agent, `check` and `watch` the store of a target.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

use crate::dburl::DbUrl;
use crate::model::{
    AttemptResult, ConnectResult, DisconnectCause, FailoverSource, Identity, StoreKind,
};
use crate::settings::CanarySettings;

pub mod bounded;
pub mod http;
pub mod mongodb;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod sentinel;

/// A failed connection attempt, with its bounded kind.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ConnectError {
    pub result: AttemptResult,
    /// Human-readable, free of credentials.
    pub message: String,
}

impl ConnectError {
    pub fn new(result: impl Into<AttemptResult>, message: impl Into<String>) -> Self {
        Self {
            result: result.into(),
            message: message.into(),
        }
    }
}

/// A failed probe.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProbeError {
    pub cause: DisconnectCause,
    pub message: String,
}

impl ProbeError {
    pub fn new(cause: DisconnectCause, message: impl Into<String>) -> Self {
        Self {
            cause,
            message: message.into(),
        }
    }
}

/// Resolves when the transport reports the connection gone, so that loss is
/// seen the moment it happens rather than at the next probe. A store whose
/// driver hides this hands out [`CloseSignal::never`] and relies on probes.
pub struct CloseSignal(Option<Pin<Box<dyn Future<Output = DisconnectCause> + Send>>>);

impl CloseSignal {
    /// A signal fed by the store's transport: `wait` resolves when the
    /// connection is gone.
    pub fn new(wait: impl Future<Output = DisconnectCause> + Send + 'static) -> Self {
        Self(Some(Box::pin(wait)))
    }

    /// No transport signal: detection is bounded by the probe interval.
    pub fn never() -> Self {
        Self(None)
    }

    /// Waits for the transport to report the connection gone.
    pub async fn closed(&mut self) -> DisconnectCause {
        match &mut self.0 {
            Some(wait) => wait.await,
            None => std::future::pending().await,
        }
    }
}

/// A new canary connection.
pub struct Connected<C> {
    pub conn: C,
    pub identity: Identity,
    pub closed: CloseSignal,
    /// When the store was first seen serving during this attempt, where a
    /// driver saw it before the attempt's own round trips were done (the
    /// MongoDB driver's monitor finding a primary, before its pooled
    /// connection's handshake and the canary's commands); `None`: when the
    /// attempt's first probe answered.
    pub serving_since: Option<Instant>,
}

/// News the store pushes about its topology, outside any connection.
#[derive(Debug, Clone)]
pub enum Announcement {
    /// The store announced a failover (Sentinel `+switch-master`, a new
    /// MongoDB primary), learned from `source`.
    Failover {
        source: FailoverSource,
        from: String,
        to: String,
    },
    /// Something to tell the operator (e.g. every sentinel unreachable).
    Notice(String),
}

/// What a store is built from: the target's name (for the name the
/// connection announces), its URL (credentials included) and its pacing.
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    pub name: &'a str,
    pub url: &'a DbUrl,
    pub settings: &'a CanarySettings,
}

/// One store implementation. The canary wraps every call in its own timeout,
/// so an implementation may simply await its driver.
pub trait Store: Send + Sync + Sized + 'static {
    /// What the store reads from a target's URL, parsed and checked once
    /// when the configuration is loaded.
    type Options: fmt::Debug + Clone + PartialEq + Send + Sync + 'static;
    type Conn: Send + 'static;

    /// Attempt results this store has beyond [`ConnectResult`] (label
    /// values), so that their series start at zero.
    const OWN_RESULTS: &'static [&'static str] = &[];

    /// Parses and checks the store-specific parts of a URL (query options,
    /// host count, certificate files). The reason never contains the URL.
    fn options(url: &DbUrl) -> Result<Self::Options, String>;

    /// The store of one target, from options [`Store::options`] accepted.
    fn new(spec: Spec<'_>, options: &Self::Options) -> Self;

    /// Opens a canary connection: TCP, TLS, auth, handshake, identity read.
    fn connect(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Connected<Self::Conn>, ConnectError>> + Send;

    /// One cheap round trip.
    fn probe(&self, conn: &mut Self::Conn) -> impl Future<Output = Result<(), ProbeError>> + Send;

    /// Re-reads the identity on a live connection (role changes without an
    /// outage).
    fn identify(
        &self,
        conn: &mut Self::Conn,
    ) -> impl Future<Output = Result<Identity, ProbeError>> + Send;

    /// Closes the connection politely.
    fn close(&self, conn: Self::Conn) -> impl Future<Output = ()> + Send;

    /// What the store has to tell the operator since it was last asked (see
    /// [`Notices`]); the canary turns each into an event.
    fn notices(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether [`Store::announce`] reports every primary change itself. A
    /// role flip seen on an identity refresh is then not counted as a
    /// failover again: the refresh may see it just before the announcement.
    fn announces_role_changes(&self) -> bool {
        false
    }

    /// Runs until `tx` is closed, pushing the store's topology news. Stores
    /// without announcements never send anything.
    fn announce(&self, tx: mpsc::Sender<Announcement>) -> impl Future<Output = ()> + Send {
        async move { tx.closed().await }
    }
}

/// Things a store wants the operator to know (a missing privilege, a server
/// without push support), kept until the canary collects them: store code
/// never logs itself, so `watch` and the API see the same words as the log.
#[derive(Debug, Default)]
pub struct Notices(Mutex<Vec<String>>);

impl Notices {
    /// Keeps a notice for the canary.
    pub fn say(&self, message: impl Into<String>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message.into());
    }

    /// The notices since the last call.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Something to do with a target's store, whatever its kind: the agent runs
/// its canary, `check` connects once.
pub trait UseStore: Send {
    type Output: Send;
    fn run<S: Store>(self, store: S) -> impl Future<Output = Self::Output> + Send;
}

/// Writes the one dispatch from the list of stores: a store kind, the
/// module's store type.
macro_rules! stores {
    ($($kind:ident => $store:ty),* $(,)?) => {
        /// A target's store options, parsed once from its URL.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Options {
            $($kind(<$store as Store>::Options)),*
        }

        impl Options {
            /// Parses the store-specific parts of a URL of `kind`.
            pub fn parse(kind: StoreKind, url: &DbUrl) -> Result<Self, String> {
                match kind {
                    $(StoreKind::$kind => <$store as Store>::options(url).map(Self::$kind)),*
                }
            }

            /// The store kind these options are for.
            pub fn kind(&self) -> StoreKind {
                match self {
                    $(Self::$kind(_) => StoreKind::$kind),*
                }
            }

            /// The attempt results the store has beyond [`ConnectResult`].
            pub fn own_results(&self) -> &'static [&'static str] {
                match self {
                    $(Self::$kind(_) => <$store as Store>::OWN_RESULTS),*
                }
            }
        }

        /// Builds the store of a target and hands it to `user`. Each
        /// store's future is boxed: inline, this one would be as large as
        /// the largest store's, for every target of every store (a canary
        /// task lives as long as its target).
        pub async fn with_store<U: UseStore>(spec: Spec<'_>, options: &Options, user: U) -> U::Output {
            match options {
                $(Options::$kind(o) => Box::pin(user.run(<$store as Store>::new(spec, o))).await),*
            }
        }
    };
}

stores! {
    Redis => redis::RedisStore,
    RedisSentinel => sentinel::SentinelStore,
    Mysql => mysql::MysqlStore,
    Mongodb => mongodb::MongoStore,
    Postgresql => postgres::PostgresStore,
    Http => http::HttpStore,
}

/// One connection attempt: connect (with identity) and a first probe, each
/// bounded by `t`.
pub async fn attempt<S: Store>(store: &S, t: Duration) -> Result<Connected<S::Conn>, ConnectError> {
    // Boxed: a connect future (TLS handshakes, resolution, a driver's
    // set-up) is far larger than the rest of a canary's state, and lives
    // only while connecting; inline, every idle canary task would carry it.
    let mut connected = match timeout(t, Box::pin(store.connect(t))).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(ConnectError::new(
                ConnectResult::Timeout,
                format!("no connection within {}", humantime::format_duration(t)),
            ));
        }
    };
    match timeout(t, store.probe(&mut connected.conn)).await {
        Ok(Ok(())) => Ok(connected),
        Ok(Err(e)) => Err(ConnectError::new(
            match e.cause {
                DisconnectCause::Timeout => ConnectResult::Timeout,
                _ => ConnectResult::Io,
            },
            format!("first probe failed: {}", e.message),
        )),
        Err(_) => Err(ConnectError::new(
            ConnectResult::Timeout,
            "first probe timed out",
        )),
    }
}

/// Resolves `host:port` before a driver does, so that a name that does not
/// resolve is reported as `dns` by type rather than by a driver's message.
pub async fn resolve(host: &str, port: u16) -> Result<(), ConnectError> {
    match tokio::net::lookup_host((host, port))
        .await
        .map(|a| a.count())
    {
        Ok(n) if n > 0 => Ok(()),
        Ok(_) => Err(ConnectError::new(
            ConnectResult::Dns,
            format!("{host} resolves to no address"),
        )),
        Err(e) => Err(ConnectError::new(
            ConnectResult::Dns,
            format!("cannot resolve {host}: {e}"),
        )),
    }
}

/// The bounded attempt result for an I/O error, decided by its kind (and,
/// for TLS, by the error type inside it).
pub fn classify_io(e: &io::Error) -> ConnectResult {
    if crate::tls::is_tls_error(e) {
        return ConnectResult::Tls;
    }
    match e.kind() {
        // Bytes that are not the protocol (or too many of them).
        io::ErrorKind::InvalidData => ConnectResult::Protocol,
        io::ErrorKind::ConnectionRefused => ConnectResult::Refused,
        io::ErrorKind::TimedOut => ConnectResult::Timeout,
        _ => ConnectResult::Io,
    }
}

/// A server's message, cut to `limit` bytes (on a character boundary, with
/// an ellipsis): it ends up in events and the API.
pub fn bounded_message(mut message: String, limit: usize) -> String {
    if message.len() > limit {
        let mut end = limit;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

/// A connected TCP socket pair on loopback: (client, server), for the
/// tests of the stores that speak their protocol themselves.
#[cfg(test)]
pub async fn socket_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
    let (client, server) = tokio::join!(client, listener.accept());
    (client.unwrap(), server.unwrap().0)
}

/// The disconnect cause for an I/O error on an established connection.
pub fn disconnect_cause(e: &io::Error) -> DisconnectCause {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => DisconnectCause::Reset,
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe | io::ErrorKind::NotConnected => {
            DisconnectCause::Closed
        }
        io::ErrorKind::TimedOut => DisconnectCause::Timeout,
        _ => DisconnectCause::Error,
    }
}
