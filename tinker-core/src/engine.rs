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

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::model::{FailurePower, Hardware, Kind, Object, ObjectKey, Workflow};
use crate::power::{
    BootDevice, BootOptions, PowerAction, PowerConnector, PowerController, PowerState,
};
use crate::retry::{Backoff, BackoffConfig, Retryable};
use crate::state::{WorkflowEvent, WorkflowState};
use crate::store::{MachineEvent, Precondition, Versioned, WorkflowStore, WorkflowStoreExt};
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
        }
    }
}

/// The next thing to do for a workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Render the template into the status.
    Render,
    /// A timeout is due: tick the state machine.
    Expire,
    /// Set `allowPXE` on the Hardware.
    EnableNetboot,
    /// Ask the BMC for a one-time PXE boot.
    SetPxeBoot,
    /// Power-cycle (or power on) into netboot.
    PowerCycle,
    /// Clear `allowPXE`.
    DisableNetboot,
    /// Make the disk the boot device.
    SetDiskBoot,
    /// Reboot into the installed OS.
    Reboot,
    /// Apply the failure power policy.
    FailurePower(FailurePower),
    /// Nothing until this time (a retry or a timeout); `None`: until something changes.
    Wait(Option<Timestamp>),
}

/// Decides the next step for a workflow at `now`. Pure.
pub fn plan(workflow: &Workflow, now: Timestamp) -> Step {
    let Some(status) = &workflow.status else {
        return if workflow.is_disabled() {
            Step::Wait(None)
        } else {
            Step::Render
        };
    };
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
    let next = match status.state {
        WorkflowState::Pending | WorkflowState::Running if !workflow.is_disabled() => {
            if !m.netboot_enabled {
                Some(Step::EnableNetboot)
            } else if !m.no_bmc && !m.pxe_boot_set {
                Some(Step::SetPxeBoot)
            } else if !m.no_bmc && !m.power_cycled {
                Some(Step::PowerCycle)
            } else {
                None
            }
        }
        WorkflowState::Success => {
            if !m.netboot_disabled {
                Some(Step::DisableNetboot)
            } else if !m.no_bmc && !m.disk_boot_set {
                Some(Step::SetDiskBoot)
            } else if !m.no_bmc && !m.rebooted {
                Some(Step::Reboot)
            } else {
                None
            }
        }
        WorkflowState::Failed | WorkflowState::Timeout => (!m.no_bmc
            && !m.failure_power_applied
            && status.failure_power != FailurePower::Unchanged)
            .then_some(Step::FailurePower(status.failure_power)),
        _ => None,
    };
    let gave_up = m
        .last_error
        .as_deref()
        .is_some_and(|e| e.starts_with("gave up"));
    match next {
        Some(_) if gave_up => Step::Wait(None),
        Some(step) => step,
        None => Step::Wait(status.next_deadline()),
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
}

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
    pub async fn reconcile(&self, key: &ObjectKey) -> Result<Option<Timestamp>> {
        // Bounded: each step records progress, so a loop means a bug, not work.
        for _ in 0..32 {
            let Some(Versioned { version, value: wf }) =
                self.store.workflow(&key.namespace, &key.name).await?
            else {
                return Ok(None);
            };
            let now = self.clock.now();
            let step = plan(&wf, now);
            tracing::debug!(workflow = %key.qualified_name(), ?step, "engine step");
            match step {
                Step::Wait(until) => return Ok(until),
                Step::Render => self.render(key, version, wf).await?,
                Step::Expire => {
                    self.store
                        .apply_event(key, &WorkflowEvent::Tick, now)
                        .await?;
                }
                step => {
                    if let Some(until) = self.machine_step(key, version, wf, step).await? {
                        return Ok(Some(until));
                    }
                }
            }
        }
        Err(Error::Remote {
            target: format!("engine ({key})"),
            reason: "too many steps in one reconcile; the workflow is not making progress".into(),
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
        use std::collections::{HashSet, VecDeque};
        let mut changes = self.store.watch();
        tokio::pin!(shutdown);
        let limit = self.config.parallelism.max(1);
        let mut running = futures_util::stream::FuturesUnordered::new();
        let (mut busy, mut again, mut queued) = (
            HashSet::<ObjectKey>::new(),
            HashSet::<ObjectKey>::new(),
            HashSet::<ObjectKey>::new(),
        );
        let mut queue = VecDeque::<ObjectKey>::new();
        let mut next: Option<Timestamp> = None;
        let mut sweep_due = true;
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
            while running.len() < limit {
                let Some(key) = queue.pop_front() else { break };
                queued.remove(&key);
                if !busy.insert(key.clone()) {
                    again.insert(key);
                    continue;
                }
                running.push(async move {
                    let r = self.reconcile(&key).await;
                    (key, r)
                });
            }
            let wait = next
                .map(|t| t.duration_since(self.clock.now()))
                .map(|d| d.try_into().unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::from_secs(30));
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                listed = async { sweep.as_mut().expect("guarded").await }, if sweep.is_some() => {
                    sweep = None;
                    match listed {
                        Ok(all) => {
                            next = None;
                            for wf in all {
                                let key = ObjectKey::new(
                                    Kind::Workflow,
                                    wf.value.metadata.namespace(),
                                    wf.value.metadata.name.clone(),
                                );
                                if busy.contains(&key) {
                                    again.insert(key);
                                } else if queued.insert(key.clone()) {
                                    queue.push_back(key);
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
                    busy.remove(&key);
                    match result {
                        Ok(Some(t)) => next = Some(next.map_or(t, |n| n.min(t))),
                        Ok(None) => {}
                        // Another replica wrote first: it did the step.
                        Err(e @ Error::Conflict { .. }) => tracing::debug!(workflow = %key.qualified_name(), error = %e, "another replica got there first"),
                        Err(e) => tracing::warn!(workflow = %key.qualified_name(), error = %e, "reconcile failed"),
                    }
                    if again.remove(&key) && queued.insert(key.clone()) {
                        queue.push_back(key);
                    }
                }
                change = changes.recv() => match change {
                    Ok(c) if c.key.kind == Kind::Workflow && !c.deleted => {
                        if busy.contains(&c.key) {
                            again.insert(c.key);
                        } else if queued.insert(c.key.clone()) {
                            queue.push_back(c.key);
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => sweep_due = true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                },
                _ = self.clock.sleep(wait), if queue.is_empty() || running.len() >= limit => sweep_due = true,
            }
        }
    }

    async fn render(&self, key: &ObjectKey, version: u64, mut wf: Workflow) -> Result<()> {
        let ns = wf.metadata.namespace().to_string();
        let template = self.store.template(&ns, &wf.spec.template_ref).await?;
        let hardware = self.store.hardware(&ns, &wf.spec.hardware_ref).await?;
        let result = match &template {
            None => Err(format!("template {ns}/{} not found", wf.spec.template_ref)),
            Some(t) => {
                crate::render::instantiate(&wf, &t.value, hardware.as_ref().map(|h| &h.value))
                    .map_err(|e| e.to_string())
            }
        };
        let status = match result {
            Ok(mut status) => {
                status.heartbeat_grace_seconds = self.config.heartbeat_grace_seconds;
                status.machine.preparing = true;
                if hardware.is_none() {
                    // Nothing to switch netboot on for, and no BMC: the machine is
                    // booted by someone else.
                    status.machine.netboot_enabled = true;
                    status.machine.no_bmc = true;
                    status.machine.preparing = false;
                }
                status
            }
            Err(reason) => {
                let mut s = crate::model::WorkflowStatus::pending(Vec::new(), None);
                s.state = WorkflowState::Failed;
                s.reason = Some(format!("template rendering failed: {reason}"));
                s
            }
        };
        let summary = match &status.reason {
            Some(r) => r.clone(),
            None => format!("template rendered: {} actions", status.action_count()),
        };
        wf.status = Some(status);
        self.store
            .put(Object::Workflow(wf), Precondition::Version(version))
            .await?;
        self.log(key, hardware.as_ref().map(|h| &h.value), "engine", summary)
            .await;
        Ok(())
    }

    async fn machine_step(
        &self,
        key: &ObjectKey,
        version: u64,
        wf: Workflow,
        step: Step,
    ) -> Result<Option<Timestamp>> {
        // Several replicas may plan the same step at once: the one that records a
        // lease on the workflow (an optimistic write, so exactly one wins) makes the
        // BMC call; the others leave it. A lease outlives a replica that died
        // mid-step by `lease` at most; then another replica takes the step over.
        let now = self.clock.now();
        let mut wf = wf;
        let Some(status) = wf.status.as_mut() else {
            return Ok(None);
        };
        if let Some((holder, until)) = &status.machine.lease
            && holder != &self.config.replica
            && *until > now
        {
            // Another replica is at it: look again when its lease ends (its
            // record of the step will wake us sooner through the change feed).
            return Ok(Some(*until));
        }
        let until = now
            .checked_add(
                SignedDuration::try_from(self.config.lease).unwrap_or(SignedDuration::ZERO),
            )
            .unwrap_or(now);
        status.machine.lease = Some((self.config.replica.clone(), until));
        let version = match self
            .store
            .put(Object::Workflow(wf.clone()), Precondition::Version(version))
            .await
        {
            Ok(v) => v,
            Err(Error::Conflict { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let ns = wf.metadata.namespace().to_string();
        let hw = self.store.hardware(&ns, &wf.spec.hardware_ref).await?;
        let outcome = self.carry_out(&step, hw.as_ref().map(|h| &h.value)).await;
        let now = self.clock.now();
        let Some(status) = wf.status.as_mut() else {
            return Ok(None);
        };
        let m = &mut status.machine;
        m.lease = None;
        let mut fail_workflow = None;
        let message = match outcome {
            Ok(StepDone::Done) | Ok(StepDone::NoBmc) => {
                let no_bmc = matches!(outcome, Ok(StepDone::NoBmc));
                match step {
                    Step::EnableNetboot => m.netboot_enabled = true,
                    Step::SetPxeBoot => m.pxe_boot_set = true,
                    Step::PowerCycle => m.power_cycled = true,
                    Step::DisableNetboot => m.netboot_disabled = true,
                    Step::SetDiskBoot => m.disk_boot_set = true,
                    Step::Reboot => m.rebooted = true,
                    Step::FailurePower(_) => m.failure_power_applied = true,
                    _ => {}
                }
                if no_bmc {
                    m.no_bmc = true;
                }
                if m.netboot_enabled && (m.no_bmc || m.power_cycled) {
                    m.preparing = false;
                }
                m.attempts = 0;
                m.retry_at = None;
                m.last_error = None;
                if no_bmc {
                    format!("{step:?}: the machine has no BMC; power it on by hand")
                } else {
                    format!("{step:?}: done")
                }
            }
            Err(e) => {
                m.attempts += 1;
                if !e.is_retryable() || m.attempts >= self.config.max_attempts {
                    let why = format!("gave up on {step:?} after {} attempts: {e}", m.attempts);
                    m.last_error = Some(why.clone());
                    m.retry_at = None;
                    if matches!(
                        step,
                        Step::EnableNetboot | Step::SetPxeBoot | Step::PowerCycle
                    ) {
                        m.preparing = false;
                        fail_workflow = Some(why.clone());
                    }
                    why
                } else {
                    let delay = self
                        .jitter
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .delay_for(m.attempts);
                    m.retry_at = now
                        .checked_add(
                            SignedDuration::try_from(delay).unwrap_or(SignedDuration::ZERO),
                        )
                        .ok();
                    m.last_error = Some(e.to_string());
                    format!(
                        "{step:?} failed (attempt {}), retrying in {:.1} s: {e}",
                        m.attempts,
                        delay.as_secs_f64()
                    )
                }
            }
        };
        // Record the step. A worker's report may have been written meanwhile: the
        // machine steps are the engine's alone (under the lease), so they are put
        // onto the fresh workflow and written again.
        let machine = wf
            .status
            .as_ref()
            .map(|s| s.machine.clone())
            .unwrap_or_default();
        let (mut wf, mut version) = (wf, version);
        for _ in 0..8 {
            match self
                .store
                .put(Object::Workflow(wf.clone()), Precondition::Version(version))
                .await
            {
                Ok(_) => break,
                Err(Error::Conflict { .. }) => {
                    let Some(fresh) = self.store.workflow(&key.namespace, &key.name).await? else {
                        return Ok(None);
                    };
                    (wf, version) = (fresh.value, fresh.version);
                    if let Some(s) = wf.status.as_mut() {
                        s.machine = machine.clone();
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.log(key, hw.as_ref().map(|h| &h.value), "engine", message)
            .await;
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
        Ok(None)
    }

    async fn carry_out(&self, step: &Step, hw: Option<&Hardware>) -> Result<StepDone> {
        match step {
            Step::EnableNetboot | Step::DisableNetboot => {
                let Some(hw) = hw else {
                    return Ok(StepDone::NoBmc);
                };
                self.set_allow_pxe(hw, matches!(step, Step::EnableNetboot))
                    .await?;
                Ok(StepDone::Done)
            }
            _ => {
                let Some(hw) = hw else {
                    return Ok(StepDone::NoBmc);
                };
                let Some(bmc) = self.power.connect(hw).await? else {
                    return Ok(StepDone::NoBmc);
                };
                let efi = hw.uefi();
                match step {
                    Step::SetPxeBoot => {
                        bmc.set_boot_device(
                            BootDevice::Pxe,
                            BootOptions {
                                persistent: false,
                                efi,
                            },
                        )
                        .await?
                    }
                    Step::SetDiskBoot => {
                        bmc.set_boot_device(
                            BootDevice::Disk,
                            BootOptions {
                                persistent: true,
                                efi,
                            },
                        )
                        .await?
                    }
                    Step::PowerCycle | Step::Reboot => cycle_or_on(bmc.as_ref()).await?,
                    Step::FailurePower(FailurePower::Off) => bmc.power(PowerAction::Off).await?,
                    Step::FailurePower(FailurePower::On)
                        if bmc.power_state().await? == PowerState::Off =>
                    {
                        bmc.power(PowerAction::On).await?
                    }
                    _ => {}
                }
                Ok(StepDone::Done)
            }
        }
    }

    async fn set_allow_pxe(&self, hw: &Hardware, allow: bool) -> Result<()> {
        let ns = hw.metadata.namespace().to_string();
        // Retry on conflict: the Hardware may be edited by an operator meanwhile.
        for _ in 0..5 {
            let Some(Versioned { version, mut value }) =
                self.store.hardware(&ns, &hw.metadata.name).await?
            else {
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
            value.set_allow_pxe(allow);
            match self
                .store
                .put(Object::Hardware(value), Precondition::Version(version))
                .await
            {
                Ok(_) => return Ok(()),
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict {
            key: format!("Hardware {ns}/{}", hw.metadata.name),
            expected: 0,
            found: 0,
        })
    }

    async fn log(&self, key: &ObjectKey, hw: Option<&Hardware>, source: &str, message: String) {
        let machine = hw
            .map(|h| format!("{}/{}", h.metadata.namespace(), h.metadata.name))
            .unwrap_or_else(|| key.qualified_name());
        tracing::info!(workflow = %key.qualified_name(), machine = %machine, "{message}");
        let event = MachineEvent {
            seq: 0,
            at: self.clock.now(),
            machine,
            source: source.into(),
            message: format!("workflow {}: {message}", key.qualified_name()),
        };
        if let Err(e) = self.store.append_event(event).await {
            tracing::warn!(error = %e, "could not record a machine event");
        }
    }
}

enum StepDone {
    Done,
    NoBmc,
}

async fn cycle_or_on(bmc: &dyn PowerController) -> Result<()> {
    match bmc.power_state().await? {
        PowerState::Off => bmc.power(PowerAction::On).await,
        PowerState::On => bmc.power(PowerAction::Cycle).await,
    }
}
