//! The worker agent: the loop that runs on the machine in its in-memory OS. It
//! asks the control plane for its next action, runs it, streams its output,
//! heartbeats while it runs, and reports how it ended; then asks again.
//!
//! It survives a control plane that goes away: every call is retried with
//! backoff, and a report is retried until the control plane has it (the action is
//! never run a second time: the control plane gave it once, and keeps refusing to
//! give it again). Actions that end the in-memory OS (`kexec`, `reboot`) take their
//! final step only after their success report is acknowledged.

use crate::native::{FinalStep, NativeRuntime};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tinker_core::runtime::{
    ActionOutcome, ActionRuntime, ActionSpec, CancelToken, OutputSink, Stream,
};
use tinker_core::worker_api::{
    ActionReport, Heartbeat, LogBatch, LogLine, NextActionResponse, ReportResponse, WorkerAction,
};
use tinker_core::{Error, Result};

/// Agent settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The control plane, such as `http://10.0.0.1:8080`; or several replicas
    /// separated by commas (`http://10.0.0.1:8080,http://10.0.0.2:8080`): the agent
    /// talks to one and moves to the next when it is unreachable or overloaded.
    /// Every replica shares one store, so a report can go to any of them.
    pub server: String,
    /// This worker's id (its MAC, usually).
    pub worker_id: String,
    /// Its bearer token.
    pub token: String,
    /// Longest wait between retries.
    pub max_backoff: Duration,
    /// Stop after this many actions (tests); `None`: run until shut down.
    pub max_actions: Option<usize>,
    /// Stop when the control plane has had nothing to do for this long (tests).
    pub idle_exit: Option<Duration>,
    /// Print progress and action output on the console (the machine's screen).
    pub console: bool,
}

/// What the agent did, for its caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentSummary {
    /// Actions run, as `workflow/action: outcome`.
    pub ran: Vec<String>,
}

/// The agent.
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
    runtime: Arc<dyn ActionRuntime>,
    native: Option<NativeRuntime>,
    client: Client<HttpConnector, Full<Bytes>>,
    /// The replicas of `config.server`, parsed once.
    servers: Vec<String>,
    /// Which of them is in use (an index that only grows).
    current: std::sync::atomic::AtomicUsize,
    /// This agent's run, unique per start (request ids are made from it).
    instance: String,
}

struct Streamer {
    lines: Mutex<Vec<LogLine>>,
    console: bool,
}

impl OutputSink for Streamer {
    fn line(&self, stream: Stream, line: &str) {
        if self.console {
            println!("  | {line}");
        }
        if let Ok(mut l) = self.lines.lock() {
            l.push(LogLine {
                stream,
                text: line.to_string(),
            });
        }
    }
}

impl Agent {
    fn say(&self, line: String) {
        if self.config.console {
            println!("{line}");
        }
    }

    /// An agent that runs actions with `runtime`; `native` (if given) decides the
    /// final steps of `kexec` and `reboot`.
    pub fn new(
        config: AgentConfig,
        runtime: Arc<dyn ActionRuntime>,
        native: Option<NativeRuntime>,
    ) -> Self {
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let servers = {
            let list: Vec<String> = config
                .server
                .split(',')
                .map(|s| s.trim().trim_end_matches('/').to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if list.is_empty() {
                vec![config.server.clone()]
            } else {
                list
            }
        };
        Agent {
            config,
            runtime,
            native,
            client,
            servers,
            current: Default::default(),
            instance: {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                format!("{:x}-{:x}", std::process::id(), nanos)
            },
        }
    }

    /// The server in use now.
    fn server(&self) -> &str {
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed) % self.servers.len();
        &self.servers[i]
    }

    /// Moves to the next replica (after `target` failed; several calls may fail at
    /// once, and only the first of them moves on).
    fn fail_over(&self, target: &str) {
        if self.servers.len() > 1 && self.server() == target {
            self.current
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    async fn post<B: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        op: &str,
        body: &B,
    ) -> Result<(StatusCode, Option<R>)> {
        let target = self.server().to_string();
        let result = self.post_to(&target, op, body).await;
        if matches!(&result, Err(e) if tinker_core::Retryable::is_retryable(e)) {
            self.fail_over(&target);
        }
        result
    }

    async fn post_to<B: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        target: &str,
        op: &str,
        body: &B,
    ) -> Result<(StatusCode, Option<R>)> {
        let url = format!("{target}/v1/workers/{}/{op}", self.config.worker_id);
        let req = Request::builder()
            .method(Method::POST)
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.config.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                serde_json::to_vec(body).map_err(|e| Error::backend("agent", e))?,
            )))
            .map_err(|e| Error::backend("agent", e))?;
        let target = target.to_string();
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .map_err(|_| Error::Timeout {
                target: target.clone(),
                operation: op.to_string(),
                seconds: 30,
            })?
            .map_err(|e| Error::Unreachable {
                target: target.clone(),
                reason: e.to_string(),
            })?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Unreachable {
                target: target.clone(),
                reason: e.to_string(),
            })?
            .to_bytes();
        if status == StatusCode::UNAUTHORIZED {
            return Err(Error::AuthenticationFailed { target });
        }
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(Error::Unreachable {
                target,
                reason: format!("{op}: {status}"),
            });
        }
        Ok((status, serde_json::from_slice(&bytes).ok()))
    }

    /// Retries `call` with backoff until it gets an answer (or a non-transient error).
    async fn retry<T, F, Fut>(&self, what: &str, call: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut delay = Duration::from_millis(200);
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) if tinker_core::Retryable::is_retryable(&e) => {
                    tracing::warn!(what, error = %e, retry_in_ms = delay.as_millis() as u64, "control plane unavailable; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.config.max_backoff);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs until `shutdown` resolves (or the configured limits are reached).
    pub async fn run(
        &self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<AgentSummary> {
        tokio::pin!(shutdown);
        let mut summary = AgentSummary::default();
        let mut idle_since = tokio::time::Instant::now();
        let mut asked: u64 = 0;
        loop {
            if self
                .config
                .max_actions
                .is_some_and(|m| summary.ran.len() >= m)
            {
                return Ok(summary);
            }
            // One id per question, kept across its retries: if the answer that
            // handed out an action is lost, asking again gets that action back.
            asked += 1;
            let req = tinker_core::worker_api::NextActionRequest {
                worker_id: self.config.worker_id.clone(),
                request_id: Some(format!("{}-{asked}", self.instance)),
            };
            let next = tokio::select! {
                _ = &mut shutdown => return Ok(summary),
                r = self.retry("next action", || self.post::<_, NextActionResponse>("next-action", &req)) => r?,
            };
            match next.1 {
                Some(NextActionResponse::Action(action)) => {
                    idle_since = tokio::time::Instant::now();
                    let (line, final_step) = self.run_action(&action).await?;
                    summary.ran.push(line);
                    if let Some(step) = final_step {
                        self.say(format!("tinker: taking the final step {step:?}"));
                        step.take().await?;
                    }
                }
                _ => {
                    if self
                        .config
                        .idle_exit
                        .is_some_and(|d| idle_since.elapsed() >= d)
                    {
                        return Ok(summary);
                    }
                    tokio::select! {
                        _ = &mut shutdown => return Ok(summary),
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }

    async fn run_action(&self, a: &WorkerAction) -> Result<(String, Option<FinalStep>)> {
        self.say(format!(
            "tinker: {} action {} {:?} ({})",
            a.workflow_id, a.action_index, a.name, a.image
        ));
        let spec = ActionSpec {
            workflow: a.workflow_id.clone(),
            name: a.name.clone(),
            image: a.image.clone(),
            command: a.command.clone(),
            environment: a.environment.clone(),
            volumes: a.volumes.clone(),
            pid: a.pid.clone(),
            timeout: a.timeout_seconds.map(Duration::from_secs),
        };
        let sink = Arc::new(Streamer {
            lines: Mutex::new(Vec::new()),
            console: self.config.console,
        });
        let cancel = CancelToken::new();
        let started = jiff::Timestamp::now();
        // Heartbeats and output while it runs; the control plane says stop with 409.
        let beat = {
            let hb = Heartbeat {
                worker_id: self.config.worker_id.clone(),
                workflow_id: a.workflow_id.clone(),
                action_index: a.action_index,
                attempt: a.attempt,
            };
            let every = Duration::from_secs(u64::from(a.heartbeat_seconds.max(1)));
            let sink = sink.clone();
            let cancel = cancel.clone();
            let batch_of = |lines: Vec<LogLine>| LogBatch {
                worker_id: self.config.worker_id.clone(),
                workflow_id: a.workflow_id.clone(),
                action_index: a.action_index,
                lines,
            };
            async move {
                loop {
                    tokio::time::sleep(every).await;
                    let lines: Vec<LogLine> = sink
                        .lines
                        .lock()
                        .map(|mut l| std::mem::take(&mut *l))
                        .unwrap_or_default();
                    if !lines.is_empty() {
                        let _ = self
                            .post::<_, serde_json::Value>("logs", &batch_of(lines))
                            .await;
                    }
                    if let Ok((StatusCode::CONFLICT, _)) =
                        self.post::<_, serde_json::Value>("heartbeat", &hb).await
                    {
                        self.say("tinker: the control plane stopped this action".to_string());
                        cancel.cancel();
                        return;
                    }
                }
            }
        };
        let outcome = tokio::select! {
            r = self.runtime.run(&spec, sink.as_ref(), &cancel) => r.unwrap_or_else(|e| ActionOutcome::Failed { exit_code: None, message: e.to_string() }),
            _ = beat => ActionOutcome::Failed { exit_code: None, message: "stopped by the control plane".into() },
        };
        let rest: Vec<LogLine> = sink
            .lines
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        if !rest.is_empty() {
            let batch = LogBatch {
                worker_id: self.config.worker_id.clone(),
                workflow_id: a.workflow_id.clone(),
                action_index: a.action_index,
                lines: rest,
            };
            let _ = self
                .retry("logs", || self.post::<_, serde_json::Value>("logs", &batch))
                .await;
        }
        self.say(format!(
            "tinker: {} action {} {:?}: {:?}",
            a.workflow_id, a.action_index, a.name, outcome
        ));
        let report = ActionReport {
            worker_id: self.config.worker_id.clone(),
            workflow_id: a.workflow_id.clone(),
            action_index: a.action_index,
            attempt: a.attempt,
            outcome: outcome.clone(),
            started_at: Some(started),
            finished_at: Some(jiff::Timestamp::now()),
        };
        // The report is retried until the control plane has it: the action is
        // not run again, whatever happens to the control plane meanwhile.
        let (status, body) = self
            .retry("report", || {
                self.post::<_, ReportResponse>("report", &report)
            })
            .await?;
        let acknowledged = status.is_success();
        if !acknowledged {
            self.say(format!(
                "tinker: the control plane refused the report ({status}); not taking any final step"
            ));
        }
        let final_step = match (&outcome, acknowledged, &self.native) {
            (ActionOutcome::Success, true, Some(native)) => native.final_step(&spec),
            _ => None,
        };
        let state = body
            .map(|b| b.workflow_state.to_string())
            .unwrap_or_else(|| status.to_string());
        Ok((
            format!(
                "{}/{}: {outcome:?} (workflow {state})",
                a.workflow_id, a.name
            ),
            final_step,
        ))
    }
}

/// Routes each action to the native runtime when its image names a built-in, and
/// to the container runtime otherwise.
#[derive(Debug)]
pub struct RuntimeRouter {
    /// The built-ins.
    pub native: NativeRuntime,
    /// Containers, when an engine is there.
    pub containers: Option<Arc<dyn ActionRuntime>>,
}

#[async_trait::async_trait]
impl ActionRuntime for RuntimeRouter {
    async fn run(
        &self,
        spec: &ActionSpec,
        out: &dyn OutputSink,
        cancel: &CancelToken,
    ) -> Result<ActionOutcome> {
        if self.native.builtin(&spec.image).is_some() {
            return self.native.run(spec, out, cancel).await;
        }
        match &self.containers {
            Some(c) => c.run(spec, out, cancel).await,
            None => Ok(ActionOutcome::Failed {
                exit_code: None,
                message: format!(
                    "{} is not a built-in action and no container engine is available",
                    spec.image
                ),
            }),
        }
    }
}
