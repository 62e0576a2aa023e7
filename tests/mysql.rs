//! End-to-end: the agent against real MariaDB servers started by the tests
//! (restart, connection kill, hung server, wrong password, failover behind
//! HAProxy, read-only flip without an outage, no connection leak, a close
//! seen between probes) and against hostile "MySQL" endpoints.
//!
//! Every test starts its own servers; nothing is shared between tests.
//! Ground truth for outage lengths is what the harness did and saw.

mod support;

use std::time::Duration;

use support::haproxy::HaProxy;
use support::mariadb::{MariaDb, url_for};
use support::mysql_hostile::{Behaviour, Hostile};
use support::{
    ATTEMPTS, Agent, DISCONNECTS, FAILOVERS, Moment, OUTAGES, PROBES, Pacing, assert_check_results,
    assert_seen_by_the_transport, check, exactly_one_new, parse_time, poll_until, proc_status_kib,
    secs_between,
};

const CANARY_USER: &str = "dbcanary";
const CANARY_PASSWORD: &str = "canary-pw-4f1d";

/// Fast pacing: a probe every 100 ms, so that even a loss only a probe can
/// see (a hung server) stays well inside the tolerances below.
const FAST: Pacing = Pacing::every("100ms", "300ms");

/// How long the canary may take to come up on a fresh server.
const UP: Duration = Duration::from_secs(15);

/// A probe only every 5 s: a loss seen within a fraction of that is seen
/// by the transport, not by a probe.
const SLOW_PROBES: Pacing = Pacing::every("5s", "1s");

/// A server with the canary's least-privilege user (`USAGE` plus
/// `SLAVE MONITOR` for role detection).
async fn server_with_canary_user(name: &str, args: &[&str]) -> MariaDb {
    let db = MariaDb::start(name, args).await;
    db.create_user(CANARY_USER, CANARY_PASSWORD, Some("SLAVE MONITOR"))
        .await;
    db
}

fn canary_url(db: &MariaDb) -> String {
    db.url(CANARY_USER, Some(CANARY_PASSWORD))
}

/// An agent probing `db` as target `orders` at [`FAST`], once it is up.
async fn orders_agent(db: &MariaDb) -> Agent {
    Agent::start_up(FAST, &[("orders", &canary_url(db))], UP).await
}

/// The canary's one session on the server, once there is exactly one.
async fn canary_session(db: &MariaDb, not: Option<u64>) -> u64 {
    let sessions = async || db.sessions_of(CANARY_USER).await;
    let what = "exactly one new canary session";
    exactly_one_new(Duration::from_secs(10), what, not, sessions).await
}

#[tokio::test]
async fn restart_is_one_outage_of_kind_restart_as_long_as_the_pause() {
    let mut db = server_with_canary_user("mariadb", &[]).await;
    let agent = orders_agent(&db).await;
    // Uptime is whole seconds: let the connection age so that a restart
    // (uptime back near 0) is unambiguous against the 1.5 s tolerance.
    agent
        .wait_at_least(
            "dbcanary_connection_age_seconds",
            &[("target", "orders")],
            1.5,
            Duration::from_secs(10),
        )
        .await;

    let down = db.kill();
    let pause = Duration::from_millis(1500);
    tokio::time::sleep_until((down.mono + pause).into()).await;
    let back = db.start_again().await;
    let truth = back.mono - down.mono;

    agent
        .wait_outages("orders", 1.0, Duration::from_secs(20))
        .await;
    let m = agent.metrics().await;
    assert_eq!(
        m.count(OUTAGES, "orders", "restart"),
        1.0,
        "{}",
        agent.log()
    );
    assert_eq!(m.outages("orders"), 1.0, "{}", m.text);
    assert_eq!(
        m.value_or_zero("dbcanary_restarts_total", &[("target", "orders")]),
        1.0
    );
    let r = &agent.restored("orders").await[0];
    assert_eq!(r["kind"], "restart", "{r}");
    let measured = r["duration"].as_f64().unwrap();
    let resolution = r["resolution"].as_f64().unwrap();
    // Detection is at once (the transport's EOF), the end is at most one
    // backoff gap (the resolution) late; 50 ms for the harness's own
    // polling of the restarted server.
    let tolerance = resolution.max(0.25) + 0.05;
    let diff = measured - truth.as_secs_f64();
    assert!(
        diff.abs() <= tolerance,
        "outage measured {measured:.3} s, server down {:.3} s (kill → first login), \
         tolerance {tolerance:.3} s\n{r}",
        truth.as_secs_f64()
    );
    // The outage starts after the kill, not before.
    let started = parse_time(&r["started_at"]);
    assert!(secs_between(down.wall, started) >= -0.01, "{r}");
}

#[tokio::test]
async fn killed_connection_is_a_network_outage() {
    let db = server_with_canary_user("mariadb", &[]).await;
    let agent = orders_agent(&db).await;
    let id = canary_session(&db, None).await;
    let killed = db.kill_connection(id).await;

    agent
        .wait_count(OUTAGES, "orders", "network", 1.0, Duration::from_secs(10))
        .await;
    let m = agent.metrics().await;
    assert_eq!(m.outages("orders"), 1.0, "{}", m.text);
    assert_eq!(m.count(DISCONNECTS, "orders", "closed"), 1.0, "{}", m.text);
    let (_, detected) = agent.first_loss("orders", killed).await;
    // Seen by the transport at once; the bound is slack for a loaded machine.
    assert!(
        (0.0..1.0).contains(&detected),
        "detected {detected:.3} s after the kill"
    );
    // The new session is another one, and the old one is gone.
    let new_id = canary_session(&db, Some(id)).await;
    assert_ne!(new_id, id);
}

/// An agent with target `orders` on `db`'s canary user, once it is up.
async fn canary_up(db: &MariaDb, pacing: Pacing<'_>) -> Agent {
    Agent::start_up(pacing, &[("orders", &canary_url(db))], UP).await
}

/// The first `disconnected` event of `target` once there is one, and how
/// long after `at` the agent detected it.
async fn first_loss(agent: &Agent, target: &str, at: Moment) -> (serde_json::Value, f64) {
    poll_until(Duration::from_secs(10), "a disconnect", async || {
        let n = agent
            .metrics()
            .await
            .sum("dbcanary_disconnects_total", &[("target", target)]);
        check(n >= 1.0, n)
    })
    .await;
    agent.first_loss(target, at).await
}

#[tokio::test]
async fn killed_idle_connection_is_seen_at_once() {
    let db = server_with_canary_user("mariadb", &[]).await;
    let agent = canary_up(&db, SLOW_PROBES).await;
    // Right after the connection's first probe: the next is ~5 s away.
    let id = canary_session(&db, None).await;
    let killed = db.kill_connection(id).await;

    let (lost, _) = first_loss(&agent, "orders", killed).await;
    assert_seen_by_the_transport(
        &lost,
        killed.wall,
        "KILL CONNECTION, with a probe every 5 s",
    );
    assert_eq!(lost["cause"], "closed", "{lost}");
    agent
        .wait_outages("orders", 1.0, Duration::from_secs(10))
        .await;
    let m = agent.metrics().await;
    assert_eq!(m.count(OUTAGES, "orders", "network"), 1.0, "{}", m.text);
    assert_ne!(canary_session(&db, Some(id)).await, id);
}

#[tokio::test]
async fn killed_server_is_seen_at_once() {
    let mut db = server_with_canary_user("mariadb", &[]).await;
    let agent = canary_up(&db, SLOW_PROBES).await;
    canary_session(&db, None).await;
    let down = db.kill();

    let (lost, detected) = first_loss(&agent, "orders", down).await;
    assert!(
        (0.0..1.0).contains(&detected),
        "detected {detected:.3} s after SIGKILL of mariadbd, with a probe every 5 s: {lost}"
    );
    assert!(
        lost["cause"] == "closed" || lost["cause"] == "reset",
        "the kernel closed the server's socket: {lost}"
    );
    db.start_again().await;
    agent
        .wait_outages("orders", 1.0, Duration::from_secs(20))
        .await;
    canary_session(&db, None).await;
}

/// Endpoints that declare huge packets or never end: each attempt costs a
/// `protocol` error (or a `timeout`), the agent's memory stays bounded and
/// nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_endpoints_cost_protocol_errors_and_bounded_memory() {
    let hostile = [
        ("greeting", Behaviour::HugeGreeting),
        ("reply", Behaviour::HugeReply),
        ("rows", Behaviour::EndlessRows),
        ("dribble", Behaviour::Dribble),
    ];
    let mut servers = Vec::new();
    let mut b = Agent::builder().pacing(Pacing::every("200ms", "1s").backoff("20ms", "100ms"));
    for (name, behaviour) in hostile {
        let s = Hostile::start(behaviour).await;
        b = b.target(name, &s.url());
        servers.push(s);
    }
    let mut agent = b.start().await;
    for (target, result, n) in [
        ("greeting", "protocol", 20.0),
        ("reply", "protocol", 20.0),
        ("rows", "protocol", 20.0),
        ("dribble", "timeout", 3.0),
    ] {
        agent
            .wait_at_least(
                "dbcanary_connect_attempts_total",
                &[("target", target), ("result", result)],
                n,
                Duration::from_secs(60),
            )
            .await;
    }
    agent.assert_alive();
    let m = agent.metrics().await;
    for (target, _) in hostile {
        assert_eq!(
            m.value("dbcanary_up", &[("target", target)]),
            Some(0.0),
            "{target}"
        );
    }
    let api = agent.get("/api/v1/targets").await.body;
    assert!(
        api.contains("exceeds the canary's limit: a packet of 16777215 bytes"),
        "the reason is shown: {api}"
    );
    assert!(api.contains("exceeds the canary's limit"), "{api}");
    let peak = proc_status_kib(agent.pid(), "VmHWM");
    assert!(
        peak < 64 * 1024,
        "the agent's resident memory peaked at {peak} KiB against hostile endpoints"
    );
    assert!(!agent.log().contains("panicked"), "{}", agent.log());
}

#[tokio::test]
async fn hung_server_is_detected_by_the_probe_timeout() {
    let db = server_with_canary_user("mariadb", &[]).await;
    let agent = orders_agent(&db).await;

    let stopped = db.pause();
    agent
        .wait_count(
            DISCONNECTS,
            "orders",
            "timeout",
            1.0,
            Duration::from_secs(3),
        )
        .await;
    // While it hangs, connection attempts time out too (the kernel accepts,
    // the server never greets).
    agent
        .wait_count(ATTEMPTS, "orders", "timeout", 1.0, Duration::from_secs(3))
        .await;
    tokio::time::sleep_until((stopped.mono + Duration::from_secs(3)).into()).await;
    db.resume();

    agent
        .wait_outages("orders", 1.0, Duration::from_secs(10))
        .await;
    let m = agent.metrics().await;
    assert!(m.count(PROBES, "orders", "timeout") >= 1.0, "{}", m.text);
    let r = &agent.restored("orders").await[0];
    assert_eq!(r["cause"], "timeout", "{r}");
    assert_eq!(r["kind"], "network", "the same server kept running: {r}");
    let lost = parse_time(&r["started_at"]);
    let detected = secs_between(stopped.wall, lost);
    assert!(
        (0.0..1.5).contains(&detected),
        "hang detected {detected:.3} s after SIGSTOP (interval 100 ms + timeout 300 ms)"
    );
    // A hang is not a crash: the canary is back on one connection.
    canary_session(&db, None).await;
}

#[tokio::test]
async fn wrong_password_is_an_auth_attempt_and_never_printed() {
    let db = server_with_canary_user("mariadb", &[]).await;
    let url = |password: Option<&str>| db.url(CANARY_USER, password);
    support::wrong_password_drill(FAST, url, "Planted-Wr0ng-9d3c", "Access denied").await;
}

#[tokio::test]
async fn too_many_connections_is_not_ready_with_its_own_log_line() {
    let db = MariaDb::start("mariadb", &[]).await;
    db.exec(&format!(
        "CREATE USER '{CANARY_USER}'@'%' IDENTIFIED BY '{CANARY_PASSWORD}' \
         WITH MAX_USER_CONNECTIONS 1"
    ))
    .await;
    // Someone else holds the user's only connection.
    let holder = db
        .conn_as(CANARY_USER, CANARY_PASSWORD)
        .await
        .expect("the holder connects");
    let mut agent = Agent::builder()
        .pacing(FAST)
        .target("orders", &canary_url(&db))
        .start()
        .await;
    agent
        .wait_count(
            ATTEMPTS,
            "orders",
            "not_ready",
            2.0,
            Duration::from_secs(10),
        )
        .await;
    agent.assert_alive();
    let warned = agent
        .log()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("too many connections"))
        .count();
    assert_eq!(warned, 1, "one warning per streak:\n{}", agent.log());
    holder.disconnect().await.expect("disconnect");
    agent.wait_up("orders", true, Duration::from_secs(10)).await;
}

/// A server with the canary's user and TLS: `dir` gets a CA (`ca.pem`), a
/// server certificate for "localhost" it signed, and an unrelated CA
/// (`other.pem`).
async fn tls_server(dir: &std::path::Path) -> MariaDb {
    support::certs::make_certs(dir, "localhost");
    let p = |f: &str| dir.join(f).display().to_string();
    server_with_canary_user(
        "mariadb",
        &[
            &format!("--ssl-ca={}", p("ca.pem")),
            &format!("--ssl-cert={}", p("server.pem")),
            &format!("--ssl-key={}", p("server.key")),
        ],
    )
    .await
}

#[tokio::test]
async fn tls_modes_use_rustls_and_verify_the_server_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    let p = |f: &str| d.join(f).display().to_string();
    let db = tls_server(d).await;
    let base = |host: &str| {
        format!(
            "mysql://{CANARY_USER}:{CANARY_PASSWORD}@{host}:{}/",
            db.port
        )
    };
    let cases = [
        ("preferred", base("127.0.0.1"), "ok"),
        (
            "disabled",
            format!("{}?ssl-mode=disabled", base("127.0.0.1")),
            "ok",
        ),
        (
            "required",
            format!("{}?ssl-mode=required", base("127.0.0.1")),
            "ok",
        ),
        (
            "identity",
            format!(
                "{}?ssl-mode=verify_identity&ssl-ca={}",
                base("localhost"),
                p("ca.pem")
            ),
            "ok",
        ),
        (
            "identity-ip",
            format!(
                "{}?ssl-mode=verify_identity&ssl-ca={}",
                base("127.0.0.1"),
                p("ca.pem")
            ),
            "tls",
        ),
        (
            "identity-name",
            format!(
                "{}?ssl-mode=verify_identity&ssl-ca={}&ssl-server-name=localhost",
                base("127.0.0.1"),
                p("ca.pem")
            ),
            "ok",
        ),
        (
            "wrong-ca",
            format!(
                "{}?ssl-mode=verify_ca&ssl-ca={}",
                base("localhost"),
                p("other.pem")
            ),
            "tls",
        ),
    ];
    let ssl_accepts = async || {
        db.rows("SHOW GLOBAL STATUS LIKE 'Ssl_accepts'").await[0][1]
            .clone()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    // preferred speaks TLS when offered, disabled does not: one handshake.
    let before = ssl_accepts().await;
    assert_check_results(&cases[..2]);
    assert_eq!(
        ssl_accepts().await - before,
        1,
        "TLS handshakes of preferred + disabled"
    );
    assert_check_results(&cases[2..]);
}

/// `verify_ca` checks the chain and not the name (the certificate names
/// `localhost`, the URL `127.0.0.1`); a user that must show a client
/// certificate logs in with `ssl-cert`/`ssl-key` and is refused without.
#[tokio::test]
async fn verify_ca_checks_the_chain_and_client_certificates_log_in() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    let p = |f: &str| d.join(f).display().to_string();
    let db = tls_server(d).await;
    db.exec("CREATE USER 'x509'@'%' IDENTIFIED BY 'x509-pw' REQUIRE X509")
        .await;
    let url = |user: &str, query: &str| {
        format!(
            "mysql://{user}@127.0.0.1:{}/?ssl-mode=verify_ca&ssl-ca={}{query}",
            db.port,
            p("ca.pem")
        )
    };
    let client = format!("&ssl-cert={}&ssl-key={}", p("server.pem"), p("server.key"));
    let agent = Agent::builder()
        .pacing(FAST)
        .target(
            "chain",
            &url(&format!("{CANARY_USER}:{CANARY_PASSWORD}"), ""),
        )
        .target("x509", &url("x509:x509-pw", &client))
        .target("no-cert", &url("x509:x509-pw", ""))
        .start()
        .await;
    for t in ["chain", "x509"] {
        agent.wait_up(t, true, Duration::from_secs(15)).await;
    }
    agent
        .wait_at_least(
            "dbcanary_connect_attempts_total",
            &[("target", "no-cert"), ("result", "auth")],
            1.0,
            Duration::from_secs(15),
        )
        .await;
}

#[tokio::test]
async fn failover_behind_haproxy_is_a_failover_to_the_new_server() {
    let mut primary = server_with_canary_user(
        "primary",
        &["--server-id=1", "--log-bin", "--binlog-format=ROW"],
    )
    .await;
    let replica = MariaDb::start(
        "replica",
        &[
            "--server-id=2",
            "--read-only=1",
            "--log-bin",
            "--log-slave-updates",
            "--binlog-format=ROW",
        ],
    )
    .await;
    // The canary user reaches the replica through replication.
    replica.replicate_from(&primary).await;
    let replicated = async || {
        let sql = "SELECT COUNT(*) FROM mysql.user WHERE User = 'dbcanary'";
        let n = replica.rows(sql).await;
        check(n[0][0].as_deref() == Some("1"), n)
    };
    let what = "the canary user on the replica";
    poll_until(Duration::from_secs(10), what, replicated).await;
    let proxy = HaProxy::start(primary.port, replica.port).await;
    let proxied = url_for(proxy.port, CANARY_USER, Some(CANARY_PASSWORD));
    let agent = Agent::start_up(FAST, &[("orders", &proxied)], UP).await;
    let before = agent.target("orders").await["identity"].clone();
    assert_eq!(before["role"], "primary", "{before}");
    assert_eq!(
        before["address"],
        format!("127.0.0.1:{}", primary.port),
        "{before}"
    );

    primary.kill();
    replica.promote().await;

    agent
        .wait_count(OUTAGES, "orders", "failover", 1.0, Duration::from_secs(20))
        .await;
    let new_address = format!("127.0.0.1:{}", replica.port);
    // Wait for the promoted replica as primary (if the canary reached it
    // before the promotion, a topology refresh follows).
    let info = poll_until(
        Duration::from_secs(10),
        "dbcanary_server_info on the promoted replica as primary",
        async || {
            let m = agent.metrics().await;
            let s: Vec<_> = m
                .series("dbcanary_server_info", &[("target", "orders")])
                .into_iter()
                .cloned()
                .collect();
            match s.as_slice() {
                [one]
                    if one.labels["address"] == new_address && one.labels["role"] == "primary" =>
                {
                    Ok(one.clone())
                }
                _ => Err(s),
            }
        },
    )
    .await;
    assert_ne!(
        info.labels["server_id"],
        before["server_id"].as_str().unwrap(),
        "a new server id after the failover"
    );
    let m = agent.metrics().await;
    assert_eq!(m.outages("orders"), 1.0, "{}\n{}", m.text, proxy.log());
    assert!(m.count(FAILOVERS, "orders", "outage") >= 1.0);
    let r = &agent.restored("orders").await[0];
    assert_eq!(r["before"]["server_id"], before["server_id"], "{r}");
    assert_eq!(r["after"]["address"], new_address, "{r}");
}

#[tokio::test]
async fn read_only_flip_is_a_topology_failover_without_an_outage() {
    let db = server_with_canary_user("mariadb", &[]).await;
    let pacing = Pacing::every("100ms", "300ms")
        .builtin_backoff()
        .identity_every(2);
    let agent = Agent::start_up(pacing, &[("orders", &canary_url(&db))], UP).await;
    let labels = [("target", "orders"), ("source", "topology")];
    assert_eq!(
        agent
            .metrics()
            .await
            .value_or_zero("dbcanary_failovers_total", &labels),
        0.0
    );

    for (read_only, failovers, role) in [(1, 1.0, "replica"), (0, 2.0, "primary")] {
        db.exec(&format!("SET GLOBAL read_only = {read_only}"))
            .await;
        agent
            .wait_count(
                FAILOVERS,
                "orders",
                "topology",
                failovers,
                Duration::from_secs(5),
            )
            .await;
        let m = agent.metrics().await;
        assert_eq!(
            m.value(
                "dbcanary_server_info",
                &[("target", "orders"), ("role", role)]
            ),
            Some(1.0),
            "read_only={read_only}: {}",
            m.text
        );
    }
    let m = agent.metrics().await;
    assert_eq!(m.outages("orders"), 0.0, "no outage: {}", m.text);
    assert_eq!(
        m.sum("dbcanary_disconnects_total", &[("target", "orders")]),
        0.0
    );
}

#[tokio::test]
async fn twenty_outages_leave_exactly_one_canary_connection() {
    // performance_schema on, to see the connect attribute; the canary user
    // lacks SLAVE MONITOR, to exercise the role-from-read_only fallback.
    let mut db = MariaDb::start("mariadb", &["--performance-schema=ON"]).await;
    db.create_user(CANARY_USER, CANARY_PASSWORD, None).await;
    let agent = orders_agent(&db).await;

    let mut last = None;
    for i in 0..20u32 {
        match i {
            // One hang: attempts that time out mid-handshake must not leave
            // connections behind either.
            7 => {
                let stopped = db.pause();
                agent
                    .wait_count(ATTEMPTS, "orders", "timeout", 1.0, Duration::from_secs(5))
                    .await;
                tokio::time::sleep_until((stopped.mono + Duration::from_secs(1)).into()).await;
                db.resume();
            }
            // One restart.
            13 => {
                db.kill();
                db.start_again().await;
            }
            _ => {
                let id = canary_session(&db, last).await;
                db.kill_connection(id).await;
                last = Some(id);
            }
        }
        agent
            .wait_outages("orders", f64::from(i + 1), Duration::from_secs(15))
            .await;
    }
    agent.wait_up("orders", true, Duration::from_secs(10)).await;
    let m = agent.metrics().await;
    assert_eq!(m.outages("orders"), 20.0, "{}", m.text);

    let id = canary_session(&db, None).await;
    // The same one session carries the connect attribute.
    let attrs = db
        .rows(
            "SELECT PROCESSLIST_ID FROM performance_schema.session_connect_attrs \
             WHERE ATTR_NAME = 'program_name' AND ATTR_VALUE = 'dbcanary:orders'",
        )
        .await;
    assert_eq!(attrs, vec![vec![Some(id.to_string())]]);
    let identity = agent.target("orders").await["identity"].clone();
    assert_eq!(identity["role"], "primary", "{identity}");
    assert!(
        identity["details"]["role_from"]
            .as_str()
            .unwrap_or_default()
            .contains("read_only only"),
        "{identity}"
    );
}

/// Not a test: detection latency of a clean server-side close
/// (`KILL CONNECTION`) against the probe interval. Run with
/// `cargo test --test mysql -- --ignored --nocapture measure`.
#[tokio::test]
#[ignore]
async fn measure_kill_detection() {
    let db = server_with_canary_user("mariadb", &[]).await;
    for (interval, every) in [("250ms", 250u64), ("1s", 1000)] {
        let pacing = Pacing::every(interval, "500ms").builtin_backoff();
        let agent = Agent::start_up(pacing, &[("orders", &canary_url(&db))], UP).await;
        let kill = async |i: u32, last: Option<u64>| {
            let id = canary_session(&db, last).await;
            // Kill at phases spread over the probe cycle.
            tokio::time::sleep(Duration::from_millis(every * u64::from(i) / 10)).await;
            (id, db.kill_connection(id).await)
        };
        let (mut figures, mut outage) = agent.measure_drops("orders", 10, kill).await;
        outage.sort_by(f64::total_cmp);
        eprintln!(
            "interval {interval}: reconnect after KILL (outage): median {:.1} ms, max {:.1} ms",
            outage[outage.len() / 2],
            outage[outage.len() - 1]
        );
        figures.sort_by(f64::total_cmp);
        let mean = figures.iter().sum::<f64>() / figures.len() as f64;
        eprintln!(
            "interval {interval}: KILL → detected: min {:.0} ms, median {:.0} ms, mean {mean:.0} ms, max {:.0} ms (n={})",
            figures[0],
            figures[figures.len() / 2],
            figures[figures.len() - 1],
            figures.len()
        );
    }
}
