//! Targets from the environment, the way platforms inject one URL variable
//! per service: `ORDERS_MONGODB_URL` becomes target `orders`, and
//! `DATABASE_URL` becomes target `database`.
//!
//! What discovery skips or doubts comes back as warnings (never a
//! variable's value, which holds a password), so that `run` logs them once
//! its logs are set up and `config check` prints them.

use std::collections::BTreeSet;

use crate::dburl::DbUrl;
use crate::model::{KINDS, StoreKind};
use crate::settings::CanarySettings;

use super::{Env, Target, TargetSource, valid_name};

/// The separate variables platforms are told not to use for MongoDB: only
/// one URL lets the driver follow a replica set's failover.
const SEPARATE_PARTS: [&str; 4] = ["_HOST", "_PORT", "_LOGIN", "_PASSWORD"];

/// Discovers targets from the environment, with what it has to say about
/// the variables it saw.
pub fn discover(env: &dyn Env, settings: CanarySettings) -> (Vec<Target>, Vec<String>) {
    let mut vars = env.vars();
    vars.sort();
    let mut out: Vec<Target> = Vec::new();
    let mut warnings = Vec::new();
    for (var, value) in &vars {
        let (name, suffix_kind) = if var == "DATABASE_URL" {
            ("database".to_string(), None)
        } else {
            match KINDS
                .iter()
                .filter_map(|row| Some((row.kind, var.strip_suffix(row.env_suffix?)?)))
                .next()
            {
                Some((kind, prefix)) if !prefix.is_empty() => {
                    (prefix.to_ascii_lowercase(), Some(kind))
                }
                _ => continue,
            }
        };
        if !valid_name(&name) {
            warnings.push(format!(
                "discovery: {var} skipped: the name it gives is not [a-z0-9_-]+"
            ));
            continue;
        }
        let url = match DbUrl::parse(value) {
            Ok(u) => u,
            Err(e) => {
                warnings.push(format!("discovery: {var} skipped: not a usable URL ({e})"));
                continue;
            }
        };
        let Some(kind) = StoreKind::from_scheme(&url.scheme).filter(|k| *k != StoreKind::Http)
        else {
            warnings.push(format!(
                "discovery: {var} skipped: unknown scheme {:?}",
                url.scheme
            ));
            continue;
        };
        if let Some(expected) = suffix_kind
            && expected.label() != kind.label()
        {
            warnings.push(format!(
                "discovery: {var} holds a {} URL, not a {} one: watched as {} (rename the variable if that is right)",
                kind.label(),
                expected.label(),
                kind.label()
            ));
        }
        if out.iter().any(|t| t.name == name) {
            warnings.push(format!(
                "discovery: {var} skipped: target name {name:?} already taken"
            ));
            continue;
        }
        match Target::from_url(name, url, settings, TargetSource::Env(var.clone())) {
            Ok(t) => out.push(t),
            Err(reason) => {
                warnings.push(format!("discovery: {var} skipped: {reason}"));
            }
        }
    }
    for (service, url, given) in separate_mongodb_variables(&vars) {
        warnings.push(format!(
            "discovery: {} describe a MongoDB without {service}_URL: watched, but give one URL instead (mongodb://user:password@host1,host2/?replicaSet=...): only a URL lets a driver follow a replica set's failover, so your apps should use one too",
            given.join(", ")
        ));
        let name = service.trim_end_matches("_MONGODB").to_ascii_lowercase();
        if !valid_name(&name) || out.iter().any(|t| t.name == name) {
            continue;
        }
        let source = TargetSource::Env(format!("{service}_HOST"));
        match Target::from_url(name, url, settings, source) {
            Ok(t) => out.push(t),
            Err(reason) => warnings.push(format!("discovery: {service}_HOST skipped: {reason}")),
        }
    }
    (out, warnings)
}

/// `ORDERS_MONGODB_HOST` (with `_PORT`, `_LOGIN`, `_PASSWORD`) without an
/// `ORDERS_MONGODB_URL`: per service, the URL those variables describe and
/// the variables given.
fn separate_mongodb_variables(vars: &[(String, String)]) -> Vec<(String, DbUrl, Vec<String>)> {
    let get = |name: &str| {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let services: BTreeSet<&str> = vars
        .iter()
        .filter_map(|(k, _)| k.strip_suffix("_HOST"))
        .filter(|s| s.ends_with("_MONGODB"))
        .collect();
    let encode = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    services
        .into_iter()
        .filter(|service| get(&format!("{service}_URL")).is_none())
        .filter_map(|service| {
            let host = get(&format!("{service}_HOST"))?;
            let mut text = String::from("mongodb://");
            if let Some(login) = get(&format!("{service}_LOGIN")) {
                text.push_str(&encode(login));
                if let Some(pw) = get(&format!("{service}_PASSWORD")) {
                    text.push(':');
                    text.push_str(&encode(pw));
                }
                text.push('@');
            }
            text.push_str(host);
            if let Some(port) = get(&format!("{service}_PORT")) {
                text.push(':');
                text.push_str(port);
            }
            let url = DbUrl::parse(&text).ok()?;
            let given = SEPARATE_PARTS
                .iter()
                .map(|p| format!("{service}{p}"))
                .filter(|v| get(v).is_some())
                .collect();
            Some((service.to_string(), url, given))
        })
        .collect()
}
