//! The plan's refusals (each an exit 2 with its message) and what a plan
//! takes from the flags and from a configuration file.

use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cmd {
    #[command(flatten)]
    drill: DrillArgs,
}

fn args(line: &str) -> DrillArgs {
    let argv = std::iter::once("drill").chain(line.split_whitespace());
    Cmd::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("{line}: {e}"))
        .drill
}

/// A configuration with a Redis store, a MongoDB store, an app that
/// depends on the cache and one that depends on nothing.
fn config() -> Config {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("dbcanary.toml");
    std::fs::write(
        &p,
        "[discovery]\nenv = false\n\
         [[target]]\nname = \"cache\"\nurl = \"redis://:hunter2@127.0.0.1:6379\"\n\
         [[target]]\nname = \"docs\"\nurl = \"mongodb://127.0.0.1:27017\"\n\
         [[target]]\nname = \"shop\"\nurl = \"http://127.0.0.1:8080/health\"\ndepends_on = [\"cache\"]\nrecovery_deadline = \"5s\"\n\
         [[target]]\nname = \"lonely\"\nurl = \"http://127.0.0.1:8081/health\"\n",
    )
    .unwrap();
    struct NoEnv;
    impl config::Env for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
        fn vars(&self) -> Vec<(String, String)> {
            Vec::new()
        }
    }
    config::load(Some(&p), &NoEnv).unwrap()
}

/// (flags, with the config, words of the refusal)
const REFUSED: &[(&str, bool, &str)] = &[
    ("--action kill-clients", false, "give the store to drill"),
    (
        "redis://127.0.0.1:6379 --action kill-clients",
        false,
        "at least one --app",
    ),
    (
        "redis://127.0.0.1:6379 --app shop --action kill-clients",
        false,
        "without --config, an app is an http",
    ),
    (
        "redis://127.0.0.1:6379 --store cache --app http://h/x --action kill-clients",
        false,
        "--store names a target of --config",
    ),
    (
        "redis://127.0.0.1:6379 --app http://h/x --action kill-clients",
        true,
        "not both",
    ),
    (
        "--app shop --action kill-clients",
        true,
        "--config needs --store NAME",
    ),
    (
        "--store nope --action kill-clients",
        true,
        "no target named \"nope\" (stores: cache, docs)",
    ),
    (
        "--store shop --action kill-clients",
        true,
        "is an application",
    ),
    (
        "--store docs --action kill-clients --app shop",
        true,
        "killAllSessions",
    ),
    (
        "--store cache --app docs --action kill-clients",
        true,
        "not an application",
    ),
    (
        "--store cache --app nope --action kill-clients",
        true,
        "applications: shop, lonely",
    ),
    (
        "--store docs --action failover",
        true,
        "no application depends on \"docs\"",
    ),
    (
        "--store cache --app shop --app shop --action kill-clients",
        true,
        "given twice",
    ),
    (
        "redis://127.0.0.1:6379 --app http://h/x --action failover",
        false,
        "through Sentinel",
    ),
    (
        "mysql://root@127.0.0.1:3306 --app http://h/x --action failover",
        false,
        "belongs to its HA tool",
    ),
    (
        "postgresql://postgres@127.0.0.1:5432 --app http://h/x --action failover",
        false,
        "--action exec",
    ),
    (
        "mysql://root@h --app http://h/x --action restart --allow-shutdown",
        false,
        "for other stores give --exec",
    ),
    (
        "redis://h --app http://h/x --action restart",
        false,
        "needs --exec CMD",
    ),
    (
        "redis://h --app http://h/x --action exec",
        false,
        "--action exec needs --exec",
    ),
    (
        "redis://h --app http://h/x --action kill-clients --exec true",
        false,
        "--exec goes with --action exec or restart",
    ),
    (
        "redis://h --app http://h/x --action failover --kill-user bob",
        false,
        "--kill-user goes with --action kill-clients",
    ),
    (
        "redis://h --app http://h/x --action kill-clients --kill-application shop",
        false,
        "PostgreSQL's application_name",
    ),
    (
        "redis://h --app http://h/x --action exec --exec true --allow-shutdown",
        false,
        "--allow-shutdown goes with",
    ),
    (
        "redis://h --app http://h/x --action kill-clients --exec-timeout 5s",
        false,
        "--exec-timeout goes with --exec",
    ),
    (
        "redis://h --app http://h/x --action kill-clients --interval 1ms",
        false,
        "--interval 1ms is out of range",
    ),
    (
        "redis://h --app http://h/x --action kill-clients --interval soon",
        false,
        "--interval: invalid duration",
    ),
    (
        "redis://h --app http://h/x --action kill-clients --ready-timeout 0s",
        false,
        "--ready-timeout 0s is out of range",
    ),
    (
        "redis://h --app http://h/x --action kill-clients --repeat 0",
        false,
        "--repeat must be 1 to 100",
    ),
    (
        "redis://h --app http://h/x --action kill-clients --drill-url mysql://root@h",
        false,
        "give a URL of the same store",
    ),
    (
        "redis://h --app http://h/x --action kill-clients --drill-url nope",
        false,
        "--drill-url: not a URL",
    ),
    (
        "redis://h --app redis://h2 --action kill-clients",
        false,
        "an app is an http",
    ),
    (
        "redis://h --app http://h/x --action kill-clients --junit /nonexistent/dir/r.xml",
        false,
        "does not exist",
    ),
    (
        "ftp://h --app http://h/x --action kill-clients",
        false,
        "the store URL 1: unknown scheme",
    ),
];

#[test]
fn bad_combinations_are_usage_errors_that_say_what_to_do() {
    let cfg = config();
    for (line, with_config, words) in REFUSED {
        let a = args(line);
        let e = Plan::from_args(&a, with_config.then_some(&cfg))
            .map(|p| p.describe())
            .expect_err(line);
        assert!(e.0.contains(words), "{line}: {e}");
        assert!(!e.0.contains("hunter2"), "{line}: {e}");
    }
}

#[test]
fn a_config_drill_takes_the_dependent_apps_and_their_deadlines() {
    let cfg = config();
    let p = Plan::from_args(&args("--store cache --action kill-clients"), Some(&cfg)).unwrap();
    assert_eq!(p.names(), ["cache", "shop"]);
    assert_eq!(p.apps[0].recovery_deadline, Duration::from_secs(5));
    assert_eq!(p.store.settings.interval, DEFAULT_INTERVAL);
    assert_eq!(p.store.settings.backoff.max, DEFAULT_INTERVAL);
    assert!(!p.drill_credential);
    let p = Plan::from_args(
        &args("--store cache --app shop --app http://127.0.0.1:9/h --action restart --exec true --recovery-deadline 3s --interval 250ms"),
        Some(&cfg),
    )
    .unwrap();
    assert_eq!(p.names(), ["cache", "shop", "127.0.0.1:9"]);
    assert!(
        p.apps
            .iter()
            .all(|a| a.recovery_deadline == Duration::from_secs(3))
    );
    assert_eq!(p.apps[1].settings.interval, Duration::from_millis(250));
    assert!(matches!(
        p.action,
        Action::Exec { restart: true, timeout, .. } if timeout == DEFAULT_EXEC_TIMEOUT
    ));
    assert_eq!(p.action.name(), ActionName::Restart);
}

#[test]
fn the_plan_says_what_happens_where_without_secrets() {
    let p = Plan::from_args(
        &args("redis://:hunter2@127.0.0.1:6379 --app http://127.0.0.1:8080/health --action kill-clients --kill-user app --drill-url redis://admin:s3cret@127.0.0.1:6379 --repeat 3"),
        None,
    )
    .unwrap();
    let view = p.view(&p.secrets());
    let text = view.text();
    assert!(text.contains("kill-clients on 127.0.0.1:6379"), "{text}");
    assert!(text.contains("CLIENT KILL ID"), "{text}");
    assert!(text.contains("dbcanary:127.0.0.1:6379"), "{text}");
    assert!(text.contains("as admin (the drill credential)"), "{text}");
    assert!(text.contains("only those of user app"), "{text}");
    assert!(text.contains("3 drills"), "{text}");
    assert!(text.contains("redis://admin:***@127.0.0.1:6379"), "{text}");
    let json = serde_json::to_string(&view).unwrap();
    for t in [&text, &json] {
        assert!(!t.contains("hunter2") && !t.contains("s3cret"), "{t}");
    }
    let p = Plan::from_args(
        &args("redis+sentinel://127.0.0.1:26379/mymaster --app http://h/x --action failover"),
        None,
    )
    .unwrap();
    assert!(
        p.describe().starts_with("SENTINEL FAILOVER mymaster"),
        "{}",
        p.describe()
    );
    let p = Plan::from_args(
        &args("redis://h --app http://h/x --action restart --allow-shutdown"),
        None,
    )
    .unwrap();
    assert_eq!(p.action, Action::Shutdown);
    assert!(
        p.describe().starts_with("SHUTDOWN on the server h:6379"),
        "{}",
        p.describe()
    );
}
