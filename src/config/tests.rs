//! Config fixtures: every refusal names the file, the key and the reason.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use super::*;
use crate::model::MetricDetail;
use crate::stores::http::StatusMatch;

struct MapEnv(HashMap<String, String>);

impl MapEnv {
    fn new(pairs: &[(&str, &str)]) -> Self {
        Self(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
    fn vars(&self) -> Vec<(String, String)> {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::File::create(&p)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    p
}

fn load_text(text: &str, env: &[(&str, &str)]) -> (PathBuf, Result<Config, ConfigError>) {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "dbcanary.toml", text);
    let r = load(Some(&p), &MapEnv::new(env));
    (p, r)
}

/// (fixture, key, words the reason must contain)
const REFUSED: &[(&str, &str, &str)] = &[
    (
        "[agent]\nlisten = \"nope\"\n",
        "agent.listen",
        "not an address",
    ),
    (
        "[agent]\nlog_format = \"xml\"\n",
        "agent.log_format",
        "\"text\" or \"json\"",
    ),
    (
        "[agent]\nlisen = \"127.0.0.1:1\"\n",
        "agent",
        "unknown field `lisen`",
    ),
    (
        "[defaults]\ninterval = \"soon\"\n",
        "defaults.interval",
        "invalid duration",
    ),
    (
        "[defaults]\ntimeout = \"0s\"\n",
        "defaults.timeout",
        "greater than zero",
    ),
    (
        "[defaults]\nbackoff = { initial = \"2s\", max = \"1s\" }\n",
        "defaults.backoff.max",
        "not be smaller",
    ),
    (
        "[defaults]\nbackoff = { multiplier = 0.5 }\n",
        "defaults.backoff.multiplier",
        "between 1.0 and 100.0",
    ),
    (
        "[[target]]\nurl = \"redis://h\"\n",
        "target[0].name",
        "missing",
    ),
    (
        "[[target]]\nname = \"Cache\"\nurl = \"redis://h\"\n",
        "target[0].name",
        "not a valid name",
    ),
    (
        "[[target]]\nname = \"a\"\n",
        "target[0].url",
        "give url or url_env",
    ),
    (
        "[[target]]\nname = \"a\"\nurl = \"redis://h\"\nurl_env = \"X\"\n",
        "target[0].url",
        "not both",
    ),
    (
        "[[target]]\nname = \"a\"\nurl_env = \"NOT_SET_ANYWHERE\"\n",
        "target[0].url_env",
        "NOT_SET_ANYWHERE is not set",
    ),
    (
        "[[target]]\nname = \"a\"\nurl = \"ftp://h\"\n",
        "target[0].url",
        "unknown scheme \"ftp\"",
    ),
    // Values that would panic or flood at run time are refused here.
    (
        "[defaults]\ninterval = \"18446744073709551615s\"\n",
        "defaults.interval",
        "out of range",
    ),
    (
        "[defaults]\ninterval = \"1ns\"\n",
        "defaults.interval",
        "out of range",
    ),
    (
        "[defaults]\nbackoff = { max = \"18446744073709551615s\" }\n",
        "defaults.backoff.max",
        "out of range",
    ),
    (
        "[defaults]\nbackoff = { fine = \"1ms\" }\n",
        "defaults.backoff.fine",
        "out of range",
    ),
    (
        "[defaults]\nbackoff = { fine_not_ready = -1 }\n",
        "defaults.backoff.fine_not_ready",
        "whole number of attempts",
    ),
    (
        "[defaults]\nidentity_every = 1.5\n",
        "defaults.identity_every",
        "whole number",
    ),
    (
        "[defaults]\nmetrics = \"full\"\n",
        "defaults.metrics",
        "use \"basic\" (at most 40 series per target) or \"detailed\"",
    ),
    (
        "[[target]]\nname = \"a\"\nurl = \"redis://h\"\nmetrics = \"Detailed\"\n",
        "target[0].metrics",
        "unknown value \"Detailed\"",
    ),
    (
        "[agent]\nattempts_per_second = 0\n",
        "agent.attempts_per_second",
        "out of range",
    ),
    (
        "[[target]]\nname = \"a\"\nurl = \"redis://h\"\nrecovery_deadline = \"100000d\"\n",
        "target[0].recovery_deadline",
        "out of range",
    ),
    (
        "[otlp]\nendpoint = \"http://c:4317\"\nexport_interval = \"1ns\"\n",
        "otlp.export_interval",
        "out of range",
    ),
    // Secrets from files: regular files only.
    (
        "[[target]]\nname = \"a\"\nurl = \"redis://h\"\npassword_file = \"/dev/zero\"\n",
        "target[0].password_file",
        "not a regular file",
    ),
    // The source line a parse error quotes has its password masked (the
    // loop below checks that no fixture's message holds "hunter2").
    (
        "[[target]]\nname = \"a\"\nurl = \"redis://:hunter2@h\" oops\n",
        "line 3",
        "cannot parse",
    ),
    ("agnet = 1\n", "(top level)", "unknown field `agnet`"),
    // A value echoed back in the reason has its credentials masked.
    (
        "[agent]\nlisten = \"redis://:hunter2@h:6379/0\"\n",
        "agent.listen",
        "is not an address",
    ),
    (
        "[[target]]\nname = \"a\"\nurl = \"redis://h\"\ntimeout = [1]\n",
        "target[0].timeout",
        "invalid type",
    ),
    // URL options that fail at run time are refused at load.
    (
        "[[target]]\nname = \"a\"\nurl = \"redis://:hunter2@h/abc\"\n",
        "target[0].url",
        "database",
    ),
    (
        "[[target]]\nname = \"a\"\nurl = \"redis://h/16\"\n",
        "target[0].url",
        "0 to 15",
    ),
    (
        "[[target]]\nname = \"a\"\nurl = \"redis://h/-1\"\n",
        "target[0].url",
        "0 to 15",
    ),
    (
        "[[target]]\nname = \"a\"\nurl = \"redis://h/0?protocol=resp2\"\n",
        "target[0].url",
        "no query parameters",
    ),
    (
        "[[target]]\nname = \"a\"\nurl = \"redis+sentinel://:hunter2@s1,s2\"\n",
        "target[0].url",
        "master name",
    ),
    (
        "[[target]]\nname = \"a\"\nurl = \"redis+sentinel://s1/m?sentinel_pasword=hunter2\"\n",
        "target[0].url",
        "unknown URL parameter \"sentinel_pasword\"",
    ),
    (
        "[[target]]\nname = \"a\"\nurl = \"redis+sentinel://s1/m/x\"\n",
        "target[0].url",
        "database",
    ),
    // Store options are parsed once, here: a target that validates runs.
    (
        "[[target]]\nname = \"a\"\nurl = \"mysql://u:hunter2@h/db?ssl-mode=sometimes\"\n",
        "target[0].url",
        "ssl-mode \"sometimes\" is not one of",
    ),
    (
        "[[target]]\nname = \"a\"\nurl = \"mariadb://u:hunter2@h1,h2/db\"\n",
        "target[0].url",
        "names one host",
    ),
    (
        "[[target]]\nname = \"a\"\nurl = \"postgresql://u:hunter2@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem\"\n",
        "target[0].url",
        "sslrootcert: cannot read /nonexistent/ca.pem",
    ),
    (
        "[[target]]\nname = \"a\"\nurl = \"postgres://u:hunter2@h/db?application=x\"\n",
        "target[0].url",
        "unknown URL parameter \"application\"",
    ),
    (
        "[[target]]\nname = \"a\"\nurl = \"mongodb://u:hunter2@h/?heartbeatFrequencyMS=100\"\n",
        "target[0].url",
        "heartbeatFrequencyMS must be at least 500",
    ),
    (
        "[[target]]\nname = \"a\"\nurl = \"redis://:hunter2@h:99999\"\n",
        "target[0].url",
        "invalid port",
    ),
    (
        "[[target]]\nname = \"a\"\nurl = \"redis://h\"\npassword_file = \"/nonexistent/secret\"\n",
        "target[0].password_file",
        "cannot read /nonexistent/secret",
    ),
    (
        "[[target]]\nname = \"a\"\nurl = \"redis://h\"\n[[target]]\nname = \"a\"\nurl = \"redis://g\"\n",
        "target[1].name",
        "duplicate target name \"a\"",
    ),
    (
        "[[target]]\nname = \"a\"\nurl = \"redis://h\"\ninterval = \"fast\"\n",
        "target[0].interval",
        "invalid duration",
    ),
    (
        "[[target]]\nname = \"a\"\nurl = \"redis://h\"\ncolour = \"red\"\n",
        "target",
        "unknown field `colour`",
    ),
    (
        "[[target]]\nname = \"a\"\nurl = \"redis://h\"\ndepends_on = [\"b\"]\n",
        "target[0].depends_on",
        "only http targets",
    ),
    (
        "[[target]]\nname = \"app\"\nurl = \"http://h/health\"\ndepends_on = [\"cache\"]\n",
        "target[0].depends_on",
        "depends on \"cache\", which is not a configured target",
    ),
    (
        "[[target]]\nname = \"a\"\nurl = \"redis://h\"\nexpected_status = 200\n",
        "target[0].expected_status",
        "only http targets",
    ),
    (
        "[[target]]\nname = \"a\"\nurl = \"mysql://h\"\nheaders = { x = \"y\" }\n",
        "target[0].headers",
        "only http targets",
    ),
    (
        "[[target]]\nname = \"app\"\nurl = \"http://h/\"\nexpected_status = 700\n",
        "target[0].expected_status",
        "700 is not an HTTP status (100 to 599)",
    ),
    (
        "[[target]]\nname = \"app\"\nurl = \"http://h/\"\nexpected_status = [\"2xx\", \"6xx\"]\n",
        "target[0].expected_status",
        "\"6xx\" is not a status",
    ),
    (
        "[[target]]\nname = \"app\"\nurl = \"http://h/\"\nexpected_status = []\n",
        "target[0].expected_status",
        "at least one status",
    ),
    (
        "[[target]]\nname = \"app\"\nurl = \"http://h/\"\nbody_contains = \"\"\n",
        "target[0].body_contains",
        "must not be empty",
    ),
    (
        "[[target]]\nname = \"app\"\nurl = \"http://h/\"\nheaders = { \"bad name\" = \"hunter2\" }\n",
        "target[0].headers.bad name",
        "not a valid header name",
    ),
    (
        "[[target]]\nname = \"app\"\nurl = \"http://h/\"\nheaders = { x-token = \"hunter2\\n\" }\n",
        "target[0].headers.x-token",
        "not a valid header value",
    ),
    (
        "[[target]]\nname = \"app\"\nurl = \"http://u:hunter2@h/\"\nheaders = { Authorization = \"Bearer hunter2\" }\n",
        "target[0].headers.authorization",
        "credentials are given twice",
    ),
    (
        "[otlp]\nendpoint = \"http://c:4317\"\nprotocol = \"carrier-pigeon\"\n",
        "otlp.protocol",
        "\"grpc\" or \"http/protobuf\"",
    ),
    (
        "[otlp]\nendpoint = \"grpc://c:4317\"\n",
        "otlp.endpoint",
        "http:// or https://",
    ),
    ("[agent\n", "line 1", "cannot parse"),
    (
        "[[target]]\nname = \"app\"\nurl = \"http://h/\"\ndrill_url_env = \"APP_DRILL_URL\"\n",
        "target[0].drill_url_env",
        "only stores take a drill credential",
    ),
    (
        "[[target]]\nname = \"cache\"\nurl = \"redis://h\"\ndrill_url_env = \"CACHE_DRILL_URL\"\n",
        "target[0].drill_url_env",
        "environment variable CACHE_DRILL_URL is not set",
    ),
    // Drills through the API.
    (
        "[drills]\nenabled = true\n",
        "drills.enabled",
        "needs agent.basic_auth",
    ),
    (
        "[drills]\nallow_exec = true\n",
        "drills.allow_exec",
        "no effect without drills.enabled = true",
    ),
    (
        "[drills]\nenable = true\n",
        "drills",
        "unknown field `enable`",
    ),
    // Sharding and target files.
    (
        "[agent]\nshard = \"3/3\"\n",
        "agent.shard",
        "k must be below n",
    ),
    ("[agent]\nshard = \"0/0\"\n", "agent.shard", "at least 1"),
    (
        "[agent]\nshard = \"two/3\"\n",
        "agent.shard",
        "is not a shard",
    ),
    (
        "[discovery]\nfiles = [\"/etc/*/targets.toml\"]\n",
        "discovery.files[0]",
        "in the file name only",
    ),
    (
        "[discovery]\nfiles = [\"/etc/t.toml\", \"\"]\n",
        "discovery.files[1]",
        "must not be empty",
    ),
    (
        "[discovery]\nfiles = [\"/etc/dbcanary/\"]\n",
        "discovery.files[0]",
        "names no file",
    ),
    (
        "[discovery]\nfiles = [\"/etc/dbcanary/[ab].toml\"]\n",
        "discovery.files[0]",
        "only * and ? are wildcards",
    ),
    (
        "[discovery]\nfiles = \"/etc/dbcanary/*.toml\"\n",
        "discovery.files",
        "invalid type",
    ),
    (
        "[discovery]\nfiles = [\"/etc/t.toml\"]\nrefresh_interval = \"1ms\"\n",
        "discovery.refresh_interval",
        "out of range",
    ),
];

#[test]
fn refusals_name_file_key_and_reason() {
    let long = format!(
        "[[target]]\nname = \"a\"\nurl = \"http://h/{}\"\n",
        "x".repeat(5000)
    );
    let (_, r) = load_text(&long, &[]);
    let e = r.unwrap_err();
    assert!(
        e.key == "target[0].url" && e.reason.contains("longer than 4096"),
        "{e}"
    );
    for (text, key, reason) in REFUSED {
        let (path, r) = load_text(text, &[]);
        let e = r.expect_err(text);
        assert_eq!(e.file, path.display().to_string(), "fixture {text:?}");
        assert!(
            e.key.contains(key),
            "fixture {text:?}: key {:?} should name {key:?}",
            e.key
        );
        assert!(
            e.reason.contains(reason),
            "fixture {text:?}: reason {:?} should contain {reason:?}",
            e.reason
        );
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}

/// The drill credential comes from a variable, must be a URL of the same
/// store, and `config check` shows the variable, never the URL.
#[test]
fn drill_url_env_is_read_checked_and_never_shown() {
    let text = "[discovery]\nenv = false\n[[target]]\nname = \"cache\"\nurl = \"redis://h\"\ndrill_url_env = \"CACHE_DRILL_URL\"\n";
    let (_, r) = load_text(text, &[("CACHE_DRILL_URL", "redis://admin:hunter2@h")]);
    let c = r.unwrap();
    let d = c.targets[0].drill_url.as_ref().expect("a drill credential");
    assert_eq!(d.var, "CACHE_DRILL_URL");
    assert_eq!(d.url.password(), Some("hunter2"));
    let shown = effective_toml(&c);
    assert!(
        shown.contains("drill_url_env = \"CACHE_DRILL_URL\""),
        "{shown}"
    );
    assert!(
        !shown.contains("hunter2") && !shown.contains("admin@"),
        "{shown}"
    );
    for (url, reason) in [
        (
            "mysql://admin:hunter2@h",
            "holds a mysql URL, the target a redis URL",
        ),
        ("redis://admin:hunter2@h:0", "CACHE_DRILL_URL: invalid port"),
    ] {
        let (_, r) = load_text(text, &[("CACHE_DRILL_URL", url)]);
        let e = r.unwrap_err();
        assert_eq!(e.key, "target[0].drill_url_env");
        assert!(e.reason.contains(reason), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}

#[test]
fn missing_file_is_refused() {
    let e = load(
        Some(Path::new("/nonexistent/dbcanary.toml")),
        &MapEnv::new(&[]),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "/nonexistent/dbcanary.toml: (file): file not found"
    );
}

#[test]
fn defaults_overrides_and_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let pw = write(&dir, "pw", "s3cret\n");
    let text = format!(
        "[defaults]\ninterval = \"2s\"\n[[target]]\nname = \"cache\"\nurl = \"redis://127.0.0.1:6380\"\npassword_file = \"{}\"\ntimeout = \"250ms\"\n[[target]]\nname = \"orders\"\nurl_env = \"ORDERS_URL\"\n",
        pw.display()
    );
    let p = write(&dir, "c.toml", &text);
    let env = MapEnv::new(&[
        ("ORDERS_URL", "mysql://u:p@db:3306/orders"),
        ("DBCANARY__AGENT__LISTEN", "0.0.0.0:9999"),
        ("DBCANARY__DEFAULTS__TIMEOUT", "400ms"),
    ]);
    let c = load(Some(&p), &env).unwrap();
    assert_eq!(c.agent.listen.to_string(), "0.0.0.0:9999");
    let cache = &c.targets[0];
    assert_eq!(cache.settings.interval, Duration::from_secs(2));
    assert_eq!(cache.settings.timeout, Duration::from_millis(250));
    assert_eq!(cache.url.password(), Some("s3cret"));
    let orders = &c.targets[1];
    assert_eq!(orders.kind(), StoreKind::Mysql);
    assert_eq!(orders.settings.timeout, Duration::from_millis(400));
    let shown = effective_toml(&c);
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("redis://:***@127.0.0.1:6380"), "{shown}");
}

/// `metrics` is basic unless `[defaults]` or the target says otherwise; a
/// target's own value wins, and `config check` shows the effective one.
#[test]
fn metric_detail_is_basic_by_default_and_inherited_from_defaults() {
    let target = |name: &str, extra: &str| {
        format!("[[target]]\nname = \"{name}\"\nurl = \"redis://h\"\n{extra}")
    };
    let detail =
        |c: &Config| -> Vec<MetricDetail> { c.targets.iter().map(|t| t.info().detail).collect() };
    let plain = format!(
        "{}{}",
        target("a", ""),
        target("b", "metrics = \"detailed\"\n")
    );
    let c = load_text(&plain, &[]).1.unwrap();
    assert_eq!(detail(&c), [MetricDetail::Basic, MetricDetail::Detailed]);
    let text = format!(
        "[defaults]\nmetrics = \"detailed\"\n{}{}",
        target("a", ""),
        target("b", "metrics = \"basic\"\n")
    );
    let c = load_text(&text, &[]).1.unwrap();
    assert_eq!(detail(&c), [MetricDetail::Detailed, MetricDetail::Basic]);
    assert!(effective_toml(&c).contains("metrics = \"detailed\""));
}

#[test]
fn http_checks_are_read_and_their_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let token = write(&dir, "token", "t0ken-hunter2\n");
    let text = format!(
        "[[target]]\nname = \"app\"\nurl = \"https://app.internal/health\"\npassword_file = \"{}\"\nexpected_status = [200, \"3xx\", \"204\"]\nbody_contains = \"ok\"\nheaders = {{ X-Api-Key = \"key-hunter2\", Host = \"app\" }}\n[[target]]\nname = \"plain\"\nurl = \"http://127.0.0.1:8080/\"\n",
        token.display()
    );
    let p = write(&dir, "c.toml", &text);
    let c = load(Some(&p), &MapEnv::new(&[])).unwrap();
    let app = &c.targets[0];
    let check = |t: &Target| match &t.options {
        Options::Http(c) => c.clone(),
        other => panic!("not an http target: {other:?}"),
    };
    let app_check = check(app);
    assert_eq!(
        app_check.expected_status,
        [
            StatusMatch::Code(200),
            StatusMatch::Class(3),
            StatusMatch::Code(204)
        ]
    );
    assert!(app_check.status_ok(301) && app_check.status_ok(204));
    assert!(!app_check.status_ok(201) && !app_check.status_ok(503));
    assert_eq!(app_check.body_contains.as_deref(), Some("ok"));
    assert_eq!(app_check.headers["x-api-key"], "key-hunter2");
    assert_eq!(app.url.password(), Some("t0ken-hunter2"));
    let plain = check(&c.targets[1]);
    assert_eq!(plain.expected(), "2xx");
    assert!(plain.status_ok(299) && !plain.status_ok(300));
    let shown = effective_toml(&c);
    let debug = format!("{c:?}");
    for text in [&shown, &debug] {
        assert!(!text.contains("hunter2"), "{text}");
    }
    assert!(
        shown.contains("expected_status = [\n    200,\n    \"3xx\",\n    204,\n]"),
        "{shown}"
    );
    assert!(shown.contains("x-api-key = \"***\""), "{shown}");
    assert!(shown.contains("body_contains = \"ok\""), "{shown}");
    // What config check prints reads back as the same checks.
    let again = write(&dir, "again.toml", &shown.replace("***", "x"));
    let c2 = load(Some(&again), &MapEnv::new(&[])).unwrap();
    assert_eq!(
        check(&c2.targets[0]).expected_status,
        app_check.expected_status
    );
}

#[test]
fn yaml_works_too() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        "c.yaml",
        "agent:\n  listen: 127.0.0.1:9000\ntarget:\n  - name: cache\n    url: redis://h:1\n",
    );
    let c = load(Some(&p), &MapEnv::new(&[])).unwrap();
    assert_eq!(c.agent.listen.to_string(), "127.0.0.1:9000");
    assert_eq!(c.targets[0].name, "cache");
}

#[test]
fn discovery_from_url_variables() {
    let env = MapEnv::new(&[
        (
            "ORDERS_MONGODB_URL",
            "mongodb://u:pw@db1,db2/?replicaSet=rs0",
        ),
        ("SESSIONS_REDIS_URL", "redis://:pw@cache:6379"),
        ("DATABASE_URL", "postgresql://app@pg/app"),
        ("BROKEN_MYSQL_URL", "not a url"),
        ("UNRELATED", "redis://x"),
    ]);
    let c = load(None, &env).unwrap();
    let mut names: Vec<(&str, StoreKind)> = c
        .targets
        .iter()
        .map(|t| (t.name.as_str(), t.kind()))
        .collect();
    names.sort_by_key(|(n, _)| *n);
    assert_eq!(
        names,
        vec![
            ("database", StoreKind::Postgresql),
            ("orders", StoreKind::Mongodb),
            ("sessions", StoreKind::Redis),
        ]
    );
    assert!(
        c.targets
            .iter()
            .all(|t| matches!(t.source, TargetSource::Env(_)))
    );
    // What discovery skipped is said, by variable, never by value.
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(
        c.warnings[0].contains("BROKEN_MYSQL_URL skipped"),
        "{:?}",
        c.warnings
    );
    assert!(!c.warnings[0].contains("not a url"), "{:?}", c.warnings);
}

#[test]
fn the_listen_address_may_be_a_host_name() {
    for (text, want) in [
        ("localhost:9838", "127.0.0.1:9838"),
        ("[::1]:9838", "[::1]:9838"),
        ("0.0.0.0:1", "0.0.0.0:1"),
    ] {
        let (_, r) = load_text(&format!("[agent]\nlisten = {text:?}\n"), &[]);
        let got = r.unwrap().agent.listen;
        assert!(
            got.to_string() == want || (text == "localhost:9838" && got.ip().is_loopback()),
            "{text} -> {got}"
        );
    }
}

#[test]
fn discovery_says_what_it_doubts() {
    let env = MapEnv::new(&[
        ("BAD_REDIS_URL", "notaurl"),
        ("ORDERS_MYSQL_URL", "redis://:hunter2@cache:6379"),
        ("CATALOG_MONGODB_HOST", "db1.internal"),
        ("CATALOG_MONGODB_PORT", "27018"),
        ("CATALOG_MONGODB_LOGIN", "app"),
        ("CATALOG_MONGODB_PASSWORD", "hunter2@x"),
    ]);
    let c = load(None, &env).unwrap();
    let all = c.warnings.join("\n");
    assert!(
        !all.contains("hunter2") && !all.contains("notaurl"),
        "{all}"
    );
    assert!(all.contains("BAD_REDIS_URL skipped"), "{all}");
    assert!(
        all.contains("ORDERS_MYSQL_URL holds a redis URL, not a mysql one"),
        "{all}"
    );
    assert!(
        all.contains("CATALOG_MONGODB_HOST, CATALOG_MONGODB_PORT, CATALOG_MONGODB_LOGIN, CATALOG_MONGODB_PASSWORD describe a MongoDB without CATALOG_MONGODB_URL"),
        "{all}"
    );
    let orders = c.targets.iter().find(|t| t.name == "orders").unwrap();
    assert_eq!(orders.kind(), StoreKind::Redis, "watched as what it is");
    let catalog = c.targets.iter().find(|t| t.name == "catalog").unwrap();
    assert_eq!(catalog.kind(), StoreKind::Mongodb, "still watched");
    assert_eq!(catalog.url.endpoint(), "db1.internal:27018");
    assert_eq!(catalog.url.username.as_deref(), Some("app"));
    assert_eq!(catalog.url.password(), Some("hunter2@x"));
}

#[test]
fn local_defaults_when_nothing_configured() {
    let c = load(None, &MapEnv::new(&[])).unwrap();
    assert!(c.uses_local_defaults());
    let urls: Vec<String> = c.targets.iter().map(|t| t.url.redacted()).collect();
    assert_eq!(
        urls,
        vec![
            "redis://127.0.0.1:6379",
            "mysql://root@127.0.0.1:3306",
            "mongodb://127.0.0.1:27017",
            "postgresql://postgres@127.0.0.1:5432",
        ]
    );
    let (_, r) = load_text(
        "[discovery]\nenv = false\n",
        &[("X_REDIS_URL", "redis://h")],
    );
    assert!(r.unwrap().uses_local_defaults());
}

#[test]
fn a_yaml_alias_bomb_is_refused_before_it_expands() {
    let dir = tempfile::tempdir().unwrap();
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g"]
        .windows(2)
        .map(|w| (w[0], w[1]))
    {
        bomb.push_str(&format!(
            "{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
        ));
    }
    let p = write(&dir, "dbcanary.yaml", &bomb);
    let e = load(Some(&p), &MapEnv::new(&[])).unwrap_err();
    assert_eq!(e.key, "(file)");
    assert!(e.reason.contains("aliases expand"), "{e}");
    // An ordinary YAML file with an anchor still loads.
    let ok = write(
        &dir,
        "ok.yaml",
        "defaults: &d\n  interval: 2s\ntarget:\n  - name: a\n    url: redis://h\n",
    );
    let c = load(Some(&ok), &MapEnv::new(&[])).unwrap();
    assert_eq!(c.defaults.interval, Duration::from_secs(2));
}

#[test]
fn an_oversized_secret_or_config_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let big = write(&dir, "secret", &"x".repeat(70 << 10));
    let text = format!(
        "[[target]]\nname = \"a\"\nurl = \"redis://h\"\npassword_file = \"{}\"\n",
        big.display()
    );
    let (_, r) = load_text(&text, &[]);
    let e = r.unwrap_err();
    assert!(e.reason.contains("larger than 64 KiB"), "{e}");
    let huge = write(&dir, "huge.toml", &"# comment\n".repeat(120_000));
    let e = load(Some(&huge), &MapEnv::new(&[])).unwrap_err();
    assert!(
        e.key == "(file)" && e.reason.contains("larger than 1024 KiB"),
        "{e}"
    );
}

mod properties {
    //! Whatever text the loader and the URL parser are given, they never
    //! panic, and a refusal always names the file, a key and a reason
    //! without the planted secret.

    use super::*;
    use proptest::prelude::*;

    const SECRET: &str = "PLANTEDpw9";

    /// A value some key might be given: durations, numbers, URLs (some with
    /// the planted secret), odd strings.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("\"1s\"".to_string()),
            Just("\"0s\"".to_string()),
            Just("\"18446744073709551615s\"".to_string()),
            Just("1.5".to_string()),
            Just("-1".to_string()),
            Just("[1, 2]".to_string()),
            Just("{ initial = \"1ms\" }".to_string()),
            Just(format!("\"redis://:{SECRET}@h:6379/0\"")),
            Just(format!(
                "\"redis+sentinel://:{SECRET}@a,b/m?sentinel_password={SECRET}\""
            )),
            Just(format!(
                "\"postgresql://u:{SECRET}@h/db?sslmode=verify-full\""
            )),
            Just(format!("\"mysql://u:{SECRET}@h/db?ssl-mode=x\"")),
            Just(format!(
                "\"mongodb://u:{SECRET}@h/?replicaSet=rs0&heartbeatFrequencyMS=1\""
            )),
            "[a-z:/@?=&%0-9.]{0,40}".prop_map(|s| format!("\"{s}\"")),
        ]
    }

    fn key() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "name",
            "url",
            "url_env",
            "interval",
            "timeout",
            "backoff",
            "identity_every",
            "metrics",
            "depends_on",
            "recovery_deadline",
            "expected_status",
            "headers",
            "listen",
            "log_format",
            "attempts_per_second",
            "nonsense",
        ])
    }

    /// A TOML-ish document: sections and targets with random keys and
    /// values, sometimes broken.
    fn document() -> impl Strategy<Value = String> {
        let line = (key(), value()).prop_map(|(k, v)| format!("{k} = {v}\n"));
        let section = prop::sample::select(vec![
            "[agent]\n",
            "[defaults]\n",
            "[[target]]\n",
            "[otlp]\n",
            "[discovery]\n",
            "[agent\n",
        ]);
        prop::collection::vec((section, prop::collection::vec(line, 0..5)), 0..5).prop_map(
            |parts| {
                parts
                    .into_iter()
                    .map(|(s, lines)| format!("{s}{}", lines.concat()))
                    .collect()
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn the_loader_never_panics_and_names_file_key_and_reason(text in document()) {
            let (path, r) = load_text(&text, &[]);
            match r {
                Ok(c) => {
                    let shown = effective_toml(&c);
                    prop_assert!(!shown.contains(SECRET), "{}", shown);
                }
                Err(e) => {
                    prop_assert_eq!(&e.file, &path.display().to_string());
                    prop_assert!(!e.key.is_empty() && !e.reason.is_empty());
                    prop_assert!(!e.to_string().contains(SECRET), "{}", e);
                }
            }
        }

        #[test]
        fn the_url_parser_never_panics_nor_echoes_a_password(
            text in "[a-z+]{0,8}://([a-z]{0,4}:[a-z]{0,4}@)?[a-z0-9.,:\\[\\]]{0,20}(/[a-z0-9/]{0,10})?(\\?[a-z=&]{0,20})?",
        ) {
            if let Ok(u) = DbUrl::parse(&text) {
                let _ = (u.endpoint(), u.redacted(), u.expose());
            }
            let planted = text.replacen("://", &format!("://u:{SECRET}@"), 1);
            match DbUrl::parse(&planted) {
                Ok(u) => prop_assert!(!u.redacted().contains(SECRET), "{}", u.redacted()),
                Err(e) => prop_assert!(!e.to_string().contains(SECRET)),
            }
        }
    }
}

#[test]
fn a_relative_password_file_is_a_systemd_credential() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir, "cache", "s3cret\n");
    let text = "[[target]]\nname = \"cache\"\nurl = \"redis://h\"\npassword_file = \"cache\"\n";
    let creds = dir.path().display().to_string();
    let (_, r) = load_text(text, &[("CREDENTIALS_DIRECTORY", &creds)]);
    let c = r.unwrap();
    assert_eq!(c.targets[0].url.password(), Some("s3cret"));
    let (_, r) = load_text(text, &[]);
    assert!(r.unwrap_err().reason.contains("cannot read cache"));
}

#[test]
fn an_ordinal_shard_comes_from_the_host_name() {
    let text = "[agent]\nshard = \"ordinal/3\"\n[[target]]\nname = \"a\"\nurl = \"redis://h\"\n";
    let (_, r) = load_text(text, &[("HOSTNAME", "dbcanary-2")]);
    let c = r.unwrap();
    assert_eq!(c.agent.shard, Shard { index: 2, count: 3 });
    assert!(effective_toml(&c).contains("shard = \"2/3\""));
    for (host, reason) in [
        ("dbcanary", "does not end in -<digits>"),
        ("dbcanary-7", "ordinal 7, which is not below n = 3"),
    ] {
        let (path, r) = load_text(text, &[("HOSTNAME", host)]);
        let e = r.unwrap_err();
        assert_eq!(e.file, path.display().to_string());
        assert_eq!(e.key, "agent.shard");
        assert!(e.reason.contains(reason), "{host}: {e}");
    }
}

#[test]
fn target_files_are_relative_to_the_config_and_replace_the_local_defaults() {
    let (path, r) = load_text("[discovery]\nfiles = [\"targets.d/*.toml\"]\n", &[]);
    let c = r.unwrap();
    assert!(c.targets.is_empty(), "no local defaults: {:?}", c.targets);
    let dir = path.parent().unwrap();
    assert_eq!(c.discovery_files, [dir.join("targets.d/*.toml")]);
    assert_eq!(c.discovery_refresh, files::DEFAULT_REFRESH);
    let shown = effective_toml(&c);
    assert!(shown.contains("refresh_interval = \"5s\""), "{shown}");
    assert!(shown.contains("shard = \"0/1\""), "{shown}");
}
