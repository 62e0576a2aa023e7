//! End-to-end: the real agent binary against real standalone `redis-server`
//! processes the tests start on free loopback ports. Each test asserts what
//! an operator would see on `/metrics`, `/api/v1/targets`, in the log or in
//! `CLIENT LIST`.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::redis::RedisServer;
use support::{
    ATTEMPTS, Agent, DISCONNECTS, Metrics, Pacing, dbcanary_command, events, parse_time,
    poll_until, secs_between,
};

const UP_WITHIN: Duration = Duration::from_secs(10);

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Waits until the target reports `n` ended outages and is up again;
/// returns its API state.
async fn wait_outages(agent: &Agent, target: &str, n: u64, limit: Duration) -> Value {
    poll_until(
        limit,
        &format!("{target}: {n} outage(s) ended, up again"),
        async || {
            let t = agent.target(target).await;
            let done = t["outages"].as_u64() == Some(n) && t["state"] == "up";
            if done {
                Ok(t)
            } else {
                Err(format!(
                    "outages={} state={} current_outage={}",
                    t["outages"], t["state"], t["current_outage"]
                ))
            }
        },
    )
    .await
}

/// Waits until `n` more successful probes of `target` were counted: the
/// canary is healthy and nothing else is going to happen by itself.
async fn wait_probes(agent: &Agent, target: &str, n: f64) {
    let l = [("target", target), ("result", "ok")];
    let from = agent.value("dbcanary_probes_total", &l).await;
    agent
        .wait_at_least(
            "dbcanary_probes_total",
            &l,
            from + n,
            Duration::from_secs(10),
        )
        .await;
}

/// SIGKILL, a known pause, the same server started again on the same port:
/// one outage, of kind `restart`, as long as what the harness did.
#[tokio::test]
async fn restart_is_one_outage_of_kind_restart_as_long_as_the_pause() {
    let mut redis = RedisServer::start().await;
    let agent = Agent::start_up(Pacing::FAST, &[("cache", &redis.url())], UP_WITHIN).await;
    let before = agent.target("cache").await;
    let run_id_before = before["identity"]["server_id"].clone();

    let killed = redis.kill();
    tokio::time::sleep(Duration::from_secs(1)).await; // the pause being measured
    let answered = redis.start_again().await;
    let truth = (answered.mono - killed.mono).as_secs_f64();

    let t = wait_outages(&agent, "cache", 1, Duration::from_secs(15)).await;
    wait_probes(&agent, "cache", 3.0).await;

    let o = &t["last_outage"];
    assert_eq!(o["kind"], "restart", "last outage: {o}");
    let duration = f(&o["duration"]);
    let resolution = f(&o["resolution"]);
    let bound = resolution.max(0.25);
    assert!(
        (duration - truth).abs() <= bound,
        "outage measured {duration:.3} s, the harness killed and the server answered again {truth:.3} s apart (allowed ±{bound:.3} s)"
    );
    assert_ne!(
        t["identity"]["server_id"], run_id_before,
        "a new process answers"
    );
    assert!(o["attempts"].as_u64().unwrap() >= 2, "{o}");

    let m = agent.metrics().await;
    let cache = [("target", "cache"), ("store", "redis")];
    assert_eq!(m.outages("cache"), 1.0, "exactly one outage:\n{}", m.text);
    assert_eq!(
        m.value(
            "dbcanary_outages_total",
            &[("target", "cache"), ("kind", "restart")]
        ),
        Some(1.0)
    );
    assert_eq!(m.value("dbcanary_restarts_total", &cache), Some(1.0));
    assert_eq!(m.sum("dbcanary_disconnects_total", &cache), 1.0);
    assert_eq!(m.value("dbcanary_up", &cache), Some(1.0));
    assert!(
        m.value(
            "dbcanary_connect_attempts_total",
            &[("target", "cache"), ("result", "refused")]
        )
        .unwrap()
            >= 1.0
    );
    let sum = m
        .value(
            "dbcanary_outage_duration_seconds_sum",
            &[("target", "cache")],
        )
        .unwrap();
    assert!(
        (sum - duration).abs() < 1e-3,
        "histogram sum {sum} vs API {duration}"
    );
    assert_eq!(
        m.value("dbcanary_outage_in_progress_seconds", &cache),
        Some(0.0)
    );
}

/// `CLIENT KILL` of the canary's own connection: seen at once (the
/// transport says so, no probe needed), kind `network`.
#[tokio::test]
async fn client_kill_is_detected_without_a_probe_and_is_network() {
    let redis = RedisServer::start().await;
    // Probes every 5 s: a detection within a second cannot come from one.
    let agent = Agent::builder()
        .pacing(Pacing::FAST)
        .target_with("cache", &redis.url(), r#"interval = "5s""#)
        .start_up(UP_WITHIN)
        .await;
    let id = redis.wait_canary("cache", Duration::from_secs(5)).await;
    let probes_before = agent
        .metrics()
        .await
        .sum("dbcanary_probes_total", &[("target", "cache")]);

    let killed = redis.client_kill(id).await;
    let t = wait_outages(&agent, "cache", 1, Duration::from_secs(4)).await;

    let lost = events(&t, "disconnected");
    let lost = lost.last().expect("a disconnected event");
    assert_eq!(lost["cause"], "closed", "{lost}");
    let detected = parse_time(&lost["detected_at"]);
    let after_kill = secs_between(killed.wall, detected);
    assert!(
        (-0.01..1.0).contains(&after_kill),
        "disconnect detected {after_kill:.3} s after CLIENT KILL (probes are 5 s apart): {lost}"
    );
    let o = &t["last_outage"];
    assert_eq!(o["kind"], "network", "{o}");
    assert_eq!(o["cause"], "closed", "{o}");

    let m = agent.metrics().await;
    assert_eq!(
        m.sum("dbcanary_probes_total", &[("target", "cache")]),
        probes_before,
        "no probe was needed to see the loss"
    );
    assert_eq!(
        m.value(
            "dbcanary_disconnects_total",
            &[("target", "cache"), ("cause", "closed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value(
            "dbcanary_outages_total",
            &[("target", "cache"), ("kind", "network")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value("dbcanary_restarts_total", &[("target", "cache")]),
        Some(0.0)
    );
    // The new connection replaced the killed one.
    let new_id = redis.wait_canary("cache", Duration::from_secs(5)).await;
    assert_ne!(new_id, id);
}

/// A hung server (SIGSTOP for 3 s): the probe times out, the target is
/// down meanwhile, and comes back up after SIGCONT with one connection.
#[tokio::test]
async fn hung_server_is_a_timeout_and_recovers() {
    let redis = RedisServer::start().await;
    let agent = Agent::start_up(Pacing::FAST, &[("cache", &redis.url())], UP_WITHIN).await;

    let stopped = redis.pause();
    let timeouts = poll_until(
        Duration::from_secs(3),
        "a timeout disconnect while the server is stopped",
        async || {
            let m = agent.metrics().await;
            let v = m.count(DISCONNECTS, "cache", "timeout");
            let up = m.value("dbcanary_up", &[("target", "cache")]);
            if v >= 1.0 && up == Some(0.0) {
                Ok(v)
            } else {
                Err((v, up))
            }
        },
    )
    .await;
    assert!(timeouts >= 1.0);
    let remaining = Duration::from_secs(3).saturating_sub(stopped.mono.elapsed());
    tokio::time::sleep(remaining).await; // the rest of the hang
    let t = agent.target("cache").await;
    assert_eq!(t["state"], "down", "{t}");
    assert_eq!(t["current_outage"]["cause"], "timeout", "{t}");
    redis.resume();

    let t = wait_outages(&agent, "cache", 1, Duration::from_secs(10)).await;
    assert_eq!(t["last_outage"]["cause"], "timeout");
    assert_eq!(
        t["last_outage"]["kind"], "network",
        "the same server kept running: {t}"
    );
    let m = agent.metrics().await;
    assert_eq!(m.value("dbcanary_up", &[("target", "cache")]), Some(1.0));
    assert!(
        m.value(
            "dbcanary_probes_total",
            &[("target", "cache"), ("result", "timeout")]
        )
        .unwrap()
            >= 1.0
    );
    // The connections abandoned while the server hung do not linger.
    let limit = Duration::from_secs(10);
    redis
        .wait_canaries("cache", 1, limit, "exactly one canary connection")
        .await;
}

/// A wrong password: attempts counted as `auth`, target down, agent alive,
/// and the planted password nowhere: not in the log (at debug level), not
/// on `/metrics`, not in the API, not in `config check` or `check` output.
#[tokio::test]
async fn wrong_password_is_auth_and_never_shown() {
    const PLANTED: &str = "hunter2-planted";
    let redis = RedisServer::start_with("redis", &[], Some("the-right-one")).await;
    let bad_url = format!("redis://:{PLANTED}@127.0.0.1:{}", redis.port);
    let good_url = format!("redis://:the-right-one@127.0.0.1:{}", redis.port);
    let mut agent = Agent::builder()
        .pacing(Pacing::FAST)
        .target("cache", &bad_url)
        .target("good", &good_url)
        .log("debug")
        .start()
        .await;

    let first = agent
        .wait_count(ATTEMPTS, "cache", "auth", 1.0, Duration::from_secs(10))
        .await;
    agent
        .wait_count(
            ATTEMPTS,
            "cache",
            "auth",
            first + 3.0,
            Duration::from_secs(10),
        )
        .await;
    agent.wait_up("good", true, UP_WITHIN).await;
    agent.assert_alive();

    let metrics = agent.get("/metrics").await.body;
    let m = Metrics::parse(&metrics);
    assert_eq!(m.value("dbcanary_up", &[("target", "cache")]), Some(0.0));
    assert_eq!(
        m.value(
            "dbcanary_connect_attempts_total",
            &[("target", "cache"), ("result", "ok")]
        ),
        Some(0.0)
    );
    let api = agent.get("/api/v1/targets").await.body;
    let t = agent.target("cache").await;
    assert_eq!(t["state"], "connecting", "{t}");
    assert!(t["last_error"].is_string(), "the API says why: {t}");
    assert!(t["identity"].is_null());

    // The other commands, run by hand against the same config.
    let config_check = dbcanary_command()
        .args(["config", "check", "--config"])
        .arg(&agent.config)
        .output()
        .expect("run dbcanary config check");
    assert!(config_check.status.success(), "{config_check:?}");
    let check_run = dbcanary_command()
        .args(["check", "--config"])
        .arg(&agent.config)
        .env("RUST_LOG", "debug")
        .output()
        .expect("run dbcanary check");
    assert_eq!(
        check_run.status.code(),
        Some(1),
        "check fails on the bad target: {check_run:?}"
    );
    let check_out = String::from_utf8_lossy(&check_run.stdout);
    assert!(check_out.contains("auth"), "check says why: {check_out}");

    let (status, _) = agent.terminate(Duration::from_secs(5)).await;
    assert!(status.success());
    assert!(agent.config_text.contains(PLANTED), "the test planted it");
    let log = format!("{}{}", agent.log(), agent.proc().stdout_text());
    assert!(
        log.contains("cache"),
        "the log talks about the target:\n{log}"
    );
    for (place, text) in [
        ("agent log", log),
        ("/metrics", metrics),
        ("/api/v1/targets", api),
        (
            "config check stdout",
            String::from_utf8_lossy(&config_check.stdout).into_owned(),
        ),
        (
            "config check stderr",
            String::from_utf8_lossy(&config_check.stderr).into_owned(),
        ),
        ("check stdout", check_out.into_owned()),
        (
            "check stderr",
            String::from_utf8_lossy(&check_run.stderr).into_owned(),
        ),
    ] {
        assert!(
            !text.contains(PLANTED),
            "the password appears in the {place}:\n{text}"
        );
        assert!(
            !text.contains("the-right-one"),
            "the good password appears in the {place}:\n{text}"
        );
    }
}

/// Twenty outages in a row: still exactly one canary connection.
#[tokio::test]
async fn twenty_outages_leave_exactly_one_connection() {
    let redis = RedisServer::start().await;
    let agent = Agent::start_up(Pacing::FAST, &[("cache", &redis.url())], UP_WITHIN).await;
    for i in 1..=20u64 {
        let id = redis.wait_canary("cache", Duration::from_secs(5)).await;
        redis.client_kill(id).await;
        wait_outages(&agent, "cache", i, Duration::from_secs(5)).await;
    }
    wait_probes(&agent, "cache", 2.0).await;
    let all = redis.clients().await.unwrap();
    let ours: Vec<_> = all
        .iter()
        .filter(|c| c.name.starts_with("dbcanary:"))
        .collect();
    assert_eq!(ours.len(), 1, "CLIENT LIST after 20 outages: {all:?}");
    assert_eq!(ours[0].name, "dbcanary:cache");
    let m = agent.metrics().await;
    assert_eq!(m.outages("cache"), 20.0);
    assert_eq!(
        m.value(
            "dbcanary_outages_total",
            &[("target", "cache"), ("kind", "network")]
        ),
        Some(20.0)
    );
    assert_eq!(
        m.sum("dbcanary_disconnects_total", &[("target", "cache")]),
        20.0
    );
}

/// One hung target does not slow another one down: the healthy target keeps
/// probing at its rate and recovers from its own outage at once.
#[tokio::test]
async fn a_hung_target_does_not_delay_another() {
    let hung = RedisServer::start_with("hung", &[], None).await;
    let healthy = RedisServer::start_with("healthy", &[], None).await;
    let targets = [("hung", &hung.url()[..]), ("healthy", &healthy.url())];
    let agent = Agent::start_up(Pacing::FAST, &targets, UP_WITHIN).await;

    let ok = [("target", "healthy"), ("result", "ok")];
    hung.pause();
    agent.wait_up("hung", false, Duration::from_secs(5)).await;
    // While "hung" keeps timing out: count healthy probes over 2 s.
    let t0 = Instant::now();
    let p0 = agent.value("dbcanary_probes_total", &ok).await;
    let id = healthy.wait_canary("healthy", Duration::from_secs(5)).await;
    let killed = healthy.client_kill(id).await;
    let t = wait_outages(&agent, "healthy", 1, Duration::from_secs(5)).await;
    let took = killed.mono.elapsed();
    let o = &t["last_outage"];
    assert!(
        f(&o["duration"]) < 1.0,
        "healthy target's outage took {} s while the other hung: {o}",
        o["duration"]
    );
    assert!(
        took < Duration::from_secs(2),
        "recovery seen {took:?} after CLIENT KILL"
    );
    let wait = Duration::from_secs(2).saturating_sub(t0.elapsed());
    tokio::time::sleep(wait).await; // a window to count probes in
    let p1 = agent.value("dbcanary_probes_total", &ok).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let expected = elapsed / 0.2;
    assert!(
        p1 - p0 >= expected * 0.5,
        "healthy target probed {} times in {elapsed:.2} s (expected about {expected:.0}) while the other hung",
        p1 - p0
    );
    let hung_state = agent.target("hung").await;
    assert_eq!(hung_state["state"], "down", "{hung_state}");

    hung.resume();
    wait_outages(&agent, "hung", 1, Duration::from_secs(10)).await;
}

/// Started while the store is down: the agent runs, says the target is
/// down (connecting, refused), and picks the store up when it starts.
#[tokio::test]
async fn agent_started_before_the_store_waits_for_it() {
    let mut redis = RedisServer::not_started("redis", &[], None);
    let mut agent = Agent::start(&[("cache", &redis.url())]).await;

    agent
        .wait_count(ATTEMPTS, "cache", "refused", 3.0, Duration::from_secs(10))
        .await;
    let m = agent.metrics().await;
    assert_eq!(m.value("dbcanary_up", &[("target", "cache")]), Some(0.0));
    let t = agent.target("cache").await;
    assert_eq!(t["state"], "connecting", "{t}");
    assert!(t["last_error"].is_string(), "{t}");
    agent.assert_alive();
    let ready = agent.get("/readyz").await;
    assert_eq!(ready.status, 200, "ready even though a store is down");

    redis.start_again().await;
    agent.wait_up("cache", true, Duration::from_secs(10)).await;
    let t = agent.target("cache").await;
    assert_eq!(t["state"], "up", "{t}");
    assert!(t["identity"]["server_id"].is_string(), "{t}");
    agent.assert_alive();
}

/// SIGTERM: the agent closes its canaries and exits 0 within 5 s.
#[tokio::test]
async fn sigterm_exits_zero_within_five_seconds() {
    let redis = RedisServer::start().await;
    let down_port = support::free_port();
    let mut agent = Agent::start(&[
        ("cache", &redis.url()),
        ("nowhere", &format!("redis://127.0.0.1:{down_port}")),
    ])
    .await;
    agent.wait_up("cache", true, UP_WITHIN).await;
    redis.wait_canary("cache", Duration::from_secs(5)).await;
    let (status, took) = agent.terminate(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // The canary connection was closed, not left behind.
    let limit = Duration::from_secs(5);
    redis
        .wait_canaries("cache", 0, limit, "no canary connection left")
        .await;
}

/// A stopping agent says so, and what it logged after that reaches stderr
/// before it exits (the log is written by a thread of its own); it logs no
/// error: the task that keeps the
/// target list current ends with it, which is no news then. Six agents,
/// since the two ends raced (about one stop in three).
#[tokio::test]
async fn sigterm_logs_its_end_and_no_error() {
    let redis = RedisServer::start().await;
    let mut agents = Vec::new();
    for _ in 0..6 {
        agents.push(Agent::start(&[("cache", &redis.url())]).await);
    }
    for agent in &agents {
        agent.wait_up("cache", true, UP_WITHIN).await;
    }
    for agent in &mut agents {
        let (status, _) = agent.terminate(Duration::from_secs(5)).await;
        assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
        let log = agent.log();
        let end = log.find("shutting down").unwrap_or(log.len());
        assert!(
            log[end..].contains("canary stopped target=cache"),
            "the stop, and the canary's after it:\n{log}"
        );
        assert!(!log.contains("ERROR"), "no error on a clean stop:\n{log}");
    }
}

/// `RUST_LOG` picks the level per target; one that does not parse is
/// reported and the default level is used.
#[tokio::test]
async fn rust_log_sets_the_level_and_a_bad_one_is_reported() {
    let nowhere = format!("redis://127.0.0.1:{}", support::free_port());
    let nowhere_agent = async |log: &str| {
        let b = Agent::builder().pacing(Pacing::FAST);
        b.target("nowhere", &nowhere).log(log).start().await
    };
    let debug = nowhere_agent("dbcanary=debug,warn").await;
    let bad = nowhere_agent("dbcanary=loud").await;
    for agent in [&debug, &bad] {
        agent
            .wait_count(ATTEMPTS, "nowhere", "refused", 3.0, UP_WITHIN)
            .await;
    }
    let log = debug.log();
    assert!(
        log.contains("connection attempt failed"),
        "debug lines:\n{log}"
    );
    let log = bad.log();
    assert!(
        log.contains("RUST_LOG=\"dbcanary=loud\" ignored") && log.contains("logging at info"),
        "{log}"
    );
    assert!(
        log.contains("cannot connect (unreachable since the start); retrying"),
        "{log}"
    );
    assert!(
        !log.contains("connection attempt failed"),
        "no debug lines:\n{log}"
    );
}
