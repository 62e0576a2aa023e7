//! The Debian package: built with `cargo deb` from the binary under test,
//! it must install the binary, the hardened systemd unit with Debian's
//! maintainer scripts, a configuration that the packaged binary accepts,
//! the dashboards and the alert rules. And the container image's
//! Dockerfile, checked statically (no Docker engine on these machines).

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
        "./usr/lib/systemd/system/dbcanary.service",
        "./etc/dbcanary/dbcanary.toml",
        "./usr/share/doc/dbcanary/examples/dbcanary.example.toml",
        "./usr/share/dbcanary/dashboards/dbcanary-overview.json",
        "./usr/share/dbcanary/dashboards/dbcanary-target.json",
        "./usr/share/dbcanary/dbcanary.rules.yml",
        "./usr/share/dbcanary/dbcanary.rules.test.yml",
        "./usr/share/doc/dbcanary/README.md",
        "./usr/share/doc/dbcanary/docs/measuring.md",
        "./usr/share/doc/dbcanary/docs/stores/redis.md",
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

    // Debian's maintainer scripts: the unit is enabled and started on
    // install, restarted on upgrade, stopped on removal, and systemd reloads
    // its units. (The machines running this suite have no systemd: the
    // scripts are read, not run.)
    let script = |name: &str| {
        std::fs::read_to_string(control.join(name))
            .unwrap_or_else(|e| panic!("the package has no {name} script: {e}"))
    };
    let postinst = script("postinst");
    for call in [
        "deb-systemd-helper unmask dbcanary.service",
        "deb-systemd-helper enable dbcanary.service",
        "systemctl --system daemon-reload",
        "deb-systemd-invoke $_dh_action dbcanary.service",
    ] {
        assert!(
            postinst.contains(call),
            "postinst lacks {call:?}:\n{postinst}"
        );
    }
    assert!(
        script("prerm").contains("deb-systemd-invoke stop dbcanary.service"),
        "prerm stops the service"
    );
    let postrm = script("postrm");
    for call in [
        "systemctl --system daemon-reload",
        "deb-systemd-helper purge dbcanary.service",
    ] {
        assert!(postrm.contains(call), "postrm lacks {call:?}:\n{postrm}");
    }

    let unit =
        std::fs::read_to_string(root.join("usr/lib/systemd/system/dbcanary.service")).unwrap();
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
        "Environment=GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4194304",
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

/// The image: non-root, a health check, the binary where the unit and the
/// docs put it, and defaults that match the README (listening on all
/// addresses inside the container, the example config at hand); the build
/// context leaves `target/` out.
#[test]
fn dockerfile_runs_non_root_with_a_health_check_and_the_documented_defaults() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let docker = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let final_stage = docker
        .rsplit_once("\nFROM ")
        .map(|(_, s)| s)
        .expect("a multi-stage Dockerfile");
    let user = final_stage
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the image sets a USER");
    assert!(user.trim() != "root" && user.trim() != "0", "USER {user}");
    assert!(final_stage.contains("HEALTHCHECK"), "no HEALTHCHECK");
    assert!(
        final_stage.contains("/healthz"),
        "the health check asks /healthz"
    );
    assert!(
        final_stage.contains("COPY --from=build /src/target/release/dbcanary /usr/bin/dbcanary"),
        "the binary at /usr/bin/dbcanary, as in the unit"
    );
    assert!(final_stage.contains("ENTRYPOINT [\"/usr/bin/dbcanary\"]"));
    assert!(final_stage.contains("DBCANARY__AGENT__LISTEN=0.0.0.0:9838"));
    assert!(final_stage.contains("EXPOSE 9838"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains("DBCANARY__AGENT__LISTEN=0.0.0.0:9838"),
        "the README documents the image's listen default"
    );
    let ignore = std::fs::read_to_string(root.join(".dockerignore"))
        .expect("a .dockerignore keeps target/ out of the build context");
    assert!(ignore.lines().any(|l| l.trim() == "target"), "{ignore}");
}

/// The shipped example validates on a fresh machine, as it stands.
#[test]
fn the_example_config_passes_config_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = support::dbcanary_command()
        .env_clear()
        .args(["config", "check", "--config"])
        .arg(root.join("config/dbcanary.example.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "config check refused the example:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    for name in ["cache", "sessions", "billing", "shop"] {
        assert!(shown.contains(&format!("name = \"{name}\"")), "{shown}");
    }
}

/// The allocator setting the benchmark measured (big freed buffers go back
/// to the system) is the same in the unit, the image and the StatefulSet.
#[test]
fn the_unit_the_image_and_the_statefulset_set_the_same_allocator_tunable() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let unit = read("config/dbcanary.service");
    let value = unit
        .lines()
        .find_map(|l| l.strip_prefix("Environment=GLIBC_TUNABLES="))
        .expect("the unit sets GLIBC_TUNABLES");
    assert!(value.starts_with("glibc.malloc."), "{value}");
    let docker = read("Dockerfile");
    assert!(
        docker
            .lines()
            .any(|l| l == format!("ENV GLIBC_TUNABLES={value}")),
        "the image sets GLIBC_TUNABLES={value}:\n{docker}"
    );
    let sts = read("deploy/kubernetes/statefulset.yaml");
    let named = sts
        .lines()
        .skip_while(|l| l.trim() != "- name: GLIBC_TUNABLES")
        .nth(1)
        .map(str::trim);
    assert_eq!(
        named,
        Some(format!("value: {value}").as_str()),
        "the StatefulSet sets GLIBC_TUNABLES={value}"
    );
}
