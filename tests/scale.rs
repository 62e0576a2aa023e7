//! Many targets on one agent, small enough for the suite: 500 Redis targets
//! against one `redis-server`. Each has exactly one connection, `/metrics`
//! stays lint-clean with at most 40 series per target at the default
//! `metrics = "basic"`, and the API's filters and summary answer. The
//! 10,000-target figures come from `tests/bench.rs`, not from here.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use support::redis::RedisServer;
use support::{Agent, poll_until, promtool_check_metrics};

const TARGETS: usize = 500;

fn name(i: usize) -> String {
    format!("t{i:03}")
}

async fn json(agent: &Agent, path: &str) -> Value {
    let r = agent.get(path).await;
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", r.body))
}

/// The names of the targets an API answer lists.
fn names(v: &Value) -> Vec<String> {
    v["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_redis_targets_on_one_agent() {
    let redis = RedisServer::start().await;
    let mut b = Agent::builder().log("warn");
    for i in 0..TARGETS {
        b = b.target(&name(i), &redis.url());
    }
    let agent = b.start().await;
    poll_until(Duration::from_secs(60), "every target up", async || {
        let s = json(&agent, "/api/v1/targets?view=summary").await;
        if s["states"]["up"] == TARGETS {
            Ok(())
        } else {
            Err(s["states"].clone())
        }
    })
    .await;

    // Exactly one connection per target, each named after it.
    let clients = redis.clients().await.expect("CLIENT LIST");
    let mut per_target: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &clients {
        if let Some(t) = c.name.strip_prefix("dbcanary:") {
            *per_target.entry(t).or_default() += 1;
        }
    }
    assert_eq!(per_target.len(), TARGETS, "{per_target:?}");
    assert!(per_target.values().all(|n| *n == 1), "{per_target:?}");

    // /metrics: lint-clean, and few series per target.
    let body = agent.get("/metrics").await.body;
    promtool_check_metrics(&body);
    let m = support::Metrics::parse(&body);
    let mut series: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &m.samples {
        if let Some(t) = s.labels.get("target") {
            *series.entry(t).or_default() += 1;
        }
    }
    assert_eq!(series.len(), TARGETS);
    let most = series.values().max().copied().unwrap_or(0);
    assert!(most <= 40, "a target has {most} series");
    assert_eq!(m.sum("dbcanary_disconnects_total", &[]), 0.0, "no outage");
    assert!(
        m.value("dbcanary_agent_scheduling_lag_seconds", &[])
            .is_some()
    );

    // The API's filters and summary.
    let one = json(&agent, "/api/v1/targets?target=t007").await;
    assert_eq!(names(&one), ["t007"]);
    assert_eq!(one["targets"][0]["state"], "up");
    assert_eq!(
        names(&json(&agent, "/api/v1/targets?state=up").await).len(),
        TARGETS
    );
    assert!(names(&json(&agent, "/api/v1/targets?state=down").await).is_empty());
    assert!(names(&json(&agent, "/api/v1/targets?state=connecting").await).is_empty());
    let redis_up = json(&agent, "/api/v1/targets?store=redis&state=up").await;
    assert_eq!(names(&redis_up).len(), TARGETS);
    assert!(names(&json(&agent, "/api/v1/targets?store=mysql").await).is_empty());
    let s = json(&agent, "/api/v1/targets?view=summary").await;
    assert_eq!(s["targets"], TARGETS);
    assert_eq!(s["stores"]["redis"]["up"], TARGETS);
    assert_eq!(s["states"]["down"], 0);
    assert_eq!(s["in_outage"], 0);
    assert_eq!(s["down"], serde_json::json!([]));
    for bad in [
        "/api/v1/targets?state=sleeping",
        "/api/v1/targets?store=oracle",
        "/api/v1/targets?view=everything",
        "/api/v1/targets?colour=red",
    ] {
        assert_eq!(agent.get(bad).await.status, 400, "{bad}");
    }
}

/// A killed server's targets are down in the summary with their outage so
/// far, the longest first, and the others stay up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_lists_the_targets_down_with_their_outage() {
    let (up, mut lost) = (RedisServer::start().await, RedisServer::start().await);
    let mut b = Agent::builder().log("warn");
    for i in 0..20 {
        let server = if i % 2 == 0 { &up } else { &lost };
        b = b.target(&name(i), &server.url());
    }
    let agent = b.start().await;
    poll_until(Duration::from_secs(30), "every target up", async || {
        let s = json(&agent, "/api/v1/targets?view=summary").await;
        if s["states"]["up"] == 20 {
            Ok(())
        } else {
            Err(s)
        }
    })
    .await;
    lost.kill();
    let s = poll_until(Duration::from_secs(10), "10 targets down", async || {
        let s = json(&agent, "/api/v1/targets?view=summary").await;
        if s["states"]["down"] == 10 {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await;
    assert_eq!(s["states"]["up"], 10);
    assert_eq!(s["in_outage"], 10);
    let down = s["down"].as_array().unwrap();
    assert_eq!(down.len(), 10);
    for d in down {
        let n: usize = d["name"].as_str().unwrap()[1..].parse().unwrap();
        assert_eq!(n % 2, 1, "{d}");
        assert_eq!(d["store"], "redis");
        assert_eq!(d["state"], "down");
        assert!(d["outage_s"].as_f64().unwrap() >= 0.0, "{d}");
        assert!(d["since"].is_string() && d["cause"].is_string(), "{d}");
    }
    let lengths: Vec<f64> = down
        .iter()
        .map(|d| d["outage_s"].as_f64().unwrap())
        .collect();
    assert!(
        lengths.windows(2).all(|w| w[0] >= w[1]),
        "the longest outage first: {lengths:?}"
    );
    let filtered = json(&agent, "/api/v1/targets?state=down&store=redis").await;
    assert_eq!(names(&filtered).len(), 10);
}
