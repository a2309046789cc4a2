//! `ActionRuntime`: runs one workflow action (a container image with command,
//! environment and volumes, or a native built-in) to an outcome.

use crate::error::Result;
pub use crate::state::ActionOutcome;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionSpec {
    /// The workflow, `namespace/name`.
    pub workflow: String,
    /// The action's name.
    pub name: String,
    /// The image.
    pub image: String,
    /// Command (arguments to the image's entrypoint).
    pub command: Vec<String>,
    /// Environment.
    pub environment: BTreeMap<String, String>,
    /// Volumes, `host:container[:ro]`.
    pub volumes: Vec<String>,
    /// PID namespace (`host`).
    pub pid: Option<String>,
    /// Time limit; the runtime stops the action and reports a timeout when it passes.
    pub timeout: Option<Duration>,
}

/// Which stream a line of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl std::fmt::Display for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        })
    }
}

/// Receives an action's output line by line, as it is produced.
pub trait OutputSink: Send + Sync {
    /// One line, without its newline.
    fn line(&self, stream: Stream, line: &str);
}

/// Collects output in memory (for tests and short actions).
#[derive(Debug, Default)]
pub struct CollectOutput(pub std::sync::Mutex<Vec<(Stream, String)>>);

impl OutputSink for CollectOutput {
    fn line(&self, stream: Stream, line: &str) {
        if let Ok(mut v) = self.0.lock() {
            v.push((stream, line.to_string()));
        }
    }
}

/// A cancellation signal shared between the caller and a running action.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<(AtomicBool, Notify)>);

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels; every waiter wakes.
    pub fn cancel(&self) {
        self.0.0.store(true, Ordering::SeqCst);
        self.0.1.notify_waiters();
    }

    /// Whether it was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.0.load(Ordering::SeqCst)
    }

    /// Resolves once cancelled.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.0.1.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// Runs actions.
///
/// `run` returns `Ok` with the action's outcome (a non-zero exit is
/// `ActionOutcome::Failed`, not an error); `Err` means the runtime itself failed
/// (engine unreachable, image not found). On cancellation the runtime stops the
/// action, cleans up, and returns `Failed` with a message saying so.
///
/// ```
/// use async_trait::async_trait;
/// use std::sync::Arc;
/// use tinker_core::runtime::{ActionOutcome, ActionRuntime, ActionSpec, CancelToken, CollectOutput, OutputSink, Stream};
///
/// /// Echoes the action's environment.
/// #[derive(Debug)]
/// struct Echo;
///
/// #[async_trait]
/// impl ActionRuntime for Echo {
///     async fn run(&self, spec: &ActionSpec, out: &dyn OutputSink, _cancel: &CancelToken)
///         -> tinker_core::Result<ActionOutcome> {
///         for (k, v) in &spec.environment { out.line(Stream::Stdout, &format!("{k}={v}")); }
///         Ok(ActionOutcome::Success)
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let runtime: Arc<dyn ActionRuntime> = Arc::new(Echo);
/// let spec = ActionSpec { workflow: "default/wf".into(), name: "hello".into(), image: "echo".into(),
///     command: vec![], environment: [("A".to_string(), "1".to_string())].into(), volumes: vec![],
///     pid: None, timeout: None };
/// let out = CollectOutput::default();
/// assert_eq!(runtime.run(&spec, &out, &CancelToken::new()).await.unwrap(), ActionOutcome::Success);
/// assert_eq!(out.0.lock().unwrap()[0].1, "A=1");
/// # });
/// ```
#[async_trait]
pub trait ActionRuntime: Send + Sync + Debug + 'static {
    /// Runs one action to its end, its timeout, or cancellation.
    async fn run(
        &self,
        spec: &ActionSpec,
        output: &dyn OutputSink,
        cancel: &CancelToken,
    ) -> Result<ActionOutcome>;
}
