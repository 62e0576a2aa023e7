//! `dbcanary check`: connect and probe every target once, print who answers.

use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{Config, Target};
use crate::model::Identity;
use crate::stores::{ConnectError, Store, UseStore, attempt, with_store};

/// One target's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    pub target: String,
    pub store: &'static str,
    pub endpoint: String,
    pub ok: bool,
    /// `ok` or the attempt result (`refused`, `auth`, ...).
    pub result: String,
    pub address: Option<String>,
    pub role: Option<String>,
    pub server_id: Option<String>,
    pub version: Option<String>,
    pub uptime_s: Option<f64>,
    pub latency_s: Option<f64>,
    pub error: Option<String>,
}

async fn check_target(t: Target) -> CheckRow {
    let mut row = CheckRow {
        target: t.name.clone(),
        store: t.kind().label(),
        endpoint: t.url.endpoint(),
        ok: false,
        result: String::new(),
        address: None,
        role: None,
        server_id: None,
        version: None,
        uptime_s: None,
        latency_s: None,
        error: None,
    };
    let once = CheckOnce {
        timeout: t.settings.timeout,
    };
    match with_store(t.spec(), &t.options, once).await {
        Ok((id, took)) => {
            row.ok = true;
            row.result = "ok".into();
            row.address = id.address;
            row.role = id.role.map(|r| r.as_str().to_string());
            row.server_id = id.server_id;
            row.version = id.version;
            row.uptime_s = id.uptime.map(|u| u.as_secs_f64());
            row.latency_s = Some(took.as_secs_f64());
        }
        Err(e) => {
            row.result = e.result.as_str().to_string();
            row.error = Some(e.message);
        }
    }
    row
}

/// Connects and probes a store once: the identity and the time it took.
struct CheckOnce {
    timeout: Duration,
}

impl UseStore for CheckOnce {
    type Output = Result<(Identity, Duration), ConnectError>;

    async fn run<S: Store>(self, store: S) -> Self::Output {
        let start = Instant::now();
        let c = attempt(&store, self.timeout).await?;
        store.close(c.conn).await;
        Ok((c.identity, start.elapsed()))
    }
}

/// Checks the targets (all, or the one named) concurrently, in config order.
pub async fn check(config: &Config, only: Option<&str>) -> Vec<CheckRow> {
    let mut set = JoinSet::new();
    for (i, t) in config.targets.iter().enumerate() {
        if only.is_some_and(|n| n != t.name) {
            continue;
        }
        let t = t.clone();
        set.spawn(async move { (i, check_target(t).await) });
    }
    let mut rows: Vec<(usize, CheckRow)> = set.join_all().await;
    rows.sort_by_key(|(i, _)| *i);
    rows.into_iter().map(|(_, r)| r).collect()
}

/// The rows as a table a person reads.
pub fn table(rows: &[CheckRow]) -> String {
    let header = [
        "TARGET",
        "STORE",
        "RESULT",
        "ADDRESS",
        "ROLE",
        "SERVER ID",
        "VERSION",
        "UPTIME",
        "LATENCY",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let dash = || "-".to_string();
            vec![
                r.target.clone(),
                r.store.to_string(),
                r.result.clone(),
                r.address.clone().unwrap_or_else(|| r.endpoint.clone()),
                r.role.clone().unwrap_or_else(dash),
                r.server_id.clone().unwrap_or_else(dash),
                r.version.clone().unwrap_or_else(dash),
                r.uptime_s
                    .map(|u| {
                        humantime::format_duration(std::time::Duration::from_secs(u as u64))
                            .to_string()
                    })
                    .unwrap_or_else(dash),
                r.latency_s
                    .map(|l| format!("{:.1} ms", l * 1000.0))
                    .unwrap_or_else(dash),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: Vec<String>| {
        cols.iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for (row, r) in cells.into_iter().zip(rows) {
        out.push_str(&line(row));
        out.push('\n');
        if let Some(e) = &r.error {
            out.push_str(&format!("  {}: {e}\n", r.target));
        }
    }
    out
}
