//! `--exec CMD`: the user's own command (`systemctl restart redis`, a
//! `kubectl delete pod`, an HA tool's failover), run with `sh -c` in a
//! process group of its own, so that a timeout or Ctrl-C ends everything it
//! started, not only the shell. Its exit status and output (bounded, every
//! secret of the targets masked) go into the report.
//!
//! A command may leave a daemon behind that still holds its stdout (`redis-server
//! &`): the output is read until the shell exits and briefly after, never
//! until the pipe closes.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::drill::plan::Action;
use crate::drill::redact::Secrets;
use crate::model::ser::secs as ser_secs;

use super::{ActionCtx, ActionDone, ActionError, FailureKind};

/// How much of each stream the report shows.
pub const OUTPUT_SHOWN: usize = 16 << 10;
/// How much of each stream is read: more than is shown, so that a secret
/// cut at the end of what was read lies past what is shown.
const OUTPUT_READ: usize = 64 << 10;
/// The longest secret masked reliably at a cut (a URL is at most 4096
/// characters; percent-encoded, three times that).
const CUT_MARGIN: usize = 12 << 10;
/// How long the output is still read once the shell has exited.
const DRAIN: Duration = Duration::from_millis(300);

/// What the command did.
#[derive(Debug, Clone, Serialize)]
pub struct ExecReport {
    /// The command as given, secrets masked.
    pub command: String,
    /// Its exit code, when it exited by itself.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// It ran past `--exec-timeout` and was killed.
    pub timed_out: bool,
    #[serde(serialize_with = "ser_secs", rename = "took_s")]
    pub took: Duration,
    pub stdout: String,
    pub stderr: String,
    /// Some output is not shown (more than [`OUTPUT_SHOWN`] bytes).
    pub truncated: bool,
}

/// What was read of one stream.
#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    /// More came than was read.
    cut: bool,
}

async fn capture(mut r: impl AsyncRead + Unpin) -> Captured {
    let mut out = Captured::default();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => {
                let room = OUTPUT_READ - out.bytes.len();
                out.bytes.extend_from_slice(&buf[..n.min(room)]);
                if n > room {
                    out.cut = true;
                }
            }
        }
    }
}

/// The text shown of a stream: secrets masked first, then cut at a
/// character boundary (so that no cut leaves part of a secret).
fn shown(c: &Captured, secrets: &Secrets) -> (String, bool) {
    let mut bytes = c.bytes.as_slice();
    if c.cut {
        bytes = &bytes[..bytes.len().saturating_sub(CUT_MARGIN)];
    }
    let text = secrets.scrub(&String::from_utf8_lossy(bytes));
    if text.len() <= OUTPUT_SHOWN && !c.cut {
        return (text, false);
    }
    let mut end = OUTPUT_SHOWN.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (format!("{}\n[output cut]", &text[..end]), true)
}

/// Ends the command's process group (the shell and everything it
/// started), by the group id the shell was given.
async fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

/// How the command ended.
enum End {
    Exited(std::process::ExitStatus),
    TimedOut,
    Interrupted,
    Failed(std::io::Error),
}

/// Runs the plan's `--exec` command once.
pub async fn run(ctx: &ActionCtx<'_>) -> Result<ActionDone, ActionError> {
    let Action::Exec {
        command, timeout, ..
    } = &ctx.plan.action
    else {
        unreachable!("only exec comes here")
    };
    let shown_command = ctx.secrets.scrub(command);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .env("DBCANARY_DRILL_TARGET", &ctx.plan.store.name)
        .env("DBCANARY_DRILL_ENDPOINT", ctx.plan.store.url.endpoint())
        .env("DBCANARY_DRILL_NUMBER", ctx.number.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| {
        ActionError::new(
            FailureKind::Command,
            format!("cannot run sh -c {shown_command:?}: {e}"),
        )
    })?;
    let mut readers = JoinSet::new();
    let out = child.stdout.take().map(|s| readers.spawn(capture(s)).id());
    let err = child.stderr.take().map(|s| readers.spawn(capture(s)).id());
    let end = tokio::select! {
        r = child.wait() => match r {
            Ok(status) => End::Exited(status),
            Err(e) => End::Failed(e),
        },
        _ = tokio::time::sleep(*timeout) => End::TimedOut,
        _ = ctx.shutdown.cancelled() => End::Interrupted,
    };
    if !matches!(end, End::Exited(_)) {
        if let Some(pid) = child.id() {
            kill_group(pid).await;
        }
        let _ = child.kill().await;
    }
    let took = start.elapsed();
    let mut stdout = Captured::default();
    let mut stderr = Captured::default();
    let _ = tokio::time::timeout(DRAIN, async {
        while let Some(r) = readers.join_next_with_id().await {
            if let Ok((id, c)) = r {
                if Some(id) == out {
                    stdout = c;
                } else if Some(id) == err {
                    stderr = c;
                }
            }
        }
    })
    .await;
    let (stdout_text, cut_out) = shown(&stdout, ctx.secrets);
    let (stderr_text, cut_err) = shown(&stderr, ctx.secrets);
    let mut report = ExecReport {
        command: shown_command,
        exit_code: None,
        signal: None,
        timed_out: matches!(end, End::TimedOut),
        took,
        stdout: stdout_text,
        stderr: stderr_text,
        truncated: cut_out || cut_err,
    };
    let failure = match end {
        End::Exited(status) => {
            report.exit_code = status.code();
            report.signal = status.signal();
            if status.success() {
                None
            } else {
                Some((
                    FailureKind::Command,
                    match (status.code(), status.signal()) {
                        (Some(c), _) => format!("the command exited with status {c}"),
                        (None, Some(s)) => format!("the command was killed by signal {s}"),
                        _ => "the command failed".to_string(),
                    },
                ))
            }
        }
        End::TimedOut => Some((
            FailureKind::Timeout,
            format!(
                "the command did not finish within {} and was killed",
                humantime::format_duration(*timeout)
            ),
        )),
        End::Interrupted => Some((
            FailureKind::Interrupted,
            "interrupted (Ctrl-C): the command was killed".to_string(),
        )),
        End::Failed(e) => Some((
            FailureKind::Command,
            format!("waiting for the command: {e}"),
        )),
    };
    match failure {
        None => Ok(ActionDone {
            detail: "the command exited 0".to_string(),
            exec: Some(Box::new(report)),
        }),
        Some((kind, message)) => Err(ActionError {
            kind,
            message,
            exec: Some(Box::new(report)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_masked_before_it_is_cut() {
        let secrets = Secrets::of(
            &[],
            &[&crate::dburl::DbUrl::parse("redis://:plantedpw@h:1").unwrap()],
        );
        let mut bytes = b"password plantedpw ok\n".to_vec();
        let c = Captured {
            bytes: bytes.clone(),
            cut: false,
        };
        assert_eq!(
            shown(&c, &secrets),
            ("password *** ok\n".to_string(), false)
        );
        bytes.extend(std::iter::repeat_n(b'x', OUTPUT_READ - bytes.len() - 5));
        bytes.extend_from_slice(b"plant");
        let (text, cut) = shown(&Captured { bytes, cut: true }, &secrets);
        assert!(cut);
        assert!(text.starts_with("password *** ok\n"));
        assert!(text.ends_with("[output cut]"));
        assert!(!text.contains("plant"), "{text}");
        assert!(text.len() <= OUTPUT_SHOWN + 20);
    }
}
