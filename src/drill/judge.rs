//! The verdict of one drill, from what the canaries saw: a pure function of
//! the evidence and the time, so that the rules below are tested on paused
//! time and the command line and the agent judge alike.
//!
//! The rules (docs/apps-and-drills.md, "How an app is judged"):
//! - The fault is **over** at E = the latest of: the end of the action (T),
//!   the end of every outage of the store's canary that the drill saw (R),
//!   and, for a failover, the first moment another primary answered the
//!   canary (F). E is only settled once the store's canary is up, no sooner
//!   than `settle` after T (an outage that starts then still belongs to the
//!   drill), and, for a failover, once F is seen. A store not back within
//!   `restore_timeout` of T fails the drill; a failover never seen means
//!   the fault did not happen.
//! - An app has **recovered** at its first healthy check *sent* at or after
//!   E; its lag is that moment minus E, 0 when it was healthy again before E
//!   (it did not need the store to answer `/health`). An app never
//!   unhealthy since the action began is **unaffected** (lag 0). An app
//!   without a healthy check sent within its `recovery_deadline` of E did
//!   **not recover**; that is decided once a check sent at the deadline
//!   would have come back (the app's probe timeout later).
//!
//! `apps.rs` judges an app against each dependency outage as it ends, which
//! the agent needs; a drill has a fault that may involve no outage at all
//! (kill-clients spares the canary), hence this judge.

use std::time::Duration;

use tokio::time::Instant;

/// One health check of an app: when it was sent and whether it passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    pub sent: Instant,
    pub healthy: bool,
}

/// Who answered the store's canary.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Server {
    pub id: Option<String>,
    pub address: Option<String>,
    pub primary: bool,
}

impl Server {
    /// Whether this is another server than `before`, as far as either says.
    fn differs(&self, before: &Server) -> bool {
        let id = matches!((&self.id, &before.id), (Some(a), Some(b)) if a != b);
        let addr = matches!((&self.address, &before.address), (Some(a), Some(b)) if a != b);
        id || addr
    }
}

/// One outage of the store's canary: when it was lost and when restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    pub lost: Instant,
    pub restored: Option<Instant>,
}

/// An app's evidence.
#[derive(Debug, Clone)]
pub struct AppEvidence {
    pub deadline: Duration,
    /// How long a check may take: a check sent at the deadline is waited
    /// for this long.
    pub grace: Duration,
    /// Its checks since the drill began, in the order they came back.
    pub checks: Vec<Check>,
}

/// Everything one drill's verdict rests on.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// The action began.
    pub began: Instant,
    /// The action ended (T).
    pub acted: Instant,
    pub settle: Duration,
    pub restore_timeout: Duration,
    /// For a failover, who answered the canary before: the fault is over
    /// only once another primary answers.
    pub failover_from: Option<Server>,
    /// The store canary's outages that the drill saw.
    pub outages: Vec<Outage>,
    /// Who answered the canary, from each (re)connect and identity change.
    pub servers: Vec<(Instant, Server)>,
    pub apps: Vec<AppEvidence>,
}

/// Where the store stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreVerdict {
    /// Not settled yet.
    Pending,
    /// The fault is over at `over` (E).
    Back { over: Instant },
    /// Still down `restore_timeout` after the action.
    NotBack,
    /// A failover was asked for and no other primary answered the canary.
    NoFailover,
}

/// What an app came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppVerdict {
    Pending,
    /// Never unhealthy since the action began.
    Unaffected,
    /// Recovered `lag` after the fault was over; the true moment lies
    /// between `lag_min` and `lag` (its last failed check and its first
    /// good one).
    Recovered {
        lag: Duration,
        lag_min: Duration,
    },
    NotRecovered,
    /// The store did not come back (or the fault did not happen).
    NotJudged,
}

/// An app's verdict with the moments it rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppJudgement {
    pub verdict: AppVerdict,
    /// Its first failed check since the action began.
    pub first_unhealthy: Option<Instant>,
}

/// A drill's verdict at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub store: StoreVerdict,
    pub apps: Vec<AppJudgement>,
}

impl Judgement {
    /// Whether nothing can change any more.
    pub fn done(&self) -> bool {
        self.store != StoreVerdict::Pending
            && self.apps.iter().all(|a| a.verdict != AppVerdict::Pending)
    }
}

/// Judges the evidence as it stands at `now`.
pub fn judge(e: &Evidence, now: Instant) -> Judgement {
    let store = store_verdict(e, now);
    let apps = e
        .apps
        .iter()
        .map(|a| {
            let first_unhealthy = a
                .checks
                .iter()
                .filter(|c| c.sent >= e.began && !c.healthy)
                .map(|c| c.sent)
                .min();
            let verdict = match store {
                StoreVerdict::Pending => AppVerdict::Pending,
                StoreVerdict::NotBack | StoreVerdict::NoFailover => AppVerdict::NotJudged,
                StoreVerdict::Back { over } => app_verdict(a, e.began, over, now),
            };
            AppJudgement {
                verdict,
                first_unhealthy,
            }
        })
        .collect();
    Judgement { store, apps }
}

fn store_verdict(e: &Evidence, now: Instant) -> StoreVerdict {
    let down = e.outages.iter().any(|o| o.restored.is_none());
    let failover_at = match &e.failover_from {
        None => None,
        Some(before) => e
            .servers
            .iter()
            .find(|(at, s)| *at >= e.began && s.primary && s.differs(before))
            .map(|(at, _)| *at),
    };
    let failed_over = e.failover_from.is_none() || failover_at.is_some();
    if !down && failed_over && now >= e.acted + e.settle {
        let restored = e.outages.iter().filter_map(|o| o.restored).max();
        let over = [Some(e.acted), restored, failover_at]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(e.acted);
        return StoreVerdict::Back { over };
    }
    if now >= e.acted + e.restore_timeout {
        return if down || failed_over {
            StoreVerdict::NotBack
        } else {
            StoreVerdict::NoFailover
        };
    }
    StoreVerdict::Pending
}

fn app_verdict(a: &AppEvidence, began: Instant, over: Instant, now: Instant) -> AppVerdict {
    let mut checks: Vec<Check> = a
        .checks
        .iter()
        .filter(|c| c.sent >= began)
        .copied()
        .collect();
    checks.sort_by_key(|c| c.sent);
    let first_good = checks
        .iter()
        .position(|c| c.healthy && c.sent >= over && c.sent - over <= a.deadline);
    let Some(i) = first_good else {
        return if now >= over + a.deadline + a.grace {
            AppVerdict::NotRecovered
        } else {
            AppVerdict::Pending
        };
    };
    let good = checks[i].sent;
    let before = &checks[..i];
    let Some(last_bad) = before.iter().rposition(|c| !c.healthy) else {
        return AppVerdict::Unaffected;
    };
    if before[last_bad + 1..].iter().any(|c| c.healthy) {
        // Healthy again before the fault was over.
        return AppVerdict::Recovered {
            lag: Duration::ZERO,
            lag_min: Duration::ZERO,
        };
    }
    AppVerdict::Recovered {
        lag: good - over,
        lag_min: before[last_bad].sent.saturating_duration_since(over),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn checks(t0: Instant, list: &[(u64, bool)]) -> Vec<Check> {
        list.iter()
            .map(|(ms, healthy)| Check {
                sent: t0 + MS * (*ms as u32),
                healthy: *healthy,
            })
            .collect()
    }

    /// A kill-clients drill: the action takes 5 ms, no store outage,
    /// deadline 2 s, checks take at most 500 ms.
    fn evidence(t0: Instant, apps: Vec<Vec<Check>>) -> Evidence {
        Evidence {
            began: t0,
            acted: t0 + 5 * MS,
            settle: 1000 * MS,
            restore_timeout: Duration::from_secs(60),
            failover_from: None,
            outages: Vec::new(),
            servers: Vec::new(),
            apps: apps
                .into_iter()
                .map(|checks| AppEvidence {
                    deadline: Duration::from_secs(2),
                    grace: 500 * MS,
                    checks,
                })
                .collect(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn kill_clients_judges_each_app_against_the_end_of_the_action() {
        let t0 = Instant::now();
        let good = checks(t0, &[(100, false), (200, false), (300, true)]);
        let steady = checks(t0, &[(100, true), (200, true)]);
        let broken = checks(t0, &[(100, false), (200, false), (2600, false)]);
        let e = evidence(t0, vec![good, steady, broken]);
        // Within the settle window nothing is decided.
        let j = judge(&e, t0 + 500 * MS);
        assert_eq!(j.store, StoreVerdict::Pending);
        assert!(!j.done());
        let j = judge(&e, t0 + 1100 * MS);
        assert_eq!(j.store, StoreVerdict::Back { over: t0 + 5 * MS });
        assert_eq!(
            j.apps[0].verdict,
            AppVerdict::Recovered {
                lag: 295 * MS,
                lag_min: 195 * MS
            }
        );
        assert_eq!(j.apps[0].first_unhealthy, Some(t0 + 100 * MS));
        assert_eq!(j.apps[1].verdict, AppVerdict::Unaffected);
        assert_eq!(j.apps[1].first_unhealthy, None);
        // Not recovered once the deadline and a check's length have passed.
        assert_eq!(j.apps[2].verdict, AppVerdict::Pending);
        assert!(!j.done());
        let j = judge(&e, t0 + 2505 * MS);
        assert_eq!(j.apps[2].verdict, AppVerdict::NotRecovered);
        assert!(j.done());
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_counts_from_the_store_back_and_a_late_outage_moves_it() {
        let t0 = Instant::now();
        let mut e = evidence(
            t0,
            vec![checks(t0, &[(100, false), (700, true), (900, true)])],
        );
        e.acted = t0 + 600 * MS;
        e.outages.push(Outage {
            lost: t0 + 50 * MS,
            restored: None,
        });
        assert_eq!(
            judge(&e, t0 + 2000 * MS).store,
            StoreVerdict::Pending,
            "still down"
        );
        e.outages[0].restored = Some(t0 + 650 * MS);
        let j = judge(&e, t0 + 2000 * MS);
        assert_eq!(
            j.store,
            StoreVerdict::Back {
                over: t0 + 650 * MS
            }
        );
        assert_eq!(
            j.apps[0].verdict,
            AppVerdict::Recovered {
                lag: 50 * MS,
                lag_min: Duration::ZERO
            }
        );
        // A second outage within the settle window, which the app felt: the
        // fault is over later, and the good check before it does not count.
        e.outages.push(Outage {
            lost: t0 + 800 * MS,
            restored: Some(t0 + 850 * MS),
        });
        e.apps[0].checks.push(Check {
            sent: t0 + 820 * MS,
            healthy: false,
        });
        let j = judge(&e, t0 + 2000 * MS);
        assert_eq!(
            j.store,
            StoreVerdict::Back {
                over: t0 + 850 * MS
            }
        );
        assert_eq!(
            j.apps[0].verdict,
            AppVerdict::Recovered {
                lag: 50 * MS,
                lag_min: Duration::ZERO
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_app_healthy_again_before_the_store_is_back_has_lag_zero() {
        let t0 = Instant::now();
        let mut e = evidence(
            t0,
            vec![checks(t0, &[(100, false), (300, true), (1200, true)])],
        );
        e.outages.push(Outage {
            lost: t0 + 10 * MS,
            restored: Some(t0 + 1100 * MS),
        });
        let j = judge(&e, t0 + 1300 * MS);
        assert_eq!(
            j.apps[0].verdict,
            AppVerdict::Recovered {
                lag: Duration::ZERO,
                lag_min: Duration::ZERO
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_good_check_past_the_deadline_is_not_a_recovery() {
        let t0 = Instant::now();
        let e = evidence(t0, vec![checks(t0, &[(100, false), (2100, true)])]);
        assert_eq!(
            judge(&e, t0 + 2200 * MS).apps[0].verdict,
            AppVerdict::Pending
        );
        assert_eq!(
            judge(&e, t0 + 2600 * MS).apps[0].verdict,
            AppVerdict::NotRecovered
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failover_is_over_when_another_primary_answers() {
        let t0 = Instant::now();
        let old = Server {
            id: Some("a".into()),
            address: Some("h:1".into()),
            primary: true,
        };
        let mut e = evidence(t0, vec![checks(t0, &[(100, true), (3000, true)])]);
        e.failover_from = Some(old.clone());
        e.servers.push((
            t0 + 900 * MS,
            Server {
                primary: false,
                ..old.clone()
            },
        ));
        assert_eq!(judge(&e, t0 + 2000 * MS).store, StoreVerdict::Pending);
        assert_eq!(
            judge(&e, t0 + 61 * 1000 * MS).store,
            StoreVerdict::NoFailover
        );
        e.servers.push((
            t0 + 2500 * MS,
            Server {
                id: Some("b".into()),
                address: Some("h:2".into()),
                primary: true,
            },
        ));
        let j = judge(&e, t0 + 3100 * MS);
        assert_eq!(
            j.store,
            StoreVerdict::Back {
                over: t0 + 2500 * MS
            }
        );
        assert_eq!(j.apps[0].verdict, AppVerdict::Unaffected);
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_that_stays_down_leaves_the_apps_unjudged() {
        let t0 = Instant::now();
        let mut e = evidence(t0, vec![checks(t0, &[(100, false)])]);
        e.outages.push(Outage {
            lost: t0 + 10 * MS,
            restored: None,
        });
        let j = judge(&e, t0 + 61 * 1000 * MS);
        assert_eq!(j.store, StoreVerdict::NotBack);
        assert_eq!(j.apps[0].verdict, AppVerdict::NotJudged);
        assert!(j.done());
    }
}
