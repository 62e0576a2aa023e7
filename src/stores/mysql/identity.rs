//! The identity of a MySQL/MariaDB server, from what the canary's queries
//! return: who answers (a server id), its role, uptime, version and the
//! address reached.

use std::collections::BTreeMap;
use std::time::Duration;

use mysql_common::Row;

use crate::dburl::HostPort;
use crate::model::{Identity, Role};

/// A value of a row as text (NULL and non-text values are `None`).
pub(super) fn text(row: &Row, i: usize) -> Option<String> {
    row.get_opt::<Option<String>, _>(i)?.ok()?
}

/// A named column of a row as text.
fn column(row: &Row, name: &str) -> Option<String> {
    row.get_opt::<Option<String>, _>(name)?.ok()?
}

/// What the replication status says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// Not configured as a replica.
    None,
    /// A replica whose threads run (or try to connect), with its source.
    Running { source: Option<String> },
    /// Configured but both threads stopped.
    Stopped { source: Option<String> },
    /// Not readable (privilege missing).
    Unknown,
}

pub(super) fn replication_row(r: &Row) -> Replication {
    let col = |names: [&str; 2]| names.iter().find_map(|n| column(r, n));
    let io = col(["Slave_IO_Running", "Replica_IO_Running"]);
    let sql = col(["Slave_SQL_Running", "Replica_SQL_Running"]);
    let host = col(["Master_Host", "Source_Host"]).filter(|h| !h.is_empty());
    let port = col(["Master_Port", "Source_Port"]);
    let source = host.map(|h| match port {
        Some(p) => format!("{h}:{p}"),
        None => h,
    });
    let running = |v: &Option<String>| matches!(v.as_deref(), Some("Yes" | "Connecting"));
    if running(&io) || running(&sql) {
        Replication::Running { source }
    } else {
        Replication::Stopped { source }
    }
}

/// A stable 64-bit FNV-1a hash, hex: the same input gives the same id in
/// every build (std's hashers promise no such thing).
fn stable_hash(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Builds the identity from `SHOW GLOBAL VARIABLES`, the uptime and the
/// replication status. `url_addr` gives the host of the address reached;
/// its port is the server's own `@@port` (which differs behind a proxy).
pub fn build_identity(
    vars: &BTreeMap<String, String>,
    uptime_s: Option<u64>,
    repl: &Replication,
    url_addr: &HostPort,
) -> Identity {
    let get = |k: &str| vars.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let port = get("port").and_then(|p| p.parse::<u16>().ok());
    let server_id = match get("server_uuid") {
        Some(uuid) => Some(uuid.to_string()),
        None => match (
            get("hostname"),
            get("port"),
            get("datadir"),
            get("server_id"),
        ) {
            (Some(h), Some(p), Some(d), Some(s)) => Some(stable_hash(&[h, p, d, s])),
            _ => None,
        },
    };
    let read_only = get("read_only").map(|v| v.eq_ignore_ascii_case("ON") || v == "1");
    let replicating = matches!(repl, Replication::Running { .. });
    let role = match (read_only, repl) {
        (_, Replication::Running { .. }) => Some(Role::Replica),
        (Some(true), _) => Some(Role::Replica),
        (Some(false), _) => Some(Role::Primary),
        (None, _) => None,
    };
    let mut details = BTreeMap::new();
    for k in ["hostname", "port", "datadir", "server_id", "read_only"] {
        if let Some(v) = get(k) {
            details.insert(k.to_string(), v.to_string());
        }
    }
    let (state, source) = match repl {
        Replication::None => ("none", None),
        Replication::Running { source } => ("running", source.as_ref()),
        Replication::Stopped { source } => ("stopped", source.as_ref()),
        Replication::Unknown => ("unknown", None),
    };
    details.insert("replication".into(), state.into());
    if let Some(s) = source {
        details.insert("replication_source".into(), s.clone());
    }
    details.insert(
        "role_from".into(),
        match repl {
            Replication::Unknown => {
                "read_only only (no privilege to read the replication status)".into()
            }
            _ if replicating => "replication status".into(),
            _ => "read_only and replication status".into(),
        },
    );
    Identity {
        server_id,
        role,
        uptime: uptime_s.map(Duration::from_secs),
        address: Some(
            HostPort {
                host: url_addr.host.clone(),
                port: port.unwrap_or(url_addr.port),
            }
            .to_string(),
        ),
        version: get("version").map(str::to_string),
        details,
        ..Identity::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp() -> HostPort {
        HostPort {
            host: "127.0.0.1".into(),
            port: 6033,
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const MARIADB: &[(&str, &str)] = &[
        ("hostname", "db1"),
        ("port", "3307"),
        ("datadir", "/var/lib/mysql/"),
        ("server_id", "1"),
        ("read_only", "OFF"),
        ("version", "10.11.19-MariaDB"),
    ];

    #[test]
    fn mariadb_id_is_a_stable_hash_and_address_uses_the_server_port() {
        let id = build_identity(&vars(MARIADB), Some(42), &Replication::None, &hp());
        let again = build_identity(&vars(MARIADB), Some(43), &Replication::None, &hp());
        assert_eq!(id.server_id, again.server_id);
        assert_eq!(
            id.server_id.as_deref(),
            Some(stable_hash(&["db1", "3307", "/var/lib/mysql/", "1"]).as_str())
        );
        assert_eq!(id.role, Some(Role::Primary));
        assert_eq!(id.address.as_deref(), Some("127.0.0.1:3307"));
        assert_eq!(id.uptime, Some(Duration::from_secs(42)));
        assert_eq!(id.version.as_deref(), Some("10.11.19-MariaDB"));
        let mut other = vars(MARIADB);
        other.insert("server_id".into(), "2".into());
        let other = build_identity(&other, Some(1), &Replication::None, &hp());
        assert_ne!(other.server_id, id.server_id);
    }

    #[test]
    fn stable_hash_is_pinned() {
        // Changing this breaks server ids across agent upgrades.
        assert_eq!(stable_hash(&["a", "b"]), stable_hash(&["a", "b"]));
        assert_ne!(stable_hash(&["ab", ""]), stable_hash(&["a", "b"]));
        assert_eq!(stable_hash(&[]), "cbf29ce484222325");
    }

    #[test]
    fn mysql_uses_server_uuid() {
        let mut v = vars(MARIADB);
        v.insert(
            "server_uuid".into(),
            "3e11fa47-71ca-11e1-9e33-c80aa9429562".into(),
        );
        let id = build_identity(&v, Some(1), &Replication::None, &hp());
        assert_eq!(
            id.server_id.as_deref(),
            Some("3e11fa47-71ca-11e1-9e33-c80aa9429562")
        );
    }

    #[test]
    fn role_from_read_only_and_replication() {
        let ro = vars(&[("read_only", "ON")]);
        let rw = vars(&[("read_only", "OFF")]);
        let running = Replication::Running {
            source: Some("10.0.0.1:3306".into()),
        };
        let stopped = Replication::Stopped { source: None };
        assert_eq!(
            build_identity(&ro, None, &Replication::None, &hp()).role,
            Some(Role::Replica)
        );
        assert_eq!(
            build_identity(&rw, None, &running, &hp()).role,
            Some(Role::Replica)
        );
        assert_eq!(
            build_identity(&rw, None, &stopped, &hp()).role,
            Some(Role::Primary)
        );
        let unknown = build_identity(&rw, None, &Replication::Unknown, &hp());
        assert_eq!(unknown.role, Some(Role::Primary));
        assert!(unknown.details["role_from"].contains("read_only only"));
        let r = build_identity(&rw, None, &running, &hp());
        assert_eq!(r.details["replication_source"], "10.0.0.1:3306");
        assert_eq!(
            build_identity(&BTreeMap::new(), None, &Replication::None, &hp()).role,
            None
        );
    }
}
