//! Many agents, one target list: three agents with shards 0/3, 1/3 and 2/3
//! over the same 300 targets of one real Redis watch each target exactly
//! once, and a real Prometheus scraping them (one job, an instance per
//! agent) sees every target once, as do a global Prometheus fed by remote
//! write and one that federates it (the examples of docs/many-agents.md). Targets from
//! files: a file added, changed, broken and removed while the agent runs.
//! And what `config check` says of a shard.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use dbcanary::config::Shard;
use support::prometheus::{Prometheus, values};
use support::redis::RedisServer;
use support::{Agent, Pacing, Signal, check, dbcanary_command, poll_until, signal, target_toml};

const LIMIT: Duration = Duration::from_secs(60);

/// 300 canaries on a 2-core machine: one probe a second each.
const PACING: Pacing<'static> = Pacing::every("1s", "500ms");

/// The target names `t000`, `t001`, ...
fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("t{i:03}")).collect()
}

/// Waits until every `dbcanary_up` series of `agent` is 1 and it reports
/// that many targets; returns their names.
async fn all_up(agent: &Agent, what: &str) -> BTreeSet<String> {
    poll_until(LIMIT, what, async || {
        let m = agent.metrics().await;
        let up = m.series("dbcanary_up", &[]);
        let reported = m.value("dbcanary_agent_targets", &[]);
        let ups = up.iter().filter(|s| s.value == 1.0).count();
        if !up.is_empty() && ups == up.len() && reported == Some(up.len() as f64) {
            Ok(up.iter().map(|s| s.labels["target"].clone()).collect())
        } else {
            Err((ups, up.len(), reported))
        }
    })
    .await
}

/// Waits until `promql` gives exactly `want` (one sample each).
async fn wait_values(prom: &Prometheus, promql: &str, want: &[f64]) {
    poll_until(LIMIT, &format!("{promql} == {want:?}"), async || {
        let got = prom.query(promql).await.map(|s| values(&s));
        check(got.as_deref() == Ok(want), got)
    })
    .await;
}

#[tokio::test]
async fn three_shards_watch_every_target_exactly_once_and_prometheus_sees_each_once() {
    let redis = RedisServer::start().await;
    let names = names(300);
    let targets: String = names.iter().map(|n| target_toml(n, &redis.url())).collect();
    let mut agents = Vec::new();
    for k in 0..3 {
        let agent = Agent::builder()
            .pacing(PACING)
            .agent_toml(&format!("shard = \"{k}/3\"\n"))
            .toml(&targets)
            .log("info")
            .start()
            .await;
        agents.push(agent);
    }

    let mut owner: BTreeMap<String, u32> = BTreeMap::new();
    for (k, agent) in (0..).zip(&agents) {
        let kept = all_up(agent, &format!("shard {k}/3: its targets up")).await;
        assert!(
            (50..=150).contains(&kept.len()),
            "shard {k}/3 keeps {} of 300",
            kept.len()
        );
        for name in kept {
            assert_eq!(Shard::owner_of(3, &name), k, "{name} kept by {k}/3");
            if let Some(other) = owner.insert(name.clone(), k) {
                panic!("{name} is watched by shards {other}/3 and {k}/3");
            }
        }
        let shard = format!("{k}/3");
        let m = agent.metrics().await;
        assert_eq!(
            m.value("dbcanary_agent_info", &[("shard", &shard)]),
            Some(1.0)
        );
        assert_eq!(m.series("dbcanary_agent_info", &[]).len(), 1);
    }
    assert_eq!(
        owner.keys().cloned().collect::<Vec<_>>(),
        names,
        "every target is watched"
    );
    // The server's side: exactly one canary connection per target.
    let mut per_name: BTreeMap<String, usize> = BTreeMap::new();
    for c in redis.clients().await.unwrap() {
        if let Some(name) = c.name.strip_prefix("dbcanary:") {
            *per_name.entry(name.to_string()).or_default() += 1;
        }
    }
    assert_eq!(per_name.len(), 300, "{per_name:?}");
    assert!(per_name.values().all(|&n| n == 1), "{per_name:?}");

    // A global view: a Prometheus receiving remote write, and one
    // federating the Prometheus that scrapes the agents.
    let global = Prometheus::start(
        "global:\n  scrape_interval: 1s\n",
        &["--web.enable-remote-write-receiver"],
    )
    .await;
    let instances: Vec<String> = agents.iter().map(|a| format!("'{}'", a.listen)).collect();
    let regional = Prometheus::start(
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  external_labels:\n    region: test\n\
             scrape_configs:\n  - job_name: dbcanary\n    static_configs:\n      - targets: [{}]\n\
             remote_write:\n  - url: http://{}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n",
            instances.join(", "),
            global.addr
        ),
        &[],
    )
    .await;
    let federated = Prometheus::start(
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: federate\n    honor_labels: true\n    metrics_path: /federate\n    params:\n      'match[]': ['{{job=\"dbcanary\"}}']\n    static_configs:\n      - targets: ['{}']\n",
            regional.addr
        ),
        &[],
    )
    .await;

    wait_values(&regional, "count(dbcanary_up == 1)", &[300.0]).await;
    wait_values(&regional, "count(dbcanary_agent_info)", &[3.0]).await;
    wait_values(&regional, "sum(dbcanary_agent_targets)", &[300.0]).await;
    wait_values(
        &regional,
        "count(count by (instance) (dbcanary_up))",
        &[3.0],
    )
    .await;
    let each = regional
        .query("count by (target) (dbcanary_up)")
        .await
        .unwrap();
    assert_eq!(values(&each), vec![1.0; 300], "one series per target");
    for (name, prom) in [("remote write", &global), ("federation", &federated)] {
        wait_values(
            prom,
            "count(dbcanary_up{job=\"dbcanary\",region=\"test\"} == 1)",
            &[300.0],
        )
        .await;
        let each = prom
            .query("count by (target) (dbcanary_up{job=\"dbcanary\"})")
            .await
            .unwrap();
        assert_eq!(values(&each), vec![1.0; 300], "{name}: once per target");
    }
}

/// Writes `text` to `path` as a new file that replaces the old one, as
/// configuration tools and ConfigMaps do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn a_targets_file_is_added_changed_broken_and_removed_while_the_agent_runs() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop.toml");
    let pattern = dir.path().join("*.toml").display().to_string();
    let mut agent = Agent::builder()
        .pacing(Pacing::FAST)
        .discovery_toml(&format!(
            "files = [{pattern:?}]\nrefresh_interval = \"200ms\"\n"
        ))
        .start()
        .await;
    let m = agent.metrics().await;
    assert!(
        m.series("dbcanary_up", &[]).is_empty(),
        "no file yet, and no local defaults: {}",
        m.text
    );
    assert_eq!(m.value("dbcanary_agent_targets", &[]), Some(0.0));

    // Added.
    replace(
        &file,
        &[target_toml("a", &url), target_toml("b", &url)].concat(),
    );
    let kept = all_up(&agent, "the file's targets up").await;
    assert_eq!(kept, BTreeSet::from(["a".into(), "b".into()]));
    let a = redis.wait_canary("a", LIMIT).await;
    let b = redis.wait_canary("b", LIMIT).await;

    // Changed: c added, b's interval changed, a as it was.
    let changed = [
        target_toml("a", &url),
        target_toml("b", &url),
        "interval = \"300ms\"\n".into(),
        target_toml("c", &url),
    ]
    .concat();
    replace(&file, &changed);
    poll_until(LIMIT, "c up, 3 targets", async || {
        let m = agent.metrics().await;
        let c = m.value("dbcanary_up", &[("target", "c")]);
        let n = m.value("dbcanary_agent_targets", &[]);
        check(c == Some(1.0) && n == Some(3.0), (c, n))
    })
    .await;
    redis.wait_new_canary("b", Some(b), LIMIT).await;
    let ids = |cs: Vec<support::redis::ClientInfo>| cs.iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(
        ids(redis.canary_clients("a").await.unwrap()),
        [a],
        "the unchanged target keeps its connection"
    );

    // SIGHUP re-reads the main file (it has no targets of its own: that
    // is not a reload that drops every target) and every target file.
    let reloads = agent.log().matches("configuration reloaded").count();
    signal(agent.pid(), Signal::Hup);
    poll_until(LIMIT, "the reload", async || {
        let log = agent.log();
        check(
            log.matches("configuration reloaded").count() > reloads,
            support::tail_lines(&log, 5),
        )
    })
    .await;
    assert!(
        !agent.log().contains("reload refused"),
        "{}",
        support::tail_lines(&agent.log(), 20)
    );

    // Broken: refused with file, key and reason; the last good list stays.
    let broken = [
        target_toml("a", &url),
        target_toml("b", "ftp://:hunter2@127.0.0.1:1"),
    ]
    .concat();
    replace(&file, &broken);
    let path = file.display().to_string();
    poll_until(LIMIT, "the broken file refused in the log", async || {
        let log = agent.log();
        let line = log
            .lines()
            .find(|l| l.contains("target file refused"))
            .map(str::to_string);
        match line {
            Some(l)
                if l.contains(&path)
                    && l.contains("target[1].url")
                    && l.contains("unknown scheme") =>
            {
                Ok(l)
            }
            other => Err(other),
        }
    })
    .await;
    assert!(!agent.log().contains("hunter2"));
    let m = agent.metrics().await;
    for t in ["a", "b", "c"] {
        assert_eq!(m.value("dbcanary_up", &[("target", t)]), Some(1.0), "{t}");
    }
    assert_eq!(ids(redis.canary_clients("a").await.unwrap()), [a]);
    agent.assert_alive();

    // Removed: its targets stop and their series go.
    std::fs::remove_file(&file).unwrap();
    poll_until(LIMIT, "no target left", async || {
        let m = agent.metrics().await;
        let left = m.series("dbcanary_up", &[]).len();
        let n = m.value("dbcanary_agent_targets", &[]);
        check(left == 0 && n == Some(0.0), (left, n))
    })
    .await;
    for t in ["a", "b", "c"] {
        redis
            .wait_canaries(t, 0, LIMIT, "the removed target's connection closed")
            .await;
    }
}

/// Runs `dbcanary config check ARGS --config FILE` (with `env`).
fn config_check(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = dbcanary_command();
    cmd.args(["config", "check", "--config"])
        .arg(config)
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run dbcanary config check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_check_lists_what_the_shard_keeps_of_the_file_and_the_target_files() {
    let dir = tempfile::tempdir().unwrap();
    let names = names(40);
    let (main, files) = names.split_at(30);
    std::fs::create_dir(dir.path().join("targets.d")).unwrap();
    std::fs::write(
        dir.path().join("targets.d/more.toml"),
        files
            .iter()
            .map(|n| target_toml(n, "redis://127.0.0.1:1"))
            .collect::<String>(),
    )
    .unwrap();
    let config = dir.path().join("dbcanary.toml");
    let text = format!(
        "[discovery]\nenv = false\nfiles = [\"targets.d/*.toml\"]\n{}",
        main.iter()
            .map(|n| target_toml(n, "redis://127.0.0.1:1"))
            .collect::<String>()
    );
    std::fs::write(&config, text).unwrap();

    let (ok, stdout, stderr) = config_check(&config, &["--shard", "1/3"], &[]);
    assert!(ok, "{stderr}");
    let listed: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("dbcanary: target "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let kept: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| Shard::owner_of(3, n) == 1)
        .collect();
    assert_eq!(listed, kept, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "shard 1/3 keeps {} of 40 targets ({} left to the other shards)",
            kept.len(),
            40 - kept.len()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("from targets file"), "{stderr}");
    assert!(stdout.contains("shard = \"1/3\""), "{stdout}");
    for n in main {
        assert_eq!(
            stdout.contains(&format!("name = \"{n}\"")),
            kept.contains(&n.as_str()),
            "{n}: {stdout}"
        );
    }

    let (ok, _, stderr) = config_check(
        &config,
        &["--shard", "ordinal/3"],
        &[("HOSTNAME", "dbcanary-2")],
    );
    assert!(ok && stderr.contains("shard 2/3 keeps"), "{stderr}");
    let (ok, _, stderr) = config_check(&config, &["--shard", "3/3"], &[]);
    assert!(
        !ok && stderr.contains("command line: --shard: \"3/3\": k must be below n"),
        "{stderr}"
    );

    // A broken target file is a configuration error here (the agent logs
    // it and goes on).
    let bad = dir.path().join("targets.d/bad.toml");
    std::fs::write(&bad, "[[target]]\nname = \"t000\"\nurl = \"redis://h\"\n").unwrap();
    let (ok, _, stderr) = config_check(&config, &[], &[]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: target[0].name: duplicate target name \"t000\" (also in the main configuration)",
            bad.display()
        )),
        "{stderr}"
    );
}

/// Moving a target from the main file to a target file (and SIGHUP) keeps
/// its canary: only where it is configured changed.
#[tokio::test]
async fn a_target_moved_from_the_main_file_to_a_targets_file_keeps_its_connection() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pattern = dir.path().join("*.toml").display().to_string();
    let agent = Agent::builder()
        .pacing(Pacing::FAST)
        .discovery_toml(&format!(
            "files = [{pattern:?}]\nrefresh_interval = \"200ms\"\n"
        ))
        .target("moved", &redis.url())
        .start_up(LIMIT)
        .await;
    let conn = redis.wait_canary("moved", LIMIT).await;

    replace(
        &dir.path().join("moved.toml"),
        &target_toml("moved", &redis.url()),
    );
    let main = agent
        .config_text
        .replace(&target_toml("moved", &redis.url()), "");
    std::fs::write(&agent.config, main).unwrap();
    // The list is applied once the target files were read again with the
    // new main file.
    let applied = agent.log().matches("target list applied").count();
    signal(agent.pid(), Signal::Hup);
    poll_until(LIMIT, "the reloaded list applied", async || {
        let n = agent.log().matches("target list applied").count();
        check(n > applied, n)
    })
    .await;
    let m = agent.metrics().await;
    assert_eq!(m.value("dbcanary_up", &[("target", "moved")]), Some(1.0));
    let ids: Vec<i64> = redis
        .canary_clients("moved")
        .await
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, [conn], "the moved target keeps its connection");
    let api = agent.target("moved").await;
    assert_eq!(api["state"], "up", "{api}");
    assert!(
        !agent.log().contains("target changed"),
        "{}",
        support::tail_lines(&agent.log(), 20)
    );
}
