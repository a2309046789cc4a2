//! The workflow state machine, as pure code: the status and an event in, with the
//! current time, the new status out. No I/O, no clock: stores apply it inside their
//! own atomic update, the engine asks it for its next deadline, and property tests
//! drive it with random event sequences.
//!
//! ```text
//!  workflow: PENDING ──first claim──▶ RUNNING ──last action SUCCESS──▶ SUCCESS
//!                 │                     ├──action FAILED / cancel─────▶ FAILED
//!                 └─cancel──▶ FAILED    └──action or global timeout───▶ TIMEOUT
//!  SUCCESS | FAILED | TIMEOUT ──operator's re-run or retry──▶ PENDING (next execution)
//!  action:   PENDING ──claim──▶ RUNNING ──report──▶ SUCCESS | FAILED | TIMEOUT
//!                                  └──FAILED, retries left──▶ PENDING (after the backoff)
//! ```
//!
//! Rules: actions run in order, each at most once unless it has `retries` (a claim
//! moves it to RUNNING; only a failed attempt with retries left returns it to
//! PENDING, claimable again after the shared backoff); the first action that
//! fails (with no retries left) or times out ends the workflow, and the actions
//! after it stay PENDING, never to run; every FAILED or TIMEOUT carries a reason.
//! An operator's cancel ends a workflow as FAILED with the reason
//! `cancelled by NAME`, and the running action's worker is refused from then on
//! ([`Refusal::Cancelled`]), which tells our agent to stop it. A finished
//! workflow changes only when an operator starts a new execution
//! ([`WorkflowEvent::Rerun`], [`WorkflowEvent::Retry`]): the ended one is kept in
//! `status.executions`, and claim numbers keep growing, so no report of the old
//! execution matches the new one.

use crate::model::{
    ActionRecord, ActionStatus, AttemptRecord, Cancellation, CurrentState, ExecutionRecord,
    MAX_EXECUTIONS_KEPT, MachineSteps, Restart, WorkflowStatus,
};
use crate::retry::{Backoff, BackoffConfig};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// The delays between the attempts of an action with `retries`: the shared
/// capped exponential backoff with equal jitter, seeded from the action and its
/// claim number, so the pure state machine decides the same delay every time
/// and a row of machines failing together does not retry together.
pub const ACTION_RETRY_BACKOFF: BackoffConfig =
    BackoffConfig::new(Duration::from_secs(1), Duration::from_secs(60));

/// A workflow's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WorkflowState {
    /// Waiting for its first action to be claimed.
    #[serde(rename = "PENDING", alias = "STATE_PENDING")]
    Pending,
    /// An action has been claimed.
    #[serde(rename = "RUNNING", alias = "STATE_RUNNING")]
    Running,
    /// Every action succeeded.
    #[serde(rename = "SUCCESS", alias = "STATE_SUCCESS")]
    Success,
    /// An action failed, or the workflow was cancelled.
    #[serde(rename = "FAILED", alias = "STATE_FAILED")]
    Failed,
    /// An action or the whole workflow ran out of time.
    #[serde(rename = "TIMEOUT", alias = "STATE_TIMEOUT")]
    Timeout,
}

/// An action's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ActionState {
    /// Not started.
    #[serde(rename = "PENDING", alias = "STATE_PENDING")]
    Pending,
    /// Claimed by a worker.
    #[serde(rename = "RUNNING", alias = "STATE_RUNNING")]
    Running,
    /// Ended with exit code 0.
    #[serde(rename = "SUCCESS", alias = "STATE_SUCCESS")]
    Success,
    /// Ended otherwise.
    #[serde(rename = "FAILED", alias = "STATE_FAILED")]
    Failed,
    /// Ran out of time (its own, the workflow's, or its worker's heartbeat).
    #[serde(rename = "TIMEOUT", alias = "STATE_TIMEOUT")]
    Timeout,
}

/// The shared forward order and names of both state types.
macro_rules! state_methods {
    ($t:ident) => {
        impl $t {
            /// True for SUCCESS, FAILED and TIMEOUT.
            pub fn is_terminal(self) -> bool {
                matches!(self, Self::Success | Self::Failed | Self::Timeout)
            }

            /// Position in the forward order PENDING < RUNNING < terminal.
            pub fn rank(self) -> u8 {
                match self {
                    Self::Pending => 0,
                    Self::Running => 1,
                    _ => 2,
                }
            }

            /// `PENDING`, `RUNNING`, ...
            pub fn as_str(self) -> &'static str {
                match self {
                    Self::Pending => "PENDING",
                    Self::Running => "RUNNING",
                    Self::Success => "SUCCESS",
                    Self::Failed => "FAILED",
                    Self::Timeout => "TIMEOUT",
                }
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

state_methods!(WorkflowState);
state_methods!(ActionState);

/// How an action ended, as its worker reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ActionOutcome {
    /// Exit code 0.
    Success,
    /// It ended otherwise.
    Failed {
        /// The exit code, if it ran to an end.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// Why (the runtime's error, or the last lines of output).
        message: String,
    },
    /// The worker's runtime stopped it when its timeout passed.
    Timeout {
        /// What the worker saw.
        message: String,
    },
}

/// Something that happens to a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum WorkflowEvent {
    /// A worker asks for its next action.
    Claim {
        /// The worker's id (usually its MAC).
        worker: String,
    },
    /// A worker reports how an action ended.
    Report {
        /// The action's position among all actions of the workflow.
        action: usize,
        /// The claim number it was given.
        attempt: u32,
        /// How it ended.
        outcome: ActionOutcome,
    },
    /// A worker says it is still running an action.
    Heartbeat {
        /// The action's position.
        action: usize,
        /// The claim number.
        attempt: u32,
    },
    /// The workflow is stopped as FAILED: the engine gives up on a step (a BMC
    /// that stays unreachable).
    Fail {
        /// Why; an empty reason is replaced by a generic one, never left empty.
        reason: String,
    },
    /// An operator cancels the workflow: FAILED with the reason
    /// `cancelled by {by}`; the running action's worker is refused from then on.
    Cancel {
        /// The operator's name.
        by: String,
    },
    /// An operator starts a finished workflow again from its first action (a
    /// fresh execution: the machine is prepared again, netboot on).
    Rerun {
        /// The operator's name.
        by: String,
    },
    /// An operator starts a workflow that did not succeed again from its first
    /// action that did not succeed (or from `from`), keeping the successes
    /// before it.
    Retry {
        /// The operator's name.
        by: String,
        /// The first action to run again; `None`: the first that did not succeed.
        from: Option<usize>,
    },
    /// Only time passes: timeouts are checked.
    Tick,
    /// `sent` (a report or a heartbeat) as `worker` sent it: applied only if
    /// the action it names is `worker`'s, else refused as
    /// [`Refusal::NotYours`] with nothing changed. The check is made on the
    /// same read of the workflow as the event, so a store applies a worker's
    /// event in one read and one write, and a worker opens only its own
    /// actions.
    FromWorker {
        /// The worker that sent it (its id, usually its MAC).
        worker: String,
        /// What it sent.
        sent: Box<WorkflowEvent>,
    },
}

impl WorkflowEvent {
    /// The action this event is about, for the events that name one.
    pub fn action(&self) -> Option<usize> {
        match self {
            WorkflowEvent::Report { action, .. } | WorkflowEvent::Heartbeat { action, .. } => {
                Some(*action)
            }
            _ => None,
        }
    }
}

/// What an accepted event did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Effect {
    /// The action at this position was given to the worker, with this claim number.
    Claimed {
        /// Position among all actions.
        action: usize,
        /// Claim number to report with.
        attempt: u32,
    },
    /// The report was recorded; the workflow is now in this state.
    Recorded(WorkflowState),
    /// The same report was recorded before under the same claim (a worker
    /// that sent it again after losing the answer); nothing changed and the
    /// workflow is in this state.
    AlreadyRecorded(WorkflowState),
    /// The heartbeat was recorded.
    HeartbeatRecorded,
    /// The workflow was stopped as FAILED.
    Failed,
    /// A new execution began (re-run or retry); this is its number.
    Restarted {
        /// The new execution's number.
        execution: u32,
    },
    /// Nothing to do (a tick with nothing due).
    Nothing,
}

/// Why the state machine refuses an event. The status is left unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "refusal", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Refusal {
    /// The workflow has ended; nothing changes it any more.
    #[error("the workflow has finished ({state}); nothing changes it any more")]
    Finished {
        /// Its final state.
        state: WorkflowState,
    },
    /// No action is waiting for this worker.
    #[error("no action is waiting for worker {worker}")]
    NoActionForWorker {
        /// The worker.
        worker: String,
    },
    /// The current action is already running under an earlier claim.
    #[error("action {action} is already running (claim {attempt}); it is never handed out twice")]
    AlreadyRunning {
        /// Position.
        action: usize,
        /// Its claim number.
        attempt: u32,
    },
    /// The event names an action that is not the running one, or an old claim.
    #[error(
        "action {action} claim {attempt} is not running (it is {state}, claim {current_attempt})"
    )]
    NotRunning {
        /// Position named by the event.
        action: usize,
        /// Claim number named by the event.
        attempt: u32,
        /// The action's state.
        state: ActionState,
        /// The action's current claim number.
        current_attempt: u32,
    },
    /// The engine has not finished preparing the machine (netboot, power cycle);
    /// a worker already running must not start an action the power cycle would kill.
    #[error("the machine is being prepared (netboot and power cycle); ask again shortly")]
    Preparing,
    /// The workflow's template has not been rendered yet.
    #[error("the workflow has not been rendered yet")]
    NotRendered,
    /// The workflow is disabled (`spec.disabled`).
    #[error("the workflow is disabled")]
    Disabled,
    /// The event came from a worker the action it names is not assigned to
    /// (or names no action): one answer for both, so a worker learns nothing
    /// of other machines' work.
    #[error("no such action is assigned to this worker")]
    NotYours,
    /// The event names an action that does not exist.
    #[error("the workflow has no action {action}")]
    UnknownAction {
        /// Position named by the event.
        action: usize,
    },
    /// An operator cancelled the workflow: its worker is to stop the action.
    #[error("the workflow was cancelled by {by}; stop the action")]
    Cancelled {
        /// Who cancelled it.
        by: String,
    },
    /// A re-run or retry of a workflow that has not finished (cancel it first).
    #[error("the workflow is {state}; only a finished workflow can be run again (cancel it first)")]
    NotFinished {
        /// Its state.
        state: WorkflowState,
    },
    /// A retry without an action of a workflow whose actions all succeeded.
    #[error("every action succeeded; name an action to retry from, or re-run the workflow")]
    NothingFailed,
    /// A retry from an action after the first one that did not succeed.
    #[error(
        "action {action} comes after action {failed}, which did not succeed; retry from {failed} or before"
    )]
    RetryPastFailure {
        /// The action named.
        action: usize,
        /// The first action that did not succeed.
        failed: usize,
    },
}

impl WorkflowStatus {
    /// A fresh status for rendered tasks: PENDING, nothing claimed.
    pub fn pending(tasks: Vec<crate::model::TaskStatus>, global_timeout: Option<i64>) -> Self {
        let mut s = WorkflowStatus {
            state: WorkflowState::Pending,
            reason: None,
            agent_id: None,
            global_timeout,
            global_execution_stop: None,
            heartbeat_grace_seconds: None,
            failure_power: Default::default(),
            current_state: None,
            tasks,
            machine: Default::default(),
            parked: None,
            execution: 1,
            cancelled: None,
            executions: Vec::new(),
            extra: Default::default(),
        };
        s.refresh_current();
        s
    }

    /// All actions in order, with their task's index.
    pub fn actions(&self) -> impl Iterator<Item = (usize, &ActionStatus)> {
        self.tasks
            .iter()
            .enumerate()
            .flat_map(|(t, task)| task.actions.iter().map(move |a| (t, a)))
    }

    /// Number of actions.
    pub fn action_count(&self) -> usize {
        self.tasks.iter().map(|t| t.actions.len()).sum()
    }

    /// The action at a position, with its task's index.
    pub fn action(&self, index: usize) -> Option<(usize, &ActionStatus)> {
        self.actions().nth(index)
    }

    /// Whether `event` names an action of `worker`'s.
    pub fn is_workers_action(&self, worker: &str, event: &WorkflowEvent) -> bool {
        event
            .action()
            .is_some_and(|i| self.action_worker(i) == Some(worker))
    }

    /// The worker the action at a position is assigned to (its task's agent).
    /// Fixed when the workflow is rendered, so it cannot change under a caller.
    pub fn action_worker(&self, index: usize) -> Option<&str> {
        let (task, _) = self.action(index)?;
        self.tasks.get(task).map(|t| t.agent_id.as_str())
    }

    pub(crate) fn action_mut(&mut self, index: usize) -> Option<&mut ActionStatus> {
        self.tasks
            .iter_mut()
            .flat_map(|t| t.actions.iter_mut())
            .nth(index)
    }

    /// The first action that has not succeeded: the running one, or the next to run.
    pub fn current_action(&self) -> Option<usize> {
        self.actions()
            .position(|(_, a)| a.state != ActionState::Success)
    }

    /// The earliest time at which something is due (an action's or the workflow's
    /// timeout, a missed heartbeat): the engine wakes then and sends [`WorkflowEvent::Tick`].
    pub fn next_deadline(&self) -> Option<Timestamp> {
        if self.state.is_terminal() {
            return None;
        }
        let mut due = self.global_execution_stop;
        if let Some(i) = self.current_action() {
            let (_, a) = self.action(i)?;
            if a.state == ActionState::Running {
                due = min_ts(due, self.action_deadline(a));
                due = min_ts(due, self.heartbeat_deadline(a));
            }
        }
        due
    }

    fn action_deadline(&self, a: &ActionStatus) -> Option<Timestamp> {
        let start = a.execution_start?;
        let secs = a.timeout.filter(|t| *t > 0)?;
        start.checked_add(SignedDuration::from_secs(secs)).ok()
    }

    fn heartbeat_deadline(&self, a: &ActionStatus) -> Option<Timestamp> {
        let last = a.last_heartbeat.or(a.execution_start)?;
        let secs = self.heartbeat_grace_seconds.filter(|t| *t > 0)?;
        last.checked_add(SignedDuration::from_secs(secs)).ok()
    }

    /// Applies the timeouts due at `now`. Returns true if the status changed.
    pub fn expire(&mut self, now: Timestamp) -> bool {
        if self.state != WorkflowState::Running {
            return false;
        }
        let current = self.current_action();
        let running = current.and_then(|i| {
            let (_, a) = self.action(i)?;
            (a.state == ActionState::Running).then_some((i, a.clone()))
        });
        let mut why = None;
        if let Some(stop) = self.global_execution_stop
            && stop <= now
        {
            why = Some(format!(
                "the workflow exceeded its global timeout of {} s",
                self.global_timeout.unwrap_or_default()
            ));
        }
        if why.is_none()
            && let Some((_, a)) = &running
        {
            if self.action_deadline(a).is_some_and(|d| d <= now) {
                why = Some(format!(
                    "action {:?} exceeded its timeout of {} s",
                    a.name,
                    a.timeout.unwrap_or_default()
                ));
            } else if self.heartbeat_deadline(a).is_some_and(|d| d <= now) {
                why = Some(format!(
                    "action {:?}: its worker sent no heartbeat for {} s",
                    a.name,
                    self.heartbeat_grace_seconds.unwrap_or_default()
                ));
            }
        }
        let Some(why) = why else { return false };
        if let Some((i, _)) = running
            && let Some(a) = self.action_mut(i)
        {
            finish_action(a, ActionState::Timeout, now, None, why.clone());
        }
        self.finish(WorkflowState::Timeout, Some(why));
        true
    }

    /// Handles one event at `now`, after [`expire`](Self::expire). On refusal the
    /// status is unchanged, but for one record: a heartbeat or report of the
    /// action running when the workflow was cancelled is refused, and that its
    /// worker heard of the cancel is kept (`status.cancelled.acknowledged`).
    pub fn handle(&mut self, now: Timestamp, event: &WorkflowEvent) -> Result<Effect, Refusal> {
        match event {
            // Before anything else: another worker's action is not answered
            // about, whatever its state.
            WorkflowEvent::FromWorker { worker, sent } => {
                return if self.is_workers_action(worker, sent) {
                    self.handle(now, sent)
                } else {
                    Err(Refusal::NotYours)
                };
            }
            WorkflowEvent::Rerun { by } => return self.restart(now, by, Restart::Rerun),
            WorkflowEvent::Retry { by, from } => {
                let from = self.retry_from(*from)?;
                return self.restart(now, by, Restart::Retry { from });
            }
            WorkflowEvent::Report {
                action,
                attempt,
                outcome,
            } if self.recorded_before(*action, *attempt, outcome) => {
                return Ok(Effect::AlreadyRecorded(self.state));
            }
            _ => {}
        }
        if self.state.is_terminal() {
            if matches!(event, WorkflowEvent::Tick) {
                return Ok(Effect::Nothing);
            }
            if let Some(c) = self.cancelled.as_mut() {
                // The running action's worker heard of the cancel at a
                // heartbeat: it is ours and stops the action; the engine need
                // not power it off. A refused report does not count: it
                // comes from a worker that may not stop (Tinkerbell's agent
                // has no cancel, and reports the action it ran regardless).
                if let WorkflowEvent::Heartbeat { action, attempt } = event
                    && c.running == Some((*action, *attempt))
                    && c.acknowledged.is_none()
                {
                    c.acknowledged = Some(now);
                }
                return Err(Refusal::Cancelled { by: c.by.clone() });
            }
            return Err(Refusal::Finished { state: self.state });
        }
        match event {
            WorkflowEvent::Tick => Ok(Effect::Nothing),
            WorkflowEvent::Claim { worker } => self.claim(now, worker),
            WorkflowEvent::Report {
                action,
                attempt,
                outcome,
            } => self.report(now, *action, *attempt, outcome),
            WorkflowEvent::Heartbeat { action, attempt } => {
                let a = self.running_action_mut(*action, *attempt)?;
                a.last_heartbeat = Some(now);
                Ok(Effect::HeartbeatRecorded)
            }
            WorkflowEvent::Fail { reason } => {
                let why = if reason.trim().is_empty() {
                    "stopped without a reason given".to_string()
                } else {
                    reason.trim().to_string()
                };
                if let Some(i) = self.current_action()
                    && let Some(a) = self.action_mut(i)
                    && a.state == ActionState::Running
                {
                    finish_action(a, ActionState::Failed, now, None, why.clone());
                }
                self.finish(WorkflowState::Failed, Some(why));
                Ok(Effect::Failed)
            }
            WorkflowEvent::Cancel { by } => {
                let by = if by.trim().is_empty() {
                    "an unnamed operator".to_string()
                } else {
                    by.trim().to_string()
                };
                let why = format!("cancelled by {by}");
                let mut running = None;
                if let Some(i) = self.current_action()
                    && let Some(a) = self.action_mut(i)
                    && a.state == ActionState::Running
                {
                    running = Some((i, a.attempt));
                    finish_action(a, ActionState::Failed, now, None, why.clone());
                }
                self.cancelled = Some(Cancellation {
                    by,
                    at: now,
                    running,
                    acknowledged: None,
                });
                self.finish(WorkflowState::Failed, Some(why));
                Ok(Effect::Failed)
            }
            // Handled above, before the terminal check.
            WorkflowEvent::Rerun { .. }
            | WorkflowEvent::Retry { .. }
            | WorkflowEvent::FromWorker { .. } => Ok(Effect::Nothing),
        }
    }

    /// The action a retry starts from: `from`, or the first that did not succeed.
    fn retry_from(&self, from: Option<usize>) -> Result<usize, Refusal> {
        if !self.state.is_terminal() {
            return Err(Refusal::NotFinished { state: self.state });
        }
        let failed = self.current_action();
        match (from, failed) {
            (None, None) => Err(Refusal::NothingFailed),
            (None, Some(f)) => Ok(f),
            (Some(a), _) if a >= self.action_count() => Err(Refusal::UnknownAction { action: a }),
            (Some(a), Some(f)) if a > f => Err(Refusal::RetryPastFailure {
                action: a,
                failed: f,
            }),
            (Some(a), _) => Ok(a),
        }
    }

    /// Ends the finished execution for good (kept in `executions`) and starts
    /// the next: the actions from `from` on are PENDING again (their claim
    /// numbers kept, so they keep growing), the machine is prepared again
    /// (netboot on, PXE boot, power cycle), timeouts start afresh.
    fn restart(&mut self, now: Timestamp, by: &str, restart: Restart) -> Result<Effect, Refusal> {
        if !self.state.is_terminal() {
            return Err(Refusal::NotFinished { state: self.state });
        }
        let from = match restart {
            Restart::Retry { from } => from,
            _ => 0,
        };
        let record = ExecutionRecord {
            execution: self.execution,
            state: self.state,
            reason: self.reason.clone(),
            started: self
                .actions()
                .filter_map(|(_, a)| {
                    a.attempts
                        .first()
                        .and_then(|r| r.started)
                        .or(a.execution_start)
                })
                .min(),
            finished: self.actions().filter_map(|(_, a)| a.execution_stop).max(),
            cancelled: self.cancelled.clone(),
            restart,
            restarted_by: by.trim().to_string(),
            restarted_at: now,
            actions: self
                .actions()
                .map(|(_, a)| ActionRecord {
                    name: a.name.clone(),
                    state: a.state,
                    attempts: a.attempts.clone(),
                })
                .collect(),
        };
        self.executions.push(record);
        if self.executions.len() > MAX_EXECUTIONS_KEPT {
            let extra = self.executions.len() - MAX_EXECUTIONS_KEPT;
            self.executions.drain(..extra);
        }
        self.execution += 1;
        for i in from..self.action_count() {
            if let Some(a) = self.action_mut(i) {
                a.state = ActionState::Pending;
                a.execution_start = None;
                a.execution_stop = None;
                a.execution_duration = None;
                a.last_heartbeat = None;
                a.exit_code = None;
                a.message = None;
                a.claim_request = None;
                a.retry_at = None;
                a.attempts.clear();
            }
        }
        self.state = WorkflowState::Pending;
        self.reason = None;
        self.agent_id = None;
        self.global_execution_stop = None;
        self.cancelled = None;
        self.parked = None;
        self.machine = MachineSteps::preparing();
        self.refresh_current();
        Ok(Effect::Restarted {
            execution: self.execution,
        })
    }

    /// [`expire`](Self::expire), then [`handle`](Self::handle). Returns whether the
    /// status changed and what the event did.
    pub fn apply(
        &mut self,
        now: Timestamp,
        event: &WorkflowEvent,
    ) -> (bool, Result<Effect, Refusal>) {
        let expired = self.expire(now);
        let acknowledged = self.cancelled.as_ref().map(|c| c.acknowledged);
        let result = self.handle(now, event);
        // A refused event changes nothing, except that a cancelled action's
        // worker has now heard of the cancel (kept: the engine reads it).
        let heard = acknowledged != self.cancelled.as_ref().map(|c| c.acknowledged);
        let changed = expired
            || heard
            || matches!(&result, Ok(e) if !matches!(e, Effect::Nothing | Effect::AlreadyRecorded(_)));
        (changed, result)
    }

    /// Whether a claim by `worker` at `now` would do something: an action waits for
    /// it, or a timeout is due. Stores use it to skip workflows cheaply.
    pub fn wants_attention(&self, worker: &str, now: Timestamp) -> bool {
        self.has_work_for(worker, now) || self.next_deadline().is_some_and(|d| d <= now)
    }

    /// Whether a claim by `worker` for its question `request` would do
    /// something at `now`: something [wants its attention](Self::wants_attention),
    /// or that question already claimed the running action (its answer was
    /// lost, and the claim gives it again). Every store's cheap pre-check.
    pub fn claimable(&self, worker: &str, request: Option<&str>, now: Timestamp) -> bool {
        self.wants_attention(worker, now)
            || request.is_some_and(|r| self.claimed_by_request(worker, r))
    }

    /// Whether `worker`'s request `request` claimed the action running now (so
    /// the same request, sent again, gets it again).
    pub fn claimed_by_request(&self, worker: &str, request: &str) -> bool {
        if self.state.is_terminal() {
            return false;
        }
        let Some((t, a)) = self.current_action().and_then(|i| self.action(i)) else {
            return false;
        };
        a.state == ActionState::Running
            && self.tasks[t].agent_id == worker
            && a.claim_request.as_deref() == Some(request)
    }

    /// Whether `worker` may claim an action of this workflow at `now` (a cheap
    /// pre-check before a claim): an action waits for it, and its retry, if it
    /// is one, is due.
    pub fn has_work_for(&self, worker: &str, now: Timestamp) -> bool {
        if self.state.is_terminal() {
            return false;
        }
        let Some(i) = self.current_action() else {
            return false;
        };
        let Some((t, a)) = self.action(i) else {
            return false;
        };
        a.state == ActionState::Pending
            && self.tasks[t].agent_id == worker
            && !self.machine.is_preparing()
            && a.retry_at.is_none_or(|at| at <= now)
    }

    fn claim(&mut self, now: Timestamp, worker: &str) -> Result<Effect, Refusal> {
        let no_work = || Refusal::NoActionForWorker {
            worker: worker.to_string(),
        };
        let index = self.current_action().ok_or_else(no_work)?;
        let (task, action) = self.action(index).ok_or_else(no_work)?;
        if self.tasks[task].agent_id != worker {
            return Err(no_work());
        }
        if self.machine.is_preparing() {
            return Err(Refusal::Preparing);
        }
        if action.state == ActionState::Running {
            return Err(Refusal::AlreadyRunning {
                action: index,
                attempt: action.attempt,
            });
        }
        if action.retry_at.is_some_and(|at| at > now) {
            return Err(no_work());
        }
        if self.state == WorkflowState::Pending {
            self.state = WorkflowState::Running;
            if let Some(secs) = self.global_timeout.filter(|t| *t > 0) {
                self.global_execution_stop = now.checked_add(SignedDuration::from_secs(secs)).ok();
            }
        }
        self.agent_id = Some(worker.to_string());
        let a = self.action_mut(index).ok_or_else(no_work)?;
        a.state = ActionState::Running;
        a.attempt += 1;
        a.retry_at = None;
        a.execution_stop = None;
        a.execution_duration = None;
        a.exit_code = None;
        a.message = None;
        a.execution_start = Some(now);
        a.last_heartbeat = Some(now);
        let attempt = a.attempt;
        self.refresh_current();
        Ok(Effect::Claimed {
            action: index,
            attempt,
        })
    }

    fn running_action_mut(
        &mut self,
        index: usize,
        attempt: u32,
    ) -> Result<&mut ActionStatus, Refusal> {
        let a = self
            .action_mut(index)
            .ok_or(Refusal::UnknownAction { action: index })?;
        if a.state != ActionState::Running || a.attempt != attempt {
            return Err(Refusal::NotRunning {
                action: index,
                attempt,
                state: a.state,
                current_attempt: a.attempt,
            });
        }
        Ok(a)
    }

    /// Whether the report of `outcome` for claim `attempt` of action `index`
    /// was recorded before, as this outcome: a worker that lost the answer
    /// sends its report again, and must hear that it was kept rather than
    /// that the workflow has moved on. An action ended by a cancel was not
    /// ended by its worker's report, so a report never matches it: its worker
    /// hears of the cancel instead.
    fn recorded_before(&self, index: usize, attempt: u32, outcome: &ActionOutcome) -> bool {
        if self
            .cancelled
            .as_ref()
            .is_some_and(|c| c.running == Some((index, attempt)))
        {
            return false;
        }
        let Some((_, a)) = self.action(index) else {
            return false;
        };
        a.attempts
            .iter()
            .find(|r| r.attempt == attempt)
            .is_some_and(|r| match outcome {
                ActionOutcome::Success => r.state == ActionState::Success,
                ActionOutcome::Failed { exit_code, .. } => {
                    r.state == ActionState::Failed && r.exit_code == *exit_code
                }
                ActionOutcome::Timeout { .. } => r.state == ActionState::Timeout,
            })
    }

    fn report(
        &mut self,
        now: Timestamp,
        index: usize,
        attempt: u32,
        outcome: &ActionOutcome,
    ) -> Result<Effect, Refusal> {
        let total = self.action_count();
        let a = self.running_action_mut(index, attempt)?;
        let name = a.name.clone();
        let end = match outcome {
            ActionOutcome::Success => {
                finish_action(a, ActionState::Success, now, Some(0), String::new());
                if index + 1 == total {
                    Some((WorkflowState::Success, None))
                } else {
                    None
                }
            }
            ActionOutcome::Failed { exit_code, message } => {
                let mut why = format!("action {name:?} failed");
                if let Some(code) = exit_code {
                    why.push_str(&format!(" with exit code {code}"));
                }
                if !message.trim().is_empty() {
                    why.push_str(": ");
                    why.push_str(message.trim());
                }
                finish_action(a, ActionState::Failed, now, *exit_code, why.clone());
                let failures = a.attempts.len() as u32;
                if failures <= a.retries {
                    // Retries left: the action waits for its backoff, then any
                    // claim by its worker runs it again under a new claim number.
                    let delay = retry_delay(&a.id, a.attempt, failures);
                    let at = now
                        .checked_add(
                            SignedDuration::try_from(delay).unwrap_or(SignedDuration::ZERO),
                        )
                        .unwrap_or(now);
                    a.state = ActionState::Pending;
                    a.retry_at = Some(at);
                    a.message = Some(format!(
                        "{why}; retry {failures} of {} in {:.1} s",
                        a.retries,
                        delay.as_secs_f64()
                    ));
                    None
                } else {
                    Some((WorkflowState::Failed, Some(why)))
                }
            }
            ActionOutcome::Timeout { message } => {
                let mut why = format!("action {name:?} timed out");
                if !message.trim().is_empty() {
                    why.push_str(": ");
                    why.push_str(message.trim());
                }
                finish_action(a, ActionState::Timeout, now, None, why.clone());
                Some((WorkflowState::Timeout, Some(why)))
            }
        };
        match end {
            Some((state, reason)) => self.finish(state, reason),
            None => self.refresh_current(),
        }
        Ok(Effect::Recorded(self.state))
    }

    fn finish(&mut self, state: WorkflowState, reason: Option<String>) {
        self.state = state;
        self.reason = reason;
        self.refresh_current();
    }

    /// Recomputes `currentState` from the actions.
    fn refresh_current(&mut self) {
        let index = self
            .current_action()
            .or_else(|| self.action_count().checked_sub(1));
        self.current_state = index.and_then(|i| {
            let (t, a) = self.action(i)?;
            Some(CurrentState {
                agent_id: self.tasks[t].agent_id.clone(),
                task_name: self.tasks[t].name.clone(),
                action_name: a.name.clone(),
                action_index: i,
                state: a.state,
            })
        });
    }
}

fn finish_action(
    a: &mut ActionStatus,
    state: ActionState,
    now: Timestamp,
    exit_code: Option<i32>,
    message: String,
) {
    a.state = state;
    a.execution_stop = Some(now);
    if let Some(start) = a.execution_start {
        let d = now.duration_since(start);
        a.execution_duration = Some(format!("{:.3}s", d.as_secs_f64()));
    }
    a.exit_code = exit_code;
    if !message.is_empty() {
        a.message = Some(message);
    }
    a.attempts.push(AttemptRecord {
        attempt: a.attempt,
        state,
        started: a.execution_start,
        stopped: a.execution_stop,
        duration: a.execution_duration.clone(),
        exit_code,
        message: a.message.clone(),
    });
}

/// The wait before retry number `failures` of the action `id` whose attempt
/// `attempt` failed: the shared backoff, seeded from both (pure, repeatable).
fn retry_delay(id: &str, attempt: u32, failures: u32) -> Duration {
    // FNV-1a: a stable seed from the action's id, not a security boundary.
    let mut seed: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes().chain(attempt.to_le_bytes()) {
        seed = (seed ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    Backoff::with_seed(ACTION_RETRY_BACKOFF, seed).delay_for(failures)
}

fn min_ts(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}
