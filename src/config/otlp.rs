//! `[otlp]` and the standard `OTEL_*` variables (`OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `..._PROTOCOL`, `..._TIMEOUT`, `OTEL_METRIC_EXPORT_INTERVAL`,
//! `OTEL_TRACES_EXPORTER`/`OTEL_METRICS_EXPORTER=none`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME`), resolved into the
//! settings the exporters are built from. The config file wins over the
//! variables.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{Env, parse_duration};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// `[otlp]` as given; export itself is configured by the OTLP exporter.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    #[serde(default)]
    pub endpoint: String,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub export_interval: Option<String>,
    #[serde(default)]
    pub traces: Option<bool>,
    #[serde(default)]
    pub metrics: Option<bool>,
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, String>,
}

/// `[otlp]` as it takes effect from the file (the `OTEL_*` variables may
/// still supply what the file leaves empty, at start), every default
/// written out and header values redacted, for `config check`.
pub fn effective(cfg: Option<&OtlpConfig>) -> toml::Table {
    use toml::Value;
    let empty = OtlpConfig::default();
    let c = cfg.unwrap_or(&empty);
    let dur = |given: &Option<String>, default: Duration| {
        Value::String(
            given
                .clone()
                .unwrap_or_else(|| humantime::format_duration(default).to_string()),
        )
    };
    let mut t = toml::Table::new();
    t.insert("endpoint".into(), Value::String(c.endpoint.clone()));
    t.insert(
        "protocol".into(),
        Value::String(c.protocol.clone().unwrap_or_else(|| "grpc".into())),
    );
    t.insert(
        "headers".into(),
        Value::Table(
            c.headers
                .keys()
                .map(|k| (k.clone(), Value::String("***".into())))
                .collect(),
        ),
    );
    t.insert("timeout".into(), dur(&c.timeout, DEFAULT_TIMEOUT));
    t.insert(
        "export_interval".into(),
        dur(&c.export_interval, DEFAULT_INTERVAL),
    );
    t.insert("traces".into(), Value::Boolean(c.traces.unwrap_or(true)));
    t.insert("metrics".into(), Value::Boolean(c.metrics.unwrap_or(true)));
    t.insert(
        "resource_attributes".into(),
        Value::Table(
            c.resource_attributes
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        ),
    );
    t
}

/// A bad OTLP setting: the config key or variable, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct SettingError {
    pub key: String,
    pub reason: String,
}

/// How to reach the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    HttpProtobuf,
}

impl Transport {
    /// The config spelling (`grpc`, `http/protobuf`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        }
    }
}

/// `[otlp]` and the standard `OTEL_*` variables, resolved (config wins).
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    /// The collector's base URL.
    pub endpoint: String,
    pub transport: Transport,
    pub headers: BTreeMap<String, String>,
    pub timeout: Duration,
    pub export_interval: Duration,
    pub traces: bool,
    pub metrics: bool,
    /// Resource attributes, in order of increasing precedence.
    pub resource: Vec<(String, String)>,
}

impl OtlpSettings {
    /// Resolves the settings; `None` when there is no endpoint (export off).
    pub fn resolve(cfg: Option<&OtlpConfig>, env: &dyn Env) -> Result<Option<Self>, SettingError> {
        let empty = OtlpConfig::default();
        let cfg = cfg.unwrap_or(&empty);
        let var = |k: &str| env.var(k).filter(|v| !v.trim().is_empty());
        let endpoint = if cfg.endpoint.is_empty() {
            match var("OTEL_EXPORTER_OTLP_ENDPOINT") {
                Some(e) => e,
                None => return Ok(None),
            }
        } else {
            cfg.endpoint.clone()
        };
        let protocol = cfg
            .protocol
            .clone()
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_else(|| "grpc".into());
        let transport = match protocol.trim() {
            "grpc" => Transport::Grpc,
            "http/protobuf" => Transport::HttpProtobuf,
            other => {
                return Err(setting(
                    "otlp.protocol",
                    format!("must be \"grpc\" or \"http/protobuf\", got {other:?}"),
                ));
            }
        };
        let duration = |key: &str, given: &Option<String>, var_name: &str, default| {
            if let Some(v) = given {
                return parse_duration(v).map_err(|e| setting(key, e.to_string()));
            }
            match var(var_name) {
                Some(ms) => ms
                    .trim()
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| setting(var_name, format!("not milliseconds: {ms:?}"))),
                None => Ok(default),
            }
        };
        let timeout = duration(
            "otlp.timeout",
            &cfg.timeout,
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            DEFAULT_TIMEOUT,
        )?;
        let export_interval = duration(
            "otlp.export_interval",
            &cfg.export_interval,
            "OTEL_METRIC_EXPORT_INTERVAL",
            DEFAULT_INTERVAL,
        )?;
        if timeout.is_zero() || export_interval.is_zero() {
            return Err(setting(
                "otlp.timeout",
                "timeout and export_interval must be greater than zero",
            ));
        }
        let switch = |given: Option<bool>, var_name: &str| {
            given.unwrap_or_else(|| var(var_name).is_none_or(|v| v.trim() != "none"))
        };
        let mut resource = vec![
            ("service.name".to_string(), "dbcanary".to_string()),
            ("service.version".into(), crate::model::VERSION.into()),
        ];
        if let Some(host) = host_name() {
            resource.push(("host.name".into(), host));
        }
        if let Some(attrs) = var("OTEL_RESOURCE_ATTRIBUTES") {
            resource.extend(parse_key_values(&attrs));
        }
        if let Some(name) = var("OTEL_SERVICE_NAME") {
            resource.push(("service.name".into(), name));
        }
        resource.extend(
            cfg.resource_attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        Ok(Some(Self {
            endpoint,
            transport,
            headers: cfg.headers.clone(),
            timeout,
            export_interval,
            traces: switch(cfg.traces, "OTEL_TRACES_EXPORTER"),
            metrics: switch(cfg.metrics, "OTEL_METRICS_EXPORTER"),
            resource,
        }))
    }

    /// The URL one signal is sent to: the base URL for gRPC, with the
    /// signal's path appended for HTTP/protobuf.
    pub fn signal_endpoint(&self, path: &str) -> String {
        match self.transport {
            Transport::Grpc => self.endpoint.clone(),
            Transport::HttpProtobuf => format!("{}{path}", self.endpoint.trim_end_matches('/')),
        }
    }

    /// The resource attributes, later entries winning as the order of
    /// [`OtlpSettings::resource`] promises.
    pub fn resource_attributes(&self) -> BTreeMap<&str, &str> {
        let mut map: BTreeMap<&str, &str> = BTreeMap::new();
        for (k, v) in &self.resource {
            map.insert(k, v);
        }
        map
    }
}

fn setting(key: &str, reason: impl Into<String>) -> SettingError {
    SettingError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// `k1=v1,k2=v2` with percent-encoded values (`OTEL_RESOURCE_ATTRIBUTES`).
fn parse_key_values(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let v = percent_encoding::percent_decode_str(v.trim()).decode_utf8_lossy();
            (k.trim().to_string(), v.into_owned())
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// Checks `[otlp]` when the configuration is read: (key, reason).
pub(super) fn validate(o: &OtlpConfig) -> Result<(), (String, String)> {
    if let Some(p) = &o.protocol
        && p != "grpc"
        && p != "http/protobuf"
    {
        return Err((
            "otlp.protocol".into(),
            format!("must be \"grpc\" or \"http/protobuf\", got {p:?}"),
        ));
    }
    if !o.endpoint.is_empty() {
        let u = url::Url::parse(&o.endpoint)
            .map_err(|e| ("otlp.endpoint".to_string(), format!("not a URL: {e}")))?;
        if u.scheme() != "http" && u.scheme() != "https" {
            return Err((
                "otlp.endpoint".into(),
                "must be an http:// or https:// URL".into(),
            ));
        }
    }
    for (key, v) in [
        ("otlp.timeout", &o.timeout),
        ("otlp.export_interval", &o.export_interval),
    ] {
        if let Some(v) = v {
            let (min, max) = super::ranges::OTLP;
            match parse_duration(v) {
                Ok(d) if d < min || d > max => {
                    return Err((
                        key.into(),
                        format!(
                            "{} is out of range: use {} to {}",
                            v.trim(),
                            humantime::format_duration(min),
                            humantime::format_duration(max)
                        ),
                    ));
                }
                Ok(_) => {}
                Err(reason) => return Err((key.into(), reason)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct MapEnv(Vec<(&'static str, &'static str)>);

    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
        fn vars(&self) -> Vec<(String, String)> {
            self.0
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }
    }

    #[test]
    fn no_endpoint_no_export() {
        assert_eq!(OtlpSettings::resolve(None, &MapEnv(vec![])).unwrap(), None);
        let cfg = OtlpConfig {
            protocol: Some("http/protobuf".into()),
            ..Default::default()
        };
        assert_eq!(
            OtlpSettings::resolve(Some(&cfg), &MapEnv(vec![])).unwrap(),
            None
        );
    }

    #[test]
    fn standard_variables_work_and_config_wins() {
        let env = MapEnv(vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
            ("OTEL_TRACES_EXPORTER", "none"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "team=db%20ops,service.name=ignored",
            ),
            ("OTEL_SERVICE_NAME", "canary-eu"),
        ]);
        let s = OtlpSettings::resolve(None, &env).unwrap().unwrap();
        assert_eq!(s.transport, Transport::HttpProtobuf);
        assert_eq!(
            s.signal_endpoint("/v1/traces"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(s.timeout, Duration::from_millis(2500));
        assert_eq!(s.export_interval, Duration::from_secs(1));
        assert!(!s.traces && s.metrics);
        let r = s.resource_attributes();
        assert_eq!(r.get("team"), Some(&"db ops"));
        assert_eq!(r.get("service.name"), Some(&"canary-eu"));
        assert!(r.contains_key("service.version"));

        let cfg = OtlpConfig {
            endpoint: "http://mine:4317".into(),
            protocol: Some("grpc".into()),
            timeout: Some("3s".into()),
            export_interval: Some("5s".into()),
            traces: Some(true),
            resource_attributes: [("service.name".to_string(), "edge".to_string())].into(),
            ..Default::default()
        };
        let s = OtlpSettings::resolve(Some(&cfg), &env).unwrap().unwrap();
        assert_eq!(s.transport, Transport::Grpc);
        assert_eq!(s.signal_endpoint("/v1/traces"), "http://mine:4317");
        assert_eq!(s.timeout, Duration::from_secs(3));
        assert_eq!(s.export_interval, Duration::from_secs(5));
        assert!(s.traces);
        assert_eq!(s.resource_attributes().get("service.name"), Some(&"edge"));
    }

    #[test]
    fn bad_variables_are_refused_with_their_name() {
        let env = MapEnv(vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ]);
        let e = OtlpSettings::resolve(None, &env).unwrap_err().to_string();
        assert!(e.contains("protocol") && e.contains("http/json"), "{e}");
        let env = MapEnv(vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
        ]);
        let e = OtlpSettings::resolve(None, &env).unwrap_err().to_string();
        assert!(e.contains("OTEL_EXPORTER_OTLP_TIMEOUT"), "{e}");
    }
}
