//! `BootResponder`: the policy that decides what a booting machine gets. The DHCP
//! and HTTP servers own the protocols; they describe each request as a
//! [`BootRequest`] and carry out the [`BootDecision`].

use crate::error::Result;
use crate::mac::MacAddr;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::net::Ipv4Addr;

/// What kind of client is booting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientKind {
    /// A firmware PXE ROM (vendor class `PXEClient`).
    PxeRom,
    /// iPXE already running (user class `iPXE` or `Tinkerbell`, or option 175).
    Ipxe,
    /// A UEFI HTTP-boot client (vendor class `HTTPClient`).
    HttpBoot,
    /// An ordinary DHCP client (an installed OS, a DHCP tool).
    Plain,
}

/// What a boot request tells us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootRequest {
    /// The client's hardware address.
    pub mac: MacAddr,
    /// Client system architecture (DHCP option 93), if sent.
    pub arch: Option<u16>,
    /// The kind of client.
    pub client: ClientKind,
    /// The relay agent's address (`giaddr`), if relayed.
    pub relay: Option<Ipv4Addr>,
    /// Relay agent circuit id (option 82.1), if sent.
    pub circuit_id: Option<Vec<u8>>,
}

/// Network settings for the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// Address.
    pub address: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers.
    pub dns: Vec<Ipv4Addr>,
    /// NTP servers.
    pub ntp: Vec<Ipv4Addr>,
    /// Host name.
    pub hostname: Option<String>,
    /// Domain name.
    pub domain: Option<String>,
    /// Lease time in seconds.
    pub lease_seconds: u32,
}

/// Where the client should boot from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BootTarget {
    /// A file over TFTP (an iPXE binary).
    Tftp {
        /// Server.
        server: Ipv4Addr,
        /// File name.
        file: String,
    },
    /// An iPXE script over HTTP.
    IpxeScript {
        /// URL.
        url: String,
    },
    /// A file over HTTP (UEFI HTTP boot).
    Http {
        /// URL.
        url: String,
    },
}

/// Why a boot request gets no answer. Servers count and log by it; it is
/// rendered to text ([`Display`](std::fmt::Display)) only in logs and events.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum IgnoreReason {
    /// No Hardware has this MAC.
    UnknownMac,
    /// The Hardware's interface has `disableDhcp` set.
    DhcpDisabled,
    /// The Hardware's interface does not allow netboot (`allowPXE` is not true),
    /// and the answer would only have carried boot information.
    NetbootNotAllowed,
    /// The client is not a netboot client (no `PXEClient` or `HTTPClient`
    /// vendor class), and the answer would only have carried boot information.
    NotNetbootClient,
    /// The client's architecture (option 93) has no boot file.
    UnknownArchitecture,
    /// A policy of the responder's own (a vendor's quarantine, a maintenance
    /// window), by a short stable name of its choosing.
    Policy(std::borrow::Cow<'static, str>),
}

impl IgnoreReason {
    /// A short, stable name (for metric labels and structured logs).
    pub fn as_str(&self) -> &str {
        match self {
            IgnoreReason::UnknownMac => "unknown_mac",
            IgnoreReason::DhcpDisabled => "dhcp_disabled",
            IgnoreReason::NetbootNotAllowed => "netboot_not_allowed",
            IgnoreReason::NotNetbootClient => "not_netboot_client",
            IgnoreReason::UnknownArchitecture => "unknown_architecture",
            IgnoreReason::Policy(name) => name,
        }
    }
}

impl std::fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IgnoreReason::UnknownMac => "unknown MAC",
            IgnoreReason::DhcpDisabled => "DHCP disabled for this interface",
            IgnoreReason::NetbootNotAllowed => "netboot not allowed (allowPXE is not true)",
            IgnoreReason::NotNetbootClient => "not a PXE or HTTP-boot client",
            IgnoreReason::UnknownArchitecture => "no boot file for the client architecture",
            IgnoreReason::Policy(name) => return write!(f, "refused by policy: {name}"),
        })
    }
}

/// The answer for a boot request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BootDecision {
    /// Say nothing (unknown MAC, DHCP disabled for it).
    Ignore {
        /// Why, for the machine's event log and metrics.
        reason: IgnoreReason,
    },
    /// Answer with network settings (reservation mode) and/or a boot target.
    Answer {
        /// Address and options; `None` in proxyDHCP mode.
        network: Option<NetworkConfig>,
        /// What to boot; `None` when netboot is not allowed.
        boot: Option<BootTarget>,
    },
}

/// Decides what a booting machine gets.
///
/// ```
/// use async_trait::async_trait;
/// use std::sync::Arc;
/// use tinker_core::boot::{BootDecision, BootRequest, BootResponder, BootTarget, ClientKind};
///
/// /// Chains every PXE ROM to iPXE and every iPXE to one script.
/// #[derive(Debug)]
/// struct Everyone;
///
/// #[async_trait]
/// impl BootResponder for Everyone {
///     async fn decide(&self, req: &BootRequest) -> tinker_core::Result<BootDecision> {
///         let boot = match req.client {
///             ClientKind::Ipxe => BootTarget::IpxeScript { url: format!("http://192.0.2.1/{}/auto.ipxe", req.mac) },
///             _ => BootTarget::Tftp { server: "192.0.2.1".parse().unwrap(), file: "undionly.kpxe".into() },
///         };
///         Ok(BootDecision::Answer { network: None, boot: Some(boot) })
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let policy: Arc<dyn BootResponder> = Arc::new(Everyone);
/// let req = BootRequest { mac: "52:54:00:00:00:01".parse().unwrap(), arch: Some(0),
///     client: ClientKind::Ipxe, relay: None, circuit_id: None };
/// assert!(matches!(policy.decide(&req).await.unwrap(),
///     BootDecision::Answer { boot: Some(BootTarget::IpxeScript { .. }), .. }));
/// # });
/// ```
#[async_trait]
pub trait BootResponder: Send + Sync + Debug + 'static {
    /// Decides the answer for one request.
    async fn decide(&self, request: &BootRequest) -> Result<BootDecision>;
}
