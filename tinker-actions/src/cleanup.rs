//! [`CleanupReport`]: what stopping an action took. A cancelled or timed-out
//! action is stopped as a protocol, not dropped: its process group gets SIGTERM,
//! a grace on the runtime's clock, then SIGKILL; its container is stopped the
//! same way and removed; what it mounted is unmounted. The report says which of
//! these happened, is logged through `tracing`, and goes into the action's final
//! message, so an operator sees that nothing was left running on the disk.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use tinker_core::runtime::{ActionOutcome, ActionSpec, OutputSink, Stream};

/// The grace a stopped action gets between SIGTERM and SIGKILL unless the
/// runtime is told otherwise (`with_grace`); Docker's own default for `stop`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// What was cleaned up after an action was stopped (or after it ended and left
/// something behind).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CleanupReport {
    /// The grace between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Process groups sent SIGTERM (by id).
    pub signalled: Vec<u32>,
    /// Process groups with a member still running after the grace, then
    /// killed with SIGKILL.
    pub killed: Vec<u32>,
    /// Containers stopped (SIGTERM, then SIGKILL after the grace), by id.
    pub containers_stopped: Vec<String>,
    /// Containers still running after the grace, then killed with SIGKILL.
    pub containers_killed: Vec<String>,
    /// Containers removed, by id.
    pub containers_removed: Vec<String>,
    /// Mount points unmounted.
    pub unmounted: Vec<PathBuf>,
    /// What could not be cleaned, and why.
    pub failures: Vec<String>,
}

impl CleanupReport {
    /// An empty report for a runtime whose grace is `grace`.
    pub fn new(grace: Duration) -> Self {
        CleanupReport {
            grace,
            ..Default::default()
        }
    }

    /// Whether nothing needed cleaning.
    pub fn is_empty(&self) -> bool {
        self.signalled.is_empty()
            && self.killed.is_empty()
            && self.containers_stopped.is_empty()
            && self.containers_killed.is_empty()
            && self.containers_removed.is_empty()
            && self.unmounted.is_empty()
            && self.failures.is_empty()
    }
}

impl fmt::Display for CleanupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("cleanup: nothing was left to clean");
        }
        let mut parts = Vec::new();
        for g in &self.signalled {
            if self.killed.contains(g) {
                parts.push(format!(
                    "process group {g} got SIGTERM, outlived the {} s grace and was killed (SIGKILL)",
                    self.grace.as_secs_f32()
                ));
            } else {
                parts.push(format!("process group {g} ended on SIGTERM"));
            }
        }
        for g in self.killed.iter().filter(|g| !self.signalled.contains(g)) {
            parts.push(format!("process group {g} killed (SIGKILL)"));
        }
        for c in &self.containers_stopped {
            if self.containers_killed.contains(c) {
                parts.push(format!(
                    "container {} got SIGTERM, outlived the {} s grace and was killed (SIGKILL)",
                    short(c),
                    self.grace.as_secs_f32()
                ));
            } else {
                parts.push(format!("container {} ended on SIGTERM", short(c)));
            }
        }
        for c in &self.containers_removed {
            parts.push(format!("container {} removed", short(c)));
        }
        for m in &self.unmounted {
            parts.push(format!("unmounted {}", m.display()));
        }
        for e in &self.failures {
            parts.push(format!("NOT cleaned: {e}"));
        }
        write!(f, "cleanup: {}", parts.join("; "))
    }
}

/// Why a runtime stopped an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// Its time limit passed.
    Timeout,
    /// The agent cancelled it (the control plane no longer wants it).
    Cancelled,
}

/// The outcome of an action a runtime stopped, with what stopping it cleaned;
/// the report is logged and shown in the action's output too.
pub(crate) fn stopped(
    spec: &ActionSpec,
    out: &dyn OutputSink,
    why: StopReason,
    report: &CleanupReport,
) -> ActionOutcome {
    tracing::warn!(
        workflow = %spec.workflow,
        action = %spec.name,
        reason = ?why,
        cleanup = %report,
        "stopped an action"
    );
    out.line(Stream::Stderr, &report.to_string());
    match why {
        StopReason::Timeout => ActionOutcome::Timeout {
            message: format!(
                "stopped after {} s; {report}",
                spec.timeout.unwrap_or_default().as_secs()
            ),
        },
        StopReason::Cancelled => ActionOutcome::Failed {
            exit_code: None,
            message: format!("cancelled; {report}"),
        },
    }
}

/// A container id as `docker ps` shows it.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Adds to a report shared between an action and its guards (never held
/// across an `.await`); a poisoned lock still records.
pub(crate) fn record(report: &std::sync::Mutex<CleanupReport>, f: impl FnOnce(&mut CleanupReport)) {
    let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut r);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_says_what_was_cleaned() {
        let mut r = CleanupReport::new(Duration::from_secs(2));
        assert_eq!(r.to_string(), "cleanup: nothing was left to clean");
        r.signalled = vec![10, 20];
        r.killed = vec![20];
        r.containers_removed = vec!["0123456789abcdef".into()];
        r.unmounted = vec!["/tmp/m".into()];
        r.failures = vec!["umount /tmp/x: busy".into()];
        assert_eq!(
            r.to_string(),
            "cleanup: process group 10 ended on SIGTERM; process group 20 got SIGTERM, outlived \
             the 2 s grace and was killed (SIGKILL); container 0123456789ab removed; unmounted \
             /tmp/m; NOT cleaned: umount /tmp/x: busy"
        );
    }
}
