//! The IPMI commands Tinker sends and the bytes of their requests and answers
//! (IPMI v2.0 spec, chassis commands and boot option parameter 5). Pure: no
//! socket, so every encoding is tested on its own.

use ipmi_rs::connection::{IpmiCommand, Message, NetFn};
use tinker_core::{BootDevice, BootOptions, PowerAction, PowerState};

/// IPMI command numbers (IPMI v2.0 spec, tables G-1).
pub(super) mod cmd {
    pub const GET_CHASSIS_STATUS: u8 = 0x01;
    pub const CHASSIS_CONTROL: u8 = 0x02;
    pub const SET_SYSTEM_BOOT_OPTIONS: u8 = 0x08;
    pub const GET_SYSTEM_BOOT_OPTIONS: u8 = 0x09;
    pub const SET_SESSION_PRIVILEGE_LEVEL: u8 = 0x3B;
    pub const PRIVILEGE_ADMINISTRATOR: u8 = 0x04;
    /// Boot option parameter 0: set in progress.
    pub const PARAM_SET_IN_PROGRESS: u8 = 0x00;
    /// Boot option parameter 5: boot flags.
    pub const PARAM_BOOT_FLAGS: u8 = 0x05;
}

/// A raw request; the response data come back unparsed.
#[derive(Debug, Clone)]
pub(super) struct Raw {
    pub netfn: NetFn,
    pub cmd: u8,
    pub data: Vec<u8>,
}

impl From<Raw> for Message {
    fn from(r: Raw) -> Message {
        Message::new_request(r.netfn, r.cmd, r.data)
    }
}

impl IpmiCommand for Raw {
    type Output = Vec<u8>;
    type Error = ();

    fn parse_success_response(data: &[u8]) -> Result<Vec<u8>, ()> {
        Ok(data.to_vec())
    }
}

impl Raw {
    /// Set Session Privilege Level: Administrator.
    pub fn raise_to_administrator() -> Raw {
        Raw {
            netfn: NetFn::App,
            cmd: cmd::SET_SESSION_PRIVILEGE_LEVEL,
            data: vec![cmd::PRIVILEGE_ADMINISTRATOR],
        }
    }

    /// Get Chassis Status.
    pub fn chassis_status() -> Raw {
        Raw {
            netfn: NetFn::Chassis,
            cmd: cmd::GET_CHASSIS_STATUS,
            data: vec![],
        }
    }

    /// Chassis Control for a power action; `None` for one IPMI has no code for.
    pub fn chassis_control(action: PowerAction) -> Option<Raw> {
        Some(Raw {
            netfn: NetFn::Chassis,
            cmd: cmd::CHASSIS_CONTROL,
            data: vec![chassis_control_code(action)?],
        })
    }

    /// Set System Boot Options, parameter 0 ("set in progress"): 1 opens, 0 closes.
    pub fn boot_set_in_progress(value: u8) -> Raw {
        Raw {
            netfn: NetFn::Chassis,
            cmd: cmd::SET_SYSTEM_BOOT_OPTIONS,
            data: vec![cmd::PARAM_SET_IN_PROGRESS, value],
        }
    }

    /// Set System Boot Options, parameter 5 (the boot flags); `None` for a
    /// device IPMI has no selector for.
    pub fn set_boot_flags(device: BootDevice, options: BootOptions) -> Option<Raw> {
        let mut data = vec![cmd::PARAM_BOOT_FLAGS];
        data.extend_from_slice(&boot_flags(device, options)?);
        Some(Raw {
            netfn: NetFn::Chassis,
            cmd: cmd::SET_SYSTEM_BOOT_OPTIONS,
            data,
        })
    }

    /// Get System Boot Options, parameter 5.
    pub fn get_boot_flags() -> Raw {
        Raw {
            netfn: NetFn::Chassis,
            cmd: cmd::GET_SYSTEM_BOOT_OPTIONS,
            data: vec![cmd::PARAM_BOOT_FLAGS, 0, 0],
        }
    }
}

/// Chassis Control's code for an action (`None` for an action added to the
/// core that IPMI has no code for).
fn chassis_control_code(action: PowerAction) -> Option<u8> {
    Some(match action {
        PowerAction::Off => 0x00,
        PowerAction::On => 0x01,
        PowerAction::Cycle => 0x02,
        PowerAction::Reset => 0x03,
        PowerAction::SoftOff => 0x05,
        _ => return None,
    })
}

/// The power state in a Get Chassis Status answer (byte 0, bit 0), or `None` for
/// an empty answer.
pub(super) fn parse_chassis_status(data: &[u8]) -> Option<PowerState> {
    let b0 = *data.first()?;
    Some(if b0 & 0x01 != 0 {
        PowerState::On
    } else {
        PowerState::Off
    })
}

/// Boot device selector of parameter 5, byte 2, bits 5:2 (`None` for a device
/// added to the core that IPMI has no selector for).
fn device_code(d: BootDevice) -> Option<u8> {
    Some(match d {
        BootDevice::Pxe => 0x1,
        BootDevice::Disk => 0x2,
        BootDevice::BiosSetup => 0x6,
        _ => return None,
    })
}

/// Boot flags (parameter 5): valid, persistence, EFI, device.
pub(super) fn boot_flags(device: BootDevice, options: BootOptions) -> Option<[u8; 5]> {
    let mut b0 = 0x80;
    if options.persistent {
        b0 |= 0x40;
    }
    if options.efi {
        b0 |= 0x20;
    }
    Some([b0, device_code(device)? << 2, 0, 0, 0])
}

/// Reads parameter 5's flags back. A device selector of 0 means no override.
/// BMCs differ in the valid bit (ipmi_sim clears it), so the device decides.
pub(super) fn parse_boot_flags(flags: &[u8]) -> Option<(BootDevice, BootOptions)> {
    let b0 = *flags.first()?;
    let device = match (flags.get(1)? >> 2) & 0x0f {
        0x1 => BootDevice::Pxe,
        0x2 | 0x3 => BootDevice::Disk,
        0x6 => BootDevice::BiosSetup,
        _ => return None,
    };
    Some((
        device,
        BootOptions {
            persistent: b0 & 0x40 != 0,
            efi: b0 & 0x20 != 0,
        },
    ))
}

/// The boot override in a Get System Boot Options answer: `[parameter version,
/// parameter selector, 5 bytes of flags]`.
pub(super) fn parse_boot_options_answer(data: &[u8]) -> Option<(BootDevice, BootOptions)> {
    data.get(2..).and_then(parse_boot_flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_flags_round_trip() {
        for device in [BootDevice::Pxe, BootDevice::Disk, BootDevice::BiosSetup] {
            for (persistent, efi) in [(false, false), (true, false), (false, true), (true, true)] {
                let o = BootOptions { persistent, efi };
                let flags = boot_flags(device, o).expect("IPMI has every device");
                assert_eq!(parse_boot_flags(&flags), Some((device, o)));
                let mut answer = vec![1, cmd::PARAM_BOOT_FLAGS];
                answer.extend_from_slice(&flags);
                assert_eq!(parse_boot_options_answer(&answer), Some((device, o)));
            }
        }
        assert_eq!(
            boot_flags(
                BootDevice::Pxe,
                BootOptions {
                    persistent: false,
                    efi: true
                }
            ),
            Some([0xa0, 0x04, 0, 0, 0])
        );
        assert_eq!(parse_boot_flags(&[0, 0, 0, 0, 0]), None);
        // ipmi_sim reports the device with the valid bit clear.
        assert_eq!(
            parse_boot_flags(&[0x00, 0x08, 0, 0, 0]).map(|b| b.0),
            Some(BootDevice::Disk)
        );
        assert_eq!(parse_boot_options_answer(&[1]), None);
    }

    #[test]
    fn chassis_answers_and_requests() {
        assert_eq!(parse_chassis_status(&[0x01, 0, 0]), Some(PowerState::On));
        assert_eq!(parse_chassis_status(&[0x40]), Some(PowerState::Off));
        assert_eq!(parse_chassis_status(&[]), None);
        assert_eq!(
            Raw::chassis_control(PowerAction::SoftOff).map(|r| r.data),
            Some(vec![0x05])
        );
        assert_eq!(
            Raw::set_boot_flags(BootDevice::Disk, BootOptions::default()).map(|r| r.data),
            Some(vec![cmd::PARAM_BOOT_FLAGS, 0x80, 0x08, 0, 0, 0])
        );
    }

    proptest::proptest! {
        #![proptest_config({
            let mut c = proptest::test_runner::Config::default();
            if std::env::var_os("PROPTEST_CASES").is_none() {
                c.cases = 1024;
            }
            c
        })]

        /// Any answer data: a value or `None`, never a panic; a boot override
        /// read back always names a device IPMI can set.
        #[test]
        fn any_answer_data_is_read_or_refused(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16)) {
            let state = parse_chassis_status(&data);
            proptest::prop_assert_eq!(state.is_none(), data.is_empty());
            if let Some((device, options)) = parse_boot_options_answer(&data) {
                proptest::prop_assert!(boot_flags(device, options).is_some());
                proptest::prop_assert!(data.len() >= 4);
            }
        }
    }
}
