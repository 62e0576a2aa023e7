//! The log line of each event and each app drill outcome, in one place:
//! `warn!` for lost connections and failovers, `error!` for an app that did
//! not come back (an operator must act), `info!`/`debug!` for the rest.

use crate::apps::Outcome;
use crate::events::Event;
use crate::model::TargetInfo;

/// Logs one event of `t`; `first` marks the target's first connection (see
/// `TargetState::apply`).
pub fn event(t: &TargetInfo, event: &Event, first: bool) {
    match event {
        Event::Started => {
            tracing::info!(target = %t.name, store = %t.store, endpoint = %t.endpoint, "canary started");
        }
        Event::ConnectAttempt { result, error, .. } => {
            if result.is_ok() {
                return;
            }
            let err = error.as_deref().unwrap_or("");
            tracing::debug!(target = %t.name, result = result.as_str(), error = err, "connection attempt failed");
        }
        Event::Connected { identity } => {
            if first {
                tracing::info!(
                    target = %t.name,
                    server_id = identity.server_id.as_deref().unwrap_or(""),
                    role = identity.role.map(|r| r.as_str()).unwrap_or("unknown"),
                    address = identity.address.as_deref().unwrap_or(""),
                    "connected"
                );
            }
        }
        Event::Probe { .. } => {}
        Event::Disconnected {
            cause,
            detail,
            start_unknown,
            ..
        } => {
            if *start_unknown {
                tracing::warn!(target = %t.name, detail = %detail, "cannot connect (unreachable since the start); retrying");
            } else {
                tracing::warn!(target = %t.name, cause = cause.as_str(), detail = %detail, "connection lost");
            }
        }
        Event::Restored(r) => {
            tracing::warn!(
                target = %t.name,
                outage_s = r.duration.as_secs_f64(),
                kind = r.kind.as_str(),
                reason = %r.reason,
                attempts = r.attempts,
                resolution_s = r.resolution.as_secs_f64(),
                "connection restored"
            );
        }
        Event::Failover { source, from, to } => {
            tracing::warn!(target = %t.name, source = source.as_str(), from = from.as_deref().unwrap_or(""), to = %to, "failover");
        }
        Event::IdentityChanged { identity } => {
            tracing::info!(target = %t.name, role = identity.role.map(|r| r.as_str()).unwrap_or("unknown"), "server identity changed");
        }
        Event::Notice { message } => {
            tracing::warn!(target = %t.name, "{message}");
        }
        Event::Stopped => {
            tracing::debug!(target = %t.name, "canary stopped");
        }
    }
}

/// Logs what an app drill came to, and returns the line the app's API
/// events keep of it (none for a cleared flag, which is not news).
pub fn outcome(o: &Outcome) -> Option<String> {
    match o {
        Outcome::Recovered {
            app,
            dependency,
            lag,
            dependency_outage,
            late,
            ..
        } => {
            tracing::info!(
                target = %app,
                dependency = %dependency,
                lag_s = lag.as_secs_f64(),
                dependency_outage_s = dependency_outage.as_secs_f64(),
                late,
                "application recovered after its dependency came back"
            );
            Some(format!(
                "recovered {:.3} s after {dependency} came back ({dependency} was gone {:.3} s){}",
                lag.as_secs_f64(),
                dependency_outage.as_secs_f64(),
                if *late {
                    ", past the recovery deadline"
                } else {
                    ""
                }
            ))
        }
        Outcome::NotRecovered {
            app,
            dependency,
            deadline,
            dependency_outage,
            ..
        } => {
            tracing::error!(
                target = %app,
                dependency = %dependency,
                deadline_s = deadline.as_secs_f64(),
                dependency_outage_s = dependency_outage.as_secs_f64(),
                "application did not recover after its dependency came back"
            );
            Some(format!(
                "not recovered {} after {dependency} came back ({dependency} was gone {:.3} s)",
                humantime::format_duration(*deadline),
                dependency_outage.as_secs_f64()
            ))
        }
        Outcome::Cleared { .. } => None,
    }
}
