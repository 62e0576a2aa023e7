//! Redis servers that are not the happy path: one that restarts with a large
//! dataset answers `LOADING` until the dataset is in memory (the canary
//! counts those attempts as `not_ready` and the outage ends as a restart),
//! and one without RESP3 (`HELLO` renamed away), where the canary falls back
//! to RESP2, says so, logs in with a password as before, and still sees a
//! closed connection at once.

mod support;

use std::time::Duration;

use support::redis::RedisServer;
use support::{
    ATTEMPTS, Agent, DISCONNECTS, OUTAGES, Pacing, events, parse_time, require_binary, secs_between,
};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn loading_dataset_is_not_ready() {
    let mut redis =
        RedisServer::start_with("redis", &["--enable-debug-command", "yes"], None).await;
    // About a second of loading on these machines. redis-cli, because
    // populating takes longer than the harness's command timeout.
    let cli = require_binary("redis-cli", "redis-tools");
    let port = redis.port.to_string();
    for cmd in [&["DEBUG", "POPULATE", "3000000"][..], &["SAVE"]] {
        let out = std::process::Command::new(&cli)
            .args(["-p", &port])
            .args(cmd)
            .output()
            .expect("run redis-cli");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.trim() == "OK", "redis-cli {cmd:?}: {text}");
    }
    let agent = Agent::start_up(Pacing::FAST, &[("big", &redis.url())], LIMIT).await;

    redis.kill();
    // Returns once the server answers PING, i.e. after loading.
    redis.start_again().await;

    agent
        .wait_count(OUTAGES, "big", "restart", 1.0, LIMIT)
        .await;
    let m = agent.metrics().await;
    let not_ready = m.count(ATTEMPTS, "big", "not_ready");
    assert!(
        not_ready >= 1.0,
        "attempts during LOADING are not_ready:\n{}",
        m.text
    );
    // (A reset while the old process dies is a fair `io`.)
    for other in ["protocol", "auth"] {
        assert_eq!(
            m.count(ATTEMPTS, "big", other),
            0.0,
            "no {other} attempts:\n{}",
            agent.log()
        );
    }
}

/// Without RESP3 the canary's own reader still sees the socket close: a
/// `CLIENT KILL` is detected without a probe (probes are 5 s apart), as on
/// RESP3.
#[tokio::test]
async fn without_resp3_falls_back_to_resp2_and_still_sees_a_close_at_once() {
    let redis = RedisServer::start_with("redis", &["--rename-command", "HELLO", ""], None).await;
    let agent = Agent::builder()
        .pacing(Pacing::FAST)
        .target_with("old", &redis.url(), r#"interval = "5s""#)
        .start_up(LIMIT)
        .await;
    support::poll_until(LIMIT, "the RESP2 fallback in the log", async || {
        support::check(agent.log().contains("falling back to RESP2"), ())
    })
    .await;
    let clients = redis.canary_clients("old").await.unwrap();
    assert_eq!(clients.len(), 1, "{clients:?}");
    let probes = |m: &support::Metrics| m.sum("dbcanary_probes_total", &[("target", "old")]);
    let probes_before = probes(&agent.metrics().await);
    let killed = redis.client_kill(clients[0].id).await;
    agent
        .wait_count(OUTAGES, "old", "network", 1.0, LIMIT)
        .await;
    let t = agent.target("old").await;
    let lost = events(&t, "disconnected");
    let lost = lost.last().expect("a disconnected event");
    assert_eq!(lost["cause"], "closed", "{lost}");
    let after_kill = secs_between(killed.wall, parse_time(&lost["detected_at"]));
    assert!(
        (-0.01..1.0).contains(&after_kill),
        "disconnect detected {after_kill:.3} s after CLIENT KILL (probes are 5 s apart): {lost}"
    );
    let m = agent.metrics().await;
    assert_eq!(
        probes(&m),
        probes_before,
        "no probe was needed to see the loss"
    );
    assert_eq!(m.count(DISCONNECTS, "old", "closed"), 1.0, "{}", m.text);
}

/// Without RESP3 and with a password: the `INFO` the canary sends along
/// with `HELLO` is refused before the login; it is read again after it, and
/// the identity is the server's.
#[tokio::test]
async fn without_resp3_a_password_still_logs_in_and_reads_the_identity() {
    let password = "planted-Pw-7731";
    let redis =
        RedisServer::start_with("redis", &["--rename-command", "HELLO", ""], Some(password)).await;
    let url = format!("redis://:{password}@127.0.0.1:{}", redis.port);
    let agent = Agent::builder()
        .pacing(Pacing::FAST)
        .target("old", &url)
        .start_up(LIMIT)
        .await;
    let t = agent.target("old").await;
    assert_eq!(t["identity"]["role"], "primary", "{t}");
    assert!(
        t["identity"]["server_id"]
            .as_str()
            .is_some_and(|s| s.len() == 40),
        "the run id: {t}"
    );
    assert_eq!(redis.canary_clients("old").await.unwrap().len(), 1);
    assert!(!agent.log().contains(password), "{}", agent.log());
}
