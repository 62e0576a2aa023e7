//! A drill's report: the types the JSON is made of (`--json`, and later the
//! agent's API), the text for a person, and JUnit XML for CI systems (one
//! test case per app per drill). Every string in it was scrubbed of the
//! targets' secrets when it was made.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::events::OutageReport;
use crate::model::ser::{opt_secs as ser_opt_secs, secs as ser_secs, time as ser_time};
use crate::model::{DisconnectCause, FailoverSource, Identity};

use super::action::{ExecReport, FailureKind};
use super::plan::PlanView;

/// How a drill, or all of them, ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every app recovered within its deadline.
    Passed,
    /// An app did not recover, or the store did not come back.
    Failed,
    /// The drill could not be performed: the action failed, the store or an
    /// app was not healthy before it, or the fault did not happen.
    NotPerformed,
    /// Stopped by Ctrl-C (or the caller) before a verdict.
    Aborted,
}

impl Outcome {
    /// The outcome as the text report says it.
    pub fn shout(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "FAILED",
            Self::NotPerformed => "NOT PERFORMED",
            Self::Aborted => "ABORTED",
        }
    }
}

/// What the action did.
#[derive(Debug, Clone, Serialize)]
pub struct ActionReport {
    pub ok: bool,
    #[serde(serialize_with = "ser_secs", rename = "took_s")]
    pub took: Duration,
    /// What it did (when it succeeded) or why it failed.
    pub detail: String,
    pub failure: Option<FailureKind>,
    pub exec: Option<Box<ExecReport>>,
}

/// Who answered the store's canary.
#[derive(Debug, Clone, Serialize)]
pub struct ServerView {
    pub address: Option<String>,
    pub role: Option<&'static str>,
    pub server_id: Option<String>,
}

impl ServerView {
    pub fn of(id: &Identity) -> Self {
        Self {
            address: id.address.clone(),
            role: id.role.map(|r| r.as_str()),
            server_id: id.server_id.clone(),
        }
    }

    fn text(&self) -> String {
        format!(
            "{} ({})",
            self.address.as_deref().unwrap_or("?"),
            self.role.unwrap_or("unknown role")
        )
    }
}

/// One outage of the store's canary during the drill.
#[derive(Debug, Clone, Serialize)]
pub struct OutageView {
    /// Seconds after the action began (negative: before).
    pub lost_at_s: f64,
    pub restored_at_s: Option<f64>,
    pub cause: DisconnectCause,
    pub detail: String,
    /// The canary's report, once restored: length, bounds, kind.
    pub report: Option<OutageReport>,
}

/// A failover the canary reported.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverView {
    pub at_s: f64,
    pub source: FailoverSource,
    pub from: Option<String>,
    pub to: String,
}

/// Where the store stood at the end of a drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreState {
    /// Answering again (or never lost): the fault is over.
    Back,
    NotBack,
    /// A failover was asked for; no other primary answered.
    NoFailover,
    /// The drill ended before the store was settled.
    Unsettled,
}

/// The store during one drill.
#[derive(Debug, Clone, Serialize)]
pub struct StoreReport {
    pub state: StoreState,
    /// When the fault was over (seconds after the action began): the end of
    /// the action, of the store's last outage, or of the failover.
    pub over_at_s: Option<f64>,
    pub outages: Vec<OutageView>,
    pub failovers: Vec<FailoverView>,
    /// Who answered the canary before the action and at the end.
    pub before: Option<ServerView>,
    pub after: Option<ServerView>,
}

/// What an app came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AppResult {
    /// Never unhealthy during the drill.
    Unaffected,
    Recovered,
    NotRecovered,
    NotJudged,
}

/// One app in one drill.
#[derive(Debug, Clone, Serialize)]
pub struct AppReport {
    pub name: String,
    pub url: String,
    #[serde(serialize_with = "ser_secs", rename = "recovery_deadline_s")]
    pub recovery_deadline: Duration,
    pub result: AppResult,
    /// Fault over → first healthy check (0 when unaffected or healthy
    /// again before the fault was over).
    #[serde(serialize_with = "ser_opt_secs", rename = "lag_s")]
    pub lag: Option<Duration>,
    /// The earliest the recovery can have been (its last failed check).
    #[serde(serialize_with = "ser_opt_secs", rename = "lag_min_s")]
    pub lag_min: Option<Duration>,
    /// Its first failed check, seconds after the action began.
    pub unhealthy_at_s: Option<f64>,
    /// What its last failed check said.
    pub last_error: Option<String>,
}

/// One drill.
#[derive(Debug, Clone, Serialize)]
pub struct DrillRun {
    pub number: u32,
    #[serde(serialize_with = "ser_time")]
    pub started_at: SystemTime,
    pub result: Outcome,
    /// Why it did not pass.
    pub reason: Option<String>,
    /// Absent when the drill stopped before the action.
    pub action: Option<ActionReport>,
    pub store: Option<StoreReport>,
    pub apps: Vec<AppReport>,
}

/// Every drill of one plan.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub plan: PlanView,
    pub result: Outcome,
    /// 0 every app recovered in every drill, 1 one did not (or the store
    /// did not come back), 3 a drill could not be performed or was aborted.
    pub exit_code: u8,
    pub drills: Vec<DrillRun>,
    /// Why the remaining drills were not run.
    pub stopped: Option<String>,
}

impl DrillReport {
    /// The report of `drills`: failed if one failed, else not performed or
    /// aborted if one was, else passed.
    pub fn new(plan: PlanView, drills: Vec<DrillRun>, stopped: Option<String>) -> Self {
        let any = |o| drills.iter().any(|d| d.result == o);
        let result = if any(Outcome::Failed) {
            Outcome::Failed
        } else if any(Outcome::NotPerformed) {
            Outcome::NotPerformed
        } else if any(Outcome::Aborted) || drills.is_empty() {
            Outcome::Aborted
        } else {
            Outcome::Passed
        };
        let exit_code = match result {
            Outcome::Passed => 0,
            Outcome::Failed => 1,
            Outcome::NotPerformed | Outcome::Aborted => 3,
        };
        Self {
            plan,
            result,
            exit_code,
            drills,
            stopped,
        }
    }

    /// The report as text, for a person.
    pub fn text(&self) -> String {
        let p = &self.plan;
        let mut s = format!("dbcanary drill: {}\n  does  {}\n", p.headline(), p.does);
        let width = p.apps.iter().map(|a| a.name.len()).max().unwrap_or(0);
        for d in &self.drills {
            s.push_str(&format!(
                "\ndrill {} of {}, {}: {}{}\n",
                d.number,
                p.repeat,
                humantime::format_rfc3339_millis(d.started_at),
                d.result.shout(),
                d.reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ));
            if let Some(a) = &d.action {
                s.push_str(&format!(
                    "  action  {} ({:.3} s)\n",
                    a.detail,
                    a.took.as_secs_f64()
                ));
                if let Some(x) = &a.exec {
                    s.push_str(&exec_text(x));
                }
            }
            if let Some(st) = &d.store {
                s.push_str(&store_text(st));
            }
            for a in &d.apps {
                s.push_str(&format!("  app {:<width$}  {}\n", a.name, app_text(a)));
            }
        }
        if let Some(why) = &self.stopped {
            s.push_str(&format!("\n{why}\n"));
        }
        let failed = self
            .drills
            .iter()
            .filter(|d| d.result != Outcome::Passed)
            .count();
        s.push_str(&format!(
            "\nresult: {} (exit {}): {} of {} drill{} passed\n",
            self.result.shout(),
            self.exit_code,
            self.drills.len() - failed,
            self.drills.len(),
            if self.drills.len() == 1 { "" } else { "s" }
        ));
        s
    }

    /// The report as JUnit XML: one test suite per drill, one test case per
    /// app; an app that did not recover (or whose store did not come back)
    /// is a failure, a drill that could not be performed an error.
    pub fn junit(&self) -> String {
        let p = &self.plan;
        let class = format!("dbcanary.drill.{}.{}", p.target, p.action.as_str());
        let mut suites = String::new();
        let (mut tests, mut failures, mut errors) = (0, 0, 0);
        for d in &self.drills {
            let (mut f, mut e) = (0, 0);
            let mut cases = String::new();
            for a in &d.apps {
                let time = a.lag.unwrap_or_default().as_secs_f64();
                let name = format!("{} (drill {})", a.name, d.number);
                let body = match (a.result, d.result) {
                    (AppResult::Unaffected | AppResult::Recovered, _) => None,
                    (AppResult::NotRecovered, _) => {
                        f += 1;
                        let msg = format!(
                            "{} did not recover within {} of the fault being over ({} on {}, drill {})",
                            a.name,
                            humantime::format_duration(a.recovery_deadline),
                            p.action.as_str(),
                            p.target,
                            d.number
                        );
                        Some(("failure", "not_recovered", msg, app_text(a)))
                    }
                    (AppResult::NotJudged, Outcome::Failed) => {
                        f += 1;
                        let msg = d.reason.clone().unwrap_or_default();
                        Some(("failure", "store_not_back", msg, app_text(a)))
                    }
                    (AppResult::NotJudged, outcome) => {
                        e += 1;
                        let kind = match outcome {
                            Outcome::Aborted => "aborted",
                            _ => "not_performed",
                        };
                        let msg = d.reason.clone().unwrap_or_else(|| kind.into());
                        Some(("error", kind, msg, app_text(a)))
                    }
                };
                cases.push_str(&format!(
                    "    <testcase name=\"{}\" classname=\"{}\" time=\"{time:.3}\"",
                    xml(&name),
                    xml(&class)
                ));
                match body {
                    None => cases.push_str("/>\n"),
                    Some((tag, kind, msg, text)) => cases.push_str(&format!(
                        ">\n      <{tag} type=\"{kind}\" message=\"{}\">{}</{tag}>\n    </testcase>\n",
                        xml(&msg),
                        xml(&text)
                    )),
                }
            }
            let mut out = String::new();
            if let Some(a) = &d.action {
                out.push_str(&format!("action: {}\n", a.detail));
                if let Some(x) = &a.exec {
                    out.push_str(&exec_text(x));
                }
            }
            if let Some(st) = &d.store {
                out.push_str(&store_text(st));
            }
            let took = d.action.as_ref().map_or(0.0, |a| a.took.as_secs_f64());
            suites.push_str(&format!(
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\" errors=\"{e}\" skipped=\"0\" timestamp=\"{}\" time=\"{took:.3}\">\n{cases}    <system-out>{}</system-out>\n  </testsuite>\n",
                xml(&format!("drill {}: {} on {}", d.number, p.action.as_str(), p.target)),
                d.apps.len(),
                humantime::format_rfc3339_seconds(d.started_at),
                xml(&out)
            ));
            tests += d.apps.len();
            failures += f;
            errors += e;
        }
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"dbcanary drill\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\">\n{suites}</testsuites>\n"
        )
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn at(offset: f64) -> String {
    format!("{offset:+.3} s")
}

fn exec_text(x: &ExecReport) -> String {
    let mut s = format!(
        "  exec    sh -c {:?}: {}\n",
        x.command,
        match (x.exit_code, x.signal, x.timed_out) {
            (_, _, true) => "timed out, killed".to_string(),
            (Some(c), _, _) => format!("exit status {c}"),
            (None, Some(sig), _) => format!("killed by signal {sig}"),
            _ => "no exit status".to_string(),
        }
    );
    for (name, text) in [("stdout", &x.stdout), ("stderr", &x.stderr)] {
        if text.trim().is_empty() {
            continue;
        }
        s.push_str(&format!("  {name}:\n"));
        for line in text.lines() {
            s.push_str(&format!("    | {line}\n"));
        }
    }
    s
}

fn store_text(st: &StoreReport) -> String {
    let mut s = String::new();
    if st.outages.is_empty() {
        s.push_str("  store   no outage of the canary\n");
    }
    for o in &st.outages {
        let text = match (&o.report, o.restored_at_s) {
            (Some(r), Some(back)) => format!(
                "lost at {} ({}), back at {}: outage {} ({}), {}, {} attempt{}",
                at(o.lost_at_s),
                o.cause.as_str(),
                at(back),
                secs(r.duration),
                match r.longest {
                    Some(l) => format!("{:.3}-{:.3} s", r.shortest.as_secs_f64(), l.as_secs_f64()),
                    None => format!("at least {}", secs(r.shortest)),
                },
                r.kind.as_str(),
                r.attempts,
                if r.attempts == 1 { "" } else { "s" }
            ),
            _ => format!(
                "lost at {} ({}): {}; not back",
                at(o.lost_at_s),
                o.cause.as_str(),
                o.detail
            ),
        };
        s.push_str(&format!("  store   {text}\n"));
    }
    for f in &st.failovers {
        s.push_str(&format!(
            "  store   failover ({}) at {}: {} -> {}\n",
            f.source.as_str(),
            at(f.at_s),
            f.from.as_deref().unwrap_or("?"),
            f.to
        ));
    }
    let state = match (st.state, st.over_at_s) {
        (StoreState::Back, Some(over)) => format!("fault over at {}", at(over)),
        (StoreState::NotBack, _) => "NOT back".to_string(),
        (StoreState::NoFailover, _) => "no failover seen".to_string(),
        _ => "not settled".to_string(),
    };
    let after = st
        .after
        .as_ref()
        .map(|a| format!("; the canary is on {}", a.text()))
        .unwrap_or_default();
    s.push_str(&format!("  store   {state}{after}\n"));
    s
}

fn app_text(a: &AppReport) -> String {
    let since = a
        .unhealthy_at_s
        .map(|t| format!("unhealthy from {}", at(t)))
        .unwrap_or_default();
    match (a.result, a.lag, a.lag_min) {
        (AppResult::Unaffected, ..) => "unaffected: never unhealthy (lag 0)".into(),
        (AppResult::Recovered, Some(lag), _) if lag.is_zero() => {
            format!("recovered before the fault was over (lag 0; {since})")
        }
        (AppResult::Recovered, Some(lag), min) => format!(
            "recovered {} after the fault was over (between {} and {}; {since})",
            secs(lag),
            secs(min.unwrap_or_default()),
            secs(lag)
        ),
        (AppResult::NotRecovered, ..) => format!(
            "did NOT recover within {} ({since}{})",
            humantime::format_duration(a.recovery_deadline),
            a.last_error
                .as_ref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        ),
        _ => "not judged".into(),
    }
}

/// Text as XML character data or attribute value: escaped, and without the
/// control characters XML 1.0 does not allow.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_is_escaped_and_cleaned() {
        assert_eq!(
            xml("a<b & \"c\"\u{1b}"),
            "a&lt;b &amp; &quot;c&quot;\u{fffd}"
        );
    }
}
