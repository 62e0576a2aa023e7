//! Hostile endpoints of every kind next to a healthy store: every attempt is
//! a timeout or a classified error, the agent's memory stays bounded, and
//! the healthy target keeps its rhythm.

mod support;

use std::time::{Duration, Instant};

use support::hostile::{self, Hostile};
use support::redis::RedisServer;
use support::{Agent, Pacing, poll_until};

/// Probing pace of this test: every target at 200 ms, the built-in
/// reconnect pacing (the fine cadence only for refused and unanswered
/// attempts).
const PACE: Pacing = Pacing::every("200ms", "500ms").builtin_backoff();

/// (store URL scheme, what the store's client says first or expects)
fn huge_for(scheme: &str) -> Hostile {
    match scheme {
        "redis" => Hostile::huge_redis(),
        "postgresql" => Hostile::huge_postgres(),
        "mysql" => Hostile::huge_mysql(),
        "mongodb" => Hostile::huge_mongodb(),
        _ => Hostile::huge_http(),
    }
}

/// The URL of a target of `scheme` at `port`.
fn url(scheme: &str, port: u16) -> String {
    match scheme {
        "postgresql" => format!("postgresql://canary@127.0.0.1:{port}/db?sslmode=disable"),
        "mysql" => format!("mysql://canary@127.0.0.1:{port}/?ssl-mode=disabled"),
        "mongodb" => format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
        "http" => format!("http://127.0.0.1:{port}/health"),
        _ => format!("{scheme}://127.0.0.1:{port}"),
    }
}

#[tokio::test]
async fn forty_hostile_endpoints_cost_bounded_memory_and_classified_errors() {
    let healthy = RedisServer::start().await;
    let mut b = Agent::builder()
        .toml(&PACE.toml())
        .target("healthy", &healthy.url());
    let mut hostile_targets = Vec::new();
    for scheme in ["redis", "postgresql", "mysql", "mongodb", "http"] {
        let kinds = [
            ("huge", huge_for(scheme)),
            ("silent", Hostile::Silent),
            ("garbage", Hostile::Garbage),
            ("close", Hostile::Close),
            ("dribble", Hostile::Dribble),
        ];
        for (what, kind) in kinds {
            // Two of each: 50 hostile targets in all.
            for n in 0..2 {
                let port = hostile::start(kind.clone()).await;
                let name = format!("{scheme}-{what}-{n}");
                b = b.target(&name, &url(scheme, port));
                hostile_targets.push((name, scheme, what));
            }
        }
    }
    let mut agent = b.start().await;
    agent
        .wait_up("healthy", true, Duration::from_secs(10))
        .await;
    let start = Instant::now();
    let probes = |m: &support::Metrics| {
        m.value_or_zero(
            "dbcanary_probes_total",
            &[("target", "healthy"), ("result", "ok")],
        )
    };
    let before = probes(&agent.metrics().await);
    let mut peak = 0.0f64;
    while start.elapsed() < Duration::from_secs(12) {
        peak = peak.max(hostile::rss_mib(agent.pid()));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    agent.assert_alive();
    let m = agent.metrics().await;
    let elapsed = start.elapsed().as_secs_f64();
    let rhythm = (probes(&m) - before) / (elapsed / 0.2);
    assert!(
        rhythm > 0.7,
        "the healthy target probed {:.0} % of its intervals",
        rhythm * 100.0
    );
    assert_eq!(
        m.value(
            "dbcanary_disconnects_total",
            &[("target", "healthy"), ("cause", "timeout")]
        ),
        Some(0.0)
    );
    eprintln!(
        "agent RSS peak {peak:.1} MiB, healthy rhythm {:.0} %",
        rhythm * 100.0
    );
    assert!(peak < 64.0, "agent RSS peaked at {peak:.1} MiB");

    // Every hostile endpoint is a timeout or a classified error, never ok;
    // a huge declared message or garbage is `protocol` for the stores whose
    // protocol the agent reads itself.
    for (name, scheme, what) in &hostile_targets {
        let ok = m.value_or_zero(
            "dbcanary_connect_attempts_total",
            &[("target", name), ("result", "ok")],
        );
        // (An app answering 200 with a 100 MB body is healthy: the check
        // reads the first MiB of it, which the memory bound above proves.)
        if (*scheme, *what) != ("http", "huge") {
            assert_eq!(ok, 0.0, "{name} connected");
        }
        let attempts = m.sum("dbcanary_connect_attempts_total", &[("target", name)]);
        assert!(attempts >= 1.0, "{name}: no attempt");
        if *what == "huge" && ["redis", "postgresql", "mysql"].contains(scheme) {
            let protocol = m.value_or_zero(
                "dbcanary_connect_attempts_total",
                &[("target", name), ("result", "protocol")],
            );
            assert!(
                protocol >= 1.0,
                "{name}: huge replies are protocol errors\n{}",
                m.text
            );
        }
    }
    // The canary task of every target still runs.
    poll_until(
        Duration::from_secs(5),
        "the API lists every target",
        async || {
            let targets = agent.api().await;
            let n = targets["targets"].as_array().map_or(0, Vec::len);
            support::check(n == hostile_targets.len() + 1, targets)
        },
    )
    .await;
}
