//! The words every other module speaks, at the bottom of the crate: the
//! store kinds (one table row each), who answers behind an endpoint
//! ([`Identity`]), and the bounded enums that become label values. Imports
//! nothing of the crate, so that everything may import it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

/// The agent's version and the commit it was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("DBCANARY_REVISION");

/// Which kind of store a target is, decided by its URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    Redis,
    RedisSentinel,
    Mysql,
    Mongodb,
    Postgresql,
    Http,
}

/// Everything the agent knows about a store kind that is not its protocol:
/// one row per kind in [`KINDS`].
#[derive(Debug)]
pub struct KindRow {
    pub kind: StoreKind,
    /// URL schemes, each with the port a URL without one means.
    pub schemes: &'static [(&'static str, u16)],
    /// The `store` label value.
    pub label: &'static str,
    /// OpenTelemetry's `db.system.name` (none for applications).
    pub db_system: Option<&'static str>,
    /// The environment variable suffix discovery looks for (`_REDIS_URL`).
    pub env_suffix: Option<&'static str>,
    /// The target watched when nothing is configured: (name, URL).
    pub local_default: Option<(&'static str, &'static str)>,
}

/// The kind table: adding a store adds one row here.
pub const KINDS: [KindRow; 6] = [
    KindRow {
        kind: StoreKind::Redis,
        schemes: &[("redis", 6379), ("rediss", 6379)],
        label: "redis",
        db_system: Some("redis"),
        env_suffix: Some("_REDIS_URL"),
        local_default: Some(("redis", "redis://127.0.0.1:6379")),
    },
    KindRow {
        kind: StoreKind::RedisSentinel,
        schemes: &[("redis+sentinel", 26379), ("rediss+sentinel", 26379)],
        label: "redis",
        db_system: Some("redis"),
        env_suffix: None,
        local_default: None,
    },
    KindRow {
        kind: StoreKind::Mysql,
        schemes: &[("mysql", 3306), ("mariadb", 3306)],
        label: "mysql",
        db_system: Some("mysql"),
        env_suffix: Some("_MYSQL_URL"),
        local_default: Some(("mysql", "mysql://root@127.0.0.1:3306")),
    },
    KindRow {
        kind: StoreKind::Mongodb,
        schemes: &[("mongodb", 27017), ("mongodb+srv", 27017)],
        label: "mongodb",
        db_system: Some("mongodb"),
        env_suffix: Some("_MONGODB_URL"),
        local_default: Some(("mongodb", "mongodb://127.0.0.1:27017")),
    },
    KindRow {
        kind: StoreKind::Postgresql,
        schemes: &[("postgres", 5432), ("postgresql", 5432)],
        label: "postgresql",
        db_system: Some("postgresql"),
        env_suffix: Some("_POSTGRESQL_URL"),
        local_default: Some(("postgresql", "postgresql://postgres@127.0.0.1:5432")),
    },
    KindRow {
        kind: StoreKind::Http,
        schemes: &[("http", 80), ("https", 443)],
        label: "http",
        db_system: None,
        env_suffix: None,
        local_default: None,
    },
];

impl StoreKind {
    /// This kind's row of [`KINDS`].
    pub fn row(self) -> &'static KindRow {
        KINDS
            .iter()
            .find(|r| r.kind == self)
            .unwrap_or_else(|| unreachable!("every kind has a row"))
    }

    /// The store kind for a URL scheme, if dbcanary knows the scheme.
    pub fn from_scheme(scheme: &str) -> Option<Self> {
        KINDS
            .iter()
            .find(|r| r.schemes.iter().any(|(s, _)| *s == scheme))
            .map(|r| r.kind)
    }

    /// The `store` label value (Sentinel targets are Redis targets).
    pub fn label(self) -> &'static str {
        self.row().label
    }

    /// OpenTelemetry's `db.system.name`, none for applications.
    pub fn db_system(self) -> Option<&'static str> {
        self.row().db_system
    }

    /// Every known scheme, for error messages.
    pub fn all_schemes() -> Vec<&'static str> {
        KINDS
            .iter()
            .flat_map(|r| r.schemes.iter().map(|(s, _)| *s))
            .collect()
    }
}

/// The port a URL of `scheme` means when it names none (80 for a scheme
/// dbcanary does not know).
pub fn default_port(scheme: &str) -> u16 {
    KINDS
        .iter()
        .flat_map(|r| r.schemes.iter())
        .find(|(s, _)| *s == scheme)
        .map_or(80, |(_, p)| *p)
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The role of the server that answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    Replica,
}

impl Role {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Replica => "replica",
        }
    }
}

/// What the agent learns about the server behind the endpoint on every
/// (re)connect (SPEC "identity"). Every field is optional: a store fills in
/// what it can, and classification says which missing field stopped it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Identity {
    /// Stable id of the server (Redis `run_id`, MySQL `server_uuid`, ...).
    pub server_id: Option<String>,
    pub role: Option<Role>,
    /// Server uptime when the identity was read.
    #[serde(serialize_with = "ser_opt_secs", rename = "uptime_s")]
    pub uptime: Option<Duration>,
    /// Id of the server process, where the store reports one without an
    /// uptime (MongoDB `topologyVersion.processId`).
    pub process_id: Option<String>,
    /// A topology epoch that only moves forward (MongoDB `electionId`,
    /// PostgreSQL timeline).
    pub epoch: Option<String>,
    /// The address actually reached (`host:port`).
    pub address: Option<String>,
    pub version: Option<String>,
    /// Store-specific extras shown in the API (e.g. Redis `master_replid`).
    pub details: BTreeMap<String, String>,
    /// When the identity was read (monotonic), to extrapolate the uptime.
    #[serde(skip)]
    pub read_at: Option<Instant>,
    /// How long the read took at most: the server's answer is at most this
    /// much older than `read_at`.
    #[serde(skip)]
    pub read_within: Duration,
    /// How precise `uptime` is; `None` is whole seconds, as Redis and MySQL
    /// report it.
    #[serde(skip)]
    pub uptime_resolution: Option<Duration>,
    /// A number that only grows during one server process (the MySQL
    /// connection id of the canary): a new connection's is higher than the
    /// old one's in the same process, so one that is not says another
    /// process answers.
    #[serde(skip)]
    pub connection_seq: Option<u64>,
}

/// The static facts about the target an event belongs to.
#[derive(Debug, Clone)]
pub struct TargetInfo {
    pub name: String,
    pub store: StoreKind,
    /// Host and port of the endpoint, without credentials.
    pub endpoint: String,
    /// Attempt results this target's store has beyond [`ConnectResult`]
    /// (an application check's `status` and `body`).
    pub own_results: &'static [&'static str],
    /// Which canary of the target this is: a reload that changes a target
    /// starts a new canary under the same name, and the old one's last
    /// events (and its end) must not touch the new one's series.
    pub instance: u64,
    /// How many series the target has on `/metrics`.
    pub detail: MetricDetail,
}

/// How much a target exports on `/metrics` (the `metrics` key of a target
/// and of `[defaults]`): `basic` keeps a target within 40 series, so that
/// one agent can watch thousands; `detailed` adds per-kind outage buckets
/// and the probe and connect latency histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricDetail {
    #[default]
    Basic,
    Detailed,
}

impl MetricDetail {
    /// Every value, as the config spells it.
    pub const ALL: [Self; 2] = [Self::Basic, Self::Detailed];

    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Basic => "basic",
            Self::Detailed => "detailed",
        }
    }

    /// The value the config spells `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// Result of one connection attempt (SPEC "reconnect attempt"), as every
/// store has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectResult {
    Ok,
    Refused,
    Timeout,
    Dns,
    Tls,
    Auth,
    NotReady,
    Protocol,
    Io,
}

impl ConnectResult {
    /// Every value, in label order.
    pub const ALL: [Self; 9] = [
        Self::Ok,
        Self::Refused,
        Self::Timeout,
        Self::Dns,
        Self::Tls,
        Self::Auth,
        Self::NotReady,
        Self::Protocol,
        Self::Io,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Dns => "dns",
            Self::Tls => "tls",
            Self::Auth => "auth",
            Self::NotReady => "not_ready",
            Self::Protocol => "protocol",
            Self::Io => "io",
        }
    }
}

/// The `result` of one attempt as exported: a [`ConnectResult`], or a result
/// kind a store has of its own (listed in its `OWN_RESULTS`), by label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptResult {
    Connect(ConnectResult),
    Own(&'static str),
}

impl AttemptResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect(r) => r.as_str(),
            Self::Own(s) => s,
        }
    }

    /// Whether the attempt succeeded.
    pub fn is_ok(self) -> bool {
        self == Self::Connect(ConnectResult::Ok)
    }
}

impl From<ConnectResult> for AttemptResult {
    fn from(r: ConnectResult) -> Self {
        Self::Connect(r)
    }
}

impl PartialEq<ConnectResult> for AttemptResult {
    fn eq(&self, other: &ConnectResult) -> bool {
        *self == Self::Connect(*other)
    }
}

impl Serialize for AttemptResult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Why the canary connection became unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectCause {
    /// The server closed the connection (EOF).
    Closed,
    /// The connection was reset.
    Reset,
    /// A probe did not answer within the timeout.
    Timeout,
    /// A probe failed with an error.
    Error,
    /// The target has not answered once since the agent started.
    Unreachable,
}

impl DisconnectCause {
    /// Every value, in label order.
    pub const ALL: [Self; 5] = [
        Self::Closed,
        Self::Reset,
        Self::Timeout,
        Self::Error,
        Self::Unreachable,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Reset => "reset",
            Self::Timeout => "timeout",
            Self::Error => "error",
            Self::Unreachable => "unreachable",
        }
    }
}

/// Result of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeResult {
    Ok,
    Error,
    Timeout,
}

impl ProbeResult {
    /// Every value, in label order.
    pub const ALL: [Self; 3] = [Self::Ok, Self::Error, Self::Timeout];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Timeout => "timeout",
        }
    }
}

/// How an outage is classified when it ends (SPEC "outage").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutageKind {
    Failover,
    Restart,
    Network,
    Unknown,
}

impl OutageKind {
    /// Every value, in label order.
    pub const ALL: [Self; 4] = [Self::Network, Self::Restart, Self::Failover, Self::Unknown];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failover => "failover",
            Self::Restart => "restart",
            Self::Network => "network",
            Self::Unknown => "unknown",
        }
    }
}

/// Where a failover event was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverSource {
    /// An outage classified as failover.
    Outage,
    /// A Redis Sentinel `+switch-master` announcement.
    Sentinel,
    /// The store's topology monitoring saw the primary change.
    Topology,
}

impl FailoverSource {
    /// Every value, in label order.
    pub const ALL: [Self; 3] = [Self::Outage, Self::Sentinel, Self::Topology];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Outage => "outage",
            Self::Sentinel => "sentinel",
            Self::Topology => "topology",
        }
    }
}

/// Serde helpers for the API's JSON: times as RFC 3339, durations as
/// seconds.
pub mod ser {
    use std::time::{Duration, SystemTime};

    /// A wall-clock time as RFC 3339 with microseconds.
    pub fn time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_rfc3339_micros(*t).to_string())
    }

    /// An optional wall-clock time.
    pub fn opt_time<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => time(t, s),
            None => s.serialize_none(),
        }
    }

    /// A duration as seconds.
    pub fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    /// An optional duration as seconds.
    pub fn opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => secs(d, s),
            None => s.serialize_none(),
        }
    }
}

use ser::opt_secs as ser_opt_secs;

/// Seconds since the Unix epoch, for exported timestamps.
pub fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_maps_to_one_kind_and_every_kind_has_one_row() {
        for row in &KINDS {
            assert_eq!(row.kind.row().kind, row.kind);
            for (scheme, port) in row.schemes {
                assert_eq!(StoreKind::from_scheme(scheme), Some(row.kind));
                assert_eq!(default_port(scheme), *port);
            }
        }
        assert_eq!(StoreKind::from_scheme("ftp"), None);
    }
}
