//! An IPMI session: opened with RMCP+ (or RMCP 1.5), then raised to
//! Administrator (Set Session Privilege Level), as ipmitool does: sessions start
//! at User, which may read the power state but not change it. And what each
//! ipmi-rs failure means, as the error variant that says what happened.

use super::wire::Raw;
use ipmi_rs::connection::CompletionErrorCode;
use ipmi_rs::rmcp::{
    ActivationError, Rmcp, RmcpIpmiError, V1_5ActivationError, V2_0ActivationError,
};
use ipmi_rs::{Ipmi, IpmiError};
use std::time::Duration;
use tinker_core::{Error, Result, Secret};

/// An open, raised session.
pub(super) type Session = Ipmi<Rmcp>;

/// A command's failure, as ipmi-rs reports it.
pub(super) type CommandError = IpmiError<RmcpIpmiError, ()>;

/// What it takes to open a session. Its `Debug` is the derived one of its
/// fields, and the password's own `Debug` prints `***`.
#[derive(Debug)]
pub(super) struct Login<'a> {
    pub target: String,
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub password: &'a Secret,
    pub timeout: Duration,
}

/// Opens a session and raises it to Administrator. Blocking.
pub(super) fn open(login: &Login<'_>) -> Result<Session> {
    let mut rmcp =
        Rmcp::new((login.host, login.port), login.timeout).map_err(|e| Error::Unreachable {
            target: login.target.clone(),
            reason: format!("cannot resolve or bind: {e}"),
        })?;
    rmcp.activate(
        true,
        Some(login.user),
        Some(login.password.expose().as_bytes()),
    )
    .map_err(|e| activation_error(&login.target, e))?;
    let mut ipmi = Ipmi::new(rmcp);
    ipmi.send_recv(Raw::raise_to_administrator())
        .map_err(|e| match e {
            IpmiError::Failed { .. } => Error::AuthenticationFailed {
                target: login.target.clone(),
            },
            e => command_error(&login.target, "raise session privilege", e),
        })?;
    tracing::debug!(bmc = %login.target, "IPMI session open");
    Ok(ipmi)
}

/// Whether a command failed because the session or the network is gone (and a
/// fresh session may succeed).
pub(super) fn is_connection_error(e: &CommandError) -> bool {
    matches!(e, IpmiError::Connection(_))
}

/// What a failure to open a session means.
pub(super) fn activation_error(target: &str, e: ActivationError) -> Error {
    let target = target.to_string();
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
                operation: "IPMI over LAN (the host answered, but not as a BMC we can speak to)"
                    .into(),
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

/// What a failed command means.
pub(super) fn command_error(target: &str, operation: &str, e: CommandError) -> Error {
    let target = target.to_string();
    match e {
        IpmiError::Failed {
            completion_code, ..
        } => match completion_code {
            CompletionErrorCode::InsufficientPrivilege => Error::AuthenticationFailed { target },
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

/// A bounded `Debug` of a protocol error (never holds credentials: ipmi-rs errors
/// carry codes and packet data, not the password).
fn short_debug(e: &impl std::fmt::Debug) -> String {
    let mut s = format!("{e:?}");
    s.truncate(120);
    s
}
