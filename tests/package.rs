//! The Debian package: built with `cargo deb` from the binary under test,
//! it must install the binary, the hardened systemd unit, a configuration
//! that the packaged binary accepts, the dashboards and the alert rules.

mod support;

use std::path::Path;
use std::process::Command;

use support::require_binary;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn deb_installs_binary_unit_config_dashboards_and_rules() {
    require_binary(
        "cargo-deb",
        "cargo install cargo-deb --version 3.8.0 --locked",
    );
    let dpkg_deb = require_binary("dpkg-deb", "dpkg");
    let dir = tempfile::tempdir().unwrap();
    let deb = dir.path().join("dbcanary.deb");
    // The debug binary the tests run: packaging is what is under test here,
    // not an optimised build.
    run(Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["deb", "--no-build", "--profile", "dev", "--fast", "-o"])
        .arg(&deb));

    let listing = run(Command::new(&dpkg_deb).arg("-c").arg(&deb));
    for path in [
        "./usr/bin/dbcanary",
        "./lib/systemd/system/dbcanary.service",
        "./etc/dbcanary/dbcanary.toml",
        "./usr/share/doc/dbcanary/examples/dbcanary.example.toml",
        "./usr/share/dbcanary/dashboards/dbcanary-overview.json",
        "./usr/share/dbcanary/dashboards/dbcanary-target.json",
        "./usr/share/dbcanary/dbcanary.rules.yml",
        "./usr/share/dbcanary/dbcanary.rules.test.yml",
        "./usr/share/doc/dbcanary/README.md",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(path)),
            "{path} not in the package:\n{listing}"
        );
    }
    let info = run(Command::new(&dpkg_deb).arg("-I").arg(&deb));
    assert!(info.contains("Package: dbcanary"), "{info}");
    let conffiles = run(Command::new(&dpkg_deb)
        .args(["-f"])
        .arg(&deb)
        .arg("Package"));
    assert_eq!(conffiles.trim(), "dbcanary");
    let control = dir.path().join("control");
    run(Command::new(&dpkg_deb).arg("-e").arg(&deb).arg(&control));
    let conf = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert!(
        conf.lines().any(|l| l == "/etc/dbcanary/dbcanary.toml"),
        "the config is a conffile (kept on upgrade): {conf}"
    );

    let root = dir.path().join("root");
    run(Command::new(&dpkg_deb).arg("-x").arg(&deb).arg(&root));
    let bin = root.join("usr/bin/dbcanary");
    let version = run(Command::new(&bin).arg("--version"));
    assert!(version.starts_with("dbcanary "), "{version}");
    // The packaged configuration is one the packaged binary accepts.
    let effective = run(Command::new(&bin)
        .env_clear()
        .args(["config", "check", "--config"])
        .arg(root.join("etc/dbcanary/dbcanary.toml")));
    assert!(
        effective.contains("listen = \"127.0.0.1:9838\""),
        "{effective}"
    );

    let unit = std::fs::read_to_string(root.join("lib/systemd/system/dbcanary.service")).unwrap();
    for line in [
        "ExecStart=/usr/bin/dbcanary run --config /etc/dbcanary/dbcanary.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "unit lacks {line:?}:\n{unit}"
        );
    }
    assert_mode(&root.join("usr/bin/dbcanary"), 0o755);
}

fn assert_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(m, mode, "{}", path.display());
}
