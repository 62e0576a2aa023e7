//! Targets from the environment, the way platforms inject one URL variable
//! per service: `ORDERS_MONGODB_URL` becomes target `orders`, and
//! `DATABASE_URL` becomes target `database`.

use crate::dburl::DbUrl;
use crate::model::{KINDS, StoreKind};
use crate::settings::CanarySettings;

use super::{Env, Target, TargetSource, valid_name};

/// Discovers targets from the environment. Variables whose value is not a
/// usable URL are skipped with a warning that names the variable (never its
/// value, which holds a password).
pub fn discover(env: &dyn Env, settings: CanarySettings) -> Vec<Target> {
    let mut vars = env.vars();
    vars.sort();
    let mut out: Vec<Target> = Vec::new();
    for (var, value) in vars {
        let name = if var == "DATABASE_URL" {
            "database".to_string()
        } else {
            match KINDS
                .iter()
                .filter_map(|row| row.env_suffix)
                .find_map(|s| var.strip_suffix(s))
            {
                Some(prefix) if !prefix.is_empty() => prefix.to_ascii_lowercase(),
                _ => continue,
            }
        };
        if !valid_name(&name) {
            tracing::warn!(variable = %var, "discovery: skipped, the name it gives is not [a-z0-9_-]+");
            continue;
        }
        let url = match DbUrl::parse(&value) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(variable = %var, reason = %e, "discovery: skipped, not a usable URL");
                continue;
            }
        };
        if StoreKind::from_scheme(&url.scheme).is_none_or(|k| k == StoreKind::Http) {
            tracing::warn!(variable = %var, scheme = %url.scheme, "discovery: skipped, unknown scheme");
            continue;
        }
        if out.iter().any(|t| t.name == name) {
            tracing::warn!(variable = %var, target = %name, "discovery: skipped, name already taken");
            continue;
        }
        match Target::from_url(name, url, settings, TargetSource::Env(var.clone())) {
            Ok(t) => out.push(t),
            Err(reason) => {
                tracing::warn!(variable = %var, %reason, "discovery: skipped, not a usable URL");
            }
        }
    }
    out
}
