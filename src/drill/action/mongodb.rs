//! MongoDB failover: `replSetStepDown` on the primary, with a client of its
//! own (the drill credential, `appName=dbcanary-drill:<target>`, every
//! timeout [`ADMIN_TIMEOUT`]). Servers before 4.2 close every connection as
//! they step down, so a network error after the command was sent is the
//! step-down happening; the drill then waits to see another primary answer
//! the canary.

use mongodb::Client;
use mongodb::bson::doc;
use mongodb::error::ErrorKind;
use mongodb::options::{ClientOptions, ReadPreference, SelectionCriteria};

use crate::stores::mongodb::driver_uri;

use super::{ADMIN_TIMEOUT, ActionCtx, ActionDone, ActionError, FailureKind, bounded};

/// How long the old primary stays ineligible, and how long it waits for a
/// secondary to catch up before stepping down (the server's defaults).
const STEP_DOWN_SECS: i32 = 60;
const CATCH_UP_SECS: i32 = 10;
/// Unauthorized.
const UNAUTHORIZED: i32 = 13;

/// `replSetStepDown` on the primary of the target's replica set.
pub async fn step_down(ctx: &ActionCtx<'_>) -> Result<ActionDone, ActionError> {
    let url = &ctx.plan.admin.url;
    let what = format!("mongodb {}", url.endpoint());
    let scrub = |s: String| ctx.secrets.scrub(&s);
    let mut options = bounded(&what, ClientOptions::parse(driver_uri(url)))
        .await?
        .map_err(|e| {
            ActionError::new(
                FailureKind::Connect,
                scrub(format!("{what}: not a usable URL: {}", e.kind)),
            )
        })?;
    options.app_name = Some(ctx.admin_name());
    options.connect_timeout = Some(ADMIN_TIMEOUT);
    options.server_selection_timeout = Some(ADMIN_TIMEOUT);
    options.max_pool_size = Some(1);
    let client = Client::with_options(options).map_err(|e| {
        ActionError::new(FailureKind::Connect, scrub(format!("{what}: {}", e.kind)))
    })?;
    let answer = bounded(
        &what,
        client
            .database("admin")
            .run_command(doc! {
                "replSetStepDown": STEP_DOWN_SECS,
                "secondaryCatchUpPeriodSecs": CATCH_UP_SECS,
            })
            .selection_criteria(SelectionCriteria::ReadPreference(ReadPreference::Primary)),
    )
    .await;
    let _ = bounded(&what, client.shutdown().immediate(true)).await;
    match answer? {
        Ok(_) => Ok(ActionDone::said(format!(
            "the primary of {} accepted replSetStepDown {STEP_DOWN_SECS}",
            url.endpoint()
        ))),
        Err(e) => match &*e.kind {
            ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. } => {
                Ok(ActionDone::said(format!(
                    "replSetStepDown sent to the primary of {}; it closed the connection as it stepped down",
                    url.endpoint()
                )))
            }
            ErrorKind::Authentication { .. } => Err(ActionError::new(
                FailureKind::Auth,
                scrub(format!("cannot log in to {what}: {}", e.kind)),
            )),
            ErrorKind::Command(c) if c.code == UNAUTHORIZED => Err(ActionError::new(
                FailureKind::Permission,
                scrub(format!(
                    "{what} refused replSetStepDown: {} (the drill's user needs the clusterManager role)",
                    c.message
                )),
            )),
            ErrorKind::Command(c) => Err(ActionError::new(
                FailureKind::Refused,
                scrub(format!(
                    "{what} refused replSetStepDown: {} (code {}{})",
                    c.message,
                    c.code,
                    if c.code_name.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", c.code_name)
                    }
                )),
            )),
            ErrorKind::ServerSelection { .. } => Err(ActionError::new(
                FailureKind::Connect,
                scrub(format!("{what}: no primary to step down: {}", e.kind)),
            )),
            other => Err(ActionError::new(
                FailureKind::Connect,
                scrub(format!("{what}: {other}")),
            )),
        },
    }
}
