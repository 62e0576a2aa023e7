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
use crate::model::{StoreKind, TargetInfo};
use crate::settings::CanarySettings;
use crate::stores::{Options, Spec};
use crate::tls::TlsFiles;

mod discovery;
mod effective;
pub mod files;
mod http;
pub mod otlp;
mod read;
pub mod shard;
mod values;

pub use discovery::discover;
pub use effective::effective_toml;
pub use files::TargetFiles;
pub use otlp::{OtlpConfig, OtlpSettings, Transport};
pub use read::{MAX_FILE_SIZE, MAX_SECRET_SIZE, MAX_YAML_NODES, read_bounded};
pub use shard::{Shard, Split};
pub use values::{listen_addr, parse_duration, ranges, valid_name};

use read::read_raw;
use values::{Ctx, RawSettingsRef};

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

/// `[drills]`: drills started through the agent's API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrillsConfig {
    /// `POST /api/v1/drills` runs drills (it needs `agent.basic_auth`).
    pub enabled: bool,
    /// Such a drill may run an `exec` command (a shell command from an
    /// HTTP request, run as the agent's user).
    pub allow_exec: bool,
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
    pub drills: DrillsConfig,
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
    #[serde(default)]
    drills: RawDrills,
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
struct RawDrills {
    enabled: Option<bool>,
    allow_exec: Option<bool>,
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
    fine_not_ready: Option<f64>,
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
    let drills = DrillsConfig {
        enabled: raw.drills.enabled.unwrap_or(false),
        allow_exec: raw.drills.allow_exec.unwrap_or(false),
    };
    let mut warnings = Vec::new();
    if drills.enabled {
        if raw.agent.basic_auth.is_none() {
            return Err(ctx.err(
                "drills.enabled",
                "needs agent.basic_auth: a drill drops connections or restarts a store, so the API that starts one must not be open to anyone who reaches the listener",
            ));
        }
        if raw.agent.tls.is_none() && !listen.ip().is_loopback() {
            warnings.push(format!(
                "drills.enabled: the listener ({listen}) is plain HTTP on a non-loopback address: the basic-auth password that starts drills crosses the network in clear; set agent.tls"
            ));
        }
    } else if drills.allow_exec {
        return Err(ctx.err(
            "drills.allow_exec",
            "has no effect without drills.enabled = true",
        ));
    }
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
        drills,
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

#[cfg(test)]
mod tests;
