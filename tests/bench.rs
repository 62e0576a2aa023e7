//! Benchmarks, not tests: figures for docs/benchmarks.md, never pass/fail timing
//! bounds. Run them on their own, in release mode:
//!
//! ```text
//! cargo test --release --test bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! - `close_detection_latency`: how long after the harness kills a Redis
//!   connection (SIGKILL of `redis-server`, or `CLIENT KILL`) the agent has
//!   detected it (the `detected_at` of its `disconnected` event).
//! - `mariadb_close_detection_latency`: the same for MariaDB (`KILL
//!   CONNECTION` of the canary's session, SIGKILL of `mariadbd`, and for
//!   SIGKILL also from the moment a raw client sees the server's sockets
//!   close), at the default 1 s probe interval.
//! - `footprint_four_redis_targets`: the agent's resident memory and CPU use
//!   with four healthy Redis targets at the default 1 s probe interval.
//! - `outages::outage_precision_per_store_and_fault`: every store's outage
//!   estimate against the truth, per fault (see `bench/outages.rs`).
//! - `ten_thousand_redis_targets`: 10,000 targets on one agent (start-up,
//!   memory, CPU, `/metrics` and API times, false outages, a mass loss);
//!   run it with `ulimit -n 20000` (see docs/benchmarks.md).

mod support;

#[path = "bench/outages.rs"]
mod outages;

use std::time::Duration;

use serde_json::Value;
use support::mariadb::MariaDb;
use support::redis::{Moment, RedisServer};
use support::{Agent, Pacing, events, parse_time, poll_until, proc_status_kib, secs_between};

const DRILLS: usize = 50;
/// MariaDB drills (each SIGKILL costs a server restart).
const MARIADB_DRILLS: usize = 25;

/// `(p50, p90, p99, max)` of a sample, in the sample's unit.
fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.50), at(0.90), at(0.99), *v.last().unwrap())
}

fn report(what: &str, ms: Vec<f64>) {
    let n = ms.len();
    let (p50, p90, p99, max) = percentiles(ms);
    println!(
        "{what:<36} n={n:<3} p50 {p50:7.2} ms  p90 {p90:7.2} ms  p99 {p99:7.2} ms  max {max:7.2} ms"
    );
}

/// Waits for the `n`-th disconnect of `target` and returns how long after
/// `killed` the agent detected it, in milliseconds.
async fn detection_ms(agent: &Agent, target: &str, n: usize, killed: Moment) -> f64 {
    let lost: Value = poll_until(
        Duration::from_secs(10),
        &format!("disconnect #{n} of {target}"),
        async || {
            let t = agent.target(target).await;
            let count = events(&t, "disconnected").len();
            let total = t["outages"].as_u64().unwrap_or(0) as usize
                + usize::from(!t["current_outage"].is_null());
            match events(&t, "disconnected").last() {
                Some(e) if total >= n => Ok((*e).clone()),
                _ => Err(format!("{count} disconnects, {total} outages")),
            }
        },
    )
    .await;
    secs_between(killed.wall, parse_time(&lost["detected_at"])) * 1000.0
}

/// An agent on `redis` (target `cache`) at [`Pacing::FAST`], logging at
/// `info`, once it is up.
async fn fast_agent(redis: &RedisServer) -> Agent {
    Agent::builder()
        .pacing(Pacing::FAST)
        .target("cache", &redis.url())
        .log("info")
        .start_up(Duration::from_secs(10))
        .await
}

#[tokio::test]
#[ignore = "benchmark: cargo test --release --test bench -- --ignored --nocapture"]
async fn close_detection_latency() {
    // CLIENT KILL of the canary's connection: the server closes it.
    let redis = RedisServer::start().await;
    let agent = fast_agent(&redis).await;
    let mut ms = Vec::new();
    for n in 1..=DRILLS {
        let id = redis.wait_canary("cache", Duration::from_secs(5)).await;
        let killed = redis.client_kill(id).await;
        ms.push(detection_ms(&agent, "cache", n, killed).await);
        agent.wait_up("cache", true, Duration::from_secs(5)).await;
    }
    report("CLIENT KILL -> detected_at", ms);
    drop(agent);

    // SIGKILL of redis-server: the kernel closes its sockets.
    let mut redis = RedisServer::start().await;
    let agent = fast_agent(&redis).await;
    let mut ms = Vec::new();
    for n in 1..=DRILLS {
        redis.wait_canary("cache", Duration::from_secs(5)).await;
        let killed = redis.kill();
        ms.push(detection_ms(&agent, "cache", n, killed).await);
        redis.start_again().await;
        agent.wait_up("cache", true, Duration::from_secs(5)).await;
    }
    report("SIGKILL redis-server -> detected_at", ms);
}

#[tokio::test]
#[ignore = "benchmark: cargo test --release --test bench -- --ignored --nocapture"]
async fn mariadb_close_detection_latency() {
    let (user, password) = ("dbcanary", "bench-pw");
    let mut db = MariaDb::start("mariadb", &[]).await;
    db.create_user(user, password, None).await;
    // The built-in defaults: probe every 1 s.
    let agent = Agent::builder()
        .target("orders", &db.url(user, Some(password)))
        .log("info")
        .start()
        .await;
    agent.wait_up("orders", true, Duration::from_secs(15)).await;

    // KILL CONNECTION of the canary's session: the server closes it.
    let mut ms = Vec::new();
    let mut last = None;
    for n in 1..=MARIADB_DRILLS {
        let id = db.one_session_of(user, last).await;
        let killed = db.kill_connection(id).await;
        last = Some(id);
        ms.push(detection_ms(&agent, "orders", n, killed).await);
        agent.wait_up("orders", true, Duration::from_secs(5)).await;
    }
    report("MariaDB KILL CONNECTION -> detected_at", ms);

    // SIGKILL of mariadbd: the kernel closes its sockets once the process
    // is torn down (its memory first), which takes a while of its own: a
    // raw client of the server sees when they close.
    let (mut ms, mut after_close) = (Vec::new(), Vec::new());
    for n in 1..=MARIADB_DRILLS {
        db.one_session_of(user, None).await;
        let watcher = socket_watcher(db.port, true);
        let killed = db.kill();
        let closed = watcher.join().expect("the socket watcher");
        let detected = detection_ms(&agent, "orders", MARIADB_DRILLS + n, killed).await;
        ms.push(detected);
        after_close.push(detected - secs_between(killed.wall, closed.wall) * 1000.0);
        db.start_again().await;
        agent.wait_up("orders", true, Duration::from_secs(10)).await;
    }
    report("SIGKILL mariadbd -> detected_at", ms);
    report("  its sockets closed -> detected_at", after_close);
}

/// A raw TCP client of the server on `port`, on a thread of its own (the
/// harness blocks while it kills): the moment it reads EOF is when the
/// server closed its connections (after SIGKILL: when the kernel did). It
/// never logs in; `greeting` says the server speaks first (MySQL), which
/// it reads before it watches.
fn socket_watcher(port: u16, greeting: bool) -> std::thread::JoinHandle<Moment> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the server");
    if greeting {
        let mut first = [0u8; 512];
        let _ = s.read(&mut first).expect("the server's greeting");
    }
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        Moment::now()
    })
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name (which may contain spaces) start at
    // field 3; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("comm end") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// CPU time of the live threads of a process in nanoseconds (sum of
/// `/proc/PID/task/*/schedstat`): finer than clock ticks, but blind to
/// threads that exited in between.
fn cpu_ns_live_threads(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("/proc/PID/task")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn clock_ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

#[tokio::test]
#[ignore = "benchmark: cargo test --release --test bench -- --ignored --nocapture"]
async fn footprint_four_redis_targets() {
    let mut servers = Vec::new();
    for i in 0..4 {
        servers.push(RedisServer::start_with(&format!("redis{i}"), &[], None).await);
    }
    // The built-in defaults: probe every 1 s.
    let mut b = Agent::builder().log("info");
    for (i, s) in servers.iter().enumerate() {
        b = b.target(&format!("cache{i}"), &s.url());
    }
    let agent = b.start().await;
    for i in 0..4 {
        agent
            .wait_up(&format!("cache{i}"), true, Duration::from_secs(10))
            .await;
    }
    // Warm-up: a few probes per target and a few scrapes, as in service.
    for _ in 0..5 {
        agent.metrics().await;
        agent.api().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let pid = agent.pid();
    let rss_start = proc_status_kib(pid, "VmRSS");

    let window = Duration::from_secs(30);
    let ticks0 = cpu_ticks(pid);
    let ns0 = cpu_ns_live_threads(pid);
    let t0 = std::time::Instant::now();
    let mut scrapes = 0;
    while t0.elapsed() < window {
        tokio::time::sleep(Duration::from_secs(10).min(window.saturating_sub(t0.elapsed()))).await;
        agent.metrics().await; // a Prometheus scrape every 10 s
        scrapes += 1;
    }
    let ticks1 = cpu_ticks(pid);
    let ns1 = cpu_ns_live_threads(pid);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu_s = (ticks1 - ticks0) as f64 / clock_ticks_per_sec();
    let rss_end = proc_status_kib(pid, "VmRSS");
    let hwm = proc_status_kib(pid, "VmHWM");
    let probes = agent
        .metrics()
        .await
        .sum("dbcanary_probes_total", &[("result", "ok")]);

    println!(
        "agent footprint, 4 Redis targets, 1 s probe interval, {scrapes} scrapes in the window:"
    );
    println!(
        "  VmRSS after warm-up  {:.1} MiB",
        rss_start as f64 / 1024.0
    );
    println!(
        "  VmRSS after {elapsed:.0} s     {:.1} MiB (peak VmHWM {:.1} MiB)",
        rss_end as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "  CPU (utime+stime)    {cpu_s:.2} s over {elapsed:.1} s = {:.3} % of one core",
        cpu_s / elapsed * 100.0
    );
    let sched_s = ns1.saturating_sub(ns0) as f64 / 1e9;
    println!(
        "  CPU (schedstat)      {:.1} ms over {elapsed:.1} s = {:.4} % of one core",
        sched_s * 1000.0,
        sched_s / elapsed * 100.0
    );
    println!("  probes ok so far     {probes}");
}

/// The summary view of the API.
async fn summary(agent: &Agent) -> Value {
    let r = agent.get("/api/v1/targets?view=summary").await;
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).expect("summary JSON")
}

fn count(summary: &Value, state: &str) -> u64 {
    summary["states"][state].as_u64().unwrap_or(0)
}

/// A GET of the agent, timed: `(milliseconds, body bytes)`.
async fn timed(agent: &Agent, path: &str) -> (f64, usize) {
    let t = std::time::Instant::now();
    let r = agent.get(path).await;
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    (t.elapsed().as_secs_f64() * 1000.0, r.body.len())
}

/// `GLIBC_TUNABLES` as the systemd unit sets it.
fn unit_tunables() -> String {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/dbcanary.service"
    ))
    .expect("config/dbcanary.service");
    unit.lines()
        .find_map(|l| l.strip_prefix("Environment=GLIBC_TUNABLES="))
        .expect("the unit sets GLIBC_TUNABLES")
        .to_string()
}

/// How many targets the scale benchmark runs (`DBCANARY_BENCH_TARGETS`,
/// default 10,000), spread over four redis-servers.
fn scale_targets() -> usize {
    std::env::var("DBCANARY_BENCH_TARGETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// 10,000 Redis targets at the default 1 s probe interval over four
/// redis-servers, on one agent: start-up until every target is up, memory
/// and CPU with a scrape every 10 s and the API polled every second,
/// `/metrics` and API answer times and sizes, false outages (there must be
/// none), then one server killed (a quarter of the targets lost at once)
/// and started again: how long until the API shows them all down, and all
/// up again, and the attempt rate meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test --release --test bench -- --ignored --nocapture ten_thousand"]
async fn ten_thousand_redis_targets() {
    let n = scale_targets();
    let per = n / 4;
    let maxclients = (per + 1000).to_string();
    let mut servers = Vec::new();
    for i in 0..4 {
        servers.push(
            RedisServer::start_with(&format!("redis{i}"), &["--maxclients", &maxclients], None)
                .await,
        );
    }
    let mut b = Agent::builder().log("warn");
    // The agent as installed: with the unit's allocator setting, unless
    // GLIBC_TUNABLES says otherwise (empty: glibc's defaults).
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_else(|_| unit_tunables());
    println!("GLIBC_TUNABLES={tunables:?}");
    b = b.env("GLIBC_TUNABLES", &tunables);
    for i in 0..n {
        b = b.target(&format!("t{i:05}"), &servers[i % 4].url());
    }
    let t0 = std::time::Instant::now();
    let agent = b.start().await;
    let ready_s = t0.elapsed().as_secs_f64();
    let up_s = poll_until(Duration::from_secs(120), "every target up", async || {
        let s = summary(&agent).await;
        if count(&s, "up") == n as u64 {
            Ok(t0.elapsed().as_secs_f64())
        } else {
            Err(s["states"].clone())
        }
    })
    .await;
    for s in &servers {
        let ours = s
            .clients()
            .await
            .expect("CLIENT LIST")
            .iter()
            .filter(|c| c.name.starts_with("dbcanary:"))
            .count();
        assert_eq!(ours, per, "one connection per target on {}", s.name);
    }
    let rss_up = proc_status_kib(agent.pid(), "VmRSS") as f64 / 1024.0;
    let started = agent.metrics().await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Steady state: a scrape every 10 s, the API polled every second.
    let pid = agent.pid();
    let window = Duration::from_secs(30);
    let (ticks0, w0) = (cpu_ticks(pid), std::time::Instant::now());
    let (mut scrapes, mut polls) = (Vec::new(), Vec::new());
    let mut full = (0.0, 0);
    let mut one = 0.0f64;
    let mut i = 0;
    while w0.elapsed() < window {
        if i % 10 == 0 {
            scrapes.push(timed(&agent, "/metrics").await);
            full = timed(&agent, "/api/v1/targets").await;
        }
        for path in [
            "/api/v1/targets?state=down",
            "/api/v1/targets?view=summary",
            "/api/v1/targets?store=redis&state=connecting",
        ] {
            polls.push(timed(&agent, path).await.0);
        }
        one = one.max(
            timed(&agent, &format!("/api/v1/targets?target=t{:05}", i % n))
                .await
                .0,
        );
        i += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let cpu = (cpu_ticks(pid) - ticks0) as f64 / clock_ticks_per_sec() / w0.elapsed().as_secs_f64();
    let rss = proc_status_kib(pid, "VmRSS") as f64 / 1024.0;
    let hwm = proc_status_kib(pid, "VmHWM") as f64 / 1024.0;
    let steady = summary(&agent).await;
    let m = agent.metrics().await;
    let lag = m.value_or_zero("dbcanary_agent_scheduling_lag_seconds", &[]);
    let retried = m.value_or_zero("dbcanary_agent_late_timeouts_total", &[]);
    let disconnects = m.sum("dbcanary_disconnects_total", &[]);
    let per_target = m.samples.len() as f64 / n as f64;

    // A quarter of the targets lost at once, and back.
    let mut lost = servers.remove(0);
    // Connected after every canary: the last of the server's sockets the
    // kernel closes (a process' files close in the order of their numbers).
    let watcher = socket_watcher(lost.port, false);
    let killed = lost.kill();
    let kernel_ms = secs_between(killed.wall, watcher.join().expect("watcher").wall) * 1000.0;
    let seen_down_ms = poll_until(
        Duration::from_secs(30),
        "the lost targets down",
        async || {
            let s = summary(&agent).await;
            if count(&s, "down") >= per as u64 {
                Ok(secs_between(killed.wall, std::time::SystemTime::now()) * 1000.0)
            } else {
                Err(s["states"].clone())
            }
        },
    )
    .await;
    let down: Value = serde_json::from_str(&agent.get("/api/v1/targets?state=down").await.body)
        .expect("down targets");
    let detected_ms = down["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| secs_between(killed.wall, parse_time(&t["current_outage"]["since"])) * 1000.0)
        .fold(0.0f64, f64::max);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let back = lost.start_again().await;
    let all_up_ms = poll_until(
        Duration::from_secs(60),
        "every target up again",
        async || {
            let s = summary(&agent).await;
            if count(&s, "up") == n as u64 {
                Ok(secs_between(back.wall, std::time::SystemTime::now()) * 1000.0)
            } else {
                Err(s["states"].clone())
            }
        },
    )
    .await;
    let api: Value = serde_json::from_str(&agent.get("/api/v1/targets?store=redis").await.body)
        .expect("targets");
    let reports: Vec<&Value> = api["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["last_outage"].as_object().map(|_| &t["last_outage"]))
        .collect();
    let restored: Vec<f64> = reports
        .iter()
        .map(|r| secs_between(back.wall, parse_time(&r["ended_at"])) * 1000.0)
        .collect();
    let restored_ms = restored.iter().copied().fold(0.0f64, f64::max);
    let attempts: u64 = reports
        .iter()
        .map(|r| r["attempts"].as_u64().unwrap())
        .sum();
    // Attempts go on until the last target is back.
    let outage_s = (secs_between(killed.wall, back.wall) + restored_ms / 1000.0).max(0.001);
    let after = summary(&agent).await;

    println!("{n} Redis targets at 1 s over 4 redis-servers, one agent (release):");
    println!("  /readyz after            {ready_s:.2} s");
    println!("  every target up after    {up_s:.2} s");
    println!(
        "  VmRSS                    {rss_up:.1} MiB once up (before any scrape), {rss:.1} MiB after the window (peak VmHWM {hwm:.1} MiB)"
    );
    let causes = |m: &support::Metrics| {
        ["closed", "reset", "timeout", "error", "unreachable"]
            .map(|c| {
                format!(
                    "{c} {}",
                    m.sum("dbcanary_disconnects_total", &[("cause", c)])
                )
            })
            .join(", ")
    };
    println!("  disconnects by start-up   {}", causes(&started));
    let results = [
        "refused",
        "timeout",
        "dns",
        "tls",
        "auth",
        "not_ready",
        "protocol",
        "io",
    ]
    .map(|r| {
        format!(
            "{r} {}",
            started.sum("dbcanary_connect_attempts_total", &[("result", r)])
        )
    })
    .join(", ");
    println!("  failed attempts by start-up {results}");
    println!("  disconnects by the end    {}", causes(&m));
    println!(
        "  CPU                      {:.1} % of one core",
        cpu * 100.0
    );
    let (ms, bytes): (Vec<f64>, Vec<usize>) = scrapes.iter().copied().unzip();
    report("/metrics", ms);
    println!(
        "  /metrics size            {:.1} MB, {per_target:.1} series per target",
        *bytes.iter().max().unwrap() as f64 / 1e6
    );
    report("/api/v1/targets (filters, summary)", polls);
    println!("  /api/v1/targets?target=  max {one:.1} ms");
    println!(
        "  /api/v1/targets (all)    {:.0} ms, {:.1} MB",
        full.0,
        full.1 as f64 / 1e6
    );
    println!(
        "  false outages            {} ended, {} down, {disconnects} disconnects; lag max {:.0} ms, {retried} late timeouts retried",
        steady["outages"],
        count(&steady, "down"),
        lag * 1000.0
    );
    println!(
        "  mass loss of {per}: all down on the API {seen_down_ms:.0} ms after the kill (detected within {detected_ms:.0} ms; the kernel closed the server's last socket {kernel_ms:.0} ms after the kill)"
    );
    report("  restored after serving again", restored);
    println!(
        "  all up on the API {all_up_ms:.0} ms after the server served again (last restored {restored_ms:.0} ms)"
    );
    println!(
        "  {attempts} attempts for the lost targets in {outage_s:.2} s (kill to the last restore) = {:.0}/s (budget 10000/s); outages ended overall {}",
        attempts as f64 / outage_s,
        after["outages"]
    );
}
