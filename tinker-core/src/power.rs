//! `PowerController`: out-of-band control of one machine through its BMC (IPMI,
//! Redfish, or a fake). The engine drives machines only through this trait.

use crate::error::Result;
use crate::model::Hardware;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::sync::Arc;

/// Chassis power state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    /// Powered on.
    On,
    /// Powered off.
    Off,
}

/// A power operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PowerAction {
    /// Power on.
    On,
    /// Hard power off.
    Off,
    /// Ask the OS to shut down (ACPI).
    SoftOff,
    /// Off, then on. On a machine that is off, BMCs differ: callers that need it on
    /// should read the state and use [`PowerAction::On`] instead.
    Cycle,
    /// Hard reset.
    Reset,
}

/// A boot device for the next boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BootDevice {
    /// Network boot (PXE).
    Pxe,
    /// The first disk.
    Disk,
    /// The firmware's setup screen.
    BiosSetup,
}

/// How the boot device is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BootOptions {
    /// Keep the setting for every boot, not just the next.
    pub persistent: bool,
    /// Boot in UEFI mode rather than legacy BIOS.
    pub efi: bool,
}

/// Out-of-band control of one machine.
///
/// Implementations set their own time limits and retries (or are wrapped in a
/// policy wrapper that does), and never put credentials in errors or logs.
///
/// ```
/// use async_trait::async_trait;
/// use std::sync::{Arc, Mutex};
/// use tinker_core::{BootDevice, BootOptions, PowerAction, PowerController, PowerState, Result};
///
/// /// A machine that only exists in memory.
/// #[derive(Debug, Default)]
/// struct Lamp(Mutex<bool>);
///
/// #[async_trait]
/// impl PowerController for Lamp {
///     fn target(&self) -> String { "lamp".into() }
///     async fn power_state(&self) -> Result<PowerState> {
///         Ok(if *self.0.lock().unwrap() { PowerState::On } else { PowerState::Off })
///     }
///     async fn power(&self, action: PowerAction) -> Result<()> {
///         *self.0.lock().unwrap() = !matches!(action, PowerAction::Off | PowerAction::SoftOff);
///         Ok(())
///     }
///     async fn set_boot_device(&self, _: BootDevice, _: BootOptions) -> Result<()> { Ok(()) }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let bmc: Arc<dyn PowerController> = Arc::new(Lamp::default());
/// bmc.power(PowerAction::On).await?;
/// assert_eq!(bmc.power_state().await?, PowerState::On);
/// # Ok::<(), tinker_core::Error>(()) }).unwrap();
/// ```
#[async_trait]
pub trait PowerController: Send + Sync + Debug + 'static {
    /// What this controls, for messages: `ipmi://10.0.0.5:623` (never credentials).
    fn target(&self) -> String;

    /// Reads the chassis power state.
    async fn power_state(&self) -> Result<PowerState>;

    /// Performs a power operation.
    async fn power(&self, action: PowerAction) -> Result<()>;

    /// Sets the device to boot from next.
    async fn set_boot_device(&self, device: BootDevice, options: BootOptions) -> Result<()>;

    /// Reads the boot override back, as the BMC reports it (`None`: no override).
    /// BMCs differ in what they keep: some report the device but not whether it
    /// was persistent or EFI. The default says the controller cannot read it.
    async fn boot_override(&self) -> Result<Option<(BootDevice, BootOptions)>> {
        Err(crate::Error::Unsupported {
            target: self.target(),
            operation: "reading the boot override".into(),
        })
    }
}

/// Builds the [`PowerController`] for a Hardware from its BMC reference. The
/// engine holds one of these and never knows which kind of BMC it drives.
#[async_trait]
pub trait PowerConnector: Send + Sync + Debug + 'static {
    /// The controller for `hardware`, or `None` if it has no BMC (then the machine
    /// must be powered by hand, and the engine says so).
    async fn connect(&self, hardware: &Hardware) -> Result<Option<Arc<dyn PowerController>>>;
}
