//! Drills the agent ran (through `POST /api/v1/drills`), as telemetry:
//! `dbcanary_drills_total{target,store,result}` (the store's target; `passed`,
//! `failed`, `aborted`), the `last_drill` of each target a drill involved
//! in `/api/v1/targets`, and (through `otlp`) a `dbcanary.drill` span;
//! the series are kept by the Prometheus side ([`super::prometheus::DrillSeries`]).
//! The drill itself is the drill module's; it tells the recorder what it
//! does in these words.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::model::ser::time as ser_time;

/// A drill's result as its series and the API name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillResult {
    Passed,
    Failed,
    /// Interrupted, or not performed (the store or an app was not healthy
    /// first, the action failed).
    Aborted,
}

impl DrillResult {
    pub const ALL: [Self; 3] = [Self::Passed, Self::Failed, Self::Aborted];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Aborted => "aborted",
        }
    }
}

/// A drill about to act on its store.
#[derive(Debug, Clone)]
pub struct DrillStart {
    /// The API's id of the drill request.
    pub id: String,
    /// Which of its `repeat` drills, from 1.
    pub number: u32,
    /// The store's target, and the apps judged.
    pub store: String,
    pub apps: Vec<String>,
    /// `kill-clients`, `failover`, `exec`, `restart`.
    pub action: &'static str,
}

impl DrillStart {
    /// Every target the drill involves: the store, then the apps.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.store).chain(&self.apps)
    }
}

/// How one app came through a drill.
#[derive(Debug, Clone)]
pub struct DrillApp {
    pub name: String,
    /// `unaffected`, `recovered`, `not_recovered`, `not_judged`.
    pub result: &'static str,
    /// When the app was first seen unhealthy after the action (the action
    /// when it never was), and when it was healthy again (the verdict when
    /// it was not).
    pub from: SystemTime,
    pub to: SystemTime,
    /// From the end of the fault to the app's first healthy check.
    pub lag: Option<Duration>,
}

/// A drill judged (or given up).
#[derive(Debug, Clone)]
pub struct DrillEnd {
    pub start: DrillStart,
    pub result: DrillResult,
    /// Why, unless it passed.
    pub reason: Option<String>,
    pub started_at: SystemTime,
    pub ended_at: SystemTime,
    pub apps: Vec<DrillApp>,
}

/// The last drill a target took part in, as `/api/v1/targets` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LastDrill {
    pub id: String,
    pub number: u32,
    pub store: String,
    pub action: &'static str,
    pub result: DrillResult,
    pub reason: Option<String>,
    #[serde(serialize_with = "ser_time")]
    pub started_at: SystemTime,
    #[serde(serialize_with = "ser_time")]
    pub ended_at: SystemTime,
}

impl LastDrill {
    pub fn of(end: &DrillEnd) -> Self {
        Self {
            id: end.start.id.clone(),
            number: end.start.number,
            store: end.start.store.clone(),
            action: end.start.action,
            result: end.result,
            reason: end.reason.clone(),
            started_at: end.started_at,
            ended_at: end.ended_at,
        }
    }
}
