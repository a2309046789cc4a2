//! [`Transport`]: how the agent's requests reach the control plane. The agent's
//! core decides *what* to ask and *which replica* to ask; a transport only
//! carries one request to one replica and brings back its typed answer. The HTTP
//! client ([`HttpTransport`](super::HttpTransport)) is the first; another wire
//! protocol (gRPC) or an in-process one (a simulated rack) sits beside it.

use async_trait::async_trait;
use jiff::Timestamp;
use std::fmt::Debug;
use std::time::Duration;
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

/// When the control plane asked to be called again: the HTTP `Retry-After`
/// field of a 503 or 429 answer (RFC 9110 §10.2.3), read by the transport.
/// The agent's core waits at least this long before retrying the call
/// (bounded, so a wrong server cannot park the agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryAfter {
    /// After this long (the `delay-seconds` form).
    Delay(Duration),
    /// Not before this time (the `HTTP-date` form).
    At(Timestamp),
}

impl RetryAfter {
    /// Reads a `Retry-After` field value: `delay-seconds` (digits; a number too
    /// large for a `u64` is the largest delay), or an `HTTP-date` in any of the
    /// three forms RFC 9110 §5.6.7 has recipients accept. Anything else (empty,
    /// negative, fractional, not ASCII) is `None`: no advice.
    pub fn parse(value: &[u8]) -> Option<RetryAfter> {
        let value = value.trim_ascii();
        if !value.is_empty() && value.iter().all(u8::is_ascii_digit) {
            // Only digits: the one way to fail is overflow.
            let seconds = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(u64::MAX);
            return Some(RetryAfter::Delay(Duration::from_secs(seconds)));
        }
        let date = httpdate::parse_http_date(std::str::from_utf8(value).ok()?).ok()?;
        Timestamp::try_from(date).ok().map(RetryAfter::At)
    }

    /// How long after `now` the control plane asked to be called again (zero
    /// for a date already past). An HTTP-date is read on the agent's clock:
    /// a server whose clock is ahead asks for a little more.
    pub fn delay_from(&self, now: Timestamp) -> Duration {
        match *self {
            RetryAfter::Delay(d) => d,
            RetryAfter::At(at) => Duration::try_from(at.duration_since(now)).unwrap_or_default(),
        }
    }
}

/// A [`Reply`] (or the error in its place) with the control plane's advice on
/// when to call again, as a [`Transport`] brings it back.
#[derive(Debug)]
#[non_exhaustive]
pub struct Answer {
    /// The answer.
    pub reply: Result<Reply>,
    /// The `Retry-After` of an overloaded (503) or rate-limiting (429) answer.
    pub retry_after: Option<RetryAfter>,
}

impl Answer {
    /// `self` with the control plane's advice `retry_after`.
    pub fn with_retry_after(mut self, retry_after: Option<RetryAfter>) -> Self {
        self.retry_after = retry_after;
        self
    }
}

impl From<Result<Reply>> for Answer {
    /// An answer without advice.
    fn from(reply: Result<Reply>) -> Self {
        Answer {
            reply,
            retry_after: None,
        }
    }
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

    /// Sends `request` to `replica` like [`Transport::send`], and brings back
    /// the control plane's advice on when to call again with its answer; the
    /// agent calls this one. A transport whose protocol carries such advice
    /// ([`HttpTransport`](super::HttpTransport): `Retry-After`) implements it,
    /// and a wrapper around another transport forwards it; by default there is
    /// no advice.
    async fn call(&self, replica: &str, request: &Request) -> Answer {
        self.send(replica, request).await.into()
    }
}
