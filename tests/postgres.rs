//! End-to-end: the agent against real PostgreSQL servers started by the
//! tests (backend terminated, fast restart, crash, wrong password, a
//! streaming replica promoted behind HAProxy and seen directly, a role
//! without `pg_control_*` rights, too many connections, TLS modes).
//!
//! Every test starts its own servers; nothing is shared between tests.
//! Ground truth for outage lengths is what the harness did and saw.

mod support;

use std::time::Duration;

use support::haproxy::HaProxy;
use support::postgres::{Postgres, url_for};
use support::{
    ATTEMPTS, Agent, DISCONNECTS, FAILOVERS, Moment, OUTAGES, Pacing, Signal, assert_check_results,
    assert_seen_by_the_transport, dbcanary_check, exactly_one_new, parse_time, secs_between,
};

const CANARY_ROLE: &str = "dbcanary";
const CANARY_PASSWORD: &str = "canary-pw-7c2e";

/// Fast pacing: a probe every 100 ms.
const FAST: Pacing = Pacing::every("100ms", "500ms");

/// How long the canary may take to come up on a fresh server.
const UP: Duration = Duration::from_secs(15);

/// A server with the canary's role: login, no other right.
async fn server_with_canary_role(name: &str, settings: &[&str]) -> Postgres {
    let pg = Postgres::start(name, settings).await;
    pg.create_role(CANARY_ROLE, CANARY_PASSWORD).await;
    pg
}

fn canary_url(pg: &Postgres) -> String {
    pg.url(CANARY_ROLE, Some(CANARY_PASSWORD))
}

/// An agent probing `pg` as target `orders` at [`FAST`], once it is up.
async fn orders_agent(pg: &Postgres) -> Agent {
    Agent::start_up(FAST, &[("orders", &canary_url(pg))], UP).await
}

/// The canary's one backend, once there is exactly one and it is not `not`.
async fn canary_backend(pg: &Postgres, target: &str, not: Option<u32>) -> u32 {
    let name = format!("dbcanary:{target}");
    let backends = async || pg.sessions_named(&name).await;
    let what = format!("exactly one new backend named {name}");
    exactly_one_new(Duration::from_secs(10), &what, not, backends).await
}

/// Waits until the canary's connection is old enough that a restart (an
/// uptime back near 0) stands out against the classification tolerance.
async fn wait_connection_age(agent: &Agent, target: &str) {
    agent
        .wait_at_least(
            "dbcanary_connection_age_seconds",
            &[("target", target)],
            1.6,
            Duration::from_secs(10),
        )
        .await;
}

#[tokio::test]
async fn terminated_backend_is_a_network_outage_seen_at_once() {
    let pg = server_with_canary_role("pg", &[]).await;
    // A probe only every 5 s: a loss seen within a fraction of that is seen
    // by the transport, not by a probe.
    let slow = Pacing::every("5s", "1s");
    let mut agent = Agent::start_up(slow, &[("orders", &canary_url(&pg))], UP).await;
    let before = agent.target("orders").await["identity"].clone();
    assert_eq!(before["role"], "primary", "{before}");
    assert_eq!(
        before["address"],
        format!("127.0.0.1:{}", pg.port),
        "{before}"
    );
    let sysid = pg
        .rows("SELECT system_identifier FROM pg_control_system()")
        .await[0][0]
        .clone()
        .unwrap();
    assert_eq!(
        before["server_id"],
        format!("{sysid}/127.0.0.1:{}", pg.port),
        "{before}"
    );
    assert_eq!(before["epoch"], "1", "timeline 1: {before}");

    let pid = canary_backend(&pg, "orders", None).await;
    let killed = pg.terminate(pid).await;
    agent
        .wait_outages("orders", 1.0, Duration::from_secs(10))
        .await;
    let m = agent.metrics().await;
    assert_eq!(m.count(OUTAGES, "orders", "network"), 1.0, "{}", m.text);
    assert_eq!(m.count(DISCONNECTS, "orders", "closed"), 1.0, "{}", m.text);
    let (lost, _) = agent.first_loss("orders", killed).await;
    assert_seen_by_the_transport(
        &lost,
        killed.wall,
        "pg_terminate_backend, with a probe every 5 s",
    );
    // One new backend, the old one gone.
    let new_pid = canary_backend(&pg, "orders", Some(pid)).await;

    // A hardened server revokes pg_control_system(): the identity lacks the
    // system identifier, says so, and the next outage is unknown.
    pg.exec("REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC")
        .await;
    pg.terminate(new_pid).await;
    agent
        .wait_outages("orders", 2.0, Duration::from_secs(10))
        .await;
    let r = agent.restored("orders").await;
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[1]["kind"], "unknown", "{}", r[1]);
    assert!(
        r[1]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("server id"),
        "the missing field is named: {}",
        r[1]
    );
    let after = agent.target("orders").await["identity"].clone();
    assert!(after["server_id"].is_null(), "{after}");
    assert!(
        after["details"]["missing"]
            .as_str()
            .unwrap_or_default()
            .contains("pg_control_system()"),
        "{after}"
    );
    let warned = agent
        .log()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("may not read part of the identity"))
        .count();
    assert_eq!(warned, 1, "warned once:\n{}", agent.log());
    agent.assert_alive();
}

#[tokio::test]
async fn fast_restart_and_crash_are_restarts() {
    let mut pg = server_with_canary_role("pg", &[]).await;
    let agent = orders_agent(&pg).await;
    wait_connection_age(&agent, "orders").await;

    let (down, back) = pg.restart().await;
    let truth = (back.mono - down.mono).as_secs_f64();
    agent
        .wait_outages("orders", 1.0, Duration::from_secs(20))
        .await;
    let r = &agent.restored("orders").await[0];
    assert_eq!(r["kind"], "restart", "{r}");
    assert_eq!(r["cause"], "closed", "the server says goodbye: {r}");
    let measured = r["duration"].as_f64().unwrap();
    // Detection is at once; the end is at most one backoff gap (the
    // resolution) late, plus the harness's own polling of the server.
    let tolerance = r["resolution"].as_f64().unwrap().max(0.25) + 0.1;
    assert!(
        (measured - truth).abs() <= tolerance,
        "outage measured {measured:.3} s, server gone {truth:.3} s (stop issued → first login), \
         tolerance {tolerance:.3} s\n{r}"
    );
    assert!(
        secs_between(down.wall, parse_time(&r["started_at"])) >= -0.01,
        "{r}"
    );

    wait_connection_age(&agent, "orders").await;
    pg.crash_and_start().await;
    agent
        .wait_outages("orders", 2.0, Duration::from_secs(20))
        .await;
    let r = &agent.restored("orders").await[1];
    assert_eq!(r["kind"], "restart", "a crash and recovery: {r}");

    let m = agent.metrics().await;
    assert_eq!(m.outages("orders"), 2.0, "{}", m.text);
    assert_eq!(
        m.value_or_zero("dbcanary_restarts_total", &[("target", "orders")]),
        2.0,
        "{}",
        m.text
    );
    // Exactly one canary backend after both.
    canary_backend(&pg, "orders", None).await;
}

#[tokio::test]
async fn hung_backend_is_a_probe_timeout_and_outages_leave_one_connection() {
    let pg = server_with_canary_role("pg", &[]).await;
    let agent = orders_agent(&pg).await;
    // The canary's backend hangs (SIGSTOP); the server itself answers.
    let pid = canary_backend(&pg, "orders", None).await;
    let stopped = Moment::now();
    support::signal(pid, Signal::Stop);
    agent
        .wait_outages("orders", 1.0, Duration::from_secs(10))
        .await;
    let r = &agent.restored("orders").await[0];
    assert_eq!(r["cause"], "timeout", "{r}");
    assert_eq!(r["kind"], "network", "the server kept running: {r}");
    let detected = secs_between(stopped.wall, parse_time(&r["started_at"]));
    assert!(
        (0.0..1.5).contains(&detected),
        "hang detected {detected:.3} s after SIGSTOP (interval 100 ms + timeout 500 ms)"
    );
    // The hung backend finds its client gone once it runs again.
    support::signal(pid, Signal::Cont);
    let mut last = canary_backend(&pg, "orders", Some(pid)).await;
    // More drops: still exactly one canary connection.
    for n in 2..=6u32 {
        pg.terminate(last).await;
        agent
            .wait_outages("orders", f64::from(n), Duration::from_secs(10))
            .await;
        last = canary_backend(&pg, "orders", Some(last)).await;
    }
    let m = agent.metrics().await;
    assert_eq!(m.outages("orders"), 6.0, "{}", m.text);
    assert_eq!(m.count(DISCONNECTS, "orders", "closed"), 5.0, "{}", m.text);
}

#[tokio::test]
async fn promoted_replica_is_a_failover_behind_haproxy_and_a_role_flip_seen_directly() {
    let mut primary = server_with_canary_role("primary", &[]).await;
    let replica = Postgres::replica_of(&primary, "replica").await;
    let proxy = HaProxy::start(primary.port, replica.port).await;
    let agent = Agent::builder()
        .pacing(FAST.identity_every(2))
        .target(
            "proxied",
            &url_for(proxy.port, CANARY_ROLE, Some(CANARY_PASSWORD)),
        )
        .target("direct", &canary_url(&replica))
        .target(
            "writer",
            &format!("{}?target_session_attrs=primary", canary_url(&replica)),
        )
        .start()
        .await;
    for t in ["proxied", "direct"] {
        agent.wait_up(t, true, Duration::from_secs(15)).await;
    }
    let before = agent.target("proxied").await["identity"].clone();
    assert_eq!(before["role"], "primary", "{before}");
    assert_eq!(before["address"], format!("127.0.0.1:{}", primary.port));
    let direct = agent.target("direct").await["identity"].clone();
    assert_eq!(direct["role"], "replica", "{direct}");
    // Same cluster (system identifier), another member.
    let sysid = |id: &serde_json::Value| id["details"]["system_identifier"].clone();
    assert_eq!(sysid(&direct), sysid(&before));
    assert_ne!(direct["server_id"], before["server_id"]);
    // A replica is no primary: attempts are not_ready while it recovers.
    agent
        .wait_count(
            ATTEMPTS,
            "writer",
            "not_ready",
            2.0,
            Duration::from_secs(10),
        )
        .await;

    replica.promote();
    // Seen directly: a role flip on the live connection, no outage.
    agent
        .wait_count(
            FAILOVERS,
            "direct",
            "topology",
            1.0,
            Duration::from_secs(10),
        )
        .await;
    agent.wait_up("writer", true, Duration::from_secs(10)).await;
    // Then the old primary dies and the proxy sends the canary to the
    // promoted replica.
    primary.crash();
    agent
        .wait_count(OUTAGES, "proxied", "failover", 1.0, Duration::from_secs(20))
        .await;
    let m = agent.metrics().await;
    assert_eq!(m.outages("proxied"), 1.0, "{}\n{}", m.text, proxy.log());
    assert_eq!(m.outages("direct"), 0.0, "{}", m.text);
    assert_eq!(
        m.value(
            "dbcanary_server_info",
            &[("target", "direct"), ("role", "primary")]
        ),
        Some(1.0),
        "{}",
        m.text
    );
    assert!(m.count(FAILOVERS, "proxied", "outage") >= 1.0, "{}", m.text);
    let new_address = format!("127.0.0.1:{}", replica.port);
    let r = &agent.restored("proxied").await[0];
    assert_eq!(r["before"]["server_id"], before["server_id"], "{r}");
    assert_eq!(r["after"]["address"], new_address, "{r}");
    assert_eq!(r["after"]["role"], "primary", "{r}");
    assert_eq!(r["after"]["epoch"], "2", "a new timeline: {r}");
}

/// A server answering "not ready" is retried at the fine cadence for its
/// first `backoff.fine_not_ready` (40) answers, so the moment it serves is
/// known within the cadence, and with the backoff after them, so that it is
/// not flooded.
#[tokio::test]
async fn not_ready_answers_retry_at_the_fine_cadence_then_back_off() {
    let pg = Postgres::never_ready("standby");
    let agent = Agent::builder()
        .pacing(Pacing::every("1s", "500ms").builtin_backoff())
        .target("orders", &canary_url(&pg))
        .start()
        .await;
    // 40 answers at 20 ms take under a second (a starting standby refuses
    // first); the backoff would make about twenty in these eight seconds.
    agent
        .wait_count(
            ATTEMPTS,
            "orders",
            "not_ready",
            40.0,
            Duration::from_secs(8),
        )
        .await;
    let at_40 = agent.metrics().await.count(ATTEMPTS, "orders", "not_ready");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let more = agent.metrics().await.count(ATTEMPTS, "orders", "not_ready") - at_40;
    // The backoff from 50 ms doubling to 1 s with full jitter: about six in
    // two seconds; the fine cadence would have made a hundred.
    assert!(
        more < 25.0,
        "{more} not_ready attempts in 2 s after the first {at_40}:\n{}",
        agent.log()
    );
    let t = agent.target("orders").await;
    assert!(t["current_outage"]["start_unknown"] == true, "{t:#}");
}

#[tokio::test]
async fn wrong_password_is_an_auth_attempt_and_never_printed() {
    let pg = server_with_canary_role("pg", &[]).await;
    let url = |password: Option<&str>| pg.url(CANARY_ROLE, password);
    let reason = "password authentication failed";
    support::wrong_password_drill(FAST, url, "Planted-Wr0ng-5e1a", reason).await;
}

#[tokio::test]
async fn check_prints_the_identity_and_says_what_fails() {
    let pg = server_with_canary_role("pg", &[]).await;
    pg.exec(&format!("ALTER ROLE {CANARY_ROLE} CONNECTION LIMIT 1"))
        .await;
    let run = |targets: &[(&str, &str)]| dbcanary_check(&[], targets);
    let out = run(&[("orders", &canary_url(&pg))]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{table}\n{out:?}");
    let sysid = pg
        .rows("SELECT system_identifier FROM pg_control_system()")
        .await[0][0]
        .clone()
        .unwrap();
    for want in [
        "postgresql",
        "ok",
        "primary",
        &format!("{sysid}/127.0.0.1:{}", pg.port),
        "15.",
    ] {
        assert!(table.contains(want), "{want:?} missing from:\n{table}");
    }

    // Someone else holds the role's only connection: not_ready (53300),
    // and check exits 1 naming it.
    let (holder, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user={CANARY_ROLE} password={CANARY_PASSWORD} dbname=postgres",
            pg.port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .expect("the holder connects");
    let holder_task = tokio::spawn(connection);
    let out = run(&[("orders", &canary_url(&pg))]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(table.contains("not_ready"), "{table}");
    assert!(table.contains("too many connections"), "{table}");
    drop(holder);
    let _ = holder_task.await;

    // Unknown database, nobody listening, no password: auth, refused, auth.
    let closed = support::free_port();
    let out = run(&[
        (
            "nodb",
            &format!(
                "postgresql://{CANARY_ROLE}:{CANARY_PASSWORD}@127.0.0.1:{}/nosuchdb",
                pg.port
            ),
        ),
        ("nobody", &format!("postgresql://x@127.0.0.1:{closed}/db")),
        ("nopw", &pg.url(CANARY_ROLE, None)),
    ]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{table}");
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row {name} in:\n{table}"))
            .to_string()
    };
    assert!(row("nodb").contains(" auth "), "{table}");
    assert!(row("nobody").contains(" refused "), "{table}");
    assert!(row("nopw").contains(" auth "), "no password given: {table}");
}

#[tokio::test]
async fn tls_modes_use_rustls_and_verify_the_server_certificate() {
    // A CA, a server certificate for "localhost", and an unrelated CA, in a
    // directory the server may read (its key must belong to it, mode 0600).
    let certs = support::postgres::pg_tempdir("dbcanary-pg-certs-");
    let d = certs.path();
    support::certs::make_certs(d, "localhost");
    support::postgres::hand_over(&d.join("server.key"), 0o600);
    support::postgres::hand_over(&d.join("server.pem"), 0o644);
    let p = |f: &str| d.join(f).display().to_string();
    let pg = server_with_canary_role(
        "pg",
        &[
            "ssl=on",
            &format!("ssl_cert_file={}", p("server.pem")),
            &format!("ssl_key_file={}", p("server.key")),
        ],
    )
    .await;
    let url = |host: &str, query: &str| {
        format!(
            "postgresql://{CANARY_ROLE}:{CANARY_PASSWORD}@{host}:{}/postgres?{query}",
            pg.port
        )
    };
    let ca = format!("sslrootcert={}", p("ca.pem"));
    let other = format!("sslrootcert={}", p("other.pem"));
    let cases = [
        ("disable", url("127.0.0.1", "sslmode=disable"), "ok"),
        ("prefer", url("127.0.0.1", "sslmode=prefer"), "ok"),
        ("require", url("127.0.0.1", "sslmode=require"), "ok"),
        (
            "full",
            url("localhost", &format!("sslmode=verify-full&{ca}")),
            "ok",
        ),
        (
            "full-ip",
            url("127.0.0.1", &format!("sslmode=verify-full&{ca}")),
            "tls",
        ),
        (
            "ca-ip",
            url("127.0.0.1", &format!("sslmode=verify-ca&{ca}")),
            "ok",
        ),
        (
            "ca-wrong",
            url("localhost", &format!("sslmode=verify-ca&{other}")),
            "tls",
        ),
        (
            "require-wrong",
            url("127.0.0.1", &format!("sslmode=require&{other}")),
            "tls",
        ),
        ("web-roots", url("localhost", "sslmode=verify-full"), "tls"),
    ];
    assert_check_results(&cases);
}

/// Not a test: how long after `pg_terminate_backend` the loss is seen, and
/// how long reconnecting takes, with a probe only every 5 s. Run with
/// `cargo test --test postgres -- --ignored --nocapture measure`.
#[tokio::test]
#[ignore]
async fn measure_terminate_detection() {
    let pg = server_with_canary_role("pg", &[]).await;
    let slow = Pacing::every("5s", "1s").builtin_backoff();
    let agent = Agent::start_up(slow, &[("orders", &canary_url(&pg))], UP).await;
    let terminate = async |_, last| {
        let pid = canary_backend(&pg, "orders", last).await;
        (pid, pg.terminate(pid).await)
    };
    let (detected, outage) = agent.measure_drops("orders", 20, terminate).await;
    for (what, mut v) in [
        ("pg_terminate_backend → detected", detected),
        ("reconnect (outage)", outage),
    ] {
        v.sort_by(f64::total_cmp);
        eprintln!(
            "{what}: min {:.1} ms, median {:.1} ms, max {:.1} ms (n={})",
            v[0],
            v[v.len() / 2],
            v[v.len() - 1],
            v.len()
        );
    }
}
