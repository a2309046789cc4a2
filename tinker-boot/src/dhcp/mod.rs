//! DHCPv4 for booting machines: reservation mode (addresses from each Hardware's
//! `spec.interfaces[].dhcp`) and proxyDHCP mode (boot information only, beside an
//! existing DHCP server, on ports 67 and 4011), with relay agents (`giaddr`,
//! option 82) honoured.
//!
//! The protocol is pure code ([`engine`]: bytes in, a typed request out; a request
//! and a [`BootDecision`](tinker_core::boot::BootDecision) in, bytes and a
//! destination out); [`server`] is the thin tokio driver that asks the
//! `BootResponder` between the two.

pub mod engine;
pub mod server;
mod stats;

pub use engine::{DhcpConfig, Inbound, Mode, Outbound, Verdict};
pub use server::DhcpServer;
pub use stats::DhcpStats;
