//! `MockBmc`: an in-process BMC with fault injection: added latency, calls that
//! hang (to exercise time limits), errors, a BMC unreachable for N calls, a wrong
//! password. It records every call, and it counts concurrent calls so tests can
//! check a session limit.

use async_trait::async_trait;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
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
    /// Every call takes this long.
    pub fn latency(&self, d: Duration) {
        self.latency_ms
            .store(d.as_millis() as u32, Ordering::SeqCst);
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

#[derive(Debug, Default)]
struct MachineState {
    on: bool,
    boot: Option<(BootDevice, BootOptions)>,
    calls: Vec<String>,
}

/// An in-process BMC. Cheap to clone; clones share the machine.
#[derive(Debug, Clone)]
pub struct MockBmc {
    name: String,
    state: Arc<Mutex<MachineState>>,
    faults: Arc<Faults>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

impl MockBmc {
    /// A BMC whose machine is off.
    pub fn new(name: impl Into<String>) -> Self {
        MockBmc {
            name: name.into(),
            state: Arc::default(),
            faults: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
        }
    }

    /// Its fault switches.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The calls that reached the machine, such as `power(On)` or
    /// `boot(Pxe, once, efi=true)`; failed ones start with `failed `.
    pub fn calls(&self) -> Vec<String> {
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

    async fn enter(&self, call: String) -> Result<InFlight<'_>> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let guard = InFlight(&self.in_flight);
        let latency = self.faults.latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(u64::from(latency))).await;
        }
        let target = self.target();
        let fail = |this: &Self, err: Error| {
            this.lock().calls.push(format!("failed {call}"));
            Err(err)
        };
        if take(&self.faults.hang) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if take(&self.faults.unreachable) {
            return fail(
                self,
                Error::Unreachable {
                    target,
                    reason: "no answer (injected)".into(),
                },
            );
        }
        if self.faults.reject_password.load(Ordering::SeqCst) > 0 {
            return fail(self, Error::AuthenticationFailed { target });
        }
        if take(&self.faults.fail) {
            return fail(
                self,
                Error::Remote {
                    target,
                    reason: "internal error (injected)".into(),
                },
            );
        }
        self.lock().calls.push(call);
        Ok(guard)
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
        let _g = self.enter("power_state".into()).await?;
        Ok(if self.lock().on {
            PowerState::On
        } else {
            PowerState::Off
        })
    }

    async fn power(&self, action: PowerAction) -> Result<()> {
        let _g = self.enter(format!("power({action:?})")).await?;
        let mut s = self.lock();
        s.on = !matches!(action, PowerAction::Off | PowerAction::SoftOff);
        Ok(())
    }

    async fn set_boot_device(&self, device: BootDevice, options: BootOptions) -> Result<()> {
        let once = if options.persistent {
            "persistent"
        } else {
            "once"
        };
        let _g = self
            .enter(format!("boot({device:?}, {once}, efi={})", options.efi))
            .await?;
        self.lock().boot = Some((device, options));
        Ok(())
    }

    async fn boot_override(&self) -> Result<Option<(BootDevice, BootOptions)>> {
        let _g = self.enter("boot_override".into()).await?;
        Ok(self.lock().boot)
    }
}

/// A [`PowerConnector`](tinker_core::PowerConnector) that gives every Hardware a
/// [`MockBmc`] of its own on first use (named after the Hardware): simulations and
/// load tests of a whole control plane, where no machine has a real BMC.
#[derive(Debug, Default)]
pub struct MockConnector(Mutex<std::collections::HashMap<String, MockBmc>>);

impl MockConnector {
    /// A connector with no BMCs yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The BMC of the Hardware `namespace/name`, if it has been used.
    pub fn bmc(&self, name: &str) -> Option<MockBmc> {
        self.0
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
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.clone())
            .or_insert_with(|| MockBmc::new(name))
            .clone();
        Ok(Some(Arc::new(bmc)))
    }
}
