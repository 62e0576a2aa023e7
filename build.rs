//! Records the commit the agent is built from, for `dbcanary_build_info`.

use std::path::PathBuf;
use std::process::Command;

/// What `git rev-parse ARGS` prints, trimmed; `None` outside a repository
/// or without git.
fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
}

fn main() {
    let revision = std::env::var("DBCANARY_REVISION")
        .ok()
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]));
    println!(
        "cargo:rustc-env=DBCANARY_REVISION={}",
        revision.unwrap_or_else(|| "unknown".into())
    );
    println!("cargo:rerun-if-env-changed=DBCANARY_REVISION");
    println!("cargo:rerun-if-changed=build.rs");
    // HEAD lives in the checkout's own git directory, the branches in the
    // common one (the same, except in a `git worktree`, whose `.git` is a
    // file). Watching a path that does not exist would rerun this script,
    // and rebuild the crate, on every build.
    let dirs = [
        git(&["rev-parse", "--git-dir"]).map(|d| PathBuf::from(d).join("HEAD")),
        git(&["rev-parse", "--git-common-dir"]).map(|d| PathBuf::from(d).join("refs/heads")),
    ];
    for path in dirs.into_iter().flatten().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
