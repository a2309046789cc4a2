//! The engine drives each workflow's machine through its lifecycle, through the
//! traits alone: render the template; allow netboot, ask the BMC for a one-time PXE
//! boot and power-cycle; let workers run the actions; when the last one succeeds,
//! turn netboot off, set the disk as boot device and reboot; on failure or timeout,
//! leave the power as the template asks.
//!
//! The decision is pure ([`plan`]: a workflow and `now` in, the next [`Step`] out);
//! [`Engine`] is the thin driver that carries steps out and records each one in the
//! workflow's `status.machine` with an optimistic write, so a restarted engine
//! never repeats a step that is done. A failed step is retried with exponential
//! backoff; after [`EngineConfig::max_attempts`] a preparing workflow fails with
//! the step's error, and a finishing one records that it gave up.
//!
//! One workflow cannot take the engine down or keep it busy: its template is
//! rendered within [`EngineConfig::render_limits`], a panic while rendering fails
//! that workflow with the panic's message, a panic anywhere else in its
//! processing is caught and returned as [`Error::Panicked`], and a workflow whose
//! processing fails the same way [`EngineConfig::park_after`] times in a row (an
//! error retrying does not cure, or a panic) is parked: FAILED, with a typed
//! [`Parked`] record in its status, and left alone from then on.

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::gotmpl::RenderLimits;
use crate::model::{
    FailurePower, GaveUp, Hardware, Kind, MachinePhase, MachineStep, MachineSteps, Object,
    ObjectKey, ParkReason, Parked, Workflow,
};
use crate::power::{
    BootDevice, BootOptions, PowerAction, PowerConnector, PowerController, PowerState,
};
use crate::retry::{Backoff, BackoffConfig, Retryable};
use crate::state::{WorkflowEvent, WorkflowState};
use crate::store::{
    EventKind, EventSource, MachineEvent, Precondition, Versioned, WorkflowStore, WorkflowStoreExt,
};
use jiff::{SignedDuration, Timestamp};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Attempts of a BMC step before giving up.
    pub max_attempts: u32,
    /// Delays between attempts of a failed BMC step (capped exponential, with
    /// jitter so a row of machines that failed together spreads out).
    pub backoff: BackoffConfig,
    /// Seconds without a worker heartbeat after which a running action times out.
    pub heartbeat_grace_seconds: Option<i64>,
    /// This engine's name among several replicas (the lease holder's name).
    pub replica: String,
    /// How long a replica may hold a workflow's step lease before another may
    /// take the step over (it died mid-step).
    pub lease: Duration,
    /// Workflows reconciled at once (one reconcile per workflow at a time). Each
    /// reconcile mostly waits on the store or a BMC, so a row of machines booting
    /// together is not served one store round trip after another.
    pub parallelism: usize,
    /// What rendering one workflow's template may spend (steps, memory, nesting).
    pub render_limits: RenderLimits,
    /// Failures in a row, all with the same error that retrying does not cure
    /// (or the same panic), after which a workflow is parked instead of being
    /// processed again at every pass. Transient errors (a store or BMC that is
    /// unreachable, a lost race) never count.
    pub park_after: u32,
    /// How long the worker of an action running when its workflow was
    /// cancelled has to hear of the cancel (its next heartbeat or report is
    /// refused). Our agent heartbeats every few seconds and stops the action;
    /// a worker that stays silent this long is not ours (Tinkerbell's agent has
    /// no cancel), so the machine is powered off through its BMC.
    pub cancel_grace: Duration,
    /// Every replica's name, this one's included, when several share a
    /// store; empty: this engine acts on every workflow at once. Each
    /// workflow then has one owner among them (rendezvous hashing of its key
    /// over the names, the same answer on every replica), which acts on its
    /// changes at once; the others look at a change only after
    /// [`takeover_delay`](Self::takeover_delay), so that a workflow is not
    /// read and raced for by every replica at every change, and a replica
    /// that is gone is still stood in for. A list without this replica's own
    /// name is taken for a mistake: this replica then acts on every change
    /// at once, as without a list (and says so when it starts). Lists that
    /// differ between replicas can leave a workflow with no owner: its
    /// changes then wait for the takeover delay.
    pub peers: Vec<String>,
    /// How long a replica that does not own a workflow waits after its
    /// change before it looks (see [`peers`](Self::peers)).
    pub takeover_delay: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_attempts: 6,
            backoff: BackoffConfig::new(Duration::from_secs(1), Duration::from_secs(60)),
            heartbeat_grace_seconds: Some(120),
            replica: format!("engine-{}-{:x}", std::process::id(), fastrand::u64(..)),
            lease: Duration::from_secs(60),
            parallelism: 64,
            render_limits: RenderLimits::default(),
            park_after: 5,
            cancel_grace: DEFAULT_CANCEL_GRACE,
            peers: Vec::new(),
            takeover_delay: Duration::from_secs(60),
        }
    }
}

impl EngineConfig {
    /// Whether this replica acts on `key`'s changes at once: it is the
    /// workflow's owner among [`peers`](Self::peers) (the name whose hash
    /// with the key is highest), or the list does not name this replica (or
    /// is empty).
    pub fn owns(&self, key: &ObjectKey) -> bool {
        if !self.peers.contains(&self.replica) {
            return true;
        }
        use std::hash::Hasher;
        let score = |peer: &str| {
            // FNV-1a: stable across processes, builds and platforms, so
            // every replica computes the same owner.
            let mut h = fnv::FnvHasher::default();
            h.write(peer.as_bytes());
            h.write(&[0]);
            h.write(key.namespace.as_bytes());
            h.write(&[0]);
            h.write(key.name.as_bytes());
            h.finish()
        };
        self.peers
            .iter()
            .max_by_key(|p| (score(p), p.as_str()))
            .is_none_or(|owner| *owner == self.replica)
    }
}

/// The default [`EngineConfig::cancel_grace`]: several of our agent's
/// heartbeat periods.
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(30);

/// More steps than any workflow has in one reconcile (see [`Error::Stalled`]).
const MAX_STEPS_PER_RECONCILE: usize = 32;

/// The next thing to do for a workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Render the template into the status.
    Render,
    /// A timeout is due: tick the state machine.
    Expire,
    /// Carry out a netboot or BMC step.
    Machine(MachineStep),
    /// Nothing until this time (a retry or a timeout); `None`: until something changes.
    Wait(Option<Timestamp>),
}

/// Decides the next step for a workflow at `now`, with the default
/// [`EngineConfig::cancel_grace`]. Pure.
pub fn plan(workflow: &Workflow, now: Timestamp) -> Step {
    plan_with(workflow, now, DEFAULT_CANCEL_GRACE)
}

/// Decides the next step for a workflow at `now`; the worker of an action
/// running when the workflow was cancelled has `cancel_grace` to hear of it
/// before the machine is powered off. Pure.
pub fn plan_with(workflow: &Workflow, now: Timestamp, cancel_grace: Duration) -> Step {
    let Some(status) = &workflow.status else {
        return if workflow.is_disabled() {
            Step::Wait(None)
        } else {
            Step::Render
        };
    };
    if status.parked.is_some() {
        return Step::Wait(None);
    }
    let m = &status.machine;
    if let Some(at) = m.retry_at
        && at > now
    {
        return Step::Wait(Some(at));
    }
    if let Some(due) = status.next_deadline()
        && due <= now
    {
        return Step::Expire;
    }
    // A cancelled action whose worker has not heard of the cancel: wait for
    // it (our agent stops the action and the usual failure policy follows);
    // a worker still silent after the grace is not ours and cannot be told to
    // stop, so the machine is powered off. Nothing else happens meanwhile.
    if let Some(c) = &status.cancelled
        && c.running.is_some()
        && c.acknowledged.is_none()
        && !m.no_bmc
        && m.gave_up.is_none()
        && !m.has_done(MachineStep::PowerOff)
    {
        let due = c
            .at
            .checked_add(SignedDuration::try_from(cancel_grace).unwrap_or(SignedDuration::ZERO))
            .unwrap_or(c.at);
        if due > now {
            return Step::Wait(Some(due));
        }
        return Step::Machine(MachineStep::PowerOff);
    }
    let next = match m.gave_up {
        // A step the engine gave up on blocks the machine's later steps.
        Some(_) => None,
        None => next_machine_step(
            status.state,
            m,
            status.failure_power,
            workflow.is_disabled(),
        ),
    };
    match next {
        Some(step) => Step::Machine(step),
        None => Step::Wait(status.next_deadline()),
    }
}

/// The machine step due in `state` at `phase`, if any. Pure.
fn next_machine_step(
    state: WorkflowState,
    m: &MachineSteps,
    failure_power: FailurePower,
    disabled: bool,
) -> Option<MachineStep> {
    use MachinePhase as P;
    let bmc = !m.no_bmc;
    match state {
        WorkflowState::Pending | WorkflowState::Running if !disabled => match m.phase {
            P::Preparing => Some(MachineStep::EnableNetboot),
            P::NetbootEnabled if bmc => Some(MachineStep::SetPxeBoot),
            P::PxeBootSet if bmc => Some(MachineStep::PowerCycle),
            _ => None,
        },
        WorkflowState::Success => match m.phase {
            P::Preparing | P::NetbootEnabled | P::PxeBootSet | P::Ready => {
                Some(MachineStep::DisableNetboot)
            }
            P::NetbootDisabled if bmc => Some(MachineStep::SetDiskBoot),
            P::DiskBootSet if bmc => Some(MachineStep::Reboot),
            _ => None,
        },
        WorkflowState::Failed | WorkflowState::Timeout => {
            (bmc && m.phase != P::FailurePowerApplied && failure_power != FailurePower::Unchanged)
                .then_some(MachineStep::FailurePower)
        }
        _ => None,
    }
}

/// The driver.
#[derive(Debug, Clone)]
pub struct Engine {
    store: Arc<dyn WorkflowStore>,
    power: Arc<dyn PowerConnector>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    jitter: Arc<std::sync::Mutex<Backoff>>,
    strikes: Arc<std::sync::Mutex<Strikes>>,
    /// Each workflow's events of the reconcile under way, written together
    /// when it ends (one store transaction instead of one per step).
    events: Arc<std::sync::Mutex<PendingEvents>>,
    /// The leases this engine (this process, not every replica of its name)
    /// wrote with a step for the step after, by workflow: only those are
    /// used without a lease write of their own.
    held: Arc<std::sync::Mutex<std::collections::HashMap<ObjectKey, Timestamp>>>,
    /// The newest version the change feed announced of each workflow (kept
    /// by the run loop): a run of machine steps carried in memory ends as
    /// soon as someone else has written its workflow.
    announced: Arc<std::sync::Mutex<std::collections::HashMap<ObjectKey, u64>>>,
}

/// Events recorded during a workflow's reconcile, not yet written.
type PendingEvents = std::collections::HashMap<ObjectKey, Vec<MachineEvent>>;

/// The crash-loop guard's memory: per workflow, the last failure's text and how
/// many times in a row it was the same. Forgotten on success or when parked.
type Strikes = std::collections::HashMap<ObjectKey, (String, u32)>;

impl Engine {
    /// An engine over a store and a BMC connector.
    pub fn new(
        store: Arc<dyn WorkflowStore>,
        power: Arc<dyn PowerConnector>,
        config: EngineConfig,
    ) -> Self {
        Engine {
            store,
            power,
            clock: Arc::new(SystemClock),
            jitter: Arc::new(std::sync::Mutex::new(Backoff::new(config.backoff))),
            strikes: Default::default(),
            events: Default::default(),
            held: Default::default(),
            announced: Default::default(),
            config,
        }
    }

    /// Draws the retry jitter from a seeded source (deterministic tests and
    /// simulations).
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.jitter = Arc::new(std::sync::Mutex::new(Backoff::with_seed(
            self.config.backoff,
            seed,
        )));
        self
    }

    /// Uses another clock (tests, simulations).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Takes every step that is due for one workflow. Returns when it next needs
    /// attention (`None`: only when something changes).
    ///
    /// A panic while processing the workflow is caught and returned as
    /// [`Error::Panicked`]; after [`EngineConfig::park_after`] identical
    /// failures in a row the workflow is parked (see the module's header).
    ///
    /// The machine events its steps record are written when it returns (its
    /// preparation's four in one store transaction), whatever it returns.
    pub async fn reconcile(&self, key: &ObjectKey) -> Result<Option<Timestamp>> {
        // A reconcile dropped before it returns (the run loop shutting down)
        // leaves no events behind to be written later out of place; its
        // steps are in the workflow's status.
        struct Forget<'a>(&'a Engine, &'a ObjectKey);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0.pending().remove(self.1);
            }
        }
        let _forget = Forget(self, key);
        let result = self.reconcile_guarded(key).await;
        let events = self.pending().remove(key).unwrap_or_default();
        if !events.is_empty()
            && let Err(e) = self.store.append_events(events).await
        {
            tracing::warn!(workflow = %key.qualified_name(), error = %e, "could not record the machine's events");
        }
        result
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, PendingEvents> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn reconcile_guarded(&self, key: &ObjectKey) -> Result<Option<Timestamp>> {
        use futures_util::FutureExt;
        let outcome = std::panic::AssertUnwindSafe(self.reconcile_steps(key))
            .catch_unwind()
            .await;
        let (reason, error) = match outcome {
            Ok(Ok(next)) => {
                self.strikes().remove(key);
                return Ok(next);
            }
            // Transient: another try may well succeed, however often it failed.
            Ok(Err(e)) if e.is_retryable() => return Err(e),
            Ok(Err(e)) => (ParkReason::RepeatedFailure, e),
            Err(payload) => (
                ParkReason::RepeatedPanic,
                Error::Panicked {
                    workflow: key.qualified_name(),
                    message: crate::error::panic_message(payload.as_ref()),
                },
            ),
        };
        let text = error.to_string();
        let failures = {
            let mut strikes = self.strikes();
            let entry = strikes
                .entry(key.clone())
                .or_insert_with(|| (text.clone(), 0));
            if entry.0 != text {
                *entry = (text.clone(), 0);
            }
            entry.1 += 1;
            entry.1
        };
        if failures >= self.config.park_after.max(1) {
            let parked = Parked {
                reason,
                failures,
                error: text,
                at: self.clock.now(),
            };
            match self.park(key, parked).await {
                Ok(()) => {
                    self.strikes().remove(key);
                }
                // Counted again at the next failure, and parked then.
                Err(e) => {
                    tracing::warn!(workflow = %key.qualified_name(), error = %e, "could not park a failing workflow")
                }
            }
        }
        Err(error)
    }

    fn strikes(&self) -> std::sync::MutexGuard<'_, Strikes> {
        self.strikes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parks a workflow: FAILED (unless it already ended), with `parked` in its
    /// status, so no replica processes it again.
    async fn park(&self, key: &ObjectKey, parked: Parked) -> Result<()> {
        let Some(Versioned {
            version,
            value: mut wf,
        }) = self.store.workflow(&key.namespace, &key.name).await?
        else {
            return Ok(());
        };
        let status = wf
            .status
            .get_or_insert_with(|| crate::model::WorkflowStatus::pending(Vec::new(), None));
        if status.parked.is_some() {
            return Ok(());
        }
        if !status.state.is_terminal() {
            status.state = WorkflowState::Failed;
            status.reason = Some(parked.to_string());
        }
        status.machine.lease = None;
        status.machine.retry_at = None;
        status.parked = Some(parked.clone());
        let hardware_ref = wf.spec.hardware_ref.clone();
        self.store
            .put(Object::Workflow(wf), Precondition::Version(version))
            .await?;
        tracing::warn!(workflow = %key.qualified_name(), "{parked}");
        // Recorded among the machine's events, where an operator looks first;
        // under the workflow's name if its Hardware cannot be read.
        let hw = self
            .store
            .hardware(&key.namespace, &hardware_ref)
            .await
            .ok()
            .flatten();
        self.log(
            key,
            hw.as_ref().map(|h| &h.value),
            EventKind::Parked(parked),
        );
        Ok(())
    }

    async fn reconcile_steps(&self, key: &ObjectKey) -> Result<Option<Timestamp>> {
        let mut hardware = HardwareOnce::default();
        // Machine steps done under this process's lease and not written yet
        // (see `Stepped::GoOn`): the next turn goes on from them.
        let mut carried: Option<Versioned<Workflow>> = None;
        // The events of the carried steps: logged when they are written.
        let mut run_events: Vec<MachineEvent> = Vec::new();
        // Bounded: each step records progress, so a loop means a bug, not work.
        for _ in 0..MAX_STEPS_PER_RECONCILE {
            let unwritten = carried.is_some();
            if !unwritten {
                // A run dropped unwritten (its lease lost) is done again.
                run_events.clear();
            }
            let Some(Versioned { version, value: wf }) = (match carried.take() {
                Some(wf) => Some(wf),
                // Started by an announcement or a sweep: the store's copy is
                // at least that new (another replica's write not announced
                // yet can overtake it, as it can overtake a read).
                None => self.store.recent_workflow(key).await?,
            }) else {
                return Ok(None);
            };
            let now = self.clock.now();
            let step = plan_with(&wf, now, self.config.cancel_grace);
            tracing::debug!(workflow = %key.qualified_name(), ?step, "engine step");
            if unwritten && (!matches!(step, Step::Machine(_)) || self.written_since(key, version))
            {
                // The run of steps ends here, written before anything else:
                // time moved on since the last one was planned, or someone
                // else (an operator's cancel, a worker) wrote the workflow,
                // and the next step is planned from what they wrote.
                self.record_steps(key, wf, version, now, &mut run_events)
                    .await?;
                continue;
            }
            match step {
                Step::Wait(until) => return Ok(until),
                Step::Render => self.render(key, version, wf, &mut hardware).await?,
                Step::Expire => {
                    self.store
                        .apply_event(key, &WorkflowEvent::Tick, now)
                        .await?;
                }
                Step::Machine(step) => {
                    match self
                        .machine_step(key, version, wf, step, &mut hardware, &mut run_events)
                        .await?
                    {
                        Stepped::ReadAgain => {}
                        Stepped::HeldElsewhere(until) => return Ok(Some(until)),
                        Stepped::GoOn(wf) => carried = Some(*wf),
                    }
                }
            }
        }
        Err(Error::Stalled {
            workflow: key.qualified_name(),
            steps: MAX_STEPS_PER_RECONCILE,
        })
    }

    /// Reconciles every workflow; returns the earliest time one needs attention.
    pub async fn reconcile_all(&self) -> Result<Option<Timestamp>> {
        let mut next: Option<Timestamp> = None;
        for wf in self.store.workflows().await? {
            let key = ObjectKey::new(
                Kind::Workflow,
                wf.value.metadata.namespace(),
                wf.value.metadata.name.clone(),
            );
            match self.reconcile(&key).await {
                Ok(Some(t)) => next = Some(next.map_or(t, |n| n.min(t))),
                Ok(None) => {}
                Err(e @ Error::Conflict { .. }) => {
                    tracing::debug!(workflow = %key.qualified_name(), error = %e, "another replica got there first")
                }
                Err(e) => {
                    tracing::warn!(workflow = %key.qualified_name(), error = %e, "reconcile failed")
                }
            }
        }
        Ok(next)
    }

    /// Runs until `shutdown` resolves: reconciles everything once, then each
    /// workflow whose object changes, and everything again when a deadline is due.
    /// Up to `parallelism` workflows are reconciled at once, never one workflow
    /// twice at once: a change that arrives while its workflow is being reconciled
    /// makes it run again afterwards.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        use futures_util::StreamExt;
        if !self.config.peers.is_empty() && !self.config.peers.contains(&self.config.replica) {
            tracing::warn!(
                replica = %self.config.replica,
                peers = ?self.config.peers,
                "the peers do not name this replica: it acts on every workflow's changes at once"
            );
        }
        let mut changes = self.store.watch();
        tokio::pin!(shutdown);
        let mut work = WorkQueue::new(self.config.parallelism);
        let mut running = futures_util::stream::FuturesUnordered::new();
        let mut next: Option<Timestamp> = None;
        let mut sweep_due = true;
        // Changes to workflows another replica owns, looked at later.
        let mut deferred = Deferred::default();
        // The list of every workflow is read as one more future polled beside the
        // reconciles, never awaited on its own: with a pooled store (PostgreSQL)
        // the reconciles in flight may hold every connection, and they only make
        // progress while this loop polls them.
        let mut sweep: Option<
            futures_util::future::BoxFuture<'_, Result<Vec<Versioned<Workflow>>>>,
        > = None;
        loop {
            if sweep_due && sweep.is_none() {
                sweep_due = false;
                sweep = Some(Box::pin(self.store.workflows()));
            }
            while let Some(key) = work.start_next(running.len()) {
                running.push(async move {
                    let r = self.reconcile(&key).await;
                    (key, r)
                });
            }
            let wait = next
                .map(|t| t.duration_since(self.clock.now()))
                .map(|d| d.try_into().unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::from_secs(30));
            let idle = work.is_idle(running.len());
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                listed = async { sweep.as_mut().expect("guarded").await }, if sweep.is_some() => {
                    sweep = None;
                    match listed {
                        Ok(all) => {
                            next = None;
                            let later = self.takeover_at();
                            for wf in all {
                                let key = ObjectKey::new(
                                    Kind::Workflow,
                                    wf.value.metadata.namespace(),
                                    wf.value.metadata.name.clone(),
                                );
                                if self.config.owns(&key) {
                                    work.changed(key);
                                } else {
                                    deferred.add(key, later);
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "could not list the workflows; trying again");
                            next = Some(
                                self.clock
                                    .now()
                                    .checked_add(SignedDuration::from_secs(1))
                                    .unwrap_or_else(|_| self.clock.now()),
                            );
                        }
                    }
                }
                Some((key, result)) = running.next(), if !running.is_empty() => {
                    match result {
                        Ok(Some(t)) => next = Some(next.map_or(t, |n| n.min(t))),
                        Ok(None) => {}
                        // Another replica wrote first: it did the step.
                        Err(e @ Error::Conflict { .. }) => tracing::debug!(workflow = %key.qualified_name(), error = %e, "another replica got there first"),
                        Err(e) => tracing::warn!(workflow = %key.qualified_name(), error = %e, "reconcile failed"),
                    }
                    work.finished(key);
                }
                change = changes.recv() => match change {
                    Ok(c) if c.key.kind == Kind::Workflow && c.deleted => {
                        self.announced.lock().unwrap_or_else(|p| p.into_inner()).remove(&c.key);
                    }
                    Ok(c) if c.key.kind == Kind::Workflow => {
                        self.announced
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(c.key.clone())
                            .and_modify(|v| *v = (*v).max(c.version))
                            .or_insert(c.version);
                        if self.config.owns(&c.key) {
                            work.changed(c.key);
                        } else {
                            deferred.add(c.key, self.takeover_at());
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => sweep_due = true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                },
                // Not while a sweep is under way: a deadline already past
                // would make this branch ready on every turn, and the loop
                // would spin without yielding until the sweep came back (with
                // a store whose answers need this runtime's I/O, never).
                _ = self.clock.sleep(wait), if idle && sweep.is_none() => sweep_due = true,
                _ = self.clock.sleep(deferred.wait(self.clock.now())), if !deferred.is_empty() => {
                    for key in deferred.due(self.clock.now()) {
                        work.changed(key);
                    }
                }
            }
        }
    }

    /// When a replica that does not own a workflow looks at a change of it.
    fn takeover_at(&self) -> Timestamp {
        let now = self.clock.now();
        SignedDuration::try_from(self.config.takeover_delay)
            .ok()
            .and_then(|d| now.checked_add(d).ok())
            .unwrap_or(now)
    }

    async fn render(
        &self,
        key: &ObjectKey,
        version: u64,
        mut wf: Workflow,
        hardware: &mut HardwareOnce,
    ) -> Result<()> {
        let ns = wf.metadata.namespace().to_string();
        let template = self.store.template(&ns, &wf.spec.template_ref).await?;
        let hardware = hardware
            .get(self.store.as_ref(), &ns, &wf.spec.hardware_ref)
            .await?;
        let result = match &template {
            None => Err(format!("template {ns}/{} not found", wf.spec.template_ref)),
            // A template is outside input: whatever it does while rendered, it
            // fails its own workflow and nothing else.
            Some(t) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::render::instantiate_with(
                    &wf,
                    &t.value,
                    hardware.as_ref().map(|h| &h.value),
                    self.config.render_limits,
                )
            }))
            .map_err(|payload| {
                format!(
                    "rendering panicked: {}",
                    crate::error::panic_message(payload.as_ref())
                )
            })
            .and_then(|r| r.map_err(|e| e.to_string())),
        };
        let (status, event) = rendered_status(
            result,
            hardware.is_some(),
            self.config.heartbeat_grace_seconds,
        );
        wf.status = Some(status);
        self.hold_lease_for_next_step(key, &mut wf, self.clock.now());
        self.store
            .put(Object::Workflow(wf), Precondition::Version(version))
            .await?;
        self.log(key, hardware.as_ref().map(|h| &h.value), event);
        Ok(())
    }

    async fn machine_step(
        &self,
        key: &ObjectKey,
        version: u64,
        wf: Workflow,
        step: MachineStep,
        hardware: &mut HardwareOnce,
        run_events: &mut Vec<MachineEvent>,
    ) -> Result<Stepped> {
        let (wf, version) = match self.take_lease(key, version, wf).await? {
            Lease::Taken { workflow, version } => (*workflow, version),
            Lease::HeldElsewhere { until } => return Ok(Stepped::HeldElsewhere(until)),
            Lease::Lost => return Ok(Stepped::ReadAgain),
        };
        let ns = wf.metadata.namespace().to_string();
        let hw = hardware
            .get(self.store.as_ref(), &ns, &wf.spec.hardware_ref)
            .await?;
        let failure_power = wf
            .status
            .as_ref()
            .map(|s| s.failure_power)
            .unwrap_or_default();
        let outcome = self
            .carry_out(step, failure_power, hw.as_ref(), hardware)
            .await;
        let now = self.clock.now();
        let mut wf = wf;
        let Some(status) = wf.status.as_mut() else {
            return Ok(Stepped::ReadAgain);
        };
        let lease = status.machine.lease.take();
        let recorded = {
            let mut jitter = self.jitter.lock().unwrap_or_else(|p| p.into_inner());
            record_outcome(
                &mut status.machine,
                step,
                outcome,
                now,
                self.config.max_attempts,
                |attempt| jitter.delay_for(attempt),
            )
        };
        let fail_workflow = match &recorded {
            EventKind::GaveUp(g) if g.step.prepares() => Some(g.to_string()),
            _ => None,
        };
        // Another machine step follows under this process's lease: it goes
        // on from this copy, and the run of steps (a preparation: netboot
        // on, PXE boot, power cycle) is written once, with its last step. A
        // replica that dies in between leaves the steps since the last write
        // to be done again, as it did for one step before; BMC steps are
        // idempotent.
        if fail_workflow.is_none()
            && matches!(
                plan_with(&wf, now, self.config.cancel_grace),
                Step::Machine(_)
            )
            && let Some((holder, until)) =
                lease.filter(|(holder, _)| *holder == self.config.replica)
        {
            if let Some(status) = wf.status.as_mut() {
                status.machine.lease = Some((holder, until));
            }
            // The stored lease is this process's own (it took or kept it
            // just now), so the next step uses it without a write.
            self.held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.clone(), until);
            run_events.push(self.event(key, hw.as_ref().map(|h| &h.value), recorded));
            return Ok(Stepped::GoOn(Box::new(Versioned { version, value: wf })));
        }
        self.record_steps(key, wf, version, now, run_events).await?;
        self.log(key, hw.as_ref().map(|h| &h.value), recorded);
        if let Some(reason) = fail_workflow {
            match self
                .store
                .apply_event(key, &WorkflowEvent::Fail { reason }, now)
                .await
            {
                Ok(_) | Err(Error::Transition { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Stepped::ReadAgain)
    }

    /// Whether the change feed announced a version of `key` newer than
    /// `version` (the one this reconcile read or wrote last).
    fn written_since(&self, key: &ObjectKey, version: u64) -> bool {
        self.announced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .is_some_and(|v| *v > version)
    }

    /// Writes the machine steps recorded in `wf` (read or last written at
    /// `version`), keeping the lease for a next machine step; then logs the
    /// events of the steps carried unwritten until now (`run_events`).
    async fn record_steps(
        &self,
        key: &ObjectKey,
        mut wf: Workflow,
        version: u64,
        now: Timestamp,
        run_events: &mut Vec<MachineEvent>,
    ) -> Result<()> {
        if let Some(status) = wf.status.as_mut() {
            status.machine.lease = None;
        }
        self.hold_lease_for_next_step(key, &mut wf, now);
        let machine = wf
            .status
            .as_ref()
            .map(|s| s.machine.clone())
            .unwrap_or_default();
        self.write_machine(key, wf, version, machine).await?;
        self.pending()
            .entry(key.clone())
            .or_default()
            .append(run_events);
        Ok(())
    }

    /// Keeps this replica's lease in a write that records a step (or the
    /// rendering) when the workflow's next step is another machine step, so
    /// that step is taken without a write of its own: a preparation or an
    /// ending is three steps, and each lease was a transaction (and a change
    /// every waiting worker and replica hears). Other replicas leave a
    /// workflow whose lease is held, as for a lease taken by a write.
    fn hold_lease_for_next_step(&self, key: &ObjectKey, wf: &mut Workflow, now: Timestamp) {
        let next = plan_with(wf, now, self.config.cancel_grace);
        let Some(status) = wf.status.as_mut() else {
            return;
        };
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        status.machine.lease = match next {
            Step::Machine(_) => {
                let until = self.lease_until(now);
                held.insert(key.clone(), until);
                Some((self.config.replica.clone(), until))
            }
            _ => {
                held.remove(key);
                None
            }
        };
    }

    fn lease_until(&self, now: Timestamp) -> Timestamp {
        now.checked_add(SignedDuration::try_from(self.config.lease).unwrap_or(SignedDuration::ZERO))
            .unwrap_or(now)
    }

    /// Several replicas may plan the same step at once: the one that records a
    /// lease on the workflow (an optimistic write, so exactly one wins) makes the
    /// BMC call; the others leave it. A lease outlives a replica that died
    /// mid-step by `lease` at most; then another replica takes the step over.
    /// A lease this engine wrote with its last step (it remembers which: two
    /// replicas given one name do not share it) and that has more than half
    /// its time left is used as it is (see
    /// [`hold_lease_for_next_step`](Self::hold_lease_for_next_step)).
    async fn take_lease(&self, key: &ObjectKey, version: u64, mut wf: Workflow) -> Result<Lease> {
        let now = self.clock.now();
        let written_here = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        let Some(status) = wf.status.as_mut() else {
            return Ok(Lease::Lost);
        };
        if let Some((holder, until)) = &status.machine.lease
            && holder == &self.config.replica
            && written_here == Some(*until)
            && SignedDuration::try_from(self.config.lease / 2)
                .ok()
                .and_then(|half| now.checked_add(half).ok())
                .is_some_and(|half_left| *until > half_left)
        {
            return Ok(Lease::Taken {
                workflow: Box::new(wf),
                version,
            });
        }
        if let Some((holder, until)) = &status.machine.lease
            && holder != &self.config.replica
            && *until > now
        {
            // Another replica is at it: look again when its lease ends (its
            // record of the step will wake us sooner through the change feed).
            return Ok(Lease::HeldElsewhere { until: *until });
        }
        status.machine.lease = Some((self.config.replica.clone(), self.lease_until(now)));
        match self
            .store
            .put(Object::Workflow(wf.clone()), Precondition::Version(version))
            .await
        {
            Ok(version) => Ok(Lease::Taken {
                workflow: Box::new(wf),
                version,
            }),
            Err(Error::Conflict { .. }) => Ok(Lease::Lost),
            Err(e) => Err(e),
        }
    }

    /// Records the machine's steps. A worker's report may have been written
    /// meanwhile: the machine steps are the engine's alone (under the lease), so
    /// they are put onto the fresh workflow and written again.
    async fn write_machine(
        &self,
        key: &ObjectKey,
        wf: Workflow,
        version: u64,
        machine: MachineSteps,
    ) -> Result<()> {
        let execution = wf.status.as_ref().map(|s| s.execution);
        let (mut wf, mut version) = (wf, version);
        for _ in 0..8 {
            match self
                .store
                .put(Object::Workflow(wf.clone()), Precondition::Version(version))
                .await
            {
                Ok(_) => return Ok(()),
                Err(Error::Conflict { .. }) => {
                    let Some(fresh) = self.store.workflow(&key.namespace, &key.name).await? else {
                        return Ok(());
                    };
                    (wf, version) = (fresh.value, fresh.version);
                    // An operator started a new execution meanwhile: the step
                    // belonged to the one that ended, and the new one is
                    // prepared from the start.
                    if wf.status.as_ref().map(|s| s.execution) != execution {
                        return Ok(());
                    }
                    if let Some(s) = wf.status.as_mut() {
                        s.machine = machine.clone();
                    }
                }
                Err(e) => return Err(e),
            }
        }
        // Eight reports in a row won every race: the step stays unrecorded and is
        // planned again (BMC steps are idempotent).
        Ok(())
    }

    async fn carry_out(
        &self,
        step: MachineStep,
        failure_power: FailurePower,
        hw: Option<&Versioned<Hardware>>,
        hardware: &mut HardwareOnce,
    ) -> Result<StepDone> {
        let Some(hw) = hw else {
            return Ok(StepDone::NoBmc);
        };
        if let MachineStep::EnableNetboot | MachineStep::DisableNetboot = step {
            self.set_allow_pxe(hw, step == MachineStep::EnableNetboot, hardware)
                .await?;
            return Ok(StepDone::Done);
        }
        let hw = &hw.value;
        let Some(bmc) = self.power.connect(hw).await? else {
            return Ok(StepDone::NoBmc);
        };
        let efi = hw.uefi();
        let called: Result<()> = async {
            match step {
                MachineStep::SetPxeBoot => {
                    bmc.set_boot_device(
                        BootDevice::Pxe,
                        BootOptions {
                            persistent: false,
                            efi,
                        },
                    )
                    .await?
                }
                MachineStep::SetDiskBoot => {
                    bmc.set_boot_device(
                        BootDevice::Disk,
                        BootOptions {
                            persistent: true,
                            efi,
                        },
                    )
                    .await?
                }
                MachineStep::PowerCycle => cycle_or_on(bmc.as_ref(), true).await?,
                MachineStep::Reboot => cycle_or_on(bmc.as_ref(), false).await?,
                MachineStep::FailurePower => match failure_power {
                    FailurePower::Off => bmc.power(PowerAction::Off).await?,
                    FailurePower::On if bmc.power_state().await? == PowerState::Off => {
                        bmc.power(PowerAction::On).await?
                    }
                    _ => {}
                },
                MachineStep::PowerOff => bmc.power(PowerAction::Off).await?,
                MachineStep::EnableNetboot | MachineStep::DisableNetboot => {}
            }
            Ok(())
        }
        .await;
        match called {
            Ok(()) => Ok(StepDone::Done),
            // The controller cannot do this at all (Wake-on-LAN has no boot
            // device, no power off): retrying or failing the workflow would not
            // change that, so the step is skipped, and said so.
            // Only a controller that cannot by nature: a BMC that refuses what
            // it should do (Unsupported) fails the step as before.
            Err(e @ Error::NotCapable { .. }) => Ok(StepDone::Unsupported {
                reason: e.to_string(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Turns netboot on or off in the Hardware `hw` (as read this reconcile),
    /// and keeps `hardware` current with what it wrote.
    async fn set_allow_pxe(
        &self,
        hw: &Versioned<Hardware>,
        allow: bool,
        hardware: &mut HardwareOnce,
    ) -> Result<()> {
        let ns = hw.value.metadata.namespace().to_string();
        let mut current = Some(hw.clone());
        // Retry on conflict: the Hardware may be edited by an operator meanwhile.
        let mut last_conflict = None;
        for _ in 0..5 {
            // The copy read this reconcile first; after a conflict, the store's.
            let read = match current.take() {
                Some(read) => Some(read),
                None => self.store.hardware(&ns, &hw.value.metadata.name).await?,
            };
            let Some(Versioned { version, mut value }) = read else {
                return Ok(());
            };
            if value.allows_pxe() == allow
                && value
                    .spec
                    .interfaces
                    .iter()
                    .all(|i| i.netboot.as_ref().and_then(|n| n.allow_pxe) == Some(allow))
            {
                return Ok(());
            }
            value.set_allow_pxe_at(allow, self.clock.now());
            match self
                .store
                .put(
                    Object::Hardware(value.clone()),
                    Precondition::Version(version),
                )
                .await
            {
                Ok(version) => {
                    hardware.wrote(Versioned { version, value });
                    return Ok(());
                }
                Err(e @ Error::Conflict { .. }) => last_conflict = Some(e),
                Err(e) => return Err(e),
            }
        }
        // Lost five races in a row: the last conflict says with whom; the step is
        // retried with backoff like any other conflict.
        Err(last_conflict.expect("the loop ran and every pass conflicted"))
    }

    /// Records a machine event, written when the reconcile under way ends.
    fn log(&self, key: &ObjectKey, hw: Option<&Hardware>, kind: EventKind) {
        let event = self.event(key, hw, kind);
        self.pending().entry(key.clone()).or_default().push(event);
    }

    /// A machine event of the engine's, said in the log now.
    fn event(&self, key: &ObjectKey, hw: Option<&Hardware>, kind: EventKind) -> MachineEvent {
        let machine = hw
            .map(|h| format!("{}/{}", h.metadata.namespace(), h.metadata.name))
            .unwrap_or_else(|| key.qualified_name());
        let event = MachineEvent::new(self.clock.now(), machine, EventSource::Engine, kind)
            .for_workflow(key.qualified_name());
        tracing::info!(workflow = %key.qualified_name(), machine = %event.machine, "{}", event.kind);
        event
    }
}

/// Changes of workflows another replica owns, each looked at once its time
/// comes (a key changed again meanwhile keeps its first time: the look reads
/// the newest anyway). Pure bookkeeping, no I/O.
#[derive(Debug, Default)]
struct Deferred {
    by_time: std::collections::BTreeMap<Timestamp, Vec<ObjectKey>>,
    keys: std::collections::HashSet<ObjectKey>,
}

impl Deferred {
    fn add(&mut self, key: ObjectKey, at: Timestamp) {
        if self.keys.insert(key.clone()) {
            self.by_time.entry(at).or_default().push(key);
        }
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How long until the first is due.
    fn wait(&self, now: Timestamp) -> Duration {
        self.by_time
            .keys()
            .next()
            .map(|at| at.duration_since(now))
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or(Duration::ZERO)
    }

    /// The keys due at `now`, taken out.
    fn due(&mut self, now: Timestamp) -> Vec<ObjectKey> {
        let later = self.by_time.split_off(
            &now.checked_add(SignedDuration::from_nanos(1))
                .unwrap_or(now),
        );
        let due: Vec<ObjectKey> = std::mem::replace(&mut self.by_time, later)
            .into_values()
            .flatten()
            .collect();
        for key in &due {
            self.keys.remove(key);
        }
        due
    }
}

/// What a machine step leaves for the reconcile's next turn.
enum Stepped {
    /// Written, or lost to another writer: the next turn reads the workflow.
    ReadAgain,
    /// Another replica holds the step's lease until then.
    HeldElsewhere(Timestamp),
    /// Done and recorded only in this copy, which holds the lease, and whose
    /// next step is another machine step: the next turn goes on from it.
    GoOn(Box<Versioned<Workflow>>),
}

/// A workflow's Hardware, read once per reconcile: each step needs it (the
/// BMC to call, the machine's name for its events), and a store read per step
/// was a third of the engine's reads in a boot storm. The engine's own write
/// to it (netboot on or off) keeps the copy current; an edit by someone else
/// meanwhile is seen at the next reconcile, or by the netboot write's version
/// check.
#[derive(Debug, Default)]
struct HardwareOnce {
    read: Option<(String, String, Option<Versioned<Hardware>>)>,
}

impl HardwareOnce {
    /// The Hardware `namespace/name`, read from `store` the first time (or
    /// when the workflow names another).
    async fn get(
        &mut self,
        store: &dyn WorkflowStore,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Versioned<Hardware>>> {
        match &self.read {
            Some((ns, n, hw)) if ns == namespace && n == name => Ok(hw.clone()),
            _ => {
                let hw = store.hardware(namespace, name).await?;
                self.read = Some((namespace.to_string(), name.to_string(), hw.clone()));
                Ok(hw)
            }
        }
    }

    /// Remembers what the engine wrote.
    fn wrote(&mut self, hw: Versioned<Hardware>) {
        let (ns, name) = (
            hw.value.metadata.namespace().to_string(),
            hw.value.metadata.name.clone(),
        );
        self.read = Some((ns, name, Some(hw)));
    }
}

/// Which workflows the run loop reconciles next: each at most once at a time,
/// at most `limit` at once, and one that changes while it is being reconciled
/// is reconciled again afterwards. Pure bookkeeping, no I/O.
#[derive(Debug)]
struct WorkQueue {
    limit: usize,
    queue: std::collections::VecDeque<ObjectKey>,
    queued: std::collections::HashSet<ObjectKey>,
    busy: std::collections::HashSet<ObjectKey>,
    again: std::collections::HashSet<ObjectKey>,
}

impl WorkQueue {
    fn new(limit: usize) -> Self {
        WorkQueue {
            limit: limit.max(1),
            queue: Default::default(),
            queued: Default::default(),
            busy: Default::default(),
            again: Default::default(),
        }
    }

    /// A workflow changed (or a sweep listed it): queue it, or mark it for
    /// another pass if it is being reconciled now.
    fn changed(&mut self, key: ObjectKey) {
        if self.busy.contains(&key) {
            self.again.insert(key);
        } else if self.queued.insert(key.clone()) {
            self.queue.push_back(key);
        }
    }

    /// The next workflow to start, with `running` reconciles in flight.
    fn start_next(&mut self, running: usize) -> Option<ObjectKey> {
        if running >= self.limit {
            return None;
        }
        while let Some(key) = self.queue.pop_front() {
            self.queued.remove(&key);
            if self.busy.insert(key.clone()) {
                return Some(key);
            }
            self.again.insert(key);
        }
        None
    }

    /// A reconcile ended: queue it again if it changed meanwhile.
    fn finished(&mut self, key: ObjectKey) {
        self.busy.remove(&key);
        if self.again.remove(&key) && self.queued.insert(key.clone()) {
            self.queue.push_back(key);
        }
    }

    /// Whether the loop may sleep until its next deadline: nothing is waiting
    /// that could start now.
    fn is_idle(&self, running: usize) -> bool {
        self.queue.is_empty() || running >= self.limit
    }
}

/// What became of a lease attempt.
enum Lease {
    /// Ours: the workflow as written with the lease, and its version.
    Taken {
        workflow: Box<Workflow>,
        version: u64,
    },
    /// Another replica holds it until then.
    HeldElsewhere { until: Timestamp },
    /// The workflow changed or went away meanwhile; it is planned again.
    Lost,
}

/// The status of a freshly rendered workflow, and the event that says so. Pure.
fn rendered_status(
    result: std::result::Result<crate::model::WorkflowStatus, String>,
    has_hardware: bool,
    heartbeat_grace_seconds: Option<i64>,
) -> (crate::model::WorkflowStatus, EventKind) {
    match result {
        Ok(mut status) => {
            status.heartbeat_grace_seconds = heartbeat_grace_seconds;
            status.machine = if has_hardware {
                MachineSteps::preparing()
            } else {
                // Nothing to switch netboot on for, and no BMC: the machine is
                // booted by someone else.
                MachineSteps {
                    phase: MachinePhase::Ready,
                    no_bmc: true,
                    ..Default::default()
                }
            };
            let actions = status.action_count();
            (status, EventKind::Rendered { actions })
        }
        Err(reason) => {
            let mut s = crate::model::WorkflowStatus::pending(Vec::new(), None);
            s.state = WorkflowState::Failed;
            s.reason = Some(format!("template rendering failed: {reason}"));
            (s, EventKind::RenderFailed { reason })
        }
    }
}

/// Records a step's outcome in the machine's steps: done, to be retried after
/// a jittered delay, or given up. Returns the event that says which. Pure.
pub fn record_outcome(
    m: &mut MachineSteps,
    step: MachineStep,
    outcome: Result<StepDone>,
    now: Timestamp,
    max_attempts: u32,
    delay: impl FnOnce(u32) -> Duration,
) -> EventKind {
    match outcome {
        Ok(StepDone::Done) => {
            m.done(step, false);
            EventKind::StepDone { step }
        }
        Ok(StepDone::NoBmc) => {
            m.done(step, true);
            EventKind::StepSkippedNoBmc { step }
        }
        Ok(StepDone::Unsupported { reason }) => {
            m.done(step, false);
            EventKind::StepSkippedUnsupported { step, reason }
        }
        Err(e) => {
            m.attempts += 1;
            if !e.is_retryable() || m.attempts >= max_attempts {
                let g = GaveUp {
                    step,
                    attempts: m.attempts,
                    error: e.to_string(),
                };
                m.gave_up = Some(g.clone());
                m.last_error = None;
                m.retry_at = None;
                EventKind::GaveUp(g)
            } else {
                let delay = delay(m.attempts);
                m.retry_at = now
                    .checked_add(SignedDuration::try_from(delay).unwrap_or(SignedDuration::ZERO))
                    .ok();
                m.last_error = Some(e.to_string());
                EventKind::StepFailed {
                    step,
                    attempt: m.attempts,
                    retry_in_ms: delay.as_millis().min(u128::from(u64::MAX)) as u64,
                    error: e.to_string(),
                }
            }
        }
    }
}

/// How a step ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepDone {
    /// Carried out.
    Done,
    /// The machine has no BMC (or no Hardware): nothing to call.
    NoBmc,
    /// The machine's controller answered [`Error::NotCapable`] (Wake-on-LAN
    /// cannot set a boot device or power off): skipped, and the workflow goes
    /// on.
    Unsupported {
        /// The controller's answer.
        reason: String,
    },
}

/// Powers the machine on if it is off, cycles it if it is on. A controller that
/// cannot read the power state (Wake-on-LAN) is told to power on when `wake`
/// (starting the machine for its workflow: a machine already on ignores it) and
/// otherwise leaves the step unsupported (the reboot after the last action is
/// that action's to do).
async fn cycle_or_on(bmc: &dyn PowerController, wake: bool) -> Result<()> {
    match bmc.power_state().await {
        Ok(PowerState::Off) => bmc.power(PowerAction::On).await,
        Ok(PowerState::On) => bmc.power(PowerAction::Cycle).await,
        Err(Error::NotCapable { .. }) if wake => bmc.power(PowerAction::On).await,
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod work_queue_tests {
    use super::*;

    fn key(n: &str) -> ObjectKey {
        ObjectKey::new(Kind::Workflow, "default", n)
    }

    #[test]
    fn each_workflow_has_one_owner_among_the_peers_and_they_share_them() {
        let peers: Vec<String> = ["cp0", "cp1", "cp2"].map(String::from).to_vec();
        let config = |replica: &str| EngineConfig {
            replica: replica.into(),
            peers: peers.clone(),
            ..EngineConfig::default()
        };
        let mut owned = [0usize; 3];
        for i in 0..3000 {
            let k = key(&format!("wf-{i}"));
            let owners: Vec<usize> = (0..3).filter(|&p| config(&peers[p]).owns(&k)).collect();
            assert_eq!(owners.len(), 1, "{k:?}: {owners:?}");
            owned[owners[0]] += 1;
        }
        assert!(owned.iter().all(|&n| n > 800), "shared out: {owned:?}");
        // No peers, or a list without this replica: every workflow is this
        // engine's, as before there were peers.
        assert!(EngineConfig::default().owns(&key("any")));
        let stranger = config("cp9");
        assert!((0..100).all(|i| stranger.owns(&key(&format!("wf-{i}")))));
    }

    #[test]
    fn deferred_changes_come_due_once_at_their_first_time() {
        let t = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        let mut d = Deferred::default();
        d.add(key("a"), t(10));
        d.add(key("b"), t(20));
        // Changed again before its time: keeps the first.
        d.add(key("a"), t(30));
        assert_eq!(d.wait(t(0)), Duration::from_secs(10));
        assert!(d.due(t(9)).is_empty());
        assert_eq!(d.due(t(10)), vec![key("a")]);
        assert_eq!(d.due(t(25)), vec![key("b")]);
        assert!(d.is_empty());
        d.add(key("a"), t(40));
        assert_eq!(d.due(t(40)), vec![key("a")], "again once taken out");
    }

    #[test]
    fn one_reconcile_per_workflow_and_a_change_meanwhile_runs_it_again() {
        let mut w = WorkQueue::new(2);
        w.changed(key("a"));
        w.changed(key("a"));
        w.changed(key("b"));
        w.changed(key("c"));
        assert_eq!(w.start_next(0), Some(key("a")), "queued once");
        assert_eq!(w.start_next(1), Some(key("b")));
        assert_eq!(w.start_next(2), None, "at the limit");
        assert!(w.is_idle(2));
        w.changed(key("a"));
        w.finished(key("a"));
        // Running: b. Queued: c, then a (it changed while it ran).
        assert_eq!(w.start_next(1), Some(key("c")), "in order");
        assert_eq!(w.start_next(2), None, "at the limit again");
        w.finished(key("c"));
        assert_eq!(
            w.start_next(1),
            Some(key("a")),
            "a changed while running: again"
        );
        w.finished(key("b"));
        w.finished(key("a"));
        assert_eq!(w.start_next(0), None);
        assert!(w.is_idle(0));
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    /// A step the controller cannot do is recorded as skipped and the machine
    /// goes on to its next phase: no retry, no give-up (which would fail the
    /// workflow for a preparing step).
    #[test]
    fn an_unsupported_step_is_skipped_not_retried_or_given_up() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut m = MachineSteps {
            phase: MachinePhase::NetbootEnabled,
            ..Default::default()
        };
        let reason = "wol://x does not support setting the boot device: Wake-on-LAN can only power a machine on";
        let event = record_outcome(
            &mut m,
            MachineStep::SetPxeBoot,
            Ok(StepDone::Unsupported {
                reason: reason.into(),
            }),
            now,
            3,
            |_| panic!("not retried"),
        );
        assert_eq!(
            event,
            EventKind::StepSkippedUnsupported {
                step: MachineStep::SetPxeBoot,
                reason: reason.into()
            }
        );
        assert_eq!(m.phase, MachinePhase::PxeBootSet, "the power-on is next");
        assert!(!m.no_bmc && m.gave_up.is_none() && m.retry_at.is_none());
        assert_eq!(
            next_machine_step(WorkflowState::Pending, &m, FailurePower::Unchanged, false),
            Some(MachineStep::PowerCycle)
        );
    }
}
