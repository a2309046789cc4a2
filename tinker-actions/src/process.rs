//! Running a process for an action: output line by line, a time limit, and
//! cancellation, killing the whole process group when either ends it.

use std::process::Stdio;
use std::time::Duration;
use tinker_core::clock::Clock;
use tinker_core::runtime::{ActionOutcome, CancelToken, OutputSink, Stream};
use tinker_core::{Error, Result};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

/// How many of the last output lines a failure's message carries.
const LAST_LINES: usize = 5;

/// Why a process was stopped before it ended by itself.
enum Stopped {
    Timeout,
    Cancelled,
}

/// Runs `cmd` to its outcome. Output lines go to `out` as they come; the time
/// limit is measured on `clock`.
pub(crate) async fn run(
    mut cmd: Command,
    what: &str,
    out: &dyn OutputSink,
    timeout: Option<Duration>,
    cancel: &CancelToken,
    clock: &dyn Clock,
) -> Result<ActionOutcome> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| Error::Remote {
        target: what.to_string(),
        reason: format!("cannot start: {e}"),
    })?;
    let pid = child.id();
    let pump = pump(child.stdout.take(), child.stderr.take(), out);
    let limit = async {
        match timeout {
            Some(t) => clock.sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        last = pump => Ok((last, child.wait().await)),
        _ = limit => Err(Stopped::Timeout),
        _ = cancel.cancelled() => Err(Stopped::Cancelled),
    };
    match result {
        Ok((last_lines, status)) => {
            let status = status.map_err(|e| Error::Remote {
                target: what.to_string(),
                reason: e.to_string(),
            })?;
            if status.success() {
                Ok(ActionOutcome::Success)
            } else {
                Ok(ActionOutcome::Failed {
                    exit_code: status.code(),
                    message: last_lines.join("\n"),
                })
            }
        }
        Err(why) => {
            kill_group(pid).await;
            let _ = child.kill().await;
            Ok(match why {
                Stopped::Timeout => ActionOutcome::Timeout {
                    message: format!("stopped after {} s", timeout.unwrap_or_default().as_secs()),
                },
                Stopped::Cancelled => ActionOutcome::Failed {
                    exit_code: None,
                    message: "cancelled".into(),
                },
            })
        }
    }
}

/// Forwards both output streams line by line until both end; returns the last
/// few lines (a failure's message).
async fn pump(
    stdout: Option<impl AsyncRead + Unpin>,
    stderr: Option<impl AsyncRead + Unpin>,
    out: &dyn OutputSink,
) -> Vec<String> {
    let mut o = stdout.map(|s| BufReader::new(s).lines());
    let mut e = stderr.map(|s| BufReader::new(s).lines());
    let mut last = Vec::new();
    while o.is_some() || e.is_some() {
        tokio::select! {
            line = async { match o.as_mut() { Some(l) => l.next_line().await, None => std::future::pending().await } } => match line {
                Ok(Some(l)) => { out.line(Stream::Stdout, &l); remember(&mut last, l); }
                _ => o = None,
            },
            line = async { match e.as_mut() { Some(l) => l.next_line().await, None => std::future::pending().await } } => match line {
                Ok(Some(l)) => { out.line(Stream::Stderr, &l); remember(&mut last, l); }
                _ => e = None,
            },
        }
    }
    last
}

/// Keeps the last [`LAST_LINES`] lines.
pub(crate) fn remember(last: &mut Vec<String>, line: String) {
    last.push(line);
    if last.len() > LAST_LINES {
        last.remove(0);
    }
}

/// Kills the process group the action started in (its children too).
pub(crate) async fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .output()
            .await;
    }
}

/// Runs a helper command (mount, umount, kexec -l) and returns its error text.
pub(crate) async fn helper(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| Error::Remote {
            target: program.into(),
            reason: format!("cannot start: {e}"),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Remote {
            target: format!("{program} {}", args.join(" ")),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}
