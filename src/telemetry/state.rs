//! What `/api/v1/targets` tells about each target: its phase, identity,
//! current and last outage and its last events, kept up to date from the
//! events. The gauges that are a function of it (`up`, the connection's age,
//! the outage in progress, who answers) are read from here when exported.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use tokio::time::Instant;

use crate::apps::AppDrill;
use crate::events::{Event, OutageReport};
use crate::model::ser::{opt_time as ser_opt_time, time as ser_time};
use crate::model::{AttemptResult, DisconnectCause, Identity, StoreKind, TargetInfo};

/// How many events `/api/v1/targets` keeps per target.
pub const EVENTS_KEPT: usize = 50;

/// Every target's state, by name.
pub type States = Arc<Mutex<BTreeMap<String, TargetState>>>;

/// Where a target stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Never connected yet (an outage of unknown start is open once the
    /// first attempt failed).
    Connecting,
    Up,
    /// An outage is in progress.
    Down,
    Stopped,
}

/// An outage in progress, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CurrentOutage {
    #[serde(serialize_with = "ser_time")]
    pub since: SystemTime,
    #[serde(skip)]
    pub since_mono: Instant,
    /// Unreachable since the agent started: `since` is the agent's start,
    /// the true start is unknown.
    pub start_unknown: bool,
    pub cause: DisconnectCause,
    pub attempts: u32,
    pub last_result: Option<AttemptResult>,
    pub last_error: Option<String>,
}

/// One remembered event.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    #[serde(serialize_with = "ser_time")]
    pub at: SystemTime,
    #[serde(flatten)]
    pub event: Event,
}

/// Everything the API tells about one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetState {
    pub name: String,
    /// Shown as its `store` label.
    #[serde(serialize_with = "ser_store")]
    pub store: StoreKind,
    pub endpoint: String,
    /// The canary whose events this state takes (see
    /// [`TargetInfo::instance`]).
    #[serde(skip)]
    pub instance: u64,
    pub state: Phase,
    pub identity: Option<Identity>,
    #[serde(serialize_with = "ser_opt_time")]
    pub connected_since: Option<SystemTime>,
    #[serde(skip)]
    pub connected_mono: Option<Instant>,
    pub last_error: Option<String>,
    pub current_outage: Option<CurrentOutage>,
    pub last_outage: Option<OutageReport>,
    pub outages: u64,
    /// For applications: the last drill of each dependency.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub dependencies: BTreeMap<String, Option<AppDrill>>,
    pub events: VecDeque<EventRecord>,
}

impl TargetState {
    /// A target that has not connected yet.
    pub fn new(t: &TargetInfo) -> Self {
        Self {
            name: t.name.clone(),
            store: t.store,
            endpoint: t.endpoint.clone(),
            instance: t.instance,
            state: Phase::Connecting,
            identity: None,
            connected_since: None,
            connected_mono: None,
            last_error: None,
            current_outage: None,
            last_outage: None,
            outages: 0,
            dependencies: BTreeMap::new(),
            events: VecDeque::with_capacity(EVENTS_KEPT),
        }
    }

    /// Keeps `event` among the last [`EVENTS_KEPT`].
    pub fn remember(&mut self, event: &Event) {
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(EventRecord {
            at: SystemTime::now(),
            event: event.clone(),
        });
    }

    /// Takes one event of this target. Returns whether it is the target's
    /// first connection, which its log line tells louder than the ones
    /// that follow.
    pub fn apply(&mut self, event: &Event) -> bool {
        match event {
            Event::ConnectAttempt { result, error, .. } if !result.is_ok() => {
                self.last_error.clone_from(error);
                if let Some(o) = &mut self.current_outage {
                    o.attempts += 1;
                    o.last_result = Some(*result);
                    o.last_error.clone_from(error);
                }
                false
            }
            Event::Connected { identity } => {
                let first = self.state == Phase::Connecting;
                self.state = Phase::Up;
                self.connected_since = Some(SystemTime::now());
                self.connected_mono = Some(Instant::now());
                self.current_outage = None;
                self.last_error = None;
                self.identity = Some(identity.clone());
                self.remember(event);
                first
            }
            Event::Disconnected {
                cause,
                started_at,
                since,
                start_unknown,
                ..
            } => {
                // A target that never answered stays `connecting`, its
                // outage (of unknown start) shown beside it.
                if !*start_unknown {
                    self.state = Phase::Down;
                }
                self.connected_since = None;
                self.connected_mono = None;
                self.current_outage = Some(CurrentOutage {
                    since: *started_at,
                    since_mono: *since,
                    start_unknown: *start_unknown,
                    cause: *cause,
                    attempts: 0,
                    last_result: None,
                    last_error: None,
                });
                self.remember(event);
                false
            }
            Event::Restored(r) => {
                self.last_outage = Some((**r).clone());
                self.outages += 1;
                self.remember(event);
                false
            }
            Event::IdentityChanged { identity } => {
                self.identity = Some(identity.clone());
                self.remember(event);
                false
            }
            Event::Failover { .. } | Event::Notice { .. } => {
                self.remember(event);
                false
            }
            Event::Stopped => {
                self.state = Phase::Stopped;
                self.remember(event);
                false
            }
            Event::Started | Event::ConnectAttempt { .. } | Event::Probe { .. } => false,
        }
    }
}

fn ser_store<S: serde::Serializer>(store: &StoreKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(store.label())
}
