//! [`Transport`]: how the agent's requests reach the control plane. The agent's
//! core decides *what* to ask and *which replica* to ask; a transport only
//! carries one request to one replica and brings back its typed answer. The HTTP
//! client ([`HttpTransport`](super::HttpTransport)) is the first; another wire
//! protocol (gRPC) or an in-process one (a simulated rack) sits beside it.

use async_trait::async_trait;
use std::fmt::Debug;
use tinker_core::Result;
use tinker_core::state::WorkflowState;
use tinker_core::worker_api::{
    ActionReport, Heartbeat, LogBatch, NextActionRequest, NextActionResponse,
};

/// One request of the worker API.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// Ask for the next action.
    NextAction(NextActionRequest),
    /// Report how an action ended.
    Report(ActionReport),
    /// Say that an action is still running.
    Heartbeat(Heartbeat),
    /// Send output lines of a running action.
    Logs(LogBatch),
}

impl Request {
    /// The operation's name, as the worker API's path ends (`next-action`,
    /// `report`, `heartbeat`, `logs`).
    pub fn operation(&self) -> &'static str {
        match self {
            Request::NextAction(_) => "next-action",
            Request::Report(_) => "report",
            Request::Heartbeat(_) => "heartbeat",
            Request::Logs(_) => "logs",
        }
    }

    /// The worker the request speaks for.
    pub fn worker_id(&self) -> &str {
        match self {
            Request::NextAction(r) => &r.worker_id,
            Request::Report(r) => &r.worker_id,
            Request::Heartbeat(h) => &h.worker_id,
            Request::Logs(l) => &l.worker_id,
        }
    }
}

/// The control plane's answer to a [`Request`], of the same kind.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    /// The answer to [`Request::NextAction`].
    NextAction(NextActionResponse),
    /// The answer to [`Request::Report`].
    Report(ReportAnswer),
    /// The answer to [`Request::Heartbeat`].
    Heartbeat(HeartbeatAnswer),
    /// The logs were taken.
    Logs,
}

/// Whether the control plane took a report.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReportAnswer {
    /// Recorded; the workflow is now in this state (when the answer said).
    Accepted {
        /// The workflow's state after the report.
        workflow_state: Option<WorkflowState>,
    },
    /// Refused for good (a stale claim, an unknown workflow): no final step may
    /// follow.
    Refused {
        /// Why, as the control plane said it.
        reason: String,
    },
}

/// Whether the running action may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeartbeatAnswer {
    /// Go on.
    Continue,
    /// The control plane stopped the action (the workflow was cancelled, timed
    /// out, or handed the action elsewhere): cancel it.
    Stop,
}

/// Carries one request to one control-plane replica.
///
/// The error says whether to try again: an error for which
/// [`Retryable::is_retryable`](tinker_core::Retryable::is_retryable) holds
/// (unreachable, overloaded, timed out) makes the agent back off and move to the
/// next replica; any other (bad credentials) ends the agent's run. Answers the
/// control plane gives for good (a refused report, a stopped heartbeat) are
/// [`Reply`] values, not errors.
///
/// ```
/// use async_trait::async_trait;
/// use tinker_actions::agent::{HeartbeatAnswer, Reply, ReportAnswer, Request, Transport};
/// use tinker_core::worker_api::NextActionResponse;
///
/// /// A control plane with nothing to do.
/// #[derive(Debug)]
/// struct Idle;
///
/// #[async_trait]
/// impl Transport for Idle {
///     async fn send(&self, _replica: &str, request: &Request) -> tinker_core::Result<Reply> {
///         Ok(match request {
///             Request::NextAction(_) => Reply::NextAction(NextActionResponse::Wait {
///                 retry_after_seconds: 1,
///                 reason: "nothing to do".into(),
///             }),
///             Request::Report(_) => Reply::Report(ReportAnswer::Refused { reason: "no action".into() }),
///             Request::Heartbeat(_) => Reply::Heartbeat(HeartbeatAnswer::Stop),
///             _ => Reply::Logs,
///         })
///     }
/// }
/// ```
#[async_trait]
pub trait Transport: Send + Sync + Debug + 'static {
    /// Sends `request` to `replica` (one of the agent's configured control-plane
    /// addresses) and returns its answer.
    async fn send(&self, replica: &str, request: &Request) -> Result<Reply>;
}
