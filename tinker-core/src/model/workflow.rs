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
}

/// The engine's side effects for a workflow, recorded so that a restarted engine
/// (or another replica) does not repeat one that is done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineSteps {
    /// The engine is preparing the machine; workers are not given actions yet.
    #[serde(default)]
    pub preparing: bool,
    /// `allowPXE` was set on the Hardware.
    #[serde(default)]
    pub netboot_enabled: bool,
    /// The BMC was asked for a one-time PXE boot.
    #[serde(default)]
    pub pxe_boot_set: bool,
    /// The machine was power-cycled (or powered on) into netboot.
    #[serde(default)]
    pub power_cycled: bool,
    /// `allowPXE` was cleared after the last action succeeded.
    #[serde(default)]
    pub netboot_disabled: bool,
    /// The BMC was told to boot from disk.
    #[serde(default)]
    pub disk_boot_set: bool,
    /// The machine was rebooted into its installed OS.
    #[serde(default)]
    pub rebooted: bool,
    /// The failure power policy was applied.
    #[serde(default)]
    pub failure_power_applied: bool,
    /// The machine has no BMC: power steps are skipped (it must be booted by hand).
    #[serde(default)]
    pub no_bmc: bool,
    /// Failed attempts of the current step.
    #[serde(default)]
    pub attempts: u32,
    /// When the next attempt is due, after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    /// The last error of a step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The replica carrying out a step, and until when it may (see the engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<(String, Timestamp)>,
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
