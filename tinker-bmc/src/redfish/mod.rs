//! Redfish over HTTP(S) (the `redfish` feature): [`RedfishPower`] with a hyper
//! client and rustls.
//!
//! - `wire`: the Redfish resources Tinker reads and writes, as serde types
//!   (ComputerSystem, Boot, the reset action, a session login, a Task, an error
//!   body);
//! - `mapping`: Tinker's power and boot vocabulary to Redfish's and back (pure);
//! - `client`: HTTP, authentication (basic, or a session renewed on a 401) and
//!   what each failure status means;
//! - `tls`: certificate verification ([`TlsVerification`]);
//! - `power`: the [`PowerController`](tinker_core::PowerController);
//! - `endpoint`: where the BMC is ([`RedfishEndpoint`], from a `redfish://` or
//!   `redfishs://` URL).

mod client;
mod endpoint;
#[cfg(test)]
mod fuzz;
mod mapping;
mod power;
mod tls;
mod wire;

pub use client::RedfishAuth;
pub use endpoint::RedfishEndpoint;
pub use power::RedfishPower;
pub use tls::TlsVerification;
