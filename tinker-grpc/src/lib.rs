//! Tinkerbell's agent-facing gRPC service, so a HookOS image running
//! `tink-agent` provisions against Tinker unchanged.
//!
//! `proto.WorkflowService` is served exactly as Tinkerbell's `pkg/proto` define
//! it (`/proto.WorkflowService/GetAction` and `/proto.WorkflowService/ReportActionStatus`),
//! by default on port [`DEFAULT_PORT`] (42113), with server reflection on, as
//! Tinkerbell has it. Tinkerbell writes its protos in `edition = "2023"`,
//! which neither `protox` nor `prost-build` compiles: `proto/` holds a proto3
//! transcription (same package, messages, field names, numbers and types;
//! `optional` where edition 2023 gives presence), compiled at build time by
//! `protox`, so no `protoc` binary is needed. The tests prove the wire format
//! with a client generated from Tinkerbell's unchanged originals.
//!
//! Every rule lives in [`tinker_boot::worker_core`], shared with the HTTP
//! worker API: who a caller is, which actions it may touch, how a report moves
//! the store. This crate only translates.
//!
//! - **Identity.** tink-agent sends no token, so the caller's address must be
//!   the address of the Hardware its agent id names (an interface's MAC, or
//!   `spec.agentID`): [`CallerCheck`]'s strict rule, on the Hardware's own
//!   addresses only (never one learnt from a proxyDHCP REQUEST, which anyone
//!   can forge). With [`AddressCheck::BehindNat`] every caller shares one
//!   address, so nothing would tell machines apart: the service refuses to
//!   start ([`GrpcError::BehindNat`]).
//! - **GetAction** claims the machine's next action (the same claim as the
//!   HTTP API's, under one request id, so an agent that asks again while its
//!   action runs gets it again, as Tinkerbell re-serves its current action).
//!   With nothing to give it answers as Tinkerbell does: `NOT_FOUND` when the
//!   machine has no workflow or its last action is done, `FAILED_PRECONDITION`
//!   with the `PRECONDITION_FAILURE_VIOLATION_NO_ACTION_AVAILABLE` violation
//!   (a `google.rpc.PreconditionFailure` in the status details, which
//!   tink-agent looks for) while the workflow's machine is being prepared.
//! - **ReportActionStatus**: RUNNING confirms the claim (a heartbeat),
//!   SUCCESS, FAILED and TIMEOUT end the action through the store's state
//!   machine; an agent reports only its own actions. The agent's message and
//!   times go to the machine's timeline ([`EventKind::ActionReported`]).
//! - **Inventory.** The agent's attributes are kept on its Hardware as the
//!   [`AGENT_ATTRIBUTES`] annotation (JSON with Tinkerbell's field names), at
//!   most [`MAX_AGENT_ATTRIBUTES`] bytes, as Tinkerbell caps it.
//!
//! Older HookOS images start `tink-worker` (tink v0.9 to v0.12), which speaks
//! earlier methods of the same service name. Tinkerbell's current server does
//! not serve them (its `WorkflowService` has only the two methods above; one of
//! the old ones, `ReportActionStatus`, even shares its path with a different
//! message). It keeps those images working by booting them with
//! `tink_worker_image=<tink-agent image>` on the kernel line, which hook-bootkit
//! starts in place of tink-worker with the same environment
//! (`TINKERBELL_GRPC_AUTHORITY`, `WORKER_ID`), which tink-agent also reads.
//! Tinker does the same: the kernel line's `tink_worker_image=` is the boot
//! script's (see the HookOS boot settings).

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tinker_boot::credentials::{AddressCheck, CallerCheck};
use tinker_boot::per_address::{AddressSlot, PerAddress};
use tinker_boot::worker_core::{Caller, Denied, Idle, Netboot, WorkerCore, WorkerRefusal};
use tinker_core::model::Object;
use tinker_core::state::{ActionOutcome, ActionState, Effect, Refusal};
use tinker_core::store::{Assignment, EventKind, EventSource, MachineEvent, Precondition};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::{Code, Request, Response, Status};

/// The generated messages and service of `proto/` (Tinkerbell's package
/// `proto`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("proto");
}

use proto::action_status_request::StateType;
use proto::workflow_service_server::{WorkflowService, WorkflowServiceServer};
use proto::{
    ActionRequest, ActionResponse, ActionStatusRequest, ActionStatusResponse, AgentAttributes,
    Namespaces,
};

/// The encoded descriptors of `proto/`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tinkerbell_descriptor.bin"));

/// Tinkerbell's tink-server port.
pub const DEFAULT_PORT: u16 = 42113;

/// The Hardware annotation holding the agent's attributes, as Tinkerbell names
/// it.
pub const AGENT_ATTRIBUTES: &str = "tinkerbell.org/agent-attributes";

/// The largest [`AGENT_ATTRIBUTES`] annotation kept, in bytes of JSON (64 KiB,
/// Tinkerbell's cap). Larger attributes are not stored (a machine with
/// thousands of devices); the refusal is logged and counted.
pub const MAX_AGENT_ATTRIBUTES: usize = 64 * 1024;

/// The largest request message accepted (the agent's attributes are the
/// biggest part; 1 MiB, as the HTTP worker API's body limit).
pub const MAX_MESSAGE: usize = 1 << 20;

/// The request id every GetAction claims under: tink-agent has none of its
/// own, and asking again while its action runs must give that action back.
const GRPC_REQUEST: &str = "tinkerbell-grpc";

/// The `type` of the violation tink-agent takes for "no action, back off".
pub const NO_ACTION_AVAILABLE: &str = "PRECONDITION_FAILURE_VIOLATION_NO_ACTION_AVAILABLE";

/// Why the service cannot start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrpcError {
    /// The machines sit behind NAT, where every caller has the same address:
    /// the address is the only thing that tells tink-agents apart, so the
    /// service would let any caller act as any machine.
    #[error(
        "the gRPC agent service cannot run while machines are taken to be behind NAT (addresses \
         are then no proof of identity, and tink-agent sends no token); turn the NAT relaxation \
         off or set the gRPC port to 0"
    )]
    BehindNat,
    /// The transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// What one client, and all together, may hold of the service.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GrpcLimits {
    /// Connections open at once (default 4,096); more are closed at once.
    pub max_connections: usize,
    /// Connections open at once from one address (default 8: an agent needs one).
    pub max_connections_per_address: usize,
    /// Requests handled at once (default 256); beyond, `UNAVAILABLE` (the
    /// agent backs off) instead of an unbounded queue.
    pub max_in_flight: usize,
    /// How long one call may take (default 30 s).
    pub request_timeout: Duration,
}

impl Default for GrpcLimits {
    fn default() -> Self {
        GrpcLimits {
            max_connections: 4096,
            max_connections_per_address: 8,
            max_in_flight: 256,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The service's counters.
#[derive(Debug, Default)]
pub struct GrpcStats {
    /// Connections closed at once: a limit was reached.
    pub connections_refused: AtomicU64,
    /// Calls answered `UNAVAILABLE` under overload.
    pub shed: AtomicU64,
    /// Calls refused because they came from an address not their machine's.
    pub wrong_address: AtomicU64,
    /// Agent attributes not kept: larger than [`MAX_AGENT_ATTRIBUTES`].
    pub attributes_too_large: AtomicU64,
}

/// The counters on `/metrics`.
const COUNTERS: &[tinker_boot::http::CounterRow<GrpcStats>] = &[
    tinker_boot::http::CounterRow {
        name: "tinker_grpc_connections_refused",
        help: "gRPC connections closed as soon as accepted: all connections, or its address's, were at their limit",
        value: |s| &s.connections_refused,
    },
    tinker_boot::http::CounterRow {
        name: "tinker_grpc_shed",
        help: "gRPC calls answered UNAVAILABLE because too many were in flight",
        value: |s| &s.shed,
    },
    tinker_boot::http::CounterRow {
        name: "tinker_grpc_wrong_address",
        help: "gRPC calls refused: the agent id named a machine at another address",
        value: |s| &s.wrong_address,
    },
    tinker_boot::http::CounterRow {
        name: "tinker_grpc_agent_attributes_too_large",
        help: "agent attributes not kept: larger than 64 KiB as JSON",
        value: |s| &s.attributes_too_large,
    },
];

impl tinker_boot::http::MetricsSource for GrpcStats {
    fn register(self: Arc<Self>, registry: &mut prometheus_client::registry::Registry) {
        tinker_boot::http::register_counters(registry, self, COUNTERS);
    }
}

/// `proto.WorkflowService` over the worker core.
#[derive(Clone)]
pub struct AgentService {
    core: WorkerCore,
    in_flight: Arc<tokio::sync::Semaphore>,
    stats: Arc<GrpcStats>,
}

impl std::fmt::Debug for AgentService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentService")
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl AgentService {
    /// The service over `core`; refused when `core` takes machines to be behind
    /// NAT.
    pub fn new(core: WorkerCore) -> Result<Self, GrpcError> {
        let mode = core.callers().mode;
        if mode == AddressCheck::BehindNat {
            return Err(GrpcError::BehindNat);
        }
        // tink-agent brings no token, so its address is its only proof: the
        // Hardware's own addresses, never those learnt from DHCP REQUESTs in
        // proxyDHCP mode (anyone can send one with another machine's MAC).
        let core = core.with_caller_check(CallerCheck {
            mode,
            observed: Arc::default(),
        });
        Ok(AgentService {
            core,
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                GrpcLimits::default().max_in_flight,
            )),
            stats: Arc::default(),
        })
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<GrpcStats> {
        self.stats.clone()
    }

    fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.in_flight.clone().try_acquire_owned().map_err(|_| {
            self.stats.shed.fetch_add(1, Ordering::Relaxed);
            Status::unavailable("overloaded; retry")
        })
    }

    /// The caller as the machine of `agent`, or the answer. An unknown agent
    /// and a known one called from another address get the same answer,
    /// `not_found` (Tinkerbell's text for the method): a caller learns
    /// nothing of which machines exist (the HTTP worker API answers both
    /// with one 401 for the same reason).
    async fn identify(
        &self,
        agent: &str,
        peer: Option<SocketAddr>,
        not_found: &'static str,
    ) -> Result<Caller, Status> {
        let Some(peer) = peer else {
            return Err(Status::internal("the caller's address is unknown"));
        };
        match self.core.identify(agent, peer.ip(), |_| true).await {
            Ok(c) => Ok(c),
            Err(Denied::Unknown) => Err(Status::not_found(not_found)),
            Err(Denied::Store(e)) => {
                tracing::warn!(agent, error = %e, "gRPC: store lookup failed");
                Err(Status::unavailable("the store is unavailable; retry"))
            }
            Err(_) => {
                self.stats.wrong_address.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(agent, caller = %peer.ip(), "gRPC: an agent id called from an address not its machine's");
                Err(Status::not_found(not_found))
            }
        }
    }

    /// Keeps the agent's attributes on its Hardware when they changed.
    async fn keep_inventory(&self, caller: &Caller, attributes: &AgentAttributes) {
        let Some(json) = attributes_json(attributes) else {
            return;
        };
        if json.len() > MAX_AGENT_ATTRIBUTES {
            self.stats
                .attributes_too_large
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                machine = %caller.hardware.value.metadata.name,
                bytes = json.len(),
                "agent attributes larger than {MAX_AGENT_ATTRIBUTES} bytes: not kept"
            );
            return;
        }
        let hw = &caller.hardware;
        let annotations = hw.value.metadata.annotations.as_ref();
        if annotations.and_then(|a| a.get(AGENT_ATTRIBUTES)) == Some(&json) {
            return;
        }
        let mut updated = hw.value.clone();
        updated
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(AGENT_ATTRIBUTES.to_string(), json);
        // Only over the version read: a concurrent edit wins, and the agent's
        // next call tries again.
        if let Err(e) = self
            .core
            .store()
            .put(Object::Hardware(updated), Precondition::Version(hw.version))
            .await
        {
            tracing::debug!(error = %e, "agent attributes not kept this time");
        }
    }

    async fn timeline(&self, caller: &Caller, workflow_id: &str, kind: EventKind) {
        let meta = &caller.hardware.value.metadata;
        let machine = format!("{}/{}", meta.namespace(), meta.name);
        let event = MachineEvent::new(self.core.clock().now(), machine, EventSource::Worker, kind)
            .for_workflow(workflow_id.to_string());
        if let Err(e) = self.core.store().append_event(event).await {
            tracing::warn!(error = %e, "could not record an agent report");
        }
    }
}

/// The action id given to the agent: the action's position and its claim
/// number, which the agent sends back with its reports (so a report from an
/// earlier claim changes nothing). Only characters valid in a container name,
/// as tink-agent names the action's container after it.
pub fn action_id(index: usize, attempt: u32) -> String {
    format!("{index}-{attempt}")
}

/// The position and claim number in an [`action_id`].
pub fn parse_action_id(id: &str) -> Option<(usize, u32)> {
    let (index, attempt) = id.split_once('-')?;
    Some((index.parse().ok()?, attempt.parse().ok()?))
}

/// An environment as Tinkerbell sends it: `K=V`, sorted as strings.
pub fn environment_lines<'a>(
    env: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<String> {
    let mut lines: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    lines.sort();
    lines
}

/// The answer to GetAction for an assignment of `agent`'s. Tinkerbell's
/// merging (the task's environment under the action's, the action winning;
/// the task's volumes before the action's) is done when the workflow is
/// rendered (`tinker_core::render`), so the rendered action is sent as it is,
/// its environment as sorted `K=V`.
pub fn action_response(a: &Assignment, agent: &str) -> ActionResponse {
    let action = &a.action;
    ActionResponse {
        workflow_id: Some(a.workflow.qualified_name()),
        task_id: Some(a.task_name.clone()),
        agent_id: Some(agent.to_string()),
        action_id: Some(action_id(a.action_index, a.attempt)),
        name: Some(action.name.clone()),
        image: Some(action.image.clone()),
        timeout: Some(action.timeout.unwrap_or_default()),
        command: action.command.clone(),
        volumes: action.volumes.clone(),
        environment: environment_lines(&action.environment),
        pid: Some(action.pid.clone().unwrap_or_default()),
        namespaces: action.pid.as_ref().map(|pid| Namespaces {
            network: None,
            pid: Some(pid.clone()),
        }),
    }
}

/// The most of an agent's report message kept, in characters (in the
/// workflow's status and in the timeline).
pub const MAX_REPORTED_MESSAGE: usize = 4096;

/// What a reported state does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    /// RUNNING: the action runs under its claim (recorded as a heartbeat).
    Running,
    /// SUCCESS, FAILED or TIMEOUT: the action ended so.
    Ended(ActionOutcome),
}

/// Maps a reported state and message to what it does; PENDING and
/// UNSPECIFIED are not reports.
pub fn reported(state: StateType, message: &str) -> Result<Reported, Status> {
    // Kept in the workflow's status: bounded as the timeline's copy is.
    let message: String = message.chars().take(MAX_REPORTED_MESSAGE).collect();
    Ok(match state {
        StateType::Running => Reported::Running,
        StateType::Success => Reported::Ended(ActionOutcome::Success),
        StateType::Failed => Reported::Ended(ActionOutcome::Failed {
            exit_code: None,
            message,
        }),
        StateType::Timeout => Reported::Ended(ActionOutcome::Timeout { message }),
        StateType::Pending | StateType::Unspecified => {
            return Err(Status::invalid_argument(
                "action_state must be RUNNING, SUCCESS, FAILED or TIMEOUT",
            ));
        }
    })
}

fn action_state(state: StateType) -> ActionState {
    match state {
        StateType::Running => ActionState::Running,
        StateType::Success => ActionState::Success,
        StateType::Failed => ActionState::Failed,
        StateType::Timeout => ActionState::Timeout,
        StateType::Pending | StateType::Unspecified => ActionState::Pending,
    }
}

/// FAILED_PRECONDITION with the violation tink-agent takes for "no action
/// available".
pub fn no_action_available() -> Status {
    use tonic_types::{ErrorDetails, StatusExt};
    Status::with_error_details(
        Code::FailedPrecondition,
        "the machine is being prepared; no action is available yet",
        ErrorDetails::with_precondition_failure_violation(
            NO_ACTION_AVAILABLE,
            "",
            "the workflow waits for its machine to be prepared (netboot, power)",
        ),
    )
}

fn refusal_status(agent: &str, e: WorkerRefusal) -> Status {
    match e {
        WorkerRefusal::BadWorkflowId => Status::invalid_argument("invalid workflow id"),
        WorkerRefusal::NotYours => Status::not_found("action not found"),
        WorkerRefusal::Refused(Refusal::Finished { .. }) => {
            Status::failed_precondition("the workflow has finished")
        }
        // tink-agent has no cancel: its report says so, and the engine powers
        // the machine off (through its BMC) after the cancel's grace.
        WorkerRefusal::Refused(Refusal::Cancelled { by }) => {
            Status::failed_precondition(format!("the workflow was cancelled by {by}"))
        }
        WorkerRefusal::Refused(_) => {
            Status::failed_precondition("the action is not running under this claim")
        }
        e => {
            tracing::warn!(agent, error = %e, "gRPC: store failed");
            Status::unavailable("the store is unavailable; retry")
        }
    }
}

/// The attributes as the annotation's JSON: Tinkerbell's field names, empty
/// fields left out; `None` when the agent sent nothing.
pub fn attributes_json(a: &AgentAttributes) -> Option<String> {
    fn prune(v: &mut serde_json::Value) -> bool {
        match v {
            serde_json::Value::Null => false,
            serde_json::Value::Array(items) => {
                items.retain_mut(prune);
                !items.is_empty()
            }
            serde_json::Value::Object(fields) => {
                fields.retain(|_, v| prune(v));
                !fields.is_empty()
            }
            _ => true,
        }
    }
    let mut v = serde_json::to_value(a).ok()?;
    prune(&mut v).then(|| v.to_string())
}

const NETBOOT_OVER: &str = "netboot is off for this machine: nothing is assigned to it";

#[tonic::async_trait]
impl WorkflowService for AgentService {
    async fn get_action(
        &self,
        request: Request<ActionRequest>,
    ) -> Result<Response<ActionResponse>, Status> {
        let _permit = self.admit()?;
        let peer = request.remote_addr();
        let req = request.into_inner();
        let agent = req.agent_id.as_deref().unwrap_or_default();
        if agent.is_empty() {
            return Err(Status::invalid_argument("invalid Agent ID"));
        }
        // As Tinkerbell answers an agent it has no workflow for.
        let caller = self.identify(agent, peer, "no Workflows found").await?;
        if let Some(attributes) = &req.agent_attributes {
            self.keep_inventory(&caller, attributes).await;
        }
        if caller.netboot == Netboot::Over {
            return Err(Status::not_found(NETBOOT_OVER));
        }
        let unavailable = |e: tinker_core::Error| {
            tracing::warn!(agent, error = %e, "gRPC: claim failed");
            Status::unavailable("the store is unavailable; retry")
        };
        let Some(a) = self
            .core
            .next_action(agent, Some(GRPC_REQUEST))
            .await
            .map_err(unavailable)?
        else {
            return Err(
                match self.core.idle_reason(agent).await.map_err(unavailable)? {
                    Idle::Preparing => no_action_available(),
                    Idle::NoWorkflow => Status::not_found("no Workflows found"),
                },
            );
        };
        tracing::info!(agent, workflow = %a.workflow.qualified_name(), action = %a.action.name, attempt = a.attempt, "action handed to tink-agent");
        Ok(Response::new(action_response(&a, agent)))
    }

    async fn report_action_status(
        &self,
        request: Request<ActionStatusRequest>,
    ) -> Result<Response<ActionStatusResponse>, Status> {
        let _permit = self.admit()?;
        let peer = request.remote_addr();
        let req = request.into_inner();
        let workflow_id = req.workflow_id.as_deref().unwrap_or_default();
        let task_id = req.task_id.as_deref().unwrap_or_default();
        let action = req.action_id.as_deref().unwrap_or_default();
        // Tinkerbell's checks and texts.
        if workflow_id.is_empty() {
            return Err(Status::invalid_argument("invalid workflow id"));
        }
        if task_id.is_empty() {
            return Err(Status::invalid_argument("invalid task name"));
        }
        if action.is_empty() {
            return Err(Status::invalid_argument("invalid action name"));
        }
        let agent = req.agent_id.as_deref().unwrap_or_default();
        let caller = self.identify(agent, peer, "action not found").await?;
        let state = req.action_state();
        let message = req
            .message
            .as_ref()
            .and_then(|m| m.message.as_deref())
            .unwrap_or_default();
        let what = reported(state, message)?;
        let Some((index, attempt)) = parse_action_id(action) else {
            return Err(Status::not_found("action not found"));
        };
        if caller.netboot == Netboot::Over {
            return Err(Status::failed_precondition(NETBOOT_OVER));
        }
        // The task named must be the action's, as Tinkerbell finds the action.
        let (_, wf) = self
            .core
            .own_action(agent, workflow_id, index)
            .await
            .map_err(|e| refusal_status(agent, e))?;
        let same_task = wf
            .value
            .status
            .as_ref()
            .and_then(|s| {
                let (t, _) = s.action(index)?;
                s.tasks.get(t)
            })
            .is_some_and(|t| t.name == task_id);
        if !same_task {
            return Err(Status::not_found("action not found"));
        }
        let result = match what {
            Reported::Running => {
                self.core
                    .heartbeat(agent, workflow_id, index, attempt)
                    .await
            }
            Reported::Ended(outcome) => {
                self.core
                    .report(agent, workflow_id, index, attempt, outcome)
                    .await
            }
        };
        match result {
            // A report sent again after its answer was lost: the state
            // machine kept the first one, and its timeline has it already.
            Ok(applied) if matches!(applied.effect, Effect::AlreadyRecorded(_)) => {
                return Ok(Response::new(ActionStatusResponse {}));
            }
            Ok(_) => {}
            Err(e) => return Err(refusal_status(agent, e)),
        }
        let time = |t: &Option<prost_types::Timestamp>| {
            t.as_ref()
                .and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok())
        };
        self.timeline(
            &caller,
            workflow_id,
            EventKind::ActionReported {
                action_index: index,
                state: action_state(state),
                message: message.chars().take(MAX_REPORTED_MESSAGE).collect(),
                execution_start: time(&req.execution_start),
                execution_stop: time(&req.execution_stop),
                execution_duration: req
                    .execution_duration
                    .clone()
                    .unwrap_or_default()
                    .chars()
                    .take(64)
                    .collect(),
            },
        )
        .await;
        tracing::info!(agent, workflow = workflow_id, action = index, state = ?state, "tink-agent reported");
        Ok(Response::new(ActionStatusResponse {}))
    }
}

/// An admitted connection: the stream, and its places under the limits,
/// freed when it closes.
struct Admitted {
    stream: TcpStream,
    _total: tokio::sync::OwnedSemaphorePermit,
    _per_address: AddressSlot,
}

impl tonic::transport::server::Connected for Admitted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The gRPC server: [`AgentService`] and server reflection.
#[derive(Debug)]
pub struct GrpcServer {
    service: AgentService,
    limits: GrpcLimits,
}

impl GrpcServer {
    /// A server over `core`; refused behind NAT ([`GrpcError::BehindNat`]).
    pub fn new(core: WorkerCore) -> Result<Self, GrpcError> {
        Ok(GrpcServer {
            service: AgentService::new(core)?,
            limits: GrpcLimits::default(),
        })
    }

    /// Sets its limits.
    pub fn with_limits(mut self, limits: GrpcLimits) -> Self {
        self.service.in_flight = Arc::new(tokio::sync::Semaphore::new(limits.max_in_flight.max(1)));
        self.limits = limits;
        self
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<GrpcStats> {
        self.service.stats()
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), GrpcError> {
        use tokio_stream::StreamExt;
        let stats = self.service.stats();
        let total = Arc::new(tokio::sync::Semaphore::new(
            self.limits.max_connections.max(1),
        ));
        let per_address = Arc::new(PerAddress::default());
        let per_max = self.limits.max_connections_per_address.max(1);
        let incoming =
            tokio_stream::wrappers::TcpListenerStream::new(listener).filter_map(move |conn| {
                let stream = match conn {
                    Ok(s) => s,
                    // A failed accept (out of descriptors, say) is not the
                    // listener's end.
                    Err(e) => {
                        tracing::debug!(error = %e, "gRPC accept failed");
                        return None;
                    }
                };
                let ip: IpAddr = stream.peer_addr().ok()?.ip().to_canonical();
                let admitted = total.clone().try_acquire_owned().ok().and_then(|t| {
                    Some(Admitted {
                        _per_address: per_address.try_take(ip, per_max)?,
                        _total: t,
                        stream,
                    })
                });
                if admitted.is_none() {
                    stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                }
                admitted.map(Ok::<_, std::io::Error>)
            });
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .build_v1()
            .expect("the descriptors compiled at build time decode");
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .expect("the descriptors compiled at build time decode");
        tonic::transport::Server::builder()
            .timeout(self.limits.request_timeout)
            .concurrency_limit_per_connection(16)
            .max_concurrent_streams(16)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .http2_max_header_list_size(16 * 1024)
            .add_service(
                WorkflowServiceServer::new(self.service).max_decoding_message_size(MAX_MESSAGE),
            )
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinker_core::model::{Template, Workflow};

    /// Tinkerbell's merging, as the agent receives it: the task's environment
    /// under the action's with the action winning, sorted as `K=V` strings;
    /// the task's volumes before the action's.
    #[test]
    fn actions_carry_tinkerbells_merging() {
        let template = Template::new(
            "t",
            r#"version: "0.1"
name: t
tasks:
  - name: install
    worker: "{{.device_1}}"
    volumes: [/dev:/dev]
    environment: {A: task, A0: task, B: task}
    actions:
      - name: one
        image: img
        timeout: 60
        volumes: [/tmp:/tmp]
        environment: {A: action, C: action}
"#,
        );
        let wf = Workflow::new("w", "t", "hw", tinker_core::testing::mac(1));
        let status = tinker_core::render::instantiate(&wf, &template, None).unwrap();
        let assignment = Assignment {
            workflow: tinker_core::model::ObjectKey::new(
                tinker_core::model::Kind::Workflow,
                "default",
                "w",
            ),
            task_name: "install".into(),
            action_index: 0,
            attempt: 3,
            action: status.tasks[0].actions[0].clone(),
        };
        let r = action_response(&assignment, "02:00:00:00:00:01");
        // "A0=..." sorts before "A=..." as strings ('0' < '='), as Go's
        // sort.Strings has it, though key order would put A first.
        assert_eq!(r.environment, ["A0=task", "A=action", "B=task", "C=action"]);
        assert_eq!(r.volumes, ["/dev:/dev", "/tmp:/tmp"]);
        assert_eq!(r.workflow_id.as_deref(), Some("default/w"));
        assert_eq!(r.task_id.as_deref(), Some("install"));
        assert_eq!(r.timeout, Some(60));
        assert_eq!(r.action_id.as_deref(), Some("0-3"));
        assert_eq!(parse_action_id("0-3"), Some((0, 3)));
        assert_eq!(r.namespaces, None, "no pid namespace asked for");
    }

    #[test]
    fn action_ids_round_trip_and_reject_the_rest() {
        for (i, a) in [(0, 1), (17, 4_000_000_000)] {
            assert_eq!(parse_action_id(&action_id(i, a)), Some((i, a)));
        }
        for bad in ["", "0", "0-", "-1", "a-1", "0-1-2", "0.1"] {
            assert_eq!(parse_action_id(bad), None, "{bad}");
        }
    }

    /// The reported states map to the state machine's events; PENDING and
    /// UNSPECIFIED are not reports.
    #[test]
    fn reported_states_map_to_events() {
        assert_eq!(
            reported(StateType::Running, "x").unwrap(),
            Reported::Running
        );
        assert_eq!(
            reported(StateType::Success, "x").unwrap(),
            Reported::Ended(ActionOutcome::Success)
        );
        assert_eq!(
            reported(StateType::Failed, "boom").unwrap(),
            Reported::Ended(ActionOutcome::Failed {
                exit_code: None,
                message: "boom".into()
            })
        );
        assert_eq!(
            reported(StateType::Timeout, "late").unwrap(),
            Reported::Ended(ActionOutcome::Timeout {
                message: "late".into()
            })
        );
        for s in [StateType::Pending, StateType::Unspecified] {
            assert_eq!(reported(s, "").unwrap_err().code(), Code::InvalidArgument);
        }
        assert_eq!(action_state(StateType::Timeout), ActionState::Timeout);
        assert_eq!(action_state(StateType::Success), ActionState::Success);
    }

    /// A report after an operator's cancel is refused, and says who.
    #[test]
    fn a_report_after_a_cancel_is_refused_naming_who_cancelled() {
        let s = refusal_status(
            "02:00:00:00:00:01",
            WorkerRefusal::Refused(Refusal::Cancelled { by: "alice".into() }),
        );
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(s.message(), "the workflow was cancelled by alice");
    }

    /// The violation rides in the status details, where tink-agent looks.
    #[test]
    fn no_action_available_carries_the_violation() {
        use tonic_types::StatusExt;
        let s = no_action_available();
        assert_eq!(s.code(), Code::FailedPrecondition);
        let details = s.get_error_details();
        let v = &details.precondition_failure().unwrap().violations;
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].r#type, NO_ACTION_AVAILABLE);
        assert_eq!(
            proto::PreconditionFailureViolation::NoActionAvailable.as_str_name(),
            NO_ACTION_AVAILABLE
        );
    }

    #[test]
    fn attributes_are_kept_with_tinkerbells_names() {
        assert_eq!(attributes_json(&AgentAttributes::default()), None);
        let a = AgentAttributes {
            block: vec![proto::Block {
                name: Some("sda".into()),
                serial_number: Some("S1".into()),
                ..Default::default()
            }],
            memory: Some(proto::Memory::default()),
            ..Default::default()
        };
        assert_eq!(
            attributes_json(&a).unwrap(),
            r#"{"blockDevices":[{"name":"sda","serialNumber":"S1"}]}"#
        );
    }
}
