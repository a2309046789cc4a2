//! The worker API, served beside the boot services: a worker (the agent in the
//! in-memory OS) asks for its next action, reports each result, heartbeats, and
//! sends its output. Every state change goes through the `WorkflowStore`
//! atomically. Message types are `tinker_core::worker_api`.
//!
//! Authentication: `Authorization: Bearer <token>`, where the token is the
//! machine's [`worker_token`]: derived from
//! the secret, the worker id (its MAC) and when its netboot was turned on, so
//! the control plane puts it on the kernel command line without a token table,
//! it opens only its own worker's endpoints, it is void once netboot is off, and
//! a new netboot issues a new one. Unless the machines sit behind NAT
//! ([`AddressCheck`](crate::credentials::AddressCheck)), it is accepted only from
//! the machine's own address. A presented token is compared in constant time.
//!
//! Long poll: a `next-action` request with `Prefer: wait=N` (RFC 7240) that
//! finds nothing to run waits up to N seconds (at most [`MAX_WAIT`]) for one
//! of the worker's workflows to change, and is answered as soon as an action
//! is ready (`Preference-Applied: wait=N` says the preference was honoured:
//! the request waited, or would have had nothing been ready). A waiting
//! request does not count against [`MAX_IN_FLIGHT`]; it holds its connection,
//! which the HTTP server's limits bound.
//!
//! Time is read from the [`Clock`](tinker_core::clock::Clock) it is given
//! ([`WorkerApi::with_clock`]), so a simulated rack runs it under a manual clock.

use crate::change_waiters::ChangeWaiters;
use crate::credentials::{CallerCheck, worker_token};
use crate::http::{Body, ExtraRoutes};
use crate::worker_core::{Denied, Netboot, WorkerCore, WorkerRefusal, state_after};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tinker_core::Secret;
use tinker_core::WorkflowStore;
use tinker_core::clock::SharedClock;
use tinker_core::model::ObjectKey;
use tinker_core::state::{Effect, Refusal};
use tinker_core::store::{EventKind, EventSource, MachineEvent};
use tinker_core::worker_api::{
    ActionReport, Heartbeat, LogBatch, NextActionResponse, ReportResponse, WorkerAction,
};

/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;

/// The token of an `Authorization: Bearer` header.
pub(crate) fn bearer_token<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The worker API routes (`/v1/workers/{id}/...`).
#[derive(Clone)]
pub struct WorkerApi {
    core: WorkerCore,
    secret: Secret,
    heartbeat_seconds: u32,
    in_flight: Arc<tokio::sync::Semaphore>,
    stats: Arc<WorkerApiStats>,
    waiters: Arc<ChangeWaiters>,
    /// Questions waiting at once, at most [`MAX_WAITING`].
    waiting: Arc<tokio::sync::Semaphore>,
}

/// Questions for work that wait at once; past this a question is answered
/// at once, as without `Prefer: wait`. A waiting question holds its
/// connection busy, so the idle-connection cap cannot close it: this keeps
/// waiting agents (or a client posing as many) to half the HTTP server's
/// default connection limit.
pub const MAX_WAITING: usize = 8192;

/// The worker API's counters (on `/metrics` as `tinker_worker_api_*_total`).
#[derive(Debug, Default)]
pub struct WorkerApiStats {
    /// Requests answered 503 under overload.
    pub shed: AtomicU64,
    /// Questions for work that waited for their workflow to change (one per
    /// wait; a question woken several times counts each).
    pub waits: AtomicU64,
    /// Waits ended by a change of the worker's workflow (or a feed that fell
    /// behind), after which the question claimed again.
    pub woken: AtomicU64,
    /// Waits that ran out (answered "no action yet").
    pub waited_out: AtomicU64,
}

/// The longest a `next-action` request waits for work (`Prefer: wait=N`):
/// well inside the HTTP server's stall timeout (30 s by default), within
/// which every answer must start.
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// The wait a request asks for with `Prefer: wait=N` (RFC 7240 §4.3:
/// seconds; preferences are comma-separated, names case-insensitive, the
/// first occurrence counts), capped at [`MAX_WAIT`]; zero when absent or
/// unreadable.
pub fn preferred_wait(headers: &hyper::HeaderMap) -> std::time::Duration {
    let wait = headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|pref| {
            // `name[=value]` then `;parameters`, which `wait` does not use.
            let (name, value) = pref.split(';').next()?.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("wait")
                .then(|| value.trim().trim_matches('"').parse::<u64>().ok())
        })
        .flatten()
        .unwrap_or(0);
    std::time::Duration::from_secs(wait).min(MAX_WAIT)
}

/// Worker requests handled at once; beyond, the API answers 503 with
/// `Retry-After` (the agent backs off) instead of queueing without bound.
pub const MAX_IN_FLIGHT: usize = 256;

impl std::fmt::Debug for WorkerApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerApi")
            .field("heartbeat_seconds", &self.heartbeat_seconds)
            .finish_non_exhaustive()
    }
}

fn json<T: serde::Serialize>(code: StatusCode, v: &T) -> Response<Body> {
    let mut r = Response::new(crate::http::body_full(
        serde_json::to_vec(v).unwrap_or_default(),
    ));
    *r.status_mut() = code;
    r.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("static header"),
    );
    r
}

fn problem(code: StatusCode, message: &str) -> Response<Body> {
    let mut r = json(code, &serde_json::json!({ "error": message }));
    if code == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert("retry-after", "2".parse().expect("static header"));
    }
    r
}

/// The answer when the store cannot be read or written: retry (503, with
/// `Retry-After`).
fn store_unavailable() -> Response<Body> {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "the store is unavailable; retry",
    )
}

/// The one answer to a report, heartbeat or log batch for an action that is not
/// the caller's: the same whether the workflow or the action exists or belongs
/// to another machine, so a caller learns nothing of other machines' work.
const NOT_YOURS: &str = "no such action is assigned to this worker";

/// What a worker whose machine's netboot has ended is told.
const NETBOOT_OVER: &str = "netboot is off for this machine: nothing is assigned to it";

/// What a worker is told when the state machine refuses its event: why, without
/// claim numbers or another machine's state.
fn refusal_text(reason: &Refusal) -> &'static str {
    match reason {
        Refusal::Finished { .. } => "the workflow has finished",
        Refusal::Cancelled { .. } => "the workflow was cancelled; stop the action",
        Refusal::Preparing => "the machine is being prepared; ask again shortly",
        Refusal::NotRunning { .. } | Refusal::AlreadyRunning { .. } => {
            "the action is not running under this claim"
        }
        _ => "the event was refused",
    }
}

/// The answer to an event the core did not apply.
fn refused(worker: &str, e: WorkerRefusal) -> Response<Body> {
    match e {
        WorkerRefusal::BadWorkflowId => problem(
            StatusCode::BAD_REQUEST,
            "workflow_id must be namespace/name",
        ),
        WorkerRefusal::NotYours => problem(StatusCode::CONFLICT, NOT_YOURS),
        WorkerRefusal::Refused(reason) => problem(StatusCode::CONFLICT, refusal_text(&reason)),
        e => {
            tracing::warn!(worker, error = %e, "worker API: store failed");
            store_unavailable()
        }
    }
}

impl WorkerApi {
    /// The API over `store`, with the secret tokens derive from.
    pub fn new(store: Arc<dyn WorkflowStore>, secret: Secret, heartbeat_seconds: u32) -> Self {
        WorkerApi {
            core: WorkerCore::new(store.clone()),
            secret,
            heartbeat_seconds,
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            stats: Arc::default(),
            waiters: ChangeWaiters::new(store.watch()),
            waiting: Arc::new(tokio::sync::Semaphore::new(MAX_WAITING)),
        }
    }

    /// Reads the time (claims, reports, heartbeats, log lines) from `clock`
    /// instead of the system clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.core = self.core.with_clock(clock);
        self
    }

    /// Sets how many requests are handled at once before the rest are shed.
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.in_flight = Arc::new(tokio::sync::Semaphore::new(limit.max(1)));
        self
    }

    /// Sets how many questions for work may wait at once (default
    /// [`MAX_WAITING`]).
    pub fn with_max_waiting(mut self, waiting: usize) -> Self {
        self.waiting = Arc::new(tokio::sync::Semaphore::new(waiting));
        self
    }

    /// Requests shed under overload so far.
    pub fn shed(&self) -> u64 {
        self.stats.shed.load(Ordering::Relaxed)
    }

    /// Its counters.
    pub fn stats(&self) -> &WorkerApiStats {
        &self.stats
    }

    /// Its counters for `/metrics` (`tinker_worker_api_shed_total`, the
    /// waits of questions for work, and the change feed's lags).
    pub fn metrics(&self) -> Arc<dyn crate::http::MetricsSource> {
        Arc::new(Counters {
            stats: self.stats.clone(),
            waiters: self.waiters.clone(),
        })
    }

    /// Decides who may call as the machine's worker: strict addresses by
    /// default, shared with the script route.
    pub fn with_caller_check(mut self, callers: CallerCheck) -> Self {
        self.core = self.core.with_caller_check(callers);
        self
    }

    /// The rules it shares with the other worker transports.
    pub fn core(&self) -> &WorkerCore {
        &self.core
    }

    /// Whether the caller may act as `worker`: a known machine (the worker id is
    /// one of its MACs) presenting the token of its last netboot, from the
    /// machine's own address; and whether that netboot is still on. Every
    /// refusal but the address one is the same 401, so a caller learns nothing
    /// of which machines exist.
    async fn authorize(
        &self,
        req: &Request<Incoming>,
        worker: &str,
        caller: IpAddr,
    ) -> Result<Netboot, Response<Body>> {
        let denied = || problem(StatusCode::UNAUTHORIZED, "bad or missing bearer token");
        let Some(presented) = bearer_token(req) else {
            return Err(denied());
        };
        let token_matches = |hw: &tinker_core::model::Hardware| {
            worker_token(&self.secret, worker, hw.netboot_since()).matches(presented.as_bytes())
        };
        match self.core.identify(worker, caller, token_matches).await {
            Ok(c) => Ok(c.netboot),
            Err(Denied::Unknown | Denied::BadProof) => Err(denied()),
            Err(Denied::WrongAddress) => {
                tracing::warn!(worker, %caller, "worker API: a valid token from an address not the machine's");
                Err(problem(
                    StatusCode::FORBIDDEN,
                    "this worker's token is accepted only from its machine's address",
                ))
            }
            Err(e) => {
                tracing::warn!(worker, error = %e, "worker API: store lookup failed");
                Err(store_unavailable())
            }
        }
    }

    async fn body<T: serde::de::DeserializeOwned>(
        req: Request<Incoming>,
    ) -> Result<T, Response<Body>> {
        let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
        let bytes = limited
            .collect()
            .await
            .map_err(|_| {
                problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body too large or unreadable",
                )
            })?
            .to_bytes();
        serde_json::from_slice(&bytes)
            .map_err(|e| problem(StatusCode::BAD_REQUEST, &format!("bad JSON: {e}")))
    }

    /// Claims the worker's next action; with a `wait`, a request that finds
    /// none waits for one of the worker's workflows to change (releasing its
    /// in-flight permit meanwhile), until `wait` is over.
    ///
    /// While it waits, each look is one read of the worker's workflows: it
    /// registers the wait on them at the versions read (a change announced
    /// since wakes it at once), and claims only when one has an action for
    /// the worker.
    async fn next_action(
        &self,
        worker: &str,
        ask: tinker_core::worker_api::NextActionRequest,
        wait: std::time::Duration,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Response<Body> {
        if ask.worker_id != worker {
            return problem(StatusCode::FORBIDDEN, "the request names another worker");
        }
        let request = ask.request_id.as_deref();
        let clock = self.core.clock().clone();
        let deadline = clock.now() + wait;
        let mut permit = Some(permit);
        let mut arrived = true;
        // Workflows whose machine the engine was still to power-cycle when
        // this question first looked: once it has, the agent that asked is
        // gone with the old boot (its connection may not even have closed),
        // and the action is left for the agent of the new boot.
        let mut before_power_cycle: Option<Vec<ObjectKey>> = None;
        // Each turn looks at the worker's workflows once; an action it finds
        // ready is claimed from that look (no second read), and otherwise the
        // question waits for one of them to change.
        let waited_out = loop {
            if !std::mem::take(&mut arrived) && clock.now() >= deadline {
                break true;
            }
            let (ready, found, registration, retry_due) = {
                let generation = self.waiters.generation();
                let found = match self.core.store().workflows_for_worker(worker).await {
                    Ok(found) => found,
                    Err(e) => {
                        tracing::warn!(worker, error = %e, "worker API: store lookup failed");
                        return store_unavailable();
                    }
                };
                if found.is_empty() {
                    break false;
                }
                let key_of = |wf: &tinker_core::store::Versioned<tinker_core::model::Workflow>| {
                    ObjectKey::new(
                        tinker_core::model::Kind::Workflow,
                        wf.value.metadata.namespace(),
                        wf.value.metadata.name.clone(),
                    )
                };
                let power_cycled =
                    |wf: &tinker_core::store::Versioned<tinker_core::model::Workflow>| {
                        wf.value.status.as_ref().is_some_and(|s| {
                            s.machine
                                .has_done(tinker_core::model::MachineStep::PowerCycle)
                        })
                    };
                match &before_power_cycle {
                    None => {
                        before_power_cycle = Some(
                            found
                                .iter()
                                .filter(|wf| !power_cycled(wf))
                                .map(key_of)
                                .collect(),
                        );
                    }
                    Some(keys) => {
                        let cycled = found
                            .iter()
                            .any(|wf| keys.contains(&key_of(wf)) && power_cycled(wf));
                        if cycled {
                            break true;
                        }
                    }
                }
                let now = clock.now();
                let ready = found.iter().any(|wf| {
                    wf.value
                        .status
                        .as_ref()
                        .is_some_and(|s| s.claimable(worker, request, now))
                });
                // When an action waiting out a retry delay comes due: no write
                // announces it, so the wait ends then at the latest.
                let retry_due = found
                    .iter()
                    .filter_map(|wf| wf.value.status.as_ref())
                    .flat_map(|s| s.actions().map(|(_, a)| a.retry_at))
                    .flatten()
                    .filter(|at| *at > now)
                    .min();
                let keys = found.iter().map(|wf| (key_of(wf), wf.version)).collect();
                // Without a feed to wake it the question does not wait, but
                // still claims what it found ready.
                let registration = self.waiters.register(keys, generation);
                (ready, found, registration, retry_due)
            };
            if ready {
                match self.core.claim_looked_at(worker, request, found).await {
                    Ok(Some(a)) => {
                        tracing::info!(worker, workflow = %a.workflow.qualified_name(), action = %a.action.name, attempt = a.attempt, "action handed to worker");
                        return self.applied_wait(
                            json(
                                StatusCode::OK,
                                &NextActionResponse::Action(WorkerAction::from_assignment(
                                    &a,
                                    self.heartbeat_seconds,
                                )),
                            ),
                            wait,
                        );
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(worker, error = %e, "claim failed");
                        return store_unavailable();
                    }
                }
            }
            if wait.is_zero() {
                break false;
            }
            let Some(r) = registration else {
                break false;
            };
            let Ok(_waiting) = self.waiting.clone().try_acquire_owned() else {
                break false;
            };
            {
                drop(permit.take());
                let until = retry_due.map_or(deadline, |due| due.min(deadline));
                let remaining: std::time::Duration = until
                    .duration_since(clock.now())
                    .try_into()
                    .unwrap_or_default();
                self.stats.waits.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    _ = r.changed() => {
                        self.stats.woken.fetch_add(1, Ordering::Relaxed);
                    }
                    _ = clock.sleep(remaining) => if until >= deadline {
                        self.stats.waited_out.fetch_add(1, Ordering::Relaxed);
                        break true;
                    }
                }
                drop(r);
                // Woken: back under the in-flight limit before the store.
                let remaining: std::time::Duration = deadline
                    .duration_since(clock.now())
                    .try_into()
                    .unwrap_or_default();
                // Still overloaded when the wait is over: asked again after
                // the usual pause, not at once.
                tokio::select! {
                    p = self.in_flight.clone().acquire_owned() => match p {
                        Ok(p) => permit = Some(p),
                        Err(_) => break false,
                    },
                    _ = clock.sleep(remaining) => break false,
                }
            }
        };
        let answer = json(
            StatusCode::OK,
            &NextActionResponse::Wait {
                // After a wait that ran out, asking again at once is what the
                // worker asked for; otherwise the usual poll.
                retry_after_seconds: if waited_out { 0 } else { 3 },
                reason: "no action is waiting for this worker".into(),
            },
        );
        self.applied_wait(answer, wait)
    }

    /// Marks an answer to a request that asked to wait (RFC 7240
    /// `Preference-Applied`).
    fn applied_wait(
        &self,
        mut answer: Response<Body>,
        wait: std::time::Duration,
    ) -> Response<Body> {
        if !wait.is_zero()
            && let Ok(v) = format!("wait={}", wait.as_secs()).parse()
        {
            answer.headers_mut().insert("preference-applied", v);
        }
        answer
    }

    /// The workflow an event names, if it is the caller's; else the answer.
    async fn own_action(
        &self,
        worker: &str,
        workflow_id: &str,
        index: usize,
    ) -> Result<ObjectKey, Response<Body>> {
        self.core
            .own_action(worker, workflow_id, index)
            .await
            .map(|(key, _)| key)
            .map_err(|e| refused(worker, e))
    }

    async fn report(&self, worker: &str, r: ActionReport) -> Response<Body> {
        if r.worker_id != worker {
            return problem(StatusCode::FORBIDDEN, "the report names another worker");
        }
        match self
            .core
            .report(
                worker,
                &r.workflow_id,
                r.action_index,
                r.attempt,
                r.outcome.clone(),
            )
            .await
        {
            Ok(applied) => {
                if matches!(applied.effect, Effect::AlreadyRecorded(_)) {
                    // Its answer was lost and the agent sent it again.
                    tracing::debug!(worker, workflow = %r.workflow_id, action = r.action_index, "action report repeated, already recorded");
                } else {
                    tracing::info!(worker, workflow = %r.workflow_id, action = r.action_index, outcome = ?r.outcome, "action reported");
                }
                json(
                    StatusCode::OK,
                    &ReportResponse {
                        workflow_state: state_after(&applied),
                    },
                )
            }
            Err(e) => refused(worker, e),
        }
    }

    async fn heartbeat(&self, worker: &str, h: Heartbeat) -> Response<Body> {
        if h.worker_id != worker {
            return problem(StatusCode::FORBIDDEN, "the heartbeat names another worker");
        }
        match self
            .core
            .heartbeat(worker, &h.workflow_id, h.action_index, h.attempt)
            .await
        {
            Ok(_) => Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(crate::http::body_full(Vec::new()))
                .expect("valid response"),
            Err(e) => refused(worker, e),
        }
    }

    async fn logs(&self, worker: &str, batch: LogBatch) -> Response<Body> {
        if batch.worker_id != worker {
            return problem(StatusCode::FORBIDDEN, "the logs name another worker");
        }
        if let Err(answer) = self
            .own_action(worker, &batch.workflow_id, batch.action_index)
            .await
        {
            return answer;
        }
        // Output is kept in the machine's event log, bounded per batch, and
        // written in one store transaction (one commit, not one per line).
        let now = self.core.clock().now();
        let events: Vec<MachineEvent> = batch
            .lines
            .iter()
            .take(1000)
            .map(|line| {
                MachineEvent::new(
                    now,
                    worker,
                    EventSource::Worker,
                    EventKind::ActionOutput {
                        action_index: batch.action_index,
                        stream: line.stream,
                        line: line.text.clone(),
                    },
                )
                .for_workflow(batch.workflow_id.to_string())
            })
            .collect();
        if self.core.store().append_events(events).await.is_err() {
            return store_unavailable();
        }
        Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(crate::http::body_full(Vec::new()))
            .expect("valid response")
    }
}

#[async_trait::async_trait]
impl ExtraRoutes for WorkerApi {
    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: IpAddr,
    ) -> Result<Response<Body>, Request<Incoming>> {
        let path = req.uri().path().to_string();
        let Some(rest) = path.strip_prefix("/v1/workers/") else {
            return Err(req);
        };
        let Some((worker, op)) = rest.rsplit_once('/') else {
            return Ok(problem(StatusCode::NOT_FOUND, "not found"));
        };
        let worker = worker.to_string();
        if req.method() != Method::POST {
            return Ok(problem(StatusCode::METHOD_NOT_ALLOWED, "POST only"));
        }
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            self.stats.shed.fetch_add(1, Ordering::Relaxed);
            return Ok(problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded; retry",
            ));
        };
        match self.authorize(&req, &worker, peer).await {
            Ok(Netboot::On) => {}
            // The machine's netboot has ended (its workflow is done): its token
            // still says who it is, but opens nothing. Its agent is told to wait
            // (it is about to reboot) rather than that its token is wrong.
            Ok(Netboot::Over) => {
                return Ok(match op {
                    "next-action" => json(
                        StatusCode::OK,
                        &NextActionResponse::Wait {
                            retry_after_seconds: 30,
                            reason: NETBOOT_OVER.into(),
                        },
                    ),
                    _ => problem(StatusCode::CONFLICT, NETBOOT_OVER),
                });
            }
            Err(answer) => return Ok(answer),
        }
        Ok(match op {
            "next-action" => {
                let wait = preferred_wait(req.headers());
                match Self::body(req).await {
                    Ok(ask) => self.next_action(&worker, ask, wait, permit).await,
                    Err(resp) => resp,
                }
            }
            "report" => match Self::body(req).await {
                Ok(r) => self.report(&worker, r).await,
                Err(resp) => resp,
            },
            "heartbeat" => match Self::body(req).await {
                Ok(h) => self.heartbeat(&worker, h).await,
                Err(resp) => resp,
            },
            "logs" => match Self::body(req).await {
                Ok(b) => self.logs(&worker, b).await,
                Err(resp) => resp,
            },
            _ => problem(StatusCode::NOT_FOUND, "not found"),
        })
    }
}

/// The worker API's counters, as a metrics source.
#[derive(Debug)]
struct Counters {
    stats: Arc<WorkerApiStats>,
    waiters: Arc<ChangeWaiters>,
}

const COUNTERS: &[crate::http::CounterRow<WorkerApiStats>] = &[
    crate::http::CounterRow {
        name: "tinker_worker_api_shed",
        help: "Worker API requests answered 503 under overload.",
        value: |c| &c.shed,
    },
    crate::http::CounterRow {
        name: "tinker_worker_api_waits",
        help: "Questions for work that waited for their workflow to change (Prefer: wait).",
        value: |c| &c.waits,
    },
    crate::http::CounterRow {
        name: "tinker_worker_api_waits_woken",
        help: "Waits ended by a change of the worker's workflow, then claimed again.",
        value: |c| &c.woken,
    },
    crate::http::CounterRow {
        name: "tinker_worker_api_waits_ran_out",
        help: "Waits that ran out and were answered that no action is ready.",
        value: |c| &c.waited_out,
    },
];

impl crate::http::MetricsSource for Counters {
    fn register(self: Arc<Self>, registry: &mut prometheus_client::registry::Registry) {
        crate::http::register_counters(registry, self.stats.clone(), COUNTERS);
        crate::http::register_counters(
            registry,
            self.waiters.clone(),
            crate::change_waiters::COUNTERS,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn wait_of(values: &[&str]) -> Duration {
        let mut headers = hyper::HeaderMap::new();
        for v in values {
            headers.append("prefer", v.parse().unwrap());
        }
        preferred_wait(&headers)
    }

    #[test]
    fn the_wait_preference_is_read_as_rfc_7240_writes_it_and_capped() {
        assert_eq!(wait_of(&[]), Duration::ZERO);
        assert_eq!(wait_of(&["wait=10"]), Duration::from_secs(10));
        assert_eq!(
            wait_of(&["respond-async, Wait = 5"]),
            Duration::from_secs(5)
        );
        assert_eq!(
            wait_of(&["handling=lenient", "wait=\"7\""]),
            Duration::from_secs(7)
        );
        assert_eq!(
            wait_of(&["wait=3;x=y, wait=9"]),
            Duration::from_secs(3),
            "the first counts"
        );
        assert_eq!(wait_of(&["wait=86400"]), MAX_WAIT);
        assert_eq!(wait_of(&["wait=-1"]), Duration::ZERO);
        assert_eq!(wait_of(&["wait"]), Duration::ZERO);
        assert_eq!(wait_of(&["waiting=10"]), Duration::ZERO);
    }
}
