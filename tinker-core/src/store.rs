//! `WorkflowStore`: hardware, templates and workflows with optimistic concurrency,
//! atomic claiming and reporting of actions, a change feed, and the per-machine
//! event log. Backends (in-memory, embedded file, PostgreSQL) live in
//! `tinker-store`; the workflow logic they run inside their transactions lives
//! here, written once ([`apply_to_workflow`], [`index_terms`]).

use crate::error::{Error, Result};
use crate::mac::MacAddr;
use crate::model::{Hardware, Kind, Object, ObjectKey, Template, Workflow};
use crate::state::{Effect, WorkflowEvent};
use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineEvent {
    /// Sequence number, assigned by the store (increasing per store).
    #[serde(default)]
    pub seq: u64,
    /// When.
    pub at: Timestamp,
    /// The machine: the Hardware's `namespace/name`, or a MAC for unknown machines.
    pub machine: String,
    /// Which service: `dhcp`, `tftp`, `http`, `engine`, `worker`, `bmc`.
    pub source: String,
    /// What happened, as one message.
    pub message: String,
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
    /// for a question that will not be asked again.
    async fn claim_next_action(&self, worker: &str, now: Timestamp) -> Result<Option<Assignment>> {
        self.claim_next_action_for_request(worker, None, now).await
    }

    /// Appends to a machine's event log.
    async fn append_event(&self, event: MachineEvent) -> Result<()>;

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
            .filter_map(|v| match v.value {
                Object::Workflow(w) => Some(Versioned {
                    version: v.version,
                    value: w,
                }),
                _ => None,
            })
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
    /// A worker with an unfinished workflow.
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
        Object::Template(_) => Vec::new(),
        Object::Workflow(w) => match &w.status {
            Some(s) if !s.state.is_terminal() && !w.is_disabled() => {
                let mut workers: Vec<String> = s.tasks.iter().map(|t| t.agent_id.clone()).collect();
                workers.sort();
                workers.dedup();
                workers.into_iter().map(IndexTerm::Worker).collect()
            }
            _ => Vec::new(),
        },
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
    let Some(status) = workflow.status.as_mut() else {
        return (
            false,
            Err(Error::Transition {
                workflow: name,
                reason: crate::state::Refusal::NotRendered,
            }),
        );
    };
    if disabled && !matches!(event, WorkflowEvent::Tick | WorkflowEvent::Fail { .. }) {
        return (
            false,
            Err(Error::Transition {
                workflow: name,
                reason: crate::state::Refusal::Disabled,
            }),
        );
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
        .is_some_and(|s| s.has_work_for(worker))
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
