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
            "dbcanary_outages_total",
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

/// A reload that changes a target (its interval, its password) restarts its
/// canary, and the target stays watched: its series and API entry remain,
/// its counters continue, and a loss right after is seen.
#[tokio::test]
async fn a_changed_target_keeps_its_series_and_is_watched_without_a_gap() {
    let a = RedisServer::start().await;
    let agent = Agent::start_up(Pacing::FAST, &[("cache", &a.url()[..])], LIMIT).await;
    let old = a.wait_canary("cache", LIMIT).await;
    let before = agent.metrics().await.value_or_zero(
        "dbcanary_connect_attempts_total",
        &[("target", "cache"), ("result", "ok")],
    );

    let text = agent
        .config_text
        .replace("interval = \"200ms\"", "interval = \"250ms\"");
    assert_ne!(text, agent.config_text, "the test changes the interval");
    std::fs::write(&agent.config, &text).unwrap();
    signal(agent.pid(), Signal::Hup);
    let new = a.wait_new_canary("cache", Some(old), LIMIT).await;
    // The old canary's end comes after the new one started: the target
    // must still be there once both happened.
    a.wait_canaries("cache", 1, LIMIT, "only the new canary connection")
        .await;
    poll_until(
        LIMIT,
        "cache up with its series after the reload",
        async || {
            let m = agent.metrics().await;
            let up = m.value("dbcanary_up", &[("target", "cache")]);
            let ok = m.value_or_zero(
                "dbcanary_connect_attempts_total",
                &[("target", "cache"), ("result", "ok")],
            );
            check(up == Some(1.0) && ok >= before + 1.0, (up, ok))
        },
    )
    .await;
    let t = agent.target("cache").await;
    assert_eq!(t["state"], "up", "{t}");

    // Still watched: a loss now is seen and counted.
    a.client_kill(new).await;
    agent
        .wait_count(OUTAGES, "cache", "network", 1.0, LIMIT)
        .await;
    agent.wait_up("cache", true, LIMIT).await;
}

/// A reload that would stop watching everything — an empty file (a config
/// tool that truncates before it writes), or one that keeps none of the
/// running targets — is refused with the reason; the running targets stay.
#[tokio::test]
async fn a_reload_that_drops_every_target_is_refused() {
    let a = RedisServer::start().await;
    let mut agent = Agent::start_up(Pacing::FAST, &[("cache", &a.url()[..])], LIMIT).await;
    let conn = a.wait_canary("cache", LIMIT).await;
    let cases = [
        (String::new(), "configures no target"),
        (
            agent
                .config_text
                .replace("name = \"cache\"", "name = \"renamed\""),
            "keeps none of the 1 running targets",
        ),
    ];
    for (n, (text, reason)) in cases.iter().enumerate() {
        std::fs::write(&agent.config, text).unwrap();
        signal(agent.pid(), Signal::Hup);
        poll_until(LIMIT, "the reload refused with its reason", async || {
            let log = agent.log();
            let refusals = log.matches("configuration reload refused").count();
            check(refusals > n && log.contains(reason), refusals)
        })
        .await;
    }
    agent.assert_alive();
    let m = agent.metrics().await;
    assert_eq!(m.value("dbcanary_up", &[("target", "cache")]), Some(1.0));
    assert!(!m.text.contains("target=\"renamed\""), "{}", m.text);
    assert!(
        !m.text.contains("target=\"redis\""),
        "no local defaults: {}",
        m.text
    );
    assert_eq!(
        a.canary_clients("cache").await.unwrap()[0].id,
        conn,
        "a refused reload touches nothing"
    );
}

/// A fresh install watches the local default ports; the first real targets
/// written into its file are applied by a reload (they replace the
/// defaults, which is no "keeps none of the running targets").
#[tokio::test]
async fn a_reload_replaces_the_local_defaults_with_the_first_targets() {
    let a = RedisServer::start().await;
    let mut agent = Agent::builder().pacing(Pacing::FAST).start().await;
    poll_until(LIMIT, "the local defaults watched", async || {
        let m = agent.metrics().await;
        check(m.text.contains("target=\"redis\""), m.text.len())
    })
    .await;
    let text = format!("{}{}", agent.config_text, target_toml("cache", &a.url()));
    std::fs::write(&agent.config, text).unwrap();
    signal(agent.pid(), Signal::Hup);
    agent.wait_up("cache", true, LIMIT).await;
    let m = agent.metrics().await;
    assert!(
        !m.text.contains("target=\"redis\""),
        "the local defaults are gone: {}",
        m.text
    );
    agent.assert_alive();
    assert!(
        !agent.log().contains("configuration reload refused"),
        "{}",
        agent.log()
    );
}
