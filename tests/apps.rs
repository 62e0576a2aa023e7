//! End-to-end: application health targets (`http`) that depend on a real
//! `redis-server` the test restarts. The applications are the tiny axum
//! servers of `support::app`, each holding ONE Redis connection and
//! answering `/health` by PINGing through it: one reconnects after its
//! connection drops, one never does (the classic bug), one does not touch
//! Redis.

mod support;

use std::time::Duration;

use support::app::{Behaviour, app_toml, start_app};
use support::redis::RedisServer;
use support::{Agent, Pacing, Watch, dbcanary_command};

const UP_WITHIN: Duration = Duration::from_secs(10);

fn app_labels(app: &str) -> [(&'static str, &str); 2] {
    [("target", app), ("dependency", "cache")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_drill_measures_each_apps_recovery() {
    let mut redis = RedisServer::start().await;
    let good = start_app(Behaviour::Reconnects, &redis.url()).await;
    let broken = start_app(Behaviour::NeverReconnects, &redis.url()).await;
    let steady = start_app(Behaviour::Static, &redis.url()).await;
    let agent = Agent::builder()
        .pacing(Pacing::FAST)
        .target("cache", &redis.url())
        .toml(&app_toml("good", &good, &["cache"], "10s"))
        .toml(&app_toml("broken", &broken, &["cache"], "2s"))
        .toml(&app_toml("steady", &steady, &["cache"], "10s"))
        .start()
        .await;
    for t in ["cache", "good", "broken", "steady"] {
        agent.wait_up(t, true, UP_WITHIN).await;
    }
    // Series exist at zero before any drill, with store="http".
    let m = agent.metrics().await;
    for app in ["good", "broken", "steady"] {
        let l = [("target", app), ("store", "http"), ("dependency", "cache")];
        assert_eq!(
            m.value("dbcanary_app_not_recovered", &l),
            Some(0.0),
            "{}",
            m.text
        );
        assert_eq!(m.value("dbcanary_app_unrecovered_total", &l), Some(0.0));
        assert_eq!(
            m.value("dbcanary_app_recovery_lag_seconds_count", &l),
            Some(0.0)
        );
    }
    assert_eq!(
        m.value("dbcanary_up", &[("target", "good"), ("store", "http")]),
        Some(1.0)
    );

    redis.kill();
    // Both Redis apps notice (their /health fails); the static one does not.
    agent.wait_up("cache", false, UP_WITHIN).await;
    agent.wait_up("good", false, UP_WITHIN).await;
    agent.wait_up("broken", false, UP_WITHIN).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.start_again().await;

    for (app, seen) in [
        // The reconnecting app: one observation, well under its deadline.
        ("good", "dbcanary_app_recovery_lag_seconds_count"),
        // The broken app: flagged once its 2 s deadline has passed.
        ("broken", "dbcanary_app_not_recovered"),
        ("steady", "dbcanary_app_recovery_lag_seconds_count"),
    ] {
        let limit = Duration::from_secs(10);
        agent
            .wait_at_least(seen, &app_labels(app), 1.0, limit)
            .await;
    }

    let m = agent.metrics().await;
    let v = |name: &str, app: &str| m.value_or_zero(name, &app_labels(app));
    assert_eq!(v("dbcanary_app_recovery_lag_seconds_count", "good"), 1.0);
    let lag = v("dbcanary_app_recovery_lag_seconds_sum", "good");
    assert!(
        lag < 3.0,
        "good app lag {lag} s, well under its 10 s deadline"
    );
    assert_eq!(v("dbcanary_app_not_recovered", "good"), 0.0);
    assert_eq!(v("dbcanary_app_unrecovered_total", "good"), 0.0);

    assert_eq!(v("dbcanary_app_not_recovered", "broken"), 1.0);
    assert_eq!(v("dbcanary_app_unrecovered_total", "broken"), 1.0);
    assert_eq!(v("dbcanary_app_recovery_lag_seconds_count", "broken"), 0.0);
    assert_eq!(
        m.value("dbcanary_up", &[("target", "broken")]),
        Some(0.0),
        "the broken app is still unhealthy"
    );

    assert_eq!(v("dbcanary_app_recovery_lag_seconds_count", "steady"), 1.0);
    assert_eq!(
        v("dbcanary_app_recovery_lag_seconds_sum", "steady"),
        0.0,
        "an app that never went unhealthy has a lag of 0"
    );
    assert_eq!(v("dbcanary_app_not_recovered", "steady"), 0.0);

    // The API tells the last drill per app and dependency.
    let b = agent.target("broken").await;
    let drill = &b["dependencies"]["cache"];
    assert_eq!(drill["result"], "not_recovered", "{b}");
    assert!(drill["lag_s"].is_null(), "{b}");
    assert!(drill["dependency_outage_s"].as_f64().unwrap() > 0.0, "{b}");
    let g = agent.target("good").await;
    assert_eq!(g["dependencies"]["cache"]["result"], "recovered", "{g}");
    assert!(
        g["dependencies"]["cache"]["lag_s"].as_f64().unwrap() < 3.0,
        "{g}"
    );
    let s = agent.target("steady").await;
    assert_eq!(
        s["dependencies"]["cache"]["lag_s"].as_f64(),
        Some(0.0),
        "{s}"
    );
    // The store target itself has no dependencies block.
    assert!(agent.target("cache").await.get("dependencies").is_none());

    let log = agent.log();
    assert!(
        log.contains("application did not recover after its dependency came back"),
        "{log}"
    );
    assert!(
        log.contains("application recovered after its dependency came back"),
        "{log}"
    );
}

/// A dependency that is not a configured target is a config error naming
/// the application and the missing name.
#[tokio::test]
async fn depends_on_a_missing_target_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dbcanary.toml");
    std::fs::write(
        &config,
        "[[target]]\nname = \"shop\"\nurl = \"http://127.0.0.1:1/health\"\ndepends_on = [\"orders\"]\n",
    )
    .unwrap();
    let out = dbcanary_command()
        .arg("--config")
        .arg(&config)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("target[0].depends_on")
            && err.contains("\"shop\"")
            && err.contains("\"orders\""),
        "{err}"
    );
}

/// `dbcanary watch REDIS --app URL`: the summary says per drill how long
/// the store was gone and whether and when the app came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_summarises_app_recovery_per_drill() {
    let mut redis = RedisServer::start().await;
    // A second store the apps do not depend on (--depends-on names the
    // first): its drill is not one of theirs.
    let mut other = RedisServer::start().await;
    let good = start_app(Behaviour::Reconnects, &redis.url()).await;
    let broken = start_app(Behaviour::NeverReconnects, &redis.url()).await;
    let mut watch = Watch::start(&[
        &redis.url(),
        &other.url(),
        "--depends-on",
        &redis.url(),
        "--app",
        &good,
        "--app",
        &broken,
        "--interval",
        "200ms",
        "--recovery-deadline",
        "1s",
    ]);
    let limit = Duration::from_secs(10);
    watch
        .wait_for(limit, "watch to connect to all four", |out| {
            out.matches("connected to").count() >= 4
        })
        .await;

    redis.kill();
    other.kill();
    watch
        .wait_for(limit, "both stores and apps to be seen down", |out| {
            out.matches("lost (").count() >= 4
        })
        .await;
    redis.start_again().await;
    other.start_again().await;
    watch
        .wait_for(limit, "the verdict on both apps", |out| {
            out.contains("app recovered") && out.contains("app NOT recovered")
        })
        .await;

    let status = watch
        .interrupt(Duration::from_secs(5), "watch still running after SIGINT")
        .await;
    assert_eq!(status.code(), Some(0), "{}", watch.tail());
    let out = watch.stdout();
    let (_, summary) = out.split_once("summary after").expect("a summary");
    let app_addr = |u: &str| {
        u.trim_start_matches("http://")
            .trim_end_matches("/health")
            .to_string()
    };
    let section = |addr: &str| {
        summary
            .split(&format!("app {addr}:"))
            .nth(1)
            .unwrap_or_else(|| panic!("no section for app {addr}:\n{out}"))
            .lines()
            .nth(1)
            .unwrap_or("")
            .to_string()
    };
    let store = redis.addr();
    let g = section(&app_addr(&good));
    assert!(
        g.contains(&format!("{store} gone")) && g.contains("app recovered"),
        "{out}"
    );
    let b = section(&app_addr(&broken));
    assert!(
        b.contains(&format!("{store} gone")) && b.contains("app NOT recovered"),
        "{out}"
    );
    let apps_part = &summary[summary.find("  app ").expect("app sections")..];
    assert!(!apps_part.contains(&other.addr()), "{out}");
    assert!(
        summary.contains(&format!("  {}", other.addr())),
        "the other store's drill is in the summary:\n{out}"
    );
}
