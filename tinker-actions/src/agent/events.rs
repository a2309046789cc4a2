//! What the agent tells its caller while it works: [`AgentEvent`]s, delivered to
//! an [`EventSink`] the caller chooses. The library never prints; the default
//! sink ([`TracingEvents`]) logs through `tracing`, and the worker example's
//! sink prints to the machine's console (an event's `Display` is its console
//! line).

use crate::native::FinalStep;
use std::fmt;
use std::time::Duration;
use tinker_core::runtime::{ActionOutcome, Stream};

/// Something the agent did or saw.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentEvent {
    /// An action was handed out and starts now.
    ActionStarted {
        /// The workflow, `namespace/name`.
        workflow_id: String,
        /// The action's position.
        action_index: usize,
        /// The action's name.
        name: String,
        /// Its image (or built-in).
        image: String,
    },
    /// A line of the running action's output.
    Output {
        /// Which stream.
        stream: Stream,
        /// The line, without newline.
        line: String,
    },
    /// The control plane answered a heartbeat with "stop"; the action is cancelled.
    StoppedByControlPlane {
        /// The workflow, `namespace/name`.
        workflow_id: String,
        /// The action's position.
        action_index: usize,
    },
    /// An action ended (before its report is sent).
    ActionEnded {
        /// The workflow, `namespace/name`.
        workflow_id: String,
        /// The action's position.
        action_index: usize,
        /// The action's name.
        name: String,
        /// How it ended.
        outcome: ActionOutcome,
    },
    /// The control plane refused a report; no final step follows.
    ReportRefused {
        /// The workflow, `namespace/name`.
        workflow_id: String,
        /// The action's position.
        action_index: usize,
        /// Why, as the control plane said.
        reason: String,
    },
    /// The agent takes an action's final step (kexec, reboot) now that its
    /// success is reported.
    FinalStep(FinalStep),
    /// A call failed in a way worth another try; it is retried after `delay`.
    Retrying {
        /// The call (`next action`, `logs`, `report`).
        what: &'static str,
        /// The replica that failed.
        replica: String,
        /// The error.
        error: String,
        /// The wait before the retry.
        delay: Duration,
    },
    /// The control plane has no action for this machine yet; the agent asks
    /// again after its poll interval.
    NoActionYet {
        /// Why, as the control plane said (no workflow, the machine being
        /// prepared, an earlier action still running).
        reason: String,
    },
    /// A replica failed; the agent talks to another from now on.
    FailedOver {
        /// The replica that failed.
        from: String,
        /// The one in use now.
        to: String,
    },
}

impl fmt::Display for AgentEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentEvent::ActionStarted {
                workflow_id,
                action_index,
                name,
                image,
            } => write!(f, "{workflow_id} action {action_index} {name:?} ({image})"),
            AgentEvent::Output { line, .. } => write!(f, "  | {line}"),
            AgentEvent::StoppedByControlPlane { .. } => {
                f.write_str("the control plane stopped this action")
            }
            AgentEvent::ActionEnded {
                workflow_id,
                action_index,
                name,
                outcome,
            } => write!(
                f,
                "{workflow_id} action {action_index} {name:?}: {outcome:?}"
            ),
            AgentEvent::ReportRefused { reason, .. } => write!(
                f,
                "the control plane refused the report ({reason}); not taking any final step"
            ),
            AgentEvent::FinalStep(step) => write!(f, "taking the final step {step:?}"),
            AgentEvent::Retrying {
                what,
                replica,
                error,
                delay,
            } => write!(
                f,
                "{what}: {replica} unavailable ({error}); retrying in {} ms",
                delay.as_millis()
            ),
            AgentEvent::FailedOver { from, to } => write!(f, "{from} failed; moving to {to}"),
            AgentEvent::NoActionYet { reason } => write!(f, "no action yet: {reason}"),
        }
    }
}

/// Receives the agent's events. Called on the agent's task: keep it quick.
pub trait EventSink: Send + Sync + fmt::Debug + 'static {
    /// One event.
    fn event(&self, event: &AgentEvent);
}

/// Logs every event through `tracing` (output lines at `debug`, retries and
/// refusals at `warn`, the rest at `info`). The agent's default sink.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingEvents;

impl EventSink for TracingEvents {
    fn event(&self, event: &AgentEvent) {
        match event {
            AgentEvent::Output { stream, line } => {
                tracing::debug!(?stream, line = line.as_str(), "action output")
            }
            AgentEvent::Retrying {
                what,
                replica,
                error,
                delay,
            } => tracing::warn!(
                what,
                replica = replica.as_str(),
                error = error.as_str(),
                retry_in_ms = delay.as_millis() as u64,
                "control plane unavailable; retrying"
            ),
            AgentEvent::ReportRefused { .. } | AgentEvent::FailedOver { .. } => {
                tracing::warn!("{event}")
            }
            _ => tracing::info!("{event}"),
        }
    }
}
