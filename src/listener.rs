//! The HTTP listener: `/metrics` (Prometheus text, or OpenMetrics when the
//! scraper asks for it), `/healthz`, `/readyz`, `/api/v1/targets` and
//! `/api/v1/drills` (answered by [`Drills`], when drills are enabled),
//! optionally over TLS (rustls, ring) and behind basic authentication
//! (everything but `/healthz`, so a liveness check needs no password).
//!
//! Two promises shape it. The canaries come first: encoding `/metrics` or
//! the API's JSON for thousands of targets takes CPU-time, so it runs on
//! threads of its own (at most [`HEAVY_AT_ONCE`] at a time) and never on
//! the runtime's workers, where it would make the probes' timers fire late.
//! And the listener cannot be held: a connection that has not sent a whole
//! request header within [`Limits::header_read`] (also the wait for the next
//! request on a kept-alive connection) is closed, and at most
//! [`Limits::max_connections`] are open at once, far below the file limit
//! the canaries need; at the limit, a new client takes the place of the one
//! idle the longest, and waits only while every connection is busy.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::BasicAuth;
use crate::model::KINDS;
use crate::telemetry::Recorder;
use crate::telemetry::state::{Filter, Phase};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub recorder: Arc<Recorder>,
    /// Set once the config is loaded and every canary task started.
    pub ready: Arc<AtomicBool>,
    /// Drills through the API; `None` when `[drills] enabled` is false.
    pub drills: Option<Arc<dyn Drills>>,
}

/// A refused drill request: its status and why.
pub type Refusal = (StatusCode, String);

/// What answers `/api/v1/drills`: the agent's drill service.
pub trait Drills: Send + Sync {
    /// Starts the drill the JSON `body` asks for, or checks it only (a dry
    /// run): the status and the answer, or why not.
    fn start(&self, body: &[u8]) -> Result<(StatusCode, serde_json::Value), Refusal>;
    /// The drills kept, newest first.
    fn list(&self) -> serde_json::Value;
    /// One drill, with its report once it is over.
    fn get(&self, id: &str) -> Option<serde_json::Value>;
}

/// The largest drill request read.
const MAX_DRILL_REQUEST: usize = 64 << 10;

/// What `/api/v1/drills` says while drills are disabled.
const DRILLS_OFF: &str = "drills through the API are disabled: set [drills] enabled = true (it needs agent.basic_auth) and restart the agent";

/// The handlers' state: the agent's, the threads of the heavy work, and
/// the size of the last `/metrics` (the next one's buffer is made that big
/// at once, rather than grown and copied).
#[derive(Clone)]
struct Shared {
    app: AppState,
    encoders: Arc<Encoders>,
    metrics_size: Arc<AtomicUsize>,
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A client gets this long to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many `/metrics` or API encodings run at once (each on a thread of
/// its own); more scrapers wait their turn.
pub const HEAVY_AT_ONCE: usize = 2;

/// File descriptors the agent keeps for itself beyond its canaries and the
/// listener: its log, OTLP export, DNS, a reload's config file.
const FD_RESERVE: u64 = 64;

/// How the listener bounds its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A connection must send a whole request header within this long,
    /// from its start or from the end of its last response.
    pub header_read: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Default for Limits {
    /// 10 s to send a header, 256 connections.
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            max_connections: 256,
        }
    }
}

impl Limits {
    /// The limits for an agent with `targets` canaries: the soft limit of
    /// open files is raised to the hard one (where the system allows), and
    /// the connection limit kept within what is left once every canary has
    /// its connection, so that clients of the listener can never take the
    /// canaries' descriptors.
    pub fn for_targets(targets: usize) -> Self {
        let mut limits = Self::default();
        let soft = raise_file_limit();
        // A canary holds one connection, and briefly a second while it
        // reconnects: a tenth more covers them.
        let canaries = targets as u64 + targets as u64 / 10;
        let left = soft.saturating_sub(canaries + FD_RESERVE);
        let cap = usize::try_from(left / 2).unwrap_or(usize::MAX);
        if cap < limits.max_connections {
            tracing::warn!(
                file_limit = soft,
                targets,
                listener_connections = cap.max(8),
                "few file descriptors left beyond the canaries: the listener takes fewer connections; raise LimitNOFILE"
            );
            limits.max_connections = cap.max(8);
        }
        limits
    }
}

/// Raises the soft limit of open files to the hard limit and returns the
/// soft limit now in force (`u64::MAX` where there is none).
fn raise_file_limit() -> u64 {
    let Ok((soft, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return u64::MAX;
    };
    if soft >= hard {
        return soft;
    }
    match rlimit::increase_nofile_limit(hard) {
        Ok(now) => {
            tracing::debug!(from = soft, to = now, "raised the open file limit");
            now
        }
        Err(e) => {
            tracing::warn!(soft, hard, error = %e, "cannot raise the open file limit");
            soft
        }
    }
}

/// The router, for the agent and for tests.
pub fn router(state: AppState, auth: Option<BasicAuth>) -> Router {
    let shared = Shared {
        app: state,
        encoders: Arc::new(Encoders::start()),
        metrics_size: Arc::default(),
    };
    let mut protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .route("/api/v1/targets", get(targets))
        .route(
            "/api/v1/drills",
            get(list_drills)
                .post(start_drill)
                .layer(DefaultBodyLimit::max(MAX_DRILL_REQUEST)),
        )
        .route("/api/v1/drills/{id}", get(get_drill))
        .with_state(shared);
    if let Some(auth) = auth {
        let checker = Arc::new(AuthChecker {
            auth,
            verified: Mutex::new(None),
        });
        protected = protected.route_layer(middleware::from_fn_with_state(checker, require_auth));
    }
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(protected)
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    auth: Option<BasicAuth>,
    state: AppState,
    limits: Limits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let app = router(state, auth);
    let acceptor = tls.map(TlsAcceptor::from);
    let tracker = Arc::new(Tracker::default());
    let mut conns = JoinSet::new();
    loop {
        let room = tracker.make_room(limits.max_connections);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = conns.join_next() => {}
            _ = tracker.changed.notified(), if !room => {}
            // A busy connection that turned idle can make room too.
            _ = tokio::time::sleep(Duration::from_millis(50)), if !room => {}
            accepted = listener.accept(), if room => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors, say: the canaries come first.
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let conn = tracker.open();
                let (app, acceptor, tracker, stop) =
                    (app.clone(), acceptor.clone(), tracker.clone(), shutdown.clone());
                conns.spawn(async move {
                    match acceptor {
                        None => serve_conn(tcp, app, &conn, limits, stop).await,
                        Some(acceptor) => {
                            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                            tokio::select! {
                                r = handshake => match r {
                                    Ok(Ok(tls)) => serve_conn(tls, app, &conn, limits, stop).await,
                                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                                },
                                _ = conn.evict.cancelled() => {}
                            }
                        }
                    }
                    tracker.close(&conn);
                });
            }
        }
    }
    // In-flight answers get a moment to finish; then every connection goes.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// Serves one connection until it ends, is evicted, idles past the header
/// timeout, or the listener stops.
async fn serve_conn<S>(
    io: S,
    app: Router,
    conn: &Arc<Conn>,
    limits: Limits,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let busy = conn.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let guard = Busy::new(&busy);
        let call = tower_service::Service::call(&mut app.clone(), req);
        async move {
            let r = call.await;
            drop(guard);
            r
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    let io = TokioIo::new(Tracked {
        io,
        conn: conn.clone(),
    });
    let served = builder.serve_connection(io, service);
    tokio::pin!(served);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = served.as_mut() => return,
            // Only an idle connection is evicted: nothing is cut short.
            _ = conn.evict.cancelled() => return,
            _ = stop.cancelled(), if !closing => {
                served.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// One connection the listener holds.
#[derive(Debug)]
struct Conn {
    id: u64,
    /// What `active` counts from.
    origin: Instant,
    /// Requests being answered now.
    busy: AtomicUsize,
    /// The last read or write (ms since the tracker's origin).
    active: AtomicU64,
    /// Cancelled to make room for a new client.
    evict: CancellationToken,
}

/// Marks a connection busy while a request is answered.
struct Busy(Arc<Conn>);

impl Busy {
    fn new(conn: &Arc<Conn>) -> Self {
        conn.busy.fetch_add(1, Ordering::AcqRel);
        Self(conn.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every open connection, and news of one closing.
#[derive(Debug)]
struct Tracker {
    origin: Instant,
    next: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Connections told to go that have not gone yet.
    leaving: AtomicUsize,
    changed: Notify,
}

impl Default for Tracker {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            next: AtomicU64::new(0),
            conns: Mutex::default(),
            leaving: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }
}

impl Tracker {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn open(&self) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            origin: self.origin,
            busy: AtomicUsize::new(0),
            active: AtomicU64::new(self.now_ms()),
            evict: CancellationToken::new(),
        });
        self.conns
            .lock()
            .expect("connections lock")
            .insert(conn.id, conn.clone());
        conn
    }

    fn close(&self, conn: &Conn) {
        self.conns
            .lock()
            .expect("connections lock")
            .remove(&conn.id);
        if conn.evict.is_cancelled() {
            self.leaving.fetch_sub(1, Ordering::AcqRel);
        }
        self.changed.notify_one();
    }

    /// Whether a new connection may be accepted now: below the limit, or
    /// once the connection idle the longest has been told to go.
    fn make_room(&self, max: usize) -> bool {
        let conns = self.conns.lock().expect("connections lock");
        if conns.len() - self.leaving.load(Ordering::Acquire).min(conns.len()) < max {
            return true;
        }
        let idlest = conns
            .values()
            .filter(|c| c.busy.load(Ordering::Acquire) == 0 && !c.evict.is_cancelled())
            .min_by_key(|c| c.active.load(Ordering::Acquire));
        match idlest {
            Some(c) => {
                self.leaving.fetch_add(1, Ordering::AcqRel);
                c.evict.cancel();
                true
            }
            None => false,
        }
    }
}

/// A connection's stream, noting when it last moved bytes.
struct Tracked<S> {
    io: S,
    conn: Arc<Conn>,
}

impl<S> Tracked<S> {
    fn touch(&self) {
        let ms = u64::try_from(self.conn.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.conn.active.fetch_max(ms, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Checks basic-auth credentials against the bcrypt hash. bcrypt is slow on
/// purpose, so the last header that verified is remembered and compared in
/// constant time instead of hashing on every scrape.
struct AuthChecker {
    auth: BasicAuth,
    verified: Mutex<Option<String>>,
}

impl AuthChecker {
    fn allows(&self, header: &str) -> bool {
        if let Some(ok) = self.verified.lock().expect("auth lock").as_deref()
            && constant_time_eq(ok.as_bytes(), header.as_bytes())
        {
            return true;
        }
        // The scheme is case-insensitive (RFC 7235): `basic` works too.
        let Some((scheme, encoded)) = header.trim_start().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = text.split_once(':') else {
            return false;
        };
        let ok = constant_time_eq(user.as_bytes(), self.auth.username.as_bytes())
            && bcrypt::verify(password, &self.auth.password_hash).unwrap_or(false);
        if ok {
            *self.verified.lock().expect("auth lock") = Some(header.to_string());
        }
        ok
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_auth(
    State(checker): State<Arc<AuthChecker>>,
    req: Request,
    next: Next,
) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let allowed = match header {
        Some(h) => {
            let checker = checker.clone();
            tokio::task::spawn_blocking(move || checker.allows(&h))
                .await
                .unwrap_or(false)
        }
        None => false,
    };
    if allowed {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"dbcanary\"")],
            "authentication required\n",
        )
            .into_response()
    }
}

fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

/// Runs `work` on an encoding thread: heavy encodings never run on the
/// runtime's workers, where the canaries' timers are.
async fn heavy<T: Send + 'static>(
    s: &Shared,
    work: impl FnOnce(&Recorder) -> T + Send + 'static,
) -> Option<T> {
    let recorder = s.app.recorder.clone();
    s.encoders.run(move || work(&recorder)).await
}

/// A piece of heavy work and where its answer goes.
type Job = Box<dyn FnOnce() + Send>;

/// [`HEAVY_AT_ONCE`] threads of their own for the heavy encodings, fed by
/// one queue. Rather than tokio's blocking pool: the same few threads
/// reuse the memory of the last scrape (the allocator keeps what a thread
/// freed for that thread's next use), where new pool threads would each
/// keep their own.
struct Encoders {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Encoders {
    fn start() -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..HEAVY_AT_ONCE {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name("dbcanary-encode".into())
                .spawn(move || {
                    // Ends when the router (the sender) is gone.
                    while let Ok(job) = { queue.lock().expect("encoder queue").recv() } {
                        // A panicking encoding fails its request, not the thread.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start an encoding thread");
            }
        }
        Self { jobs }
    }

    /// Runs `f` on an encoding thread, in its turn.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .ok()?;
        rx.await.ok()
    }
}

async fn metrics(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let open = wants_openmetrics(&headers);
    let size = s.metrics_size.clone();
    let encoded = heavy(&s, move |recorder| {
        let last = size.load(Ordering::Relaxed);
        let mut body = String::with_capacity(last + last / 8);
        let r = if open {
            prometheus_client::encoding::text::encode(&mut body, recorder.registry())
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut body, recorder.registry())
        };
        size.store(body.len(), Ordering::Relaxed);
        r.map(|()| body)
    })
    .await;
    let content_type = if open {
        OPENMETRICS
    } else {
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    };
    match encoded {
        Some(Ok(body)) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n").into_response(),
    }
}

async fn readyz(State(s): State<Shared>) -> Response {
    if s.app.ready.load(Ordering::Acquire) {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

/// The query of `/api/v1/targets`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetsQuery {
    target: Option<String>,
    state: Option<String>,
    store: Option<String>,
    view: Option<String>,
}

impl TargetsQuery {
    /// The filter it asks for, or why it is refused.
    fn filter(self) -> Result<Filter, String> {
        let state = match self.state.as_deref() {
            None => None,
            Some(s) => Some(Phase::parse(s).ok_or_else(|| {
                let all: Vec<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
                format!("state must be one of {}", all.join(", "))
            })?),
        };
        if let Some(store) = &self.store
            && !KINDS.iter().any(|k| k.label == store)
        {
            let mut all: Vec<&str> = KINDS.iter().map(|k| k.label).collect();
            all.dedup();
            return Err(format!("store must be one of {}", all.join(", ")));
        }
        Ok(Filter {
            target: self.target,
            state,
            store: self.store,
        })
    }
}

async fn targets(
    State(s): State<Shared>,
    query: Result<Query<TargetsQuery>, QueryRejection>,
) -> Response {
    let bad = |reason: String| (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response();
    let Ok(Query(q)) = query else {
        return bad("unknown query parameter: use target, state, store or view".into());
    };
    let summary = match q.view.as_deref() {
        None => false,
        Some("summary") => true,
        Some(_) => return bad("view must be summary".into()),
    };
    let filter = match q.filter() {
        Ok(f) => f,
        Err(reason) => return bad(reason),
    };
    let json = heavy(&s, move |recorder| {
        if summary {
            serde_json::to_vec(&recorder.summary(Instant::now()))
        } else {
            recorder.targets_json(&filter)
        }
    })
    .await;
    match json {
        Some(Ok(body)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n").into_response(),
    }
}

/// A JSON error: `{"error": reason}`.
fn json_error(status: StatusCode, reason: &str) -> Response {
    (status, Json(serde_json::json!({ "error": reason }))).into_response()
}

/// Answers with the drill service, or says drills are off.
fn with_drills(s: &Shared, answer: impl FnOnce(&dyn Drills) -> Response) -> Response {
    match &s.app.drills {
        Some(d) => answer(d.as_ref()),
        None => json_error(StatusCode::FORBIDDEN, DRILLS_OFF),
    }
}

async fn start_drill(State(s): State<Shared>, body: Bytes) -> Response {
    with_drills(&s, |d| match d.start(&body) {
        Ok((status, answer)) => (status, Json(answer)).into_response(),
        Err((status, reason)) => json_error(status, &reason),
    })
}

async fn list_drills(State(s): State<Shared>) -> Response {
    with_drills(&s, |d| Json(d.list()).into_response())
}

async fn get_drill(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    with_drills(&s, |d| match d.get(&id) {
        Some(v) => Json(v).into_response(),
        None => json_error(
            StatusCode::NOT_FOUND,
            &format!("no drill {id:?}: GET /api/v1/drills lists the drills kept"),
        ),
    })
}
