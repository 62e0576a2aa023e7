//! What `/api/v1/targets` tells about each target: its phase, identity,
//! current and last outage and its last events, kept up to date from the
//! events. The gauges that are a function of it (`up`, the connection's age,
//! the outage in progress, who answers) are read from here when exported.

use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::Serialize;
use tokio::time::Instant;

use super::drills::LastDrill;
use crate::apps::AppDrill;
use crate::events::{Event, OutageReport};
use crate::model::ser::{opt_time as ser_opt_time, time as ser_time};
use crate::model::{AttemptResult, DisconnectCause, Identity, StoreKind, TargetInfo};

/// How many events `/api/v1/targets` keeps per target.
pub const EVENTS_KEPT: usize = 50;

/// Every target's state, by name.
pub type States = Arc<StateMap>;

/// One target's state, locked on its own.
pub type Shared = Arc<Mutex<TargetState>>;

/// Every target's state, each behind its own lock: a canary's event locks
/// its target alone, and a scrape or an API read takes the handles and
/// then each target in turn, so that neither holds every canary up while
/// it encodes thousands of targets.
#[derive(Debug, Default)]
pub struct StateMap {
    targets: Mutex<BTreeMap<String, Shared>>,
}

impl StateMap {
    fn map(&self) -> MutexGuard<'_, BTreeMap<String, Shared>> {
        self.targets.lock().expect("state map lock")
    }

    /// The state of `name`.
    pub fn get(&self, name: &str) -> Option<Shared> {
        self.map().get(name).cloned()
    }

    /// Adds (or replaces) a target's state.
    pub fn insert(&self, st: TargetState) {
        let old = self.map().insert(st.name.clone(), Arc::new(Mutex::new(st)));
        retire(old);
    }

    /// Removes the state of `name`.
    pub fn remove(&self, name: &str) {
        let old = self.map().remove(name);
        retire(old);
    }

    /// Every target's state, in name order.
    pub fn handles(&self) -> Vec<Shared> {
        self.map().values().cloned().collect()
    }

    /// How many targets there are.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether there is no target.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }
}

/// A state no longer in the map takes no event, though a canary still
/// holds it (see `Recorder::sink_for`).
fn retire(old: Option<Shared>) {
    if let Some(old) = old {
        lock(&old).retired = true;
    }
}

/// Locks one target's state.
pub fn lock(st: &Shared) -> MutexGuard<'_, TargetState> {
    st.lock().expect("state lock")
}

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

impl Phase {
    /// Every phase, as the API spells them.
    pub const ALL: [Self; 4] = [Self::Connecting, Self::Up, Self::Down, Self::Stopped];

    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Up => "up",
            Self::Down => "down",
            Self::Stopped => "stopped",
        }
    }

    /// The phase the API calls `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// Which targets an API read selects (`?target=`, `?state=`, `?store=`);
/// every one when empty.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub target: Option<String>,
    pub state: Option<Phase>,
    /// A `store` label value (`redis` selects Sentinel targets too).
    pub store: Option<String>,
}

impl Filter {
    /// Whether `st` is selected.
    pub fn selects(&self, st: &TargetState) -> bool {
        self.target.as_ref().is_none_or(|n| *n == st.name)
            && self.state.is_none_or(|p| p == st.state)
            && self.store.as_ref().is_none_or(|k| k == st.store.label())
    }
}

/// How many of the targets in an outage now `?view=summary` lists: the
/// longest outages (`?state=down` gives every one). A summary stays small
/// while a server takes thousands of targets with it, when it is polled
/// the most.
pub const SUMMARY_DOWN: usize = 100;

/// `?view=summary`: how many targets are in each state, per store too, and
/// the longest outages in progress, so that a UI need not fetch every
/// target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub targets: usize,
    /// Targets per state (every state, zeros included).
    pub states: BTreeMap<&'static str, usize>,
    /// Targets per store and state.
    pub stores: BTreeMap<&'static str, BTreeMap<&'static str, usize>>,
    /// Ended outages of every target since the agent started.
    pub outages: u64,
    /// Targets in an outage now.
    pub in_outage: usize,
    /// The [`SUMMARY_DOWN`] longest outages in progress, the longest first.
    pub down: Vec<DownTarget>,
    /// The longest so far while counting, the shortest of them on top.
    #[serde(skip)]
    longest: BinaryHeap<ByStart>,
}

/// A target in an outage now, in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct DownTarget {
    pub name: String,
    #[serde(serialize_with = "ser_store")]
    pub store: StoreKind,
    pub state: Phase,
    /// The outage so far, in seconds.
    pub outage_s: f64,
    #[serde(flatten)]
    pub outage: CurrentOutage,
}

/// A [`DownTarget`] ordered by its outage's start: the latest is the
/// greatest.
#[derive(Debug, Clone)]
struct ByStart(DownTarget);

impl PartialEq for ByStart {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for ByStart {}

impl PartialOrd for ByStart {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByStart {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.outage.since_mono.cmp(&other.0.outage.since_mono)
    }
}

impl Summary {
    /// Counts `st` in.
    pub fn add(&mut self, st: &TargetState, now: Instant) {
        if self.states.is_empty() {
            self.states = Phase::ALL.iter().map(|p| (p.as_str(), 0)).collect();
        }
        self.targets += 1;
        *self.states.entry(st.state.as_str()).or_default() += 1;
        let per_store = self
            .stores
            .entry(st.store.label())
            .or_insert_with(|| Phase::ALL.iter().map(|p| (p.as_str(), 0)).collect());
        *per_store.entry(st.state.as_str()).or_default() += 1;
        self.outages += st.outages;
        let Some(o) = &st.current_outage else {
            return;
        };
        if st.state == Phase::Stopped {
            return;
        }
        self.in_outage += 1;
        // Only an outage longer than the shortest one kept is copied.
        if self.longest.len() == SUMMARY_DOWN
            && self
                .longest
                .peek()
                .is_some_and(|k| k.0.outage.since_mono <= o.since_mono)
        {
            return;
        }
        self.longest.push(ByStart(DownTarget {
            name: st.name.clone(),
            store: st.store,
            state: st.state,
            outage_s: now.saturating_duration_since(o.since_mono).as_secs_f64(),
            outage: o.clone(),
        }));
        if self.longest.len() > SUMMARY_DOWN {
            self.longest.pop();
        }
    }

    /// Puts the longest outages first, once every target is counted.
    pub fn finish(mut self) -> Self {
        self.down = std::mem::take(&mut self.longest)
            .into_sorted_vec()
            .into_iter()
            .map(|k| k.0)
            .collect();
        self
    }
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
    /// Replaced or removed: no canary's events count any more.
    #[serde(skip)]
    pub retired: bool,
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
    /// The last drill run through the API that this target took part in
    /// (as the store or as an app).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<Box<LastDrill>>,
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
            retired: false,
            state: Phase::Connecting,
            identity: None,
            connected_since: None,
            connected_mono: None,
            last_error: None,
            current_outage: None,
            last_outage: None,
            outages: 0,
            dependencies: BTreeMap::new(),
            last_drill: None,
            // Grown as events come: most targets keep a few, and 50
            // preallocated events cost 12 KiB a target.
            events: VecDeque::new(),
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

    /// Whether the events of canary `t` count here.
    pub fn takes(&self, t: &TargetInfo) -> bool {
        self.instance == t.instance && !self.retired
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn down(name: String, since_mono: Instant) -> TargetState {
        let info = TargetInfo {
            name,
            store: StoreKind::Redis,
            endpoint: "127.0.0.1:1".into(),
            own_results: &[],
            instance: 1,
            detail: Default::default(),
        };
        let mut st = TargetState::new(&info);
        st.state = Phase::Down;
        st.current_outage = Some(CurrentOutage {
            since: SystemTime::now(),
            since_mono,
            start_unknown: false,
            cause: DisconnectCause::Closed,
            attempts: 1,
            last_result: None,
            last_error: None,
        });
        st
    }

    #[test]
    fn the_summary_counts_every_outage_and_lists_the_longest() {
        let now = Instant::now();
        let mut s = Summary::default();
        // Started i ms before now, in an order that is not by length.
        for i in (0..250u64).map(|i| (i * 97) % 250) {
            s.add(&down(format!("t{i}"), now - Duration::from_millis(i)), now);
        }
        let s = s.finish();
        assert_eq!((s.targets, s.in_outage), (250, 250));
        assert_eq!(s.states["down"], 250);
        let names: Vec<&str> = s.down.iter().map(|d| d.name.as_str()).collect();
        let longest: Vec<String> = (150..250).rev().map(|i| format!("t{i}")).collect();
        assert_eq!(
            names, longest,
            "the {SUMMARY_DOWN} longest, the longest first"
        );
    }
}
