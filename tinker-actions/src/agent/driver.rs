//! [`Agent`]: the thin tokio driver around [`AgentCore`]. It owns what the core
//! must not: the clock's sleeps, the transport's requests in flight, the running
//! action, and the final step. Every decision is the core's.

use super::core::{AgentCore, Output, RequestId, Transmit, action_spec};
use super::events::{AgentEvent, EventSink, TracingEvents};
use super::http::HttpTransport;
use super::transport::{Answer, Transport};
use super::{AgentConfig, AgentSummary};
use crate::native::NativeRuntime;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use jiff::Timestamp;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tinker_core::Result;
use tinker_core::clock::{Clock, SharedClock, SystemClock};
use tinker_core::runtime::{
    ActionOutcome, ActionRuntime, ActionSpec, CancelToken, OutputSink, Stream,
};
use tinker_core::worker_api::LogLine;

/// The worker agent: runs actions from the control plane until shut down.
///
/// By default it speaks HTTP ([`HttpTransport`]), reads the system clock and
/// logs through `tracing`; each can be replaced.
///
/// ```no_run
/// use std::sync::Arc;
/// use tinker_actions::NativeRuntime;
/// use tinker_actions::agent::{Agent, AgentConfig};
///
/// # async fn run() -> tinker_core::Result<()> {
/// let native = NativeRuntime::new();
/// let agent = Agent::new(
///     AgentConfig::new("http://10.0.0.1:8080,http://10.0.0.2:8080", "52:54:00:12:34:56", "token"),
///     Arc::new(native.clone()),
///     Some(native),
/// );
/// let summary = agent.run(std::future::pending()).await?;
/// println!("{} actions", summary.ran.len());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
    runtime: Arc<dyn ActionRuntime>,
    native: Option<NativeRuntime>,
    transport: Option<Arc<dyn Transport>>,
    clock: SharedClock,
    events: Arc<dyn EventSink>,
    instance: Option<String>,
}

/// Counts the runs in this process, so two runs never share request ids, even
/// under a clock that stands still.
static RUNS: AtomicU64 = AtomicU64::new(0);

impl Agent {
    /// An agent that runs actions with `runtime`; `native` (if given) decides the
    /// final steps of `kexec` and `reboot`.
    pub fn new(
        config: AgentConfig,
        runtime: Arc<dyn ActionRuntime>,
        native: Option<NativeRuntime>,
    ) -> Self {
        Agent {
            config,
            runtime,
            native,
            transport: None,
            clock: SystemClock::shared(),
            events: Arc::new(TracingEvents),
            instance: None,
        }
    }

    /// Names this run `instance` (request ids are made from it) instead of a
    /// name made from the process id and the time. It must differ from every
    /// earlier run of this worker; a simulation sets it so that runs repeat.
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// Reaches the control plane through `transport` instead of HTTP.
    pub fn with_transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Reads time from `clock` (and has the default HTTP transport measure its
    /// time limit on it).
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Tells `events` what the agent does, instead of logging it.
    pub fn with_events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = events;
        self
    }

    /// Runs until `shutdown` resolves (heeded between actions) or the configured
    /// limits are reached. Fails when the control plane refuses the worker's
    /// credentials, or a final step fails.
    pub async fn run(
        &self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<AgentSummary> {
        let now = self.clock.now();
        let instance = self.instance.clone().unwrap_or_else(|| {
            format!(
                "{:x}-{:x}-{:x}",
                std::process::id(),
                now.as_nanosecond(),
                RUNS.fetch_add(1, Ordering::Relaxed)
            )
        });
        let mut d = Driver {
            agent: self,
            core: AgentCore::new(&self.config, instance, now),
            transport: self.transport.clone().unwrap_or_else(|| {
                Arc::new(
                    HttpTransport::new(self.config.token.clone()).with_clock(self.clock.clone()),
                )
            }),
            collector: Arc::new(Collector {
                lines: Mutex::new(Vec::new()),
                events: self.events.clone(),
            }),
            calls: FuturesUnordered::new(),
            action: None,
            spec: None,
            cancel: CancelToken::new(),
        };
        tokio::pin!(shutdown);
        loop {
            if let Some(result) = d.perform().await {
                return result;
            }
            let deadline = d.core.poll_timeout();
            // Biased: when several are ready, the same one goes first every time,
            // so a run under a manual clock repeats exactly.
            tokio::select! {
                biased;
                () = &mut shutdown, if d.core.is_idle() => return Ok(d.core.summary().clone()),
                Some((id, answer)) = d.calls.next(), if !d.calls.is_empty() => {
                    d.feed_output();
                    d.core.handle_answer(self.clock.now(), id, answer);
                }
                outcome = running(&mut d.action), if d.action.is_some() => {
                    d.action = None;
                    d.feed_output();
                    d.core.handle_action_finished(self.clock.now(), outcome);
                }
                () = sleep_until(self.clock.as_ref(), deadline), if deadline.is_some() => {
                    d.feed_output();
                    d.core.handle_timeout(self.clock.now());
                }
            }
        }
    }
}

/// One run's moving parts.
struct Driver<'a> {
    agent: &'a Agent,
    core: AgentCore,
    transport: Arc<dyn Transport>,
    collector: Arc<Collector>,
    calls: FuturesUnordered<BoxFuture<'static, (RequestId, Answer)>>,
    action: Option<BoxFuture<'static, ActionOutcome>>,
    spec: Option<ActionSpec>,
    cancel: CancelToken,
}

impl Driver<'_> {
    /// Does what the core asks, in order; returns the run's result once the
    /// core is done.
    async fn perform(&mut self) -> Option<Result<AgentSummary>> {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Send(t) => self.send(t),
                Output::StartAction(a) => self.start(action_spec(&a)),
                Output::CancelAction => self.cancel.cancel(),
                Output::Event(e) => self.agent.events.event(&e),
                Output::TakeFinalStep => {
                    if let Err(e) = self.final_step().await {
                        return Some(Err(e));
                    }
                }
                Output::Done(result) => return Some(result),
            }
        }
        None
    }

    fn send(&mut self, t: Transmit) {
        let transport = self.transport.clone();
        self.calls.push(Box::pin(async move {
            (t.id, transport.call(&t.replica, &t.request).await)
        }));
    }

    fn start(&mut self, spec: ActionSpec) {
        self.cancel = CancelToken::new();
        let (runtime, sink, cancel) = (
            self.agent.runtime.clone(),
            self.collector.clone(),
            self.cancel.clone(),
        );
        let run = spec.clone();
        self.action = Some(Box::pin(async move {
            runtime
                .run(&run, sink.as_ref(), &cancel)
                .await
                .unwrap_or_else(|e| ActionOutcome::Failed {
                    exit_code: None,
                    message: e.to_string(),
                })
        }));
        self.spec = Some(spec);
    }

    /// The acknowledged action's final step, when the native runtime gives it one.
    async fn final_step(&mut self) -> Result<()> {
        let step = match (&self.agent.native, self.spec.take()) {
            (Some(native), Some(spec)) => native.final_step(&spec),
            _ => None,
        };
        if let Some(step) = step {
            self.agent
                .events
                .event(&AgentEvent::FinalStep(step.clone()));
            step.take().await?;
        }
        Ok(())
    }

    fn feed_output(&mut self) {
        for line in self.collector.take() {
            self.core.handle_output(line);
        }
    }
}

/// The running action's output: shown to the event sink as it comes, and kept
/// for the core's next batch.
struct Collector {
    lines: Mutex<Vec<LogLine>>,
    events: Arc<dyn EventSink>,
}

impl Collector {
    fn take(&self) -> Vec<LogLine> {
        self.lines
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default()
    }
}

impl OutputSink for Collector {
    fn line(&self, stream: Stream, line: &str) {
        self.events.event(&AgentEvent::Output {
            stream,
            line: line.to_string(),
        });
        if let Ok(mut l) = self.lines.lock() {
            l.push(LogLine {
                stream,
                text: line.to_string(),
            });
        }
    }
}

async fn running(action: &mut Option<BoxFuture<'static, ActionOutcome>>) -> ActionOutcome {
    match action {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(clock: &dyn Clock, deadline: Option<Timestamp>) {
    match deadline {
        Some(t) => clock.sleep_until(t).await,
        None => std::future::pending().await,
    }
}
