//! End-to-end: what an `http` (application) target accepts and refuses.
//! One real axum server inside the test plays the applications; a raw TCP
//! listener plays one that answers garbage. Every failure is classified
//! (`status`, `body`, `timeout`, `protocol`, `refused`, `dns`), accepted
//! answers are up, and the credentials the target sends (a bearer token
//! from `password_file`, a URL password, a header) appear nowhere.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use base64::Engine as _;
use support::{Agent, Pacing, dbcanary_command, free_port, target_toml_with};

const WITHIN: Duration = Duration::from_secs(10);
const TOKEN: &str = "tok-hunter2-planted";
const API_KEY: &str = "key-hunter2-planted";
const BASIC_PASSWORD: &str = "pw-hunter2-planted";

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The test applications, one per route.
async fn start_apps() -> SocketAddr {
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("dbc:{BASIC_PASSWORD}"))
    );
    let router = Router::new()
        .route(
            "/maintenance",
            get(async || (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance")),
        )
        .route("/degraded", get(async || "status: degraded"))
        .route("/ok", get(async || "status: ok"))
        .route(
            "/huge",
            // The text sits after the first MiB, beyond what is read.
            get(async || format!("{}status: ok", "x".repeat(2 << 20))),
        )
        .route(
            "/secure",
            get(async |h: HeaderMap| {
                if header(&h, "authorization") == format!("Bearer {TOKEN}")
                    && header(&h, "x-api-key") == API_KEY
                {
                    StatusCode::OK
                } else {
                    StatusCode::UNAUTHORIZED
                }
            }),
        )
        .route(
            "/basic",
            get(async move |h: HeaderMap| {
                if header(&h, "authorization") == basic {
                    StatusCode::OK
                } else {
                    StatusCode::UNAUTHORIZED
                }
            }),
        )
        .route(
            "/hang",
            get(async || {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "never"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// A server that answers every connection with bytes that are not HTTP.
async fn start_garbage() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"\x00\xffSSH-2.0-garbage\r\n\r\n\x07").await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_targets_check_status_body_and_credentials() {
    let apps = start_apps().await;
    let garbage = start_garbage().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let url = |path: &str| format!("http://{apps}{path}");
    let mut toml = Pacing::FAST.toml();
    for (name, u, extra) in [
        ("maint-default", url("/maintenance"), String::new()),
        (
            "maint-expected",
            url("/maintenance"),
            "expected_status = [503, \"2xx\"]".into(),
        ),
        (
            "degraded",
            url("/degraded"),
            "body_contains = \"status: ok\"".into(),
        ),
        ("ok", url("/ok"), "body_contains = \"status: ok\"".into()),
        (
            "huge",
            url("/huge"),
            "body_contains = \"status: ok\"".into(),
        ),
        (
            "secure",
            url("/secure"),
            format!(
                "password_file = {:?}\nheaders = {{ X-Api-Key = {API_KEY:?} }}",
                token_file.display().to_string()
            ),
        ),
        ("secure-without", url("/secure"), String::new()),
        (
            "basic",
            format!("http://dbc:{BASIC_PASSWORD}@{apps}/basic"),
            String::new(),
        ),
        ("hang", url("/hang"), String::new()),
        ("garbage", format!("http://{garbage}/health"), String::new()),
        (
            "closed",
            format!("http://127.0.0.1:{}/health", free_port()),
            String::new(),
        ),
        (
            "nodns",
            "http://no-such-host.invalid/health".into(),
            String::new(),
        ),
    ] {
        toml.push_str(&target_toml_with(name, &u, &extra));
    }
    let agent = Agent::builder().toml(&toml).start().await;

    for up in ["maint-expected", "ok", "secure", "basic"] {
        agent.wait_up(up, true, WITHIN).await;
    }
    // The identity shows the status the accepted answer had.
    let t = agent.target("maint-expected").await;
    assert_eq!(t["identity"]["details"]["status"], "503", "{t}");
    for (name, result, error) in [
        (
            "maint-default",
            "status",
            "unhealthy: HTTP status 503 (expected 2xx)",
        ),
        (
            "degraded",
            "body",
            "HTTP status 200 but the body does not contain \"status: ok\"",
        ),
        ("huge", "body", "does not contain \"status: ok\""),
        ("secure-without", "status", "HTTP status 401 (expected 2xx)"),
        ("hang", "timeout", ""),
        ("garbage", "protocol", ""),
        ("closed", "refused", ""),
        ("nodns", "dns", ""),
    ] {
        agent
            .wait_at_least(
                "dbcanary_connect_attempts_total",
                &[("target", name), ("store", "http"), ("result", result)],
                1.0,
                WITHIN,
            )
            .await;
        let m = agent.metrics().await;
        assert_eq!(
            m.value("dbcanary_up", &[("target", name)]),
            Some(0.0),
            "{name}"
        );
        let t = agent.target(name).await;
        let last = t["last_error"].as_str().unwrap_or("");
        assert!(last.contains(error), "{name}: {t}");
    }
    let m = agent.metrics().await;
    // `status` and `body` are application results, counted for the app
    // that failed on them; at `metrics = "basic"` (the default) a healthy
    // app has no series of a result it never had.
    assert!(
        m.value_or_zero(
            "dbcanary_connect_attempts_total",
            &[("target", "degraded"), ("result", "body")]
        ) >= 1.0
    );
    assert_eq!(
        m.value(
            "dbcanary_connect_attempts_total",
            &[("target", "ok"), ("result", "body")]
        ),
        None
    );

    // `dbcanary check` applies the same checks.
    let check = |name: &str| {
        dbcanary_command()
            .args(["check", "--config"])
            .arg(&agent.config)
            .args(["--target", name])
            .output()
            .unwrap()
    };
    let accepted = check("maint-expected");
    assert_eq!(
        accepted.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    let refused = check("degraded");
    let refused_text = String::from_utf8_lossy(&refused.stdout).to_string()
        + &String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{refused_text}");
    assert!(
        refused_text.contains("does not contain \"status: ok\""),
        "{refused_text}"
    );

    // The planted credentials reach the app and nothing else.
    let config_check = dbcanary_command()
        .args(["config", "check", "--config"])
        .arg(&agent.config)
        .output()
        .unwrap();
    assert_eq!(config_check.status.code(), Some(0));
    let shown = String::from_utf8_lossy(&config_check.stdout).to_string();
    assert!(shown.contains("x-api-key = \"***\""), "{shown}");
    for (what, text) in [
        ("/metrics", agent.get("/metrics").await.body),
        ("/api/v1/targets", agent.get("/api/v1/targets").await.body),
        ("the log", agent.log()),
        ("config check", shown.clone()),
        ("check", refused_text),
    ] {
        assert!(
            !text.contains("hunter2"),
            "a planted secret leaked into {what}:\n{text}"
        );
    }
}
