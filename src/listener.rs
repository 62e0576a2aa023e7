//! The HTTP listener: `/metrics` (Prometheus text, or OpenMetrics when the
//! scraper asks for it), `/healthz`, `/readyz` and `/api/v1/targets`,
//! optionally over TLS (rustls, ring) and behind basic authentication
//! (everything but `/healthz`, so a liveness check needs no password).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::config::BasicAuth;
use crate::telemetry::Recorder;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub recorder: Arc<Recorder>,
    /// Set once the config is loaded and every canary task started.
    pub ready: Arc<AtomicBool>,
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A client gets this long to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The router, for the agent and for tests.
pub fn router(state: AppState, auth: Option<BasicAuth>) -> Router {
    let mut protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .route("/api/v1/targets", get(targets))
        .with_state(state);
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
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(state, auth);
    let stop = shutdown.clone();
    let Some(tls) = tls else {
        return axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    };
    let local = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(64);
    let server = axum::serve(TlsListener { rx, local }, app)
        .with_graceful_shutdown(async move { stop.cancelled().await });
    tokio::select! {
        r = server => r,
        _ = accept_tls(listener, TlsAcceptor::from(tls), tx) => Ok(()),
    }
}

/// Accepts TCP connections and runs each TLS handshake in its own task, so
/// a client that never finishes its handshake blocks nobody.
async fn accept_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            Some(_) = handshakes.join_next() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                handshakes.spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// Hands finished TLS connections to axum.
struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
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
        let Some(encoded) = header.strip_prefix("Basic ") else {
            return false;
        };
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

async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let mut body = String::new();
    let (result, content_type) = if wants_openmetrics(&headers) {
        (
            prometheus_client::encoding::text::encode(&mut body, s.recorder.registry()),
            OPENMETRICS,
        )
    } else {
        (
            prometheus_client::encoding::prometheus_text::encode(&mut body, s.recorder.registry()),
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )
    };
    match result {
        Ok(()) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n").into_response(),
    }
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.ready.load(Ordering::Acquire) {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

async fn targets(State(s): State<AppState>) -> Response {
    axum::Json(serde_json::json!({ "targets": s.recorder.targets() })).into_response()
}
