//! The bundled Grafana dashboards and Prometheus alert rules, proven against
//! the real tools: `promtool` checks and unit-tests the rules and lints the
//! agent's `/metrics`; a real `prometheus` scrapes a real agent watching a
//! real Redis that is restarted (with two applications depending on it, one
//! that reconnects and one that never does), and then every PromQL
//! expression of every dashboard panel, template variable and annotation,
//! and every alert rule, is run through Prometheus' query API.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use support::app::{Behaviour, app_toml, start_app};
use support::prometheus::{Prometheus, values};
use support::redis::RedisServer;
use support::{Agent, Pacing, check, poll_until, require_binary};

const DASHBOARDS: [&str; 2] = ["dbcanary-overview.json", "dbcanary-target.json"];
const RULES: &str = "dbcanary.rules.yml";
const RULES_TESTS: &str = "dbcanary.rules.test.yml";

/// The dashboards' row of application panels.
const APPS_ROW: &str = "Applications";
/// The drill's second Redis target, at the default `metrics = "basic"`: every
/// query that needs no opt-in series returns data for it too.
const PLAIN: &str = "plain";
/// Series only a target at `metrics = "detailed"` has.
const DETAILED_ONLY: [&str; 2] = [
    "dbcanary_probe_duration_seconds",
    "dbcanary_connect_duration_seconds",
];
/// The drill's application that reconnects to Redis after each restart.
const APP: &str = "shop";
/// The drill's application that never reconnects: not recovered after the
/// last restart, so the not-recovered panels and alert have something.
const STUCK: &str = "stuck";
/// What stats of the Applications row show at the end of the drill, as
/// (title, with the Redis target selected, with [`APP`] selected): one app
/// (the stuck one) not recovered now, and one or two drills it did not
/// survive (the first restart's verdict may be cut short by the second);
/// nothing for the app that reconnects.
const APP_STATS: [(&str, [f64; 2], [f64; 2]); 2] = [
    ("Apps not recovered", [1.0, 1.0], [0.0, 0.0]),
    ("App drills not survived (range)", [1.0, 2.0], [0.0, 0.0]),
];
/// The alerts that may find the stuck app (it is down, and its reconnects
/// fail): any other alert finding it, or any alert finding another target
/// once Redis is back, is a false alarm.
const STUCK_ALERTS: [&str; 3] = [
    "DbcanaryTargetDown",
    "DbcanaryReconnectFailing",
    "DbcanaryAppNotRecovered",
];

/// Every alert the rules file must define, with its severity.
const ALERTS: [(&str, &str); 7] = [
    ("DbcanaryTargetDown", "critical"),
    ("DbcanaryReconnectFailing", "critical"),
    ("DbcanaryReconnectLatencyHigh", "warning"),
    ("DbcanaryFailover", "info"),
    ("DbcanaryFlapping", "warning"),
    ("DbcanaryAbsent", "critical"),
    ("DbcanaryAppNotRecovered", "critical"),
];

/// What Grafana's variables become when the queries are run here: the Redis
/// target selected. The windows reach back over the whole test, so that
/// every outage it caused is inside them.
const SUBSTITUTIONS: [(&str, &str); 12] = [
    ("${__rate_interval}", "1m"),
    ("$__rate_interval", "1m"),
    ("${__interval}", "2s"),
    ("$__interval", "2s"),
    ("${__range}", "10m"),
    ("$__range", "10m"),
    ("${target:regex}", "cache"),
    ("${target}", "cache"),
    ("$target", "cache"),
    ("${store:regex}", "redis"),
    ("${store}", "redis"),
    ("$store", "redis"),
];

fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards")
}

fn promtool() -> PathBuf {
    require_binary("promtool", "prometheus")
}

fn load_dashboard(name: &str) -> Value {
    let path = dashboards_dir().join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not valid JSON: {e}"))
}

// ---------------------------------------------------------------------------
// Dashboard queries
// ---------------------------------------------------------------------------

/// Where a dashboard query comes from.
#[derive(Debug, Clone, PartialEq)]
enum Origin {
    /// A panel target; `exemplar` when the panel asks for exemplars.
    Panel { exemplar: bool },
    /// A template variable (`label_values(...)`, turned into PromQL).
    Variable,
    /// An annotation query: it marks events, so it may legitimately find
    /// nothing when the event (a failover) did not happen.
    Annotation,
}

#[derive(Debug, Clone)]
struct Query {
    dashboard: &'static str,
    what: String,
    origin: Origin,
    /// The panel's title, for a panel query.
    title: Option<String>,
    /// The title of the dashboard row the panel is in, if any.
    row: Option<String>,
    /// Run with the application [`APP`] selected instead of the Redis target.
    app_selected: bool,
    /// As written in the dashboard.
    raw: String,
    /// With the variables substituted: plain PromQL.
    promql: String,
}

fn substitute(expr: &str) -> String {
    let mut s = expr.to_string();
    for (from, to) in SUBSTITUTIONS {
        s = s.replace(from, to);
    }
    s
}

/// Like [`substitute`], with the application [`APP`] (store `http`)
/// selected instead of the Redis target.
fn substitute_app_selected(expr: &str) -> String {
    let mut s = expr.to_string();
    for (from, to) in SUBSTITUTIONS {
        let to = match to {
            "cache" => APP,
            "redis" => "http",
            other => other,
        };
        s = s.replace(from, to);
    }
    s
}

/// `label_values(SELECTOR, LABEL)` as PromQL returning one series per value.
fn label_values_promql(q: &str) -> String {
    let inner = q
        .trim()
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unsupported variable query (expected label_values(...)): {q}"));
    let (selector, label) = inner
        .rsplit_once(',')
        .unwrap_or_else(|| panic!("label_values without a metric: {q}"));
    format!("count by ({}) ({})", label.trim(), selector.trim())
}

fn collect_panels<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
    for p in panels.as_array().into_iter().flatten() {
        out.push(p);
        if let Some(inner) = p.get("panels") {
            collect_panels(inner, out);
        }
    }
}

fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    collect_panels(&d["panels"], &mut out);
    out
}

/// Every panel with the title of the row it is in: the panels inside a
/// collapsed row, or the ones below an open row down to the next row (as
/// Grafana lays them out, by position).
fn panels_with_rows(d: &Value) -> Vec<(&Value, Option<String>)> {
    let top = d["panels"].as_array().expect("panels");
    let y = |p: &Value| p["gridPos"]["y"].as_u64().expect("gridPos.y");
    let rows: Vec<(u64, String)> = top
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| (y(p), p["title"].as_str().unwrap_or("").to_string()))
        .collect();
    let mut out = Vec::new();
    for p in top {
        if p["type"] == "row" {
            let title = p["title"].as_str().unwrap_or("").to_string();
            out.push((p, None));
            let mut inner = Vec::new();
            collect_panels(&p["panels"], &mut inner);
            out.extend(inner.into_iter().map(|q| (q, Some(title.clone()))));
        } else {
            let row = rows
                .iter()
                .filter(|(ry, _)| *ry <= y(p))
                .max_by_key(|(ry, _)| *ry)
                .map(|(_, t)| t.clone());
            out.push((p, row));
        }
    }
    out
}

/// The panels of the row titled `title`.
fn row_panels<'a>(d: &'a Value, title: &str) -> Vec<&'a Value> {
    panels_with_rows(d)
        .into_iter()
        .filter(|(_, r)| r.as_deref() == Some(title))
        .map(|(p, _)| p)
        .collect()
}

/// Every PromQL expression of a dashboard: panel targets, template
/// variables and annotations.
fn dashboard_queries(name: &'static str, d: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    let mut push = |what: String,
                    origin: Origin,
                    panel: Option<(&str, Option<String>)>,
                    raw: &str,
                    promql: String| {
        let (title, row) = match panel {
            Some((title, row)) => (Some(title.to_string()), row),
            None => (None, None),
        };
        out.push(Query {
            dashboard: name,
            what,
            origin,
            title,
            row,
            app_selected: false,
            raw: raw.to_string(),
            promql,
        })
    };
    for (p, row) in panels_with_rows(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_else(|| {
                panic!("{name}: panel {:?} has a target without expr", p["title"])
            });
            push(
                format!(
                    "panel {:?} query {}",
                    p["title"].as_str().unwrap_or("?"),
                    t["refId"]
                ),
                Origin::Panel {
                    exemplar: t["exemplar"] == true,
                },
                Some((p["title"].as_str().unwrap_or("?"), row.clone())),
                expr,
                substitute(expr),
            );
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let q = match &v["query"] {
            Value::String(s) => s.as_str(),
            other => other["query"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: variable {} has no query", v["name"])),
        };
        push(
            format!("variable {}", v["name"]),
            Origin::Variable,
            None,
            q,
            substitute(&label_values_promql(q)),
        );
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(expr) = a["expr"].as_str() {
            push(
                format!("annotation {}", a["name"]),
                Origin::Annotation,
                None,
                expr,
                substitute(expr),
            );
        }
    }
    out
}

/// The queries of the Applications row once more, with the application
/// [`APP`] selected instead of the store it depends on: the row shows the
/// apps among the selected targets as well as the apps that depend on one.
fn app_selected_queries(queries: &[Query]) -> Vec<Query> {
    queries
        .iter()
        .filter(|q| q.row.as_deref() == Some(APPS_ROW))
        .map(|q| Query {
            what: format!("{} (target {APP} selected)", q.what),
            app_selected: true,
            promql: substitute_app_selected(&q.raw),
            ..q.clone()
        })
        .collect()
}

/// The queries once more with the basic target [`PLAIN`] selected, but for
/// those of the Applications row (no app depends on it), the annotations
/// (they mark moments) and those of series only `detailed` targets have.
fn plain_selected_queries(queries: &[Query]) -> Vec<Query> {
    queries
        .iter()
        .filter(|q| {
            !q.app_selected
                && q.row.as_deref() != Some(APPS_ROW)
                && q.origin != Origin::Annotation
                && !DETAILED_ONLY.iter().any(|m| q.raw.contains(m))
        })
        .map(|q| Query {
            what: format!("{} (basic target {PLAIN} selected)", q.what),
            promql: q.promql.replace("\"cache\"", &format!("\"{PLAIN}\"")),
            ..q.clone()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// A real Prometheus
// ---------------------------------------------------------------------------

/// A `prometheus` scraping one agent every 500 ms, with the bundled rules
/// loaded.
async fn start_prometheus(agent: SocketAddr) -> Prometheus {
    let config = format!(
        "global:\n  scrape_interval: 500ms\n  scrape_timeout: 500ms\n  evaluation_interval: 500ms\n\
         rule_files:\n  - {rules}\n\
         scrape_configs:\n  - job_name: dbcanary\n    static_configs:\n      - targets: ['{agent}']\n",
        rules = dashboards_dir().join(RULES).display()
    );
    Prometheus::start(&config, &[]).await
}

/// The loaded alerting rules (name → rule), once every one of them has
/// been evaluated at least once.
async fn evaluated_rules(prom: &Prometheus) -> BTreeMap<String, Value> {
    poll_until(
        Duration::from_secs(20),
        "every rule evaluated by prometheus",
        async || {
            let v = prom.api("/api/v1/rules").await;
            let rules: BTreeMap<String, Value> = v["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .map(|r| (r["name"].as_str().unwrap_or_default().to_string(), r))
                .collect();
            let pending: Vec<_> = rules
                .values()
                .filter(|r| r["health"] == "unknown")
                .map(|r| r["name"].clone())
                .collect();
            if rules.is_empty() || !pending.is_empty() {
                return Err(format!("not evaluated yet: {pending:?} of {v}"));
            }
            Ok(rules)
        },
    )
    .await
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// Kills the Redis server and waits until Prometheus has seen the outage.
async fn kill_and_see_down(redis: &mut RedisServer, prom: &Prometheus) {
    redis.kill();
    prom.wait_for(
        r#"dbcanary_up{job="dbcanary",target="cache",store="redis"} == 0"#,
        Duration::from_secs(20),
    )
    .await;
}

/// Starts the Redis server again and waits until Prometheus has seen the
/// `n`-th outage end, the target up again and the reconnecting app's `n`-th
/// recovery (so that the next restart does not interrupt its drill).
async fn restart_and_see_restored(redis: &mut RedisServer, prom: &Prometheus, n: u32) {
    redis.start_again().await;
    prom.wait_for(
        &format!(
            r#"sum by (target) (dbcanary_outage_duration_seconds_count{{target="cache"}}) >= {n}
               and on (target) dbcanary_up{{target="cache"}} == 1"#
        ),
        Duration::from_secs(20),
    )
    .await;
    prom.wait_for(
        &format!(
            r#"dbcanary_app_recovery_lag_seconds_count{{target="{APP}",dependency="cache"}} >= {n}"#
        ),
        Duration::from_secs(20),
    )
    .await;
}

/// An agent watching `redis` as target `cache` (at `metrics = "detailed"`)
/// and as target [`PLAIN`] (at the default, `basic`), and the two applications
/// of the drill depending on it: [`APP`] reconnects, [`STUCK`] never does
/// (its `recovery_deadline` is short, to be declared not recovered soon).
async fn start_agent_with_apps(redis: &RedisServer) -> Agent {
    let shop = start_app(Behaviour::Reconnects, &redis.url()).await;
    let stuck = start_app(Behaviour::NeverReconnects, &redis.url()).await;
    let agent = Agent::builder()
        .pacing(Pacing::FAST)
        .target_with("cache", &redis.url(), "metrics = \"detailed\"")
        .target(PLAIN, &redis.url())
        .toml(&app_toml(APP, &shop, &["cache"], "10s"))
        .toml(&app_toml(STUCK, &stuck, &["cache"], "2s"))
        .start()
        .await;
    for t in ["cache", PLAIN, APP, STUCK] {
        agent.wait_up(t, true, Duration::from_secs(10)).await;
    }
    agent
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// `promtool check rules` accepts the rules file and `promtool test rules`
/// passes its unit tests (each alert fires and stays silent where it must).
#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let promtool = promtool();
    let dir = dashboards_dir();
    for args in [["check", "rules", RULES], ["test", "rules", RULES_TESTS]] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("run promtool");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "promtool {} failed ({}):\n{text}",
            args.join(" "),
            out.status
        );
        assert!(
            text.contains("SUCCESS"),
            "promtool {}: {text}",
            args.join(" ")
        );
    }
}

/// The dashboards import into any Grafana as they are: current schema, a
/// data source variable used by every query (no UID of someone's Grafana),
/// `store`/`target` variables, titles and units, and the panels the
/// operations issue asks for.
#[test]
fn dashboards_are_importable_and_complete() {
    for name in DASHBOARDS {
        let d = load_dashboard(name);
        assert!(
            d["schemaVersion"].as_u64().unwrap_or(0) >= 39,
            "{name}: schemaVersion {}",
            d["schemaVersion"]
        );
        assert!(d.get("__inputs").is_none(), "{name}: has __inputs");
        assert!(d["id"].is_null(), "{name}: id must be null for import");
        assert!(
            !d["title"].as_str().unwrap_or("").is_empty(),
            "{name}: title"
        );
        let own_uid = d["uid"].as_str().expect("dashboard uid");

        let vars = d["templating"]["list"].as_array().expect("templating");
        let var = |n: &str| {
            vars.iter()
                .find(|v| v["name"] == n)
                .unwrap_or_else(|| panic!("{name}: no variable {n}"))
        };
        assert_eq!(var("datasource")["type"], "datasource", "{name}");
        assert_eq!(var("datasource")["query"], "prometheus", "{name}");
        for n in ["store", "target"] {
            assert_eq!(var(n)["type"], "query", "{name}: variable {n}");
            let q = serde_json::to_string(&var(n)["query"]).unwrap();
            assert!(q.contains("label_values("), "{name}: variable {n}: {q}");
        }

        // Every data source reference is the variable (or Grafana's own
        // annotations), and every "uid" is one of those or the dashboard's.
        let mut uids = Vec::new();
        walk_uids(&d, &mut uids);
        for uid in &uids {
            assert!(
                uid == "${datasource}" || uid == "-- Grafana --" || uid == own_uid,
                "{name}: hard-coded uid {uid:?}"
            );
        }

        let mut ids = BTreeSet::new();
        let mut cells = BTreeSet::new();
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap_or("");
            assert!(!title.is_empty(), "{name}: panel without title: {p}");
            assert!(
                ids.insert(p["id"].as_u64().expect("panel id")),
                "{name}: id"
            );
            let g = &p["gridPos"];
            let (x, y, w, h) = (
                g["x"].as_u64().unwrap(),
                g["y"].as_u64().unwrap(),
                g["w"].as_u64().unwrap(),
                g["h"].as_u64().unwrap(),
            );
            assert!(x + w <= 24, "{name}: {title:?} is wider than the grid");
            for cx in x..x + w {
                for cy in y..y + h {
                    assert!(cells.insert((cx, cy)), "{name}: {title:?} overlaps");
                }
            }
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{name}: {title:?} data source"
            );
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{name}: {title:?} has no query");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{name}: {title:?}");
            }
            let unit = if p["type"] == "heatmap" {
                &p["options"]["yAxis"]["unit"]
            } else {
                &p["fieldConfig"]["defaults"]["unit"]
            };
            assert!(
                unit.as_str().is_some_and(|u| !u.is_empty()),
                "{name}: {title:?} has no unit"
            );
            let exprs = serde_json::to_string(targets).unwrap();
            if p["type"] != "table"
                && (exprs.contains("histogram_quantile") || p["type"] == "heatmap")
            {
                assert_eq!(unit, "s", "{name}: {title:?} shows seconds");
            }
        }
    }

    // What the overview must show.
    let overview = load_dashboard("dbcanary-overview.json");
    let exprs = all_exprs(&overview);
    for needle in [
        "histogram_quantile(0.5, sum by (target, store, le) (increase(dbcanary_outage_duration_seconds_bucket",
        "histogram_quantile(0.95, sum by (target, store, le) (increase(dbcanary_outage_duration_seconds_bucket",
        "histogram_quantile(1, sum by (target, store, le) (increase(dbcanary_outage_duration_seconds_bucket",
        "sum by (target, cause) (increase(dbcanary_disconnects_total",
        "sum by (target, source) (increase(dbcanary_failovers_total",
        "dbcanary_outage_in_progress_seconds",
        "increase(dbcanary_disconnects_total{store=~\"$store\",target=~\"$target\"}[$__range])",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(needle)),
            "overview: no query with {needle}"
        );
    }
    assert!(
        panels(&overview)
            .iter()
            .any(|p| p["type"] == "state-timeline"
                && p["targets"][0]["expr"]
                    .as_str()
                    .unwrap()
                    .contains("dbcanary_up{")),
        "overview: no state timeline of dbcanary_up"
    );

    // What the drill-down must show.
    let t = load_dashboard("dbcanary-target.json");
    let heatmap_of = |metric: &str| {
        panels(&t).into_iter().find(|p| {
            p["type"] == "heatmap"
                && p["targets"][0]["expr"].as_str().unwrap().contains(metric)
                && p["targets"][0]["format"] == "heatmap"
        })
    };
    assert!(heatmap_of("dbcanary_probe_duration_seconds_bucket").is_some());
    let outage = heatmap_of("dbcanary_outage_duration_seconds_bucket")
        .expect("target: outage duration heatmap");
    assert_eq!(outage["targets"][0]["exemplar"], true, "exemplars enabled");
    let exprs = all_exprs(&t);
    for needle in [
        "sum by (result) (increase(dbcanary_connect_attempts_total",
        "dbcanary_last_outage_end_timestamp_seconds",
        "dbcanary_server_info{target=\"$target\"}",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(needle)),
            "target: no query with {needle}"
        );
    }
    let annotations: Vec<String> = t["annotations"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["expr"].as_str().map(str::to_string))
        .collect();
    for metric in ["dbcanary_server_info", "dbcanary_failovers_total"] {
        assert!(
            annotations.iter().any(|a| a.contains(metric)),
            "target: no annotation from {metric}: {annotations:?}"
        );
    }

    // The Applications row of both: the recovery lag per app and dependency
    // (quantiles over the range, each drill), the apps not recovered now
    // (red from one), the drills not survived, and each app's up/down next
    // to its dependencies'. The overview selects the apps among the chosen
    // targets and the apps depending on one; the drill-down an app's own
    // recovery, or the apps depending on the store shown.
    for (name, d, selects) in [
        (
            "overview",
            &overview,
            [
                r#"dbcanary_app_not_recovered{store=~"$store",target=~"$target"}"#,
                r#"label_join(dbcanary_up{store=~"$store",target=~"$target"}, "dependency", "", "target")"#,
            ],
        ),
        (
            "target",
            &t,
            [
                r#"dbcanary_app_not_recovered{target="$target"}"#,
                r#"dbcanary_app_not_recovered{dependency="$target"}"#,
            ],
        ),
    ] {
        let row = row_panels(d, APPS_ROW);
        assert!(row.len() >= 6, "{name}: no {APPS_ROW} row: {row:?}");
        let exprs: Vec<String> = row
            .iter()
            .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
            .filter_map(|t| t["expr"].as_str().map(str::to_string))
            .collect();
        for needle in [
            "histogram_quantile(0.5, sum by (target, dependency, le) (increase(dbcanary_app_recovery_lag_seconds_bucket[$__range])))",
            "histogram_quantile(0.95, sum by (target, dependency, le) (increase(dbcanary_app_recovery_lag_seconds_bucket[$__range])))",
            "histogram_quantile(1, sum by (target, dependency, le) (increase(dbcanary_app_recovery_lag_seconds_bucket[$__range])))",
            "increase(dbcanary_app_recovery_lag_seconds_sum[$__rate_interval])",
            "increase(dbcanary_app_unrecovered_total[$__range])",
        ]
        .into_iter()
        .chain(selects)
        {
            assert!(
                exprs.iter().any(|e| e.contains(needle)),
                "{name}: no {APPS_ROW} query with {needle}"
            );
        }
        assert!(
            exprs.iter().all(|e| e.contains(selects[0])),
            "{name}: an {APPS_ROW} query ignores the selection ({})",
            selects[0]
        );
        let not_recovered = row
            .iter()
            .find(|p| p["type"] == "stat" && p["title"] == "Apps not recovered")
            .unwrap_or_else(|| panic!("{name}: no stat of the apps not recovered"));
        assert!(
            not_recovered["targets"][0]["expr"]
                .as_str()
                .unwrap()
                .contains("dbcanary_app_not_recovered"),
            "{name}: {not_recovered}"
        );
        assert_eq!(
            not_recovered["fieldConfig"]["defaults"]["thresholds"]["steps"][1],
            serde_json::json!({"color": "red", "value": 1}),
            "{name}: apps not recovered turn red from one"
        );
        assert!(
            row.iter().any(|p| p["type"] == "state-timeline"
                && p["targets"][0]["expr"]
                    .as_str()
                    .is_some_and(|e| e.contains("dbcanary_up{") && e.contains("dependency"))),
            "{name}: no state timeline of the apps next to their dependencies"
        );
    }
}

fn all_exprs(d: &Value) -> Vec<String> {
    panels(d)
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect()
}

fn walk_uids(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "uid" {
                    out.push(x.as_str().unwrap_or("").to_string());
                }
                walk_uids(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| walk_uids(x, out)),
        _ => {}
    }
}

/// `promtool check metrics` finds nothing to complain about in the agent's
/// `/metrics`, with every kind of series present (after a Redis restart:
/// outage histogram, last outage end, server info, and the app recovery
/// series of the applications depending on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_metrics_pass_promtool_check_metrics() {
    let mut redis = RedisServer::start().await;
    let agent = start_agent_with_apps(&redis).await;
    redis.kill();
    agent.wait_up("cache", false, Duration::from_secs(10)).await;
    redis.start_again().await;
    for (name, target) in [
        ("dbcanary_outage_duration_seconds_count", "cache"),
        ("dbcanary_app_recovery_lag_seconds_count", APP),
    ] {
        agent
            .wait_at_least(name, &[("target", target)], 1.0, Duration::from_secs(15))
            .await;
    }
    let body = agent.get("/metrics").await.body;
    for name in [
        "dbcanary_last_outage_end_timestamp_seconds",
        "dbcanary_server_info",
        "dbcanary_build_info",
        "dbcanary_app_unrecovered_total",
    ] {
        assert!(body.contains(name), "no {name} in /metrics:\n{body}");
    }
    support::promtool_check_metrics(&body);
}

/// A real Prometheus scrapes the agent while its Redis is restarted (twice),
/// with two applications depending on it (one reconnects, one never does),
/// then every dashboard query and every alert rule runs through Prometheus'
/// query API: each one parses; each panel and variable query returns data
/// (a number, not NaN), the Applications row's both with the Redis target
/// and with an app selected; the alerts that describe an outage fire during
/// it; once Redis is back, DbcanaryAppNotRecovered fires for the app that
/// never reconnects, and nothing else fires or finds a healthy target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_alert_query_works_against_a_real_prometheus() {
    let t0 = std::time::Instant::now();
    let mut redis = RedisServer::start().await;
    let agent = start_agent_with_apps(&redis).await;
    let prom = start_prometheus(agent.listen).await;
    prom.wait_for(
        r#"dbcanary_up{job="dbcanary",instance!="",target="cache",store="redis"} == 1"#,
        Duration::from_secs(20),
    )
    .await;

    // The rules Prometheus loaded are the ones the operations issue asks for.
    let rules = evaluated_rules(&prom).await;
    let names: BTreeSet<&str> = rules.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = ALERTS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, expected, "alert rules loaded by prometheus");
    for (name, severity) in ALERTS {
        let r = &rules[name];
        assert_eq!(r["type"], "alerting", "{name}");
        assert_eq!(r["labels"]["severity"], severity, "{name}");
        let summary = r["annotations"]["summary"].as_str().unwrap_or("");
        let description = r["annotations"]["description"].as_str().unwrap_or("");
        assert!(!summary.is_empty() && description.len() > 80, "{name}: {r}");
        if name != "DbcanaryAbsent" {
            assert!(
                summary.contains("$labels.target") && description.contains("$labels.target"),
                "{name} must name the target: {r}"
            );
        }
    }
    let alert_expr = |name: &str| rules[name]["query"].as_str().unwrap().to_string();

    // Outage 1: while Redis is down, the expressions of the alerts that
    // describe this state find the target (the alerts themselves wait for
    // their `for:` duration, longer than this test).
    kill_and_see_down(&mut redis, &prom).await;
    for name in ["DbcanaryTargetDown", "DbcanaryReconnectFailing"] {
        let expr = alert_expr(name);
        let found = prom
            .wait_for(
                &format!("({expr}) and on (target) dbcanary_up{{target=\"cache\"}}"),
                Duration::from_secs(20),
            )
            .await;
        assert_eq!(found[0]["metric"]["target"], "cache", "{name}: {found:?}");
    }
    restart_and_see_restored(&mut redis, &prom, 1).await;

    // Outage 2. The first outage of a kind creates its histogram series,
    // and rate()/increase() cannot see a series' first sample as an
    // increase; a second outage makes sure the latency panels have one.
    kill_and_see_down(&mut redis, &prom).await;
    restart_and_see_restored(&mut redis, &prom, 2).await;
    prom.wait_for(
        r#"sum(increase(dbcanary_outage_duration_seconds_count{target="cache"}[1m])) > 0"#,
        Duration::from_secs(20),
    )
    .await;
    // The app that never reconnects is declared not recovered 2 s after
    // Redis is back (the first restart's verdict may have been cut short
    // by the second restart), and its alert fires at once.
    prom.wait_for(
        &format!(r#"dbcanary_app_unrecovered_total{{target="{STUCK}",dependency="cache"}} >= 1"#),
        Duration::from_secs(20),
    )
    .await;
    let stuck_alert = |a: &Value| {
        a["labels"]["alertname"] == "DbcanaryAppNotRecovered"
            && a["labels"]["target"] == STUCK
            && a["labels"]["dependency"] == "cache"
            && a["state"] == "firing"
    };
    poll_until(
        Duration::from_secs(20),
        "DbcanaryAppNotRecovered firing for the stuck app",
        async || {
            let v = prom.api("/api/v1/alerts").await;
            let alerts = v["data"]["alerts"].as_array().cloned().unwrap_or_default();
            check(alerts.iter().any(stuck_alert), v)
        },
    )
    .await;

    // Every dashboard query.
    let mut failures = Vec::new();
    let mut checked = 0;
    for name in DASHBOARDS {
        let d = load_dashboard(name);
        let mut queries = dashboard_queries(name, &d);
        assert!(queries.len() > 10, "{name}: only {} queries", queries.len());
        let app_selected = app_selected_queries(&queries);
        assert!(
            app_selected.len() >= 5,
            "{name}: only {} queries in the {APPS_ROW} row",
            app_selected.len()
        );
        queries.extend(app_selected);
        let plain = plain_selected_queries(&queries);
        assert!(
            plain.len() > 10,
            "{name}: only {} basic-mode queries",
            plain.len()
        );
        queries.extend(plain);
        for q in queries {
            checked += 1;
            if q.promql.contains('$') {
                failures.push(format!(
                    "{} {}: unknown variable left in {:?}",
                    q.dashboard, q.what, q.promql
                ));
                continue;
            }
            let samples = match prom.query(&q.promql).await {
                Ok(s) => s,
                Err(e) => {
                    failures.push(format!(
                        "{} {}: {e}\n    query: {}\n    as written: {}",
                        q.dashboard, q.what, q.promql, q.raw
                    ));
                    continue;
                }
            };
            let numbers = values(&samples);
            match q.origin {
                Origin::Annotation => {
                    // Identity change and restart markers must show the
                    // restarts; failover markers have nothing to show.
                    let must_mark = !q.what.contains("Failover");
                    if must_mark && numbers.is_empty() {
                        failures.push(format!(
                            "{} {}: marks nothing after two restarts\n    query: {}",
                            q.dashboard, q.what, q.promql
                        ));
                    }
                }
                Origin::Panel { .. } | Origin::Variable => {
                    if !numbers.iter().any(|v| v.is_finite()) {
                        failures.push(format!(
                            "{} {}: no data ({samples:?})\n    query: {}",
                            q.dashboard, q.what, q.promql
                        ));
                    }
                }
            }
            if let Some((_, cache, app)) = APP_STATS
                .iter()
                .find(|(title, ..)| q.title.as_deref() == Some(*title))
            {
                let [min, max] = if q.app_selected { app } else { cache };
                if numbers.len() != 1 || numbers[0] < *min || numbers[0] > *max {
                    failures.push(format!(
                        "{} {}: shows {numbers:?}, not {min}..={max}\n    query: {}",
                        q.dashboard, q.what, q.promql
                    ));
                }
            }
            if q.origin == (Origin::Panel { exemplar: true }) {
                let now = unix_now();
                let v = prom
                    .api(&format!(
                        "/api/v1/query_exemplars?query={}&start={}&end={}",
                        utf8_percent_encode(&q.promql, NON_ALPHANUMERIC),
                        now - 600.0,
                        now
                    ))
                    .await;
                if v["status"] != "success" {
                    failures.push(format!(
                        "{} {}: exemplar query failed: {v}",
                        q.dashboard, q.what
                    ));
                }
            }
        }
    }

    // Every alert rule: evaluated by Prometheus without error, runs through
    // the query API, and stays silent on every healthy target now that Redis
    // is back (two short restarts: no failover, not flapping, not slow).
    // The stuck app is not healthy: DbcanaryAppNotRecovered must find it,
    // and only the alerts about a target that is down may.
    let rules = evaluated_rules(&prom).await;
    let is_stuck = |s: &&Value| s["metric"]["target"] == STUCK;
    for (name, rule) in &rules {
        checked += 1;
        if rule["health"] != "ok" {
            failures.push(format!(
                "rule {name}: health {} {}",
                rule["health"], rule["lastError"]
            ));
        }
        let found = match prom.query(rule["query"].as_str().unwrap()).await {
            Err(e) => {
                failures.push(format!("rule {name}: {e}"));
                continue;
            }
            Ok(found) => found,
        };
        let (stuck, others): (Vec<&Value>, Vec<&Value>) = found.iter().partition(is_stuck);
        if !others.is_empty() {
            failures.push(format!(
                "rule {name}: fires on a healthy target: {others:?}"
            ));
        }
        if !stuck.is_empty() && !STUCK_ALERTS.contains(&name.as_str()) {
            failures.push(format!("rule {name}: finds the stuck app: {stuck:?}"));
        }
        if name == "DbcanaryAppNotRecovered"
            && !stuck.iter().any(|s| s["metric"]["dependency"] == "cache")
        {
            failures.push(format!(
                "rule {name}: does not find {STUCK} not recovered after cache: {found:?}"
            ));
        }
    }
    let alerts = prom.api("/api/v1/alerts").await;
    let firing: Vec<&Value> = alerts["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["state"] == "firing")
        .collect();
    let unexpected: Vec<&&Value> = firing
        .iter()
        .filter(|a| {
            a["labels"]["target"] != STUCK
                || !STUCK_ALERTS.iter().any(|n| a["labels"]["alertname"] == *n)
        })
        .collect();
    if !unexpected.is_empty() {
        failures.push(format!("alerts firing: {unexpected:?}"));
    }
    if !firing.iter().any(|a| stuck_alert(a)) {
        failures.push(format!(
            "DbcanaryAppNotRecovered no longer fires for {STUCK}: {firing:?}"
        ));
    }

    assert!(
        failures.is_empty(),
        "{} of {checked} queries failed against prometheus:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        prom.tail()
    );
    eprintln!(
        "{checked} dashboard and alert queries checked against prometheus in {:?}",
        t0.elapsed()
    );
}

#[test]
fn label_values_become_promql() {
    assert_eq!(
        label_values_promql(r#"label_values(dbcanary_up{store=~"$store"}, target)"#),
        r#"count by (target) (dbcanary_up{store=~"$store"})"#
    );
    assert_eq!(
        substitute(r#"rate(x{target=~"$target",store=~"${store}"}[$__rate_interval])"#),
        r#"rate(x{target=~"cache",store=~"redis"}[1m])"#
    );
}
