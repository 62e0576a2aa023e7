//! `deploy/kubernetes/`, checked offline: `deploy/kubernetes/test/validate.mjs`
//! validates every manifest against the Kubernetes API schemas (npm's
//! `kubernetes-models`, pinned in its `package-lock.json`) and checks what
//! ties them together; then the configuration each pod of the StatefulSet
//! sees (the mounted ConfigMaps and Secret, extracted by the validator)
//! passes `dbcanary config check` as every ordinal, and the shards keep
//! every target exactly once.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::{dbcanary_command, require_binary};

fn validator_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/test")
}

/// `node`, with the validator's packages installed, or a loud failure
/// saying how to get them.
fn node() -> PathBuf {
    let node = require_binary("node", "nodejs npm");
    let dir = validator_dir();
    assert!(
        dir.join("node_modules/kubernetes-models").is_dir(),
        "the Kubernetes schemas are not installed.\n\
         Install them with:  npm ci --prefix {}\n\
         (or run ./scripts/test, which installs them)",
        dir.display()
    );
    node
}

#[test]
fn the_manifests_are_valid_kubernetes_objects_and_every_pod_keeps_its_shard() {
    let node = node();
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(node)
        .arg(validator_dir().join("validate.mjs"))
        .arg("--extract")
        .arg(out_dir.path())
        .output()
        .expect("run node validate.mjs");
    assert!(
        out.status.success(),
        "deploy/kubernetes/ is not valid:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The pod's files, with their absolute paths moved below the
    // extraction directory.
    let pod_root = out_dir.path().join("etc/dbcanary");
    let moved = format!("{}/", pod_root.display());
    let config = pod_root.join("config/dbcanary.toml");
    let targets = pod_root.join("targets.d/targets.toml");
    for f in [&config, &targets] {
        let text = std::fs::read_to_string(f).unwrap();
        std::fs::write(f, text.replace("/etc/dbcanary/", &moved)).unwrap();
    }
    let all: BTreeSet<String> = std::fs::read_to_string(&targets)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("name = "))
        .map(|n| n.trim_matches('"').to_string())
        .collect();
    assert!(all.len() >= 5, "the example targets: {all:?}");

    let replicas = 3;
    let mut seen = BTreeSet::new();
    for k in 0..replicas {
        let out = dbcanary_command()
            .args(["config", "check", "--config"])
            .arg(&config)
            .env("HOSTNAME", format!("dbcanary-{k}"))
            .output()
            .expect("run dbcanary config check");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "pod dbcanary-{k}:\n{stderr}");
        assert!(
            stderr.contains(&format!("shard {k}/{replicas} keeps")),
            "{stderr}"
        );
        for name in stderr
            .lines()
            .filter_map(|l| l.strip_prefix("dbcanary: target "))
            .filter_map(|l| l.split_whitespace().next())
        {
            assert!(seen.insert(name.to_string()), "{name} kept by two pods");
        }
    }
    assert_eq!(seen, all, "every target is kept by one pod");
}
