//! Configuration: a TOML (or YAML) file read with the `config` crate,
//! overridden by `DBCANARY__SECTION__KEY` variables, plus targets discovered
//! from `*_REDIS_URL`-style variables. Raw serde structs refuse unknown keys;
//! [`load`] validates them into runtime types, and every refusal names the
//! file, the key and the reason.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::dburl::DbUrl;
use crate::model::{MetricDetail, StoreKind, TargetInfo};
use crate::settings::CanarySettings;
use crate::stores::http::StatusMatch;
use crate::stores::{Options, Spec};
use crate::tls::TlsFiles;

mod discovery;
pub mod files;
mod http;
pub mod otlp;
pub mod shard;

pub use discovery::discover;
pub use files::TargetFiles;
pub use otlp::{OtlpConfig, OtlpSettings, Transport};
pub use shard::{Shard, Split};

/// Where the agent listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9838";

/// A refused configuration: which file, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError {
    /// The file, or `environment` for overrides and discovery.
    pub file: String,
    /// The key, e.g. `target[1].interval` or `target "cache".url`.
    pub key: String,
    pub reason: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[agent]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    pub listen: SocketAddr,
    pub log_format: LogFormat,
    /// The agent-wide budget of connection attempts per second.
    pub attempts_per_second: u32,
    /// `[agent.tls]`: serve the listener over HTTPS.
    pub tls: Option<TlsFiles>,
    /// `[agent.basic_auth]`: require a user and password (all but `/healthz`).
    pub basic_auth: Option<BasicAuth>,
    /// `shard`: the part of the target list this agent keeps.
    pub shard: Shard,
}

/// HTTP basic authentication of the listener: a user and a bcrypt hash of
/// its password (`htpasswd -nbB user password`, the part after the colon).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password_hash: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password_hash", &"***")
            .finish()
    }
}

/// Where a target came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSource {
    /// A `[[target]]` table.
    File,
    /// A `*_URL` environment variable.
    Env(String),
    /// The built-in local default ports.
    LocalDefault,
    /// The command line (`watch`).
    CommandLine,
    /// A `[[target]]` table of a `discovery.files` file.
    TargetsFile(PathBuf),
}

/// One validated target.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: String,
    pub url: DbUrl,
    /// What the store reads from the URL (for `http` targets also what a
    /// healthy answer looks like), parsed once.
    pub options: Options,
    pub settings: CanarySettings,
    /// For `http` targets: the stores the application depends on.
    pub depends_on: Vec<String>,
    pub recovery_deadline: Duration,
    pub source: TargetSource,
    /// For stores: the credential `dbcanary drill` acts with
    /// (`drill_url_env`), when the canary's user may not.
    pub drill_url: Option<DrillUrl>,
}

/// A drill credential: a URL of the same store, read from a variable.
#[derive(Debug, Clone, PartialEq)]
pub struct DrillUrl {
    /// The variable it was read from (what `config check` shows).
    pub var: String,
    pub url: DbUrl,
}

impl Target {
    /// The one way a URL becomes a target (config file, discovery, local
    /// defaults, `watch`): the scheme decides the store kind, whose options
    /// are parsed now. The reason never contains the URL.
    pub fn from_url(
        name: String,
        url: DbUrl,
        settings: CanarySettings,
        source: TargetSource,
    ) -> Result<Self, String> {
        let kind = StoreKind::from_scheme(&url.scheme).ok_or_else(|| {
            format!(
                "unknown scheme {:?}: use {}",
                url.scheme,
                scheme_list(&StoreKind::all_schemes())
            )
        })?;
        let options = Options::parse(kind, &url)?;
        Ok(Self {
            name,
            url,
            options,
            settings,
            depends_on: Vec::new(),
            recovery_deadline: DEFAULT_RECOVERY_DEADLINE,
            source,
            drill_url: None,
        })
    }

    /// Whether a canary of `other` is one of this target: the same in all
    /// but where it is configured (a target moved from the main file to a
    /// target file keeps its canary).
    pub fn runs_as(&self, other: &Target) -> bool {
        let Target {
            name,
            url,
            options,
            settings,
            depends_on,
            recovery_deadline,
            // Neither changes what the canary does.
            source: _,
            drill_url: _,
        } = self;
        *name == other.name
            && *url == other.url
            && *options == other.options
            && *settings == other.settings
            && *depends_on == other.depends_on
            && *recovery_deadline == other.recovery_deadline
    }

    /// The store kind.
    pub fn kind(&self) -> StoreKind {
        self.options.kind()
    }

    /// What the store is built from.
    pub fn spec(&self) -> Spec<'_> {
        Spec {
            name: &self.name,
            url: &self.url,
            settings: &self.settings,
        }
    }

    /// The static facts of the target that its events carry, for a new
    /// canary (each call is another instance).
    pub fn info(&self) -> std::sync::Arc<TargetInfo> {
        static INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        std::sync::Arc::new(TargetInfo {
            name: self.name.clone(),
            store: self.kind(),
            endpoint: self.url.endpoint(),
            own_results: self.options.own_results(),
            instance: INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            detail: self.settings.metrics,
        })
    }
}

/// `a, b, c or d`.
fn scheme_list(items: &[&str]) -> String {
    match items.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => items.join(""),
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file read, if any.
    pub file: Option<PathBuf>,
    pub agent: AgentConfig,
    pub defaults: CanarySettings,
    pub otlp: Option<OtlpConfig>,
    pub discovery_env: bool,
    /// `discovery.files`: the patterns of the target files (absolute).
    pub discovery_files: Vec<PathBuf>,
    /// How often the target files are looked at.
    pub discovery_refresh: Duration,
    /// The targets of the file and of the environment, every shard's: the
    /// target files add theirs and the shard splits them all (see
    /// [`TargetFiles`] and [`Shard::split`]).
    pub targets: Vec<Target>,
    /// What loading had to say without refusing (discovery's skipped or
    /// doubtful variables): logged by `run`, printed by `config check`.
    pub warnings: Vec<String>,
}

impl Config {
    /// Whether the targets are the built-in local defaults.
    pub fn uses_local_defaults(&self) -> bool {
        self.targets
            .iter()
            .all(|t| t.source == TargetSource::LocalDefault)
            && !self.targets.is_empty()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    agent: RawAgent,
    #[serde(default)]
    defaults: RawSettings,
    #[serde(default)]
    otlp: Option<OtlpConfig>,
    #[serde(default)]
    discovery: RawDiscovery,
    #[serde(default, rename = "target")]
    targets: Vec<RawTarget>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    listen: Option<String>,
    log_format: Option<String>,
    attempts_per_second: Option<u32>,
    tls: Option<TlsFiles>,
    basic_auth: Option<BasicAuth>,
    shard: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscovery {
    env: Option<bool>,
    files: Option<Vec<String>>,
    refresh_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    interval: Option<String>,
    timeout: Option<String>,
    backoff: Option<RawBackoff>,
    identity_every: Option<f64>,
    metrics: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    initial: Option<String>,
    multiplier: Option<f64>,
    max: Option<String>,
    fine: Option<String>,
    fine_for: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: Option<String>,
    url: Option<String>,
    url_env: Option<String>,
    password_file: Option<PathBuf>,
    interval: Option<String>,
    timeout: Option<String>,
    backoff: Option<RawBackoff>,
    identity_every: Option<f64>,
    metrics: Option<String>,
    depends_on: Option<Vec<String>>,
    recovery_deadline: Option<String>,
    expected_status: Option<http::RawStatuses>,
    body_contains: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    drill_url_env: Option<String>,
}

/// Default time an application has to recover after its store is back.
pub const DEFAULT_RECOVERY_DEADLINE: Duration = Duration::from_secs(30);

/// Reads variables through a function, so tests need not touch the process
/// environment.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
    fn vars(&self) -> Vec<(String, String)>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
}

/// Loads and validates the configuration: the file (if any), then the
/// `DBCANARY__` overrides, then discovery, then the local defaults when no
/// target is left.
pub fn load(file: Option<&Path>, env: &dyn Env) -> Result<Config, ConfigError> {
    let file_label = file
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "environment".to_string());
    let raw = read_raw(file, env, &file_label)?;
    validate(raw, file.map(Path::to_path_buf), &file_label, env).map_err(redacted)
}

/// A refusal with every credential its reason may quote (a value echoed
/// back, say a URL given as `agent.listen`) masked.
fn redacted(mut e: ConfigError) -> ConfigError {
    e.reason = crate::dburl::redact_text(&e.reason);
    e
}

/// The largest configuration file read: a config is a few kilobytes, and a
/// bound keeps a wrong path (a log, a device) from filling memory.
pub const MAX_FILE_SIZE: u64 = 1 << 20;

/// The largest secret file read (`password_file`).
pub const MAX_SECRET_SIZE: u64 = 64 << 10;

/// What a YAML file may expand to through its aliases, in nodes: far more
/// than any configuration needs, far less than an alias bomb.
pub const MAX_YAML_NODES: usize = 100_000;

/// Reads a small regular file whole: FIFOs, devices and directories are
/// refused (they could block or never end), and so is anything larger than
/// `limit`.
pub fn read_bounded(path: &Path, limit: u64) -> Result<String, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.len() > limit {
        return Err(format!(
            "{} is larger than {} KiB",
            path.display(),
            limit >> 10
        ));
    }
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut text = String::new();
    // The size may have changed since: read no more than the limit.
    std::io::Read::read_to_string(&mut std::io::Read::take(file, limit + 1), &mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > limit {
        return Err(format!(
            "{} is larger than {} KiB",
            path.display(),
            limit >> 10
        ));
    }
    Ok(text)
}

fn read_raw(file: Option<&Path>, env: &dyn Env, label: &str) -> Result<RawConfig, ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        let file_err = |reason: String| ConfigError {
            file: label.to_string(),
            key: "(file)".into(),
            reason,
        };
        if !path.exists() {
            return Err(file_err("file not found".into()));
        }
        let text = read_bounded(path, MAX_FILE_SIZE).map_err(file_err)?;
        builder = builder.add_source(file_source(path, &text).map_err(file_err)?);
    }
    let overrides: config::Map<String, String> = env
        .vars()
        .into_iter()
        .filter(|(k, _)| k.starts_with("DBCANARY__"))
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix("DBCANARY")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(Some(overrides)),
    );
    let built = builder.build().map_err(|e| from_config_error(e, label))?;
    built
        .try_deserialize::<RawConfig>()
        .map_err(|e| from_config_error(e, label))
}

/// A file's text as a `config` source: YAML for a `.yaml` or `.yml` file
/// (once its aliases are known to stay bounded), else TOML.
fn file_source(
    path: &Path,
    text: &str,
) -> Result<config::File<config::FileSourceString, config::FileFormat>, String> {
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => {
            yaml_size(text)?;
            config::FileFormat::Yaml
        }
        _ => config::FileFormat::Toml,
    };
    Ok(config::File::from_str(text, format))
}

/// Refuses a YAML text whose aliases would expand past [`MAX_YAML_NODES`]
/// (the parser behind the `config` crate expands every alias in full), by
/// counting, event by event, what each anchor stands for.
fn yaml_size(text: &str) -> Result<(), String> {
    use yaml_rust2::parser::{Event, EventReceiver, Parser};

    #[derive(Default)]
    struct Count {
        /// Expanded nodes so far.
        total: usize,
        /// Per anchor id, the nodes it expands to.
        anchors: std::collections::HashMap<usize, usize>,
        /// Open collections: (anchor id, total when they opened).
        open: Vec<(usize, usize)>,
    }

    impl EventReceiver for Count {
        fn on_event(&mut self, ev: Event) {
            match ev {
                Event::Scalar(_, _, anchor, _) => {
                    self.total = self.total.saturating_add(1);
                    if anchor > 0 {
                        self.anchors.insert(anchor, 1);
                    }
                }
                Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                    self.total = self.total.saturating_add(1);
                    self.open.push((anchor, self.total));
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    if let Some((anchor, from)) = self.open.pop()
                        && anchor > 0
                    {
                        self.anchors.insert(anchor, self.total - from + 1);
                    }
                }
                Event::Alias(id) => {
                    let n = self.anchors.get(&id).copied().unwrap_or(1);
                    self.total = self.total.saturating_add(n);
                }
                _ => {}
            }
        }
    }

    let mut count = Count::default();
    let mut parser = Parser::new_from_str(text);
    // A syntax error is the config parser's to report, with its position.
    let _ = parser.load(&mut count, true);
    if count.total > MAX_YAML_NODES {
        return Err(format!(
            "its aliases expand to more than {MAX_YAML_NODES} YAML nodes"
        ));
    }
    Ok(())
}

/// Turns the `config` crate's error into file / key / reason, with every
/// credential the message may quote (a TOML error shows the source line)
/// redacted.
fn from_config_error(e: config::ConfigError, label: &str) -> ConfigError {
    redacted(config_error(e, label))
}

/// What a bare key reads as: the file's top level.
const TOP_LEVEL: &str = "(top level)";

fn config_error(e: config::ConfigError, label: &str) -> ConfigError {
    match e {
        config::ConfigError::At { error, key, .. } => {
            let inner = config_error(*error, label);
            ConfigError {
                file: label.to_string(),
                key: key.map(|k| dotted(&k)).unwrap_or(inner.key),
                reason: inner.reason,
            }
        }
        config::ConfigError::Type {
            key,
            unexpected,
            expected,
            ..
        } => ConfigError {
            file: label.to_string(),
            key: key.map_or_else(|| TOP_LEVEL.into(), |k| dotted(&k)),
            reason: format!("invalid type: {unexpected}, expected {expected}"),
        },
        config::ConfigError::FileParse { cause, .. } => {
            let cause = cause.to_string();
            // "TOML parse error at line 3, column 7" / "... at line 3 column 7"
            let key = cause
                .split_once("line ")
                .and_then(|(_, rest)| {
                    let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    (!n.is_empty()).then(|| format!("line {n}"))
                })
                .unwrap_or_else(|| TOP_LEVEL.into());
            ConfigError {
                file: label.to_string(),
                key,
                reason: format!("cannot parse: {}", cause.trim_end()),
            }
        }
        other => {
            let msg = other.to_string();
            // serde's messages for unknown keys end with " for key `x`".
            let (reason, key) = match msg.rsplit_once(" for key `") {
                Some((r, k)) => (r.to_string(), dotted(k.trim_end_matches('`'))),
                None => (msg, TOP_LEVEL.to_string()),
            };
            let reason = match reason.split_once(" in ") {
                Some((r, _)) if !r.is_empty() => r.to_string(),
                _ => reason,
            };
            ConfigError {
                file: label.to_string(),
                key,
                reason: plain_words(&reason),
            }
        }
    }
}

/// `target[0]timeout` (as the config crate writes a key below an array
/// element) → `target[0].timeout`.
fn dotted(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 2);
    let mut prev = None;
    for c in key.chars() {
        if prev == Some(']') && c != '.' && c != '[' {
            out.push('.');
        }
        out.push(c);
        prev = Some(c);
    }
    out
}

/// serde's terse phrases in the words an operator reads.
fn plain_words(reason: &str) -> String {
    reason
        .replace("expected number at 0", "expected a number")
        .replace("invalid digit found in string", "not a whole number")
}

struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    /// A refusal; whatever value the reason quotes has its credentials
    /// masked (a URL pasted where a name belongs, say).
    fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            key: key.into(),
            // Reasons quote values, and a URL pasted into the wrong key
            // (a name, a duration, the listen address) may carry a password.
            reason: crate::dburl::redact_text(&reason.into()),
        }
    }

    /// A duration within `range` (every duration has one: an absurd value
    /// would otherwise overflow the clock or send thousands of probes a
    /// second).
    fn ranged(
        &self,
        key: &str,
        v: &str,
        (min, max): (Duration, Duration),
    ) -> Result<Duration, ConfigError> {
        let d = parse_duration(v).map_err(|r| self.err(key, r))?;
        if d.is_zero() && !min.is_zero() {
            return Err(self.err(key, "must be greater than zero"));
        }
        if d < min || d > max {
            return Err(self.err(
                key,
                format!(
                    "{} is out of range: use {} to {}",
                    v.trim(),
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            ));
        }
        Ok(d)
    }

    fn settings(
        &self,
        prefix: &str,
        raw: &RawSettingsRef<'_>,
        base: CanarySettings,
    ) -> Result<CanarySettings, ConfigError> {
        let mut s = base;
        if let Some(v) = raw.interval {
            s.interval = self.ranged(&format!("{prefix}interval"), v, ranges::INTERVAL)?;
        }
        if let Some(v) = raw.timeout {
            s.timeout = self.ranged(&format!("{prefix}timeout"), v, ranges::TIMEOUT)?;
        }
        if let Some(b) = raw.backoff {
            if let Some(v) = &b.initial {
                s.backoff.initial =
                    self.ranged(&format!("{prefix}backoff.initial"), v, ranges::BACKOFF)?;
            }
            if let Some(m) = b.multiplier {
                if !(1.0..=100.0).contains(&m) {
                    return Err(self.err(
                        format!("{prefix}backoff.multiplier"),
                        format!("must be between 1.0 and 100.0, got {m}"),
                    ));
                }
                s.backoff.multiplier = m;
            }
            if let Some(v) = &b.max {
                s.backoff.max = self.ranged(&format!("{prefix}backoff.max"), v, ranges::BACKOFF)?;
            }
            if s.backoff.max < s.backoff.initial {
                return Err(self.err(
                    format!("{prefix}backoff.max"),
                    "must not be smaller than backoff.initial",
                ));
            }
            if let Some(v) = &b.fine {
                s.backoff.fine = self.ranged(&format!("{prefix}backoff.fine"), v, ranges::FINE)?;
            }
            if let Some(v) = &b.fine_for {
                s.backoff.fine_for =
                    self.ranged(&format!("{prefix}backoff.fine_for"), v, ranges::FINE_FOR)?;
            }
        }
        if let Some(n) = raw.identity_every {
            if n.fract() != 0.0 || !(0.0..=f64::from(u32::MAX)).contains(&n) {
                return Err(self.err(
                    format!("{prefix}identity_every"),
                    format!("must be a whole number of probes (0 = only on connect), got {n}"),
                ));
            }
            s.identity_every = n as u32;
        }
        if let Some(v) = raw.metrics {
            s.metrics = MetricDetail::parse(v).ok_or_else(|| {
                self.err(
                    format!("{prefix}metrics"),
                    format!("unknown value {v:?}: use \"basic\" (at most 40 series per target) or \"detailed\" (per-kind outage buckets, probe and connect latency histograms)"),
                )
            })?;
        }
        Ok(s)
    }
}

struct RawSettingsRef<'a> {
    interval: Option<&'a str>,
    timeout: Option<&'a str>,
    backoff: Option<&'a RawBackoff>,
    identity_every: Option<f64>,
    metrics: Option<&'a str>,
}

/// The range of every duration key.
pub mod ranges {
    use std::time::Duration;

    const MS: Duration = Duration::from_millis(1);
    const SEC: Duration = Duration::from_secs(1);
    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86400);

    pub const INTERVAL: (Duration, Duration) = (Duration::from_millis(10), DAY);
    pub const TIMEOUT: (Duration, Duration) = (Duration::from_millis(10), HOUR);
    pub const BACKOFF: (Duration, Duration) = (MS, HOUR);
    pub const FINE: (Duration, Duration) = (Duration::from_millis(5), SEC);
    pub const FINE_FOR: (Duration, Duration) = (Duration::ZERO, HOUR);
    pub const DEADLINE: (Duration, Duration) = (Duration::from_millis(10), DAY);
    /// `[otlp] timeout` and `export_interval`.
    pub const OTLP: (Duration, Duration) = (Duration::from_millis(10), DAY);
    /// `discovery.refresh_interval`.
    pub const REFRESH: (Duration, Duration) = (Duration::from_millis(100), HOUR);
}

/// A listen address: `127.0.0.1:9838`, `[::1]:9838`, or a host name with a
/// port (`localhost:9838`), resolved now to its first address.
pub fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    let example = "write e.g. \"127.0.0.1:9838\", \"[::1]:9838\" or \"localhost:9838\"";
    if !text.contains(':') {
        return Err(format!("{text:?} is not an address with a port: {example}"));
    }
    match std::net::ToSocketAddrs::to_socket_addrs(text) {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{text:?} resolves to no address")),
        Err(e) => Err(format!(
            "{text:?} is not an address like \"127.0.0.1:9838\" ({e}); {example}"
        )),
    }
}

/// Parses `"500ms"`, `"1s"`, `"2m"`.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    humantime::parse_duration(v.trim()).map_err(|e| {
        format!(
            "invalid duration {:?} ({e}); write e.g. \"500ms\", \"1s\", \"2m\"",
            crate::dburl::redact_text(v)
        )
    })
}

/// Whether a target name is acceptable (`[a-z0-9_-]+`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn validate(
    raw: RawConfig,
    file: Option<PathBuf>,
    label: &str,
    env: &dyn Env,
) -> Result<Config, ConfigError> {
    let ctx = Ctx { file: label };
    let listen = raw.agent.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen_addr(listen).map_err(|reason| ctx.err("agent.listen", reason))?;
    let log_format = match raw.agent.log_format.as_deref().unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(ctx.err(
                "agent.log_format",
                format!("must be \"text\" or \"json\", got {other:?}"),
            ));
        }
    };
    if let Some(tls) = &raw.agent.tls {
        crate::tls::server_config(tls)
            .map_err(|(key, reason)| ctx.err(format!("agent.tls.{key}"), reason))?;
    }
    if let Some(auth) = &raw.agent.basic_auth {
        if auth.username.is_empty() || auth.username.contains(':') {
            return Err(ctx.err(
                "agent.basic_auth.username",
                "must be non-empty and without ':'",
            ));
        }
        if !auth.password_hash.starts_with("$2") || auth.password_hash.len() != 60 {
            return Err(ctx.err(
                "agent.basic_auth.password_hash",
                "must be a bcrypt hash ($2b$..., 60 characters), e.g. from `htpasswd -nbB user password`",
            ));
        }
    }
    let shard = match &raw.agent.shard {
        Some(text) => Shard::parse(text, env).map_err(|reason| ctx.err("agent.shard", reason))?,
        None => Shard::default(),
    };
    let attempts_per_second = raw
        .agent
        .attempts_per_second
        .unwrap_or(crate::settings::DEFAULT_ATTEMPTS_PER_SECOND);
    if !(1..=1_000_000).contains(&attempts_per_second) {
        return Err(ctx.err(
            "agent.attempts_per_second",
            format!("{attempts_per_second} is out of range: use 1 to 1000000"),
        ));
    }
    let defaults = ctx.settings(
        "defaults.",
        &RawSettingsRef {
            interval: raw.defaults.interval.as_deref(),
            timeout: raw.defaults.timeout.as_deref(),
            backoff: raw.defaults.backoff.as_ref(),
            identity_every: raw.defaults.identity_every,
            metrics: raw.defaults.metrics.as_deref(),
        },
        CanarySettings::default(),
    )?;
    if let Some(o) = &raw.otlp {
        otlp::validate(o).map_err(|(key, reason)| ctx.err(key, reason))?;
    }

    let mut targets = Vec::new();
    let mut names = HashSet::new();
    for (i, t) in raw.targets.iter().enumerate() {
        let target = validate_target(&ctx, i, t, defaults, env)?;
        if !names.insert(target.name.clone()) {
            return Err(ctx.err(
                format!("target[{i}].name"),
                format!("duplicate target name {:?}", target.name),
            ));
        }
        targets.push(target);
    }
    let discovery_env = raw.discovery.env.unwrap_or(true);
    let mut warnings = Vec::new();
    let discovery_files = raw
        .discovery
        .files
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, p)| {
            files::pattern(p, file.as_deref())
                .map_err(|reason| ctx.err(format!("discovery.files[{i}]"), reason))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let discovery_refresh = match &raw.discovery.refresh_interval {
        Some(v) => ctx.ranged("discovery.refresh_interval", v, ranges::REFRESH)?,
        None => files::DEFAULT_REFRESH,
    };
    if discovery_env {
        let (found, said) = discover(env, defaults);
        warnings.extend(said);
        for t in found {
            if names.insert(t.name.clone()) {
                targets.push(t);
            } else {
                warnings.push(format!(
                    "discovery: {} skipped: a configured target is named {:?}",
                    t.source, t.name
                ));
            }
        }
    }
    check_depends_on(
        &ctx,
        &targets,
        |dep| names.contains(dep),
        "not a configured target",
    )?;
    // Target files may be empty for now (a ConfigMap not filled yet): an
    // agent told to read them never falls back to the local ports.
    if targets.is_empty() && discovery_files.is_empty() {
        targets = local_defaults(defaults);
    }
    Ok(Config {
        file,
        agent: AgentConfig {
            listen,
            log_format,
            attempts_per_second,
            tls: raw.agent.tls,
            basic_auth: raw.agent.basic_auth,
            shard,
        },
        defaults,
        otlp: raw.otlp,
        discovery_env,
        discovery_files,
        discovery_refresh,
        targets,
        warnings,
    })
}

/// Every `depends_on` of `targets` names another target `known` knows
/// (else it is `missing`, in the reason's words).
fn check_depends_on(
    ctx: &Ctx<'_>,
    targets: &[Target],
    known: impl Fn(&str) -> bool,
    missing: &str,
) -> Result<(), ConfigError> {
    for (i, t) in targets.iter().enumerate() {
        for dep in &t.depends_on {
            if !known(dep) {
                return Err(ctx.err(
                    format!("target[{i}].depends_on"),
                    format!("target {:?} depends on {dep:?}, which is {missing}", t.name),
                ));
            }
            if dep == &t.name {
                return Err(ctx.err(
                    format!("target[{i}].depends_on"),
                    format!("target {:?} cannot depend on itself", t.name),
                ));
            }
        }
    }
    Ok(())
}

fn validate_target(
    ctx: &Ctx<'_>,
    i: usize,
    t: &RawTarget,
    defaults: CanarySettings,
    env: &dyn Env,
) -> Result<Target, ConfigError> {
    let key = |k: &str| format!("target[{i}].{k}");
    let name = t
        .name
        .clone()
        .ok_or_else(|| ctx.err(key("name"), "missing (every target needs a name)"))?;
    if !valid_name(&name) {
        return Err(ctx.err(
            key("name"),
            format!("{name:?} is not a valid name: use lower-case letters, digits, '_' and '-'"),
        ));
    }
    let (url_text, url_key) = match (&t.url, &t.url_env) {
        (Some(_), Some(_)) => {
            return Err(ctx.err(key("url"), "give either url or url_env, not both"));
        }
        (None, None) => return Err(ctx.err(key("url"), "missing (give url or url_env)")),
        (Some(u), None) => (u.clone(), key("url")),
        (None, Some(var)) => match env.var(var) {
            Some(u) if !u.trim().is_empty() => (u, key("url_env")),
            _ => {
                return Err(ctx.err(
                    key("url_env"),
                    format!("environment variable {var} is not set"),
                ));
            }
        },
    };
    let url = DbUrl::parse(&url_text).map_err(|e| ctx.err(&url_key, e.to_string()))?;
    let mut target = Target::from_url(name, url, defaults, TargetSource::File)
        .map_err(|reason| ctx.err(&url_key, reason))?;
    if let Some(pf) = &t.password_file {
        // A relative name is one of the unit's credentials (systemd's
        // LoadCredential=), when it has any.
        let pf = match env.var("CREDENTIALS_DIRECTORY") {
            Some(dir) if pf.is_relative() && !dir.is_empty() => Path::new(&dir).join(pf),
            _ => pf.clone(),
        };
        let pw =
            read_bounded(&pf, MAX_SECRET_SIZE).map_err(|e| ctx.err(key("password_file"), e))?;
        let pw = pw.trim_end_matches(['\r', '\n']).to_string();
        target.url.set_password(Some(pw));
    }
    target.settings = ctx.settings(
        &format!("target[{i}]."),
        &RawSettingsRef {
            interval: t.interval.as_deref(),
            timeout: t.timeout.as_deref(),
            backoff: t.backoff.as_ref(),
            identity_every: t.identity_every,
            metrics: t.metrics.as_deref(),
        },
        defaults,
    )?;
    let kind = target.kind();
    let depends_on = t.depends_on.clone().unwrap_or_default();
    if !depends_on.is_empty() && kind != StoreKind::Http {
        return Err(ctx.err(
            key("depends_on"),
            "only http targets (applications) can depend on other targets",
        ));
    }
    let recovery_deadline = match &t.recovery_deadline {
        Some(v) => ctx.ranged(&key("recovery_deadline"), v, ranges::DEADLINE)?,
        None => DEFAULT_RECOVERY_DEADLINE,
    };
    let raw_http = http::RawHttp {
        expected_status: t.expected_status.as_ref(),
        body_contains: t.body_contains.as_deref(),
        headers: t.headers.as_ref(),
    };
    if kind != StoreKind::Http
        && let Some(k) = raw_http.first_key()
    {
        return Err(ctx.err(key(k), "only http targets (applications) take this key"));
    }
    if let Options::Http(check) = &mut target.options {
        *check = http::validate(&raw_http).map_err(|(k, reason)| ctx.err(key(&k), reason))?;
        if check.headers.contains_key("authorization")
            && (target.url.username.is_some() || target.url.has_password())
        {
            return Err(ctx.err(
                key("headers.authorization"),
                "credentials are given twice: use either the URL's user:password (or password_file) or an Authorization header",
            ));
        }
    }
    target.depends_on = depends_on;
    target.recovery_deadline = recovery_deadline;
    if let Some(var) = &t.drill_url_env {
        target.drill_url = Some(drill_url(ctx, &key("drill_url_env"), var, &target, env)?);
    }
    Ok(target)
}

/// The drill credential of a store target: a URL of the same kind of store
/// in `var`. The reason never contains the URL.
fn drill_url(
    ctx: &Ctx<'_>,
    key: &str,
    var: &str,
    target: &Target,
    env: &dyn Env,
) -> Result<DrillUrl, ConfigError> {
    if target.kind() == StoreKind::Http {
        return Err(ctx.err(key, "only stores take a drill credential"));
    }
    let text = env
        .var(var)
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| ctx.err(key, format!("environment variable {var} is not set")))?;
    let url = DbUrl::parse(&text).map_err(|e| ctx.err(key, format!("{var}: {e}")))?;
    let drill = Target::from_url(
        String::new(),
        url,
        CanarySettings::default(),
        TargetSource::File,
    )
    .map_err(|reason| ctx.err(key, format!("{var}: {reason}")))?;
    if drill.kind() != target.kind() {
        return Err(ctx.err(
            key,
            format!(
                "{var} holds a {} URL, the target a {} URL: give a URL of the same store",
                drill.url.scheme, target.url.scheme
            ),
        ));
    }
    Ok(DrillUrl {
        var: var.to_string(),
        url: drill.url,
    })
}

/// The local default ports, watched when nothing else is configured (the
/// kind table's `local_default`s).
pub fn local_defaults(settings: CanarySettings) -> Vec<Target> {
    crate::model::KINDS
        .iter()
        .filter_map(|row| row.local_default)
        .map(|(name, url)| {
            let url = DbUrl::parse(url).expect("built-in URL parses");
            Target::from_url(name.to_string(), url, settings, TargetSource::LocalDefault)
                .expect("built-in URL is a target")
        })
        .collect()
}

impl fmt::Display for TargetSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File => f.write_str("config file"),
            Self::Env(var) => write!(f, "environment variable {var}"),
            Self::LocalDefault => f.write_str("local default"),
            Self::CommandLine => f.write_str("command line"),
            Self::TargetsFile(path) => write!(f, "targets file {}", path.display()),
        }
    }
}

/// The effective configuration as TOML that reads back as a config file,
/// with every secret redacted.
pub fn effective_toml(c: &Config) -> String {
    use toml::{Table, Value};
    let dur = |d: Duration| Value::String(humantime::format_duration(d).to_string());
    let settings = |s: &CanarySettings| {
        let mut t = Table::new();
        t.insert("interval".into(), dur(s.interval));
        t.insert("timeout".into(), dur(s.timeout));
        let mut b = Table::new();
        b.insert("initial".into(), dur(s.backoff.initial));
        b.insert("multiplier".into(), Value::Float(s.backoff.multiplier));
        b.insert("max".into(), dur(s.backoff.max));
        b.insert("fine".into(), dur(s.backoff.fine));
        b.insert("fine_for".into(), dur(s.backoff.fine_for));
        t.insert("backoff".into(), Value::Table(b));
        t.insert(
            "identity_every".into(),
            Value::Integer(s.identity_every.into()),
        );
        t.insert("metrics".into(), Value::String(s.metrics.as_str().into()));
        t
    };
    let mut root = Table::new();
    let mut agent = Table::new();
    agent.insert("listen".into(), Value::String(c.agent.listen.to_string()));
    agent.insert(
        "log_format".into(),
        Value::String(
            match c.agent.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            }
            .into(),
        ),
    );
    agent.insert(
        "attempts_per_second".into(),
        Value::Integer(c.agent.attempts_per_second.into()),
    );
    if let Some(tls) = &c.agent.tls {
        let mut t = Table::new();
        t.insert(
            "cert_file".into(),
            Value::String(tls.cert_file.display().to_string()),
        );
        t.insert(
            "key_file".into(),
            Value::String(tls.key_file.display().to_string()),
        );
        agent.insert("tls".into(), Value::Table(t));
    }
    if let Some(auth) = &c.agent.basic_auth {
        let mut t = Table::new();
        t.insert("username".into(), Value::String(auth.username.clone()));
        t.insert("password_hash".into(), Value::String("***".into()));
        agent.insert("basic_auth".into(), Value::Table(t));
    }
    agent.insert("shard".into(), Value::String(c.agent.shard.to_string()));
    root.insert("agent".into(), Value::Table(agent));
    root.insert("defaults".into(), Value::Table(settings(&c.defaults)));
    root.insert(
        "otlp".into(),
        Value::Table(otlp::effective(c.otlp.as_ref())),
    );
    let mut disc = Table::new();
    disc.insert("env".into(), Value::Boolean(c.discovery_env));
    if !c.discovery_files.is_empty() {
        let files = c.discovery_files.iter();
        disc.insert(
            "files".into(),
            Value::Array(
                files
                    .map(|p| Value::String(p.display().to_string()))
                    .collect(),
            ),
        );
        disc.insert("refresh_interval".into(), dur(c.discovery_refresh));
    }
    root.insert("discovery".into(), Value::Table(disc));
    let targets = c
        .targets
        .iter()
        .map(|t| {
            let mut tt = Table::new();
            tt.insert("name".into(), Value::String(t.name.clone()));
            tt.insert("url".into(), Value::String(t.url.redacted()));
            if let Some(d) = &t.drill_url {
                tt.insert("drill_url_env".into(), Value::String(d.var.clone()));
            }
            tt.extend(settings(&t.settings));
            if let Options::Http(check) = &t.options {
                tt.insert(
                    "depends_on".into(),
                    Value::Array(t.depends_on.iter().cloned().map(Value::String).collect()),
                );
                tt.insert("recovery_deadline".into(), dur(t.recovery_deadline));
                tt.insert(
                    "expected_status".into(),
                    Value::Array(
                        check
                            .expected_status
                            .iter()
                            .map(|m| match m {
                                StatusMatch::Code(c) => Value::Integer((*c).into()),
                                StatusMatch::Class(_) => Value::String(m.to_string()),
                            })
                            .collect(),
                    ),
                );
                if let Some(b) = &check.body_contains {
                    tt.insert("body_contains".into(), Value::String(b.clone()));
                }
                if !check.headers.is_empty() {
                    let h = check
                        .headers
                        .keys()
                        .map(|k| (k.clone(), Value::String("***".into())))
                        .collect();
                    tt.insert("headers".into(), Value::Table(h));
                }
            }
            Value::Table(tt)
        })
        .collect();
    root.insert("target".into(), Value::Array(targets));
    toml::to_string_pretty(&root).unwrap_or_default()
}

#[cfg(test)]
mod tests;
