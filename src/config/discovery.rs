//! Targets from the environment, the way platforms inject one URL variable
//! per service: `ORDERS_MONGODB_URL` becomes target `orders`, and
//! `DATABASE_URL` becomes target `database`.

use crate::canary::CanarySettings;
use crate::dburl::DbUrl;
use crate::stores::StoreKind;

use super::{Env, Target, TargetSource, valid_name};

/// The variable suffixes discovery looks for.
pub const SUFFIXES: [&str; 4] = [
    "_REDIS_URL",
    "_MYSQL_URL",
    "_MONGODB_URL",
    "_POSTGRESQL_URL",
];

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
            match SUFFIXES.iter().find_map(|s| var.strip_suffix(s)) {
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
        let Some(kind) = StoreKind::from_scheme(&url.scheme).filter(|k| *k != StoreKind::Http)
        else {
            tracing::warn!(variable = %var, scheme = %url.scheme, "discovery: skipped, unknown scheme");
            continue;
        };
        if let Err(reason) = crate::stores::check_url(kind, &url) {
            tracing::warn!(variable = %var, %reason, "discovery: skipped, not a usable URL");
            continue;
        }
        if out.iter().any(|t| t.name == name) {
            tracing::warn!(variable = %var, target = %name, "discovery: skipped, name already taken");
            continue;
        }
        out.push(Target::store(
            name,
            kind,
            url,
            settings,
            TargetSource::Env(var),
        ));
    }
    out
}
