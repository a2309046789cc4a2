//! The worker agent: the loop that runs on the machine in its in-memory OS. It
//! asks the control plane for its next action, runs it, streams its output,
//! heartbeats while it runs, and reports how it ended; then asks again.
//!
//! It survives a control plane that goes away: every call is retried with
//! backoff (jittered, so a rack that lost its control plane together does not
//! come back together) on the next replica, never sooner than an overloaded
//! control plane's `Retry-After` asks (up to [`MAX_SERVER_PAUSE`]); a report is
//! retried until the control plane has it (the action is never run a second
//! time: the control plane gave it once, and keeps refusing to give it again). Actions that end
//! the in-memory OS (`kexec`, `reboot`) take their final step only after their
//! success report is acknowledged.
//!
//! Its parts, as quinn splits a QUIC connection:
//! - [`AgentCore`]: every decision above, as a state machine without I/O;
//! - [`Transport`]: how a request reaches a replica ([`HttpTransport`] is the
//!   worker API over HTTP; another wire protocol goes beside it);
//! - [`Agent`]: the tokio driver that runs the core with a [`Clock`], a
//!   transport and an [`ActionRuntime`](tinker_core::runtime::ActionRuntime),
//!   and tells an [`EventSink`] what happens.
//!
//! [`Clock`]: tinker_core::clock::Clock

mod core;
mod driver;
mod events;
mod http;
mod tls;
mod transport;

pub use self::core::{
    AgentCore, FIRST_RETRY, MAX_ACTION_TIMEOUT, MAX_SERVER_PAUSE, Output, RequestId, Transmit,
    action_spec,
};
pub use driver::Agent;
pub use events::{AgentEvent, EventSink, TracingEvents};
pub use http::{DEFAULT_TIMEOUT, DEFAULT_WAIT, HttpTransport, decode, decode_answer, encode};
pub use tls::{ServerTrust, fingerprint_text};
pub use transport::{Answer, HeartbeatAnswer, Reply, ReportAnswer, Request, RetryAfter, Transport};

pub use crate::router::RuntimeRouter;

use std::time::Duration;
use tinker_core::Secret;

/// Agent settings. Made with [`AgentConfig::new`] and the `with_*` methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AgentConfig {
    /// The control plane, such as `http://10.0.0.1:8080`; or several replicas
    /// separated by commas (`http://10.0.0.1:8080,http://10.0.0.2:8080`): the agent
    /// talks to one and moves to the next when it is unreachable or overloaded.
    /// Every replica shares one store, so a report can go to any of them.
    pub server: String,
    /// This worker's id (its MAC, usually).
    pub worker_id: String,
    /// Its bearer token.
    pub token: Secret,
    /// Longest wait between retries of the agent's own backoff (a control
    /// plane's `Retry-After` may ask for longer, up to [`MAX_SERVER_PAUSE`]).
    pub max_backoff: Duration,
    /// Stop after this many actions (tests); `None`: run until shut down.
    pub max_actions: Option<usize>,
    /// Stop when the control plane has had nothing to do for this long (tests).
    pub idle_exit: Option<Duration>,
    /// The least wait before asking again when there is nothing to do; the
    /// control plane's `retry_after_seconds` lengthens it (up to a minute).
    pub poll_interval: Duration,
    /// Seeds the retry jitter, for runs that must repeat exactly (simulations);
    /// `None`: seeded by the operating system.
    pub jitter_seed: Option<u64>,
}

impl AgentConfig {
    /// Settings for worker `worker_id` with `token`, talking to `server` (one
    /// URL, or several separated by commas); retries wait at most 10 s, and the
    /// agent runs until shut down.
    pub fn new(
        server: impl Into<String>,
        worker_id: impl Into<String>,
        token: impl Into<Secret>,
    ) -> Self {
        AgentConfig {
            server: server.into(),
            worker_id: worker_id.into(),
            token: token.into(),
            max_backoff: Duration::from_secs(10),
            max_actions: None,
            idle_exit: None,
            poll_interval: Duration::from_millis(500),
            jitter_seed: None,
        }
    }

    /// Waits at most `max` between retries.
    pub fn with_max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// Stops after `n` actions.
    pub fn with_max_actions(mut self, n: usize) -> Self {
        self.max_actions = Some(n);
        self
    }

    /// Stops once the control plane has had nothing to do for `idle`.
    pub fn with_idle_exit(mut self, idle: Duration) -> Self {
        self.idle_exit = Some(idle);
        self
    }

    /// Asks again after `every` when there is nothing to do.
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// Seeds the retry jitter.
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = Some(seed);
        self
    }

    /// The replicas of [`AgentConfig::server`], in order, without trailing
    /// slashes (never empty).
    pub fn replicas(&self) -> Vec<String> {
        let list: Vec<String> = self
            .server
            .split(',')
            .map(|s| s.trim().trim_end_matches('/').to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if list.is_empty() {
            vec![self.server.clone()]
        } else {
            list
        }
    }
}

/// What the agent did, for its caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentSummary {
    /// Actions run, as `workflow/action: outcome (workflow state)`.
    pub ran: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_split_and_the_token_never_shows() {
        let c = AgentConfig::new(" http://a:8080/ ,http://b:8080,", "w1", "s3cr3t-token");
        assert_eq!(c.replicas(), ["http://a:8080", "http://b:8080"]);
        let shown = format!("{c:?} {:?}", HttpTransport::new(c.token.clone()));
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert_eq!(c.token.expose(), "s3cr3t-token");
    }
}
