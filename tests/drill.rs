//! End-to-end: `dbcanary drill` against real servers the tests start
//! (Redis, Sentinel, MariaDB, PostgreSQL) and the test apps of
//! `support::app`, each holding ONE Redis connection: the verdict, the exit
//! code, the report as text, JSON and JUnit, and that nothing happens
//! without `--yes`, or with `--dry-run`.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::app::{Behaviour, start_app};
use support::drill::{Finished, drill, finish, junit_cases, on_terminal, restart_script, start};
use support::mariadb::MariaDb;
use support::postgres::Postgres;
use support::redis::{RedisServer, SentinelSetup};
use support::{Signal, within};

/// The app of `report`'s first drill whose URL is `url`.
fn app<'a>(drill: &'a Value, url: &str) -> &'a Value {
    drill["apps"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["url"] == url))
        .unwrap_or_else(|| panic!("no app {url} in {drill}"))
}

fn outages(drill: &Value) -> &Vec<Value> {
    drill["store"]["outages"]
        .as_array()
        .unwrap_or_else(|| panic!("no outages list in {drill}"))
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A Redis server and an app on it that reconnects after a drop.
async fn redis_with_app() -> (RedisServer, String) {
    let redis = RedisServer::start().await;
    let good = start_app(Behaviour::Reconnects, &redis.url()).await;
    (redis, good)
}

/// `dbcanary drill STORE --app APP ARGS...` in a directory of its own.
async fn drill_on(store: &str, app: &str, args: &[&str]) -> Finished {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec![store, "--app", app];
    all.extend_from_slice(args);
    drill(dir.path(), &all).await
}

/// A kill-clients drill that passed and spared the canary: no outage, the
/// canary's connection seen and kept, `victim` killed, the app unaffected.
fn spared_the_canary(out: &Finished, victim: &str, app_url: &str) {
    out.expect_code(0);
    let d = &out.json()["drills"][0];
    assert!(outages(d).is_empty(), "the canary is spared: {d}");
    let detail = d["action"]["detail"].as_str().unwrap();
    assert!(detail.contains(victim), "{victim} in {detail}");
    assert!(!detail.contains("was not among them"), "{detail}");
    assert_eq!(app(d, app_url)["result"], "unaffected", "{d}");
}

/// kill-clients on `store` with one app, as JSON.
const KILL: &[&str] = &["--action", "kill-clients", "--yes", "--json"];

/// A reconnecting app and a never-reconnecting one, both on a Redis whose
/// clients are killed: the first recovers quickly, the second does not,
/// the canary is spared, and the exit code is 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_clients_tells_the_app_that_reconnects_from_the_one_that_does_not() {
    let (redis, good) = redis_with_app().await;
    let broken = start_app(Behaviour::NeverReconnects, &redis.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("drill.xml");
    let out = drill(
        dir.path(),
        &[
            &redis.url(),
            "--app",
            &good,
            "--app",
            &broken,
            "--action",
            "kill-clients",
            "--recovery-deadline",
            "2s",
            "--yes",
            "--json",
            "--junit",
            path(&junit),
        ],
    )
    .await;
    out.expect_code(1);
    let r = out.json();
    assert_eq!(r["result"], "failed", "{out}");
    assert_eq!(r["exit_code"], 1);
    let d = &r["drills"][0];
    assert_eq!(d["result"], "failed", "{d}");
    assert!(outages(d).is_empty(), "the canary is spared: {d}");
    assert_eq!(d["store"]["state"], "back", "{d}");
    let detail = d["action"]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("killed 2 client connections"),
        "{detail}"
    );
    let g = app(d, &good);
    assert_eq!(g["result"], "recovered", "{g}");
    let lag = g["lag_s"].as_f64().unwrap();
    assert!((0.0..3.0).contains(&lag), "a small lag: {g}");
    assert!(g["unhealthy_at_s"].as_f64().is_some(), "{g}");
    let b = app(d, &broken);
    assert_eq!(b["result"], "not_recovered", "{b}");
    assert!(b["lag_s"].is_null(), "{b}");
    let name = b["name"].as_str().unwrap();
    assert!(
        d["reason"].as_str().unwrap().contains(name),
        "the reason names the broken app: {d}"
    );
    assert!(out.stderr.contains("drill 1 of 1: kill-clients"), "{out}");

    let cases = junit_cases(&junit);
    assert_eq!(cases.len(), 2, "{cases:?}");
    for c in &cases {
        assert_eq!(
            c.classname,
            format!("dbcanary.drill.{}.kill-clients", redis.addr())
        );
        assert_eq!(
            c.suite,
            format!("drill 1: kill-clients on {}", redis.addr())
        );
        assert!(c.error.is_none(), "{c:?}");
    }
    let failed: Vec<_> = cases.iter().filter(|c| c.failure.is_some()).collect();
    assert_eq!(failed.len(), 1, "{cases:?}");
    assert_eq!(failed[0].name, format!("{name} (drill 1)"));
    assert!(
        failed[0]
            .failure
            .as_ref()
            .unwrap()
            .contains("did not recover within 2s"),
        "{failed:?}"
    );
}

/// `--repeat 3` with an app that reconnects: three drills, each passed,
/// exit 0; the text report says the canary had no outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_kill_clients_drills_pass_with_an_app_that_reconnects() {
    let (redis, good) = redis_with_app().await;
    let out = drill_on(
        &redis.url(),
        &good,
        &["--action", "kill-clients", "--repeat", "3", "--yes"],
    )
    .await;
    out.expect_code(0);
    let text = &out.stdout;
    for n in 1..=3 {
        assert!(
            text.contains(&format!("drill {n} of 3, ")),
            "drill {n}:\n{out}"
        );
    }
    assert_eq!(text.matches("no outage of the canary").count(), 3, "{out}");
    assert_eq!(
        text.matches("recovered ").count(),
        3,
        "the app recovered three times:\n{out}"
    );
    assert!(
        text.contains("result: passed (exit 0): 3 of 3 drills passed"),
        "{out}"
    );
}

/// MariaDB: a session the test holds (a stand-in application) is killed,
/// the canary's is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_kill_clients_drops_other_sessions_and_spares_the_canary() {
    use mysql_async::prelude::Queryable;
    let db = MariaDb::start("mariadb", &[]).await;
    let mut stand_in = db.conn().await;
    let id: u64 = stand_in
        .query_first("SELECT CONNECTION_ID()")
        .await
        .unwrap()
        .unwrap();
    let steady = start_app(Behaviour::Static, "redis://127.0.0.1:1").await;
    let out = drill_on(&db.url("root", None), &steady, KILL).await;
    spared_the_canary(&out, &format!("id {id} (root@"), &steady);
    let ping = within(
        Duration::from_secs(5),
        "the stand-in's ping",
        stand_in.ping(),
    )
    .await;
    assert!(ping.is_err(), "the stand-in's session was killed");
}

/// PostgreSQL: a backend the test holds is terminated, the canary's is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kill_clients_terminates_other_backends_and_spares_the_canary() {
    let pg = Postgres::start("pg", &[]).await;
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(pg.port)
        .user("postgres")
        .dbname("postgres")
        .application_name("stand-in")
        .connect_timeout(Duration::from_secs(5))
        .connect(tokio_postgres::NoTls)
        .await
        .expect("the stand-in connects");
    let driver = tokio::spawn(connection);
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let steady = start_app(Behaviour::Static, "redis://127.0.0.1:1").await;
    let out = drill_on(&pg.url("postgres", None), &steady, KILL).await;
    spared_the_canary(&out, &format!("pid {pid} (postgres"), &steady);
    let ended = within(
        Duration::from_secs(5),
        "the stand-in's connection to end",
        driver,
    )
    .await
    .expect("the driver task");
    assert!(ended.is_err(), "the server ended it: {ended:?}");
    assert!(client.is_closed());
}

/// Sentinel: `SENTINEL FAILOVER`; the canary follows the new master and
/// the report says the outage was a failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_moves_the_canary_to_the_new_master() {
    let setup = SentinelSetup::start().await;
    let good = start_app(Behaviour::Reconnects, &setup.master.url()).await;
    let out = drill_on(
        &setup.url(),
        &good,
        &[
            "--action",
            "failover",
            "--recovery-deadline",
            "20s",
            "--restore-timeout",
            "60s",
            "--yes",
            "--json",
        ],
    )
    .await;
    out.expect_code(0);
    let d = &out.json()["drills"][0];
    assert_eq!(d["store"]["before"]["address"], setup.master.addr(), "{d}");
    assert_eq!(d["store"]["after"]["address"], setup.replica.addr(), "{d}");
    assert_eq!(d["store"]["after"]["role"], "primary", "{d}");
    assert!(
        outages(d).iter().any(|o| o["report"]["kind"] == "failover"),
        "an outage of kind failover:\n{out}\n{}",
        setup.logs()
    );
    assert!(
        d["action"]["detail"]
            .as_str()
            .unwrap()
            .contains("accepted SENTINEL FAILOVER mymaster"),
        "{d}"
    );
}

/// `--action restart --exec`: a script that kills the server and starts it
/// again on the same port; the outage is a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_restart_is_measured_as_a_restart() {
    let (redis, good) = redis_with_app().await;
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (script, _server) = restart_script(&redis, data.path());
    let out = drill(
        dir.path(),
        &[
            &redis.url(),
            "--app",
            &good,
            "--action",
            "restart",
            "--exec",
            &script,
            "--yes",
            "--json",
        ],
    )
    .await;
    out.expect_code(0);
    let d = &out.json()["drills"][0];
    let o = outages(d);
    assert_eq!(o.len(), 1, "{d}");
    assert_eq!(o[0]["report"]["kind"], "restart", "{d}");
    assert_eq!(d["action"]["exec"]["exit_code"], 0, "{d}");
    assert_eq!(app(d, &good)["result"], "recovered", "{d}");
    let over = d["store"]["over_at_s"].as_f64().unwrap();
    assert!(over >= 0.5, "the fault is over after the restart: {d}");
}

/// An `--exec` that fails: exit 3, with its status and output in the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_exec_is_a_drill_not_performed_with_its_output() {
    let (redis, good) = redis_with_app().await;
    let out = drill_on(
        &redis.url(),
        &good,
        &[
            "--action",
            "exec",
            "--exec",
            "echo it broke >&2; exit 7",
            "--yes",
            "--json",
        ],
    )
    .await;
    out.expect_code(3);
    let r = out.json();
    assert_eq!(r["result"], "not_performed", "{out}");
    let a = &r["drills"][0]["action"];
    assert_eq!(a["ok"], false, "{a}");
    assert_eq!(a["failure"], "command", "{a}");
    assert_eq!(a["exec"]["exit_code"], 7, "{a}");
    assert_eq!(a["exec"]["stderr"], "it broke\n", "{a}");
    assert!(
        r["drills"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("exited with status 7"),
        "{r}"
    );
}

/// Without `--yes` (and no terminal) nothing is done: exit 2, the apps'
/// connections survive, and not even a canary connects. `--dry-run` prints
/// the plan and connects to nothing either. A bad combination is exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_happens_without_yes_or_with_dry_run() {
    let (redis, good) = redis_with_app().await;
    // Every client but the listing's own, the newest.
    let mut app_clients: Vec<i64> = redis
        .clients()
        .await
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    app_clients.sort();
    app_clients.pop();
    assert!(!app_clients.is_empty(), "the app's connection");
    let received = async || -> u64 {
        redis.info("stats").await.unwrap()["total_connections_received"]
            .parse()
            .unwrap()
    };
    let before = received().await;
    let dir = tempfile::tempdir().unwrap();
    let args = [
        redis.url(),
        "--app".into(),
        good.clone(),
        "--action".into(),
        "kill-clients".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let refused = drill(dir.path(), &args).await;
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("without --yes") && refused.stderr.contains("nothing was done"),
        "{refused}"
    );
    assert!(refused.stdout.is_empty(), "{refused}");

    let mut dry_args = args.clone();
    dry_args.push("--dry-run");
    let dry = drill(dir.path(), &dry_args).await;
    dry.expect_code(0);
    assert!(dry.stdout.contains("CLIENT KILL ID"), "{dry}");
    assert!(
        dry.stdout.contains(&format!("dbcanary:{}", redis.addr())),
        "the plan names the canary it spares: {dry}"
    );
    assert!(dry.stdout.contains("dry run: nothing was done"), "{dry}");

    let usage = drill(
        dir.path(),
        &[
            &redis.url(),
            "--app",
            &good,
            "--action",
            "failover",
            "--yes",
        ],
    )
    .await;
    usage.expect_code(2);
    assert!(usage.stderr.contains("through Sentinel"), "{usage}");

    assert_eq!(
        received().await,
        before + 1,
        "no connection but this query's since the first count"
    );
    let now: Vec<i64> = redis
        .clients()
        .await
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    for id in &app_clients {
        assert!(now.contains(id), "connection {id} survives: {now:?}");
    }
}

/// The planted passwords (the canary's in the store URL, the drill
/// credential's, an app's) appear nowhere: not in the text or JSON report,
/// the JUnit files, the progress lines, or an `--exec` command's output
/// that echoes them. The default user may not CLIENT KILL, so a passing
/// kill-clients drill acted with the drill credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_passwords_appear_nowhere() {
    const CANARY_PW: &str = "canary-pw-planted";
    const DRILL_PW: &str = "drill-pw-planted";
    const APP_PW: &str = "app-pw-planted";
    let redis = RedisServer::start_with("redis", &[], Some(CANARY_PW)).await;
    let _: String = redis
        .query(&[
            "ACL",
            "SETUSER",
            "drill",
            "on",
            &format!(">{DRILL_PW}"),
            "~*",
            "&*",
            "+@all",
        ])
        .await
        .unwrap();
    let _: String = redis
        .query(&["ACL", "SETUSER", "default", "-client|kill"])
        .await
        .unwrap();
    let store = format!("redis://:{CANARY_PW}@127.0.0.1:{}", redis.port);
    let drill_url = format!("redis://drill:{DRILL_PW}@127.0.0.1:{}", redis.port);
    let good = start_app(Behaviour::Reconnects, &store).await;
    let app_url = good.replace("http://", &format!("http://shop:{APP_PW}@"));
    let dir = tempfile::tempdir().unwrap();
    let (junit1, junit2) = (dir.path().join("k.xml"), dir.path().join("e.xml"));
    let killed = drill(
        dir.path(),
        &[
            &store,
            "--app",
            &app_url,
            "--action",
            "kill-clients",
            "--drill-url",
            &drill_url,
            "--yes",
            "--json",
            "--junit",
            path(&junit1),
        ],
    )
    .await;
    killed.expect_code(0);
    let echo = format!("echo canary {CANARY_PW} drill {DRILL_PW}; echo {store} >&2");
    let echoed = drill(
        dir.path(),
        &[
            &store,
            "--app",
            &app_url,
            "--action",
            "exec",
            "--exec",
            &echo,
            "--drill-url",
            &drill_url,
            "--yes",
            "--junit",
            path(&junit2),
        ],
    )
    .await;
    echoed.expect_code(0);
    assert!(
        echoed.stdout.contains("| canary *** drill ***"),
        "the output is shown, masked:\n{echoed}"
    );
    let texts: [(&str, String); 4] = [
        ("kill-clients run", killed.all()),
        ("exec run", echoed.all()),
        (
            "kill-clients JUnit",
            std::fs::read_to_string(&junit1).unwrap(),
        ),
        ("exec JUnit", std::fs::read_to_string(&junit2).unwrap()),
    ];
    for (what, text) in &texts {
        for planted in [CANARY_PW, DRILL_PW, APP_PW] {
            assert!(!text.contains(planted), "{planted} in the {what}:\n{text}");
        }
    }
    assert_eq!(junit_cases(&junit2).len(), 1);
    assert!(killed.stdout.contains("redis://drill:***@"), "{killed}");
}

/// An app that never answers: the drill is not performed (exit 3) and
/// says who was not healthy; the store is not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_app_stops_the_drill_before_the_action() {
    let (redis, good) = redis_with_app().await;
    let nowhere = format!("http://127.0.0.1:{}/health", support::free_port());
    let out = drill_on(
        &redis.url(),
        &good,
        &[
            "--app",
            &nowhere,
            "--action",
            "kill-clients",
            "--ready-timeout",
            "1s",
            "--yes",
            "--json",
        ],
    )
    .await;
    out.expect_code(3);
    let d = &out.json()["drills"][0];
    assert_eq!(d["result"], "not_performed", "{d}");
    let reason = d["reason"].as_str().unwrap();
    assert!(
        reason.contains("not healthy within 1s, nothing was done") && reason.contains("refused"),
        "{reason}"
    );
    assert!(d["action"].is_null(), "{d}");
    assert_eq!(app(d, &good)["result"], "not_judged", "{d}");
}

/// `--action restart --allow-shutdown` sends SHUTDOWN; with no supervisor
/// to start the server again, the store does not come back: exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_without_a_supervisor_fails_the_drill() {
    let (redis, good) = redis_with_app().await;
    let out = drill_on(
        &redis.url(),
        &good,
        &[
            "--action",
            "restart",
            "--allow-shutdown",
            "--restore-timeout",
            "1s",
            "--yes",
            "--json",
        ],
    )
    .await;
    out.expect_code(1);
    let d = &out.json()["drills"][0];
    assert_eq!(d["store"]["state"], "not_back", "{d}");
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("the store did not come back within 1s"),
        "{d}"
    );
    assert!(
        d["action"]["detail"]
            .as_str()
            .unwrap()
            .contains("SHUTDOWN sent"),
        "{d}"
    );
    assert!(
        !support::redis::ping_raw(redis.port, None).await,
        "the server is gone"
    );
}

/// Ctrl-C while the store is down: the drill stops at once and still
/// prints what it measured (exit 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_drill_and_prints_what_was_measured() {
    let (redis, good) = redis_with_app().await;
    let dir = tempfile::tempdir().unwrap();
    let kill = format!("kill -9 {}", redis.pid());
    let p = start(
        dir.path(),
        &[
            &redis.url(),
            "--app",
            &good,
            "--action",
            "exec",
            "--exec",
            &kill,
            "--yes",
        ],
    );
    support::poll_until(
        Duration::from_secs(30),
        "the drill to see the store lost",
        async || support::check(p.stderr_text().contains("lost ("), p.tail(10)),
    )
    .await;
    p.signal(Signal::Int);
    let out = finish(p).await;
    out.expect_code(3);
    assert!(
        out.stdout
            .contains("ABORTED (interrupted (Ctrl-C) before every app was judged)"),
        "{out}"
    );
    assert!(out.stdout.contains("store   lost at +"), "{out}");
    assert!(out.stdout.contains("not back"), "{out}");
}

/// Without `--yes` on a terminal, the drill asks, naming the target and
/// the action: anything but `yes` does nothing (exit 2), `yes` runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_the_drill_asks_first() {
    let (redis, good) = redis_with_app().await;
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let args = [url.as_str(), "--app", &good, "--action", "kill-clients"];
    let received = async || -> u64 {
        redis.info("stats").await.unwrap()["total_connections_received"]
            .parse()
            .unwrap()
    };
    let before = received().await;
    let no = finish(on_terminal(dir.path(), &args, "no")).await;
    no.expect_code(2);
    let asked = format!(
        "dbcanary drill: kill-clients on {0} ({0}), 1 time:",
        redis.addr()
    );
    assert!(no.stdout.contains(&asked), "{no}");
    assert!(no.stdout.contains("CLIENT KILL ID"), "{no}");
    assert!(
        no.stdout.contains("not confirmed: nothing was done"),
        "{no}"
    );
    assert_eq!(received().await, before + 1, "nothing connected");
    let yes = finish(on_terminal(dir.path(), &args, "yes")).await;
    yes.expect_code(0);
    assert!(yes.stdout.contains("result: passed (exit 0)"), "{yes}");
}

/// kill-clients that finds nobody to kill (`--kill-user` matching no
/// client) did not perform the drill: exit 3, and the app is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_clients_that_kills_nobody_is_not_a_drill() {
    let (redis, good) = redis_with_app().await;
    let out = drill_on(
        &redis.url(),
        &good,
        &[
            "--action",
            "kill-clients",
            "--kill-user",
            "nobody",
            "--yes",
            "--json",
        ],
    )
    .await;
    out.expect_code(3);
    let a = &out.json()["drills"][0]["action"];
    assert_eq!(a["failure"], "no_effect", "{a}");
    assert!(
        a["detail"]
            .as_str()
            .unwrap()
            .starts_with("nothing was killed"),
        "{a}"
    );
}

/// MongoDB failover sends `replSetStepDown` to the primary through the
/// real driver; a server that refuses it (the mock members know no such
/// command) leaves the drill not performed, in the server's words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_failover_asks_the_primary_and_reports_its_refusal() {
    let rs = support::mongo::ReplicaSet::start(2).await;
    let steady = start_app(Behaviour::Static, "redis://127.0.0.1:1").await;
    let out = drill_on(
        &rs.url("", "heartbeatFrequencyMS=500"),
        &steady,
        &["--action", "failover", "--yes", "--json"],
    )
    .await;
    out.expect_code(3);
    let a = &out.json()["drills"][0]["action"];
    assert_eq!(a["failure"], "refused", "{a}");
    let detail = a["detail"].as_str().unwrap();
    assert!(
        detail.contains("refused replSetStepDown")
            && detail
                .to_lowercase()
                .contains("no such command: replsetstepdown"),
        "{detail}"
    );
}
