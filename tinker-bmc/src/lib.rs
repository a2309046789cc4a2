//! Out-of-band power control for Tinker: [`PowerController`](tinker_core::PowerController)
//! implementations that power machines on and off and set their next boot device
//! through their BMCs, the control that makes a rack of servers behave like a
//! cloud.
//!
//! - [`IpmiPower`] (feature `ipmi`, in `ipmi/`): IPMI over LAN (RMCP+ "lanplus",
//!   cipher suite 3; a BMC offering only IPMI 1.5 is refused as insecure), on
//!   `ipmi-rs`, kept off the async worker threads;
//! - [`RedfishPower`] (feature `redfish`, in `redfish/`): Redfish over HTTPS (hyper
//!   and rustls; certificates verified unless a BMC is explicitly marked
//!   insecure), basic or session authentication, responses read into typed
//!   resources;
//! - [`WakeOnLan`] (always there, Linux): power for machines without a BMC (a
//!   home lab's NUCs): power on by magic packet on the provisioning interface,
//!   everything else [`Error::Unsupported`](tinker_core::Error::Unsupported)
//!   with the reason (the engine skips those steps);
//! - [`MockBmc`] (always there): an in-process BMC with fault injection and a
//!   typed call log ([`MockCall`]), for tests and simulations;
//! - [`Resilient`]: the policy wrapper (a time limit on every call, retries with
//!   `tinker_core`'s jittered backoff for transient errors and none for a wrong
//!   password, a limit of concurrent sessions per BMC) around any of them, timed
//!   on a [`Clock`](tinker_core::clock::Clock);
//! - [`BmcEndpoint`]: one variant per protocol, read from a BMC URL;
//!   [`Connector`] builds the right controller from a Hardware's BMC reference
//!   (a Rufio `Machine`) and a [`SecretSource`], so the engine never knows which
//!   kind it drives.
//!
//! Both protocol features are on by default; a vendor who needs only one turns
//! the other off (`default-features = false, features = ["redfish"]`).
//!
//! Passwords live in [`Secret`], whose `Debug` prints `***` and which has no
//! `Display`: they cannot reach a log line or an error message by accident.
//!
//! ```
//! use std::sync::Arc;
//! use tinker_bmc::{MockBmc, MockCall, Resilient, RetryPolicy};
//! use tinker_core::{PowerAction, PowerController, PowerState};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let mock = MockBmc::new("rack1-node3");
//! mock.faults().unreachable_for(2); // the first two calls fail
//! let bmc: Arc<dyn PowerController> = Arc::new(Resilient::new(mock.clone(), RetryPolicy::fast()));
//! bmc.power(PowerAction::On).await.unwrap(); // retried until it succeeds
//! assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
//! let on = MockCall::Power(PowerAction::On);
//! assert_eq!(mock.calls()[..3], [on.failed(), on.failed(), on.ok()]);
//! # });
//! ```

#![deny(rustdoc::broken_intra_doc_links)]

mod connector;
mod endpoint;
#[cfg(feature = "ipmi")]
mod ipmi;
mod mock;
mod policy;
#[cfg(feature = "redfish")]
mod redfish;
mod rufio;
mod secrets;
mod time;
mod wol;

pub use connector::{Connector, POWER_ANNOTATION, StaticConnector, WAKE_ON_LAN};
pub use endpoint::BmcEndpoint;
#[cfg(feature = "ipmi")]
pub use ipmi::{IpmiEndpoint, IpmiPower, IpmiSessionStats};
pub use mock::{CallRecord, Faults, MockBmc, MockCall, MockConnector};
pub use policy::{Resilient, RetryPolicy};
#[cfg(feature = "redfish")]
pub use redfish::{RedfishAuth, RedfishEndpoint, RedfishPower, TlsVerification};
pub use secrets::{EnvSecrets, SecretSource, StaticSecrets};
pub use tinker_core::Secret;
pub use wol::{WOL_PORT, WakeOnLan, WolEndpoint, magic_packet};
