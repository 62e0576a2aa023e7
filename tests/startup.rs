//! An operator's first hour: what the agent says at start and what its
//! commands answer — discovery's warnings reach `run` and `config check`,
//! a host name is a listen address, `check --target` with a wrong name
//! lists the right ones, JSON logs name the target as the metrics do, and
//! a URL that cannot follow a failover earns a note.

mod support;

use std::time::Duration;

use support::mongo::ReplicaSet;
use support::redis::RedisServer;
use support::{Agent, Pacing, check, dbcanary_command, events, free_port, http_get, poll_until};

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn discovery_warnings_reach_config_check_and_the_start_up_log() {
    let redis = RedisServer::start().await;
    let out = dbcanary_command()
        .env_clear()
        .env("BAD_REDIS_URL", "notaurl-hunter2")
        .env("ORDERS_MYSQL_URL", redis.url())
        .args(["config", "check"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: discovery: BAD_REDIS_URL skipped"),
        "{err}"
    );
    assert!(
        err.contains("ORDERS_MYSQL_URL holds a redis URL, not a mysql one"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("configuration OK (1 target)"), "{err}");

    // `run`, with discovery on (the harness's agents turn it off).
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dbcanary.toml");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "[agent]\nlisten = \"127.0.0.1:{port}\"\n{}",
            support::target_toml("cache", &redis.url())
        ),
    )
    .unwrap();
    let log = dir.path().join("agent.log");
    let mut run = dbcanary_command()
        .env_clear()
        .env("BAD_REDIS_URL", "notaurl-hunter2")
        .arg("--config")
        .arg(&config)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    poll_until(LIMIT, "the warning in the start-up log", async || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        check(text.contains("discovery: BAD_REDIS_URL skipped"), text)
    })
    .await;
    let _ = run.kill();
    let _ = run.wait();
    assert!(!std::fs::read_to_string(&log).unwrap().contains("hunter2"));
}

#[tokio::test]
async fn a_host_name_listens_and_check_names_the_targets_it_knows() {
    let port = free_port();
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dbcanary.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nlisten = \"localhost:{port}\"\n[discovery]\nenv = false\n{}{}",
            support::target_toml("cache", &redis.url()),
            support::target_toml("sessions", &redis.url())
        ),
    )
    .unwrap();
    let out = dbcanary_command()
        .args(["check", "--target", "nosuch", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no target named \"nosuch\"; the targets are: cache, sessions"),
        "{err}"
    );

    let mut run = dbcanary_command()
        .arg("--config")
        .arg(&config)
        .spawn()
        .unwrap();
    let addr = ([127, 0, 0, 1], port).into();
    poll_until(LIMIT, "the agent on localhost", async || {
        let r = http_get(addr, "/healthz").await;
        check(
            matches!(&r, Ok(r) if r.status == 200),
            r.map(|r| r.status).ok(),
        )
    })
    .await;
    let _ = run.kill();
    let _ = run.wait();
}

#[tokio::test]
async fn json_logs_name_the_target_as_the_metrics_do() {
    let redis = RedisServer::start().await;
    let agent = Agent::builder()
        .pacing(Pacing::FAST)
        .agent_toml("log_format = \"json\"\n")
        .target("cache", &redis.url())
        .start_up(LIMIT)
        .await;
    let log = agent.log();
    let line = log
        .lines()
        .find(|l| l.contains("\"canary started\""))
        .unwrap_or_else(|| panic!("no start line:\n{log}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["target"], "cache", "{line}");
    assert!(v.get("target_name").is_none(), "{line}");
}

/// Redis reached directly on a replica, and a MongoDB URL naming one member
/// of a replica set without `replicaSet`: neither follows a failover, and
/// the agent says so once, on the target.
#[tokio::test]
async fn urls_that_cannot_follow_a_failover_earn_a_note() {
    let master = RedisServer::start().await;
    let port = master.port.to_string();
    let replica =
        RedisServer::start_with("replica", &["--replicaof", "127.0.0.1", &port], None).await;
    let rs = ReplicaSet::start(2).await;
    let member = format!("mongodb://{}/?directConnection=true", rs.hosts()[0]);
    let agent = Agent::builder()
        .pacing(Pacing::FAST)
        .target("cache", &replica.url())
        .target("catalog", &member)
        .start()
        .await;
    for (target, words) in [
        ("cache", "is a replica"),
        (
            "catalog",
            "no replicaSet, but the server is a member of replica set",
        ),
    ] {
        poll_until(LIMIT, &format!("the note on {target}"), async || {
            let t = agent.target(target).await;
            let notes: Vec<String> = events(&t, "notice")
                .iter()
                .filter_map(|e| e["message"].as_str().map(str::to_string))
                .collect();
            check(
                notes.iter().filter(|m| m.contains(words)).count() == 1,
                notes,
            )
        })
        .await;
    }
}
