//! Running a process for an action: output line by line (each line bounded, bytes
//! that are not UTF-8 replaced, never a reason to stop reading), and stopping it
//! as a protocol when its action is stopped: SIGTERM to its whole process group,
//! a grace measured on the runtime's clock, SIGKILL to whatever is left. What the
//! action left running after its own end is stopped the same way, so nothing
//! goes on writing the disk once the action is reported.

use crate::cleanup::{CleanupReport, record};
use rustix::process::{Pid, Signal, kill_process_group};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;
use tinker_core::clock::Clock;
use tinker_core::runtime::{ActionOutcome, CancelToken, OutputSink, Stream};
use tinker_core::{Error, Result};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// How many of the last output lines a failure's message carries.
const LAST_LINES: usize = 5;

/// The longest output line passed on; the rest of a longer line is cut and
/// counted, so an action printing without newlines holds at most this much.
pub(crate) const MAX_LINE: usize = 16 * 1024;

/// How often a stopping process group is checked for members still running.
const GROUP_POLL: Duration = Duration::from_millis(50);

/// How a running process is stopped: the action's stop signal, the grace, the
/// clock the grace is measured on, and where to say what was cleaned.
pub(crate) struct Supervision<'a> {
    /// Fires when the action must stop (cancelled or timed out).
    pub stop: &'a CancelToken,
    /// Between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Measures the grace.
    pub clock: &'a dyn Clock,
    /// Receives what was cleaned.
    pub cleanup: &'a Mutex<CleanupReport>,
}

/// Runs `cmd` to its outcome, in a process group of its own. Output lines go to
/// `out` as they come. When `sv.stop` fires, the group is stopped (see
/// [`terminate`]) and the outcome is a failure the caller replaces with the
/// reason it stopped the action.
pub(crate) async fn run(
    mut cmd: Command,
    what: &str,
    out: &dyn OutputSink,
    sv: &Supervision<'_>,
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
    // Killed with SIGKILL if this future is dropped before the group is
    // stopped (a runtime that gave up waiting, a panic).
    let mut group = GroupGuard {
        pgid: child.id(),
        cleanup: sv.cleanup,
    };
    let last = Mutex::new(Vec::new());
    let pump = pump(child.stdout.take(), child.stderr.take(), out, &last);
    tokio::pin!(pump);
    let mut pumped = false;
    let status = loop {
        tokio::select! {
            () = &mut pump, if !pumped => pumped = true,
            s = child.wait() => break Some(s),
            () = sv.stop.cancelled() => break None,
        }
    };
    let Some(status) = status else {
        terminate(group.pgid, &mut child, sv).await;
        group.pgid = None;
        return Ok(ActionOutcome::Failed {
            exit_code: None,
            message: "stopped".into(),
        });
    };
    // The action ended; anything it left running in its group is stopped too
    // (a container's end ends all its processes; a native action's must as well).
    if let Some(pgid) = group.pgid
        && !group_members(pgid).is_empty()
    {
        out.line(
            Stream::Stderr,
            &format!("{what}: stopping the processes it left running (process group {pgid})"),
        );
        tracing::warn!(
            action = what,
            pgid,
            "an action left processes running; stopping them"
        );
        terminate(Some(pgid), &mut child, sv).await;
    }
    group.pgid = None;
    if !pumped {
        // Output still open after the group is gone: held by a process that left
        // the group; wait no longer than the grace for it.
        tokio::select! {
            () = &mut pump => {}
            () = sv.clock.sleep(sv.grace) => {}
        }
    }
    let status = status.map_err(|e| Error::Remote {
        target: what.to_string(),
        reason: e.to_string(),
    })?;
    let last = std::mem::take(&mut *last.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(if status.success() {
        ActionOutcome::Success
    } else {
        ActionOutcome::Failed {
            exit_code: status.code(),
            message: last.join("\n"),
        }
    })
}

/// Stops process group `pgid` (whose leader is `child`): SIGTERM, then up to
/// the grace on the clock for every member to end, then SIGKILL for what is
/// left; records both in the report.
async fn terminate(pgid: Option<u32>, child: &mut tokio::process::Child, sv: &Supervision<'_>) {
    let Some(pgid) = pgid else { return };
    let Some(pid) = i32::try_from(pgid).ok().and_then(Pid::from_raw) else {
        return;
    };
    // ESRCH (the group already ended) is fine.
    let _ = kill_process_group(pid, Signal::TERM);
    record(sv.cleanup, |r| r.signalled.push(pgid));
    let in_grace = tokio::select! {
        () = group_gone(pgid, child, sv) => true,
        () = sv.clock.sleep(sv.grace) => false,
    };
    if !in_grace {
        let _ = kill_process_group(pid, Signal::KILL);
        record(sv.cleanup, |r| r.killed.push(pgid));
        // SIGKILL is delivered at once but takes effect when each process
        // next leaves the kernel: wait for the whole group to be gone, not
        // only the leader, so nothing of the action runs on when its end is
        // reported. Bounded: a process stuck in uninterruptible I/O is
        // reported by the caller's checks rather than waited for forever.
        tokio::select! {
            () = group_gone(pgid, child, sv) => {}
            () = sv.clock.sleep(KILL_WAIT) => {
                tracing::warn!(pgid, "processes of a killed action's group are still there");
            }
        }
    }
    tracing::info!(
        pgid,
        killed = !in_grace,
        "stopped an action's process group"
    );
}

/// How long to wait for a killed group's processes to disappear.
const KILL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Resolves when the leader has been reaped and no live member of the group
/// is left.
async fn group_gone(pgid: u32, child: &mut tokio::process::Child, sv: &Supervision<'_>) {
    let _ = child.wait().await;
    while !group_members(pgid).is_empty() {
        sv.clock.sleep(GROUP_POLL).await;
    }
}

/// The live (not zombie) processes of process group `pgid`, from `/proc`.
pub(crate) fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the command name (which may hold spaces and parentheses):
        // state, ppid, pgrp.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut f = rest.split_whitespace();
        let state = f.next()?;
        let _ppid = f.next()?;
        let pgrp: u32 = f.next()?.parse().ok()?;
        (pgrp == pgid && state != "Z" && state != "X").then_some(pid)
    })
    .collect()
}

/// Kills a process group with SIGKILL when dropped before it was stopped in
/// order (the future that ran it was dropped).
struct GroupGuard<'a> {
    pgid: Option<u32>,
    cleanup: &'a Mutex<CleanupReport>,
}

impl Drop for GroupGuard<'_> {
    fn drop(&mut self) {
        let Some(pgid) = self.pgid else { return };
        if let Some(pid) = i32::try_from(pgid).ok().and_then(Pid::from_raw)
            && kill_process_group(pid, Signal::KILL).is_ok()
        {
            record(self.cleanup, |r| r.killed.push(pgid));
            tracing::warn!(pgid, "killed an abandoned action's process group");
        }
    }
}

/// Forwards both output streams line by line until both end, keeping the last
/// few lines (a failure's message) in `last`.
async fn pump(
    stdout: Option<impl AsyncRead + Unpin>,
    stderr: Option<impl AsyncRead + Unpin>,
    out: &dyn OutputSink,
    last: &Mutex<Vec<String>>,
) {
    let emit = |stream: Stream, line: String| {
        out.line(stream, &line);
        remember(&mut last.lock().unwrap_or_else(|p| p.into_inner()), line);
    };
    tokio::join!(
        forward(stdout, Stream::Stdout, &emit),
        forward(stderr, Stream::Stderr, &emit)
    );
}

/// Reads one stream to its end, split into bounded lines.
async fn forward(
    reader: Option<impl AsyncRead + Unpin>,
    stream: Stream,
    emit: &(impl Fn(Stream, String) + Sync),
) {
    let Some(mut reader) = reader else { return };
    let mut lines = Lines::default();
    let mut buf = vec![0u8; 8192];
    // A read error ends the stream as its end would; bytes are never a reason.
    while let Ok(n) = reader.read(&mut buf).await
        && n > 0
    {
        lines.push(&buf[..n], |l| emit(stream, l));
    }
    lines.finish(|l| emit(stream, l));
}

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes (a longer line
/// is cut, with a marker saying how much was cut); bytes that are not UTF-8
/// become U+FFFD. Holds at most [`MAX_LINE`] bytes.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    buf: Vec<u8>,
    cut: usize,
}

impl Lines {
    /// Feeds `data`, emitting every line it completes.
    pub(crate) fn push(&mut self, mut data: &[u8], mut emit: impl FnMut(String)) {
        while !data.is_empty() {
            let (part, rest, complete) = match data.iter().position(|&b| b == b'\n') {
                Some(i) => (&data[..i], &data[i + 1..], true),
                None => (data, &data[data.len()..], false),
            };
            let room = MAX_LINE - self.buf.len();
            let keep = part.len().min(room);
            self.buf.extend_from_slice(&part[..keep]);
            self.cut += part.len() - keep;
            if complete {
                emit(self.take());
            }
            data = rest;
        }
    }

    /// The last line, if the stream did not end with a newline.
    pub(crate) fn finish(&mut self, mut emit: impl FnMut(String)) {
        if !self.buf.is_empty() || self.cut > 0 {
            emit(self.take());
        }
    }

    fn take(&mut self) -> String {
        if self.buf.last() == Some(&b'\r') && self.cut == 0 {
            self.buf.pop();
        }
        let mut line = String::from_utf8_lossy(&self.buf).into_owned();
        if self.cut > 0 {
            line.push_str(&format!(" [... {} more bytes cut]", self.cut));
        }
        self.buf.clear();
        self.cut = 0;
        line
    }
}

/// Keeps the last [`LAST_LINES`] lines.
pub(crate) fn remember(last: &mut Vec<String>, line: String) {
    last.push(line);
    if last.len() > LAST_LINES {
        last.remove(0);
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

#[cfg(test)]
mod tests {
    use super::*;
    use tinker_core::clock::SystemClock;
    use tinker_core::runtime::CollectOutput;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut l = Lines::default();
        let mut got = Vec::new();
        for c in chunks {
            l.push(c, |s| got.push(s));
        }
        l.finish(|s| got.push(s));
        got
    }

    #[test]
    fn lines_are_split_across_chunks_bounded_and_decoded_lossily() {
        assert_eq!(split(&[b"a\nb", b"c\r\n", b"d"]), ["a", "bc", "d"]);
        // A byte that is not UTF-8 is replaced, and the lines after it still come.
        assert_eq!(split(&[b"x\xffy\nnext\n"]), ["x\u{fffd}y", "next"]);
        // A line longer than the bound is cut once, with how much was cut.
        let long = vec![b'z'; MAX_LINE + 100];
        let got = split(&[&long, b"\nafter\n"]);
        assert_eq!(got.len(), 2);
        assert!(
            got[0].starts_with(&"z".repeat(MAX_LINE)),
            "{}",
            got[0].len()
        );
        assert!(
            got[0].ends_with(" [... 100 more bytes cut]"),
            "{}",
            &got[0][MAX_LINE..]
        );
        assert_eq!(got[1], "after");
    }

    #[tokio::test]
    async fn non_utf8_output_does_not_stop_the_reading() {
        // Before: a byte that is not UTF-8 closed the stream, and the action
        // then blocked on a full pipe. 200 KiB after the bad byte must all come.
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "printf 'bad \\377 byte\\n'; i=0; while [ $i -lt 2000 ]; do echo line-$i-0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789; i=$((i+1)); done",
        ]);
        let out = CollectOutput::default();
        let cleanup = Mutex::new(CleanupReport::default());
        let sv = Supervision {
            stop: &CancelToken::new(),
            grace: Duration::from_secs(5),
            clock: &SystemClock,
            cleanup: &cleanup,
        };
        let r = run(cmd, "test", &out, &sv).await.unwrap();
        assert_eq!(r, ActionOutcome::Success);
        let lines = out.0.lock().unwrap();
        assert_eq!(lines[0].1, "bad \u{fffd} byte");
        assert_eq!(lines.len(), 2001);
        assert!(lines[2000].1.starts_with("line-1999-"));
    }
}
