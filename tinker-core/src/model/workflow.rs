//! The `Workflow` object: a template applied to a machine, and its status, which
//! holds the rendered tasks and actions and where each one stands. The status has
//! Tinkerbell's shape (`state`, `currentState`, `tasks[].actions[]`), so a workflow
//! written back is one Tinkerbell users can read.

use super::{Extra, ObjectMeta};
use crate::state::{ActionState, WorkflowState};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A `tinkerbell.org/v1alpha1` `Workflow`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workflow {
    /// `tinkerbell.org/v1alpha1`.
    pub api_version: String,
    /// `Workflow`.
    pub kind: String,
    /// Name and namespace.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What to run where.
    #[serde(default)]
    pub spec: WorkflowSpec,
    /// Where it stands; absent until the template is rendered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<WorkflowStatus>,
    /// Unknown top-level fields, kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `Workflow.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowSpec {
    /// The template's name (same namespace).
    #[serde(default)]
    pub template_ref: String,
    /// The hardware's name (same namespace).
    #[serde(default)]
    pub hardware_ref: String,
    /// Template variables, such as `device_1: <MAC>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hardware_map: BTreeMap<String, String>,
    /// A disabled workflow is not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Boot options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_options: Option<BootOptions>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec.bootOptions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootOptions {
    /// Turn netboot on before and off after the workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toggle_allow_netboot: Option<bool>,
    /// `netboot`, `isoboot`, `customboot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_mode: Option<String>,
    /// ISO URL for `isoboot`.
    #[serde(default, rename = "isoURL", skip_serializing_if = "Option::is_none")]
    pub iso_url: Option<String>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `Workflow.status`: the rendered tasks and where everything stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowStatus {
    /// The workflow's state.
    pub state: WorkflowState,
    /// Why the workflow failed or timed out; always set when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The worker that runs the current task.
    #[serde(default, rename = "agentID", skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Seconds the workflow may take from its first action's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_timeout: Option<i64>,
    /// When the global timeout expires (set when the first action starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_execution_stop: Option<Timestamp>,
    /// Seconds without a worker heartbeat after which a running action times out;
    /// `None` disables the check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_grace_seconds: Option<i64>,
    /// What the engine does with the power on failure.
    #[serde(default)]
    pub failure_power: super::FailurePower,
    /// The action in progress or next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_state: Option<CurrentState>,
    /// The rendered tasks.
    #[serde(default)]
    pub tasks: Vec<TaskStatus>,
    /// The engine's side effects done so far (netboot, BMC calls).
    #[serde(default)]
    pub machine: MachineSteps,
    /// Set when the engine stopped processing the workflow because it failed the
    /// same way again and again (its crash-loop guard); the workflow is FAILED
    /// with this as its reason, and stays so until it is re-created or re-run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked: Option<Parked>,
    /// Which execution this is: 1 for the first run, one more at each re-run or
    /// retry (a Tinker field; statuses without it are the first execution).
    #[serde(
        default = "first_execution",
        skip_serializing_if = "is_first_execution"
    )]
    pub execution: u32,
    /// Set when an operator cancelled this execution (a Tinker field; the
    /// workflow is FAILED with the reason `cancelled by NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<Cancellation>,
    /// The earlier executions, oldest first: what each one did, kept readable
    /// after a re-run or retry (a Tinker field; the newest
    /// [`MAX_EXECUTIONS_KEPT`] are kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub executions: Vec<ExecutionRecord>,
    /// Unknown fields (`conditions`, `bootOptions`, ...), kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `status.currentState`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CurrentState {
    /// The worker.
    #[serde(default, rename = "agentID")]
    pub agent_id: String,
    /// The task's name.
    pub task_name: String,
    /// The action's name.
    pub action_name: String,
    /// The action's position among all actions of the workflow (0-based).
    pub action_index: usize,
    /// Its state.
    pub state: ActionState,
}

/// A rendered task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    /// Task name.
    pub name: String,
    /// The worker that runs it.
    #[serde(rename = "agentID")]
    pub agent_id: String,
    /// Volumes for every action.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// Environment for every action.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// The actions.
    pub actions: Vec<ActionStatus>,
}

/// A rendered action and its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionStatus {
    /// Stable id within the workflow (`<task>.<action>` positions).
    pub id: String,
    /// Name.
    pub name: String,
    /// Image.
    pub image: String,
    /// Seconds it may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// Command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Volumes (the task's first, then the action's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// PID namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    /// Environment (the task's, overridden by the action's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// Its state.
    pub state: ActionState,
    /// Claim number: incremented when a worker is given the action. Reports must
    /// carry it, so a late report from an earlier claim cannot change anything.
    #[serde(default)]
    pub attempt: u32,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_start: Option<Timestamp>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_stop: Option<Timestamp>,
    /// How long it ran, such as `12.5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_duration: Option<String>,
    /// The last heartbeat of the worker running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<Timestamp>,
    /// The exit code, when it ran to the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// What the worker reported (failure reason, last output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The id of the worker's request that claimed it. A worker whose answer was
    /// lost (a replica died, a connection broke) asks again with the same id and
    /// gets the same assignment; a new request (a worker that restarted) does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_request: Option<String>,
    /// How many times a failed attempt is tried again (`retries` of
    /// Tinkerbell's v1alpha2 actions, accepted on v1alpha1 templates as a Tinker
    /// extension). 0: the first failure fails the workflow.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// After a failed attempt with retries left: no worker is given the action
    /// again before this time (the shared backoff, see
    /// [`ACTION_RETRY_BACKOFF`](crate::state::ACTION_RETRY_BACKOFF)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    /// Every ended attempt of this execution, oldest first (a Tinker field).
    /// The last one is how the action ended, when it has ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptRecord>,
}

/// One ended attempt at an action: its claim number, how it ended, when, and
/// what it said. Its output lines are the `ActionOutput` events of the action
/// logged between `started` and `stopped` (the worker's failure message holds
/// the last of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRecord {
    /// The claim number the attempt ran under (it only grows, across
    /// executions too, so a late report of an old attempt never matches).
    pub attempt: u32,
    /// How it ended.
    pub state: ActionState,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Timestamp>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<Timestamp>,
    /// How long it ran, such as `12.5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// The exit code, when it ran to an end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// What the worker reported (failure reason, last output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An operator's cancel of an execution (`status.cancelled`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cancellation {
    /// Who cancelled (the operator's name).
    pub by: String,
    /// When.
    pub at: Timestamp,
    /// The action that was running then, and its claim number: its worker is
    /// told to stop it at its next heartbeat or report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<(usize, u32)>,
    /// When the running action's worker first heard of the cancel (its
    /// heartbeat or report was refused as cancelled). A worker that never does
    /// is not ours (Tinkerbell's agent has no cancel): the engine powers the
    /// machine off through its BMC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<Timestamp>,
}

/// How a new execution was started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum Restart {
    /// Every action again, from the first.
    Rerun,
    /// From this action on; the successes before it are kept.
    Retry {
        /// The first action run again (its position in the workflow).
        from: usize,
    },
}

/// An earlier execution of a workflow, as it ended (`status.executions[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionRecord {
    /// Its number (1 for the first).
    pub execution: u32,
    /// How it ended.
    pub state: WorkflowState,
    /// Why it failed or timed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When its first action started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Timestamp>,
    /// When its last action ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Timestamp>,
    /// Its cancel, if it was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<Cancellation>,
    /// What ended it for good: a re-run or a retry, by whom and when.
    pub restart: Restart,
    /// Who asked for the next execution.
    pub restarted_by: String,
    /// When.
    pub restarted_at: Timestamp,
    /// Each action's state and attempts in that execution.
    pub actions: Vec<ActionRecord>,
}

/// An action within an [`ExecutionRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    /// The action's name.
    pub name: String,
    /// Its state at the end of the execution.
    pub state: ActionState,
    /// Its ended attempts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptRecord>,
}

/// How many earlier executions a workflow keeps (the oldest are dropped), so
/// an operator re-running a workflow again and again does not grow it without
/// bound.
pub const MAX_EXECUTIONS_KEPT: usize = 20;

/// The most `retries` an action may have: each attempt is kept, so the number
/// is bounded (a larger value is refused by validation and capped when rendered).
pub const MAX_ACTION_RETRIES: u32 = 20;

fn first_execution() -> u32 {
    1
}

fn is_first_execution(n: &u32) -> bool {
    *n <= 1
}

/// A side effect the engine carries out for a machine (netboot or a BMC call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MachineStep {
    /// Set `allowPXE` on the Hardware.
    EnableNetboot,
    /// Ask the BMC for a one-time PXE boot.
    SetPxeBoot,
    /// Power-cycle (or power on) into netboot.
    PowerCycle,
    /// Clear `allowPXE`.
    DisableNetboot,
    /// Make the disk the boot device.
    SetDiskBoot,
    /// Reboot into the installed OS.
    Reboot,
    /// Apply the template's failure power policy.
    FailurePower,
    /// Power the machine off: its workflow was cancelled while an action ran,
    /// and its worker never heard (not our agent: Tinkerbell's has no cancel).
    PowerOff,
}

impl MachineStep {
    /// Whether the step belongs to preparing the machine for its actions (a
    /// failure there fails the workflow).
    pub fn prepares(self) -> bool {
        matches!(
            self,
            MachineStep::EnableNetboot | MachineStep::SetPxeBoot | MachineStep::PowerCycle
        )
    }

    /// Where the machine is once this step is done.
    fn phase_after(self, no_bmc: bool) -> MachinePhase {
        match self {
            MachineStep::EnableNetboot if no_bmc => MachinePhase::Ready,
            MachineStep::EnableNetboot => MachinePhase::NetbootEnabled,
            MachineStep::SetPxeBoot if no_bmc => MachinePhase::Ready,
            MachineStep::SetPxeBoot => MachinePhase::PxeBootSet,
            MachineStep::PowerCycle => MachinePhase::Ready,
            MachineStep::DisableNetboot => MachinePhase::NetbootDisabled,
            MachineStep::SetDiskBoot => MachinePhase::DiskBootSet,
            MachineStep::Reboot => MachinePhase::Rebooted,
            MachineStep::FailurePower | MachineStep::PowerOff => MachinePhase::FailurePowerApplied,
        }
    }
}

impl std::fmt::Display for MachineStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Where the engine is with a machine: the last of its steps that is done.
///
/// Preparation runs `Preparing → NetbootEnabled → PxeBootSet → Ready`; after the
/// last action succeeds, `Ready → NetbootDisabled → DiskBootSet → Rebooted`; after a
/// failure, `FailurePowerApplied`. A machine without a BMC skips the BMC steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum MachinePhase {
    /// Rendered; the engine has yet to enable netboot. Workers wait.
    Preparing,
    /// Netboot is enabled; the BMC is to be told to PXE-boot. Workers wait.
    NetbootEnabled,
    /// The BMC will PXE-boot; the machine is to be power-cycled. Workers wait.
    PxeBootSet,
    /// Prepared (or never needing preparation): workers may run its actions.
    #[default]
    Ready,
    /// After success: netboot is off again.
    NetbootDisabled,
    /// After success: the disk is the boot device.
    DiskBootSet,
    /// After success: rebooted into the installed OS. Nothing more to do.
    Rebooted,
    /// After failure: the failure power policy was applied. Nothing more to do.
    FailurePowerApplied,
}

impl MachinePhase {
    /// Whether the machine is still being prepared (workers wait).
    pub fn is_preparation(self) -> bool {
        matches!(
            self,
            MachinePhase::Preparing | MachinePhase::NetbootEnabled | MachinePhase::PxeBootSet
        )
    }
}

/// Why the engine parked a workflow (see [`Parked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum ParkReason {
    /// Processing it failed with the same error, one that retrying does not
    /// cure, time after time.
    RepeatedFailure,
    /// Processing it panicked (a bug in Tinker or in a backend), time after time.
    RepeatedPanic,
}

/// The engine's crash-loop guard stopped processing a workflow: why, after how
/// many failures in a row, the last error, and when. An operator sees it in the
/// workflow's status (`status.parked`) and its reason, and as a machine event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Parked {
    /// Why.
    pub reason: ParkReason,
    /// Failures in a row, all the same.
    pub failures: u32,
    /// The error (or the panic's message), as text.
    pub error: String,
    /// When it was parked.
    pub at: Timestamp,
}

impl std::fmt::Display for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.reason {
            ParkReason::RepeatedFailure => "failed",
            ParkReason::RepeatedPanic => "panicked",
        };
        write!(
            f,
            "parked: processing {what} the same way {} times in a row: {}; fix the cause, then re-run the workflow",
            self.failures, self.error
        )
    }
}

/// The engine stopped retrying a step: which, after how many attempts, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GaveUp {
    /// The step.
    pub step: MachineStep,
    /// Attempts made.
    pub attempts: u32,
    /// The last error, as text (the error itself came from a BMC or the store).
    pub error: String,
}

impl std::fmt::Display for GaveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "gave up on {} after {} attempts: {}",
            self.step, self.attempts, self.error
        )
    }
}

/// The engine's side effects for a workflow, recorded so that a restarted engine
/// (or another replica) does not repeat one that is done.
///
/// Stored as `status.machine`. Statuses written before the phase existed (a set
/// of booleans and a "gave up" text) are read into the same values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", from = "MachineStepsRepr")]
pub struct MachineSteps {
    /// The last step done.
    pub phase: MachinePhase,
    /// The machine has no BMC: power steps are skipped (it must be booted by hand).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_bmc: bool,
    /// Failed attempts of the current step.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// When the next attempt is due, after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    /// The last error of a step that is being retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The step the engine stopped retrying, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gave_up: Option<GaveUp>,
    /// The replica carrying out a step, and until when it may (see the engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<(String, Timestamp)>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl MachineSteps {
    /// Steps for a freshly rendered workflow the engine is to prepare.
    pub fn preparing() -> Self {
        MachineSteps {
            phase: MachinePhase::Preparing,
            ..Default::default()
        }
    }

    /// Whether the engine is preparing the machine; workers are not given actions yet.
    pub fn is_preparing(&self) -> bool {
        self.gave_up.is_none() && self.phase.is_preparation()
    }

    /// Records `step` as done (`no_bmc`: it found the machine has no BMC).
    pub fn done(&mut self, step: MachineStep, no_bmc: bool) {
        self.no_bmc |= no_bmc;
        self.phase = step.phase_after(self.no_bmc);
        self.attempts = 0;
        self.retry_at = None;
        self.last_error = None;
    }

    /// Whether `step` has been carried out (or is behind the machine's phase).
    pub fn has_done(&self, step: MachineStep) -> bool {
        use MachinePhase as P;
        match step {
            MachineStep::EnableNetboot => !matches!(self.phase, P::Preparing),
            MachineStep::SetPxeBoot => {
                !self.no_bmc && !matches!(self.phase, P::Preparing | P::NetbootEnabled)
            }
            MachineStep::PowerCycle => !self.no_bmc && !self.phase.is_preparation(),
            MachineStep::DisableNetboot => {
                matches!(
                    self.phase,
                    P::NetbootDisabled | P::DiskBootSet | P::Rebooted
                )
            }
            MachineStep::SetDiskBoot => matches!(self.phase, P::DiskBootSet | P::Rebooted),
            MachineStep::Reboot => self.phase == P::Rebooted,
            MachineStep::FailurePower | MachineStep::PowerOff => {
                self.phase == P::FailurePowerApplied
            }
        }
    }
}

/// `status.machine` as stored, today's fields and the booleans of earlier
/// versions alike.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MachineStepsRepr {
    #[serde(default)]
    phase: Option<MachinePhase>,
    #[serde(default)]
    no_bmc: bool,
    #[serde(default)]
    attempts: u32,
    #[serde(default)]
    retry_at: Option<Timestamp>,
    #[serde(default)]
    last_error: Option<String>,
    #[serde(default)]
    gave_up: Option<GaveUp>,
    #[serde(default)]
    lease: Option<(String, Timestamp)>,
    // Before the phase: one boolean per step.
    #[serde(default)]
    preparing: bool,
    #[serde(default)]
    netboot_enabled: bool,
    #[serde(default)]
    pxe_boot_set: bool,
    #[serde(default)]
    netboot_disabled: bool,
    #[serde(default)]
    disk_boot_set: bool,
    #[serde(default)]
    rebooted: bool,
    #[serde(default)]
    failure_power_applied: bool,
}

impl From<MachineStepsRepr> for MachineSteps {
    fn from(r: MachineStepsRepr) -> Self {
        let phase = r.phase.unwrap_or_else(|| legacy_phase(&r));
        let mut last_error = r.last_error;
        let mut gave_up = r.gave_up;
        // Earlier versions wrote "gave up on {step:?} after {n} attempts: {error}"
        // into `lastError`; read it once into the typed record.
        if gave_up.is_none()
            && let Some(text) = last_error.as_deref()
            && let Some(g) = legacy_gave_up(text)
        {
            gave_up = Some(g);
            last_error = None;
        }
        MachineSteps {
            phase,
            no_bmc: r.no_bmc,
            attempts: r.attempts,
            retry_at: r.retry_at,
            last_error,
            gave_up,
            lease: r.lease,
        }
    }
}

fn legacy_phase(r: &MachineStepsRepr) -> MachinePhase {
    if r.failure_power_applied {
        MachinePhase::FailurePowerApplied
    } else if r.rebooted {
        MachinePhase::Rebooted
    } else if r.disk_boot_set {
        MachinePhase::DiskBootSet
    } else if r.netboot_disabled {
        MachinePhase::NetbootDisabled
    } else if !r.preparing {
        MachinePhase::Ready
    } else if r.pxe_boot_set {
        MachinePhase::PxeBootSet
    } else if r.netboot_enabled {
        MachinePhase::NetbootEnabled
    } else {
        MachinePhase::Preparing
    }
}

/// Reads the legacy "gave up" text. Only for statuses written by earlier
/// versions: today's code records [`GaveUp`] as a value.
fn legacy_gave_up(text: &str) -> Option<GaveUp> {
    let rest = text.strip_prefix("gave up on ")?;
    let (step, rest) = rest.split_once(" after ")?;
    let (attempts, error) = rest.split_once(" attempts: ")?;
    let step = match step {
        "EnableNetboot" => MachineStep::EnableNetboot,
        "SetPxeBoot" => MachineStep::SetPxeBoot,
        "PowerCycle" => MachineStep::PowerCycle,
        "DisableNetboot" => MachineStep::DisableNetboot,
        "SetDiskBoot" => MachineStep::SetDiskBoot,
        "Reboot" => MachineStep::Reboot,
        s if s.starts_with("FailurePower") => MachineStep::FailurePower,
        _ => return None,
    };
    Some(GaveUp {
        step,
        attempts: attempts.parse().ok()?,
        error: error.to_string(),
    })
}

impl Workflow {
    /// A workflow in the default namespace for `template` on `hardware`, with
    /// `device_1` mapped to `mac`.
    pub fn new(name: &str, template: &str, hardware: &str, mac: crate::MacAddr) -> Self {
        Workflow {
            api_version: super::API_VERSION_V1ALPHA1.into(),
            kind: "Workflow".into(),
            metadata: ObjectMeta::named(name),
            spec: WorkflowSpec {
                template_ref: template.into(),
                hardware_ref: hardware.into(),
                hardware_map: BTreeMap::from([("device_1".to_string(), mac.to_string())]),
                ..Default::default()
            },
            status: None,
            extra: Extra::new(),
        }
    }

    /// Whether `spec.disabled` is set.
    pub fn is_disabled(&self) -> bool {
        self.spec.disabled == Some(true)
    }

    /// The state, `None` before rendering.
    pub fn state(&self) -> Option<WorkflowState> {
        self.status.as_ref().map(|s| s.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_of_earlier_versions_read_into_the_phase() {
        let legacy: MachineSteps = serde_json::from_str(
            r#"{"preparing":true,"netbootEnabled":true,"pxeBootSet":true,"attempts":6,
                "lastError":"gave up on PowerCycle after 6 attempts: bmc is unreachable: down"}"#,
        )
        .unwrap();
        assert_eq!(legacy.phase, MachinePhase::PxeBootSet);
        assert_eq!(
            legacy.gave_up,
            Some(GaveUp {
                step: MachineStep::PowerCycle,
                attempts: 6,
                error: "bmc is unreachable: down".into()
            })
        );
        assert!(!legacy.is_preparing(), "a give-up ends the preparation");
        let done: MachineSteps = serde_json::from_str(
            r#"{"netbootEnabled":true,"pxeBootSet":true,"powerCycled":true,"netbootDisabled":true,"diskBootSet":true,"rebooted":true}"#,
        )
        .unwrap();
        assert_eq!(done.phase, MachinePhase::Rebooted);
        assert!(done.has_done(MachineStep::SetDiskBoot));
    }

    #[test]
    fn today_s_status_round_trips() {
        let mut m = MachineSteps::preparing();
        m.done(MachineStep::EnableNetboot, false);
        m.gave_up = Some(GaveUp {
            step: MachineStep::SetPxeBoot,
            attempts: 2,
            error: "refused".into(),
        });
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<MachineSteps>(&json).unwrap(), m);
    }
}
