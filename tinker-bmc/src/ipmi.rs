//! `IpmiPower`: IPMI over LAN on `ipmi-rs`.
//!
//! RMCP+ (lanplus) with cipher suite 3, the one ipmi-rs speaks; ipmi-rs falls back
//! to RMCP 1.5 by itself when a BMC does not offer RMCP+. ipmi-rs is blocking, so
//! every call runs in `spawn_blocking`. One session per BMC is kept open and reused
//! (opening one costs six round trips); a call that fails on a reused session is
//! tried once on a fresh one, since BMCs drop idle sessions.
//!
//! After the session opens we raise it to Administrator (Set Session Privilege
//! Level), as ipmitool does: sessions start at User, which may read the power
//! state but not change it.

use async_trait::async_trait;
use ipmi_rs::connection::{CompletionErrorCode, IpmiCommand, Message, NetFn};
use ipmi_rs::rmcp::{
    ActivationError, Rmcp, RmcpIpmiError, V1_5ActivationError, V2_0ActivationError,
};
use ipmi_rs::{Ipmi, IpmiError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tinker_core::Secret;
use tinker_core::{
    BootDevice, BootOptions, Error, PowerAction, PowerController, PowerState, Result,
};

/// IPMI command numbers (IPMI v2.0 spec, tables G-1).
mod cmd {
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
struct Raw {
    netfn: NetFn,
    cmd: u8,
    data: Vec<u8>,
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

type Session = Ipmi<Rmcp>;

/// Power control of one BMC over IPMI.
#[derive(Clone)]
pub struct IpmiPower {
    host: String,
    port: u16,
    user: String,
    password: Secret,
    timeout: Duration,
    session: Arc<Mutex<Option<Session>>>,
}

impl std::fmt::Debug for IpmiPower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpmiPower")
            .field("target", &self.target())
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl IpmiPower {
    /// A controller for the BMC at `host:port` (623 is IPMI's port).
    pub fn new(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        password: Secret,
    ) -> Self {
        IpmiPower {
            host: host.into(),
            port,
            user: user.into(),
            password,
            timeout: Duration::from_secs(3),
            session: Arc::default(),
        }
    }

    /// How long to wait for each answer (default 3 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs one or more raw requests in a session, off the async threads.
    async fn run<T: Send + 'static>(
        &self,
        operation: &'static str,
        f: impl Fn(&mut Session) -> std::result::Result<T, IpmiError<RmcpIpmiError, ()>>
        + Send
        + 'static,
    ) -> Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut slot = this.session.lock().unwrap_or_else(|e| e.into_inner());
            let reused = slot.is_some();
            if slot.is_none() {
                *slot = Some(this.open()?);
            }
            let session = slot.as_mut().expect("session just opened");
            match f(session) {
                Ok(v) => Ok(v),
                Err(e) if reused && is_connection_error(&e) => {
                    // The BMC may have closed our idle session: try once anew.
                    tracing::debug!(bmc = %this.target(), operation, "reopening the IPMI session");
                    *slot = None;
                    *slot = Some(this.open()?);
                    let session = slot.as_mut().expect("session just opened");
                    f(session).map_err(|e| {
                        *slot = None;
                        this.command_error(operation, e)
                    })
                }
                Err(e) => {
                    if is_connection_error(&e) {
                        *slot = None;
                    }
                    Err(this.command_error(operation, e))
                }
            }
        })
        .await
        .map_err(|e| Error::Remote {
            target: self.target(),
            reason: format!("IPMI worker task failed: {e}"),
        })?
    }

    fn open(&self) -> Result<Session> {
        let mut rmcp = Rmcp::new((self.host.as_str(), self.port), self.timeout).map_err(|e| {
            Error::Unreachable {
                target: self.target(),
                reason: format!("cannot resolve or bind: {e}"),
            }
        })?;
        rmcp.activate(
            true,
            Some(&self.user),
            Some(self.password.expose().as_bytes()),
        )
        .map_err(|e| self.activation_error(e))?;
        let mut ipmi = Ipmi::new(rmcp);
        let raise = Raw {
            netfn: NetFn::App,
            cmd: cmd::SET_SESSION_PRIVILEGE_LEVEL,
            data: vec![cmd::PRIVILEGE_ADMINISTRATOR],
        };
        ipmi.send_recv(raise).map_err(|e| match e {
            IpmiError::Failed { .. } => Error::AuthenticationFailed {
                target: self.target(),
            },
            e => self.command_error("raise session privilege", e),
        })?;
        tracing::debug!(bmc = %self.target(), "IPMI session open");
        Ok(ipmi)
    }

    fn activation_error(&self, e: ActivationError) -> Error {
        let target = self.target();
        let unreachable = |reason: String| Error::Unreachable {
            target: target.clone(),
            reason,
        };
        match e {
            ActivationError::BindSocket(io)
            | ActivationError::PingSend(io)
            | ActivationError::PongReceive(io) => {
                unreachable(format!("no answer to the RMCP ping: {}", io.kind()))
            }
            ActivationError::IpmiNotSupported | ActivationError::NoSupportedIpmiLANVersions => {
                Error::Unsupported {
                    target,
                    operation:
                        "IPMI over LAN (the host answered, but not as a BMC we can speak to)".into(),
                }
            }
            ActivationError::GetChannelAuthenticationCapabilities(_) => {
                unreachable("no answer to Get Channel Authentication Capabilities".into())
            }
            ActivationError::V2_0(v) => match v {
                V2_0ActivationError::Io(_)
                | V2_0ActivationError::OpenSessionResponseReceive(_)
                | V2_0ActivationError::RakpMessage2Receive(_)
                | V2_0ActivationError::RakpMessage4Receive(_)
                | V2_0ActivationError::OpenSessionRequestSend(_)
                | V2_0ActivationError::SendRakpMessage1(_)
                | V2_0ActivationError::RakpMessage3Send(_) => {
                    unreachable("the BMC stopped answering while opening an RMCP+ session".into())
                }
                // Every other failure of the RAKP exchange is the BMC refusing
                // our name or password (or a cipher suite it does not offer).
                _ => Error::AuthenticationFailed { target },
            },
            ActivationError::V1_5(v) => match v {
                V1_5ActivationError::Io(_) => {
                    unreachable("the BMC stopped answering while opening an RMCP session".into())
                }
                _ => Error::AuthenticationFailed { target },
            },
            ActivationError::PongRead | ActivationError::RmcpError(_) => Error::Remote {
                target,
                reason: "malformed RMCP answer".into(),
            },
        }
    }

    fn command_error(&self, operation: &str, e: IpmiError<RmcpIpmiError, ()>) -> Error {
        let target = self.target();
        match e {
            IpmiError::Failed {
                completion_code, ..
            } => match completion_code {
                CompletionErrorCode::InsufficientPrivilege => {
                    Error::AuthenticationFailed { target }
                }
                CompletionErrorCode::InvalidCommand
                | CompletionErrorCode::InvalidDataFieldInRequest
                | CompletionErrorCode::ParameterOutOfRange
                | CompletionErrorCode::SubFunctionDisabled => Error::Unsupported {
                    target,
                    operation: format!("{operation} (completion code {completion_code:?})"),
                },
                other => Error::Remote {
                    target,
                    reason: format!("{operation}: completion code {other:?}"),
                },
            },
            IpmiError::Connection(_) => Error::Unreachable {
                target,
                reason: format!("no answer to {operation}"),
            },
            other => Error::Remote {
                target,
                reason: format!("{operation}: unexpected answer ({})", short_debug(&other)),
            },
        }
    }

    async fn raw(
        &self,
        operation: &'static str,
        netfn: NetFn,
        command: u8,
        data: Vec<u8>,
    ) -> Result<Vec<u8>> {
        self.run(operation, move |s| {
            s.send_recv(Raw {
                netfn,
                cmd: command,
                data: data.clone(),
            })
        })
        .await
    }
}

fn is_connection_error<P>(e: &IpmiError<RmcpIpmiError, P>) -> bool {
    matches!(e, IpmiError::Connection(_))
}

/// A bounded `Debug` of a protocol error (never holds credentials: ipmi-rs errors
/// carry codes and packet data, not the password).
fn short_debug(e: &impl std::fmt::Debug) -> String {
    let mut s = format!("{e:?}");
    s.truncate(120);
    s
}

/// Boot device selector of parameter 5, byte 2, bits 5:2.
fn device_code(d: BootDevice) -> u8 {
    match d {
        BootDevice::Pxe => 0x1,
        BootDevice::Disk => 0x2,
        BootDevice::BiosSetup => 0x6,
    }
}

/// Boot flags (parameter 5): valid, persistence, EFI, device.
pub(crate) fn boot_flags(device: BootDevice, options: BootOptions) -> [u8; 5] {
    let mut b0 = 0x80;
    if options.persistent {
        b0 |= 0x40;
    }
    if options.efi {
        b0 |= 0x20;
    }
    [b0, device_code(device) << 2, 0, 0, 0]
}

/// Reads parameter 5's flags back. A device selector of 0 means no override.
/// BMCs differ in the valid bit (ipmi_sim clears it), so the device decides.
pub(crate) fn parse_boot_flags(flags: &[u8]) -> Option<(BootDevice, BootOptions)> {
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

#[async_trait]
impl PowerController for IpmiPower {
    fn target(&self) -> String {
        format!("ipmi://{}:{}", self.host, self.port)
    }

    async fn power_state(&self) -> Result<PowerState> {
        let data = self
            .raw(
                "get chassis status",
                NetFn::Chassis,
                cmd::GET_CHASSIS_STATUS,
                vec![],
            )
            .await?;
        let b0 = *data.first().ok_or_else(|| Error::Remote {
            target: self.target(),
            reason: "empty chassis status".into(),
        })?;
        Ok(if b0 & 0x01 != 0 {
            PowerState::On
        } else {
            PowerState::Off
        })
    }

    async fn power(&self, action: PowerAction) -> Result<()> {
        let code = match action {
            PowerAction::Off => 0x00,
            PowerAction::On => 0x01,
            PowerAction::Cycle => 0x02,
            PowerAction::Reset => 0x03,
            PowerAction::SoftOff => 0x05,
        };
        self.raw(
            "chassis control",
            NetFn::Chassis,
            cmd::CHASSIS_CONTROL,
            vec![code],
        )
        .await?;
        Ok(())
    }

    async fn set_boot_device(&self, device: BootDevice, options: BootOptions) -> Result<()> {
        let flags = boot_flags(device, options);
        self.run("set boot options", move |s| {
            // Bracket the write with "set in progress", as ipmitool does; BMCs
            // that do not implement parameter 0 refuse it, which is harmless.
            let progress = |v: u8| Raw {
                netfn: NetFn::Chassis,
                cmd: cmd::SET_SYSTEM_BOOT_OPTIONS,
                data: vec![cmd::PARAM_SET_IN_PROGRESS, v],
            };
            let _ = s.send_recv(progress(0x01));
            let mut data = vec![cmd::PARAM_BOOT_FLAGS];
            data.extend_from_slice(&flags);
            let result = s.send_recv(Raw {
                netfn: NetFn::Chassis,
                cmd: cmd::SET_SYSTEM_BOOT_OPTIONS,
                data,
            });
            let _ = s.send_recv(progress(0x00));
            result.map(|_| ())
        })
        .await
    }

    async fn boot_override(&self) -> Result<Option<(BootDevice, BootOptions)>> {
        let data = self
            .raw(
                "get boot options",
                NetFn::Chassis,
                cmd::GET_SYSTEM_BOOT_OPTIONS,
                vec![cmd::PARAM_BOOT_FLAGS, 0, 0],
            )
            .await?;
        // [parameter version, parameter selector, 5 bytes of flags]
        Ok(data.get(2..).and_then(parse_boot_flags))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_flags_round_trip() {
        for device in [BootDevice::Pxe, BootDevice::Disk, BootDevice::BiosSetup] {
            for (persistent, efi) in [(false, false), (true, false), (false, true), (true, true)] {
                let o = BootOptions { persistent, efi };
                let flags = boot_flags(device, o);
                assert_eq!(parse_boot_flags(&flags), Some((device, o)));
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
            [0xa0, 0x04, 0, 0, 0]
        );
        assert_eq!(parse_boot_flags(&[0, 0, 0, 0, 0]), None);
        // ipmi_sim reports the device with the valid bit clear.
        assert_eq!(
            parse_boot_flags(&[0x00, 0x08, 0, 0, 0]).map(|b| b.0),
            Some(BootDevice::Disk)
        );
    }
}
