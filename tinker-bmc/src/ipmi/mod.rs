//! IPMI over LAN (the `ipmi` feature): [`IpmiPower`] speaks RMCP+ ("lanplus",
//! cipher suite 3: HMAC-SHA1 authentication, AES-CBC-128 confidentiality) through
//! `ipmi-rs`. Never IPMI 1.5: a BMC (or a forger on its network) that offers
//! only IPMI 1.5 is refused with [`Error::Insecure`](tinker_core::Error::Insecure)
//! before the password leaves (see `session`).
//!
//! - `wire`: the commands and the bytes of their requests and answers (pure);
//! - `session`: opening and raising a session, and what its failures mean;
//! - `power`: the [`PowerController`](tinker_core::PowerController), a thin
//!   driver that runs the blocking ipmi-rs calls off the async threads;
//! - `endpoint`: where the BMC is ([`IpmiEndpoint`], from an `ipmi://` URL).

mod endpoint;
mod power;
mod session;
mod wire;

pub use endpoint::IpmiEndpoint;
pub use power::{IpmiPower, IpmiSessionStats};
