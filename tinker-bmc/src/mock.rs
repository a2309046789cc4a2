//! `MockBmc`: an in-process BMC with fault injection: added latency, calls that
//! hang (to exercise time limits), errors, a BMC unreachable for N calls, a wrong
//! password. It records every call as a typed [`CallRecord`], and it counts
//! concurrent calls so tests can check a session limit. Its waits (latency, a
//! hang) are read on a [`Clock`](tinker_core::clock::Clock), so a simulated rack
//! under a `ManualClock` sees them on its own time.

use async_trait::async_trait;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tinker_core::clock::{SharedClock, SystemClock};
use tinker_core::{
    BootDevice, BootOptions, Error, PowerAction, PowerController, PowerState, Result,
};

/// The faults a [`MockBmc`] injects. Change them at any time.
#[derive(Debug, Default)]
pub struct Faults {
    latency_ms: AtomicU32,
    unreachable: AtomicU32,
    hang: AtomicU32,
    fail: AtomicU32,
    reject_password: AtomicU32,
}

impl Faults {
    /// Every call takes this long (whole milliseconds).
    pub fn latency(&self, d: Duration) {
        let ms = u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        self.latency_ms.store(ms, Ordering::SeqCst);
    }

    /// The next `n` calls fail as unreachable.
    pub fn unreachable_for(&self, n: u32) {
        self.unreachable.store(n, Ordering::SeqCst);
    }

    /// The next `n` calls never answer (an hour), so only a time limit ends them.
    pub fn hang_for(&self, n: u32) {
        self.hang.store(n, Ordering::SeqCst);
    }

    /// The next `n` calls fail with an error the BMC reports.
    pub fn fail_for(&self, n: u32) {
        self.fail.store(n, Ordering::SeqCst);
    }

    /// While set, every call fails authentication.
    pub fn reject_password(&self, yes: bool) {
        self.reject_password.store(u32::from(yes), Ordering::SeqCst);
    }
}

fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// A call that reached a [`MockBmc`], one variant per [`PowerController`] method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MockCall {
    /// [`PowerController::power_state`].
    ReadPowerState,
    /// [`PowerController::power`] with this action.
    Power(PowerAction),
    /// [`PowerController::set_boot_device`].
    SetBoot {
        /// The device asked for.
        device: BootDevice,
        /// Once or persistent, EFI or legacy.
        options: BootOptions,
    },
    /// [`PowerController::boot_override`].
    ReadBootOverride,
}

impl MockCall {
    /// This call, answered.
    pub fn ok(self) -> CallRecord {
        CallRecord {
            call: self,
            failed: false,
        }
    }

    /// This call, failed by an injected fault.
    pub fn failed(self) -> CallRecord {
        CallRecord {
            call: self,
            failed: true,
        }
    }
}

/// One entry of a [`MockBmc`]'s call log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallRecord {
    /// What was asked.
    pub call: MockCall,
    /// Whether an injected fault failed it.
    pub failed: bool,
}

#[derive(Debug, Default)]
struct MachineState {
    on: bool,
    boot: Option<(BootDevice, BootOptions)>,
    calls: Vec<CallRecord>,
}

/// An in-process BMC. Cheap to clone; clones share the machine.
#[derive(Debug, Clone)]
pub struct MockBmc {
    name: String,
    state: Arc<Mutex<MachineState>>,
    faults: Arc<Faults>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    clock: SharedClock,
}

impl MockBmc {
    /// A BMC whose machine is off, waiting on the system clock.
    pub fn new(name: impl Into<String>) -> Self {
        MockBmc {
            name: name.into(),
            state: Arc::default(),
            faults: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            clock: SystemClock::shared(),
        }
    }

    /// Waits (latency, hangs) on `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Its fault switches.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The calls that reached the machine, in order, failed ones included.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.lock().calls.clone()
    }

    /// Whether the machine is on.
    pub fn is_on(&self) -> bool {
        self.lock().on
    }

    /// The most calls that were in progress at once.
    pub fn max_concurrent_calls(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MachineState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The injected fault for the next call, if any (consumes it).
    fn fault(&self) -> Option<Error> {
        let target = self.target();
        if take(&self.faults.unreachable) {
            return Some(Error::Unreachable {
                target,
                reason: "no answer (injected)".into(),
            });
        }
        if self.faults.reject_password.load(Ordering::SeqCst) > 0 {
            return Some(Error::AuthenticationFailed { target });
        }
        if take(&self.faults.fail) {
            return Some(Error::Remote {
                target,
                reason: "internal error (injected)".into(),
            });
        }
        None
    }

    async fn enter(&self, call: MockCall) -> Result<InFlight<'_>> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let guard = InFlight(&self.in_flight);
        let latency = self.faults.latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            self.clock
                .sleep(Duration::from_millis(u64::from(latency)))
                .await;
        }
        if take(&self.faults.hang) {
            self.clock.sleep(Duration::from_secs(3600)).await;
        }
        let fault = self.fault();
        self.lock().calls.push(CallRecord {
            call,
            failed: fault.is_some(),
        });
        match fault {
            Some(e) => Err(e),
            None => Ok(guard),
        }
    }
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl PowerController for MockBmc {
    fn target(&self) -> String {
        format!("mock://{}", self.name)
    }

    async fn power_state(&self) -> Result<PowerState> {
        let _g = self.enter(MockCall::ReadPowerState).await?;
        Ok(if self.lock().on {
            PowerState::On
        } else {
            PowerState::Off
        })
    }

    async fn power(&self, action: PowerAction) -> Result<()> {
        let _g = self.enter(MockCall::Power(action)).await?;
        let mut s = self.lock();
        s.on = !matches!(action, PowerAction::Off | PowerAction::SoftOff);
        Ok(())
    }

    async fn set_boot_device(&self, device: BootDevice, options: BootOptions) -> Result<()> {
        let _g = self.enter(MockCall::SetBoot { device, options }).await?;
        self.lock().boot = Some((device, options));
        Ok(())
    }

    async fn boot_override(&self) -> Result<Option<(BootDevice, BootOptions)>> {
        let _g = self.enter(MockCall::ReadBootOverride).await?;
        Ok(self.lock().boot)
    }
}

/// A [`PowerConnector`](tinker_core::PowerConnector) that gives every Hardware a
/// [`MockBmc`] of its own on first use (named after the Hardware): simulations and
/// load tests of a whole control plane, where no machine has a real BMC.
#[derive(Debug)]
pub struct MockConnector {
    bmcs: Mutex<std::collections::HashMap<String, MockBmc>>,
    clock: SharedClock,
}

impl Default for MockConnector {
    fn default() -> Self {
        MockConnector {
            bmcs: Mutex::default(),
            clock: SystemClock::shared(),
        }
    }
}

impl MockConnector {
    /// A connector with no BMCs yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives the BMCs it makes from now on this clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The BMC of the Hardware `namespace/name`, if it has been used.
    pub fn bmc(&self, name: &str) -> Option<MockBmc> {
        self.bmcs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }
}

#[async_trait]
impl tinker_core::PowerConnector for MockConnector {
    async fn connect(
        &self,
        hardware: &tinker_core::model::Hardware,
    ) -> Result<Option<Arc<dyn PowerController>>> {
        let name = format!(
            "{}/{}",
            hardware.metadata.namespace(),
            hardware.metadata.name
        );
        let bmc = self
            .bmcs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.clone())
            .or_insert_with(|| MockBmc::new(name).with_clock(self.clock.clone()))
            .clone();
        Ok(Some(Arc::new(bmc)))
    }
}
