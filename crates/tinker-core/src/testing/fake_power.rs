use crate::error::{Error, Result};
use crate::model::Hardware;
use crate::power::{
    BootDevice, BootOptions, PowerAction, PowerConnector, PowerController, PowerState,
};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// An in-memory BMC: records every call, and fails the next `fail_next` calls as
/// unreachable (or every call with a wrong password) to exercise retries.
#[derive(Debug, Default)]
pub struct FakePower {
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    on: bool,
    boot: Option<(BootDevice, BootOptions)>,
    calls: Vec<String>,
    fail_next: u32,
    reject_password: bool,
}

impl FakePower {
    /// A BMC whose machine is off.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Makes the next `n` calls fail as unreachable.
    pub fn fail_next(&self, n: u32) {
        self.lock().fail_next = n;
    }

    /// Makes every call fail with an authentication error.
    pub fn reject_password(&self, yes: bool) {
        self.lock().reject_password = yes;
    }

    /// The calls so far (`power_state`, `power(On)`, `boot(Pxe, once, efi=false)`, ...),
    /// failed ones prefixed with `failed `.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Whether the machine is on.
    pub fn is_on(&self) -> bool {
        self.lock().on
    }

    /// The boot override last set.
    pub fn boot(&self) -> Option<(BootDevice, BootOptions)> {
        self.lock().boot
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enter(&self, call: String) -> Result<std::sync::MutexGuard<'_, FakeState>> {
        let mut s = self.lock();
        if s.reject_password {
            s.calls.push(format!("failed {call}"));
            return Err(Error::AuthenticationFailed {
                target: "fake-bmc".into(),
            });
        }
        if s.fail_next > 0 {
            s.fail_next -= 1;
            s.calls.push(format!("failed {call}"));
            return Err(Error::Unreachable {
                target: "fake-bmc".into(),
                reason: "injected failure".into(),
            });
        }
        s.calls.push(call);
        Ok(s)
    }
}

#[async_trait]
impl PowerController for FakePower {
    fn target(&self) -> String {
        "fake-bmc".into()
    }

    async fn power_state(&self) -> Result<PowerState> {
        let s = self.enter("power_state".into())?;
        Ok(if s.on {
            PowerState::On
        } else {
            PowerState::Off
        })
    }

    async fn power(&self, action: PowerAction) -> Result<()> {
        let mut s = self.enter(format!("power({action:?})"))?;
        s.on = match action {
            PowerAction::On | PowerAction::Cycle | PowerAction::Reset => true,
            PowerAction::Off | PowerAction::SoftOff => false,
        };
        Ok(())
    }

    async fn set_boot_device(&self, device: BootDevice, options: BootOptions) -> Result<()> {
        let once = if options.persistent {
            "persistent"
        } else {
            "once"
        };
        let mut s = self.enter(format!("boot({device:?}, {once}, efi={})", options.efi))?;
        s.boot = Some((device, options));
        Ok(())
    }
}

/// Hands out one [`FakePower`] per Hardware name; Hardware not registered has no BMC.
#[derive(Debug, Default)]
pub struct FakeConnector {
    bmcs: Mutex<HashMap<String, Arc<FakePower>>>,
}

impl FakeConnector {
    /// An empty connector.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers (and returns) the BMC of a Hardware.
    pub fn add(&self, hardware_name: &str) -> Arc<FakePower> {
        let bmc = FakePower::new();
        self.bmcs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hardware_name.to_string(), bmc.clone());
        bmc
    }
}

#[async_trait]
impl PowerConnector for FakeConnector {
    async fn connect(&self, hardware: &Hardware) -> Result<Option<Arc<dyn PowerController>>> {
        let bmcs = self.bmcs.lock().unwrap_or_else(|e| e.into_inner());
        Ok(bmcs
            .get(&hardware.metadata.name)
            .map(|b| b.clone() as Arc<dyn PowerController>))
    }
}
