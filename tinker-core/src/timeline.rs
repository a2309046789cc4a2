//! Where the time went: a workflow's run as a bar per step on a time axis
//! (netboot on, power-on, DHCP, TFTP, iPXE script, in-memory OS, each action,
//! netboot off, disk boot, metadata), read from the workflow's status and the
//! machine's event log. The status page draws it; this module decides it.
//!
//! Pure: the workflow, the machine's events and `now` in, a [`Timeline`] out.
//! Steps the event log holds no record of are [`Outcome::NotRecorded`], never
//! guessed.
//!
//! ```
//! use tinker_core::timeline::{timeline, Outcome, Step};
//! use tinker_core::model::Workflow;
//! use tinker_core::store::{EventKind, EventSource, MachineEvent};
//!
//! let mut wf = Workflow::new("wf", "tpl", "m1", "02:00:00:00:97:01".parse().unwrap());
//! wf.status = Some(serde_json::from_str(r#"{"state": "RUNNING", "tasks": [{"name": "os",
//!     "agentID": "", "actions": [{"id": "", "name": "stream", "image": "x", "state": "RUNNING",
//!     "attempt": 1, "executionStart": "2026-01-01T00:00:30Z"}]}]}"#).unwrap());
//! let t0: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
//! let events = [MachineEvent::new(t0, "default/m1", EventSource::Engine, EventKind::Rendered { actions: 1 })
//!     .for_workflow("default/wf")];
//! let now = t0 + jiff::SignedDuration::from_secs(40);
//! let t = timeline(&wf, &events, now);
//! let stream = t.spans.iter().find(|s| matches!(&s.step, Step::Action { name, .. } if name == "stream")).unwrap();
//! assert_eq!(stream.outcome, Outcome::Running);
//! assert_eq!(t.spans[t.stopped_at.unwrap()].step, stream.step);
//! ```

use crate::model::{MachinePhase, MachineStep, Workflow};
use crate::state::{ActionState, WorkflowState};
use crate::store::{EventKind, EventSource, MachineEvent};
use jiff::Timestamp;
use serde::Serialize;

/// One step of a machine's way from a new workflow to its installed OS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "step",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum Step {
    /// The engine enables netboot and asks the BMC for a PXE boot.
    NetbootOn,
    /// The BMC powers the machine on (or an operator does, without one).
    PowerOn,
    /// The machine's firmware and iPXE ask for an address and a boot file.
    Dhcp,
    /// The firmware loads iPXE over TFTP.
    Tftp,
    /// iPXE fetches its script.
    IpxeScript,
    /// The in-memory OS boots, until its worker's first call claims an action.
    InMemoryOs,
    /// One action of the workflow.
    Action {
        /// Its position among all the workflow's actions.
        index: usize,
        /// Its name.
        name: String,
    },
    /// After success: netboot is turned off.
    NetbootOff,
    /// After success: the disk becomes the boot device and the machine reboots.
    DiskBoot,
    /// After failure: the template's failure power policy.
    FailurePower,
    /// The installed OS reads its metadata.
    Metadata,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::NetbootOn => f.write_str("netboot on"),
            Step::PowerOn => f.write_str("power-on"),
            Step::Dhcp => f.write_str("DHCP"),
            Step::Tftp => f.write_str("TFTP"),
            Step::IpxeScript => f.write_str("iPXE script"),
            Step::InMemoryOs => f.write_str("in-memory OS"),
            Step::Action { name, .. } => write!(f, "action {name}"),
            Step::NetbootOff => f.write_str("netboot off"),
            Step::DiskBoot => f.write_str("disk boot"),
            Step::FailurePower => f.write_str("failure power"),
            Step::Metadata => f.write_str("metadata read"),
        }
    }
}

/// How a [`Step`] went, as far as the status and the event log tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum Outcome {
    /// Not reached (yet).
    Pending,
    /// Under way.
    Running,
    /// Done.
    Done,
    /// Not needed here (no BMC: an operator powers the machine).
    Skipped,
    /// Failed (or ran out of time).
    Failed,
    /// The machine went past it, but nothing records it in the event log.
    NotRecorded,
}

/// One bar of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    /// The step.
    #[serde(flatten)]
    pub step: Step,
    /// The step, for people.
    pub label: String,
    /// When it began, if known.
    pub start: Option<Timestamp>,
    /// When it ended; `None` while it runs or when unknown.
    pub end: Option<Timestamp>,
    /// How it went.
    pub outcome: Outcome,
    /// Attempts made (an engine step's failures plus one, an action's claims).
    pub attempts: u32,
    /// What the status or the log says about it (an error, an action's message).
    pub detail: Option<String>,
}

/// A workflow's run, step by step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    /// The workflow, `namespace/name`.
    pub workflow: String,
    /// The machine whose event log was read, `namespace/name`.
    pub machine: String,
    /// The event logs that hold the workflow's action output: the machine's,
    /// and its workers' (the worker API logs output under the worker's id).
    pub logs: Vec<String>,
    /// The workflow's state; `None` before the engine rendered it.
    pub state: Option<WorkflowState>,
    /// Why it failed, when it did.
    pub reason: Option<String>,
    /// When the run began (the engine rendered the workflow).
    pub start: Option<Timestamp>,
    /// The time of the question: where a running bar ends.
    pub now: Timestamp,
    /// The steps, in the order a machine goes through them.
    pub spans: Vec<Span>,
    /// The span where the run stopped (failed) or is now; `None` once it ended well.
    pub stopped_at: Option<usize>,
}

/// The machine a workflow's events are logged under: its Hardware's
/// `namespace/name`.
pub fn machine_of(workflow: &Workflow) -> String {
    format!(
        "{}/{}",
        workflow.metadata.namespace(),
        workflow.spec.hardware_ref
    )
}

/// The event logs where `workflow`'s action output is kept: `machine`'s, then
/// each of its tasks' workers' (by the worker's id, as the worker API logs
/// it), each once.
pub fn output_logs(workflow: &Workflow, machine: &str) -> Vec<String> {
    let mut logs = vec![machine.to_string()];
    let workers = workflow
        .status
        .iter()
        .flat_map(|s| &s.tasks)
        .map(|t| t.agent_id.as_str());
    for w in workers {
        if !w.is_empty() && !logs.iter().any(|l| l == w) {
            logs.push(w.to_string());
        }
    }
    logs
}

/// The timeline of `workflow` at `now`, from the machine's `events` (any order;
/// events from before the workflow was rendered do not count).
pub fn timeline(workflow: &Workflow, events: &[MachineEvent], now: Timestamp) -> Timeline {
    let key = format!(
        "{}/{}",
        workflow.metadata.namespace(),
        workflow.metadata.name
    );
    let start = crate::diagnose::created_at(workflow, &key, events);
    let mut events: Vec<&MachineEvent> = events
        .iter()
        .filter(|e| start.is_none_or(|s| e.at >= s))
        // An engine event about another workflow of the same machine is not ours.
        .filter(|e| e.workflow.as_deref().is_none_or(|w| w == key))
        .collect();
    events.sort_by_key(|e| (e.at, e.seq));
    let status = workflow.status.as_ref();
    let phase = status.map(|s| s.machine.phase);
    let gave_up = status.and_then(|s| s.machine.gave_up.as_ref());
    let no_bmc = status.is_some_and(|s| s.machine.no_bmc);
    let mut spans = Vec::new();

    // The engine's steps: each ends with its StepDone (or StepSkippedNoBmc).
    let engine_span = |step: Step, steps: &[MachineStep], from: Option<Timestamp>| {
        let ours = |s: &MachineStep| steps.contains(s);
        let failures: Vec<&MachineEvent> = events
            .iter()
            .copied()
            .filter(|e| matches!(&e.kind, EventKind::StepFailed { step, .. } if ours(step)))
            .collect();
        let finished: Vec<(Timestamp, bool)> = events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::StepDone { step } if ours(step) => Some((e.at, false)),
                EventKind::StepSkippedNoBmc { step } if ours(step) => Some((e.at, true)),
                // The controller cannot do it (Wake-on-LAN): skipped, not pending.
                EventKind::StepSkippedUnsupported { step, .. } if ours(step) => Some((e.at, true)),
                _ => None,
            })
            .collect();
        // Skipped only when every one of its steps was (netboot is turned on
        // without a BMC too).
        let done = finished
            .last()
            .map(|(at, _)| (*at, finished.iter().all(|(_, skipped)| *skipped)));
        let given_up = gave_up.filter(|g| ours(&g.step));
        let last_step = *steps.last().expect("a step");
        let (outcome, end) = match (done, given_up) {
            (_, Some(_)) => (Outcome::Failed, failures.last().map(|e| e.at)),
            (Some((at, true)), _) => (Outcome::Skipped, Some(at)),
            (Some((at, false)), _) => (Outcome::Done, Some(at)),
            // Without a BMC the engine moves past its BMC steps without a word.
            (None, None)
                if phase.is_some_and(|p| past(p, last_step)) && no_bmc && needs_bmc(last_step) =>
            {
                (Outcome::Skipped, None)
            }
            (None, None) if phase.is_some_and(|p| past(p, last_step)) => {
                (Outcome::NotRecorded, None)
            }
            (None, None) if !failures.is_empty() => (Outcome::Running, None),
            (None, None) => (Outcome::Pending, None),
        };
        let detail = given_up.map(|g| g.to_string()).or_else(|| {
            failures.last().and_then(|e| match &e.kind {
                EventKind::StepFailed { error, .. } => Some(error.clone()),
                _ => None,
            })
        });
        let unsupported = events.iter().rev().find_map(|e| match &e.kind {
            EventKind::StepSkippedUnsupported { step, reason } if ours(step) => {
                Some(reason.clone())
            }
            _ => None,
        });
        let detail = match (outcome, detail) {
            (Outcome::Skipped, None) => {
                unsupported.or_else(|| Some("no BMC: done by hand".to_string()))
            }
            (_, d) => d,
        };
        let began = failures.first().map(|e| e.at).or(from);
        Span {
            label: step.to_string(),
            step,
            // A step with no record of its own has no bar to draw.
            start: if end.is_none() && failures.is_empty() {
                None
            } else {
                began
            },
            end,
            outcome,
            attempts: u32::try_from(failures.len()).unwrap_or(u32::MAX) + 1,
            detail,
        }
    };

    let netboot = engine_span(
        Step::NetbootOn,
        &[MachineStep::EnableNetboot, MachineStep::SetPxeBoot],
        start,
    );
    let prepared = netboot.end.or(netboot.start);
    spans.push(netboot);
    let power = engine_span(Step::PowerOn, &[MachineStep::PowerCycle], prepared);
    spans.push(power);

    // The boot: what the DHCP, HTTP and worker services saw.
    let actions: Vec<_> = status
        .map(|s| s.actions().map(|(_, a)| a).collect())
        .unwrap_or_default();
    let first_claim = actions.iter().filter_map(|a| a.execution_start).min();
    let script = events
        .iter()
        .find(|e| matches!(e.kind, EventKind::IpxeScriptServed { .. }))
        .map(|e| e.at);
    // DHCP before the script (the firmware's and iPXE's); the in-memory OS asks
    // again later, which belongs to its own boot.
    let booted_by = script.or(first_claim);
    let dhcp: Vec<&MachineEvent> = events
        .iter()
        .copied()
        .filter(|e| {
            e.source == EventSource::Dhcp && matches!(e.kind, EventKind::BootDecision { .. })
        })
        .filter(|e| booted_by.is_none_or(|b| e.at <= b))
        .collect();
    let later = script.is_some() || first_claim.is_some();
    // A file sent over TFTP: the machine is past DHCP too.
    let loading = events.iter().any(|e| {
        e.source == EventSource::Tftp
            && matches!(e.kind, EventKind::TftpTransfer { .. })
            && booted_by.is_none_or(|b| e.at <= b)
    });
    let dhcp_over = later || loading;
    spans.push(match (dhcp.first(), dhcp.last()) {
        (Some(first), Some(last)) => Span {
            step: Step::Dhcp,
            label: Step::Dhcp.to_string(),
            start: Some(first.at),
            end: dhcp_over.then_some(last.at),
            outcome: if dhcp_over {
                Outcome::Done
            } else {
                Outcome::Running
            },
            attempts: u32::try_from(dhcp.len()).unwrap_or(u32::MAX),
            detail: match &last.kind {
                EventKind::BootDecision { decision } => Some(decision.clone()),
                _ => None,
            },
        },
        _ => point(Step::Dhcp, None, dhcp_over),
    });
    spans.push(tftp_span(&events, booted_by, later));
    spans.push(point(Step::IpxeScript, script, first_claim.is_some()));
    let os_from = script.or(dhcp.last().map(|e| e.at));
    spans.push(Span {
        step: Step::InMemoryOs,
        label: Step::InMemoryOs.to_string(),
        start: os_from,
        end: first_claim,
        outcome: match (first_claim, os_from) {
            (Some(_), _) => Outcome::Done,
            (None, Some(_)) => Outcome::Running,
            (None, None) => Outcome::Pending,
        },
        attempts: 1,
        detail: None,
    });

    for (index, a) in actions.iter().enumerate() {
        let step = Step::Action {
            index,
            name: a.name.clone(),
        };
        spans.push(Span {
            label: step.to_string(),
            step,
            start: a.execution_start,
            end: a.execution_stop,
            outcome: match a.state {
                ActionState::Pending => Outcome::Pending,
                ActionState::Running => Outcome::Running,
                ActionState::Success => Outcome::Done,
                ActionState::Failed | ActionState::Timeout => Outcome::Failed,
            },
            attempts: a.attempt,
            detail: a.message.clone(),
        });
    }

    let state = status.map(|s| s.state);
    let last_stop = actions.iter().filter_map(|a| a.execution_stop).max();
    if state == Some(WorkflowState::Failed) || state == Some(WorkflowState::Timeout) {
        if phase == Some(MachinePhase::FailurePowerApplied) || gave_up.is_some() {
            spans.push(engine_span(
                Step::FailurePower,
                &[MachineStep::FailurePower, MachineStep::PowerOff],
                last_stop,
            ));
        }
    } else {
        let off = engine_span(Step::NetbootOff, &[MachineStep::DisableNetboot], last_stop);
        let off_end = off.end.or(last_stop);
        spans.push(off);
        let disk = engine_span(
            Step::DiskBoot,
            &[MachineStep::SetDiskBoot, MachineStep::Reboot],
            off_end,
        );
        // The installed OS's first read once the actions are over (the
        // in-memory OS reads `/metadata` too, for rootio: that is an action's).
        // Not only after the reboot is recorded: a fast machine may ask before
        // the BMC's answer to the reboot is in.
        let read = off_end.and_then(|b| {
            events
                .iter()
                .find(|e| e.at >= b && matches!(e.kind, EventKind::MetadataServed { .. }))
        });
        spans.push(disk);
        let rebooted = phase == Some(MachinePhase::Rebooted);
        let mut metadata = point(Step::Metadata, read.map(|e| e.at), rebooted);
        metadata.detail = read.and_then(|e| match &e.kind {
            EventKind::MetadataServed { path } => Some(format!("first read: {path}")),
            _ => None,
        });
        spans.push(metadata);
    }

    // Where it failed; else, while it runs, the first step not yet done.
    let stopped_at = spans
        .iter()
        .position(|s| s.outcome == Outcome::Failed)
        .or_else(|| {
            if state.is_some_and(|s| s.is_terminal()) {
                return None;
            }
            spans
                .iter()
                .position(|s| matches!(s.outcome, Outcome::Running | Outcome::Pending))
        });
    Timeline {
        workflow: key,
        machine: machine_of(workflow),
        logs: output_logs(workflow, &machine_of(workflow)),
        state,
        reason: status.and_then(|s| s.reason.clone()),
        start,
        now,
        spans,
        stopped_at,
    }
}

/// The firmware loading iPXE: the TFTP server's transfers to the machine
/// before it booted on (`booted_by`); `later` when it went past this step.
fn tftp_span(events: &[&MachineEvent], booted_by: Option<Timestamp>, later: bool) -> Span {
    let transfers: Vec<(&MachineEvent, u64, bool)> = events
        .iter()
        .copied()
        .filter(|e| booted_by.is_none_or(|b| e.at <= b))
        .filter_map(|e| match &e.kind {
            EventKind::TftpTransfer { millis, failed, .. } if e.source == EventSource::Tftp => {
                Some((e, *millis, failed.is_some()))
            }
            _ => None,
        })
        .collect();
    let Some((first, first_millis, _)) = transfers.first() else {
        return point(Step::Tftp, None, later);
    };
    let sent = transfers.iter().rev().find(|(_, _, failed)| !failed);
    let last = transfers.last().expect("one at least");
    // A firmware often abandons its first transfer once it has learnt the
    // size (tsize), and tries again: a transfer abandoned is not the step's
    // failure while the machine may still ask.
    let (outcome, end) = match (sent, later) {
        (Some((e, _, _)), _) => (Outcome::Done, Some(e.at)),
        (None, true) => (Outcome::NotRecorded, Some(last.0.at)),
        (None, false) => (Outcome::Running, None),
    };
    Span {
        step: Step::Tftp,
        label: Step::Tftp.to_string(),
        // An event is written when its transfer ended: it began `millis` before.
        start: Some(
            first.at - jiff::SignedDuration::from_millis(i64::try_from(*first_millis).unwrap_or(0)),
        ),
        end,
        outcome,
        attempts: u32::try_from(transfers.len()).unwrap_or(u32::MAX),
        detail: Some(sent.unwrap_or(last).0.kind.to_string()),
    }
}

/// A step seen at one instant (`at`), or, unseen, one the machine went past
/// (`passed`) or has yet to reach.
fn point(step: Step, at: Option<Timestamp>, passed: bool) -> Span {
    let outcome = match (at, passed) {
        (Some(_), _) => Outcome::Done,
        (None, true) => Outcome::NotRecorded,
        (None, false) => Outcome::Pending,
    };
    Span {
        label: step.to_string(),
        step,
        start: at,
        end: at,
        outcome,
        attempts: u32::from(at.is_some()),
        detail: None,
    }
}

/// Whether `step` is a BMC's (skipped for a machine without one).
fn needs_bmc(step: MachineStep) -> bool {
    matches!(
        step,
        MachineStep::SetPxeBoot
            | MachineStep::PowerCycle
            | MachineStep::SetDiskBoot
            | MachineStep::Reboot
            | MachineStep::FailurePower
            | MachineStep::PowerOff
    )
}

/// Whether a machine in `phase` is past `step` (it was done, or skipped).
fn past(phase: MachinePhase, step: MachineStep) -> bool {
    let rank = |p: MachinePhase| match p {
        MachinePhase::Preparing => 0,
        MachinePhase::NetbootEnabled => 1,
        MachinePhase::PxeBootSet => 2,
        MachinePhase::Ready => 3,
        MachinePhase::NetbootDisabled => 4,
        MachinePhase::DiskBootSet => 5,
        MachinePhase::Rebooted => 6,
        MachinePhase::FailurePowerApplied => 7,
    };
    let needed = match step {
        MachineStep::EnableNetboot => 1,
        MachineStep::SetPxeBoot => 2,
        MachineStep::PowerCycle => 3,
        MachineStep::DisableNetboot => 4,
        MachineStep::SetDiskBoot => 5,
        MachineStep::Reboot => 6,
        MachineStep::FailurePower | MachineStep::PowerOff => 7,
    };
    rank(phase) >= needed
        && !(phase == MachinePhase::FailurePowerApplied && needed > 3 && needed < 7)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GaveUp, MachineSteps, WorkflowStatus};

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn engine(at: i64, kind: EventKind) -> MachineEvent {
        MachineEvent::new(t(at), "default/m1", EventSource::Engine, kind).for_workflow("default/wf")
    }

    fn done(at: i64, step: MachineStep) -> MachineEvent {
        engine(at, EventKind::StepDone { step })
    }

    fn dhcp(at: i64) -> MachineEvent {
        MachineEvent::new(
            t(at),
            "default/m1",
            EventSource::Dhcp,
            EventKind::BootDecision {
                decision: "iPXE script".into(),
            },
        )
    }

    fn script(at: i64) -> MachineEvent {
        MachineEvent::new(
            t(at),
            "default/m1",
            EventSource::Http,
            EventKind::IpxeScriptServed {
                mac: "02:00:00:00:97:01".parse().unwrap(),
            },
        )
    }

    /// How an action ran: (name, state, attempt, start, stop).
    type Ran<'a> = (&'a str, ActionState, u32, Option<i64>, Option<i64>);

    /// A workflow in `state` whose actions ran as given.
    fn workflow(state: WorkflowState, phase: MachinePhase, actions: &[Ran<'_>]) -> Workflow {
        let mut wf = Workflow::new("wf", "tpl", "m1", "02:00:00:00:97:01".parse().unwrap());
        let actions: Vec<serde_json::Value> = actions
            .iter()
            .map(|(name, state, attempt, start, stop)| {
                serde_json::json!({
                    "id": "", "name": name, "image": "x", "state": state, "attempt": attempt,
                    "executionStart": start.map(t), "executionStop": stop.map(t),
                    "message": (*state == ActionState::Failed).then_some("exit code 3"),
                })
            })
            .collect();
        let mut status: WorkflowStatus = serde_json::from_value(serde_json::json!({
            "state": state,
            "tasks": [{"name": "os", "agentID": "02:00:00:00:97:01", "actions": actions}],
        }))
        .unwrap();
        status.machine = MachineSteps {
            phase,
            ..Default::default()
        };
        wf.status = Some(status);
        wf
    }

    fn span<'a>(t: &'a Timeline, step: &Step) -> &'a Span {
        t.spans.iter().find(|s| &s.step == step).unwrap()
    }

    fn action(index: usize, name: &str) -> Step {
        Step::Action {
            index,
            name: name.into(),
        }
    }

    #[test]
    fn a_successful_run_has_a_bar_per_step_in_order() {
        let wf = workflow(
            WorkflowState::Success,
            MachinePhase::Rebooted,
            &[
                ("stream", ActionState::Success, 1, Some(20), Some(50)),
                ("kexec", ActionState::Success, 1, Some(51), Some(52)),
            ],
        );
        let events = [
            engine(0, EventKind::Rendered { actions: 2 }),
            done(1, MachineStep::EnableNetboot),
            done(2, MachineStep::SetPxeBoot),
            done(4, MachineStep::PowerCycle),
            dhcp(8),
            dhcp(10),
            script(11),
            dhcp(15), // the in-memory OS's own request: not the boot's DHCP
            done(53, MachineStep::DisableNetboot),
            done(54, MachineStep::SetDiskBoot),
            done(57, MachineStep::Reboot),
        ];
        let tl = timeline(&wf, &events, t(60));
        let steps: Vec<&Step> = tl.spans.iter().map(|s| &s.step).collect();
        assert_eq!(
            steps,
            [
                &Step::NetbootOn,
                &Step::PowerOn,
                &Step::Dhcp,
                &Step::Tftp,
                &Step::IpxeScript,
                &Step::InMemoryOs,
                &action(0, "stream"),
                &action(1, "kexec"),
                &Step::NetbootOff,
                &Step::DiskBoot,
                &Step::Metadata,
            ]
        );
        let at = |s: &Span| (s.start, s.end, s.outcome);
        assert_eq!(tl.start, Some(t(0)));
        assert_eq!(
            at(span(&tl, &Step::NetbootOn)),
            (Some(t(0)), Some(t(2)), Outcome::Done)
        );
        assert_eq!(
            at(span(&tl, &Step::PowerOn)),
            (Some(t(2)), Some(t(4)), Outcome::Done)
        );
        assert_eq!(
            at(span(&tl, &Step::Dhcp)),
            (Some(t(8)), Some(t(10)), Outcome::Done)
        );
        assert_eq!(span(&tl, &Step::Dhcp).attempts, 2);
        assert_eq!(
            at(span(&tl, &Step::Tftp)),
            (None, None, Outcome::NotRecorded)
        );
        assert_eq!(
            at(span(&tl, &Step::IpxeScript)),
            (Some(t(11)), Some(t(11)), Outcome::Done)
        );
        assert_eq!(
            at(span(&tl, &Step::InMemoryOs)),
            (Some(t(11)), Some(t(20)), Outcome::Done)
        );
        assert_eq!(
            at(span(&tl, &action(0, "stream"))),
            (Some(t(20)), Some(t(50)), Outcome::Done)
        );
        assert_eq!(
            at(span(&tl, &Step::NetbootOff)),
            (Some(t(52)), Some(t(53)), Outcome::Done)
        );
        assert_eq!(
            at(span(&tl, &Step::DiskBoot)),
            (Some(t(53)), Some(t(57)), Outcome::Done)
        );
        assert_eq!(
            at(span(&tl, &Step::Metadata)),
            (None, None, Outcome::NotRecorded)
        );
        assert_eq!(tl.stopped_at, None);
        assert_eq!(tl.machine, "default/m1");
        // The worker logs output under its own id.
        assert_eq!(tl.logs, ["default/m1", "02:00:00:00:97:01"]);
    }

    fn metadata(at: i64, path: &str) -> MachineEvent {
        MachineEvent::new(
            t(at),
            "default/m1",
            EventSource::Http,
            EventKind::MetadataServed { path: path.into() },
        )
    }

    #[test]
    fn the_installed_os_reading_its_metadata_fills_the_metadata_step() {
        let wf = workflow(
            WorkflowState::Success,
            MachinePhase::Rebooted,
            &[("rootio", ActionState::Success, 1, Some(20), Some(50))],
        );
        let mut events = vec![
            engine(0, EventKind::Rendered { actions: 1 }),
            // rootio reads /metadata from the in-memory OS: not this step.
            metadata(30, "/metadata"),
            done(53, MachineStep::DisableNetboot),
            done(54, MachineStep::SetDiskBoot),
            done(57, MachineStep::Reboot),
        ];
        let before = timeline(&wf, &events, t(90));
        assert_eq!(span(&before, &Step::Metadata).outcome, Outcome::NotRecorded);
        events.push(metadata(80, "/2009-04-04/meta-data/hostname"));
        events.push(metadata(85, "/2009-04-04/user-data"));
        let tl = timeline(&wf, &events, t(90));
        let m = span(&tl, &Step::Metadata);
        assert_eq!(
            (m.start, m.end, m.outcome),
            (Some(t(80)), Some(t(80)), Outcome::Done)
        );
        assert_eq!(
            m.detail.as_deref(),
            Some("first read: /2009-04-04/meta-data/hostname")
        );
    }

    fn tftp(at: i64, millis: u64, failed: Option<&str>) -> MachineEvent {
        MachineEvent::new(
            t(at),
            "default/m1",
            EventSource::Tftp,
            EventKind::TftpTransfer {
                file: "ipxe.efi".into(),
                bytes: 1_000_000,
                millis,
                failed: failed.map(str::to_string),
            },
        )
    }

    #[test]
    fn the_tftp_step_is_the_firmware_loading_ipxe() {
        let wf = workflow(
            WorkflowState::Pending,
            MachinePhase::Ready,
            &[("stream", ActionState::Pending, 0, None, None)],
        );
        let rendered = engine(0, EventKind::Rendered { actions: 1 });
        // The firmware learnt the size and abandoned its first transfer: the
        // machine may still ask, so the step runs on.
        let events = [
            rendered.clone(),
            dhcp(8),
            tftp(9, 0, Some("the client sent an error")),
        ];
        let tl = timeline(&wf, &events, t(10));
        let s = span(&tl, &Step::Tftp);
        assert_eq!(
            (s.start, s.end, s.outcome),
            (Some(t(9)), None, Outcome::Running)
        );
        assert_eq!(
            s.detail.as_deref(),
            Some("TFTP: ipxe.efi abandoned: the client sent an error")
        );
        assert_eq!(tl.spans[tl.stopped_at.unwrap()].step, Step::Tftp);
        // Its second try completed (1.5 s long), then iPXE fetched its script;
        // a later transfer (the in-memory OS's) is not this step's.
        let events = [
            rendered,
            dhcp(8),
            tftp(9, 0, Some("the client sent an error")),
            tftp(12, 1500, None),
            script(13),
            tftp(30, 10, None),
        ];
        let tl = timeline(&wf, &events, t(40));
        let s = span(&tl, &Step::Tftp);
        assert_eq!(
            (s.start, s.end, s.outcome, s.attempts),
            (Some(t(9)), Some(t(12)), Outcome::Done, 2)
        );
        assert_eq!(
            s.detail.as_deref(),
            Some("TFTP: ipxe.efi sent (1000000 bytes in 1500 ms)")
        );
        // Without records, as before: not recorded once the machine went past.
        let tl = timeline(
            &wf,
            &events[..2]
                .iter()
                .cloned()
                .chain([script(13)])
                .collect::<Vec<_>>(),
            t(40),
        );
        assert_eq!(span(&tl, &Step::Tftp).outcome, Outcome::NotRecorded);
    }

    #[test]
    fn a_failed_action_is_where_it_stopped() {
        let mut wf = workflow(
            WorkflowState::Failed,
            MachinePhase::FailurePowerApplied,
            &[
                ("stream", ActionState::Success, 1, Some(20), Some(30)),
                ("grow", ActionState::Failed, 2, Some(31), Some(33)),
                ("kexec", ActionState::Pending, 0, None, None),
            ],
        );
        wf.status.as_mut().unwrap().reason = Some("action grow failed".into());
        let events = [
            engine(0, EventKind::Rendered { actions: 3 }),
            done(2, MachineStep::SetPxeBoot),
            done(4, MachineStep::PowerCycle),
            script(11),
            done(34, MachineStep::FailurePower),
        ];
        let tl = timeline(&wf, &events, t(60));
        let stopped = &tl.spans[tl.stopped_at.unwrap()];
        assert_eq!(stopped.step, action(1, "grow"));
        assert_eq!(stopped.outcome, Outcome::Failed);
        assert_eq!(stopped.attempts, 2);
        assert_eq!(stopped.detail.as_deref(), Some("exit code 3"));
        assert_eq!(span(&tl, &action(2, "kexec")).outcome, Outcome::Pending);
        assert_eq!(span(&tl, &Step::FailurePower).outcome, Outcome::Done);
        assert!(!tl.spans.iter().any(|s| s.step == Step::NetbootOff));
        // DHCP was not recorded, but the machine went past it.
        assert_eq!(span(&tl, &Step::Dhcp).outcome, Outcome::NotRecorded);
        assert_eq!(tl.reason.as_deref(), Some("action grow failed"));
    }

    #[test]
    fn a_machine_that_never_pxe_boots_stops_at_dhcp() {
        let wf = workflow(
            WorkflowState::Pending,
            MachinePhase::Ready,
            &[("stream", ActionState::Pending, 0, None, None)],
        );
        let events = [
            // An earlier workflow's boot of the same machine does not count.
            dhcp(-50),
            script(-49),
            engine(0, EventKind::Rendered { actions: 1 }),
            done(1, MachineStep::EnableNetboot),
            engine(
                2,
                EventKind::StepSkippedNoBmc {
                    step: MachineStep::SetPxeBoot,
                },
            ),
        ];
        let mut wf = wf;
        wf.status.as_mut().unwrap().machine.no_bmc = true;
        let tl = timeline(&wf, &events, t(30));
        // Netboot was turned on; only the BMC's part was skipped.
        assert_eq!(span(&tl, &Step::NetbootOn).outcome, Outcome::Done);
        // The engine skips the power-on without an event of its own.
        let power = span(&tl, &Step::PowerOn);
        assert_eq!(power.outcome, Outcome::Skipped);
        assert_eq!(power.detail.as_deref(), Some("no BMC: done by hand"));
        assert_eq!((power.start, power.end), (None, None));
        assert_eq!(tl.spans[tl.stopped_at.unwrap()].step, Step::Dhcp);
        assert_eq!(span(&tl, &Step::IpxeScript).outcome, Outcome::Pending);
        assert_eq!(span(&tl, &Step::InMemoryOs).start, None);
    }

    #[test]
    fn a_step_the_controller_cannot_do_is_skipped_with_its_reason() {
        let wf = workflow(
            WorkflowState::Pending,
            MachinePhase::Ready,
            &[("stream", ActionState::Pending, 0, None, None)],
        );
        let reason = "wol://x does not support setting the boot device: Wake-on-LAN can only power a machine on";
        let events = [
            engine(0, EventKind::Rendered { actions: 1 }),
            engine(
                1,
                EventKind::StepSkippedUnsupported {
                    step: MachineStep::SetPxeBoot,
                    reason: reason.into(),
                },
            ),
        ];
        let tl = timeline(&wf, &events, t(30));
        let skipped = tl
            .spans
            .iter()
            .find(|s| s.outcome == Outcome::Skipped)
            .expect("a skipped span");
        assert_eq!(skipped.detail.as_deref(), Some(reason));
        assert_eq!(skipped.end, Some(t(1)));
    }

    #[test]
    fn a_failing_power_on_shows_its_attempts_and_error() {
        let mut wf = workflow(
            WorkflowState::Pending,
            MachinePhase::PxeBootSet,
            &[("stream", ActionState::Pending, 0, None, None)],
        );
        let fail = |at| {
            engine(
                at,
                EventKind::StepFailed {
                    step: MachineStep::PowerCycle,
                    attempt: 1,
                    retry_in_ms: 1000,
                    error: "BMC unreachable".into(),
                },
            )
        };
        let events = [
            engine(0, EventKind::Rendered { actions: 1 }),
            done(2, MachineStep::SetPxeBoot),
            fail(3),
            fail(5),
        ];
        let tl = timeline(&wf, &events, t(6));
        let power = span(&tl, &Step::PowerOn);
        assert_eq!(
            (power.outcome, power.attempts, power.start),
            (Outcome::Running, 3, Some(t(3)))
        );
        assert_eq!(power.detail.as_deref(), Some("BMC unreachable"));
        assert_eq!(tl.spans[tl.stopped_at.unwrap()].step, Step::PowerOn);
        // Once the engine gives up, the step failed.
        wf.status.as_mut().unwrap().machine.gave_up = Some(GaveUp {
            step: MachineStep::PowerCycle,
            attempts: 2,
            error: "BMC unreachable".into(),
        });
        let tl = timeline(&wf, &events, t(6));
        assert_eq!(span(&tl, &Step::PowerOn).outcome, Outcome::Failed);
        assert_eq!(span(&tl, &Step::PowerOn).end, Some(t(5)));
    }

    #[test]
    fn the_json_names_each_step() {
        let wf = workflow(
            WorkflowState::Running,
            MachinePhase::Ready,
            &[("stream", ActionState::Running, 1, Some(20), None)],
        );
        let tl = timeline(&wf, &[engine(0, EventKind::Rendered { actions: 1 })], t(25));
        let json = serde_json::to_value(&tl).unwrap();
        let stream = &json["spans"][6];
        assert_eq!(stream["step"], "action");
        assert_eq!(stream["name"], "stream");
        assert_eq!(stream["index"], 0);
        assert_eq!(stream["outcome"], "running");
        assert_eq!(stream["label"], "action stream");
        assert_eq!(json["stoppedAt"], 6);
        assert_eq!(json["state"], "RUNNING");
    }
}
