//! End-to-end: `dbcanary watch` against a real `redis-server` that the test
//! restarts, then Ctrl-C (SIGINT) for the summary.

mod support;

use std::time::Duration;

use support::Watch;
use support::redis::RedisServer;

#[tokio::test]
async fn watch_reports_a_restart_and_summarises_on_ctrl_c() {
    let mut redis = RedisServer::start().await;
    let mut watch = Watch::start(&[&redis.url(), "--interval", "200ms"]);

    let limit = Duration::from_secs(10);
    watch
        .wait_for(limit, "watch to connect", |out| {
            out.contains("connected to")
        })
        .await;

    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await; // the restart's pause
    redis.start_again().await;
    watch
        .wait_for(limit, "watch to see the server back", |out| {
            out.contains("restored after")
        })
        .await;

    let status = watch
        .interrupt(
            Duration::from_secs(5),
            "watch still running 5 s after SIGINT",
        )
        .await;
    assert_eq!(status.code(), Some(0), "{}", watch.tail());

    let out = watch.stdout();
    let (events, summary) = out
        .split_once("summary after")
        .unwrap_or_else(|| panic!("no summary on Ctrl-C:\n{out}"));
    assert!(
        events.lines().any(|l| l.contains("lost (closed)")),
        "a line for the loss:\n{out}"
    );
    assert!(
        events
            .lines()
            .any(|l| l.contains("restored after") && l.contains(" restart (")),
        "a line for the restore, classified as a restart:\n{out}"
    );
    let endpoint = redis.addr();
    assert!(
        summary.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() >= 3
                && w[0] == endpoint
                && w[1] == "1"
                && w[2].starts_with("outage")
                && !w[2].starts_with("outages")
        }),
        "the summary lists one outage for {endpoint}:\n{out}"
    );
    assert!(
        summary
            .lines()
            .any(|l| l.contains("lost (closed), restored after") && l.ends_with("restart")),
        "the summary lists the drill:\n{out}"
    );
}
