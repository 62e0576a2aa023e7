//! What the driver tells one client through its event handlers: the
//! topology's servers and primary, each server's last heartbeat, the server
//! the canary's commands go to and whether it was lost — the canary's close
//! signal and the store's failover announcements.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mongodb::ServerType;
use mongodb::bson::oid::ObjectId;
use mongodb::event::cmap::{CmapEvent, ConnectionClosedReason};
use mongodb::event::command::CommandEvent;
use mongodb::event::sdam::SdamEvent;
use mongodb::options::ServerAddress;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::error::driver_result;
use crate::model::{ConnectResult, DisconnectCause};
use crate::stores::ConnectError;

// ---------------------------------------------------------------------------
// What the driver tells one client, through its event handlers
// ---------------------------------------------------------------------------

/// The outcome of the last heartbeat of one server.
#[derive(Debug, Clone)]
pub(super) enum Heartbeat {
    Ok {
        election_id: Option<ObjectId>,
    },
    Failed {
        result: ConnectResult,
        message: String,
    },
}

/// A primary as one client's topology sees it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PrimarySeen {
    pub(super) address: String,
    pub(super) election_id: Option<ObjectId>,
}

impl PrimarySeen {
    pub(super) fn describe(&self, with_election: bool) -> String {
        match (&self.election_id, with_election) {
            (Some(e), true) => format!("{} (electionId {})", self.address, e.to_hex()),
            _ => self.address.clone(),
        }
    }
}

#[derive(Default)]
pub(super) struct WatchState {
    /// Where the canary's last command went: the server whose loss is the
    /// canary's loss.
    canary_server: Option<ServerAddress>,
    /// Every server of the latest topology description, with its type.
    servers: Vec<(ServerAddress, ServerType)>,
    /// The last heartbeat outcome per server.
    heartbeats: HashMap<ServerAddress, Heartbeat>,
    /// The primary of the latest topology description.
    primary: Option<ServerAddress>,
    /// The last primary reported to the store.
    reported: Option<PrimarySeen>,
    /// When a topology description first had a server the canary's
    /// commands can go to (a primary, a standalone, a mongos).
    serving_since: Option<Instant>,
    /// The server the previous client's canary used: while no command has
    /// gone anywhere yet, the one whose silence makes a timeout.
    last_primary: Option<ServerAddress>,
}

/// A server that takes commands read from the primary.
fn serves_primary_reads(t: ServerType) -> bool {
    matches!(
        t,
        ServerType::Standalone
            | ServerType::RsPrimary
            | ServerType::Mongos
            | ServerType::LoadBalancer
    )
}

/// Shared between one client's event handlers and the canary.
pub(super) struct ClientWatch {
    pub(super) state: Mutex<WatchState>,
    /// Bumped on every topology event, so a connect can wait for news.
    pub(super) revision: watch::Sender<u64>,
    /// Set once when the canary's server is lost.
    pub(super) lost: watch::Sender<Option<DisconnectCause>>,
    /// Primaries seen, to the store's announcer.
    pub(super) primaries: mpsc::UnboundedSender<PrimarySeen>,
}

impl ClientWatch {
    pub(super) fn new(
        primaries: mpsc::UnboundedSender<PrimarySeen>,
        last_primary: Option<ServerAddress>,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(WatchState {
                last_primary,
                ..WatchState::default()
            }),
            revision: watch::Sender::new(0),
            lost: watch::Sender::new(None),
            primaries,
        })
    }

    /// When this client's topology first had a server to send the canary's
    /// commands to: the store answering again, as the driver's monitor saw
    /// it.
    pub(super) fn serving_since(&self) -> Option<Instant> {
        self.lock().serving_since
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, WatchState> {
        // A panic in a handler leaves plain data behind: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn on_sdam(&self, event: SdamEvent) {
        {
            let mut st = self.lock();
            match event {
                SdamEvent::ServerHeartbeatSucceeded(e) => {
                    let election_id = e.reply.get_object_id("electionId").ok();
                    st.heartbeats
                        .insert(e.server_address, Heartbeat::Ok { election_id });
                }
                SdamEvent::ServerHeartbeatFailed(e) => {
                    let (result, message) = driver_result(&e.failure);
                    st.heartbeats
                        .insert(e.server_address, Heartbeat::Failed { result, message });
                }
                SdamEvent::TopologyDescriptionChanged(e) => {
                    let servers = e.new_description.servers();
                    st.primary = servers
                        .iter()
                        .find(|(_, s)| s.server_type() == ServerType::RsPrimary)
                        .map(|(a, _)| (*a).clone());
                    st.servers = servers
                        .iter()
                        .map(|(a, s)| ((*a).clone(), s.server_type()))
                        .collect();
                    if st.servers.iter().any(|(_, t)| serves_primary_reads(*t)) {
                        st.serving_since.get_or_insert_with(Instant::now);
                    }
                }
                _ => return,
            }
            self.report_primary(&mut st);
        }
        self.revision.send_modify(|r| *r = r.wrapping_add(1));
    }

    /// Reports the primary to the store when it (or its electionId) moved.
    pub(super) fn report_primary(&self, st: &mut WatchState) {
        let Some(primary) = st.primary.clone() else {
            return;
        };
        let election_id = match st.heartbeats.get(&primary) {
            Some(Heartbeat::Ok { election_id }) => *election_id,
            _ => None,
        };
        let seen = PrimarySeen {
            address: primary.to_string(),
            election_id,
        };
        if st.reported.as_ref() != Some(&seen) {
            st.reported = Some(seen.clone());
            let _ = self.primaries.send(seen);
        }
    }

    pub(super) fn on_cmap(&self, event: CmapEvent) {
        // The driver interrupts in-use connections when, and only when, its
        // monitor timed out: a silent server, whatever the heartbeat
        // event (which may come after this one) will say.
        let (address, timed_out) = match &event {
            CmapEvent::PoolCleared(e) => (&e.address, e.interrupt_in_use_connections),
            CmapEvent::ConnectionClosed(e) if e.reason == ConnectionClosedReason::Error => {
                (&e.address, false)
            }
            _ => return,
        };
        let cause = {
            let st = self.lock();
            if st.canary_server.as_ref() != Some(address) {
                return;
            }
            if timed_out {
                DisconnectCause::Timeout
            } else {
                match st.heartbeats.get(address) {
                    Some(Heartbeat::Failed {
                        result: ConnectResult::Timeout,
                        ..
                    }) => DisconnectCause::Timeout,
                    _ => DisconnectCause::Closed,
                }
            }
        };
        self.lost.send_if_modified(|lost| {
            if lost.is_none() {
                *lost = Some(cause);
                true
            } else {
                false
            }
        });
    }

    pub(super) fn on_command(&self, event: CommandEvent) {
        if let CommandEvent::Started(e) = event {
            self.lock().canary_server = Some(e.connection.address);
        }
    }

    /// The server the canary's last command went to.
    pub(super) fn canary_server(&self) -> Option<String> {
        self.lock().canary_server.as_ref().map(ToString::to_string)
    }

    pub(super) fn canary_address(&self) -> Option<ServerAddress> {
        self.lock().canary_server.clone()
    }

    /// When every server of the topology failed its heartbeat (nothing
    /// answers at all): the failure, as a plain TCP connect would report it.
    pub(super) fn all_failed(&self) -> Option<ConnectError> {
        let st = self.lock();
        if st.servers.is_empty() {
            return None;
        }
        let mut worst: Option<(ConnectResult, String)> = None;
        for (addr, ty) in &st.servers {
            if *ty != ServerType::Unknown {
                return None;
            }
            match st.heartbeats.get(addr) {
                Some(Heartbeat::Failed { result, message }) => {
                    if worst.as_ref().is_none_or(|(w, _)| rank(*result) > rank(*w)) {
                        worst = Some((*result, format!("{addr}: {message}")));
                    }
                }
                _ => return None,
            }
        }
        worst.map(|(r, m)| ConnectError::new(r, m))
    }

    /// Why no primary could be selected in time, from what the topology
    /// knows: members that answer but none primary is `not_ready`.
    pub(super) fn stalled(&self, waited: Duration) -> ConnectError {
        let st = self.lock();
        // The primary the canary last used hangs (a stopped process, a
        // black-holed network): that is a timeout, whatever the others say.
        if let Some(addr) = st.canary_server.as_ref().or(st.last_primary.as_ref())
            && let Some(Heartbeat::Failed {
                result: ConnectResult::Timeout,
                message,
            }) = st.heartbeats.get(addr)
        {
            return ConnectError::new(
                ConnectResult::Timeout,
                format!("the primary {addr} does not answer: {message}"),
            );
        }
        let answering: Vec<String> = st
            .servers
            .iter()
            .filter(|(_, t)| *t != ServerType::Unknown)
            .map(|(a, t)| format!("{a} is {t:?}"))
            .collect();
        if !answering.is_empty() {
            return ConnectError::new(
                ConnectResult::NotReady,
                format!("no primary: {}", answering.join(", ")),
            );
        }
        let failed = st.heartbeats.iter().find_map(|(a, h)| match h {
            Heartbeat::Failed { result, message } => Some((*result, format!("{a}: {message}"))),
            Heartbeat::Ok { .. } => None,
        });
        match failed {
            Some((result, message)) => ConnectError::new(result, message),
            None => ConnectError::new(
                ConnectResult::Timeout,
                format!(
                    "no server answered within {}",
                    humantime::format_duration(Duration::from_millis(waited.as_millis() as u64))
                ),
            ),
        }
    }
}

/// Which failure to report when members fail differently: the one an
/// operator must act on first.
fn rank(r: ConnectResult) -> u8 {
    match r {
        ConnectResult::Auth => 7,
        ConnectResult::Tls => 6,
        ConnectResult::Dns => 5,
        ConnectResult::Protocol => 4,
        ConnectResult::Refused => 3,
        ConnectResult::Timeout => 2,
        ConnectResult::Io => 1,
        ConnectResult::NotReady | ConnectResult::Ok => 0,
    }
}
