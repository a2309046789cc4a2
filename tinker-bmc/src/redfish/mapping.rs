//! Tinker's power and boot vocabulary to Redfish's and back. Pure decisions; the
//! driver in `power` only fetches and sends.

use super::wire::{
    Boot, BootMode, BootPatch, BootTarget, OverrideEnabled, ResetType, SystemPatch,
    SystemPowerState,
};
use tinker_core::{BootDevice, BootOptions, PowerAction, PowerState};

/// What a system's `PowerState` means for Tinker; `None` for a value it cannot
/// read (missing, or not one Redfish defines).
pub(super) fn power_state(state: Option<&SystemPowerState>) -> Option<PowerState> {
    match state? {
        SystemPowerState::On | SystemPowerState::PoweringOn | SystemPowerState::Paused => {
            Some(PowerState::On)
        }
        SystemPowerState::Off | SystemPowerState::PoweringOff => Some(PowerState::Off),
        SystemPowerState::Other(_) => None,
    }
}

/// The reset types to try for an action, in order of preference (none for an
/// action added to the core that Redfish has no reset type for).
fn reset_types(action: PowerAction) -> &'static [ResetType] {
    match action {
        PowerAction::On => &[ResetType::On, ResetType::ForceOn],
        PowerAction::Off => &[ResetType::ForceOff, ResetType::GracefulShutdown],
        PowerAction::SoftOff => &[ResetType::GracefulShutdown],
        PowerAction::Cycle => &[ResetType::PowerCycle, ResetType::ForceRestart],
        PowerAction::Reset => &[ResetType::ForceRestart, ResetType::GracefulRestart],
        _ => &[],
    }
}

/// The reset type to send for `action`: the first preferred one the system
/// allows, or, when it does not say, the first preferred one. `None` when the
/// system allows none of them.
pub(super) fn choose_reset(
    action: PowerAction,
    allowed: Option<&[ResetType]>,
) -> Option<ResetType> {
    let wanted = reset_types(action);
    match allowed {
        Some(list) => wanted.iter().find(|t| list.contains(t)).copied(),
        None => wanted.first().copied(),
    }
}

/// The override target for a device (`None` for a device added to the core
/// that Redfish has no target for).
fn boot_target(d: BootDevice) -> Option<BootTarget> {
    Some(match d {
        BootDevice::Pxe => BootTarget::Pxe,
        BootDevice::Disk => BootTarget::Hdd,
        BootDevice::BiosSetup => BootTarget::BiosSetup,
        _ => return None,
    })
}

/// The PATCH that sets the boot override. The mode is named only where the
/// system has the property, since some BMCs refuse the key. `None` for a device
/// Redfish cannot select.
pub(super) fn boot_patch(
    device: BootDevice,
    options: BootOptions,
    current: &Boot,
) -> Option<SystemPatch> {
    let mode = if options.efi {
        BootMode::Uefi
    } else {
        BootMode::Legacy
    };
    Some(SystemPatch {
        boot: BootPatch {
            boot_source_override_target: boot_target(device)?,
            boot_source_override_enabled: if options.persistent {
                OverrideEnabled::Continuous
            } else {
                OverrideEnabled::Once
            },
            boot_source_override_mode: current.boot_source_override_mode.map(|_| mode),
        },
    })
}

/// The boot override a system reports, in Tinker's terms; `None` when it is
/// disabled or names a device Tinker does not set.
pub(super) fn boot_override(boot: &Boot) -> Option<(BootDevice, BootOptions)> {
    let enabled = boot.boot_source_override_enabled;
    if enabled == Some(OverrideEnabled::Disabled) {
        return None;
    }
    let device = match boot.boot_source_override_target? {
        BootTarget::Pxe => BootDevice::Pxe,
        BootTarget::Hdd => BootDevice::Disk,
        BootTarget::BiosSetup => BootDevice::BiosSetup,
        BootTarget::Other => return None,
    };
    Some((
        device,
        BootOptions {
            persistent: enabled == Some(OverrideEnabled::Continuous),
            efi: boot.boot_source_override_mode == Some(Some(BootMode::Uefi)),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_an_allowed_reset_type() {
        assert_eq!(
            choose_reset(PowerAction::Cycle, None),
            Some(ResetType::PowerCycle)
        );
        let dell = [ResetType::On, ResetType::ForceOff, ResetType::ForceRestart];
        assert_eq!(
            choose_reset(PowerAction::Cycle, Some(&dell)),
            Some(ResetType::ForceRestart)
        );
        assert_eq!(choose_reset(PowerAction::SoftOff, Some(&dell)), None);
    }

    #[test]
    fn reads_power_states() {
        assert_eq!(
            power_state(Some(&SystemPowerState::Paused)),
            Some(PowerState::On)
        );
        assert_eq!(
            power_state(Some(&SystemPowerState::PoweringOff)),
            Some(PowerState::Off)
        );
        assert_eq!(
            power_state(Some(&SystemPowerState::Other("X".into()))),
            None
        );
        assert_eq!(power_state(None), None);
    }

    #[test]
    fn boot_override_round_trips_through_the_patch() {
        let with_mode = Boot {
            boot_source_override_mode: Some(None),
            ..Boot::default()
        };
        for device in [BootDevice::Pxe, BootDevice::Disk, BootDevice::BiosSetup] {
            for (persistent, efi) in [(false, false), (true, true)] {
                let options = BootOptions { persistent, efi };
                let patch = boot_patch(device, options, &with_mode)
                    .expect("Redfish selects every device")
                    .boot;
                let read = Boot {
                    boot_source_override_target: Some(patch.boot_source_override_target),
                    boot_source_override_enabled: Some(patch.boot_source_override_enabled),
                    boot_source_override_mode: Some(patch.boot_source_override_mode),
                };
                assert_eq!(boot_override(&read), Some((device, options)));
            }
        }
        let without_mode = boot_patch(BootDevice::Pxe, BootOptions::default(), &Boot::default())
            .expect("Redfish selects PXE");
        assert_eq!(without_mode.boot.boot_source_override_mode, None);
        let disabled = Boot {
            boot_source_override_target: Some(BootTarget::Pxe),
            boot_source_override_enabled: Some(OverrideEnabled::Disabled),
            ..Boot::default()
        };
        assert_eq!(boot_override(&disabled), None);
    }
}
