//! The identity in a `hello` reply.

use mongodb::bson::{Bson, Document};

use crate::model::{Identity, Role};

/// The identity in a `hello` reply. `address` is where the driver sent it.
pub fn parse_hello(reply: &Document, address: Option<String>) -> Identity {
    let me = reply.get_str("me").ok().map(str::to_string);
    let writable = reply
        .get_bool("isWritablePrimary")
        .or_else(|_| reply.get_bool("ismaster"))
        .unwrap_or(false);
    let secondary = reply.get_bool("secondary").unwrap_or(false);
    let role = if writable {
        Some(Role::Primary)
    } else if secondary {
        Some(Role::Replica)
    } else {
        None
    };
    let process_id = reply
        .get_document("topologyVersion")
        .ok()
        .and_then(|tv| tv.get_object_id("processId").ok())
        .map(|p| p.to_hex());
    let mut details = std::collections::BTreeMap::new();
    if let Ok(s) = reply.get_str("setName") {
        details.insert("set_name".to_string(), s.to_string());
    }
    if let Some(v) = reply.get("setVersion").and_then(bson_int) {
        details.insert("set_version".to_string(), v.to_string());
    }
    if let Ok(p) = reply.get_str("primary") {
        details.insert("primary".to_string(), p.to_string());
    }
    if let Some(m) = &me {
        details.insert("me".to_string(), m.clone());
    }
    if reply.get_str("msg").ok() == Some("isdbgrid") {
        details.insert("mongos".to_string(), "true".to_string());
    }
    let address = address.or_else(|| me.clone());
    Identity {
        server_id: me.or_else(|| address.clone()),
        role,
        uptime: None,
        process_id,
        epoch: reply.get_object_id("electionId").ok().map(|e| e.to_hex()),
        address,
        version: None,
        details,
        ..Identity::default()
    }
}

fn bson_int(b: &Bson) -> Option<i64> {
    match b {
        Bson::Int32(v) => Some((*v).into()),
        Bson::Int64(v) => Some(*v),
        Bson::Double(v) if v.fract() == 0.0 => Some(*v as i64),
        _ => None,
    }
}
