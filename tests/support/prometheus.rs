//! A real `prometheus` server for end-to-end tests: a `prometheus.yml` the
//! test writes and the TSDB in its own directory, queried through its HTTP
//! API. The dashboards' test scrapes one agent with it; the fleet test
//! scrapes several agents and builds a global view by federation and
//! remote write, as docs/many-agents.md shows.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use super::process::{ServerKind, ServerProcess};
use super::{Proc, http_get, poll_until, require_binary};

/// `prometheus` as a [`ServerKind`]: `prometheus.yml` and the TSDB in its
/// directory, with more flags (say the remote-write receiver), serving once
/// `/-/ready` answers 200.
pub struct PrometheusKind {
    flags: Vec<String>,
}

impl ServerKind for PrometheusKind {
    const READY_WITHIN: Duration = Duration::from_secs(30);
    const LOOK_EVERY: Duration = Duration::from_millis(20);

    fn command(&self, port: u16, dir: &Path) -> Command {
        let mut cmd = Command::new(require_binary("prometheus", "prometheus"));
        cmd.arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(&self.flags);
        cmd
    }

    async fn ready(&mut self, port: u16, _proc: &Proc) -> bool {
        let r = http_get(([127, 0, 0, 1], port).into(), "/-/ready").await;
        matches!(r, Ok(r) if r.status == 200)
    }
}

/// A running `prometheus`, killed when dropped.
pub struct Prometheus {
    pub addr: SocketAddr,
    server: ServerProcess<PrometheusKind>,
}

impl Prometheus {
    /// Starts `prometheus` with `config` as its `prometheus.yml` and
    /// `flags`, and waits until it is ready.
    pub async fn start(config: &str, flags: &[&str]) -> Prometheus {
        let kind = PrometheusKind {
            flags: flags.iter().map(|f| f.to_string()).collect(),
        };
        let mut server = ServerProcess::new("prometheus", "dbcanary-prometheus-", kind);
        std::fs::write(server.dir().join("prometheus.yml"), config).expect("write prometheus.yml");
        server.launch().await;
        Prometheus {
            addr: ([127, 0, 0, 1], server.port).into(),
            server,
        }
    }

    /// The last lines of what Prometheus said, for failure messages.
    pub fn tail(&self) -> String {
        self.server.proc().tail(20)
    }

    /// GETs an API path and returns its JSON answer (errors included).
    pub async fn api(&self, path: &str) -> Value {
        let r = http_get(self.addr, path)
            .await
            .unwrap_or_else(|e| panic!("GET {path} from prometheus: {e}\n{}", self.tail()));
        serde_json::from_str(&r.body).unwrap_or_else(|e| {
            panic!(
                "GET {path}: not JSON ({e}), status {}: {}",
                r.status, r.body
            )
        })
    }

    /// Runs an instant query now: the result samples, or Prometheus' error.
    pub async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let v = self
            .api(&format!(
                "/api/v1/query?query={}",
                utf8_percent_encode(promql, NON_ALPHANUMERIC)
            ))
            .await;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(match &v["data"]["result"] {
            Value::Array(samples) => samples.clone(),
            // A scalar or string: one sample.
            other => vec![serde_json::json!({ "metric": {}, "value": other })],
        })
    }

    /// Waits until `promql` returns at least one sample.
    pub async fn wait_for(&self, promql: &str, limit: Duration) -> Vec<Value> {
        poll_until(
            limit,
            &format!("prometheus: {promql}"),
            async || match self.query(promql).await {
                Ok(r) if !r.is_empty() => Ok(r),
                other => Err(other),
            },
        )
        .await
    }
}

/// The values of query result samples.
pub fn values(samples: &[Value]) -> Vec<f64> {
    samples
        .iter()
        .map(|s| {
            s["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("unreadable sample {s}"))
        })
        .collect()
}
