//! The worker API's messages, shared by the worker agent (`tinker-actions`) and the
//! server (`tinker-boot`'s HTTP server). JSON over HTTP, authenticated with a
//! bearer token per worker. The shapes follow Tinkerbell's `GetAction` /
//! `ReportActionStatus` so its concepts map one to one, with one addition: every
//! assignment carries a claim number (`attempt`) that its report must repeat.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | POST | `/v1/workers/{worker_id}/next-action` | [`NextActionRequest`] | [`NextActionResponse`] |
//! | POST | `/v1/workers/{worker_id}/report` | [`ActionReport`] | [`ReportResponse`] |
//! | POST | `/v1/workers/{worker_id}/heartbeat` | [`Heartbeat`] | 204 |
//! | POST | `/v1/workers/{worker_id}/logs` | [`LogBatch`] | 204 |

use crate::state::{ActionOutcome, WorkflowState};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A worker asks for its next action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextActionRequest {
    /// The worker's id (its MAC, or the id Tinkerbell's `worker_id=` gives it).
    pub worker_id: String,
    /// An id for this request, the same on every retry of it: when an answer
    /// that handed out an action is lost, the retry gets that action again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The answer to [`NextActionRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum NextActionResponse {
    /// Run this.
    Action(WorkerAction),
    /// Nothing to do now; ask again after this many seconds.
    Wait {
        /// Suggested delay.
        retry_after_seconds: u32,
        /// Why (no workflow, machine being prepared, previous action still running).
        reason: String,
    },
}

/// An action for a worker to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerAction {
    /// The workflow, `namespace/name`.
    pub workflow_id: String,
    /// The task's name.
    pub task_name: String,
    /// The action's position among the workflow's actions.
    pub action_index: usize,
    /// The claim number; the report must carry it.
    pub attempt: u32,
    /// The action's name.
    pub name: String,
    /// The image (or a built-in's name).
    pub image: String,
    /// Seconds it may run.
    pub timeout_seconds: Option<u64>,
    /// Command.
    pub command: Vec<String>,
    /// Environment (task's, overridden by the action's).
    pub environment: BTreeMap<String, String>,
    /// Volumes.
    pub volumes: Vec<String>,
    /// PID namespace.
    pub pid: Option<String>,
    /// Seconds between heartbeats the server expects while it runs.
    pub heartbeat_seconds: u32,
}

/// A worker reports how an action ended. Sent *before* anything that ends the
/// in-memory OS (kexec, reboot), so the report always arrives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionReport {
    /// The worker.
    pub worker_id: String,
    /// The workflow, `namespace/name`.
    pub workflow_id: String,
    /// The action's position.
    pub action_index: usize,
    /// The claim number from the assignment.
    pub attempt: u32,
    /// How it ended.
    pub outcome: ActionOutcome,
    /// When it started, on the worker's clock.
    pub started_at: Option<Timestamp>,
    /// When it ended, on the worker's clock.
    pub finished_at: Option<Timestamp>,
}

/// The answer to [`ActionReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportResponse {
    /// The workflow's state after the report.
    pub workflow_state: WorkflowState,
}

/// A worker is still running an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The worker.
    pub worker_id: String,
    /// The workflow, `namespace/name`.
    pub workflow_id: String,
    /// The action's position.
    pub action_index: usize,
    /// The claim number.
    pub attempt: u32,
}

/// Output lines of a running action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogBatch {
    /// The worker.
    pub worker_id: String,
    /// The workflow, `namespace/name`.
    pub workflow_id: String,
    /// The action's position.
    pub action_index: usize,
    /// Lines, in order.
    pub lines: Vec<LogLine>,
}

/// One output line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Which stream.
    pub stream: crate::runtime::Stream,
    /// The text, without newline.
    pub text: String,
}

impl WorkerAction {
    /// Builds the wire form of a store assignment.
    pub fn from_assignment(a: &crate::store::Assignment, heartbeat_seconds: u32) -> Self {
        WorkerAction {
            workflow_id: a.workflow.qualified_name(),
            task_name: a.task_name.clone(),
            action_index: a.action_index,
            attempt: a.attempt,
            name: a.action.name.clone(),
            image: a.action.image.clone(),
            timeout_seconds: a.action.timeout.and_then(|t| u64::try_from(t).ok()),
            command: a.action.command.clone(),
            environment: a.action.environment.clone(),
            volumes: a.action.volumes.clone(),
            pid: a.action.pid.clone(),
            heartbeat_seconds,
        }
    }
}
