//! The listener cannot be held: connections that send nothing, half a
//! header, or idle after an answer are closed after the header timeout;
//! beyond the connection limit a fresh client still gets `/healthz` (the
//! idlest connection makes room); basic auth takes its scheme in any case.
//! In-process, with short limits, so that the suite need not wait 10 s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use dbcanary::config::BasicAuth;
use dbcanary::listener::{AppState, Limits, serve};
use dbcanary::telemetry::Recorder;

/// A listener with `limits` (and `auth`), stopped when the token drops.
async fn start(limits: Limits, auth: Option<BasicAuth>) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let state = AppState {
        recorder: Arc::new(Recorder::new()),
        ready: Arc::new(AtomicBool::new(true)),
        drills: None,
    };
    tokio::spawn(serve(listener, None, auth, state, limits, stop.clone()));
    (addr, stop)
}

/// Reads until the server closes the connection (or 5 s pass): what it
/// sent, and when it closed.
async fn until_closed(s: &mut TcpStream) -> (String, Option<Instant>) {
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let closed = matches!(r, Ok(Ok(_)) | Ok(Err(_))).then(Instant::now);
    (String::from_utf8_lossy(&buf).into_owned(), closed)
}

/// One GET on a fresh connection: its status line and body.
async fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n{auth}\r\n").as_bytes())
        .await
        .unwrap();
    let (text, closed) = until_closed(&mut s).await;
    assert!(closed.is_some(), "no answer to {path}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_half_sent_and_idle_connections_are_closed_after_the_header_timeout() {
    let header_read = Duration::from_millis(600);
    let (addr, _stop) = start(
        Limits {
            header_read,
            ..Limits::default()
        },
        None,
    )
    .await;
    let began = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    for (what, s) in [
        ("silent", &mut silent),
        ("half-sent", &mut half),
        ("idle", &mut idle),
    ] {
        let (text, closed) = until_closed(s).await;
        let after = closed
            .unwrap_or_else(|| panic!("the {what} connection is still open after 5 s"))
            .duration_since(began);
        assert!(
            after >= header_read - Duration::from_millis(100),
            "{what} closed too early ({after:?})"
        );
        if what == "idle" {
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_limit_the_idlest_connection_makes_room_for_a_fresh_client() {
    let (addr, _stop) = start(
        Limits {
            header_read: Duration::from_secs(30),
            max_connections: 8,
        },
        None,
    )
    .await;
    // Three times the limit in connections that never send a byte.
    let mut hogs = Vec::new();
    for _ in 0..24 {
        hogs.push(TcpStream::connect(addr).await.unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t = Instant::now();
    let answer = get(addr, "/healthz", None).await;
    assert!(
        answer.starts_with("HTTP/1.0 200") && answer.ends_with("ok\n"),
        "{answer}"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // The listener held no more than its limit: the oldest hogs were let go.
    let mut open = 0;
    for h in &mut hogs {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(50), h.read(&mut byte)).await {
            Err(_) => open += 1,
            Ok(r) => assert!(matches!(r, Ok(0) | Err(_)), "{r:?}"),
        }
    }
    assert!(open <= 8, "{open} idle connections still held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_takes_its_scheme_in_any_case() {
    let auth = BasicAuth {
        username: "prometheus".into(),
        password_hash: bcrypt::hash("s3cret", 4).unwrap(),
    };
    let (addr, _stop) = start(Limits::default(), Some(auth)).await;
    let token = base64::engine::general_purpose::STANDARD.encode("prometheus:s3cret");
    for scheme in ["Basic", "basic", "BASIC"] {
        let answer = get(addr, "/readyz", Some(&format!("{scheme} {token}"))).await;
        assert!(answer.starts_with("HTTP/1.0 200"), "{scheme}: {answer}");
    }
    let wrong = base64::engine::general_purpose::STANDARD.encode("prometheus:nope");
    for header in [format!("basic {wrong}"), format!("Bearer {token}")] {
        let answer = get(addr, "/readyz", Some(&header)).await;
        assert!(answer.starts_with("HTTP/1.0 401"), "{header}: {answer}");
    }
}
