//! The outage numbers against the truth, per store and fault, at the
//! built-in defaults (a probe a second, the built-in reconnect pacing):
//! for each drill, at a random phase of the probe interval, how far the
//! estimate is from what the harness did (`|estimate - truth|`), how long
//! after the fault the loss was detected, how wide the bounds are, whether
//! the truth lies inside them, and how many attempts the outage took.
//!
//! Faults: SIGKILL and a restart 2 s later; a graceful restart (SIGTERM,
//! PostgreSQL `pg_ctl stop -m fast`, then start at once); the server
//! killing the canary's connection (`CLIENT KILL`, `KILL CONNECTION`,
//! `pg_terminate_backend`; the truth is no outage at all, so the error is
//! the reconnect itself); SIGSTOP for 2 s. MongoDB (mockupdb) has no
//! server-side connection kill.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::socket_watcher;
use super::support::mariadb::MariaDb;
use super::support::mongo::Member;
use super::support::postgres::Postgres;
use super::support::redis::RedisServer;
use super::support::{Agent, Signal, parse_time, poll_until, secs_between};

/// Drills per store and fault.
const N: usize = 20;

/// What the harness's own moments may be off (it reads the clock before
/// it signals; it sees a server answer at its next 5 ms look).
const HARNESS_S: f64 = 0.05;

/// One drill, measured.
struct Sample {
    error_ms: f64,
    detect_ms: f64,
    width_ms: f64,
    attempts: f64,
    truth_inside: bool,
}

/// Waits for the `n`-th outage of `target` and measures it against the
/// truth: the fault at `down`, the store answering again at `back`. The
/// API keeps a target's last events only, so the drill's outage is the
/// last one (drills run one after the other) once the count says `n`.
async fn measure(
    agent: &Agent,
    target: &str,
    n: usize,
    down: SystemTime,
    back: SystemTime,
) -> Sample {
    poll_until(
        Duration::from_secs(30),
        &format!("outage {n} of {target}"),
        async || {
            let got = agent.metrics().await.outages(target);
            if got >= n as f64 { Ok(()) } else { Err(got) }
        },
    )
    .await;
    let t = agent.target(target).await;
    let last = |kind: &str| {
        super::support::events(&t, kind)
            .last()
            .map(|e| (*e).clone())
            .unwrap_or_else(|| panic!("no {kind} event of {target}"))
    };
    let o = last("restored");
    let lost = parse_time(&last("disconnected")["detected_at"]);
    let truth = secs_between(down, back);
    let b = &o["bounds"];
    let inside = |t: SystemTime, from: &Value, to: &Value| {
        secs_between(parse_time(from), t) >= -HARNESS_S
            && secs_between(t, parse_time(to)) >= -HARNESS_S
    };
    let truth_inside = inside(down, &b["start_earliest"], &b["start_latest"])
        && inside(back, &b["end_earliest"], &b["end_latest"]);
    if !truth_inside {
        println!(
            "  truth outside the bounds: down {}, back {}, outage {o}",
            humantime::format_rfc3339_micros(down),
            humantime::format_rfc3339_micros(back)
        );
    }
    Sample {
        error_ms: (o["duration"].as_f64().unwrap() - truth).abs() * 1000.0,
        detect_ms: secs_between(down, lost) * 1000.0,
        width_ms: o["resolution"].as_f64().unwrap() * 1000.0,
        attempts: o["attempts"].as_f64().unwrap(),
        truth_inside,
    }
}

/// `p50 / p99` of a sample.
fn p50_p99(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.5), at(0.99))
}

fn report(store: &str, fault: &str, samples: Vec<Sample>) {
    let n = samples.len();
    let inside = samples.iter().filter(|s| s.truth_inside).count();
    let col = |f: fn(&Sample) -> f64| p50_p99(samples.iter().map(f).collect());
    let (e50, e99) = col(|s| s.error_ms);
    let (d50, d99) = col(|s| s.detect_ms);
    let (w50, w99) = col(|s| s.width_ms);
    let (a50, a99) = col(|s| s.attempts);
    println!(
        "| {store} | {fault} | {n} | {e50:.1} / {e99:.1} | {d50:.1} / {d99:.1} | {w50:.0} / {w99:.0} | {inside}/{n} | {a50:.0} / {a99:.0} |"
    );
}

/// When the server closed the raw client's connection: the truth of a
/// graceful stop, which the server carries out at its own pace (Redis at
/// its next cron tick, up to 100 ms after SIGTERM), answering until then.
fn closed_at(watcher: std::thread::JoinHandle<super::Moment>) -> SystemTime {
    watcher.join().expect("the socket watcher").wall
}

/// `pid` and every process it forked (a postmaster's backends and helpers):
/// stopping the postmaster alone leaves the canary's backend answering.
fn process_tree(pid: u32) -> Vec<String> {
    let mut all = vec![pid.to_string()];
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // The parent's pid is the second field after the command name.
        let parent = stat
            .rfind(')')
            .and_then(|end| stat[end + 2..].split_whitespace().nth(1));
        if parent == Some(pid.to_string().as_str()) {
            all.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    all
}

/// `kill -STOP` (or `-CONT`) of every pid at once; the moment it was sent.
fn stop_or_continue(pids: &[String], signal: &str) -> SystemTime {
    let at = SystemTime::now();
    let ok = std::process::Command::new("kill")
        .arg(signal)
        .args(pids)
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {signal} {pids:?}");
    at
}

/// A random phase of the 1 s probe interval.
async fn random_phase() {
    tokio::time::sleep(Duration::from_millis(rand::random_range(0..1000))).await;
}

/// The agent at the built-in defaults, `target` on `url`, once up.
async fn agent(target: &str, url: &str) -> Agent {
    Agent::builder()
        .target(target, url)
        .log("info")
        .start_up(Duration::from_secs(20))
        .await
}

fn header() {
    println!(
        "| store | fault | drills | \\|estimate - truth\\| p50 / p99 ms | detection p50 / p99 ms | bound width p50 / p99 ms | truth inside bounds | attempts p50 / p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
}

/// Runs `N` drills of one fault: `fault` does it and returns the truth.
async fn drills(
    store: &str,
    fault: &str,
    agent: &Agent,
    target: &str,
    first: &mut usize,
    mut run: impl AsyncFnMut() -> (SystemTime, SystemTime),
) {
    let mut samples = Vec::new();
    for _ in 0..N {
        random_phase().await;
        let (down, back) = run().await;
        *first += 1;
        samples.push(measure(agent, target, *first, down, back).await);
        agent.wait_up(target, true, Duration::from_secs(20)).await;
    }
    report(store, fault, samples);
}

/// Which stores to drill: `DBCANARY_BENCH_STORES=redis,mariadb,postgresql,mongodb`
/// (a comma list; all of them when unset).
fn wanted(store: &str) -> bool {
    std::env::var("DBCANARY_BENCH_STORES").map_or(true, |v| v.split(',').any(|s| s.trim() == store))
}

#[tokio::test]
#[ignore = "benchmark: cargo test --release --test bench -- --ignored --nocapture outage_precision"]
async fn outage_precision_per_store_and_fault() {
    header();
    if wanted("redis") {
        redis().await;
    }
    if wanted("mariadb") {
        mariadb().await;
    }
    if wanted("postgresql") {
        postgresql().await;
    }
    if wanted("mongodb") {
        mongodb().await;
    }
}

/// Redis: every fault.
async fn redis() {
    let two = Duration::from_secs(2);
    let mut redis = RedisServer::start().await;
    let a = agent("cache", &redis.url()).await;
    let mut n = 0;
    drills(
        "Redis",
        "SIGKILL, restart 2 s later",
        &a,
        "cache",
        &mut n,
        async || {
            let down = redis.kill();
            tokio::time::sleep(two).await;
            (down.wall, redis.start_again().await.wall)
        },
    )
    .await;
    drills(
        "Redis",
        "graceful restart",
        &a,
        "cache",
        &mut n,
        async || {
            let closed = socket_watcher(redis.port, false);
            redis.proc().signal_at(Signal::Term);
            let _ = redis.proc_mut().wait_timeout(Duration::from_secs(10)).await;
            redis.stopped();
            (closed_at(closed), redis.start_again().await.wall)
        },
    )
    .await;
    drills(
        "Redis",
        "CLIENT KILL of the canary",
        &a,
        "cache",
        &mut n,
        async || {
            let id = redis.wait_canary("cache", Duration::from_secs(10)).await;
            let at = redis.client_kill(id).await;
            (at.wall, at.wall)
        },
    )
    .await;
    drills("Redis", "SIGSTOP 2 s", &a, "cache", &mut n, async || {
        let down = redis.pause();
        tokio::time::sleep(two).await;
        (down.wall, redis.resume().wall)
    })
    .await;
}

/// MariaDB: every fault.
async fn mariadb() {
    let two = Duration::from_secs(2);
    let (user, password) = ("dbcanary", "bench-pw");
    let mut db = MariaDb::start("mariadb", &[]).await;
    db.create_user(user, password, None).await;
    let a = agent("orders", &db.url(user, Some(password))).await;
    let mut n = 0;
    drills(
        "MariaDB",
        "SIGKILL, restart 2 s later",
        &a,
        "orders",
        &mut n,
        async || {
            let down = db.kill();
            tokio::time::sleep(two).await;
            (down.wall, db.start_again().await.wall)
        },
    )
    .await;
    drills(
        "MariaDB",
        "graceful restart",
        &a,
        "orders",
        &mut n,
        async || {
            let closed = socket_watcher(db.port, true);
            db.proc().signal_at(Signal::Term);
            let _ = db.proc_mut().wait_timeout(Duration::from_secs(20)).await;
            db.stopped();
            (closed_at(closed), db.start_again().await.wall)
        },
    )
    .await;
    drills(
        "MariaDB",
        "KILL CONNECTION of the canary",
        &a,
        "orders",
        &mut n,
        async || {
            let id = db.one_session_of(user, None).await;
            let at = db.kill_connection(id).await;
            (at.wall, at.wall)
        },
    )
    .await;
    drills("MariaDB", "SIGSTOP 2 s", &a, "orders", &mut n, async || {
        let down = db.pause();
        tokio::time::sleep(two).await;
        (down.wall, db.resume().wall)
    })
    .await;
}

/// PostgreSQL: every fault.
async fn postgresql() {
    let two = Duration::from_secs(2);
    let mut pg = Postgres::start("pg", &[]).await;
    let a = agent("billing", &pg.url("postgres", None)).await;
    let mut n = 0;
    drills(
        "PostgreSQL",
        "crash (stop -m immediate), start 2 s later",
        &a,
        "billing",
        &mut n,
        async || {
            let down = pg.crash();
            tokio::time::sleep(two).await;
            (down.wall, pg.start_again().await.wall)
        },
    )
    .await;
    drills(
        "PostgreSQL",
        "graceful restart (stop -m fast)",
        &a,
        "billing",
        &mut n,
        async || {
            // A raw client that sent no startup packet may be kept until
            // authentication_timeout: the truth is when `pg_ctl stop -m
            // fast` was run (it terminates the backends at once).
            let (down, back) = pg.restart().await;
            (down.wall, back.wall)
        },
    )
    .await;
    drills(
        "PostgreSQL",
        "pg_terminate_backend of the canary",
        &a,
        "billing",
        &mut n,
        async || {
            let pid = poll_until(
                Duration::from_secs(10),
                "the canary's backend",
                async || {
                    let s = pg.sessions_named("dbcanary:billing").await;
                    match s.as_slice() {
                        [one] => Ok(*one),
                        _ => Err(s),
                    }
                },
            )
            .await;
            let at = pg.terminate(pid).await;
            (at.wall, at.wall)
        },
    )
    .await;
    drills(
        "PostgreSQL",
        "SIGSTOP 2 s (the postmaster and every backend)",
        &a,
        "billing",
        &mut n,
        async || {
            let all = process_tree(pg.pid());
            let down = stop_or_continue(&all, "-STOP");
            tokio::time::sleep(two).await;
            (down, stop_or_continue(&all, "-CONT"))
        },
    )
    .await;
}

/// A MongoDB member (mockupdb): no server-side connection kill.
async fn mongodb() {
    let two = Duration::from_secs(2);
    let mut m = Member::standalone("m").await;
    let url = format!(
        "mongodb://{}/?directConnection=true&heartbeatFrequencyMS=500",
        m.addr()
    );
    let a = agent("catalog", &url).await;
    let mut n = 0;
    drills(
        "MongoDB (mockupdb)",
        "SIGKILL, restart 2 s later",
        &a,
        "catalog",
        &mut n,
        async || {
            let down = m.kill();
            tokio::time::sleep(two).await;
            (down.wall, m.start().await.at)
        },
    )
    .await;
    drills(
        "MongoDB (mockupdb)",
        "SIGSTOP 2 s",
        &a,
        "catalog",
        &mut n,
        async || {
            let down = m.pause();
            tokio::time::sleep(two).await;
            (down.wall, m.resume().wall)
        },
    )
    .await;
}
