//! Drills through a running agent (`POST /api/v1/drills`, `[drills]
//! enabled`) against a real Redis and the test apps of `support::app`:
//! judged from the agent's own canaries, one at a time, the result in the
//! drill's report, in `/api/v1/targets` and in `dbcanary_drills_total`;
//! refused while disabled, without credentials, for a bad request, and for
//! a shell command unless `allow_exec`.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::app::{Behaviour, app_toml, start_app};
use support::drill::DRILL_WITHIN;
use support::redis::RedisServer;
use support::{Agent, HttpResponse, Pacing, check, http_request, poll_until};

const UP_WITHIN: Duration = Duration::from_secs(20);
const PASSWORD: &str = "drill-S3cret-pw";
const USER: &str = "ops";
const API_PASSWORD: &str = "api-S3cret-pw";

/// A password-protected Redis, a reconnecting app `shop` and a
/// never-reconnecting app `legacy` on it, and an agent with drills enabled
/// watching all three.
async fn setup(extra: &str) -> (RedisServer, Agent) {
    let redis = RedisServer::start_with("redis", &[], Some(PASSWORD)).await;
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", redis.port);
    let good = start_app(Behaviour::Reconnects, &url).await;
    let broken = start_app(Behaviour::NeverReconnects, &url).await;
    let agent = Agent::builder()
        .pacing(Pacing::FAST)
        .basic_auth(USER, API_PASSWORD)
        .toml(&format!("[drills]\nenabled = true\n{extra}"))
        .target("cache", &url)
        .toml(&app_toml("shop", &good, &["cache"], "3s"))
        .toml(&app_toml("legacy", &broken, &["cache"], "3s"))
        .start()
        .await;
    for t in ["cache", "shop", "legacy"] {
        agent.wait_up(t, true, UP_WITHIN).await;
    }
    (redis, agent)
}

fn body(r: &HttpResponse) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.body))
}

async fn post(agent: &Agent, request: &Value) -> HttpResponse {
    agent
        .request("POST", "/api/v1/drills", &request.to_string())
        .await
}

/// Waits until drill `id` is over and returns it.
async fn finished(agent: &Agent, id: &str) -> Value {
    let path = format!("/api/v1/drills/{id}");
    let mut last = Value::Null;
    poll_until(DRILL_WITHIN, "the drill over", async || {
        let r = agent.get(&path).await;
        assert_eq!(r.status, 200, "{}", r.body);
        last = body(&r);
        check(last["status"] == "done", last.clone())
    })
    .await;
    last
}

fn app<'a>(drill: &'a Value, name: &str) -> &'a Value {
    drill["apps"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == name))
        .unwrap_or_else(|| panic!("no app {name} in {drill}"))
}

/// kill-clients through the API: the agent's canary is spared, the app
/// that reconnects recovers, the one that does not is named, the drill
/// fails; a second request while it runs is refused; the result is in the
/// drill's report, in both apps' and the store's `last_drill`, and in
/// `dbcanary_drills_total`; no answer and no log line holds a password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_drill_judges_the_apps_on_the_agents_own_canaries() {
    let (_redis, agent) = setup("").await;
    let request = json!({ "store": "cache", "action": "kill-clients" });
    let started = post(&agent, &request).await;
    assert_eq!(started.status, 202, "{}", started.body);
    let answer = body(&started);
    let id = answer["id"].as_str().expect("an id").to_string();
    assert_eq!(answer["status"], "running", "{answer}");
    assert_eq!(answer["plan"]["target"], "cache", "{answer}");
    let names: Vec<&str> = answer["plan"]["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["shop", "legacy"],
        "every app of the store: {answer}"
    );

    let again = post(&agent, &request).await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(again.body.contains("one drill at a time"), "{}", again.body);

    let drill = finished(&agent, &id).await;
    let report = &drill["report"];
    assert_eq!(drill["result"], "failed", "{drill}");
    let d = &report["drills"][0];
    assert_eq!(
        d["store"]["outages"].as_array().map(Vec::len),
        Some(0),
        "the agent's canary was spared: {d}"
    );
    assert_eq!(app(d, "legacy")["result"], "not_recovered", "{d}");
    let shop = app(d, "shop")["result"].as_str().unwrap();
    assert!(
        shop == "recovered" || shop == "unaffected",
        "shop reconnects: {d}"
    );
    assert!(
        d["reason"].as_str().unwrap().contains("legacy"),
        "the reason names the broken app: {d}"
    );

    let list = body(&agent.get("/api/v1/drills").await);
    assert_eq!(list["drills"][0]["id"], id.as_str(), "{list}");
    assert_eq!(list["drills"][0]["result"], "failed", "{list}");

    for t in ["cache", "shop", "legacy"] {
        let last = &agent.target(t).await["last_drill"];
        assert_eq!(last["id"], id.as_str(), "{t}: {last}");
        assert_eq!(last["result"], "failed", "{t}: {last}");
        assert_eq!(last["action"], "kill-clients", "{t}: {last}");
    }
    let m = agent.metrics().await;
    for (result, n) in [("failed", 1.0), ("passed", 0.0), ("aborted", 0.0)] {
        assert_eq!(
            m.value(
                "dbcanary_drills_total",
                &[("target", "cache"), ("store", "redis"), ("result", result)]
            ),
            Some(n),
            "{result}: {}",
            m.text
        );
    }
    assert_eq!(
        m.value("dbcanary_up", &[("target", "cache")]),
        Some(1.0),
        "the canary kept its connection"
    );

    let everything = format!(
        "{}\n{}\n{}\n{}",
        drill,
        list,
        agent.get("/api/v1/targets").await.body,
        agent.log()
    );
    for secret in [PASSWORD, API_PASSWORD] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked:\n{everything}"
        );
    }
}

/// Only the reconnecting app: the drill passes, and a drill on it with
/// `repeat` runs that many drills, each counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_drill_passes_when_every_app_recovers_and_repeats() {
    let (_redis, agent) = setup("").await;
    let r = post(
        &agent,
        &json!({ "store": "cache", "apps": ["shop"], "action": "kill-clients", "repeat": 2 }),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = body(&r)["id"].as_str().unwrap().to_string();
    let drill = finished(&agent, &id).await;
    assert_eq!(drill["result"], "passed", "{drill}");
    assert_eq!(
        drill["report"]["drills"].as_array().map(Vec::len),
        Some(2),
        "{drill}"
    );
    assert_eq!(
        agent
            .value(
                "dbcanary_drills_total",
                &[
                    ("target", "cache"),
                    ("store", "redis"),
                    ("result", "passed")
                ]
            )
            .await,
        2.0
    );
    assert!(
        agent.target("legacy").await.get("last_drill").is_none(),
        "legacy took no part"
    );
}

/// What is refused, and why: no credentials (401), a bad body, an unknown
/// store, an app that is not an app (400), a shell command without
/// `allow_exec` (403); a dry run answers the plan and does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_drills_are_checked_before_anything_is_done() {
    let (redis, agent) = setup("").await;
    let unauthenticated = http_request(
        agent.listen,
        "POST",
        "/api/v1/drills",
        &[],
        r#"{"store":"cache","action":"kill-clients"}"#,
    )
    .await
    .unwrap();
    assert_eq!(unauthenticated.status, 401, "{}", unauthenticated.body);
    let cases = [
        (json!({ "store": "cache" }), 400, "missing field `action`"),
        (
            json!({ "store": "cache", "action": "kill-clients", "url": "redis://h" }),
            400,
            "unknown field `url`",
        ),
        (
            json!({ "store": "nope", "action": "kill-clients" }),
            400,
            "no target named \"nope\"",
        ),
        (
            json!({ "store": "cache", "action": "kill-clients", "repeat": 0 }),
            400,
            "repeat must be 1 to",
        ),
        (
            json!({ "store": "cache", "action": "exec", "exec": "true" }),
            403,
            "allow_exec = true",
        ),
    ];
    for (request, status, reason) in cases {
        let r = post(&agent, &request).await;
        assert_eq!(r.status, status, "{request}: {}", r.body);
        let e = body(&r)["error"].as_str().unwrap_or_default().to_string();
        assert!(e.contains(reason), "{request}: {e:?} should say {reason:?}");
    }
    let clients_before = redis.query::<String>(&["CLIENT", "LIST"]).await.unwrap();
    let dry = post(
        &agent,
        &json!({ "store": "cache", "action": "kill-clients", "dry_run": true }),
    )
    .await;
    assert_eq!(dry.status, 200, "{}", dry.body);
    let dry = body(&dry);
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert!(
        dry["plan"]["does"]
            .as_str()
            .unwrap()
            .contains("CLIENT KILL"),
        "{dry}"
    );
    let ids = |list: &str| -> Vec<String> {
        list.lines()
            .filter_map(|l| l.split(' ').next().map(str::to_string))
            .collect()
    };
    let clients_after = redis.query::<String>(&["CLIENT", "LIST"]).await.unwrap();
    let after = ids(&clients_after);
    for id in ids(&clients_before) {
        let harness = clients_before
            .lines()
            .any(|l| l.starts_with(&format!("{id} ")) && l.contains("cmd=client|list"));
        assert!(
            harness || after.contains(&id),
            "a dry run kills nothing: {id} gone\n{clients_before}\n{clients_after}"
        );
    }
    let list = body(&agent.get("/api/v1/drills").await);
    assert_eq!(list["drills"], json!([]), "a dry run is no drill: {list}");
}

/// An agent without `[drills] enabled` refuses every drill request with
/// how to turn drills on.
#[tokio::test]
async fn drills_are_off_unless_enabled() {
    let agent = Agent::builder()
        .pacing(Pacing::FAST)
        .target("cache", "redis://127.0.0.1:1")
        .start()
        .await;
    for (method, path) in [
        ("POST", "/api/v1/drills"),
        ("GET", "/api/v1/drills"),
        ("GET", "/api/v1/drills/1"),
    ] {
        let r = agent
            .request(method, path, r#"{"store":"cache","action":"kill-clients"}"#)
            .await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
        assert!(
            r.body.contains("[drills] enabled = true"),
            "{method} {path}: {}",
            r.body
        );
    }
}
