//! An IPMI session: opened with RMCP+ only, then raised to Administrator (Set
//! Session Privilege Level), as ipmitool does: sessions start at User, which may
//! read the power state but not change it. And what each ipmi-rs failure means,
//! as the error variant that says what happened.
//!
//! Never IPMI 1.5. Which protocol a session uses is decided by the BMC's answer
//! to Get Channel Authentication Capabilities, which is sent before any
//! authentication, so anyone on the BMC network can forge it; ipmi-rs follows an
//! answer without the IPMI 2.0 bit down to an IPMI 1.5 session, whose best case
//! is an MD5 of the password and whose worst is the password in clear text
//! ("straight password") or no authentication at all. ipmi-rs has no switch for
//! this, so the key we hand it is the password zero-padded to IPMI 2.0's 20
//! bytes: RMCP+ uses the password only as an HMAC key, and HMAC pads its key
//! with zeros, so the padded key authenticates exactly as the password does;
//! ipmi-rs's IPMI 1.5 path refuses any password over 16 bytes before it sends a
//! single packet. That refusal is reported as [`Error::Insecure`].
//!
//! Cipher suite: ipmi-rs asks for suite 3 (RAKP-HMAC-SHA1, HMAC-SHA1-96,
//! AES-CBC-128) and checks the BMC's RAKP message 2 against the password, so a
//! forger who does not know the password cannot complete the session.

use super::wire::Raw;
use ipmi_rs::connection::CompletionErrorCode;
use ipmi_rs::rmcp::{ActivationError, Rmcp, RmcpIpmiError, V2_0ActivationError};
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

/// The longest user name IPMI carries (RAKP message 1 has 16 bytes for it).
pub(crate) const MAX_USER_LEN: usize = 16;

/// The longest password IPMI 1.5 carries; ipmi-rs's IPMI 1.5 path refuses a
/// longer one before it sends anything.
const MAX_IPMI15_PASSWORD_LEN: usize = 16;

/// The size of an IPMI 2.0 password (K_UID), to which shorter ones are padded
/// with zeros.
const IPMI20_PASSWORD_LEN: usize = 20;

/// The key handed to ipmi-rs: the password zero-padded to 20 bytes, which RMCP+
/// (HMAC) treats as the password itself and IPMI 1.5 cannot take (see the
/// module's header). Zeroized on drop.
fn rmcp_plus_only_key(password: &Secret) -> zeroize::Zeroizing<Vec<u8>> {
    let mut key = zeroize::Zeroizing::new(Vec::with_capacity(IPMI20_PASSWORD_LEN));
    key.extend_from_slice(password.expose().as_bytes());
    if key.len() < IPMI20_PASSWORD_LEN {
        key.resize(IPMI20_PASSWORD_LEN, 0);
    }
    debug_assert!(key.len() > MAX_IPMI15_PASSWORD_LEN);
    key
}

/// Refuses a user name IPMI cannot carry, which ipmi-rs would silently replace
/// by the empty (anonymous) one.
fn check_user(target: &str, user: &str) -> Result<()> {
    if user.len() > MAX_USER_LEN {
        return Err(Error::Unsupported {
            target: target.to_string(),
            operation: format!(
                "a user name of {} bytes (IPMI carries at most {MAX_USER_LEN})",
                user.len()
            ),
        });
    }
    Ok(())
}

/// Opens a session and raises it to Administrator. Blocking.
pub(super) fn open(login: &Login<'_>) -> Result<Session> {
    check_user(&login.target, login.user)?;
    let mut rmcp =
        Rmcp::new((login.host, login.port), login.timeout).map_err(|e| Error::Unreachable {
            target: login.target.clone(),
            reason: format!("cannot resolve or bind: {e}"),
        })?;
    let key = rmcp_plus_only_key(login.password);
    rmcp.activate(true, Some(login.user), Some(&key))
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

/// Why a BMC that answers with IPMI 1.5 only is refused.
const IPMI15_ONLY: &str = "the BMC offers only IPMI 1.5 (an MD5 of the password, the password \
     in clear text or no authentication); Tinker speaks IPMI 2.0 (RMCP+) only: enable \
     IPMI 2.0 (lanplus) on the BMC";

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
        // Capabilities without IPMI 2.0's extension bit: an IPMI 1.5 BMC.
        ActivationError::NoSupportedIpmiLANVersions => Error::Insecure {
            target,
            reason: IPMI15_ONLY.into(),
        },
        ActivationError::IpmiNotSupported => Error::Unsupported {
            target,
            operation: "IPMI over LAN (the host answered, but not as a BMC we can speak to)".into(),
        },
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
        // Only reachable when the capabilities answer lacked IPMI 2.0: our key
        // is too long for IPMI 1.5, so nothing was sent (see the header).
        ActivationError::V1_5(_) => Error::Insecure {
            target,
            reason: IPMI15_ONLY.into(),
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
