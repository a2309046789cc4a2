//! The engine, driven through the traits with in-process fakes: a fake BMC that
//! fails and recovers, the in-memory store, and a clock the test moves.

use jiff::{SignedDuration, Timestamp};
use std::sync::Arc;
use std::time::Duration;
use tinker::bmc::{MockBmc, MockCall, StaticConnector};
use tinker::core::clock::{Clock, ManualClock};
use tinker::core::engine::{Engine, EngineConfig};
use tinker::core::model::{Kind, MachinePhase, MachineStep, ObjectKey, ParkReason, Workflow};
use tinker::core::retry::BackoffConfig;
use tinker::core::state::{ActionOutcome, WorkflowEvent, WorkflowState};
use tinker::core::store::EventKind;
use tinker::core::testing::{self, mac};
use tinker::core::{
    BootDevice, BootOptions, PowerAction, Precondition, WorkflowStore, WorkflowStoreExt,
};
use tinker::store::MemoryStore;

/// The engine's first step: PXE, once, legacy.
const PXE_ONCE: MockCall = MockCall::SetBoot {
    device: BootDevice::Pxe,
    options: BootOptions {
        persistent: false,
        efi: false,
    },
};

/// The engine's last step: the disk, for good.
const DISK_PERSISTENT: MockCall = MockCall::SetBoot {
    device: BootDevice::Disk,
    options: BootOptions {
        persistent: true,
        efi: false,
    },
};

/// An answered call that set the disk as boot device (once or for good).
fn is_disk_boot(c: &tinker::bmc::CallRecord) -> bool {
    !c.failed
        && matches!(
            c.call,
            MockCall::SetBoot {
                device: BootDevice::Disk,
                ..
            }
        )
}

struct Rig {
    store: Arc<MemoryStore>,
    clock: Arc<ManualClock>,
    engine: Engine,
    bmc: MockBmc,
    key: ObjectKey,
    worker: String,
}

async fn rig(template_data: Option<&str>, config: EngineConfig) -> Rig {
    rig_with(template_data, config, |bmc, _| Arc::new(bmc)).await
}

/// [`rig`], with the machine's BMC as `controller` makes it of the mock.
async fn rig_with(
    template_data: Option<&str>,
    config: EngineConfig,
    controller: impl FnOnce(MockBmc, Arc<MemoryStore>) -> Arc<dyn tinker::core::PowerController>,
) -> Rig {
    let store = Arc::new(MemoryStore::new());
    let connector = Arc::new(StaticConnector::new());
    let bmc = MockBmc::new("m1");
    connector.insert("m1", controller(bmc.clone(), store.clone()));
    let clock = Arc::new(ManualClock::new(
        Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    let mut hw = testing::hardware("m1", 1);
    hw.set_allow_pxe(false);
    store.put(hw.into(), Precondition::Absent).await.unwrap();
    let mut template = testing::template("install", 3, 60);
    if let Some(data) = template_data {
        template.spec.data = Some(data.to_string());
    }
    store
        .put(template.into(), Precondition::Absent)
        .await
        .unwrap();
    store
        .put(
            Workflow::new("wf1", "install", "m1", mac(1)).into(),
            Precondition::Absent,
        )
        .await
        .unwrap();
    let engine = Engine::new(store.clone(), connector, config).with_clock(clock.clone());
    Rig {
        store,
        clock,
        engine,
        bmc,
        key: ObjectKey::default_ns(Kind::Workflow, "wf1"),
        worker: mac(1).to_string(),
    }
}

impl Rig {
    async fn run_actions(&self, fail_at: Option<usize>) {
        loop {
            let Some(a) = self
                .store
                .claim_next_action(&self.worker, self.clock.now())
                .await
                .unwrap()
            else {
                return;
            };
            let outcome = if Some(a.action_index) == fail_at {
                ActionOutcome::Failed {
                    exit_code: Some(2),
                    message: "no such disk".into(),
                }
            } else {
                ActionOutcome::Success
            };
            let report = WorkflowEvent::Report {
                action: a.action_index,
                attempt: a.attempt,
                outcome,
            };
            self.store
                .apply_event(&a.workflow, &report, self.clock.now())
                .await
                .unwrap();
        }
    }

    async fn workflow(&self) -> Workflow {
        self.store
            .workflow("default", "wf1")
            .await
            .unwrap()
            .unwrap()
            .value
    }

    async fn allow_pxe(&self) -> bool {
        self.store
            .hardware("default", "m1")
            .await
            .unwrap()
            .unwrap()
            .value
            .allows_pxe()
    }
}

#[tokio::test]
async fn provisions_then_boots_from_disk() {
    let r = rig(None, EngineConfig::default()).await;
    assert!(
        r.store
            .claim_next_action(&r.worker, r.clock.now())
            .await
            .unwrap()
            .is_none(),
        "nothing before rendering"
    );
    r.engine.reconcile(&r.key).await.unwrap();
    assert!(r.allow_pxe().await, "netboot allowed");
    assert_eq!(
        r.bmc.calls(),
        [
            PXE_ONCE.ok(),
            MockCall::ReadPowerState.ok(),
            MockCall::Power(PowerAction::On).ok()
        ]
    );
    assert!(r.bmc.is_on());
    let wf = r.workflow().await;
    assert!(!wf.status.as_ref().unwrap().machine.is_preparing());

    r.run_actions(None).await;
    assert_eq!(r.workflow().await.state(), Some(WorkflowState::Success));
    r.engine.reconcile(&r.key).await.unwrap();
    assert!(!r.allow_pxe().await, "netboot turned off");
    assert_eq!(
        r.bmc.calls()[3..],
        [
            DISK_PERSISTENT.ok(),
            MockCall::ReadPowerState.ok(),
            MockCall::Power(PowerAction::Cycle).ok()
        ]
    );
    let m = r.workflow().await.status.unwrap().machine;
    assert_eq!(m.phase, MachinePhase::Rebooted);

    // Nothing is repeated by a second pass (or a restarted engine).
    let before = r.bmc.calls().len();
    r.engine.reconcile(&r.key).await.unwrap();
    r.engine.reconcile_all().await.unwrap();
    assert_eq!(r.bmc.calls().len(), before);
    let events = r.store.events("default/m1", 100).await.unwrap();
    assert!(
        events.iter().any(|e| e.kind
            == EventKind::StepDone {
                step: MachineStep::Reboot
            }),
        "{events:?}"
    );
}

#[tokio::test]
async fn workers_wait_while_the_machine_is_prepared() {
    let r = rig(None, EngineConfig::default()).await;
    r.bmc.faults().unreachable_for(1);
    r.engine.reconcile(&r.key).await.unwrap();
    let wf = r.workflow().await;
    assert!(wf.status.as_ref().unwrap().machine.is_preparing());
    assert!(
        r.store
            .claim_next_action(&r.worker, r.clock.now())
            .await
            .unwrap()
            .is_none(),
        "an action was handed out before the power cycle that would kill it"
    );
}

#[tokio::test]
async fn bmc_that_fails_then_recovers_is_retried_with_backoff() {
    let r = rig(
        None,
        EngineConfig {
            backoff: BackoffConfig::new(Duration::from_secs(2), Duration::from_secs(60)),
            ..Default::default()
        },
    )
    .await;
    r.bmc.faults().unreachable_for(2);
    let next = r
        .engine
        .reconcile(&r.key)
        .await
        .unwrap()
        .expect("a retry is scheduled");
    // Equal jitter: at least half the 2 s ceiling, at most all of it.
    let wait = next.duration_since(r.clock.now());
    assert!(
        wait >= SignedDuration::from_secs(1) && wait <= SignedDuration::from_secs(2),
        "{wait:?}"
    );
    let m = r.workflow().await.status.unwrap().machine;
    assert_eq!(m.attempts, 1);
    assert!(m.last_error.unwrap().contains("unreachable"));

    // Too early: nothing happens.
    r.clock.advance(Duration::from_millis(900));
    r.engine.reconcile(&r.key).await.unwrap();
    assert_eq!(r.bmc.calls().len(), 1);

    r.clock.set(next);
    let next = r.engine.reconcile(&r.key).await.unwrap().unwrap();
    let wait = next.duration_since(r.clock.now());
    assert!(
        wait >= SignedDuration::from_secs(2) && wait <= SignedDuration::from_secs(4),
        "the ceiling doubles: {wait:?}"
    );
    r.clock.set(next);
    r.engine.reconcile(&r.key).await.unwrap();
    assert_eq!(
        r.bmc.calls(),
        [
            PXE_ONCE.failed(),
            PXE_ONCE.failed(),
            PXE_ONCE.ok(),
            MockCall::ReadPowerState.ok(),
            MockCall::Power(PowerAction::On).ok()
        ]
    );
    r.run_actions(None).await;
    assert_eq!(r.workflow().await.state(), Some(WorkflowState::Success));
}

#[tokio::test]
async fn bmc_that_stays_down_fails_the_workflow_with_the_reason() {
    let r = rig(
        None,
        EngineConfig {
            max_attempts: 3,
            backoff: BackoffConfig::new(Duration::from_secs(1), Duration::from_secs(60)),
            ..Default::default()
        },
    )
    .await;
    r.bmc.faults().unreachable_for(100);
    for _ in 0..5 {
        r.engine.reconcile(&r.key).await.unwrap();
        r.clock.advance(Duration::from_secs(10));
    }
    let status = r.workflow().await.status.unwrap();
    assert_eq!(status.state, WorkflowState::Failed);
    let reason = status.reason.unwrap();
    assert!(
        reason.contains("gave up on SetPxeBoot after 3 attempts") && reason.contains("unreachable"),
        "{reason}"
    );
    let gave_up = status
        .machine
        .gave_up
        .expect("the give-up is recorded as a value");
    assert_eq!(
        (gave_up.step, gave_up.attempts),
        (MachineStep::SetPxeBoot, 3)
    );
    assert_eq!(r.bmc.calls(), [PXE_ONCE.failed(); 3]);
}

#[tokio::test]
async fn wrong_password_is_not_retried() {
    let r = rig(None, EngineConfig::default()).await;
    r.bmc.faults().reject_password(true);
    r.engine.reconcile(&r.key).await.unwrap();
    let status = r.workflow().await.status.unwrap();
    assert_eq!(status.state, WorkflowState::Failed);
    assert!(status.reason.unwrap().contains("authentication failed"));
    assert_eq!(r.bmc.calls(), [PXE_ONCE.failed()]);
}

const FAILING_TEMPLATE: &str = "name: t\nfailure_power: off\ntasks:\n  - name: a\n    worker: \"{{.device_1}}\"\n    actions:\n      - {name: one, image: busybox, timeout: 60}\n      - {name: two, image: busybox, timeout: 60}\n";

#[tokio::test]
async fn failure_leaves_the_power_as_the_template_asks() {
    let r = rig(Some(FAILING_TEMPLATE), EngineConfig::default()).await;
    r.engine.reconcile(&r.key).await.unwrap();
    r.run_actions(Some(0)).await;
    r.engine.reconcile(&r.key).await.unwrap();
    let status = r.workflow().await.status.unwrap();
    assert_eq!(status.state, WorkflowState::Failed);
    assert!(status.reason.unwrap().contains("exit code 2: no such disk"));
    assert_eq!(
        r.bmc.calls().last(),
        Some(&MockCall::Power(PowerAction::Off).ok())
    );
    assert!(!r.bmc.is_on());
    assert!(
        r.allow_pxe().await,
        "netboot stays on so the operator can retry"
    );

    // Default: the power is left alone.
    let r = rig(None, EngineConfig::default()).await;
    r.engine.reconcile(&r.key).await.unwrap();
    r.run_actions(Some(1)).await;
    let calls = r.bmc.calls().len();
    r.engine.reconcile(&r.key).await.unwrap();
    assert_eq!(r.bmc.calls().len(), calls);
    assert!(r.bmc.is_on());
}

#[tokio::test]
async fn timeouts_end_the_workflow_and_the_engine_applies_them() {
    let r = rig(None, EngineConfig::default()).await;
    r.engine.reconcile(&r.key).await.unwrap();
    r.store
        .claim_next_action(&r.worker, r.clock.now())
        .await
        .unwrap()
        .unwrap();
    let due = r
        .engine
        .reconcile(&r.key)
        .await
        .unwrap()
        .expect("a deadline");
    assert_eq!(
        due,
        r.clock.now() + SignedDuration::from_secs(60),
        "the action's timeout"
    );
    r.clock.advance(Duration::from_secs(60));
    r.engine.reconcile(&r.key).await.unwrap();
    let status = r.workflow().await.status.unwrap();
    assert_eq!(status.state, WorkflowState::Timeout);
    assert!(
        status
            .reason
            .unwrap()
            .contains("exceeded its timeout of 60 s")
    );
}

#[tokio::test]
async fn a_missing_template_fails_with_a_reason() {
    let r = rig(None, EngineConfig::default()).await;
    r.store
        .put(
            Workflow::new("wf2", "nope", "m1", mac(1)).into(),
            Precondition::Absent,
        )
        .await
        .unwrap();
    r.engine
        .reconcile(&ObjectKey::default_ns(Kind::Workflow, "wf2"))
        .await
        .unwrap();
    let wf = r
        .store
        .workflow("default", "wf2")
        .await
        .unwrap()
        .unwrap()
        .value;
    let status = wf.status.unwrap();
    assert_eq!(status.state, WorkflowState::Failed);
    assert!(
        status
            .reason
            .unwrap()
            .contains("template default/nope not found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_loop_follows_the_change_feed() {
    let store = Arc::new(MemoryStore::new());
    let connector = Arc::new(StaticConnector::new());
    let bmc = MockBmc::new("m1");
    connector.insert("m1", Arc::new(bmc.clone()));
    let engine = Engine::new(store.clone(), connector, EngineConfig::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        engine
            .run(async {
                let _ = stop_rx.await;
            })
            .await
    });
    store
        .put(testing::hardware("m1", 1).into(), Precondition::Absent)
        .await
        .unwrap();
    store
        .put(
            testing::template("install", 1, 60).into(),
            Precondition::Absent,
        )
        .await
        .unwrap();
    store
        .put(
            Workflow::new("wf1", "install", "m1", mac(1)).into(),
            Precondition::Absent,
        )
        .await
        .unwrap();
    let worker = mac(1).to_string();
    let assignment = loop {
        if let Some(a) = store
            .claim_next_action(&worker, Timestamp::now())
            .await
            .unwrap()
        {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let report = WorkflowEvent::Report {
        action: assignment.action_index,
        attempt: assignment.attempt,
        outcome: ActionOutcome::Success,
    };
    store
        .apply_event(&assignment.workflow, &report, Timestamp::now())
        .await
        .unwrap();
    for _ in 0..500 {
        if bmc.calls().iter().any(is_disk_boot) && bmc.calls().len() >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        bmc.calls().contains(&DISK_PERSISTENT.ok()),
        "calls: {:?}",
        bmc.calls()
    );
    stop_tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_engine_replicas_make_each_bmc_call_once() {
    let r = rig(None, EngineConfig::default()).await;
    r.bmc.faults().latency(Duration::from_millis(20));
    let connector = Arc::new(StaticConnector::new());
    connector.insert("m1", Arc::new(r.bmc.clone()));
    let second = Engine::new(
        r.store.clone(),
        connector,
        EngineConfig {
            replica: "replica-b".into(),
            ..Default::default()
        },
    )
    .with_clock(r.clock.clone());
    let first = r.engine.clone();
    let key = r.key.clone();
    let (a, b) = tokio::join!(first.reconcile(&key), second.reconcile(&key));
    a.unwrap();
    b.unwrap();
    // Whichever lost a race came back and found the step done.
    first.reconcile(&key).await.unwrap();
    second.reconcile(&key).await.unwrap();
    let calls = r.bmc.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| !c.failed
                && matches!(
                    c.call,
                    MockCall::SetBoot {
                        device: BootDevice::Pxe,
                        ..
                    }
                ))
            .count(),
        1,
        "{calls:?}"
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| !c.failed && matches!(c.call, MockCall::Power(_)))
            .count(),
        1,
        "{calls:?}"
    );
    let m = r.workflow().await.status.unwrap().machine;
    assert!(
        m.has_done(MachineStep::PowerCycle) && m.lease.is_none(),
        "{m:?}"
    );
}

/// `n` machines named `{prefix}{i}`, each with a workflow of one action and the
/// BMC `bmc(name)`, in `store` (written through `direct`, which bypasses any
/// wrapper around it).
async fn row_of_machines(
    direct: &dyn WorkflowStore,
    connector: &StaticConnector,
    prefix: &str,
    n: u32,
    mac_base: u32,
    bmc: impl Fn(&str) -> MockBmc,
) {
    direct
        .put(
            testing::template("install", 1, 60).into(),
            Precondition::Any,
        )
        .await
        .unwrap();
    for i in 0..n {
        let name = format!("{prefix}{i}");
        connector.insert(&name, Arc::new(bmc(&name)));
        let mut hw = testing::hardware(&name, mac_base + i);
        hw.set_allow_pxe(false);
        direct.put(hw.into(), Precondition::Absent).await.unwrap();
        direct
            .put(
                Workflow::new(&format!("wf-{name}"), "install", &name, mac(mac_base + i)).into(),
                Precondition::Absent,
            )
            .await
            .unwrap();
    }
}

/// Starts `engine.run`; returns its handle and the switch that stops it.
fn start_engine(
    engine: Engine,
) -> (
    tokio::task::JoinHandle<tinker::core::Result<()>>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(async move {
        engine
            .run(async {
                let _ = stop_rx.await;
            })
            .await
    });
    (run, stop_tx)
}

/// How many workflows have their machine prepared (PXE set, powered on), once
/// all `n` are or after about 30 s.
async fn wait_prepared(direct: &dyn WorkflowStore, n: usize) -> usize {
    let mut prepared = 0;
    for _ in 0..1200 {
        prepared = direct
            .workflows()
            .await
            .unwrap()
            .iter()
            .filter(|w| {
                w.value
                    .status
                    .as_ref()
                    .is_some_and(|s| s.machine.has_done(MachineStep::PowerCycle))
            })
            .count();
        if prepared == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    prepared
}

/// The run loop reconciles workflows side by side (a row of machines is not
/// prepared one BMC call after another), up to `parallelism` at once, and one
/// workflow never twice at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_loop_prepares_machines_side_by_side_within_its_limit() {
    let store = Arc::new(MemoryStore::new());
    let connector = Arc::new(StaticConnector::new());
    // One BMC shared by every machine: its gauge counts calls in flight at once.
    let bmc = MockBmc::new("shared");
    bmc.faults().latency(Duration::from_millis(50));
    row_of_machines(store.as_ref(), &connector, "p", 24, 700, |_| bmc.clone()).await;
    let engine = Engine::new(
        store.clone(),
        connector,
        EngineConfig {
            parallelism: 8,
            ..EngineConfig::default()
        },
    );
    let (run, stop) = start_engine(engine);
    let prepared = wait_prepared(store.as_ref(), 24).await;
    let _ = stop.send(());
    run.await.unwrap().unwrap();
    assert_eq!(prepared, 24, "every machine was prepared");
    // Several at once, never more than the limit.
    let peak = bmc.max_concurrent_calls();
    assert!(peak > 1, "machines were prepared one at a time");
    assert!(peak <= 8, "more than `parallelism` at once: {peak}");
}

/// A store with a pool of two "connections": every call holds one while it waits
/// (as a PostgreSQL transaction holds its connection across round trips). It can
/// also have one Template it cannot read (`broken_template`): every read of it
/// fails with the same backend error, counted in `broken_reads`.
#[derive(Debug)]
struct PooledStore {
    inner: MemoryStore,
    pool: tokio::sync::Semaphore,
    /// Held for writing, every `list` waits (a sweep that does not come back).
    listing: tokio::sync::RwLock<()>,
    broken_template: Option<&'static str>,
    broken_reads: std::sync::atomic::AtomicU32,
    /// Calls of `append_event` and of `append_events`.
    event_writes: std::sync::Mutex<(usize, usize)>,
}

impl PooledStore {
    fn new(connections: usize, broken_template: Option<&'static str>) -> Self {
        PooledStore {
            inner: MemoryStore::new(),
            pool: tokio::sync::Semaphore::new(connections),
            listing: tokio::sync::RwLock::new(()),
            broken_template,
            broken_reads: Default::default(),
            event_writes: Default::default(),
        }
    }
}

impl PooledStore {
    async fn hold(&self) -> tokio::sync::SemaphorePermit<'_> {
        let permit = self.pool.acquire().await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        permit
    }
}

#[async_trait::async_trait]
impl WorkflowStore for PooledStore {
    async fn put(
        &self,
        o: tinker::core::model::Object,
        p: Precondition,
    ) -> tinker::core::Result<u64> {
        let _c = self.hold().await;
        self.inner.put(o, p).await
    }
    async fn get(
        &self,
        k: &ObjectKey,
    ) -> tinker::core::Result<Option<tinker::core::Versioned<tinker::core::model::Object>>> {
        let _c = self.hold().await;
        if k.kind == Kind::Template && Some(k.name.as_str()) == self.broken_template {
            self.broken_reads
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return Err(tinker::core::Error::backend(
                "test",
                "page 7 of the template table is corrupt",
            ));
        }
        self.inner.get(k).await
    }
    async fn list(
        &self,
        k: Kind,
    ) -> tinker::core::Result<Vec<tinker::core::Versioned<tinker::core::model::Object>>> {
        let _open = self.listing.read().await;
        let _c = self.hold().await;
        self.inner.list(k).await
    }
    async fn delete(&self, k: &ObjectKey, p: Precondition) -> tinker::core::Result<()> {
        let _c = self.hold().await;
        self.inner.delete(k, p).await
    }
    async fn hardware_by_mac(
        &self,
        m: tinker::core::MacAddr,
    ) -> tinker::core::Result<Option<tinker::core::Versioned<tinker::core::model::Hardware>>> {
        let _c = self.hold().await;
        self.inner.hardware_by_mac(m).await
    }
    async fn hardware_by_ip(
        &self,
        i: std::net::IpAddr,
    ) -> tinker::core::Result<Option<tinker::core::Versioned<tinker::core::model::Hardware>>> {
        let _c = self.hold().await;
        self.inner.hardware_by_ip(i).await
    }
    async fn apply_event(
        &self,
        k: &ObjectKey,
        e: &WorkflowEvent,
        n: Timestamp,
    ) -> tinker::core::Result<tinker::core::store::Applied> {
        let _c = self.hold().await;
        self.inner.apply_event(k, e, n).await
    }
    async fn claim_next_action_for_request(
        &self,
        w: &str,
        r: Option<&str>,
        n: Timestamp,
    ) -> tinker::core::Result<Option<tinker::core::store::Assignment>> {
        let _c = self.hold().await;
        self.inner.claim_next_action_for_request(w, r, n).await
    }
    async fn append_event(&self, e: tinker::core::store::MachineEvent) -> tinker::core::Result<()> {
        self.event_writes.lock().unwrap().0 += 1;
        let _c = self.hold().await;
        self.inner.append_event(e).await
    }
    async fn append_events(
        &self,
        e: Vec<tinker::core::store::MachineEvent>,
    ) -> tinker::core::Result<()> {
        self.event_writes.lock().unwrap().1 += 1;
        let _c = self.hold().await;
        self.inner.append_events(e).await
    }
    async fn events(
        &self,
        m: &str,
        l: usize,
    ) -> tinker::core::Result<Vec<tinker::core::store::MachineEvent>> {
        let _c = self.hold().await;
        self.inner.events(m, l).await
    }
    fn watch(&self) -> tokio::sync::broadcast::Receiver<tinker::core::store::Change> {
        self.inner.watch()
    }
}

/// With a pooled store, the engine's look at every workflow (after its change feed
/// lagged, or on a deadline) must not wait for a connection that its own
/// reconciles in flight hold: they only progress while the engine polls them.
// One thread: the burst of changes below runs without the run loop reading them.
#[tokio::test]
async fn a_pooled_store_does_not_stall_the_run_loop() {
    let store = Arc::new(PooledStore::new(2, None));
    let connector = Arc::new(StaticConnector::new());
    row_of_machines(&store.inner, &connector, "q", 16, 800, |name| {
        let bmc = MockBmc::new(name);
        bmc.faults().fail_for(4);
        bmc
    })
    .await;
    let engine = Engine::new(
        store.clone(),
        connector,
        EngineConfig {
            parallelism: 8,
            backoff: BackoffConfig::new(Duration::from_millis(1), Duration::from_millis(4)),
            ..EngineConfig::default()
        },
    );
    let (run, stop) = start_engine(engine);
    // While reconciles are in flight, more changes than the change feed holds:
    // the run loop lags, and must look at every workflow again.
    tokio::time::sleep(Duration::from_millis(30)).await;
    for _ in 0..5000 {
        store
            .inner
            .put(testing::hardware("noise", 899).into(), Precondition::Any)
            .await
            .unwrap();
    }
    let prepared = wait_prepared(&store.inner, 16).await;
    let _ = stop.send(());
    assert_eq!(
        prepared, 16,
        "the run loop stalled with {prepared}/16 machines prepared"
    );
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the run loop stops when asked")
        .unwrap()
        .unwrap();
}

/// A clock that counts the waits asked of it.
#[derive(Debug)]
struct CountingClock {
    inner: ManualClock,
    waits: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl Clock for CountingClock {
    fn now(&self) -> Timestamp {
        self.inner.now()
    }
    async fn sleep_until(&self, deadline: Timestamp) {
        self.waits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.sleep_until(deadline).await
    }
}

/// A deadline that passes while the engine's look at every workflow is still
/// out (a slow store) starts that look once, then the loop waits for it: it does
/// not go round on the past deadline (on a runtime whose store answers through
/// its own I/O, such a loop starves the answer it waits for).
// One thread: the engine and this test take turns.
#[tokio::test]
async fn a_past_deadline_while_the_sweep_is_out_does_not_spin_the_run_loop() {
    let store = Arc::new(PooledStore::new(4, None));
    let connector = Arc::new(StaticConnector::new());
    row_of_machines(&store.inner, &connector, "d", 1, 700, |name| {
        MockBmc::new(name)
    })
    .await;
    let clock = Arc::new(CountingClock {
        inner: ManualClock::new(Timestamp::from_second(1_800_000_000).unwrap()),
        waits: Default::default(),
    });
    let engine =
        Engine::new(store.clone(), connector, EngineConfig::default()).with_clock(clock.clone());
    let (run, stop) = start_engine(engine);
    assert_eq!(
        wait_prepared(&store.inner, 1).await,
        1,
        "the machine was prepared"
    );
    // Its action runs: the engine now has a deadline (the action's timeout).
    let worker = mac(700).to_string();
    store
        .inner
        .claim_next_action(&worker, clock.now())
        .await
        .unwrap()
        .expect("an action for the worker");
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The store stops answering lists, and every deadline passes.
    let closed = store.listing.write().await;
    clock.inner.advance(Duration::from_secs(2 * 3600));
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let settled = clock.waits.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let later = clock.waits.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        later - settled < 10,
        "the run loop waited {} more times on a past deadline while its sweep was out",
        later - settled
    );
    drop(closed);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the run loop stops when asked")
        .unwrap()
        .unwrap();
}

/// A template is outside input: each bomb fails its own workflow with a reason an
/// operator understands, the engine goes on serving the other machines, and a
/// restarted engine does not render the bad workflows again.
#[tokio::test]
async fn template_bombs_fail_their_own_workflow_and_the_engine_serves_the_others() {
    let store = Arc::new(MemoryStore::new());
    let connector = Arc::new(StaticConnector::new());
    row_of_machines(store.as_ref(), &connector, "b", 1, 950, |n| MockBmc::new(n)).await;
    // The bombs run for a machine of their own, without a BMC.
    store
        .put(testing::hardware("x0", 960).into(), Precondition::Absent)
        .await
        .unwrap();
    let deep = format!(
        "{}x{}",
        "{{ if 1 }}".repeat(100_000),
        "{{ end }}".repeat(100_000)
    );
    let bombs = [
        (
            "range",
            "{{ range 100000000000 }}x{{ end }}".to_string(),
            "template default/bomb-range, line 2, column 1: range of 100000000000 exceeds the limit of 1000000 steps",
        ),
        (
            "div",
            "{{ div -9223372036854775808 -1 }}".to_string(),
            "error calling div: div: integer overflow",
        ),
        (
            "repeat",
            "{{ repeat 10000 (repeat 10000 (repeat 10000 \"x\")) }}".to_string(),
            "would produce 100000000 bytes, over the limit of",
        ),
        ("deep", deep, "nesting exceeds the limit of 64 levels"),
    ];
    for (name, bomb, _) in &bombs {
        let mut t = testing::template(&format!("bomb-{name}"), 1, 60);
        t.spec.data = Some(format!("name: bomb\n{bomb}\n"));
        store.put(t.into(), Precondition::Absent).await.unwrap();
        store
            .put(
                Workflow::new(
                    &format!("wf-{name}"),
                    &format!("bomb-{name}"),
                    "x0",
                    mac(960),
                )
                .into(),
                Precondition::Absent,
            )
            .await
            .unwrap();
    }
    let clock = Arc::new(ManualClock::new(
        Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    let engine = Engine::new(store.clone(), connector.clone(), EngineConfig::default())
        .with_clock(clock.clone());
    engine.reconcile_all().await.unwrap();
    for (name, _, want) in &bombs {
        let status = store
            .workflow("default", &format!("wf-{name}"))
            .await
            .unwrap()
            .unwrap()
            .value
            .status
            .unwrap();
        assert_eq!(status.state, WorkflowState::Failed, "{name}");
        let reason = status.reason.unwrap();
        assert!(
            reason.starts_with("template rendering failed: ") && reason.contains(want),
            "{name}: {reason}"
        );
    }
    // The other machine was served: rendered, PXE set, powered on.
    let good = store
        .workflow("default", "wf-b0")
        .await
        .unwrap()
        .unwrap()
        .value;
    let good = good.status.unwrap();
    assert!(good.machine.has_done(MachineStep::PowerCycle), "{good:?}");
    // A restarted engine leaves the failed workflows as they are.
    let rendered_failed = |events: Vec<tinker::core::store::MachineEvent>| {
        events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::RenderFailed { .. }))
            .count()
    };
    assert_eq!(
        rendered_failed(store.events("default/x0", 100).await.unwrap()),
        bombs.len()
    );
    let restarted =
        Engine::new(store.clone(), connector, EngineConfig::default()).with_clock(clock);
    restarted.reconcile_all().await.unwrap();
    assert_eq!(
        rendered_failed(store.events("default/x0", 100).await.unwrap()),
        bombs.len(),
        "rendered again after a restart"
    );
}

/// The crash-loop guard: a workflow whose processing fails with the same error
/// pass after pass (here its template cannot be read) is parked with the reason
/// after `park_after` failures, instead of being tried forever; the others are
/// served, and a restarted engine leaves it parked.
#[tokio::test]
async fn a_workflow_that_fails_the_same_way_again_and_again_is_parked() {
    let store = Arc::new(PooledStore::new(64, Some("broken")));
    let connector = Arc::new(StaticConnector::new());
    row_of_machines(&store.inner, &connector, "g", 1, 970, |n| MockBmc::new(n)).await;
    store
        .inner
        .put(
            testing::template("broken", 1, 60).into(),
            Precondition::Absent,
        )
        .await
        .unwrap();
    store
        .inner
        .put(
            Workflow::new("wf-bad", "broken", "g0", mac(970)).into(),
            Precondition::Absent,
        )
        .await
        .unwrap();
    let engine = Engine::new(store.clone(), connector.clone(), EngineConfig::default());
    for _ in 0..12 {
        engine.reconcile_all().await.unwrap();
    }
    let reads = || store.broken_reads.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(reads(), 5, "parked after five identical failures");
    let status = store
        .inner
        .workflow("default", "wf-bad")
        .await
        .unwrap()
        .unwrap()
        .value
        .status
        .unwrap();
    assert_eq!(status.state, WorkflowState::Failed);
    let parked = status.parked.expect("parked");
    assert_eq!(parked.reason, ParkReason::RepeatedFailure);
    assert_eq!(parked.failures, 5);
    assert!(
        parked
            .error
            .contains("page 7 of the template table is corrupt")
    );
    let reason = status.reason.unwrap();
    assert!(
        reason.starts_with("parked: processing failed the same way 5 times in a row"),
        "{reason}"
    );
    let events = store.inner.events("default/g0", 100).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Parked(_))),
        "{events:?}"
    );
    // The other workflow was served all along.
    let good = store
        .inner
        .workflow("default", "wf-g0")
        .await
        .unwrap()
        .unwrap();
    assert!(
        good.value
            .status
            .unwrap()
            .machine
            .has_done(MachineStep::PowerCycle)
    );
    // A restart does not start the loop again.
    let restarted = Engine::new(store.clone(), connector, EngineConfig::default());
    restarted.reconcile_all().await.unwrap();
    assert_eq!(reads(), 5);
}

/// A BMC connector that panics for one machine (a bug in a driver).
#[derive(Debug)]
struct PanickingConnector {
    inner: Arc<StaticConnector>,
    bad: &'static str,
}

#[async_trait::async_trait]
impl tinker::core::PowerConnector for PanickingConnector {
    async fn connect(
        &self,
        hw: &tinker::core::model::Hardware,
    ) -> tinker::core::Result<Option<Arc<dyn tinker::core::PowerController>>> {
        if hw.metadata.name == self.bad {
            panic!("driver bug: unexpected reply from {}", self.bad);
        }
        self.inner.connect(hw).await
    }
}

/// A panic while processing one workflow fails that workflow (parked, with the
/// panic's message), never the engine: the run loop goes on serving the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_processing_a_workflow_parks_it_and_the_engine_goes_on() {
    let store = Arc::new(MemoryStore::new());
    let connector = Arc::new(StaticConnector::new());
    row_of_machines(store.as_ref(), &connector, "k", 3, 980, |n| MockBmc::new(n)).await;
    let engine = Engine::new(
        store.clone(),
        Arc::new(PanickingConnector {
            inner: connector.clone(),
            bad: "k1",
        }),
        EngineConfig {
            park_after: 2,
            ..EngineConfig::default()
        },
    );
    // Each pass over every workflow meets the panic once.
    for _ in 0..3 {
        engine.reconcile_all().await.unwrap();
    }
    let parked = store
        .workflow("default", "wf-k1")
        .await
        .unwrap()
        .unwrap()
        .value
        .status
        .unwrap()
        .parked
        .expect("parked");
    assert_eq!(parked.reason, ParkReason::RepeatedPanic);
    assert!(
        parked
            .error
            .contains("driver bug: unexpected reply from k1"),
        "{parked:?}"
    );
    // The run loop keeps serving: a machine added now is prepared.
    let (run, stop) = start_engine(engine);
    row_of_machines(store.as_ref(), &connector, "late", 1, 990, |n| {
        MockBmc::new(n)
    })
    .await;
    let prepared = wait_prepared(store.as_ref(), 3).await;
    let _ = stop.send(());
    run.await.unwrap().unwrap();
    assert_eq!(prepared, 3, "k0, k2 and the late machine, not k1");
}

#[tokio::test]
async fn a_cancelled_action_whose_worker_never_hears_is_stopped_by_powering_the_machine_off() {
    // Tinkerbell's agent has no cancel: it never heartbeats the refusal.
    let r = rig(None, EngineConfig::default()).await;
    r.engine.reconcile(&r.key).await.unwrap();
    r.store
        .claim_next_action(&r.worker, r.clock.now())
        .await
        .unwrap()
        .unwrap();
    r.store
        .apply_event(
            &r.key,
            &WorkflowEvent::Cancel {
                by: "operator".into(),
            },
            r.clock.now(),
        )
        .await
        .unwrap();
    let calls = r.bmc.calls().len();
    let due = r.engine.reconcile(&r.key).await.unwrap();
    assert_eq!(
        due,
        Some(
            r.clock.now() + SignedDuration::try_from(EngineConfig::default().cancel_grace).unwrap()
        ),
        "the worker is given the grace to hear of the cancel"
    );
    assert_eq!(r.bmc.calls().len(), calls, "no BMC call within the grace");
    assert!(r.bmc.is_on());
    r.clock.advance(EngineConfig::default().cancel_grace);
    r.engine.reconcile(&r.key).await.unwrap();
    assert_eq!(
        r.bmc.calls().last(),
        Some(&MockCall::Power(PowerAction::Off).ok())
    );
    assert!(!r.bmc.is_on());
    let status = r.workflow().await.status.unwrap();
    assert_eq!(status.state, WorkflowState::Failed);
    assert_eq!(status.reason.as_deref(), Some("cancelled by operator"));
    assert_eq!(status.machine.phase, MachinePhase::FailurePowerApplied);
    let events = r.store.events("default/m1", 100).await.unwrap();
    assert!(events.iter().any(|e| matches!(
        e.kind,
        EventKind::StepDone {
            step: MachineStep::PowerOff
        }
    )));

    // Our agent hears at its next heartbeat (refused as cancelled): the
    // machine keeps its power, as the template's failure policy (none) says.
    let r = rig(None, EngineConfig::default()).await;
    r.engine.reconcile(&r.key).await.unwrap();
    let a = r
        .store
        .claim_next_action(&r.worker, r.clock.now())
        .await
        .unwrap()
        .unwrap();
    r.store
        .apply_event(
            &r.key,
            &WorkflowEvent::Cancel {
                by: "operator".into(),
            },
            r.clock.now(),
        )
        .await
        .unwrap();
    r.clock.advance(Duration::from_secs(1));
    let refused = r
        .store
        .apply_event(
            &r.key,
            &WorkflowEvent::Heartbeat {
                action: a.action_index,
                attempt: a.attempt,
            },
            r.clock.now(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            tinker::core::Error::Transition {
                reason: tinker::core::state::Refusal::Cancelled { .. },
                ..
            }
        ),
        "{refused}"
    );
    let calls = r.bmc.calls().len();
    r.clock.advance(EngineConfig::default().cancel_grace * 2);
    r.engine.reconcile(&r.key).await.unwrap();
    assert_eq!(r.bmc.calls().len(), calls, "no power-off for our agent");
    assert!(r.bmc.is_on());
}

/// A BMC that, while it powers the machine off, lets an operator re-run the
/// workflow (the engine's step and the operator's act cross).
#[derive(Debug)]
struct RerunDuringPowerOff {
    bmc: MockBmc,
    store: Arc<MemoryStore>,
}

#[async_trait::async_trait]
impl tinker::core::PowerController for RerunDuringPowerOff {
    fn target(&self) -> String {
        self.bmc.target()
    }

    async fn power_state(&self) -> tinker::core::Result<tinker::core::PowerState> {
        self.bmc.power_state().await
    }

    async fn power(&self, action: PowerAction) -> tinker::core::Result<()> {
        if action == PowerAction::Off {
            self.store
                .apply_event(
                    &ObjectKey::default_ns(Kind::Workflow, "wf1"),
                    &WorkflowEvent::Rerun {
                        by: "operator".into(),
                    },
                    Timestamp::from_second(1_800_000_000).unwrap(),
                )
                .await
                .unwrap();
        }
        self.bmc.power(action).await
    }

    async fn set_boot_device(
        &self,
        device: BootDevice,
        options: BootOptions,
    ) -> tinker::core::Result<()> {
        self.bmc.set_boot_device(device, options).await
    }
}

#[tokio::test]
async fn a_rerun_while_the_failure_power_step_runs_is_prepared_from_the_start() {
    let r = rig_with(
        Some(FAILING_TEMPLATE),
        EngineConfig::default(),
        |bmc, store| Arc::new(RerunDuringPowerOff { bmc, store }),
    )
    .await;
    r.engine.reconcile(&r.key).await.unwrap();
    r.run_actions(Some(0)).await;
    r.engine.reconcile(&r.key).await.unwrap();
    let status = r.workflow().await.status.unwrap();
    assert_eq!(status.execution, 2, "the operator's re-run stood");
    assert_eq!(status.state, WorkflowState::Pending);
    assert_eq!(
        status.machine.phase,
        MachinePhase::Ready,
        "the old execution's step is not written onto the new one"
    );
    assert!(r.bmc.is_on(), "powered on again for the new execution");
}

/// A machine woken by Wake-on-LAN, as `tinker_bmc::WakeOnLan` answers: power
/// on works (recorded on the mock), everything else, the power state included,
/// is [`tinker::core::Error::NotCapable`].
#[derive(Debug)]
struct WakeOnLanLike(MockBmc);

impl WakeOnLanLike {
    fn unsupported(&self, operation: &str) -> tinker::core::Error {
        tinker::core::Error::NotCapable {
            target: tinker::core::PowerController::target(&self.0),
            operation: format!("{operation}: Wake-on-LAN can only power a machine on"),
        }
    }
}

#[async_trait::async_trait]
impl tinker::core::PowerController for WakeOnLanLike {
    fn target(&self) -> String {
        tinker::core::PowerController::target(&self.0)
    }

    async fn power_state(&self) -> tinker::core::Result<tinker::core::PowerState> {
        Err(self.unsupported("reading the power state"))
    }

    async fn power(&self, action: PowerAction) -> tinker::core::Result<()> {
        match action {
            PowerAction::On => self.0.power(action).await,
            other => Err(self.unsupported(&format!("power {other:?}"))),
        }
    }

    async fn set_boot_device(&self, _: BootDevice, _: BootOptions) -> tinker::core::Result<()> {
        Err(self.unsupported("setting the boot device"))
    }
}

/// A controller that can only power on (Wake-on-LAN): the boot-device steps,
/// the reboot and the failure power are skipped and recorded as such, the
/// machine is woken to start its workflow, and the workflow goes on to success
/// (before, the first unsupported step failed the workflow).
#[tokio::test]
async fn a_controller_that_can_only_power_on_wakes_the_machine_and_skips_the_rest() {
    let r = rig_with(None, EngineConfig::default(), |bmc, _| {
        Arc::new(WakeOnLanLike(bmc))
    })
    .await;
    r.engine.reconcile(&r.key).await.unwrap();
    assert!(r.allow_pxe().await, "netboot allowed");
    assert_eq!(r.bmc.calls(), [MockCall::Power(PowerAction::On).ok()]);
    let status = r.workflow().await.status.unwrap();
    assert_eq!(status.machine.phase, MachinePhase::Ready);
    assert!(status.machine.gave_up.is_none(), "{status:?}");
    assert_eq!(status.state, WorkflowState::Pending);

    r.run_actions(None).await;
    r.engine.reconcile(&r.key).await.unwrap();
    let wf = r.workflow().await;
    assert_eq!(wf.state(), Some(WorkflowState::Success));
    assert!(!r.allow_pxe().await, "netboot turned off");
    let m = wf.status.unwrap().machine;
    assert_eq!(m.phase, MachinePhase::Rebooted);
    assert!(m.gave_up.is_none(), "{m:?}");
    // No call after the wake: the reboot is the last action's.
    assert_eq!(r.bmc.calls().len(), 1, "{:?}", r.bmc.calls());
    let events = r.store.events("default/m1", 100).await.unwrap();
    let skipped: Vec<MachineStep> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::StepSkippedUnsupported { step, reason } => {
                assert!(reason.contains("Wake-on-LAN can only power"), "{reason}");
                Some(*step)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        skipped,
        [
            MachineStep::SetPxeBoot,
            MachineStep::SetDiskBoot,
            MachineStep::Reboot
        ]
    );
    assert!(
        events.iter().any(|e| e.kind
            == EventKind::StepDone {
                step: MachineStep::PowerCycle
            }),
        "{events:?}"
    );
}

/// A BMC that refuses the PXE override (`Unsupported`: it should, and did
/// not) fails the step as before: only a controller that cannot by nature
/// (`NotCapable`, Wake-on-LAN) has steps skipped. Before, every `Unsupported`
/// was skipped and such a machine silently never netbooted.
#[derive(Debug)]
struct RefusesPxe(MockBmc);

#[async_trait::async_trait]
impl tinker::core::PowerController for RefusesPxe {
    fn target(&self) -> String {
        tinker::core::PowerController::target(&self.0)
    }

    async fn power_state(&self) -> tinker::core::Result<tinker::core::PowerState> {
        self.0.power_state().await
    }

    async fn power(&self, action: PowerAction) -> tinker::core::Result<()> {
        self.0.power(action).await
    }

    async fn set_boot_device(&self, _: BootDevice, _: BootOptions) -> tinker::core::Result<()> {
        Err(tinker::core::Error::Unsupported {
            target: tinker::core::PowerController::target(&self.0),
            operation: "a PXE boot override".into(),
        })
    }
}

#[tokio::test]
async fn a_bmc_that_refuses_the_pxe_override_is_not_skipped_past() {
    let r = rig_with(None, EngineConfig::default(), |bmc, _| {
        Arc::new(RefusesPxe(bmc))
    })
    .await;
    let _ = r.engine.reconcile(&r.key).await;
    let status = r.workflow().await.status.unwrap();
    assert_ne!(status.machine.phase, MachinePhase::Ready, "{status:?}");
    assert!(
        r.bmc.calls().is_empty(),
        "not powered on: {:?}",
        r.bmc.calls()
    );
    let events = r.store.events("default/m1", 100).await.unwrap();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.kind, EventKind::StepSkippedUnsupported { .. })),
        "{events:?}"
    );
}

/// A preparation is two writes: the rendering, which holds the lease for the
/// steps after it (one BMC caller among replicas is still the one that wrote
/// the lease), and one record of its three steps, taken in a row under that
/// lease, which lets the lease go. The steps after the actions are a lease
/// write and one record. Each step is still an event of its own.
#[tokio::test]
async fn a_run_of_machine_steps_is_one_workflow_write() {
    let r = rig(None, EngineConfig::default()).await;
    let version = || async {
        r.store
            .workflow("default", "wf1")
            .await
            .unwrap()
            .unwrap()
            .version
    };
    let created = version().await;
    r.engine.reconcile(&r.key).await.unwrap();
    assert_eq!(r.bmc.calls().len(), 3, "{:?}", r.bmc.calls());
    assert_eq!(
        version().await - created,
        2,
        "rendered; netboot on, PXE set and power cycled"
    );
    let events = r.store.events("default/m1", 100).await.unwrap();
    assert_eq!(events.len(), 4, "rendered, and each step: {events:?}");
    let m = r.workflow().await.status.unwrap().machine;
    assert_eq!(m.phase, MachinePhase::Ready);
    assert_eq!(m.lease, None, "no step follows: the lease is let go");
    r.run_actions(None).await;
    let finished = version().await;
    r.engine.reconcile(&r.key).await.unwrap();
    // The state machine's last write (the report) took no lease: one write
    // for it, then one for the three steps.
    assert_eq!(
        version().await - finished,
        2,
        "lease; netboot off, disk set and rebooted"
    );
    let m = r.workflow().await.status.unwrap().machine;
    assert_eq!(m.phase, MachinePhase::Rebooted);
    assert_eq!(m.lease, None);
}

/// A reconcile's machine events are written together when it ends: a
/// preparation (rendered, three steps) is one event write, not four, and
/// they are in the log when the reconcile returns.
#[tokio::test]
async fn a_reconciles_events_are_one_write() {
    let store = Arc::new(PooledStore::new(4, None));
    let connector = Arc::new(StaticConnector::new());
    row_of_machines(&store.inner, &connector, "ev", 1, 900, |name| {
        MockBmc::new(name)
    })
    .await;
    let engine = Engine::new(store.clone(), connector, EngineConfig::default());
    let key = ObjectKey::default_ns(Kind::Workflow, "wf-ev0");
    engine.reconcile(&key).await.unwrap();
    assert_eq!(*store.event_writes.lock().unwrap(), (0, 1));
    let events = store.inner.events("default/ev0", 100).await.unwrap();
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(
        events.iter().any(|e| e.kind
            == EventKind::StepDone {
                step: MachineStep::PowerCycle
            }),
        "{events:?}"
    );
    // Nothing left to do, nothing to write.
    engine.reconcile(&key).await.unwrap();
    assert_eq!(*store.event_writes.lock().unwrap(), (0, 1));
}

/// A lease under this engine's name that this engine did not write (another
/// replica given the same name) is taken with a lease write of its own, an
/// optimistic one that only one writer wins, not used as it is.
#[tokio::test]
async fn a_lease_under_the_same_name_but_not_written_here_is_taken_by_a_write() {
    let config = EngineConfig {
        replica: "r1".into(),
        ..EngineConfig::default()
    };
    let r = rig(None, config).await;
    // The first BMC call fails: the workflow waits for its retry, with
    // netboot on and no lease.
    r.bmc.faults().unreachable_for(1);
    r.engine.reconcile(&r.key).await.unwrap();
    let found = r.store.workflow("default", "wf1").await.unwrap().unwrap();
    let mut wf = found.value;
    let machine = &mut wf.status.as_mut().unwrap().machine;
    assert_eq!(machine.phase, MachinePhase::NetbootEnabled);
    assert_eq!(machine.lease, None);
    // Another process under this engine's name holds it.
    r.clock.advance(Duration::from_secs(120));
    machine.lease = Some((
        "r1".to_string(),
        r.clock
            .now()
            .checked_add(SignedDuration::from_secs(60))
            .unwrap(),
    ));
    machine.retry_at = None;
    let version = r
        .store
        .put(wf.into(), Precondition::Version(found.version))
        .await
        .unwrap();
    r.engine.reconcile(&r.key).await.unwrap();
    let after = r.store.workflow("default", "wf1").await.unwrap().unwrap();
    assert_eq!(
        after.value.status.unwrap().machine.phase,
        MachinePhase::Ready
    );
    assert_eq!(
        after.version - version,
        2,
        "a lease write, then one record of the PXE step and the power cycle taken under it"
    );
}

/// With peers named, a workflow another replica owns is left to it: this
/// replica neither renders it nor calls its BMC when it sees it, and looks
/// only after the takeover delay, when it stands in for an owner that is not
/// there (here: not running at all) and prepares the machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_another_replica_owns_is_taken_over_only_after_the_delay() {
    let key = ObjectKey::default_ns(Kind::Workflow, "wf1");
    let peers = vec!["r1".to_string(), "r2".to_string()];
    let as_replica = |replica: &str| EngineConfig {
        replica: replica.into(),
        peers: peers.clone(),
        takeover_delay: Duration::from_secs(30),
        ..EngineConfig::default()
    };
    // This engine is whichever of the two does not own wf1.
    let config = if as_replica("r1").owns(&key) {
        as_replica("r2")
    } else {
        as_replica("r1")
    };
    assert!(!config.owns(&key));
    assert!(
        as_replica(if config.replica == "r1" { "r2" } else { "r1" }).owns(&key),
        "exactly one owner"
    );
    let r = rig(None, config).await;
    let clock = r.clock.clone();
    let store = r.store.clone();
    let bmc = r.bmc.clone();
    let (run, stop) = start_engine(r.engine);
    // Its first sweep has seen wf1 (a guard of turns, not a timing): still
    // nothing done.
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let wf = store.workflow("default", "wf1").await.unwrap().unwrap();
    assert!(wf.value.status.is_none(), "not rendered by a non-owner");
    assert!(bmc.calls().is_empty(), "{:?}", bmc.calls());
    clock.advance(Duration::from_secs(31));
    assert_eq!(wait_prepared(store.as_ref(), 1).await, 1, "taken over");
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
}

/// A BMC whose PXE override waits until the test lets it go, and says when
/// it has been asked.
#[derive(Debug)]
struct GatedPxe {
    bmc: MockBmc,
    asked: Arc<tokio::sync::Notify>,
    go: Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl tinker::core::PowerController for GatedPxe {
    fn target(&self) -> String {
        tinker::core::PowerController::target(&self.bmc)
    }

    async fn power_state(&self) -> tinker::core::Result<tinker::core::PowerState> {
        self.bmc.power_state().await
    }

    async fn power(&self, action: PowerAction) -> tinker::core::Result<()> {
        self.bmc.power(action).await
    }

    async fn set_boot_device(&self, d: BootDevice, o: BootOptions) -> tinker::core::Result<()> {
        self.asked.notify_one();
        self.go.notified().await;
        self.bmc.set_boot_device(d, o).await
    }
}

/// A run of machine steps carried in memory ends when someone else writes
/// its workflow: an operator who cancels while the PXE override is under way
/// is heard before the power cycle, which is then not made. The steps that
/// were made are recorded on the cancelled workflow, and their events are in
/// the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_a_run_of_steps_stops_it_before_the_next_bmc_call() {
    let asked = Arc::new(tokio::sync::Notify::new());
    let go = Arc::new(tokio::sync::Notify::new());
    let (a, g) = (asked.clone(), go.clone());
    let r = rig_with(None, EngineConfig::default(), move |bmc, _| {
        Arc::new(GatedPxe {
            bmc,
            asked: a,
            go: g,
        })
    })
    .await;
    let (store, bmc, clock, key) = (
        r.store.clone(),
        r.bmc.clone(),
        r.clock.clone(),
        r.key.clone(),
    );
    let (run, stop) = start_engine(r.engine);
    asked.notified().await;
    store
        .apply_event(
            &key,
            &WorkflowEvent::Cancel { by: "op".into() },
            clock.now(),
        )
        .await
        .unwrap();
    // The run loop hears the cancel while the override waits (a guard of
    // turns for the feed to be read, not a timing).
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    go.notify_one();
    // Until the PXE step is recorded (a guard of 2,000 turns).
    let mut recorded = None;
    for _ in 0..2000 {
        let wf = store.workflow("default", "wf1").await.unwrap().unwrap();
        if wf
            .value
            .status
            .as_ref()
            .is_some_and(|s| s.machine.has_done(MachineStep::SetPxeBoot))
        {
            recorded = Some(wf.value);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wf = recorded.expect("the PXE step is recorded");
    assert_eq!(wf.state(), Some(WorkflowState::Failed), "cancelled");
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
    assert!(
        !bmc.calls()
            .iter()
            .any(|c| *c == MockCall::Power(PowerAction::On).ok()
                || *c == MockCall::Power(PowerAction::Cycle).ok()),
        "not powered on after the cancel: {:?}",
        bmc.calls()
    );
    let events = store.events("default/m1", 100).await.unwrap();
    assert!(
        events.iter().any(|e| e.kind
            == EventKind::StepDone {
                step: MachineStep::SetPxeBoot
            }),
        "{events:?}"
    );
}
