//! Target files: patterns, and what each look at the files accepts,
//! refuses (with file, key and reason) and keeps.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::config::{Shard, load};

struct NoEnv;

impl Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
    fn vars(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// A main configuration with target `main-a` and `targets.d/*.toml`, in a
/// directory of its own.
struct Setup {
    dir: tempfile::TempDir,
    main: Config,
    files: TargetFiles,
}

impl Setup {
    fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("targets.d")).unwrap();
        let main = dir.path().join("dbcanary.toml");
        std::fs::write(
            &main,
            format!(
                "[discovery]\nenv = false\nfiles = [\"targets.d/*.toml\"]\n{extra}\n[[target]]\nname = \"main-a\"\nurl = \"redis://127.0.0.1:1\"\n"
            ),
        )
        .unwrap();
        let main = load(Some(&main), &NoEnv).unwrap();
        let files = TargetFiles::new(&main);
        Self { dir, main, files }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join("targets.d").join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn scan(&mut self) -> Scan {
        self.files.scan(&self.main, &NoEnv, false)
    }

    /// The names the files give, in file order.
    fn names(&self) -> Vec<&str> {
        self.files.targets().map(|t| t.name.as_str()).collect()
    }
}

fn targets(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("[[target]]\nname = \"{n}\"\nurl = \"redis://127.0.0.1:2\"\n"))
        .collect()
}

/// The one error of a scan: its file, key and reason.
fn only_error(scan: &Scan) -> &ConfigError {
    match scan.errors.as_slice() {
        [e] => e,
        other => panic!("one error expected: {other:?}"),
    }
}

#[test]
fn patterns_take_star_and_question_mark_in_the_file_name() {
    let cases = [
        ("*.toml", "a.toml", true),
        ("*.toml", "a.toml.swp", false),
        ("*.toml", ".a.toml", false),
        (".*.toml", ".a.toml", true),
        ("*", "..data", false),
        ("t?.toml", "t1.toml", true),
        ("t?.toml", "t12.toml", false),
        ("*-*.yaml", "a-b-c.yaml", true),
        ("*a*b", "xxaxxbxb", true),
        ("*a*b", "xxaxxbxc", false),
        ("targets.toml", "targets.toml", true),
        ("**", "", true),
    ];
    for (pattern, name, want) in cases {
        assert_eq!(matches(pattern, name), want, "{pattern} ~ {name}");
    }
}

#[test]
fn a_file_is_added_changed_kept_when_broken_and_removed() {
    let mut s = Setup::new("");
    let first = s.scan();
    assert!(!first.changed && first.errors.is_empty(), "{first:?}");

    let a = s.write("a.toml", &targets(&["x", "y"]));
    s.write(".a.toml.swp", "not toml");
    std::fs::create_dir(s.path("dir.toml")).unwrap();
    let scan = s.scan();
    assert!(scan.changed && scan.errors.is_empty(), "{scan:?}");
    assert_eq!(s.names(), ["x", "y"]);
    let x = s.files.targets().next().unwrap();
    assert_eq!(x.source, TargetSource::TargetsFile(a.clone()));
    assert_eq!(x.settings, s.main.defaults, "the main file's defaults");

    // Rewritten as it was: nothing changes.
    s.write("a.toml", &targets(&["x", "y"]));
    let scan = s.scan();
    assert!(!scan.changed && scan.errors.is_empty(), "{scan:?}");

    s.write(
        "a.toml",
        &format!("{}interval = \"2s\"\n", targets(&["x", "y"])),
    );
    assert!(s.scan().changed);
    let y = s.files.targets().nth(1).unwrap();
    assert_eq!(y.settings.interval, Duration::from_secs(2));

    // Broken: refused with file, key and reason, once; the list stays.
    s.write(
        "a.toml",
        "[[target]]\nname = \"x\"\nurl = \"ftp://:hunter2@h\"\n",
    );
    let scan = s.scan();
    let e = only_error(&scan);
    assert!(!scan.changed);
    assert_eq!(
        (e.file.as_str(), e.key.as_str()),
        (a.to_str().unwrap(), "target[0].url")
    );
    assert!(e.reason.contains("unknown scheme \"ftp\""), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert_eq!(s.names(), ["x", "y"]);
    assert!(s.scan().errors.is_empty(), "reported once");
    let forced = s.files.scan(&s.main, &NoEnv, true);
    assert_eq!(forced.errors.len(), 1, "reported again on SIGHUP");

    // Emptied (a tool that truncates first): refused, the list stays.
    s.write("a.toml", "");
    let scan = s.scan();
    assert!(only_error(&scan).reason.contains("is empty"), "{scan:?}");
    assert_eq!(s.names(), ["x", "y"]);

    // Only a comment: no target.
    s.write("a.toml", "# nothing watched from here for now\n");
    let scan = s.scan();
    assert!(scan.changed && scan.errors.is_empty(), "{scan:?}");
    assert!(s.names().is_empty());

    s.write("a.toml", &targets(&["x"]));
    assert!(s.scan().changed);
    std::fs::remove_file(&a).unwrap();
    assert!(s.scan().changed);
    assert!(s.names().is_empty());
}

#[test]
fn a_file_that_gives_a_name_again_is_refused_and_keeps_its_last_list() {
    let mut s = Setup::new("");
    s.write("a.toml", &targets(&["x"]));
    let b = s.write("b.toml", &targets(&["z"]));
    s.scan();
    assert_eq!(s.names(), ["x", "z"]);

    s.write("b.toml", &targets(&["z", "x"]));
    let scan = s.scan();
    let e = only_error(&scan);
    assert_eq!(e.file, b.display().to_string());
    assert_eq!(e.key, "target[1].name");
    assert!(
        e.reason.contains("duplicate target name \"x\" (also in ") && e.reason.contains("a.toml"),
        "{e}"
    );
    assert_eq!(s.names(), ["x", "z"], "b keeps its last list");
    assert!(s.scan().errors.is_empty(), "reported once");

    s.write("b.toml", &targets(&["main-a"]));
    let scan = s.scan();
    assert!(
        only_error(&scan)
            .reason
            .contains("\"main-a\" (also in the main configuration)"),
        "{scan:?}"
    );

    // The earlier file takes a name the later one gives: refused, and
    // tried again at every look, so that it is accepted once the later
    // file lets the name go.
    s.write("b.toml", &targets(&["z"]));
    s.scan();
    s.write("a.toml", &targets(&["x", "z"]));
    let scan = s.scan();
    assert!(only_error(&scan).file.ends_with("a.toml"), "{scan:?}");
    assert_eq!(s.names(), ["x", "z"]);
    s.write("b.toml", &targets(&["w"]));
    let scan = s.scan();
    assert!(scan.changed && scan.errors.is_empty(), "{scan:?}");
    assert_eq!(s.names(), ["x", "z", "w"]);

    // A name moved from one file to the other in one go.
    s.write("a.toml", &targets(&["x"]));
    s.write("b.toml", &targets(&["w", "z"]));
    let scan = s.scan();
    assert!(scan.errors.is_empty(), "{scan:?}");
    assert_eq!(s.names(), ["x", "w", "z"]);
}

#[test]
fn file_targets_depend_on_their_own_file_or_the_main_configuration() {
    let mut s = Setup::new("");
    s.write("other.toml", &targets(&["elsewhere"]));
    let app = |deps: &str| {
        format!(
            "{}[[target]]\nname = \"shop\"\nurl = \"http://127.0.0.1:3/health\"\ndepends_on = [{deps}]\n",
            targets(&["local"])
        )
    };
    s.write("apps.toml", &app("\"local\", \"main-a\""));
    let scan = s.scan();
    assert!(scan.errors.is_empty(), "{scan:?}");
    assert_eq!(s.names(), ["local", "shop", "elsewhere"]);
    let p = s.write("apps.toml", &app("\"elsewhere\""));
    let scan = s.scan();
    let e = only_error(&scan);
    assert_eq!(
        (e.file.as_str(), e.key.as_str()),
        (p.to_str().unwrap(), "target[1].depends_on")
    );
    assert!(
        e.reason
            .contains("neither in this file nor in the main configuration"),
        "{e}"
    );
}

/// (file text, key, words of the reason) of target files refused alone.
const REFUSED: &[(&str, &str, &str)] = &[
    (
        "[agent]\nlisten = \"127.0.0.1:1\"\n",
        "(top level)",
        "unknown field `agent`",
    ),
    (
        "[[target]]\nname = \"x\"\n",
        "target[0].url",
        "give url or url_env",
    ),
    (
        "[[target]]\nname = \"x\"\nurl = \"redis://h\"\n[[target]]\nname = \"x\"\nurl = \"redis://g\"\n",
        "target[1].name",
        "duplicate target name \"x\"",
    ),
    (
        "[[target]]\nname = \"x\"\nurl = \"redis://h\"\ncolour = \"red\"\n",
        "target",
        "unknown field `colour`",
    ),
    ("[[target]\n", "line 1", "cannot parse"),
    ("", "(file)", "is empty"),
];

#[test]
fn refusals_of_a_file_name_it_the_key_and_the_reason() {
    let mut s = Setup::new("");
    for (text, key, reason) in REFUSED {
        let p = s.write("t.toml", text);
        let scan = s.files.scan(&s.main, &NoEnv, true);
        let e = only_error(&scan);
        assert_eq!(e.file, p.display().to_string(), "{text:?}");
        assert!(e.key.contains(key), "{text:?}: key {:?}", e.key);
        assert!(e.reason.contains(reason), "{text:?}: {:?}", e.reason);
    }
}

#[test]
fn yaml_files_too_and_the_shard_splits_main_and_file_targets_together() {
    let mut s = Setup::new("[agent]\nshard = \"1/3\"\n");
    let names: Vec<String> = (0..60).map(|i| format!("t{i}")).collect();
    let yaml: String = names
        .iter()
        .map(|n| format!("  - name: {n}\n    url: redis://127.0.0.1:4\n"))
        .collect();
    s.write("more.yaml", &format!("target:\n{yaml}"));
    s.main.discovery_files = vec![s.dir.path().join("targets.d/*.yaml")];
    let scan = s.scan();
    assert!(scan.errors.is_empty(), "{scan:?}");
    let split = s.files.watched(&s.main);
    assert_eq!(split.shard, Shard { index: 1, count: 3 });
    assert_eq!(split.kept.len() + split.left, 61);
    for t in &split.kept {
        assert_eq!(Shard::owner_of(3, &t.name), 1, "{}", t.name);
    }
}

#[test]
fn a_new_main_configuration_is_applied_to_every_file() {
    let mut s = Setup::new("");
    s.write("a.toml", &targets(&["x"]));
    s.scan();
    let before = s.files.targets().next().unwrap().settings.interval;
    s.main.defaults.interval = before * 3;
    let scan = s.files.scan(&s.main, &NoEnv, true);
    assert!(scan.changed, "{scan:?}");
    assert_eq!(
        s.files.targets().next().unwrap().settings.interval,
        before * 3
    );
    // The main configuration now gives "x" too: it wins, the file is left
    // out until it is fixed.
    let mut renamed = s.main.targets[0].clone();
    renamed.name = "x".into();
    s.main.targets.push(renamed);
    let scan = s.files.scan(&s.main, &NoEnv, true);
    assert!(scan.changed);
    assert!(only_error(&scan).reason.contains("main configuration"));
    assert!(s.names().is_empty());
}

#[test]
fn a_missing_directory_names_no_file() {
    let missing = Path::new("/nonexistent/dbcanary/*.toml");
    assert_eq!(expand(missing), Ok(Vec::new()));
}
