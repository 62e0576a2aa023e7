//! Classifies an ended outage from the identity before and after it (SPEC
//! "outage"): failover, restart, network or unknown. Pure, so every rule is
//! unit-tested.

use std::time::Duration;

use crate::model::{Identity, OutageKind};

/// What an uptime in whole seconds (Redis, MySQL) may hide.
pub const WHOLE_SECONDS: Duration = Duration::from_secs(1);

/// The kind of an outage and what decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub kind: OutageKind,
    pub reason: String,
}

fn class(kind: OutageKind, reason: impl Into<String>) -> Classification {
    Classification {
        kind,
        reason: reason.into(),
    }
}

/// Classifies an outage that lasted at most `outage` (first match wins):
/// role change → failover; server started during the outage → restart;
/// another server that was already running, or an advanced epoch → failover;
/// same server still running → network; else unknown.
///
/// `before` is `None` when the canary never had a connection before.
/// `refused` says a reconnect attempt during the outage was refused: the
/// port had no listener, so the server process (or its listener) was gone.
pub fn classify(
    before: Option<&Identity>,
    after: &Identity,
    outage: Duration,
    refused: bool,
) -> Classification {
    let Some(before) = before else {
        return class(OutageKind::Unknown, "no identity before the outage");
    };
    let anonymous = |i: &Identity| {
        i.server_id.is_none() && i.uptime.is_none() && i.process_id.is_none() && i.epoch.is_none()
    };
    if anonymous(before) && anonymous(after) {
        return class(
            OutageKind::Unknown,
            "the target reports no server identity (an application's health endpoint does not)",
        );
    }
    if let (Some(b), Some(a)) = (before.role, after.role)
        && b != a
    {
        return class(
            OutageKind::Failover,
            format!("role changed from {} to {}", b.as_str(), a.as_str()),
        );
    }
    if started_during(before, after, outage, refused) {
        return class(OutageKind::Restart, "the server started during the outage");
    }
    if let (Some(b), Some(a)) = (&before.server_id, &after.server_id)
        && b != a
    {
        return class(OutageKind::Failover, "another server answers");
    }
    if let (Some(b), Some(a)) = (&before.epoch, &after.epoch)
        && b != a
    {
        return class(OutageKind::Failover, "the topology epoch advanced");
    }
    match (&before.server_id, &after.server_id) {
        (Some(_), Some(_)) => {}
        _ => return class(OutageKind::Unknown, "missing server id"),
    }
    if after.uptime.is_some() || (before.process_id.is_some() && after.process_id.is_some()) {
        return class(OutageKind::Network, "the same server kept running");
    }
    class(OutageKind::Unknown, "missing uptime and process id")
}

/// How much an identity's uptime may be off: its resolution, and the time
/// the read took (the server's answer is at most that much older than
/// `read_at`).
fn slack(id: &Identity) -> Duration {
    id.uptime_resolution.unwrap_or(WHOLE_SECONDS) + id.read_within
}

/// Whether the server that answers after the outage started during it:
/// young enough, and either another process at the same address (a new
/// `run_id`, a connection sequence that went back) or a start time implied
/// by the uptimes (`read_at - uptime`, each within its slack) that moved
/// forward.
fn started_during(before: &Identity, after: &Identity, outage: Duration, refused: bool) -> bool {
    if let Some(up) = after.uptime {
        if up > outage + slack(after) {
            return false;
        }
        let same_address =
            before.address.is_none() || after.address.is_none() || before.address == after.address;
        if let (Some(b), Some(a)) = (&before.server_id, &after.server_id)
            && b != a
        {
            return same_address;
        }
        // One process numbers its connections upwards: a new connection that
        // did not get a higher number than the old one came from another.
        if let (Some(b), Some(a)) = (before.connection_seq, after.connection_seq)
            && a <= b
        {
            return true;
        }
        // Young enough, and its port refused connections meanwhile: the
        // process that had it open went away, so this one started since
        // (whole-second uptimes cannot tell a server restarted within a
        // second of its start from one that kept running).
        if refused && same_address {
            return true;
        }
        // A young server that merely lost a connection is still as old as
        // it was plus the time since: only a start that moved later than
        // both uncertainties allow is a restart.
        return match (before.uptime, before.read_at, after.read_at) {
            (Some(b), Some(b_at), Some(a_at)) => {
                let expected = b + a_at.saturating_duration_since(b_at);
                up + slack(after) < expected
            }
            _ => true,
        };
    }
    match (&before.process_id, &after.process_id) {
        (Some(b), Some(a)) => b != a && before.address.is_some() && before.address == after.address,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;
    use tokio::time::Instant;

    fn id(server: &str, role: Role, uptime_s: u64) -> Identity {
        Identity {
            server_id: Some(server.into()),
            role: Some(role),
            uptime: Some(Duration::from_secs(uptime_s)),
            read_at: Some(Instant::now()),
            address: Some("127.0.0.1:6379".into()),
            ..Identity::default()
        }
    }

    const OUTAGE: Duration = Duration::from_millis(800);

    #[test]
    fn role_change_is_failover_even_when_restarted() {
        let c = classify(
            Some(&id("a", Role::Replica, 100)),
            &id("a", Role::Primary, 0),
            OUTAGE,
            false,
        );
        assert_eq!(c.kind, OutageKind::Failover);
        assert!(c.reason.contains("role changed"));
    }

    #[test]
    fn new_process_with_short_uptime_is_restart_despite_new_id() {
        let c = classify(
            Some(&id("a", Role::Primary, 100)),
            &id("b", Role::Primary, 0),
            OUTAGE,
            false,
        );
        assert_eq!(c.kind, OutageKind::Restart);
    }

    #[test]
    fn young_server_restarted_quickly_is_restart() {
        // Both processes younger than the tolerance (a second drill soon
        // after the first): the new id decides, not the extrapolated age.
        let c = classify(
            Some(&id("a", Role::Primary, 0)),
            &id("b", Role::Primary, 0),
            Duration::from_millis(1100),
            false,
        );
        assert_eq!(c.kind, OutageKind::Restart);
    }

    #[test]
    fn young_server_at_another_address_is_failover() {
        let mut after = id("b", Role::Primary, 1);
        after.address = Some("127.0.0.1:6380".into());
        let c = classify(Some(&id("a", Role::Primary, 1)), &after, OUTAGE, false);
        assert_eq!(c.kind, OutageKind::Failover);
    }

    #[test]
    fn other_long_running_server_is_failover() {
        let c = classify(
            Some(&id("a", Role::Primary, 100)),
            &id("b", Role::Primary, 5000),
            OUTAGE,
            false,
        );
        assert_eq!(c.kind, OutageKind::Failover);
    }

    #[test]
    fn same_server_continuous_uptime_is_network() {
        let c = classify(
            Some(&id("a", Role::Primary, 100)),
            &id("a", Role::Primary, 101),
            OUTAGE,
            false,
        );
        assert_eq!(c.kind, OutageKind::Network);
    }

    #[test]
    fn young_server_losing_a_connection_is_network_not_restart() {
        let c = classify(
            Some(&id("a", Role::Primary, 1)),
            &id("a", Role::Primary, 1),
            Duration::from_millis(100),
            false,
        );
        assert_eq!(c.kind, OutageKind::Network);
    }

    #[test]
    fn advanced_epoch_is_failover() {
        let mut b = id("a", Role::Primary, 100);
        b.epoch = Some("7".into());
        let mut a = id("a", Role::Primary, 101);
        a.epoch = Some("8".into());
        assert_eq!(
            classify(Some(&b), &a, OUTAGE, false).kind,
            OutageKind::Failover
        );
    }

    #[test]
    fn new_process_id_without_uptime_is_restart() {
        let mk = |pid: &str| Identity {
            server_id: Some("db1:27017".into()),
            role: Some(Role::Primary),
            process_id: Some(pid.into()),
            address: Some("db1:27017".into()),
            ..Identity::default()
        };
        assert_eq!(
            classify(Some(&mk("p1")), &mk("p2"), OUTAGE, false).kind,
            OutageKind::Restart
        );
        assert_eq!(
            classify(Some(&mk("p1")), &mk("p1"), OUTAGE, false).kind,
            OutageKind::Network
        );
    }

    #[test]
    fn missing_fields_are_unknown_and_say_which() {
        let c = classify(None, &id("a", Role::Primary, 1), OUTAGE, false);
        assert_eq!(c.kind, OutageKind::Unknown);
        let bare = Identity::default();
        let c = classify(Some(&bare), &bare, OUTAGE, false);
        assert_eq!(c.kind, OutageKind::Unknown);
        assert!(c.reason.contains("server id"), "{}", c.reason);
        let no_uptime = Identity {
            server_id: Some("a".into()),
            ..Identity::default()
        };
        let c = classify(Some(&no_uptime), &no_uptime, OUTAGE, false);
        assert!(c.reason.contains("uptime"), "{}", c.reason);
    }

    /// The identity `after` read `later` than `before`.
    fn later(mut id: Identity, before: &Identity, later: Duration) -> Identity {
        id.read_at = before.read_at.map(|t| t + later);
        id
    }

    #[test]
    fn redis_restarted_half_a_second_after_it_started_is_restart() {
        // Both uptimes read 0 s: the new run_id at the same address decides.
        let before = id("run-a", Role::Primary, 0);
        let after = later(
            id("run-b", Role::Primary, 0),
            &before,
            Duration::from_millis(700),
        );
        let c = classify(Some(&before), &after, Duration::from_millis(300), false);
        assert_eq!(c.kind, OutageKind::Restart, "{}", c.reason);
    }

    #[test]
    fn mariadb_restarted_half_a_second_after_it_started_is_restart() {
        // The id is a stable hash and both uptimes read 0 s; the canary's
        // connection id went back: another process numbers connections.
        let mut before = id("hash", Role::Primary, 0);
        before.connection_seq = Some(12);
        let mut after = later(
            id("hash", Role::Primary, 0),
            &before,
            Duration::from_millis(800),
        );
        after.connection_seq = Some(3);
        let c = classify(Some(&before), &after, Duration::from_millis(400), false);
        assert_eq!(c.kind, OutageKind::Restart, "{}", c.reason);
        // Without that evidence, whole seconds can still tell once the
        // implied start moved by more than a second...
        after.connection_seq = None;
        before.connection_seq = None;
        let far = later(after.clone(), &before, Duration::from_millis(2500));
        let c = classify(Some(&before), &far, Duration::from_millis(400), false);
        assert_eq!(c.kind, OutageKind::Restart, "{}", c.reason);
        // ...and not within it: the same server may have kept running...
        let c = classify(Some(&before), &after, Duration::from_millis(400), false);
        assert_eq!(c.kind, OutageKind::Network, "{}", c.reason);
        // ...unless its port refused connections meanwhile: nothing listened.
        let c = classify(Some(&before), &after, Duration::from_millis(400), true);
        assert_eq!(c.kind, OutageKind::Restart, "{}", c.reason);
        // A long-running server whose port refused (a firewall) is not.
        let old = id("hash", Role::Primary, 100);
        let kept = later(id("hash", Role::Primary, 101), &old, Duration::from_secs(1));
        let c = classify(Some(&old), &kept, Duration::from_millis(400), true);
        assert_eq!(c.kind, OutageKind::Network, "{}", c.reason);
    }

    #[test]
    fn postgres_restarted_half_a_second_after_it_started_is_restart() {
        // pg_postmaster_start_time() is exact: no whole-second slack.
        let exact = |uptime_ms: u64| Identity {
            server_id: Some("7312/127.0.0.1:5432".into()),
            role: Some(Role::Primary),
            uptime: Some(Duration::from_millis(uptime_ms)),
            uptime_resolution: Some(Duration::from_micros(1)),
            read_within: Duration::from_millis(5),
            read_at: Some(Instant::now()),
            address: Some("127.0.0.1:5432".into()),
            ..Identity::default()
        };
        let before = exact(500);
        let after = later(exact(100), &before, Duration::from_millis(900));
        let c = classify(Some(&before), &after, Duration::from_millis(400), false);
        assert_eq!(c.kind, OutageKind::Restart, "{}", c.reason);
        let kept = later(exact(1400), &before, Duration::from_millis(900));
        let c = classify(Some(&before), &kept, Duration::from_millis(400), false);
        assert_eq!(c.kind, OutageKind::Network, "{}", c.reason);
    }
}
