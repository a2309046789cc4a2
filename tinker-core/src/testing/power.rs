//! The `PowerController` conformance suite: written once, run against IPMI
//! (ipmi_sim), Redfish (sushy-emulator) and the mock BMC alike.

use crate::power::{BootDevice, BootOptions, PowerAction, PowerController, PowerState};
use std::time::Duration;

/// What a backend can do; the suite checks the rest.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// Reads back whether an override is persistent.
    pub reads_persistence: bool,
    /// Supports an override to BIOS setup.
    pub bios_setup: bool,
    /// Supports a soft (ACPI) power off.
    pub soft_off: bool,
}

async fn settle(bmc: &dyn PowerController, want: PowerState) {
    // Some BMCs (and emulators: sushy's fake driver waits 1 to 11 s) apply a power
    // change a while after answering.
    for _ in 0..150 {
        if bmc.power_state().await.expect("power state") == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{}: power did not become {want:?}", bmc.target());
}

/// Runs every check; leaves the machine powered on.
pub async fn run_all(bmc: &dyn PowerController, caps: Capabilities) {
    power_on_off(bmc).await;
    boot_devices(bmc, caps).await;
    cycle_and_reset(bmc, caps).await;
}

/// On, off, on again; each read back; repeating one is harmless.
pub async fn power_on_off(bmc: &dyn PowerController) {
    bmc.power(PowerAction::On).await.expect("power on");
    settle(bmc, PowerState::On).await;
    bmc.power(PowerAction::On).await.expect("power on twice");
    settle(bmc, PowerState::On).await;
    bmc.power(PowerAction::Off).await.expect("power off");
    settle(bmc, PowerState::Off).await;
    bmc.power(PowerAction::On).await.expect("power on again");
    settle(bmc, PowerState::On).await;
}

/// PXE once, disk persistent, BIOS setup: each read back.
pub async fn boot_devices(bmc: &dyn PowerController, caps: Capabilities) {
    let once = BootOptions {
        persistent: false,
        efi: true,
    };
    bmc.set_boot_device(BootDevice::Pxe, once)
        .await
        .expect("boot pxe");
    let (dev, opts) = bmc
        .boot_override()
        .await
        .expect("read boot")
        .expect("an override");
    assert_eq!(dev, BootDevice::Pxe, "{}", bmc.target());
    if caps.reads_persistence {
        assert!(
            !opts.persistent,
            "{}: once read back as persistent",
            bmc.target()
        );
    }
    let persistent = BootOptions {
        persistent: true,
        efi: false,
    };
    bmc.set_boot_device(BootDevice::Disk, persistent)
        .await
        .expect("boot disk");
    let (dev, opts) = bmc
        .boot_override()
        .await
        .expect("read boot")
        .expect("an override");
    assert_eq!(dev, BootDevice::Disk, "{}", bmc.target());
    if caps.reads_persistence {
        assert!(
            opts.persistent,
            "{}: persistent read back as once",
            bmc.target()
        );
    }
    if caps.bios_setup {
        bmc.set_boot_device(BootDevice::BiosSetup, once)
            .await
            .expect("boot bios");
        let (dev, _) = bmc
            .boot_override()
            .await
            .expect("read boot")
            .expect("an override");
        assert_eq!(dev, BootDevice::BiosSetup);
    }
}

/// Cycle and reset from on end on; soft off, where supported, ends off.
pub async fn cycle_and_reset(bmc: &dyn PowerController, caps: Capabilities) {
    bmc.power(PowerAction::On).await.expect("power on");
    settle(bmc, PowerState::On).await;
    bmc.power(PowerAction::Cycle).await.expect("cycle");
    settle(bmc, PowerState::On).await;
    bmc.power(PowerAction::Reset).await.expect("reset");
    settle(bmc, PowerState::On).await;
    if caps.soft_off {
        bmc.power(PowerAction::SoftOff).await.expect("soft off");
        settle(bmc, PowerState::Off).await;
        bmc.power(PowerAction::On).await.expect("power on");
        settle(bmc, PowerState::On).await;
    }
}
