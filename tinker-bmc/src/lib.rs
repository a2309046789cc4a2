//! # tinker-bmc
//!
//! [`PowerController`](tinker_core::PowerController) implementations, the
//! out-of-band control that makes a rack of servers behave like a cloud:
//!
//! - [`IpmiPower`]: IPMI over LAN (RMCP+ "lanplus", cipher suite 3, falling back to
//!   RMCP 1.5 where a BMC speaks only that), on `ipmi-rs`, kept off the async
//!   worker threads;
//! - [`RedfishPower`]: Redfish over HTTPS (hyper + rustls; certificates verified
//!   unless a BMC is explicitly marked insecure), basic or session authentication;
//! - [`MockBmc`]: an in-process BMC with fault injection, for tests and simulations;
//! - [`Resilient`]: the policy wrapper (a time limit on every call, retries with
//!   backoff for transient errors and none for a wrong password, a limit of
//!   concurrent sessions per BMC) around any of them;
//! - [`Connector`]: builds the right controller from a Hardware's BMC reference
//!   (a Rufio `Machine`) and a [`SecretSource`], so the engine never knows which
//!   kind it drives.
//!
//! Passwords live in [`Secret`], whose `Debug` prints `***` and which has no
//! `Display`: they cannot reach a log line or an error message by accident.
//!
//! ```
//! use std::sync::Arc;
//! use tinker_bmc::{MockBmc, Resilient, RetryPolicy};
//! use tinker_core::{PowerAction, PowerController, PowerState};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let mock = MockBmc::new("rack1-node3");
//! mock.faults().unreachable_for(2); // the first two calls fail
//! let bmc: Arc<dyn PowerController> = Arc::new(Resilient::new(mock.clone(), RetryPolicy::fast()));
//! bmc.power(PowerAction::On).await.unwrap(); // retried until it succeeds
//! assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
//! # });
//! ```

#![deny(rustdoc::broken_intra_doc_links)]

mod connector;
mod ipmi;
mod mock;
mod policy;
mod redfish;

pub use connector::{
    BmcEndpoint, Connector, EnvSecrets, Provider, SecretSource, StaticConnector, StaticSecrets,
};
pub use ipmi::IpmiPower;
pub use mock::{Faults, MockBmc, MockConnector};
pub use policy::{Resilient, RetryPolicy};
pub use redfish::{RedfishAuth, RedfishPower, TlsVerification};
pub use tinker_core::Secret;
