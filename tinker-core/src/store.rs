//! `WorkflowStore`: hardware, templates and workflows with optimistic concurrency,
//! atomic claiming and reporting of actions, a change feed, and the per-machine
//! event log. Backends (in-memory, embedded file, PostgreSQL) live in
//! `tinker-store`; the workflow logic they run inside their transactions lives
//! here, written once ([`apply_to_workflow`], [`index_terms`]).

use crate::error::{Error, Result};
use crate::mac::MacAddr;
use crate::model::{GaveUp, Hardware, Kind, MachineStep, Object, ObjectKey, Template, Workflow};
use crate::state::{Effect, WorkflowEvent};
use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt::{self, Debug};
use std::net::IpAddr;
use tokio::sync::broadcast;

/// A stored object and its version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versioned<T> {
    /// Incremented by every write; the first write gives 1.
    pub version: u64,
    /// The object.
    pub value: T,
}

impl Versioned<Object> {
    /// The workflow, with its version, when the object is one.
    pub fn into_workflow(self) -> Option<Versioned<Workflow>> {
        match self.value {
            Object::Workflow(w) => Some(Versioned {
                version: self.version,
                value: w,
            }),
            _ => None,
        }
    }
}

/// The condition a write needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precondition {
    /// Write whatever is there.
    Any,
    /// Create: refuse if the object exists.
    Absent,
    /// Update: refuse unless the stored version is this one.
    Version(u64),
}

/// A change, as the change feed reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The object.
    pub key: ObjectKey,
    /// Its new version (the last version, for a delete).
    pub version: u64,
    /// Whether it was deleted.
    pub deleted: bool,
}

/// One entry of a machine's append-only event log: what a service saw or did.
///
/// The event is a value ([`EventSource`], [`EventKind`]); text is made from it
/// only at the edges ([`MachineEvent::message`], the JSON API, the page). Events
/// written by earlier versions (a source name and a message) read as
/// [`EventKind::Note`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "MachineEventRepr", into = "MachineEventRepr")]
pub struct MachineEvent {
    /// Sequence number, assigned by the store (increasing per store).
    pub seq: u64,
    /// When.
    pub at: Timestamp,
    /// The machine: the Hardware's `namespace/name`, or a MAC for unknown machines.
    pub machine: String,
    /// Which service saw or did it.
    pub source: EventSource,
    /// The workflow it concerns, `namespace/name`, if any.
    pub workflow: Option<String>,
    /// What happened.
    pub kind: EventKind,
}

impl MachineEvent {
    /// An event to append (the store assigns `seq`).
    pub fn new(
        at: Timestamp,
        machine: impl Into<String>,
        source: EventSource,
        kind: EventKind,
    ) -> Self {
        MachineEvent {
            seq: 0,
            at,
            machine: machine.into(),
            source,
            workflow: None,
            kind,
        }
    }

    /// The same event, about `workflow`.
    pub fn for_workflow(mut self, workflow: impl Into<String>) -> Self {
        self.workflow = Some(workflow.into());
        self
    }

    /// The event as one line of text, for people (logs, the status page).
    pub fn message(&self) -> String {
        match &self.workflow {
            Some(w) => format!("workflow {w}: {}", self.kind),
            None => self.kind.to_string(),
        }
    }
}

/// The service that recorded a [`MachineEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum EventSource {
    /// The DHCP server (through the boot responder).
    Dhcp,
    /// The TFTP server.
    Tftp,
    /// The HTTP server (iPXE scripts, assets, metadata).
    Http,
    /// The workflow engine.
    Engine,
    /// The worker agent on the machine, through the worker API.
    Worker,
    /// A BMC.
    Bmc,
    /// The syslog receiver: lines a machine's address sent, unauthenticated.
    Syslog,
    /// The operator API (a change an operator made).
    Api,
    /// A source this version does not know (an event from a newer one).
    #[serde(other)]
    Other,
}

impl fmt::Display for EventSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventSource::Dhcp => "dhcp",
            EventSource::Tftp => "tftp",
            EventSource::Http => "http",
            EventSource::Engine => "engine",
            EventSource::Worker => "worker",
            EventSource::Bmc => "bmc",
            EventSource::Syslog => "syslog",
            EventSource::Api => "api",
            EventSource::Other => "other",
        })
    }
}

/// What a [`MachineEvent`] records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum EventKind {
    /// The boot responder decided what the machine gets (rendered decision).
    BootDecision {
        /// The decision, as the responder describes it.
        decision: String,
    },
    /// The engine rendered the workflow's template.
    Rendered {
        /// Actions in the rendered workflow.
        actions: usize,
    },
    /// The HTTP server served the machine its iPXE script.
    IpxeScriptServed {
        /// The interface the script is for.
        mac: MacAddr,
    },
    /// The TFTP server sent the machine a file, or gave up (at most one event
    /// of each every few seconds).
    TftpTransfer {
        /// The file, as the machine named it.
        file: String,
        /// Its size.
        bytes: u64,
        /// How long the transfer took, in milliseconds.
        millis: u64,
        /// Why it was abandoned; `None` when it completed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed: Option<String>,
    },
    /// The metadata service served the machine its own metadata (the first
    /// read of a burst: at most one such event every few seconds).
    MetadataServed {
        /// The path it read, such as `/2009-04-04/meta-data/hostname`.
        path: String,
    },
    /// The template could not be rendered; the workflow failed.
    RenderFailed {
        /// Why.
        reason: String,
    },
    /// The engine carried out a step.
    StepDone {
        /// The step.
        step: MachineStep,
    },
    /// The step needs a BMC and the machine has none.
    StepSkippedNoBmc {
        /// The step.
        step: MachineStep,
    },
    /// The machine's power controller cannot carry the step out (Wake-on-LAN
    /// cannot set a boot device, power off or reset): the step is skipped and
    /// the workflow goes on; the machine boots by its firmware's boot order and
    /// the workflow's last action reboots it.
    StepSkippedUnsupported {
        /// The step.
        step: MachineStep,
        /// The controller's answer (what it cannot do, and why).
        reason: String,
    },
    /// A step failed and will be tried again.
    StepFailed {
        /// The step.
        step: MachineStep,
        /// Attempts so far.
        attempt: u32,
        /// Milliseconds until the next attempt.
        retry_in_ms: u64,
        /// The error.
        error: String,
    },
    /// The engine stopped retrying a step.
    GaveUp(GaveUp),
    /// The engine's crash-loop guard stopped processing the workflow.
    Parked(crate::model::Parked),
    /// A line of an action's output.
    ActionOutput {
        /// The action's position in the workflow.
        action_index: usize,
        /// Which stream.
        stream: crate::runtime::Stream,
        /// The line.
        line: String,
    },
    /// An agent reported an action's state with its own message and times
    /// (Tinkerbell's tink-agent over gRPC): kept as it said them.
    ActionReported {
        /// The action's position in the workflow.
        action_index: usize,
        /// The state reported.
        state: crate::state::ActionState,
        /// The agent's message.
        message: String,
        /// When the action started, on the agent's clock.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        execution_start: Option<Timestamp>,
        /// When it stopped, on the agent's clock.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        execution_stop: Option<Timestamp>,
        /// How long it ran, as the agent wrote it.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        execution_duration: String,
    },
    /// An operator created, updated or deleted an object through the API.
    ObjectChanged {
        /// The operator's name (never a token).
        by: String,
        /// The object.
        object: ObjectKey,
        /// What became of it.
        change: ObjectChange,
    },
    /// Free text (events written by earlier versions, or by a vendor's service).
    Note {
        /// The text.
        message: String,
    },
    /// A line the machine's address sent to the syslog receiver (HookOS,
    /// tink-agent, iPXE). Unauthenticated: a datagram's source address can be
    /// forged, so such a line only informs the operator; nothing reads it to
    /// change any state.
    SyslogLine {
        /// The address the datagram came from (the machine's, or a forger's).
        from: std::net::IpAddr,
        /// Its facility (RFC 5424 numbering: 0 kern, 1 user, 3 daemon, ...).
        facility: u8,
        /// Its severity (0 emerg to 7 debug).
        severity: u8,
        /// The sending program, when the line names one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        app: Option<String>,
        /// The message, control characters replaced.
        line: String,
    },
}

/// The name of a syslog severity (RFC 5424), `?` past 7.
pub fn syslog_severity_name(severity: u8) -> &'static str {
    [
        "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
    ]
    .get(usize::from(severity))
    .copied()
    .unwrap_or("?")
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventKind::BootDecision { decision } => f.write_str(decision),
            EventKind::Rendered { actions } => write!(f, "template rendered: {actions} actions"),
            EventKind::IpxeScriptServed { mac } => write!(f, "iPXE script served to {mac}"),
            EventKind::TftpTransfer {
                file,
                bytes,
                millis,
                failed: None,
            } => write!(f, "TFTP: {file} sent ({bytes} bytes in {millis} ms)"),
            EventKind::TftpTransfer {
                file,
                failed: Some(why),
                ..
            } => write!(f, "TFTP: {file} abandoned: {why}"),
            EventKind::MetadataServed { path } => write!(f, "metadata served: {path}"),
            EventKind::RenderFailed { reason } => write!(f, "template rendering failed: {reason}"),
            EventKind::StepDone { step } => write!(f, "{step}: done"),
            EventKind::StepSkippedNoBmc { step } => {
                write!(f, "{step}: the machine has no BMC; power it on by hand")
            }
            EventKind::StepSkippedUnsupported { step, reason } => {
                write!(f, "{step}: skipped: {reason}")
            }
            EventKind::StepFailed {
                step,
                attempt,
                retry_in_ms,
                error,
            } => write!(
                f,
                "{step} failed (attempt {attempt}), retrying in {:.1} s: {error}",
                *retry_in_ms as f64 / 1000.0
            ),
            EventKind::GaveUp(g) => write!(f, "{g}"),
            EventKind::Parked(p) => write!(f, "{p}"),
            EventKind::ActionOutput {
                action_index,
                stream,
                line,
            } => write!(f, "action {action_index}: {stream}: {line}"),
            EventKind::ActionReported {
                action_index,
                state,
                message,
                execution_start,
                execution_stop,
                execution_duration,
            } => {
                write!(f, "action {action_index}: agent reported {state}")?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                if let (Some(start), Some(stop)) = (execution_start, execution_stop) {
                    write!(f, " (ran {start} to {stop})")?;
                }
                if !execution_duration.is_empty() {
                    write!(f, " took {execution_duration}")?;
                }
                Ok(())
            }
            EventKind::ObjectChanged { by, object, change } => {
                write!(f, "{by} {change} {object}")
            }
            EventKind::Note { message } => f.write_str(message),
            EventKind::SyslogLine {
                from,
                severity,
                app,
                line,
                ..
            } => {
                let severity = syslog_severity_name(*severity);
                match app {
                    Some(app) => write!(
                        f,
                        "syslog from {from} (unauthenticated): {severity}: {app}: {line}"
                    ),
                    None => write!(
                        f,
                        "syslog from {from} (unauthenticated): {severity}: {line}"
                    ),
                }
            }
        }
    }
}

/// The log every change made through the operator API is appended to, as the
/// events of this pseudo-machine (no Hardware's `namespace/name` and no MAC
/// can be `@changes`). A change to a Hardware, or to a Workflow, is also
/// appended to its machine's own log.
pub const CHANGE_LOG: &str = "@changes";

/// What a change did to an object ([`EventKind::ObjectChanged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ObjectChange {
    /// It did not exist before.
    Created,
    /// It existed and was written again.
    Updated,
    /// It was deleted.
    Deleted,
    /// A workflow: an operator cancelled it.
    Cancelled,
    /// A workflow: an operator retried it from a failed action.
    Retried,
    /// A workflow: an operator ran it again from its start.
    Rerun,
}

impl fmt::Display for ObjectChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectChange::Created => "created",
            ObjectChange::Updated => "updated",
            ObjectChange::Deleted => "deleted",
            ObjectChange::Cancelled => "cancelled",
            ObjectChange::Retried => "retried",
            ObjectChange::Rerun => "re-ran",
        })
    }
}

/// A [`MachineEvent`] as stored and served: the typed event, plus its text
/// (`message`) for readers that only show text. Events of earlier versions have
/// only `source` and `message`.
#[derive(Serialize, Deserialize)]
struct MachineEventRepr {
    #[serde(default)]
    seq: u64,
    at: Timestamp,
    machine: String,
    source: EventSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    workflow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event: Option<EventKind>,
    #[serde(default)]
    message: String,
}

impl From<MachineEventRepr> for MachineEvent {
    fn from(r: MachineEventRepr) -> Self {
        MachineEvent {
            seq: r.seq,
            at: r.at,
            machine: r.machine,
            source: r.source,
            workflow: r.workflow,
            kind: r.event.unwrap_or(EventKind::Note { message: r.message }),
        }
    }
}

impl From<MachineEvent> for MachineEventRepr {
    fn from(e: MachineEvent) -> Self {
        let message = e.message();
        MachineEventRepr {
            seq: e.seq,
            at: e.at,
            machine: e.machine,
            source: e.source,
            workflow: e.workflow,
            event: Some(e.kind),
            message,
        }
    }
}

/// An action handed to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The workflow.
    pub workflow: ObjectKey,
    /// The task's name.
    pub task_name: String,
    /// The action's position among all the workflow's actions.
    pub action_index: usize,
    /// The claim number to report with.
    pub attempt: u32,
    /// The action as rendered.
    pub action: crate::model::ActionStatus,
}

/// What [`WorkflowStore::apply_event`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The workflow after the event.
    pub workflow: Versioned<Workflow>,
    /// What the event did.
    pub effect: Effect,
}

/// Storage for hardware, templates and workflows.
///
/// Every write is atomic and versioned; [`apply_event`](Self::apply_event) and
/// [`claim_next_action`](Self::claim_next_action) run the state machine inside the
/// store's own transaction, so two workers, or a worker and a restarted server,
/// never run one action twice.
///
/// ```
/// # use std::sync::Arc;
/// # use tinker_core::{WorkflowStore, WorkflowStoreExt, Precondition, model::Hardware};
/// /// Works with any store.
/// async fn register(store: &dyn WorkflowStore, hw: Hardware) -> tinker_core::Result<u64> {
///     store.put(hw.into(), Precondition::Absent).await
/// }
/// # #[derive(Debug, Default)] struct Null;
/// # #[async_trait::async_trait] impl WorkflowStore for Null {
/// #   async fn put(&self, _: tinker_core::model::Object, _: Precondition) -> tinker_core::Result<u64> { Ok(1) }
/// #   async fn get(&self, _: &tinker_core::model::ObjectKey) -> tinker_core::Result<Option<tinker_core::Versioned<tinker_core::model::Object>>> { Ok(None) }
/// #   async fn list(&self, _: tinker_core::model::Kind) -> tinker_core::Result<Vec<tinker_core::Versioned<tinker_core::model::Object>>> { Ok(vec![]) }
/// #   async fn delete(&self, _: &tinker_core::model::ObjectKey, _: Precondition) -> tinker_core::Result<()> { Ok(()) }
/// #   async fn hardware_by_mac(&self, _: tinker_core::MacAddr) -> tinker_core::Result<Option<tinker_core::Versioned<Hardware>>> { Ok(None) }
/// #   async fn hardware_by_ip(&self, _: std::net::IpAddr) -> tinker_core::Result<Option<tinker_core::Versioned<Hardware>>> { Ok(None) }
/// #   async fn apply_event(&self, k: &tinker_core::model::ObjectKey, _: &tinker_core::state::WorkflowEvent, _: jiff::Timestamp) -> tinker_core::Result<tinker_core::store::Applied> { Err(tinker_core::Error::NotFound { key: k.to_string() }) }
/// #   async fn claim_next_action_for_request(&self, _: &str, _: Option<&str>, _: jiff::Timestamp) -> tinker_core::Result<Option<tinker_core::store::Assignment>> { Ok(None) }
/// #   async fn append_event(&self, _: tinker_core::store::MachineEvent) -> tinker_core::Result<()> { Ok(()) }
/// #   async fn events(&self, _: &str, _: usize) -> tinker_core::Result<Vec<tinker_core::store::MachineEvent>> { Ok(vec![]) }
/// #   fn watch(&self) -> tokio::sync::broadcast::Receiver<tinker_core::store::Change> { tokio::sync::broadcast::channel(1).1 }
/// # }
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store: Arc<dyn WorkflowStore> = Arc::new(Null);
/// let hw = Hardware::new("sm01", "3c:ec:ef:4c:4f:54".parse().unwrap(), "172.16.10.100".parse().unwrap(), "255.255.255.0");
/// assert_eq!(register(store.as_ref(), hw).await.unwrap(), 1);
/// # });
/// ```
///
/// The in-memory and embedded stores in `tinker-store` are the real
/// implementations; `tinker_core::testing::store` is the conformance suite they run.
#[async_trait]
pub trait WorkflowStore: Send + Sync + Debug + 'static {
    /// Writes an object under `precondition`; returns its new version. Hardware
    /// whose MAC or IP belongs to another Hardware is refused.
    async fn put(&self, object: Object, precondition: Precondition) -> Result<u64>;

    /// Reads an object.
    async fn get(&self, key: &ObjectKey) -> Result<Option<Versioned<Object>>>;

    /// Lists the objects of a kind, ordered by namespace and name.
    async fn list(&self, kind: Kind) -> Result<Vec<Versioned<Object>>>;

    /// Deletes an object under `precondition` (`Absent` is meaningless here and refused).
    async fn delete(&self, key: &ObjectKey, precondition: Precondition) -> Result<()>;

    /// The Hardware with an interface of this MAC.
    async fn hardware_by_mac(&self, mac: MacAddr) -> Result<Option<Versioned<Hardware>>>;

    /// The Hardware with an interface of this IP address.
    async fn hardware_by_ip(&self, ip: IpAddr) -> Result<Option<Versioned<Hardware>>>;

    /// Atomically applies a state-machine event to a workflow (see
    /// [`apply_to_workflow`]). A refused event is an [`Error::Transition`]; timeouts
    /// that fell due are saved even then.
    async fn apply_event(
        &self,
        workflow: &ObjectKey,
        event: &WorkflowEvent,
        now: Timestamp,
    ) -> Result<Applied>;

    /// Atomically finds the next action waiting for `worker` and claims it.
    ///
    /// `request` identifies the worker's question, the same on every retry of it:
    /// the claim records it, and the same worker asking with the same `request`
    /// while that action runs gets the same assignment back (its first answer was
    /// lost) instead of nothing. Stores do it by running `claim_in_workflow` in
    /// their transaction, which keeps `request` in the action's status.
    async fn claim_next_action_for_request(
        &self,
        worker: &str,
        request: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<Assignment>>;

    /// [`claim_next_action_for_request`](Self::claim_next_action_for_request)
    /// for a caller that has just read the worker's workflows (`looked`, as
    /// [`workflows_for_worker`](Self::workflows_for_worker) gave them, for a
    /// long poll that looks before it waits): a store whose reads are round
    /// trips claims from that read, writing a workflow only if it is still at
    /// the version read, and claims afresh if one is not. The default reads
    /// again: the same answer, one read more.
    async fn claim_looked_at(
        &self,
        worker: &str,
        request: Option<&str>,
        looked: Vec<Versioned<Workflow>>,
        now: Timestamp,
    ) -> Result<Option<Assignment>> {
        drop(looked);
        self.claim_next_action_for_request(worker, request, now)
            .await
    }

    /// [`claim_next_action_for_request`](Self::claim_next_action_for_request)
    /// for a question that will not be asked again.
    async fn claim_next_action(&self, worker: &str, now: Timestamp) -> Result<Option<Assignment>> {
        self.claim_next_action_for_request(worker, None, now).await
    }

    /// The unfinished workflows with an action for `worker` (the objects
    /// holding its [`IndexTerm::Worker`] term: a rendered workflow's task
    /// workers, or, before it is rendered, the values of its hardware map),
    /// ordered by key. The default
    /// lists every workflow and keeps those; the stores answer from their
    /// index, so a question about one worker (why an idle agent waits) does
    /// not read the whole inventory.
    async fn workflows_for_worker(&self, worker: &str) -> Result<Vec<Versioned<Workflow>>> {
        let term = IndexTerm::Worker(worker.to_string());
        Ok(self
            .list(Kind::Workflow)
            .await?
            .into_iter()
            .filter(|v| index_terms(&v.value).contains(&term))
            .filter_map(Versioned::into_workflow)
            .collect())
    }

    /// The workflow at `key` as this store knows it: a store that keeps
    /// copies of the workflows it wrote or read (the PostgreSQL store) may
    /// answer from them without a round trip. The answer is never older than
    /// this store's own writes that returned, than a change its
    /// [`watch`](Self::watch) has announced, or than what its last
    /// [`list`](Self::list) found; it may be older than another replica's
    /// write not announced yet: milliseconds, or the store's bound on its
    /// copies' age (30 s for PostgreSQL) if its feed went quiet unseen. So it
    /// is for callers that act on what they read as they would on a read that
    /// another writer overtakes a moment later: the engine's reconciles (each
    /// started by an announcement or a sweep), whose writes check the version
    /// read, and whose machine steps are idempotent BMC calls. The default
    /// reads it, as [`get`](Self::get) does.
    async fn recent_workflow(&self, key: &ObjectKey) -> Result<Option<Versioned<Workflow>>> {
        Ok(self.get(key).await?.and_then(Versioned::into_workflow))
    }

    /// Appends to a machine's event log.
    ///
    /// The log is bounded: a store keeps the newest events of each machine up to
    /// its cap (`tinker_store::MAX_EVENTS_PER_MACHINE` unless the store was built
    /// with another) and drops the oldest beyond it, so a chatty machine costs a
    /// fixed amount of storage.
    async fn append_event(&self, event: MachineEvent) -> Result<()>;

    /// Appends several events (a batch of a worker's output lines) in one write:
    /// one transaction and one commit for the batch, in order, each with its own
    /// sequence number. The default appends them one by one; stores override it.
    async fn append_events(&self, events: Vec<MachineEvent>) -> Result<()> {
        for event in events {
            self.append_event(event).await?;
        }
        Ok(())
    }

    /// The last `limit` events of a machine, oldest first.
    async fn events(&self, machine: &str, limit: usize) -> Result<Vec<MachineEvent>>;

    /// Subscribes to changes made after this call. A receiver that falls behind
    /// gets `Lagged` and should list again.
    fn watch(&self) -> broadcast::Receiver<Change>;
}

/// Typed conveniences over any [`WorkflowStore`]. Do not implement it yourself:
/// every store gets it.
#[async_trait]
pub trait WorkflowStoreExt: WorkflowStore {
    /// Reads a Hardware.
    async fn hardware(&self, namespace: &str, name: &str) -> Result<Option<Versioned<Hardware>>> {
        match self
            .get(&ObjectKey::new(Kind::Hardware, namespace, name))
            .await?
        {
            Some(Versioned {
                version,
                value: Object::Hardware(h),
            }) => Ok(Some(Versioned { version, value: h })),
            _ => Ok(None),
        }
    }

    /// Reads a Template.
    async fn template(&self, namespace: &str, name: &str) -> Result<Option<Versioned<Template>>> {
        match self
            .get(&ObjectKey::new(Kind::Template, namespace, name))
            .await?
        {
            Some(Versioned {
                version,
                value: Object::Template(t),
            }) => Ok(Some(Versioned { version, value: t })),
            _ => Ok(None),
        }
    }

    /// Reads a Workflow.
    async fn workflow(&self, namespace: &str, name: &str) -> Result<Option<Versioned<Workflow>>> {
        match self
            .get(&ObjectKey::new(Kind::Workflow, namespace, name))
            .await?
        {
            Some(Versioned {
                version,
                value: Object::Workflow(w),
            }) => Ok(Some(Versioned { version, value: w })),
            _ => Ok(None),
        }
    }

    /// Lists workflows.
    async fn workflows(&self) -> Result<Vec<Versioned<Workflow>>> {
        Ok(self
            .list(Kind::Workflow)
            .await?
            .into_iter()
            .filter_map(Versioned::into_workflow)
            .collect())
    }
}

impl<S: WorkflowStore + ?Sized> WorkflowStoreExt for S {}

/// A search key a store keeps an index of.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndexTerm {
    /// A Hardware's MAC.
    Mac(MacAddr),
    /// A Hardware's IP address.
    Ip(IpAddr),
    /// A worker with an unfinished workflow (one of its tasks' workers, or
    /// before it is rendered one its hardware map names).
    Worker(String),
}

impl IndexTerm {
    /// A string form for stores that index by text (`mac:..`, `ip:..`, `worker:..`).
    pub fn as_key(&self) -> String {
        match self {
            IndexTerm::Mac(m) => format!("mac:{m}"),
            IndexTerm::Ip(i) => format!("ip:{i}"),
            IndexTerm::Worker(w) => format!("worker:{w}"),
        }
    }

    /// Whether only one object may hold this term.
    pub fn is_unique(&self) -> bool {
        !matches!(self, IndexTerm::Worker(_))
    }
}

/// The index terms of an object: MACs and IPs of a Hardware; the workers of a
/// workflow that has not finished.
pub fn index_terms(object: &Object) -> Vec<IndexTerm> {
    match object {
        Object::Hardware(h) => h
            .macs()
            .into_iter()
            .map(IndexTerm::Mac)
            .chain(
                h.ipv4s()
                    .into_iter()
                    .map(|ip| IndexTerm::Ip(IpAddr::V4(ip))),
            )
            .collect(),
        Object::Template(_) | Object::Machine(_) => Vec::new(),
        Object::Workflow(w) if w.is_disabled() => Vec::new(),
        Object::Workflow(w) => {
            let mut workers: Vec<String> = match &w.status {
                Some(s) if !s.state.is_terminal() => {
                    s.tasks.iter().map(|t| t.agent_id.clone()).collect()
                }
                Some(_) => Vec::new(),
                // Not rendered yet: the workers its hardware map names, as
                // Tinkerbell's templates name each task's worker from it
                // (`worker: "{{.device_1}}"`), so an agent that boots before
                // the engine renders its workflow finds it (and waits on it)
                // rather than asking again and again.
                None => w.spec.hardware_map.values().cloned().collect(),
            };
            workers.sort();
            workers.dedup();
            workers.into_iter().map(IndexTerm::Worker).collect()
        }
    }
}

/// Checks a precondition against the stored version (`None`: absent).
pub fn check_precondition(
    key: &ObjectKey,
    stored: Option<u64>,
    precondition: Precondition,
) -> Result<()> {
    match (precondition, stored) {
        (Precondition::Any, _) => Ok(()),
        (Precondition::Absent, None) => Ok(()),
        (Precondition::Absent, Some(_)) => Err(Error::AlreadyExists {
            key: key.to_string(),
        }),
        (Precondition::Version(_), None) => Err(Error::NotFound {
            key: key.to_string(),
        }),
        (Precondition::Version(v), Some(found)) if v == found => Ok(()),
        (Precondition::Version(expected), Some(found)) => Err(Error::Conflict {
            key: key.to_string(),
            expected,
            found,
        }),
    }
}

/// The state-machine step every store runs inside its transaction: expire what is
/// due at `now`, then handle `event`. Returns whether the workflow changed (and so
/// must be saved) and the event's result (a refusal as [`Error::Transition`]).
pub fn apply_to_workflow(
    workflow: &mut Workflow,
    event: &WorkflowEvent,
    now: Timestamp,
) -> (bool, Result<Effect>) {
    let name = format!(
        "{}/{}",
        workflow.metadata.namespace(),
        workflow.metadata.name
    );
    let disabled = workflow.is_disabled();
    // A worker's event about an action that is not its own is refused
    // before anything else, one answer whatever the workflow's state.
    let not_yours = match event {
        WorkflowEvent::FromWorker { worker, sent } => !workflow
            .status
            .as_ref()
            .is_some_and(|s| s.is_workers_action(worker, sent)),
        _ => false,
    };
    let refused = |reason| {
        (
            false,
            Err(Error::Transition {
                workflow: name.clone(),
                reason,
            }),
        )
    };
    if not_yours {
        return refused(crate::state::Refusal::NotYours);
    }
    let Some(status) = workflow.status.as_mut() else {
        return refused(crate::state::Refusal::NotRendered);
    };
    if disabled
        && !matches!(
            event,
            WorkflowEvent::Tick | WorkflowEvent::Fail { .. } | WorkflowEvent::Cancel { .. }
        )
    {
        return refused(crate::state::Refusal::Disabled);
    }
    let (changed, result) = status.apply(now, event);
    (
        changed,
        result.map_err(|reason| Error::Transition {
            workflow: name,
            reason,
        }),
    )
}

/// The claim step every store runs for each candidate workflow of a worker.
/// Returns the assignment if this workflow had an action for the worker.
pub fn claim_in_workflow(
    key: &ObjectKey,
    workflow: &mut Workflow,
    worker: &str,
    request: Option<&str>,
    now: Timestamp,
) -> (bool, Option<Assignment>) {
    // The same request again: its answer was lost on the way. Give the same
    // assignment (same claim number); nothing changes.
    if let Some(req) = request
        && let Some(s) = workflow.status.as_ref()
        && s.claimed_by_request(worker, req)
        && let Some(i) = s.current_action()
        && let Some((t, a)) = s.action(i)
    {
        return (
            false,
            Some(Assignment {
                workflow: key.clone(),
                task_name: s.tasks[t].name.clone(),
                action_index: i,
                attempt: a.attempt,
                action: a.clone(),
            }),
        );
    }
    let ready = workflow
        .status
        .as_ref()
        .is_some_and(|s| s.has_work_for(worker, now))
        && !workflow.is_disabled();
    if !ready {
        // Timeouts may still be due; saving them keeps the state honest.
        let changed = workflow.status.as_mut().is_some_and(|s| s.expire(now));
        return (changed, None);
    }
    let (changed, result) = apply_to_workflow(
        workflow,
        &WorkflowEvent::Claim {
            worker: worker.to_string(),
        },
        now,
    );
    if let (Ok(Effect::Claimed { action, .. }), Some(req)) = (&result, request)
        && let Some(a) = workflow.status.as_mut().and_then(|s| s.action_mut(*action))
    {
        a.claim_request = Some(req.to_string());
    }
    let assignment = match result {
        Ok(Effect::Claimed { action, attempt }) => workflow.status.as_ref().and_then(|s| {
            let (t, a) = s.action(action)?;
            Some(Assignment {
                workflow: key.clone(),
                task_name: s.tasks[t].name.clone(),
                action_index: action,
                attempt,
                action: a.clone(),
            })
        }),
        _ => None,
    };
    (changed, assignment)
}

#[cfg(test)]
mod event_tests {
    use super::*;

    #[test]
    fn events_of_earlier_versions_read_as_notes() {
        let e: MachineEvent = serde_json::from_str(
            r#"{"seq":7,"at":"2026-11-01T00:00:00Z","machine":"default/m1","source":"engine","message":"workflow default/w: Reboot: done"}"#,
        )
        .unwrap();
        assert_eq!(e.source, EventSource::Engine);
        assert_eq!(e.message(), "workflow default/w: Reboot: done");
    }

    #[test]
    fn typed_events_round_trip_and_carry_their_text() {
        let e = MachineEvent::new(
            Timestamp::UNIX_EPOCH,
            "default/m1",
            EventSource::Engine,
            EventKind::StepDone {
                step: MachineStep::Reboot,
            },
        )
        .for_workflow("default/w");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["message"], "workflow default/w: Reboot: done");
        assert_eq!(serde_json::from_value::<MachineEvent>(json).unwrap(), e);
    }
}
