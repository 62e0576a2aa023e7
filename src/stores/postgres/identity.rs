//! Who answers: the identity queries any role may run, and the identity
//! built from their answers.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_postgres::{Client, Error, SimpleQueryMessage};

use crate::dburl::HostPort;
use crate::model::{Identity, Role};

/// The identity query every role may run (PostgreSQL ≥ 10). The timeline of
/// a primary comes from its current WAL file name (its first 8 hex digits),
/// which moves the moment a replica is promoted; `pg_walfile_name` refuses
/// to run during recovery, hence the `CASE`. The last two columns say
/// whether the `pg_control_*` functions may be run.
const IDENTITY_SQL: &str = "SELECT pg_is_in_recovery(), \
     extract(epoch FROM clock_timestamp() - pg_postmaster_start_time()), \
     to_char(pg_postmaster_start_time() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
     host(inet_server_addr()), inet_server_port(), \
     current_setting('server_version'), current_setting('default_transaction_read_only'), \
     pg_backend_pid(), \
     CASE WHEN pg_is_in_recovery() THEN NULL ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END, \
     has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE'), \
     has_function_privilege('pg_catalog.pg_control_checkpoint()', 'EXECUTE')";

/// What the identity queries returned, as text (`None` = SQL NULL or not
/// readable).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub in_recovery: Option<bool>,
    pub uptime_s: Option<f64>,
    pub started_at: Option<String>,
    pub server_addr: Option<String>,
    pub server_port: Option<u16>,
    pub version: Option<String>,
    pub read_only_default: Option<bool>,
    pub backend_pid: Option<String>,
    /// The current WAL file's timeline on a primary (hex).
    pub wal_timeline_hex: Option<String>,
    pub system_identifier: Option<String>,
    /// The last checkpoint's (or restart point's) timeline.
    pub checkpoint_timeline: Option<String>,
    /// Identity fields the role may not read, with the function they need.
    pub missing: Vec<&'static str>,
}

/// The first row of a simple query's answer, as text.
fn first_row(messages: &[SimpleQueryMessage]) -> Option<Vec<Option<String>>> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => {
            Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
        }
        _ => None,
    })
}

fn pg_bool(v: &Option<String>) -> Option<bool> {
    match v.as_deref() {
        Some("t" | "on") => Some(true),
        Some("f" | "off") => Some(false),
        _ => None,
    }
}

/// Reads the identity facts on a live connection: one query every role may
/// run, and one for the `pg_control_*` functions the role may execute.
pub(super) async fn read_facts(client: &Client) -> Result<Facts, Error> {
    let row = first_row(&client.simple_query(IDENTITY_SQL).await?).unwrap_or_default();
    let col = |i: usize| row.get(i).cloned().flatten();
    let mut f = Facts {
        in_recovery: pg_bool(&col(0)),
        uptime_s: col(1).and_then(|s| s.parse().ok()),
        started_at: col(2),
        server_addr: col(3),
        server_port: col(4).and_then(|s| s.parse().ok()),
        version: col(5),
        read_only_default: pg_bool(&col(6)),
        backend_pid: col(7),
        wal_timeline_hex: col(8),
        ..Facts::default()
    };
    let may_system = pg_bool(&col(9)) == Some(true);
    let may_checkpoint = pg_bool(&col(10)) == Some(true);
    if !may_system {
        f.missing
            .push("system_identifier (EXECUTE on pg_control_system())");
    }
    let replica = f.in_recovery == Some(true);
    if replica && !may_checkpoint {
        f.missing
            .push("timeline (EXECUTE on pg_control_checkpoint())");
    }
    let system = if may_system {
        "(SELECT system_identifier::text FROM pg_catalog.pg_control_system())"
    } else {
        "NULL"
    };
    let checkpoint = if replica && may_checkpoint {
        "(SELECT timeline_id::text FROM pg_catalog.pg_control_checkpoint())"
    } else {
        "NULL"
    };
    if may_system || (replica && may_checkpoint) {
        let sql = format!("SELECT {system}, {checkpoint}");
        let row = first_row(&client.simple_query(&sql).await?).unwrap_or_default();
        f.system_identifier = row.first().cloned().flatten();
        f.checkpoint_timeline = row.get(1).cloned().flatten();
    }
    Ok(f)
}

/// Builds the identity from the facts. `url_addr` stands in for the
/// server's own address when it has none (never over TCP).
pub fn build_identity(f: &Facts, url_addr: &HostPort) -> Identity {
    let address = match (&f.server_addr, f.server_port) {
        (Some(host), Some(port)) => HostPort {
            host: host.clone(),
            port,
        },
        _ => url_addr.clone(),
    }
    .to_string();
    let timeline = match f.in_recovery {
        Some(false) => f
            .wal_timeline_hex
            .as_deref()
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .map(|t| t.to_string()),
        _ => f.checkpoint_timeline.clone(),
    };
    let mut details = BTreeMap::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            details.insert(k.to_string(), v);
        }
    };
    put("system_identifier", f.system_identifier.clone());
    put("timeline", timeline.clone());
    put("postmaster_start_time", f.started_at.clone());
    put("backend_pid", f.backend_pid.clone());
    put(
        "default_transaction_read_only",
        f.read_only_default
            .map(|b| if b { "on" } else { "off" }.to_string()),
    );
    put(
        "missing",
        (!f.missing.is_empty()).then(|| f.missing.join(", ")),
    );
    Identity {
        server_id: f
            .system_identifier
            .as_ref()
            .map(|sysid| format!("{sysid}/{address}")),
        role: f
            .in_recovery
            .map(|r| if r { Role::Replica } else { Role::Primary }),
        uptime: f
            .uptime_s
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64),
        // From pg_postmaster_start_time(), to the microsecond.
        uptime_resolution: Some(Duration::from_micros(1)),
        epoch: timeline,
        address: Some(address),
        version: f.version.clone(),
        details,
        ..Identity::default()
    }
}
