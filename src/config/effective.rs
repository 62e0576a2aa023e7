//! The effective configuration as `config check` prints it.

use std::fmt;
use std::time::Duration;

use super::{Config, LogFormat, TargetSource, otlp};
use crate::settings::CanarySettings;
use crate::stores::Options;
use crate::stores::http::StatusMatch;

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
        b.insert(
            "fine_not_ready".into(),
            Value::Integer(s.backoff.fine_not_ready.into()),
        );
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
    let mut drills = Table::new();
    drills.insert("enabled".into(), Value::Boolean(c.drills.enabled));
    drills.insert("allow_exec".into(), Value::Boolean(c.drills.allow_exec));
    root.insert("drills".into(), Value::Table(drills));
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
