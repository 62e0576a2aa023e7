//! Targets from files: `[discovery] files = ["/etc/dbcanary/targets.d/*.toml"]`
//! names files of `[[target]]` tables (the main configuration's format),
//! looked at again every `refresh_interval` and on SIGHUP, the way
//! Prometheus' `file_sd` reads its files, so that Ansible, consul-template
//! or a Kubernetes ConfigMap can change the target list without a restart.
//!
//! Each file stands alone: a file that cannot be read or parsed, whose
//! targets do not validate, or whose new content would give a name twice
//! (across the main configuration and every file) is refused with its
//! file, key and reason, and keeps the list it last gave. Deleting a file
//! removes its targets; emptying it to zero bytes does not (a tool that
//! truncates before it writes leaves that for a moment): a file with only a
//! comment gives no target.
//!
//! Patterns take `*` (any run of characters) and `?` (one character) in
//! their last component only; like a shell's, neither matches a leading
//! `.` (so editors' swap files and a ConfigMap's `..data` are passed over).
//! A relative pattern is relative to the main configuration file's
//! directory.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::read::{file_source, from_config_error};
use super::{
    Config, ConfigError, Ctx, Env, MAX_FILE_SIZE, RawTarget, Split, Target, TargetSource,
    check_depends_on, read_bounded, redacted, validate_target,
};

/// How often target files are looked at unless `discovery.refresh_interval`
/// says otherwise.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5);

/// A target file: only `[[target]]` tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTargetsFile {
    #[serde(default, rename = "target")]
    targets: Vec<RawTarget>,
}

/// Validates a `discovery.files` entry and makes it absolute.
pub(super) fn pattern(raw: &str, config_file: Option<&Path>) -> Result<PathBuf, String> {
    let example = "e.g. \"/etc/dbcanary/targets.d/*.toml\"";
    if raw.trim().is_empty() {
        return Err(format!(
            "must not be empty: give a file or a pattern, {example}"
        ));
    }
    let path = Path::new(raw);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|_| !raw.ends_with('/'))
        .ok_or_else(|| {
            format!("{raw:?} names no file: end it with a file name or a pattern, {example}")
        })?;
    let dir = path.parent().unwrap_or(Path::new(""));
    if dir.to_string_lossy().contains(['*', '?']) {
        return Err(format!(
            "{raw:?}: wildcards (* and ?) are allowed in the file name only, not in directories"
        ));
    }
    if name.contains(['[', '{']) {
        return Err(format!(
            "{raw:?}: only * and ? are wildcards ([...] and {{...}} are not supported)"
        ));
    }
    let base = config_file
        .and_then(Path::parent)
        .unwrap_or(Path::new(""))
        .join(path);
    Ok(std::path::absolute(&base).unwrap_or(base))
}

/// Whether a file name matches a pattern of `*` and `?`.
fn matches(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // The last `*` seen and where in the name it stands: on a mismatch it
    // takes one more character (the classic backtracking of one star).
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((s, taken)) => {
                    star = Some((s, taken + 1));
                    pi = s + 1;
                    ni = taken + 1;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The files a pattern names now, sorted. A missing directory names none.
fn expand(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let (Some(dir), Some(name)) = (
        pattern.parent(),
        pattern.file_name().and_then(|n| n.to_str()),
    ) else {
        return Ok(Vec::new());
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let file = entry.file_name();
        // A directory is passed over; a dangling link is not, so that it is
        // refused (and keeps its last list) rather than taken as deleted.
        if file.to_str().is_some_and(|f| matches(name, f)) && !entry.path().is_dir() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// What tells that a file may have changed without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    /// A replaced file (a ConfigMap's new version behind the same link) is
    /// another inode even with the same size and time.
    inode: (u64, u64),
}

/// How long after its last change a file is read again at every look, the
/// stamp notwithstanding: file times move in coarse ticks (a few ms), so two
/// writes of the same size in one tick leave the same stamp.
const SETTLING: Duration = Duration::from_secs(2);

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode: (meta.dev(), meta.ino()),
        }
    }

    /// Whether the file has not changed since this stamp for sure.
    fn settled(&self) -> bool {
        self.modified
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > SETTLING)
    }
}

/// One target file, as last seen.
#[derive(Debug, Default)]
struct FileState {
    stamp: Option<Stamp>,
    text: Option<String>,
    /// The list it gives now: the last content accepted.
    good: Vec<Target>,
    /// New content, valid on its own, that the last scan refused because
    /// it gives a name another file or the main configuration gives too;
    /// tried again at every scan, since that other file may change.
    pending: Option<Vec<Target>>,
    /// The last refusal, so that each is reported once.
    refusal: Option<ConfigError>,
}

/// Who gives a target name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Giver {
    Main,
    File(usize),
}

/// What one look at the files found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Whether the targets the files give changed.
    pub changed: bool,
    /// Refusals not reported before (each names the file, key and reason).
    pub errors: Vec<ConfigError>,
}

/// The target files and what each gives.
#[derive(Debug, Default)]
pub struct TargetFiles {
    patterns: Vec<PathBuf>,
    files: BTreeMap<PathBuf, FileState>,
}

impl TargetFiles {
    /// The files of `config`'s `discovery.files`, none read yet.
    pub fn new(config: &Config) -> Self {
        Self {
            patterns: config.discovery_files.clone(),
            files: BTreeMap::new(),
        }
    }

    /// Whether there are any patterns to look at.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Every target the files give, in file order.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.files.values().flat_map(|f| f.good.iter())
    }

    /// What this agent watches: the main configuration's targets and the
    /// files', split by its shard.
    pub fn watched(&self, main: &Config) -> Split {
        let all = main.targets.iter().chain(self.targets()).cloned().collect();
        main.agent.shard.split(all)
    }

    /// Looks at the files: those whose size, time or inode changed are read
    /// again, every one when `force` (on SIGHUP, and whenever `main` is new:
    /// file targets are validated with its defaults and against its names).
    /// `main`'s `discovery.files` replace the patterns.
    pub fn scan(&mut self, main: &Config, env: &dyn Env, force: bool) -> Scan {
        let mut scan = Scan::default();
        self.patterns.clone_from(&main.discovery_files);
        if force {
            for f in self.files.values_mut() {
                f.refusal = None;
            }
        }
        let mut present = BTreeSet::new();
        let mut listed_all = true;
        for (i, p) in self.patterns.iter().enumerate() {
            match expand(p) {
                Ok(paths) => present.extend(paths),
                Err(reason) => {
                    listed_all = false;
                    scan.errors.push(ConfigError {
                        file: main_label(main),
                        key: format!("discovery.files[{i}]"),
                        reason,
                    });
                }
            }
        }
        // A file no pattern names any more is gone, with its targets; while
        // a directory cannot be listed, nothing is taken as gone.
        let mut gone_targets = false;
        self.files.retain(|path, f| {
            let keep = present.contains(path) || !listed_all;
            gone_targets |= !keep && !f.good.is_empty();
            keep
        });
        scan.changed |= gone_targets;
        for path in &present {
            let f = self.files.entry(path.clone()).or_default();
            if let Err(e) = read(path, f, main, env, force) {
                if f.refusal.as_ref() != Some(&e) {
                    scan.errors.push(e.clone());
                }
                f.refusal = Some(e);
            }
        }
        self.settle(main, &mut scan);
        scan
    }

    /// Accepts the new lists that give no name twice; refuses the others
    /// (they keep their last list and are tried again at the next scan).
    fn settle(&mut self, main: &Config, scan: &mut Scan) {
        let paths: Vec<PathBuf> = self.files.keys().cloned().collect();
        let mut blocked: HashSet<usize> = HashSet::new();
        while let Some((at, name, other)) = self.first_duplicate(main, &paths, &blocked) {
            // The change that brought the name in is refused: a new list
            // that gives it when its last one did not, this file's first;
            // else any new list of the two. Two lists accepted before can
            // only clash once the main configuration gives the name too:
            // the file's is then left out.
            let state = |i: usize| &self.files[&paths[i]];
            let new = |i: usize| state(i).pending.as_ref().filter(|_| !blocked.contains(&i));
            let brought =
                |i: usize| new(i).is_some() && !state(i).good.iter().any(|t| t.name == name);
            let other_file = match other {
                Giver::File(g) => Some(g),
                Giver::Main => None,
            };
            let refused = [Some(at), other_file]
                .into_iter()
                .flatten()
                .find(|&i| brought(i))
                .or_else(|| {
                    [Some(at), other_file]
                        .into_iter()
                        .flatten()
                        .find(|&i| new(i).is_some())
                })
                .unwrap_or(at);
            let also = match other_file {
                None => "the main configuration".to_string(),
                Some(g) if g == refused => paths[at].display().to_string(),
                Some(g) => paths[g].display().to_string(),
            };
            let list = new(refused).unwrap_or(&state(refused).good);
            let index = list.iter().position(|t| t.name == name).unwrap_or(0);
            let e = ConfigError {
                file: paths[refused].display().to_string(),
                key: format!("target[{index}].name"),
                reason: format!("duplicate target name {name:?} (also in {also})"),
            };
            let dropped = new(refused).is_none();
            let f = self.files.get_mut(&paths[refused]).expect("a known file");
            if dropped {
                scan.changed |= !f.good.is_empty();
                f.good.clear();
            } else {
                blocked.insert(refused);
            }
            if f.refusal.as_ref() != Some(&e) {
                scan.errors.push(e.clone());
            }
            f.refusal = Some(e);
        }
        for (i, path) in paths.iter().enumerate() {
            let f = self.files.get_mut(path).expect("a known file");
            if blocked.contains(&i) {
                continue;
            }
            if let Some(list) = f.pending.take() {
                scan.changed |= list != f.good;
                f.good = list;
                f.refusal = None;
            }
        }
    }

    /// The first name given twice, the main configuration's names first
    /// and then each file's (its new list unless blocked): the file that
    /// gives it again, the name, and who gave it before.
    fn first_duplicate(
        &self,
        main: &Config,
        paths: &[PathBuf],
        blocked: &HashSet<usize>,
    ) -> Option<(usize, String, Giver)> {
        let mut givers: HashMap<&str, Giver> = main
            .targets
            .iter()
            .map(|t| (t.name.as_str(), Giver::Main))
            .collect();
        for (i, path) in paths.iter().enumerate() {
            let f = &self.files[path];
            let list = match &f.pending {
                Some(l) if !blocked.contains(&i) => l,
                _ => &f.good,
            };
            for t in list {
                if let Some(g) = givers.insert(&t.name, Giver::File(i)) {
                    return Some((i, t.name.clone(), g));
                }
            }
        }
        None
    }
}

/// The main configuration's name in an error.
fn main_label(main: &Config) -> String {
    main.file
        .as_ref()
        .map_or_else(|| "environment".into(), |p| p.display().to_string())
}

/// Reads a file again if it may have changed, and validates what it says
/// on its own; a valid new list becomes `pending`.
fn read(
    path: &Path,
    f: &mut FileState,
    main: &Config,
    env: &dyn Env,
    force: bool,
) -> Result<(), ConfigError> {
    let label = path.display().to_string();
    let err = |reason: String| ConfigError {
        file: label.clone(),
        key: "(file)".into(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    let stamp = Stamp::of(&meta);
    if !force && f.stamp == Some(stamp) && stamp.settled() {
        return Ok(());
    }
    f.stamp = Some(stamp);
    let text = read_bounded(path, MAX_FILE_SIZE).map_err(err)?;
    if !force && f.text.as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    let parsed = parse(path, &text, main, env);
    f.text = Some(text);
    match parsed {
        Ok(list) => {
            f.pending = Some(list);
            Ok(())
        }
        Err(e) => {
            f.pending = None;
            Err(e)
        }
    }
}

/// The targets of one file, validated with the main configuration's
/// defaults; their `depends_on` may name targets of the same file or of the
/// main configuration.
fn parse(
    path: &Path,
    text: &str,
    main: &Config,
    env: &dyn Env,
) -> Result<Vec<Target>, ConfigError> {
    parse_unredacted(path, text, main, env).map_err(redacted)
}

fn parse_unredacted(
    path: &Path,
    text: &str,
    main: &Config,
    env: &dyn Env,
) -> Result<Vec<Target>, ConfigError> {
    let label = path.display().to_string();
    let ctx = Ctx { file: &label };
    if text.trim().is_empty() {
        return Err(ctx.err(
            "(file)",
            "the file is empty (still being written?) and keeps its last targets: delete it, or leave a comment in it, to remove them",
        ));
    }
    let source = file_source(path, text).map_err(|r| ctx.err("(file)", r))?;
    let raw: RawTargetsFile = config::Config::builder()
        .add_source(source)
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|e| from_config_error(e, &label))?;
    let mut names = HashSet::new();
    let mut targets = Vec::new();
    for (i, t) in raw.targets.iter().enumerate() {
        let mut target = validate_target(&ctx, i, t, main.defaults, env)?;
        target.source = TargetSource::TargetsFile(path.to_path_buf());
        if !names.insert(target.name.clone()) {
            return Err(ctx.err(
                format!("target[{i}].name"),
                format!("duplicate target name {:?}", target.name),
            ));
        }
        targets.push(target);
    }
    check_depends_on(
        &ctx,
        &targets,
        |dep| names.contains(dep) || main.targets.iter().any(|t| t.name == dep),
        "neither in this file nor in the main configuration",
    )?;
    Ok(targets)
}

#[cfg(test)]
mod tests;
