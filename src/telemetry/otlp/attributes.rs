//! The attributes that say which target a span or data point belongs to:
//! over OTLP, `dbcanary.target` and `db.system.name` stand where Prometheus
//! has the `target` and `store` labels; spans also name the endpoint.

use opentelemetry::KeyValue;

use crate::model::StoreKind;

/// `dbcanary.target`, and `db.system.name` for a store (none for an
/// application).
pub(super) fn target(name: &str, store: StoreKind) -> Vec<KeyValue> {
    let mut v = vec![KeyValue::new("dbcanary.target", name.to_string())];
    if let Some(db) = store.db_system() {
        v.push(KeyValue::new("db.system.name", db));
    }
    v
}

/// `server.address` and `server.port` of an endpoint (`host:port`, without
/// credentials; several hosts stay one address without a port).
pub(super) fn server(endpoint: &str) -> Vec<KeyValue> {
    let single = !endpoint.contains(',');
    if single
        && let Some((host, port)) = endpoint.rsplit_once(':')
        && let Ok(port) = port.parse::<i64>()
    {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        return vec![
            KeyValue::new("server.address", host.to_string()),
            KeyValue::new("server.port", port),
        ];
    }
    vec![KeyValue::new("server.address", endpoint.to_string())]
}
