//! End-to-end: the agent, with the real Rust `mongodb` driver inside,
//! against MongoDB members played by mockupdb (`tests/support/mockmongo.py`,
//! one process per member, started by each test on free ports): a
//! standalone restart, a replica-set primary killed and replaced, a
//! stepdown without an outage, a spell without any primary, a member that
//! never answers, TLS (insecure and verified), and a password that must not
//! leak.
//!
//! Ground truth for outage lengths is what the harness did: when it killed a
//! member and when the new process said it listened.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::mongo::{Member, ReplicaSet, election_hex};
use support::{
    ATTEMPTS, Agent, FAILOVERS, OUTAGES, PROBES, Pacing, Watch, assert_seen_by_the_transport,
    check, events, parse_time, poll_until, secs_between,
};

/// Heartbeats every 500 ms (the driver's minimum) keep topology news quick.
const HB: &str = "heartbeatFrequencyMS=500";

/// How long the canary may take to come up on fresh members.
const UP: Duration = Duration::from_secs(15);

fn standalone_url(m: &Member) -> String {
    format!("mongodb://{}/?{HB}", m.addr())
}

/// `dbcanary_server_info` samples of a target.
async fn server_info(agent: &Agent, target: &str) -> Vec<(String, String, String)> {
    agent
        .metrics()
        .await
        .series("dbcanary_server_info", &[("target", target)])
        .iter()
        .filter(|s| s.value == 1.0)
        .map(|s| {
            (
                s.labels["server_id"].clone(),
                s.labels["role"].clone(),
                s.labels["address"].clone(),
            )
        })
        .collect()
}

/// Waits until `dbcanary_server_info` names `server` as the primary.
async fn wait_primary_named(agent: &Agent, target: &str, server: &str, limit: Duration) {
    poll_until(
        limit,
        &format!("dbcanary_server_info{{target={target:?}}} naming {server} as primary"),
        async || {
            let info = server_info(agent, target).await;
            check(
                info.len() == 1 && info[0].0 == server && info[0].1 == "primary",
                info,
            )
        },
    )
    .await;
}

#[tokio::test]
async fn standalone_restart_is_a_restart_measured_against_the_pause() {
    let mut m = Member::standalone("standalone").await;
    let before_pid = m.process_id().expect("running");
    // Probes only every 2 s: a loss seen well before the next probe can only
    // come from the driver's events (the transport signal).
    let agent = Agent::builder()
        .pacing(Pacing::FAST)
        .target_with("docs", &standalone_url(&m), r#"interval = "2s""#)
        .start_up(UP)
        .await;
    let t = agent.target("docs").await;
    assert_eq!(t["identity"]["process_id"], before_pid.as_str(), "{t}");
    assert_eq!(t["identity"]["server_id"], m.addr().as_str(), "{t}");
    assert_eq!(t["identity"]["role"], "primary", "{t}");
    assert_eq!(t["identity"]["version"], "7.0.0-mockupdb", "{t}");

    let pause = Duration::from_millis(1500);
    let killed = m.kill();
    let detected = poll_until(Duration::from_secs(5), "the loss to be seen", async || {
        let t = agent.target("docs").await;
        match events(&t, "disconnected").first() {
            Some(d) => Ok((*d).clone()),
            None => Err(t["state"].clone()),
        }
    })
    .await;
    assert_seen_by_the_transport(&detected, killed.wall, "the kill");

    // The known pause: the member stays dead this long (the scenario, not
    // a synchronisation).
    tokio::time::sleep(pause).await;
    let started = m.start().await;
    assert_ne!(started.process_id, before_pid);
    agent
        .wait_count(OUTAGES, "docs", "restart", 1.0, Duration::from_secs(15))
        .await;

    let t = agent.target("docs").await;
    let o = &t["last_outage"];
    assert_eq!(o["kind"], "restart", "{o}");
    assert_eq!(o["after"]["process_id"], started.process_id.as_str(), "{o}");
    assert_eq!(o["before"]["process_id"], before_pid.as_str(), "{o}");
    let measured = o["duration"].as_f64().expect("duration");
    let resolution = o["resolution"].as_f64().expect("resolution");
    let down = secs_between(killed.wall, started.at);
    let bound = resolution.max(0.25);
    assert!(
        measured >= down - 0.25 && measured <= down + bound,
        "outage {measured:.3} s, member down {down:.3} s (pause {pause:?}), allowed +{bound:.3} s: {o}"
    );
    let metrics = agent.metrics().await;
    assert_eq!(
        metrics.value("dbcanary_restarts_total", &[("target", "docs")]),
        Some(1.0)
    );
    assert_eq!(
        metrics.count(FAILOVERS, "docs", "topology"),
        0.0,
        "a standalone restart is no failover"
    );
}

#[tokio::test]
async fn killed_primary_replaced_by_a_secondary_is_a_failover() {
    let mut rs = ReplicaSet::start(3).await;
    let (a, b) = (rs.members[0].addr(), rs.members[1].addr());
    let agent = Agent::start_up(Pacing::FAST, &[("catalog", &rs.url("", HB))], UP).await;
    wait_primary_named(&agent, "catalog", &a, Duration::from_secs(5)).await;
    let t = agent.target("catalog").await;
    assert_eq!(t["identity"]["epoch"], election_hex(1).as_str(), "{t}");
    assert_eq!(t["identity"]["details"]["set_name"], "rs0", "{t}");

    rs.members[0].kill();
    agent
        .wait_up("catalog", false, Duration::from_secs(5))
        .await;
    // The election takes a moment, as a real one does.
    tokio::time::sleep(Duration::from_millis(500)).await;
    rs.elect(Some(1));

    agent
        .wait_count(
            FAILOVERS,
            "catalog",
            "topology",
            1.0,
            Duration::from_secs(15),
        )
        .await;
    agent
        .wait_up("catalog", true, Duration::from_secs(15))
        .await;
    wait_primary_named(&agent, "catalog", &b, Duration::from_secs(5)).await;

    let t = agent.target("catalog").await;
    let topo: Vec<&Value> = events(&t, "failover")
        .into_iter()
        .filter(|e| e["source"] == "topology")
        .collect();
    assert_eq!(topo.len(), 1, "{t}");
    assert!(topo[0]["from"].as_str().unwrap_or("").contains(&a), "{t}");
    assert!(topo[0]["to"].as_str().unwrap_or("").contains(&b), "{t}");
    for o in events(&t, "restored") {
        assert_eq!(o["kind"], "failover", "{o}");
    }
    assert_eq!(t["identity"]["epoch"], election_hex(2).as_str(), "{t}");
    let metrics = agent.metrics().await;
    assert_eq!(
        metrics.value(
            "dbcanary_failovers_total",
            &[("target", "catalog"), ("source", "topology")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn stepdown_without_a_kill_is_a_failover_without_an_outage() {
    let mut rs = ReplicaSet::start(3).await;
    let (a, b) = (rs.members[0].addr(), rs.members[1].addr());
    // The probe's bound covers the moment between "A steps down" and "B is
    // primary", as an application's operation would wait for it.
    let agent = Agent::builder()
        .pacing(Pacing::FAST)
        .target_with("orders", &rs.url("", HB), r#"timeout = "1s""#)
        .start_up(UP)
        .await;
    wait_primary_named(&agent, "orders", &a, Duration::from_secs(5)).await;
    let probes_before = agent.metrics().await.count(PROBES, "orders", "ok");

    rs.elect(Some(1));
    agent
        .wait_count(
            FAILOVERS,
            "orders",
            "topology",
            1.0,
            Duration::from_secs(10),
        )
        .await;
    wait_primary_named(&agent, "orders", &b, Duration::from_secs(5)).await;
    // Probes keep succeeding on the new primary.
    agent
        .wait_at_least(
            "dbcanary_probes_total",
            &[("target", "orders"), ("result", "ok")],
            probes_before + 5.0,
            Duration::from_secs(10),
        )
        .await;

    let metrics = agent.metrics().await;
    assert_eq!(
        metrics.sum("dbcanary_disconnects_total", &[("target", "orders")]),
        0.0,
        "the target went down:\n{}",
        metrics.text
    );
    assert_eq!(
        metrics.value("dbcanary_up", &[("target", "orders")]),
        Some(1.0)
    );
    assert_eq!(
        metrics.value(
            "dbcanary_failovers_total",
            &[("target", "orders"), ("source", "topology")]
        ),
        Some(1.0)
    );
    let t = agent.target("orders").await;
    assert_eq!(t["outages"], 0, "{t}");
    let f = events(&t, "failover");
    assert_eq!(f.len(), 1, "{t}");
    assert!(f[0]["from"].as_str().unwrap_or("").contains(&a), "{t}");
    assert!(f[0]["to"].as_str().unwrap_or("").contains(&b), "{t}");
    assert_eq!(t["identity"]["server_id"], b.as_str(), "{t}");
}

/// The end of an outage is when the driver's monitor found the member
/// serving again, not when the attempt's later round trips (here a
/// buildInfo the member answers 600 ms late) were done.
#[tokio::test]
async fn restart_ends_when_the_member_serves_not_when_the_handshake_is_done() {
    let mut m = Member::not_started(
        "slow",
        &json!({ "isWritablePrimary": true, "buildInfoDelayMS": 600 }),
    );
    m.start().await;
    let agent = Agent::builder()
        .pacing(Pacing::every("1s", "2s"))
        .target("docs", &standalone_url(&m))
        .start_up(UP)
        .await;
    let killed = m.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = m.start().await;
    agent
        .wait_count(OUTAGES, "docs", "restart", 1.0, Duration::from_secs(15))
        .await;
    let o = &agent.target("docs").await["last_outage"];
    let late = secs_between(started.at, parse_time(&o["ended_at"]));
    assert!(
        (-0.05..0.3).contains(&late),
        "ended {late:.3} s after the member listened again (its buildInfo answers 0.6 s late): {o}"
    );
    let down = secs_between(killed.wall, started.at);
    let measured = o["duration"].as_f64().expect("duration");
    assert!(
        (measured - down).abs() < 0.3,
        "outage {measured:.3} s, member down {down:.3} s: {o}"
    );
}

#[tokio::test]
async fn no_primary_for_two_seconds_is_not_ready_then_recovers() {
    let mut rs = ReplicaSet::start(3).await;
    let agent = Agent::start_up(Pacing::FAST, &[("ledger", &rs.url("", HB))], UP).await;

    let t0 = Instant::now();
    rs.elect(None);
    agent.wait_up("ledger", false, Duration::from_secs(5)).await;
    agent
        .wait_count(
            ATTEMPTS,
            "ledger",
            "not_ready",
            2.0,
            Duration::from_secs(10),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(t0.elapsed())).await;
    // Member 0 wins the next election.
    let elected = std::time::SystemTime::now();
    rs.elect(Some(0));
    agent.wait_up("ledger", true, Duration::from_secs(10)).await;

    let t = agent.target("ledger").await;
    let o = &t["last_outage"];
    // The outage began with the lost primary (a probe that found none in
    // time) and cannot end before a primary is back.
    let began = secs_between(parse_time(&o["started_at"]), elected);
    let ended = secs_between(elected, parse_time(&o["ended_at"]));
    assert!(
        began > 1.0 && ended > -0.05,
        "no primary for 2 s: outage began {began:.3} s before the election, ended {ended:.3} s after: {o}"
    );
    assert!(
        ended <= 2.0,
        "recovery seen {ended:.3} s after the election: {o}"
    );
    assert!(o["attempts"].as_u64().unwrap_or(0) >= 3, "{o}");
    // Same member, higher electionId: a failover by the topology epoch.
    assert_eq!(o["kind"], "failover", "{o}");
    let metrics = agent.metrics().await;
    let attempts = metrics.series("dbcanary_connect_attempts_total", &[("target", "ledger")]);
    for s in attempts.iter().filter(|s| s.value > 0.0) {
        assert!(
            // (`timeout` when a starved machine lets no member answer in time)
            ["ok", "not_ready", "timeout"].contains(&s.labels["result"].as_str()),
            "unexpected attempt result while members answered: {s:?}"
        );
    }
}

#[tokio::test]
async fn member_that_never_answers_times_out_without_stalling_others() {
    // Accepts TCP (the kernel completes the handshake) and never answers.
    let hung = std::net::TcpListener::bind(("127.0.0.1", support::free_port()))
        .expect("bind the silent listener");
    let hung_addr = hung.local_addr().expect("addr");
    let healthy = Member::standalone("healthy").await;
    // The healthy target gets a roomier timeout: on a loaded machine a slow
    // heartbeat of its own must not pass for interference from the other.
    let mut agent = Agent::builder()
        .pacing(Pacing::FAST)
        .target("silent", &format!("mongodb://{hung_addr}/?{HB}"))
        .target_with("docs", &standalone_url(&healthy), r#"timeout = "1s""#)
        .start()
        .await;
    agent.wait_up("docs", true, Duration::from_secs(15)).await;
    let first = agent
        .wait_count(ATTEMPTS, "silent", "timeout", 3.0, Duration::from_secs(15))
        .await;
    let probes = agent.metrics().await.count(PROBES, "docs", "ok");
    // The silent target keeps trying (no stuck task) while the healthy one
    // keeps probing.
    agent
        .wait_count(
            ATTEMPTS,
            "silent",
            "timeout",
            first + 3.0,
            Duration::from_secs(15),
        )
        .await;
    let metrics = agent.metrics().await;
    assert!(
        metrics.count(PROBES, "docs", "ok") >= probes + 3.0,
        "the healthy target stalled:\n{}",
        metrics.text
    );
    assert_eq!(
        metrics.value("dbcanary_up", &[("target", "docs")]),
        Some(1.0)
    );
    assert_eq!(
        metrics.value("dbcanary_up", &[("target", "silent")]),
        Some(0.0)
    );
    assert_eq!(
        metrics.sum("dbcanary_disconnects_total", &[("target", "docs")]),
        0.0
    );
    // And nothing hangs the shutdown.
    let (status, took) = agent.terminate(Duration::from_secs(5)).await;
    assert!(status.success(), "exit {status} after {took:?}");
    drop(hung);
}

/// Waits until the member has had exactly `n` client connections for a
/// whole second.
async fn connections_settle_at(m: &Member, n: usize, limit: Duration) {
    let mut since: Option<Instant> = None;
    poll_until(
        limit,
        &format!("{n} connections on {}", m.name),
        async || {
            let got = m.connections();
            if got != Some(n) {
                since = None;
                return Err(got);
            }
            let t = *since.get_or_insert_with(Instant::now);
            check(t.elapsed() >= Duration::from_secs(1), got)
        },
    )
    .await;
}

#[tokio::test]
async fn restarts_leave_exactly_one_client_behind() {
    let mut m = Member::standalone("leak").await;
    let agent = Agent::start_up(Pacing::FAST, &[("docs", &standalone_url(&m))], UP).await;
    // One client: its monitor, its round-trip-time monitor (the streaming
    // protocol) and the canary's one pooled connection.
    connections_settle_at(&m, 3, Duration::from_secs(10)).await;
    for n in 1..=4 {
        m.kill();
        m.start().await;
        agent
            .wait_count(
                OUTAGES,
                "docs",
                "restart",
                n as f64,
                Duration::from_secs(15),
            )
            .await;
    }
    // A client left behind by any reconnect would have found the new
    // process too.
    connections_settle_at(&m, 3, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn tls_member_is_reached_over_rustls_and_a_bad_certificate_is_tls() {
    let m = Member::standalone_tls("tls").await;
    let agent = Agent::start(&[
        (
            "secure",
            &format!("mongodb://{}/?tls=true&tlsInsecure=true&{HB}", m.addr()),
        ),
        (
            "verified",
            &format!("mongodb://{}/?tls=true&{HB}", m.addr()),
        ),
    ])
    .await;
    agent.wait_up("secure", true, Duration::from_secs(15)).await;
    // The member's certificate is self-signed: verification refuses it, and
    // the attempt says so by its type.
    agent
        .wait_count(ATTEMPTS, "verified", "tls", 2.0, Duration::from_secs(15))
        .await;
    let t = agent.target("secure").await;
    assert_eq!(t["identity"]["version"], "7.0.0-mockupdb", "{t}");
    let metrics = agent.metrics().await;
    for s in metrics
        .series("dbcanary_connect_attempts_total", &[("target", "verified")])
        .iter()
        .filter(|s| s.value > 0.0)
    {
        assert_eq!(s.labels["result"], "tls", "{s:?}");
    }
    assert_eq!(
        metrics.value("dbcanary_up", &[("target", "verified")]),
        Some(0.0)
    );
}

#[tokio::test]
async fn password_appears_in_no_output() {
    const URL_SECRET: &str = "pw-in-url-7Hq2";
    const FILE_SECRET: &str = "pw-in-file-9Zx4";
    // The mock knows no authentication: the driver's SASL exchange fails,
    // which is exactly the error path that must not leak.
    let m = Member::standalone("auth").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pw_file = dir.path().join("secret");
    std::fs::write(&pw_file, format!("{FILE_SECRET}\n")).expect("write secret");
    let url = format!("mongodb://canary:{URL_SECRET}@{}/?{HB}", m.addr());
    let file_url = format!("mongodb://canary@{}/admin?{HB}", m.addr());
    let mut agent = Agent::builder()
        .pacing(Pacing::FAST)
        .target("inline", &url)
        .target_with("filed", &file_url, &format!("password_file = {pw_file:?}"))
        .start()
        .await;
    for target in ["inline", "filed"] {
        agent
            .wait_count(ATTEMPTS, target, "auth", 2.0, Duration::from_secs(15))
            .await;
    }
    let metrics = agent.metrics().await.text;
    let api = agent.get("/api/v1/targets").await.body;
    let run = |args: &[&str]| {
        let out = support::dbcanary_command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run dbcanary");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let config = agent.config.to_str().expect("utf-8 path").to_string();
    let config_check = run(&["config", "check", "--config", &config]);
    let check = run(&["check", "--config", &config]);
    let watch = {
        let mut w = Watch::start(&[&url, "--interval", "200ms"]);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        w.proc.signal(support::Signal::Int);
        w.proc.wait_timeout(Duration::from_secs(5)).await;
        format!("{}{}", w.proc.stdout_text(), w.proc.stderr_text())
    };
    let (status, _) = agent.terminate(Duration::from_secs(5)).await;
    assert!(status.success());
    let log = agent.log() + &agent.proc().stdout_text();
    assert!(log.contains("auth"), "the auth failure is logged:\n{log}");
    for (what, text) in [
        ("agent log", &log),
        ("/metrics", &metrics),
        ("/api/v1/targets", &api),
        ("config check", &config_check),
        ("check", &check),
        ("watch", &watch),
    ] {
        for secret in [URL_SECRET, FILE_SECRET] {
            assert!(
                !text.contains(secret),
                "the password shows in the {what} output:\n{text}"
            );
        }
    }
}
