//! Reading the configuration: bounded file reads, the `config` crate's
//! sources (TOML, or YAML once its aliases are known to stay bounded, and
//! the `DBCANARY__` overrides), and its errors turned into file / key /
//! reason.

use std::path::Path;

use super::{ConfigError, Env, RawConfig, redacted};

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

pub(super) fn read_raw(
    file: Option<&Path>,
    env: &dyn Env,
    label: &str,
) -> Result<RawConfig, ConfigError> {
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
pub(super) fn file_source(
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
pub(super) fn from_config_error(e: config::ConfigError, label: &str) -> ConfigError {
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
