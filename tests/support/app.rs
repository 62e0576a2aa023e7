//! Tiny applications for `http` targets: axum servers inside the test, each
//! holding ONE Redis connection and answering `/health` by PINGing through
//! it. One kind reconnects after its connection drops, one never does (the
//! classic bug an app recovery drill exists to find), one does not touch
//! Redis at all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

/// Bounds every Redis connect and PING of a test application.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// How a test application treats its Redis connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Drops a failed connection and opens a new one on the next request.
    Reconnects,
    /// Opens one connection at start and never replaces it.
    NeverReconnects,
    /// `/health` does not touch Redis.
    Static,
}

struct App {
    behaviour: Behaviour,
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
}

async fn open(client: &redis::Client) -> Option<MultiplexedConnection> {
    tokio::time::timeout(REDIS_TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .ok()
        .and_then(Result::ok)
}

async fn health(State(app): State<Arc<App>>) -> StatusCode {
    if app.behaviour == Behaviour::Static {
        return StatusCode::OK;
    }
    let mut guard = app.conn.lock().await;
    if guard.is_none() && app.behaviour == Behaviour::Reconnects {
        *guard = open(&app.client).await;
    }
    let Some(conn) = guard.as_mut() else {
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    let pong = tokio::time::timeout(
        REDIS_TIMEOUT,
        redis::cmd("PING").query_async::<String>(conn),
    )
    .await;
    match pong {
        Ok(Ok(p)) if p == "PONG" => StatusCode::OK,
        _ => {
            if app.behaviour == Behaviour::Reconnects {
                *guard = None;
            }
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// Starts a test application on a free loopback port (a task of the
/// test's runtime, gone with it) and returns its health URL. Apps that use
/// Redis connect before this returns.
pub async fn start_app(behaviour: Behaviour, redis_url: &str) -> String {
    let client = redis::Client::open(redis_url).expect("redis URL");
    let conn = match behaviour {
        Behaviour::Static => None,
        _ => Some(open(&client).await.expect("the app connects to Redis")),
    };
    let app = Arc::new(App {
        behaviour,
        client,
        conn: Mutex::new(conn),
    });
    let router = Router::new().route("/health", get(health)).with_state(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}/health")
}

/// One `[[target]]` table of an application: its health URL, the targets
/// it depends on and its `recovery_deadline`.
pub fn app_toml(name: &str, url: &str, depends_on: &[&str], deadline: &str) -> String {
    format!(
        "\n[[target]]\nname = {name:?}\nurl = {url:?}\ndepends_on = {depends_on:?}\nrecovery_deadline = {deadline:?}\n"
    )
}
