//! End-to-end: `dbcanary watch` against a real `redis-server` that the test
//! restarts, then Ctrl-C (SIGINT) for the summary.

mod support;

use std::time::Duration;

use support::redis::RedisServer;
use support::{Proc, Signal, check, dbcanary_command, poll_until};

#[tokio::test]
async fn watch_reports_a_restart_and_summarises_on_ctrl_c() {
    let mut redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = dbcanary_command();
    cmd.args(["watch", &redis.url(), "--interval", "200ms"]);
    let mut watch = Proc::spawn("watch", cmd, dir.path());

    let limit = Duration::from_secs(10);
    poll_until(limit, "watch to connect", async || {
        let out = watch.stdout_text();
        check(out.contains("connected to"), watch.tail(20))
    })
    .await;

    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await; // the restart's pause
    redis.start_again().await;
    poll_until(limit, "watch to see the server back", async || {
        let out = watch.stdout_text();
        check(out.contains("restored after"), watch.tail(20))
    })
    .await;

    watch.signal(Signal::Int);
    let status = watch
        .wait_timeout(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("watch still running 5 s after SIGINT:\n{}", watch.tail(20)));
    assert_eq!(status.code(), Some(0), "{}", watch.tail(20));

    let out = watch.stdout_text();
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
