//! "Why is it pending?": for a workflow that has not started or is stuck, which
//! step of the boot its machine has not reached, since when, and what that usually
//! means, read from the workflow's status and the machine's event log.
//!
//! Pure: the workflow, its Hardware, the machine's events and `now` in, a
//! [`Diagnosis`] (a typed [`Stage`] and [`Cause`], plus its text for people) out.
//!
//! ```
//! use tinker_core::diagnose::{why_pending, Cause, Stage};
//! use tinker_core::model::{MachinePhase, MachineSteps, Workflow, WorkflowStatus};
//! use tinker_core::store::{EventKind, EventSource, MachineEvent};
//!
//! let mac = "02:00:00:00:97:01".parse().unwrap();
//! let mut wf = Workflow::new("wf", "tpl", "m1", mac);
//! let mut status: WorkflowStatus = serde_json::from_str(r#"{"state": "PENDING", "tasks": [
//!     {"name": "os", "agentID": "", "actions": [{"id": "", "name": "stream", "image": "x", "state": "PENDING"}]}
//! ]}"#).unwrap();
//! status.machine = MachineSteps { phase: MachinePhase::Ready, no_bmc: true, ..Default::default() };
//! wf.status = Some(status);
//! let created: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
//! let events = [MachineEvent::new(created, "default/m1", EventSource::Engine, EventKind::Rendered { actions: 1 })
//!     .for_workflow("default/wf")];
//! let now = created + jiff::SignedDuration::from_secs(12);
//! let d = why_pending(&wf, None, &events, now).unwrap();
//! assert_eq!(d.waiting_for, Stage::Dhcp);
//! assert_eq!(d.cause, Cause::NoBmc);
//! assert!(d.explanation.starts_with("no DHCP request from 02:00:00:00:97:01 since the workflow was created 12 s ago"));
//! ```

use crate::mac::MacAddr;
use crate::model::{GaveUp, Hardware, MachinePhase, MachineStep, Parked, Workflow};
use crate::state::{ActionState, WorkflowState};
use crate::store::{EventKind, EventSource, MachineEvent};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

/// How long a worker may take between one action's end and claiming the next
/// before the wait is worth explaining (a worker asks again within seconds).
pub const BETWEEN_ACTIONS_GRACE: SignedDuration = SignedDuration::from_secs(60);

/// The step of a machine's way to its actions that it has not reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "stage",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum Stage {
    /// The engine has not rendered the workflow.
    Render,
    /// The engine's preparation of the machine (netboot, PXE boot, power-on).
    Preparation {
        /// The step not yet done.
        step: MachineStep,
    },
    /// The machine's network boot: no DHCP request from it.
    Dhcp,
    /// DHCP answered, but the machine did not fetch its iPXE script.
    IpxeScript,
    /// The script was served, but no worker (the in-memory OS) called the worker API.
    Worker,
    /// An action not claimed although the one before it ended.
    Action {
        /// The action's position among all the workflow's actions.
        index: usize,
        /// Its name.
        name: String,
    },
}

/// Why the machine has not reached its [`Stage`]: the decision, as a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "cause",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum Cause {
    /// The workflow has no status yet: the engine has not picked it up.
    NotRendered,
    /// The engine's crash-loop guard stopped processing it.
    Parked(Parked),
    /// The engine stopped retrying a step.
    GaveUp(GaveUp),
    /// A preparation step keeps failing and is being retried.
    StepFailing {
        /// Failed attempts so far.
        attempts: u32,
        /// The last error.
        error: String,
    },
    /// The engine has yet to carry out a preparation step.
    StepNotDone,
    /// No BMC is configured: the machine must be powered on by hand.
    NoBmc,
    /// The BMC powered the machine on, but it did not network-boot.
    NoDhcpAfterPowerOn,
    /// DHCP saw the machine (its last decision quoted) but no script was fetched.
    NoScriptAfterDhcp {
        /// The DHCP server's last decision for the machine.
        decision: String,
    },
    /// The iPXE script was served but no worker called.
    NoWorkerAfterScript,
    /// The worker stopped asking for actions.
    WorkerStopped,
}

/// Why a workflow is pending or stuck.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnosis {
    /// The step the machine has not reached.
    pub waiting_for: Stage,
    /// Why, as a value.
    pub cause: Cause,
    /// Since when it has been waiting, when the event log says.
    pub since: Option<Timestamp>,
    /// How long that is, in whole seconds, at the `now` the diagnosis was made.
    pub waited_seconds: Option<u64>,
    /// The answer for an operator, one line.
    pub explanation: String,
}

/// Why `workflow` is pending or stuck; `None` when it is running fine or has
/// finished.
///
/// `hardware` is the workflow's machine (for its MAC and whether it has a BMC);
/// `events` are the machine's events, in any order (older workflows' events
/// are told apart by time); `now` is the time of the question.
pub fn why_pending(
    workflow: &Workflow,
    hardware: Option<&Hardware>,
    events: &[MachineEvent],
    now: Timestamp,
) -> Option<Diagnosis> {
    let key = format!(
        "{}/{}",
        workflow.metadata.namespace(),
        workflow.metadata.name
    );
    let created = created_at(workflow, &key, events);
    let at = |since: Option<Timestamp>, waiting_for: Stage, cause: Cause| {
        let waited = since.map(|s| seconds(now.duration_since(s)));
        let explanation = explain(
            workflow,
            hardware,
            &waiting_for,
            &cause,
            waited,
            since == created,
        );
        Diagnosis {
            waiting_for,
            cause,
            since,
            waited_seconds: waited,
            explanation,
        }
    };
    let Some(status) = &workflow.status else {
        return Some(at(created, Stage::Render, Cause::NotRendered));
    };
    if status.state.is_terminal() {
        return None;
    }
    let m = &status.machine;
    let step = next_preparation_step(m.phase);
    if let Some(parked) = &status.parked {
        let stage = step.map_or(Stage::Worker, |step| Stage::Preparation { step });
        return Some(at(Some(parked.at), stage, Cause::Parked(parked.clone())));
    }
    if let Some(gave_up) = &m.gave_up {
        let since = last(events, created, |k| matches!(k, EventKind::GaveUp(_)));
        let stage = Stage::Preparation { step: gave_up.step };
        return Some(at(since.or(created), stage, Cause::GaveUp(gave_up.clone())));
    }
    if m.is_preparing()
        && let Some(step) = step
    {
        let stage = Stage::Preparation { step };
        if m.attempts > 0 {
            // Since the first failure of this run of failures.
            let since = first_failure_of(events, created, step);
            let cause = Cause::StepFailing {
                attempts: m.attempts,
                error: m.last_error.clone().unwrap_or_default(),
            };
            return Some(at(since.or(created), stage, cause));
        }
        let since = last(events, created, |k| matches!(k, EventKind::StepDone { .. }));
        return Some(at(since.or(created), stage, Cause::StepNotDone));
    }
    let actions: Vec<_> = status.tasks.iter().flat_map(|t| &t.actions).collect();
    if actions.iter().any(|a| a.state == ActionState::Running) {
        return None;
    }
    if let Some(index) = actions.iter().position(|a| a.state == ActionState::Pending)
        && index > 0
    {
        // Between two actions: the worker claims the next one at once.
        let ended = actions[index - 1].execution_stop;
        let waited = ended.map(|e| now.duration_since(e));
        if waited.is_none_or(|w| w < BETWEEN_ACTIONS_GRACE) {
            return None;
        }
        let stage = Stage::Action {
            index,
            name: actions[index].name.clone(),
        };
        return Some(at(ended, stage, Cause::WorkerStopped));
    }
    if status.state != WorkflowState::Pending || actions.is_empty() {
        return None;
    }
    // Nothing claimed yet: how far did the machine's boot get since the workflow
    // was created (events of an earlier workflow do not count)?
    if let Some(t) = last(events, created, |k| {
        matches!(k, EventKind::IpxeScriptServed { .. })
    }) {
        return Some(at(Some(t), Stage::Worker, Cause::NoWorkerAfterScript));
    }
    if let Some(e) = newest(events, created, |e| {
        e.source == EventSource::Dhcp && matches!(e.kind, EventKind::BootDecision { .. })
    }) {
        let EventKind::BootDecision { decision } = &e.kind else {
            unreachable!("matched above")
        };
        let cause = Cause::NoScriptAfterDhcp {
            decision: decision.clone(),
        };
        return Some(at(Some(e.at), Stage::IpxeScript, cause));
    }
    let has_bmc = hardware.map(|h| h.spec.bmc_ref.is_some());
    if m.no_bmc || has_bmc == Some(false) {
        return Some(at(created, Stage::Dhcp, Cause::NoBmc));
    }
    let powered = last(events, created, |k| {
        matches!(
            k,
            EventKind::StepDone {
                step: MachineStep::PowerCycle
            }
        )
    });
    Some(at(
        powered.or(created),
        Stage::Dhcp,
        Cause::NoDhcpAfterPowerOn,
    ))
}

/// When the workflow was created: the engine's rendering of it, else
/// `metadata.creationTimestamp`.
pub(crate) fn created_at(
    workflow: &Workflow,
    key: &str,
    events: &[MachineEvent],
) -> Option<Timestamp> {
    events
        .iter()
        .filter(|e| e.workflow.as_deref() == Some(key))
        .filter(|e| matches!(e.kind, EventKind::Rendered { .. }))
        .map(|e| e.at)
        .max()
        .or_else(|| {
            workflow
                .metadata
                .extra
                .get("creationTimestamp")
                .and_then(|v| v.as_str())
                .and_then(|s| s.parse().ok())
        })
}

/// The newest event at or after `after` that `pick` chooses.
fn newest(
    events: &[MachineEvent],
    after: Option<Timestamp>,
    pick: impl Fn(&MachineEvent) -> bool,
) -> Option<&MachineEvent> {
    events
        .iter()
        .filter(|e| after.is_none_or(|a| e.at >= a))
        .filter(|e| pick(e))
        .max_by_key(|e| (e.at, e.seq))
}

/// When the newest event at or after `after` of a kind `pick` chooses happened.
fn last(
    events: &[MachineEvent],
    after: Option<Timestamp>,
    pick: impl Fn(&EventKind) -> bool,
) -> Option<Timestamp> {
    newest(events, after, |e| pick(&e.kind)).map(|e| e.at)
}

/// The first of the failures of `step` since the last step done.
fn first_failure_of(
    events: &[MachineEvent],
    after: Option<Timestamp>,
    step: MachineStep,
) -> Option<Timestamp> {
    let done = last(events, after, |k| matches!(k, EventKind::StepDone { .. })).or(after);
    events
        .iter()
        .filter(|e| done.is_none_or(|d| e.at >= d))
        .filter(|e| matches!(&e.kind, EventKind::StepFailed { step: s, .. } if *s == step))
        .map(|e| e.at)
        .min()
}

/// The preparation step after `phase`, if the phase is one of preparation.
fn next_preparation_step(phase: MachinePhase) -> Option<MachineStep> {
    match phase {
        MachinePhase::Preparing => Some(MachineStep::EnableNetboot),
        MachinePhase::NetbootEnabled => Some(MachineStep::SetPxeBoot),
        MachinePhase::PxeBootSet => Some(MachineStep::PowerCycle),
        _ => None,
    }
}

fn seconds(d: SignedDuration) -> u64 {
    u64::try_from(d.as_secs()).unwrap_or(0)
}

/// `12 s`, `3 min`, `2 h`, `4 d`: how long, as an operator says it.
fn human(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3600 => format!("{} min", s / 60),
        s if s < 2 * 86400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86400),
    }
}

/// The operator's text for a diagnosis (the only place it is made).
fn explain(
    workflow: &Workflow,
    hardware: Option<&Hardware>,
    stage: &Stage,
    cause: &Cause,
    waited: Option<u64>,
    since_created: bool,
) -> String {
    let ago = waited.map_or_else(String::new, |s| format!(" {} ago", human(s)));
    let mac = machine_mac(workflow, hardware)
        .map_or_else(|| "the machine".to_string(), |m| m.to_string());
    let since = if since_created {
        format!("since the workflow was created{ago}")
    } else {
        format!("since it was powered on{ago}")
    };
    match cause {
        Cause::NotRendered => format!(
            "the workflow was created{ago} but the engine has not rendered it: is the engine running, and do its template and hardware exist?"
        ),
        Cause::Parked(p) => format!("the engine stopped processing the workflow{ago}: {p}"),
        Cause::GaveUp(g) => format!(
            "the engine gave up on {} after {} attempts{ago}: {}; check the machine's BMC (address, credentials, reachability), then re-run the workflow",
            g.step, g.attempts, g.error
        ),
        Cause::StepFailing { attempts, error } => {
            let step = match stage {
                Stage::Preparation { step } => step.to_string(),
                _ => "a step".to_string(),
            };
            format!(
                "{step} has failed {attempts} times (the first{ago}) and is being retried: {error}; check the machine's BMC (address, credentials, reachability)"
            )
        }
        Cause::StepNotDone => {
            let step = match stage {
                Stage::Preparation { step } => step.to_string(),
                _ => "its next step".to_string(),
            };
            format!("the engine has not carried out {step}{ago}: is the engine running?")
        }
        Cause::NoBmc => format!(
            "no DHCP request from {mac} {since}: no BMC is configured for it, so power it on and make sure it boots from the network"
        ),
        Cause::NoDhcpAfterPowerOn => format!(
            "no DHCP request from {mac} {since}: check PXE is enabled in its firmware and the cable"
        ),
        Cause::NoScriptAfterDhcp { decision } => format!(
            "DHCP answered {mac}{ago} ({decision}) but it fetched no iPXE script: check it may netboot (allowPXE), that iPXE got a boot file, and that it reaches our HTTP server"
        ),
        Cause::NoWorkerAfterScript => format!(
            "iPXE script served{ago} but no worker call: the in-memory OS did not reach us (check its kernel and initrd downloaded, its network, and the worker API address it was given)"
        ),
        Cause::WorkerStopped => {
            let name = match stage {
                Stage::Action { name, .. } => name.as_str(),
                _ => "the next action",
            };
            format!(
                "the previous action ended{ago} but no worker claimed {name}: the worker on {mac} stopped asking (did the machine reboot or lose its network?)"
            )
        }
    }
}

/// The MAC the workflow boots: `device_1` of its hardware map, else the
/// Hardware's first interface.
fn machine_mac(workflow: &Workflow, hardware: Option<&Hardware>) -> Option<MacAddr> {
    workflow
        .spec
        .hardware_map
        .get("device_1")
        .and_then(|m| m.parse().ok())
        .or_else(|| hardware.and_then(|h| h.macs().first().copied()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ActionStatus, MachineSteps, ObjectReference, WorkflowStatus};

    const MAC: &str = "02:00:00:00:97:01";

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn event(at: i64, source: EventSource, kind: EventKind) -> MachineEvent {
        MachineEvent::new(t(at), "default/m1", source, kind)
    }

    fn rendered(at: i64) -> MachineEvent {
        event(at, EventSource::Engine, EventKind::Rendered { actions: 2 })
            .for_workflow("default/wf")
    }

    fn action(name: &str, state: ActionState) -> ActionStatus {
        serde_json::from_value(serde_json::json!({
            "id": "", "name": name, "image": "quay.io/x", "state": state,
        }))
        .unwrap()
    }

    fn workflow(
        machine: MachineSteps,
        state: WorkflowState,
        actions: Vec<ActionStatus>,
    ) -> Workflow {
        let mut wf = Workflow::new("wf", "tpl", "m1", MAC.parse().unwrap());
        let mut status: WorkflowStatus = serde_json::from_value(serde_json::json!({
            "state": state,
            "tasks": [{ "name": "os", "agentID": "", "actions": actions }],
        }))
        .unwrap();
        status.machine = machine;
        wf.status = Some(status);
        wf
    }

    fn pending(machine: MachineSteps) -> Workflow {
        workflow(
            machine,
            WorkflowState::Pending,
            vec![
                action("stream", ActionState::Pending),
                action("kexec", ActionState::Pending),
            ],
        )
    }

    fn ready(no_bmc: bool) -> MachineSteps {
        MachineSteps {
            phase: MachinePhase::Ready,
            no_bmc,
            ..Default::default()
        }
    }

    fn with_bmc() -> Hardware {
        let mut hw = Hardware::new(
            "m1",
            MAC.parse().unwrap(),
            "10.0.0.5".parse().unwrap(),
            "255.255.255.0",
        );
        hw.spec.bmc_ref = Some(ObjectReference {
            name: "bmc-m1".into(),
            ..Default::default()
        });
        hw
    }

    #[test]
    fn never_pxe_booted_without_a_bmc() {
        let wf = pending(ready(true));
        let events = [
            rendered(100),
            event(
                101,
                EventSource::Engine,
                EventKind::StepSkippedNoBmc {
                    step: MachineStep::PowerCycle,
                },
            )
            .for_workflow("default/wf"),
        ];
        let d = why_pending(&wf, None, &events, t(112)).unwrap();
        assert_eq!(d.waiting_for, Stage::Dhcp);
        assert_eq!(d.cause, Cause::NoBmc);
        assert_eq!(d.since, Some(t(100)));
        assert_eq!(d.waited_seconds, Some(12));
        assert_eq!(
            d.explanation,
            "no DHCP request from 02:00:00:00:97:01 since the workflow was created 12 s ago: no BMC is configured for it, so power it on and make sure it boots from the network"
        );
    }

    #[test]
    fn a_hardware_without_a_bmc_ref_counts_as_no_bmc_before_the_engine_notes_it() {
        let wf = pending(ready(false));
        let hw = Hardware::new(
            "m1",
            MAC.parse().unwrap(),
            "10.0.0.5".parse().unwrap(),
            "255.255.255.0",
        );
        let d = why_pending(&wf, Some(&hw), &[rendered(0)], t(5)).unwrap();
        assert_eq!(d.cause, Cause::NoBmc);
    }

    #[test]
    fn powered_on_but_no_dhcp() {
        let wf = pending(ready(false));
        let events = [
            rendered(0),
            event(
                10,
                EventSource::Engine,
                EventKind::StepDone {
                    step: MachineStep::PowerCycle,
                },
            )
            .for_workflow("default/wf"),
        ];
        let d = why_pending(&wf, Some(&with_bmc()), &events, t(250)).unwrap();
        assert_eq!(d.waiting_for, Stage::Dhcp);
        assert_eq!(d.cause, Cause::NoDhcpAfterPowerOn);
        assert_eq!(d.since, Some(t(10)));
        assert_eq!(
            d.explanation,
            "no DHCP request from 02:00:00:00:97:01 since it was powered on 4 min ago: check PXE is enabled in its firmware and the cable"
        );
    }

    #[test]
    fn dhcp_answered_but_no_script() {
        let wf = pending(ready(false));
        let decision = "Ipxe client 02:00:00:00:97:01: no boot file: netboot is not allowed";
        let events = [
            // A DHCP request before this workflow existed does not count...
            event(
                -50,
                EventSource::Dhcp,
                EventKind::BootDecision {
                    decision: "old".into(),
                },
            ),
            rendered(0),
            event(
                20,
                EventSource::Dhcp,
                EventKind::BootDecision {
                    decision: decision.into(),
                },
            ),
        ];
        let d = why_pending(&wf, Some(&with_bmc()), &events, t(50)).unwrap();
        assert_eq!(d.waiting_for, Stage::IpxeScript);
        assert_eq!(
            d.cause,
            Cause::NoScriptAfterDhcp {
                decision: decision.into()
            }
        );
        assert_eq!(d.waited_seconds, Some(30));
        assert!(
            d.explanation
                .starts_with("DHCP answered 02:00:00:00:97:01 30 s ago (Ipxe client"),
            "{}",
            d.explanation
        );
        // ...and without this one, nothing was seen.
        let d = why_pending(&wf, Some(&with_bmc()), &events[..2], t(50)).unwrap();
        assert_eq!(d.waiting_for, Stage::Dhcp);
    }

    #[test]
    fn script_served_but_no_worker_call() {
        let wf = pending(ready(false));
        let events = [
            rendered(0),
            event(
                20,
                EventSource::Dhcp,
                EventKind::BootDecision {
                    decision: "x".into(),
                },
            ),
            event(
                30,
                EventSource::Http,
                EventKind::IpxeScriptServed {
                    mac: MAC.parse().unwrap(),
                },
            ),
        ];
        let d = why_pending(&wf, Some(&with_bmc()), &events, t(210)).unwrap();
        assert_eq!(d.waiting_for, Stage::Worker);
        assert_eq!(d.cause, Cause::NoWorkerAfterScript);
        assert!(
            d.explanation.starts_with(
                "iPXE script served 3 min ago but no worker call: the in-memory OS did not reach us"
            ),
            "{}",
            d.explanation
        );
    }

    #[test]
    fn waiting_on_a_bmc_step_that_keeps_failing() {
        let machine = MachineSteps {
            phase: MachinePhase::PxeBootSet,
            attempts: 3,
            last_error: Some("bmc is unreachable: connection refused".into()),
            ..Default::default()
        };
        let wf = pending(machine);
        let failed = |at, attempt| {
            event(
                at,
                EventSource::Engine,
                EventKind::StepFailed {
                    step: MachineStep::PowerCycle,
                    attempt,
                    retry_in_ms: 1000,
                    error: "bmc is unreachable: connection refused".into(),
                },
            )
        };
        let events = [
            rendered(0),
            event(
                1,
                EventSource::Engine,
                EventKind::StepDone {
                    step: MachineStep::SetPxeBoot,
                },
            ),
            failed(2, 1),
            failed(4, 2),
            failed(8, 3),
        ];
        let d = why_pending(&wf, Some(&with_bmc()), &events, t(62)).unwrap();
        assert_eq!(
            d.waiting_for,
            Stage::Preparation {
                step: MachineStep::PowerCycle
            }
        );
        assert!(matches!(d.cause, Cause::StepFailing { attempts: 3, .. }));
        assert_eq!(d.since, Some(t(2)), "since the first failure");
        assert_eq!(
            d.explanation,
            "PowerCycle has failed 3 times (the first 60 s ago) and is being retried: bmc is unreachable: connection refused; check the machine's BMC (address, credentials, reachability)"
        );
    }

    #[test]
    fn a_step_the_engine_gave_up_on() {
        let gave_up = GaveUp {
            step: MachineStep::SetPxeBoot,
            attempts: 6,
            error: "auth failed".into(),
        };
        let machine = MachineSteps {
            phase: MachinePhase::NetbootEnabled,
            gave_up: Some(gave_up.clone()),
            ..Default::default()
        };
        let wf = pending(machine);
        let events = [
            rendered(0),
            event(40, EventSource::Engine, EventKind::GaveUp(gave_up.clone())),
        ];
        let d = why_pending(&wf, Some(&with_bmc()), &events, t(100)).unwrap();
        assert_eq!(
            d.waiting_for,
            Stage::Preparation {
                step: MachineStep::SetPxeBoot
            }
        );
        assert_eq!(d.cause, Cause::GaveUp(gave_up));
        assert_eq!(d.since, Some(t(40)));
    }

    #[test]
    fn not_rendered_yet() {
        let wf = Workflow::new("wf", "tpl", "m1", MAC.parse().unwrap());
        let d = why_pending(&wf, None, &[], t(0)).unwrap();
        assert_eq!(
            (d.waiting_for, d.cause),
            (Stage::Render, Cause::NotRendered)
        );
        assert_eq!(d.since, None);
    }

    #[test]
    fn running_fine_or_finished_is_no_diagnosis() {
        let running = workflow(
            ready(false),
            WorkflowState::Running,
            vec![
                action("stream", ActionState::Running),
                action("kexec", ActionState::Pending),
            ],
        );
        assert_eq!(
            why_pending(&running, Some(&with_bmc()), &[rendered(0)], t(5000)),
            None
        );
        let mut first_done = action("stream", ActionState::Success);
        first_done.execution_stop = Some(t(100));
        let between = workflow(
            ready(false),
            WorkflowState::Running,
            vec![first_done.clone(), action("kexec", ActionState::Pending)],
        );
        assert_eq!(
            why_pending(&between, None, &[], t(110)),
            None,
            "the worker is about to claim"
        );
        let d = why_pending(&between, None, &[], t(400)).unwrap();
        assert_eq!(
            d.waiting_for,
            Stage::Action {
                index: 1,
                name: "kexec".into()
            }
        );
        assert_eq!(d.cause, Cause::WorkerStopped);
        let done = workflow(
            MachineSteps {
                phase: MachinePhase::Rebooted,
                ..Default::default()
            },
            WorkflowState::Success,
            vec![first_done, action("kexec", ActionState::Success)],
        );
        assert_eq!(why_pending(&done, None, &[], t(400)), None);
    }

    #[test]
    fn the_diagnosis_serializes_as_typed_json() {
        let wf = pending(ready(true));
        let d = why_pending(&wf, None, &[rendered(0)], t(12)).unwrap();
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["waitingFor"]["stage"], "dhcp");
        assert_eq!(json["cause"]["cause"], "noBmc");
        assert_eq!(json["waitedSeconds"], 12);
        assert_eq!(json["since"], "2027-01-15T08:00:00Z");
    }
}
