//! SIGHUP reload against real Redis servers: added targets start, removed
//! ones stop and lose their series, unchanged ones keep their connection and
//! their counters, and a bad new configuration is refused while the old one
//! keeps running.

mod support;

use std::time::Duration;

use support::redis::RedisServer;
use support::{Agent, OUTAGES, Pacing, Signal, check, poll_until, signal, target_toml};

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn sighup_applies_added_removed_and_unchanged_targets() {
    let a = RedisServer::start().await;
    let b = RedisServer::start().await;
    let targets = [("keep", &a.url()[..]), ("gone", &b.url())];
    let mut agent = Agent::start_up(Pacing::FAST, &targets, LIMIT).await;

    // Give "keep" an outage so it has a counter worth keeping.
    let first = a.canary_clients("keep").await.unwrap();
    assert_eq!(first.len(), 1, "one canary connection: {first:?}");
    a.query::<()>(&["CLIENT", "KILL", "ID", &first[0].id.to_string()])
        .await
        .unwrap();
    agent
        .wait_count(OUTAGES, "keep", "network", 1.0, LIMIT)
        .await;
    agent.wait_up("keep", true, LIMIT).await;
    let keep_conn = a.canary_clients("keep").await.unwrap();
    assert_eq!(keep_conn.len(), 1);

    // Remove "gone", add "added"; "keep" unchanged.
    let text = agent
        .config_text
        .replace(&target_toml("gone", &b.url()), "")
        + &target_toml("added", &b.url());
    std::fs::write(&agent.config, &text).unwrap();
    signal(agent.pid(), Signal::Hup);

    poll_until(LIMIT, "added up, gone without series", async || {
        let m = agent.metrics().await;
        let added = m.value("dbcanary_up", &[("target", "added")]);
        let gone = m.text.contains("target=\"gone\"");
        check(added == Some(1.0) && !gone, (added, gone))
    })
    .await;
    let api = agent.api().await;
    let names: Vec<&str> = api["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["added", "keep"], "API after reload");
    assert!(
        b.canary_clients("gone").await.unwrap().is_empty(),
        "the removed target's connection is closed"
    );
    let after = a.canary_clients("keep").await.unwrap();
    assert_eq!(
        after.iter().map(|c| c.id).collect::<Vec<_>>(),
        keep_conn.iter().map(|c| c.id).collect::<Vec<_>>(),
        "the unchanged target keeps its server-side connection"
    );
    let m = agent.metrics().await;
    assert_eq!(
        m.value(
            "dbcanary_outage_duration_seconds_count",
            &[("target", "keep"), ("kind", "network")]
        ),
        Some(1.0),
        "the unchanged target keeps its counters"
    );

    // A bad configuration is refused; the running one stays.
    std::fs::write(&agent.config, "[agent\nbroken").unwrap();
    signal(agent.pid(), Signal::Hup);
    poll_until(LIMIT, "reload refused in the log", async || {
        let log = agent.log();
        check(log.contains("configuration reload refused"), ())
    })
    .await;
    agent.assert_alive();
    let m = agent.metrics().await;
    assert_eq!(m.value("dbcanary_up", &[("target", "keep")]), Some(1.0));
    assert_eq!(m.value("dbcanary_up", &[("target", "added")]), Some(1.0));
    assert_eq!(
        a.canary_clients("keep").await.unwrap()[0].id,
        keep_conn[0].id,
        "a refused reload touches nothing"
    );
}
