//! End-to-end: the agent following a Redis master through real Sentinel
//! processes (one master, one replica, three sentinels) across a failover.

mod support;

use std::time::Duration;

use support::redis::SentinelSetup;
use support::{Agent, Metrics, Pacing, events, poll_until};

/// The `dbcanary_server_info` series of a target as `(address, role)`.
fn server_info(m: &Metrics, target: &str) -> Vec<(String, String)> {
    m.series("dbcanary_server_info", &[("target", target)])
        .iter()
        .map(|s| (s.labels["address"].clone(), s.labels["role"].clone()))
        .collect()
}

/// SIGKILL of the master: Sentinel promotes the replica, the agent hears
/// `+switch-master`, reconnects to the new master, and says so everywhere.
#[tokio::test]
async fn sentinel_failover_moves_the_canary_to_the_new_master() {
    let mut setup = SentinelSetup::start().await;
    let targets = [("sessions", &setup.url()[..])];
    let agent = Agent::start_up(Pacing::FAST, &targets, Duration::from_secs(10)).await;

    let m = agent.metrics().await;
    assert_eq!(
        server_info(&m, "sessions"),
        vec![(setup.master.addr(), "primary".to_string())],
        "the master answers first"
    );
    setup
        .master
        .wait_canary("sessions", Duration::from_secs(5))
        .await;
    let old_master = setup.master.addr();
    let new_master = setup.replica.addr();

    setup.master.kill();

    let sentinel = [("target", "sessions"), ("source", "sentinel")];
    let limit = Duration::from_secs(30);
    agent
        .wait_at_least("dbcanary_failovers_total", &sentinel, 1.0, limit)
        .await;
    let t = poll_until(limit, "the outage to end on the new master", async || {
        let t = agent.target("sessions").await;
        if t["outages"] == 1 && t["state"] == "up" {
            Ok(t)
        } else {
            Err(format!("{t}\n{}", setup.logs()))
        }
    })
    .await;

    let o = &t["last_outage"];
    assert_eq!(o["kind"], "failover", "last outage: {o}");
    assert_eq!(o["before"]["address"], old_master.as_str(), "{o}");
    assert_eq!(o["after"]["address"], new_master.as_str(), "{o}");
    assert_eq!(t["identity"]["role"], "primary");
    assert_eq!(t["identity"]["address"], new_master.as_str());

    let announced = events(&t, "failover");
    let from_sentinel = announced
        .iter()
        .find(|e| e["source"] == "sentinel")
        .unwrap_or_else(|| panic!("no failover event from Sentinel: {t}"));
    assert!(
        from_sentinel["from"]
            .as_str()
            .unwrap()
            .contains(&old_master)
            && from_sentinel["to"].as_str().unwrap().contains(&new_master),
        "{from_sentinel}"
    );

    let m = agent.metrics().await;
    assert_eq!(
        server_info(&m, "sessions"),
        vec![(new_master.clone(), "primary".to_string())],
        "server_info names the former replica, and the old series is gone:\n{}",
        m.text
    );
    assert!(m.value("dbcanary_failovers_total", &sentinel).unwrap() >= 1.0);
    assert_eq!(
        m.value(
            "dbcanary_failovers_total",
            &[("target", "sessions"), ("source", "outage")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value(
            "dbcanary_outages_total",
            &[("target", "sessions"), ("kind", "failover")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value("dbcanary_restarts_total", &[("target", "sessions")]),
        Some(0.0)
    );
    assert_eq!(m.value("dbcanary_up", &[("target", "sessions")]), Some(1.0));
    // The canary now sits on the new master, once.
    setup
        .replica
        .wait_canary("sessions", Duration::from_secs(5))
        .await;
}
