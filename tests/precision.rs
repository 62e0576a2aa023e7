//! How precise the outage numbers are, against what the harness did: the
//! moment it killed a server (just before the signal) and the moment the
//! server first answered the harness again. At the default pacing (a probe a
//! second, the built-in reconnect pacing), every store's estimate lies
//! within its resolution (or 100 ms) of the truth, and the truth inside the
//! reported bounds. The exact figures are the benchmark's
//! (`tests/bench.rs`); these bounds are generous for a loaded machine.

mod support;

use std::time::{Duration, SystemTime};

use serde_json::Value;
use support::mariadb::MariaDb;
use support::mongo::Member;
use support::postgres::Postgres;
use support::redis::RedisServer;
use support::{Agent, Pacing, check, parse_time, poll_until, secs_between};

const LIMIT: Duration = Duration::from_secs(30);

/// The built-in pacing: what a new user runs.
const DEFAULTS: Pacing = Pacing::every("1s", "500ms").builtin_backoff();

/// What the harness's own moments may be off: it reads the clock before it
/// signals (the kernel acts a little later) and sees a server answer at its
/// next look (every 5 ms, plus a round trip).
const HARNESS: f64 = 0.05;

/// The last outage of `target`, once it has had `n`.
async fn outage(agent: &Agent, target: &str, n: usize) -> Value {
    poll_until(LIMIT, &format!("outage {n} of {target}"), async || {
        let r = agent.restored(target).await;
        check(r.len() >= n, r.len())
    })
    .await;
    agent.restored(target).await.pop().expect("an outage")
}

/// `t` lies within `[from, to]` (with the harness's tolerance).
fn within(what: &str, t: SystemTime, from: SystemTime, to: SystemTime, o: &Value) {
    assert!(
        secs_between(from, t) >= -HARNESS && secs_between(t, to) >= -HARNESS,
        "{what} ({t:?}) outside the bounds [{from:?}, {to:?}]: {o:#}"
    );
}

/// The estimate is within max(resolution, 100 ms) of the truth, and the
/// truth inside the bounds.
fn judge(o: &Value, down: SystemTime, back: SystemTime) {
    let truth = secs_between(down, back);
    let measured = o["duration"].as_f64().expect("duration");
    let resolution = o["resolution"].as_f64().expect("resolution");
    let slack = resolution.max(0.1) + HARNESS;
    assert!(
        (measured - truth).abs() <= slack,
        "measured {measured:.3} s for a true {truth:.3} s (slack {slack:.3} s): {o:#}"
    );
    let b = &o["bounds"];
    within(
        "the loss",
        down,
        parse_time(&b["start_earliest"]),
        parse_time(&b["start_latest"]),
        o,
    );
    within(
        "the store's return",
        back,
        parse_time(&b["end_earliest"]),
        parse_time(&b["end_latest"]),
        o,
    );
}

#[tokio::test]
async fn redis_killed_and_restarted_is_measured_within_its_bounds() {
    let mut redis = RedisServer::start().await;
    let agent = Agent::start_up(DEFAULTS, &[("cache", &redis.url()[..])], LIMIT).await;
    for n in 1..=2 {
        let down = redis.kill();
        tokio::time::sleep(Duration::from_millis(800)).await;
        let back = redis.start_again().await;
        let o = outage(&agent, "cache", n).await;
        assert_eq!(o["kind"], "restart", "{o:#}");
        judge(&o, down.wall, back.wall);
    }
}

#[tokio::test]
async fn mariadb_killed_and_restarted_is_measured_within_its_bounds() {
    let mut db = MariaDb::start("db", &[]).await;
    let agent = Agent::start_up(DEFAULTS, &[("orders", &db.url("root", None)[..])], LIMIT).await;
    let down = db.kill();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let back = db.start_again().await;
    let o = outage(&agent, "orders", 1).await;
    assert_eq!(o["cause"], "closed", "seen the moment it closed: {o:#}");
    judge(&o, down.wall, back.wall);
}

#[tokio::test]
async fn postgres_crashed_and_restarted_is_measured_within_its_bounds() {
    let mut pg = Postgres::start("pg", &[]).await;
    let agent = Agent::start_up(
        DEFAULTS,
        &[("billing", &pg.url("postgres", None)[..])],
        LIMIT,
    )
    .await;
    let down = pg.crash();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let back = pg.start_again().await;
    let o = outage(&agent, "billing", 1).await;
    assert_eq!(o["kind"], "restart", "{o:#}");
    judge(&o, down.wall, back.wall);
}

#[tokio::test]
async fn a_mongodb_member_killed_and_restarted_is_measured_within_its_bounds() {
    let mut m = Member::standalone("m").await;
    let url = format!(
        "mongodb://{}/?directConnection=true&heartbeatFrequencyMS=500",
        m.addr()
    );
    let agent = Agent::start_up(DEFAULTS, &[("catalog", &url[..])], LIMIT).await;
    let down = m.kill();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let back = m.start().await.at;
    let o = outage(&agent, "catalog", 1).await;
    judge(&o, down.wall, back);
}

/// A silent outage (cause `timeout`) holds the stop within its start
/// window and the resume within its end window; returns the start window's
/// width in seconds.
fn silent_within(o: &Value, stopped: SystemTime, resumed: SystemTime) -> f64 {
    assert_eq!(o["cause"], "timeout", "{o:#}");
    let b = &o["bounds"];
    let (earliest, latest) = (
        parse_time(&b["start_earliest"]),
        parse_time(&b["start_latest"]),
    );
    within("the stop", stopped, earliest, latest, o);
    within(
        "the resume",
        resumed,
        parse_time(&b["end_earliest"]),
        parse_time(&b["end_latest"]),
        o,
    );
    secs_between(earliest, latest)
}

/// A hung server is silent: the outage starts when the probe it never
/// answered was sent, and its bounds, no wider than interval + timeout at
/// the start, hold the truth.
#[tokio::test]
async fn a_stopped_redis_is_bounded_by_the_last_answer_and_the_timeout() {
    let redis = RedisServer::start().await;
    let agent = Agent::start_up(DEFAULTS, &[("cache", &redis.url()[..])], LIMIT).await;
    let stopped = redis.pause();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let resumed = redis.resume();
    let o = outage(&agent, "cache", 1).await;
    let width = silent_within(&o, stopped.wall, resumed.wall);
    assert!(width <= 1.5 + HARNESS, "start window {width:.3} s: {o:#}");
}

/// A hung MongoDB member seen first by the driver's heartbeat (every
/// 500 ms, far more often than the 5 s probe): a silent loss all the same,
/// bounded by the last good answer, not dated as a close just seen.
#[tokio::test]
async fn a_stopped_mongodb_member_seen_by_its_heartbeat_is_bounded_by_the_last_answer() {
    let m = Member::standalone("m").await;
    let url = format!(
        "mongodb://{}/?directConnection=true&heartbeatFrequencyMS=500",
        m.addr()
    );
    let slow = Pacing::every("5s", "500ms").builtin_backoff();
    let agent = Agent::start_up(slow, &[("catalog", &url[..])], LIMIT).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stopped = m.pause();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let resumed = m.resume();
    let o = outage(&agent, "catalog", 1).await;
    silent_within(&o, stopped.wall, resumed.wall);
}

/// Killed less than a second after they started and brought back: still a
/// restart, though their uptimes read 0 s before and after.
#[tokio::test]
async fn young_servers_restarted_are_restarts() {
    let mut redis = RedisServer::start().await;
    let mut db = MariaDb::start("young", &[]).await;
    let agent = Agent::start_up(
        Pacing::FAST,
        &[
            ("cache", &redis.url()[..]),
            ("orders", &db.url("root", None)[..]),
        ],
        LIMIT,
    )
    .await;
    for n in 1..=2 {
        // Each server has just (re)started: its uptime reads 0.
        redis.kill();
        db.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        redis.start_again().await;
        db.start_again().await;
        for target in ["cache", "orders"] {
            let o = outage(&agent, target, n).await;
            assert_eq!(o["kind"], "restart", "{target} #{n}: {o:#}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Started while its store is down: an outage in progress from the agent's
/// start, its true start unknown, then recorded with cause `unreachable`.
#[tokio::test]
async fn a_store_down_at_start_is_an_outage_of_unknown_start() {
    let mut redis = RedisServer::not_started("late", &[], None);
    let agent = Agent::builder()
        .toml(&Pacing::FAST.toml())
        .target("cache", &redis.url())
        .start()
        .await;
    poll_until(LIMIT, "an outage in progress", async || {
        let t = agent.target("cache").await;
        let o = &t["current_outage"];
        let flagged = o["start_unknown"] == true && o["cause"] == "unreachable";
        check(flagged && o["since"].is_string(), t)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let in_progress = agent
        .metrics()
        .await
        .value(
            "dbcanary_outage_in_progress_seconds",
            &[("target", "cache")],
        )
        .expect("the outage in progress is exported");
    assert!(in_progress >= 1.0, "in progress {in_progress} s");
    redis.start_again().await;
    let o = outage(&agent, "cache", 1).await;
    assert_eq!(o["cause"], "unreachable", "{o:#}");
    assert_eq!(o["start_unknown"], true, "{o:#}");
    assert_eq!(o["kind"], "unknown", "{o:#}");
    assert!(o["bounds"]["start_earliest"].is_null(), "{o:#}");
    assert!(o["duration"].as_f64().unwrap() >= 1.5, "{o:#}");
}

/// 200 targets whose store is down at once: the agent-wide budget holds
/// their attempts to its rate, and the outages say the resolution widened.
#[tokio::test]
async fn two_hundred_refused_targets_stay_within_the_attempt_budget() {
    let mut redis = RedisServer::not_started("many", &[], None);
    let url = redis.url();
    let mut b = Agent::builder().toml("[defaults]\ninterval = \"1s\"\ntimeout = \"500ms\"\n");
    b = b.agent_toml("attempts_per_second = 500\n");
    for i in 0..200 {
        b = b.target(&format!("t{i}"), &url);
    }
    let agent = b.start().await;
    let attempts = async || {
        agent
            .metrics()
            .await
            .sum("dbcanary_connect_attempts_total", &[])
    };
    let first = attempts().await;
    let t0 = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rate = (attempts().await - first) / t0.elapsed().as_secs_f64();
    // Unlimited, 200 canaries at the 20 ms cadence would try 10,000 times
    // a second.
    assert!(
        rate <= 500.0 * 1.2,
        "{rate:.0} attempts/s against a budget of 500/s"
    );
    assert!(
        rate >= 250.0,
        "{rate:.0} attempts/s: the budget should be the bound"
    );
    redis.start_again().await;
    poll_until(LIMIT, "every target up", async || {
        let m = agent.metrics().await;
        let up = m.sum("dbcanary_up", &[]);
        check(up == 200.0, up)
    })
    .await;
    let limited = agent.api().await["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["last_outage"]["budget_limited"] == true)
        .count();
    assert!(
        limited > 100,
        "{limited} of 200 outages say the budget held them back"
    );
}
