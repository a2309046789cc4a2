//! The worker core: what a machine's agent may do, whatever protocol it
//! speaks. The HTTP worker API ([`crate::worker_api`]) and Tinkerbell's gRPC
//! `WorkflowService` (the `tinker-grpc` crate) both go through it, so who a
//! caller is, which actions it may touch, and how its reports move the store
//! are decided in one place and cannot drift apart between the two.
//!
//! Each transport keeps only its own framing: how the caller proves who it is
//! (a bearer token over HTTP, nothing but its address over gRPC), how a
//! refusal is worded, and how an action is encoded.

use crate::credentials::CallerCheck;
use crate::hardware_cache::{Cached, DEFAULT_MAX_UNKNOWN, HardwareCache};
use std::net::IpAddr;
use std::sync::Arc;
use tinker_core::clock::{SharedClock, SystemClock};
use tinker_core::model::{Hardware, Kind, ObjectKey, Workflow};
use tinker_core::state::{ActionOutcome, Refusal, WorkflowEvent, WorkflowState};
use tinker_core::store::{Applied, Assignment, Versioned};
use tinker_core::{Error, MacAddr, WorkflowStore, WorkflowStoreExt};

/// Whether the netboot a machine's worker runs under is still on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Netboot {
    /// On: the worker may take and report the machine's actions.
    On,
    /// Turned off since: the worker is told to wait (its machine is about to
    /// reboot) and its reports are refused.
    Over,
}

/// A caller recognised as a machine's worker.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The machine's Hardware, as read (or as cached since the store's
    /// change feed last announced a change to it).
    pub hardware: Arc<Versioned<Hardware>>,
    /// The interface the worker id named, when it is a MAC.
    pub mac: Option<MacAddr>,
    /// Whether its netboot is still on.
    pub netboot: Netboot,
}

/// Why a caller is not taken as the worker it names.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Denied {
    /// No machine has this worker id (neither an interface's MAC nor its
    /// `spec.agentID`).
    #[error("no machine has this worker id")]
    Unknown,
    /// The transport's proof (a token) did not match.
    #[error("the proof of identity did not match")]
    BadProof,
    /// The call came from an address not the machine's.
    #[error("the call came from an address not the machine's")]
    WrongAddress,
    /// The store could not be read.
    #[error("the store is unavailable: {0}")]
    Store(#[source] Error),
}

/// Why an event a worker sent was not applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerRefusal {
    /// The workflow id is not `namespace/name`.
    #[error("workflow_id must be namespace/name")]
    BadWorkflowId,
    /// The action is not assigned to the caller (or does not exist): one
    /// answer, so a caller learns nothing of other machines' work.
    #[error("no such action is assigned to this worker")]
    NotYours,
    /// The state machine refused the event.
    #[error("{0}")]
    Refused(Refusal),
    /// The store could not be read or written.
    #[error("the store is unavailable: {0}")]
    Store(#[source] Error),
}

impl From<Error> for WorkerRefusal {
    fn from(e: Error) -> Self {
        match e {
            Error::Transition {
                reason: Refusal::NotYours,
                ..
            } => WorkerRefusal::NotYours,
            Error::Transition { reason, .. } => WorkerRefusal::Refused(reason),
            // Deleted since the check: the same answer as for any action not
            // the caller's.
            Error::NotFound { .. } => WorkerRefusal::NotYours,
            e => WorkerRefusal::Store(e),
        }
    }
}

/// Why a worker has no action to run right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// No unfinished workflow has an action for it (none at all, or its last
    /// action is done, or the current one belongs to another worker).
    NoWorkflow,
    /// Its workflow waits for the machine to be prepared (netboot, power).
    Preparing,
}

/// The `namespace/name` of a workflow id, as a key.
pub fn workflow_key(id: &str) -> Option<ObjectKey> {
    let (ns, name) = id.split_once('/')?;
    Some(ObjectKey::new(Kind::Workflow, ns, name))
}

/// The rules behind every worker transport.
#[derive(Clone)]
pub struct WorkerCore {
    store: Arc<dyn WorkflowStore>,
    clock: SharedClock,
    callers: CallerCheck,
    /// MAC → Hardware, with when it was read: every worker call names its
    /// machine by MAC, and an agent calls several times per action; without
    /// it each call was a store lookup (40 per machine in a boot storm, a
    /// quarter of PostgreSQL's statements). Kept fresh by the store's change
    /// feed, so a netboot turned off or a token rotated is seen as soon as
    /// the store announces it; and read again after [`MAX_CACHED_AGE`]
    /// whatever the feed says, because it decides who a caller is and a feed
    /// can go quiet without closing (a lost LISTEN connection).
    hardware: Arc<CallerCache>,
}

/// What the worker core caches of each MAC: the Hardware and when it was
/// read.
pub type CallerCache = HardwareCache<(Arc<Versioned<Hardware>>, jiff::Timestamp)>;

/// The longest a cached Hardware decides who a worker is before it is read
/// again.
pub const MAX_CACHED_AGE: std::time::Duration = std::time::Duration::from_secs(30);

impl std::fmt::Debug for WorkerCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerCore")
            .field("callers", &self.callers)
            .finish_non_exhaustive()
    }
}

impl WorkerCore {
    /// The core over `store`, on the system clock, with strict addresses.
    pub fn new(store: Arc<dyn WorkflowStore>) -> Self {
        WorkerCore {
            hardware: Arc::new(HardwareCache::new(store.watch(), DEFAULT_MAX_UNKNOWN)),
            store,
            clock: SystemClock::shared(),
            callers: CallerCheck::default(),
        }
    }

    /// Reads the time from `clock`.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Decides who may call as a machine's worker.
    pub fn with_caller_check(mut self, callers: CallerCheck) -> Self {
        self.callers = callers;
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn WorkflowStore> {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The address rule.
    pub fn callers(&self) -> &CallerCheck {
        &self.callers
    }

    /// Its MAC → Hardware cache (for its counters, and for tests).
    pub fn hardware_cache(&self) -> &Arc<CallerCache> {
        &self.hardware
    }

    /// The Hardware with an interface of `mac`, from the cache when it holds
    /// the MAC (read less than [`MAX_CACHED_AGE`] ago), else from the store
    /// (and then cached).
    async fn hardware_by_mac(
        &self,
        mac: MacAddr,
    ) -> Result<Option<Arc<Versioned<Hardware>>>, Error> {
        let now = self.clock.now();
        let fresh = |at: jiff::Timestamp| {
            std::time::Duration::try_from(now.duration_since(at))
                .is_ok_and(|age| age < MAX_CACHED_AGE)
        };
        let epoch = match self.hardware.get_fresh(mac, |(_, at)| fresh(*at)) {
            Ok(Cached::Known((hw, _))) => return Ok(Some(hw)),
            Ok(Cached::Unknown) => return Ok(None),
            Err(epoch) => epoch,
        };
        let found = self.store.hardware_by_mac(mac).await?.map(Arc::new);
        let keep = found.as_ref().map(|hw| {
            let m = &hw.value.metadata;
            (m.namespace(), m.name.as_str(), (hw.clone(), now))
        });
        self.hardware.insert(mac, epoch, keep);
        Ok(found)
    }

    /// The machine whose worker id is `worker`: the one with an interface of
    /// that MAC, else (Tinkerbell's agents may be named so) the one whose
    /// `spec.agentID` it is.
    async fn machine(
        &self,
        worker: &str,
    ) -> Result<Option<(Arc<Versioned<Hardware>>, Option<MacAddr>)>, Error> {
        if let Ok(mac) = worker.parse::<MacAddr>() {
            return Ok(self.hardware_by_mac(mac).await?.map(|hw| (hw, Some(mac))));
        }
        if worker.is_empty() {
            return Ok(None);
        }
        let all = self.store.list(Kind::Hardware).await?;
        Ok(all.into_iter().find_map(|v| match v.value {
            tinker_core::model::Object::Hardware(hw)
                if hw.spec.extra.get("agentID").and_then(|a| a.as_str()) == Some(worker) =>
            {
                Some((
                    Arc::new(Versioned {
                        version: v.version,
                        value: hw,
                    }),
                    None,
                ))
            }
            _ => None,
        }))
    }

    /// Whether the caller at `caller` is the worker `worker`: a known machine
    /// whose transport proof `proof` holds (the HTTP API checks its token
    /// there; gRPC has none), calling from the machine's own address (see
    /// [`CallerCheck`]). Unknown machine and bad proof are checked before the
    /// address, so a caller from elsewhere learns nothing more than that.
    pub async fn identify(
        &self,
        worker: &str,
        caller: IpAddr,
        proof: impl FnOnce(&Hardware) -> bool,
    ) -> Result<Caller, Denied> {
        let Some((hardware, mac)) = self.machine(worker).await.map_err(Denied::Store)? else {
            return Err(Denied::Unknown);
        };
        if !proof(&hardware.value) {
            return Err(Denied::BadProof);
        }
        let hw = &hardware.value;
        let from_machine = match mac {
            Some(mac) => self.callers.is_machine(hw, mac, caller),
            None => hw
                .macs()
                .into_iter()
                .any(|mac| self.callers.is_machine(hw, mac, caller)),
        };
        if !from_machine {
            return Err(Denied::WrongAddress);
        }
        let netboot_on = match mac {
            Some(mac) => {
                hw.interface(mac)
                    .and_then(|i| i.netboot.as_ref())
                    .and_then(|n| n.allow_pxe)
                    == Some(true)
            }
            None => hw.allows_pxe(),
        };
        Ok(Caller {
            hardware,
            mac,
            netboot: if netboot_on {
                Netboot::On
            } else {
                Netboot::Over
            },
        })
    }

    /// Claims the next action waiting for `worker`. `request` identifies the
    /// question (the same on each retry of it), so a lost answer is given
    /// again instead of the action being stuck.
    pub async fn next_action(
        &self,
        worker: &str,
        request: Option<&str>,
    ) -> Result<Option<Assignment>, Error> {
        let request = request.filter(|r| !r.is_empty());
        self.store
            .claim_next_action_for_request(worker, request, self.clock.now())
            .await
    }

    /// [`next_action`](Self::next_action) for a caller that has just read
    /// the worker's workflows (`looked`, as
    /// [`WorkflowStore::workflows_for_worker`] gives them): the store may
    /// claim from that read instead of reading them again.
    pub async fn claim_looked_at(
        &self,
        worker: &str,
        request: Option<&str>,
        looked: Vec<Versioned<Workflow>>,
    ) -> Result<Option<Assignment>, Error> {
        let request = request.filter(|r| !r.is_empty());
        self.store
            .claim_looked_at(worker, request, looked, self.clock.now())
            .await
    }

    /// Why `worker` got no action: its unfinished workflow is being prepared,
    /// or it has none.
    pub async fn idle_reason(&self, worker: &str) -> Result<Idle, Error> {
        // From the store's index of the worker's unfinished workflows: an
        // idle agent polls often, and this must not read every workflow.
        let preparing = self
            .store
            .workflows_for_worker(worker)
            .await?
            .into_iter()
            .any(|wf| {
                wf.value.status.as_ref().is_some_and(|s| {
                    !s.state.is_terminal()
                        && s.machine.is_preparing()
                        && s.tasks.iter().any(|t| t.agent_id == worker)
                })
            });
        Ok(if preparing {
            Idle::Preparing
        } else {
            Idle::NoWorkflow
        })
    }

    /// The workflow an event names, if the action at `index` is `worker`'s;
    /// checked before any event is applied, so a worker opens only its own
    /// actions.
    pub async fn own_action(
        &self,
        worker: &str,
        workflow_id: &str,
        index: usize,
    ) -> Result<(ObjectKey, Versioned<Workflow>), WorkerRefusal> {
        let key = workflow_key(workflow_id).ok_or(WorkerRefusal::BadWorkflowId)?;
        let wf = self
            .store
            .workflow(&key.namespace, &key.name)
            .await
            .map_err(WorkerRefusal::Store)?
            .ok_or(WorkerRefusal::NotYours)?;
        let mine = wf
            .value
            .status
            .as_ref()
            .is_some_and(|s| s.action_worker(index) == Some(worker));
        if !mine {
            return Err(WorkerRefusal::NotYours);
        }
        Ok((key, wf))
    }

    /// Records how `worker`'s action ended, through the store's state machine.
    pub async fn report(
        &self,
        worker: &str,
        workflow_id: &str,
        index: usize,
        attempt: u32,
        outcome: ActionOutcome,
    ) -> Result<Applied, WorkerRefusal> {
        self.apply_workers_event(
            worker,
            workflow_id,
            WorkflowEvent::Report {
                action: index,
                attempt,
                outcome,
            },
        )
        .await
    }

    /// Records that `worker`'s action is still running under its claim.
    pub async fn heartbeat(
        &self,
        worker: &str,
        workflow_id: &str,
        index: usize,
        attempt: u32,
    ) -> Result<Applied, WorkerRefusal> {
        self.apply_workers_event(
            worker,
            workflow_id,
            WorkflowEvent::Heartbeat {
                action: index,
                attempt,
            },
        )
        .await
    }

    /// Applies `event` as `worker` sent it: the store checks that its action
    /// is the worker's on the same read it applies the event to
    /// ([`WorkflowEvent::FromWorker`]), so one read and one write.
    async fn apply_workers_event(
        &self,
        worker: &str,
        workflow_id: &str,
        event: WorkflowEvent,
    ) -> Result<Applied, WorkerRefusal> {
        let key = workflow_key(workflow_id).ok_or(WorkerRefusal::BadWorkflowId)?;
        let event = WorkflowEvent::FromWorker {
            worker: worker.to_string(),
            sent: Box::new(event),
        };
        Ok(self
            .store
            .apply_event(&key, &event, self.clock.now())
            .await?)
    }
}

/// The workflow's state after an applied event.
pub fn state_after(applied: &Applied) -> WorkflowState {
    applied
        .workflow
        .value
        .state()
        .unwrap_or(WorkflowState::Pending)
}
