//! DHCPv4 for booting machines, laid out by job as Tinkerbell's smee lays it out:
//!
//! - [`request`]: bytes in, a typed [`Inbound`] out (what the boot policy needs);
//! - [`reservation`]: the answers of reservation mode (addresses from each
//!   Hardware's `spec.interfaces[].dhcp`, RFC 2131's DISCOVER, REQUEST, INFORM);
//! - [`proxy`]: the answers of proxyDHCP mode (boot information only, beside an
//!   existing DHCP server, on ports 67 and 4011, as the PXE specification says);
//! - [`options`]: building the reply's bytes for a decided [`Answer`];
//! - [`server`]: the thin tokio driver that asks the `BootResponder` between the
//!   two; [`batch`] its batched socket calls; [`DhcpStats`] its counters;
//! - [`limit`]: per-MAC and per-relay rate limits, with capped tables;
//! - [`client`]: the one DHCP client, a PXE ROM's DORA exchange without I/O, that
//!   simulated machines, benchmarks and tests use.
//!
//! Relay agents (`giaddr`, option 82) are honoured in both modes. Everything but
//! the server's socket loop is pure code: a request and a
//! [`BootDecision`] in, a [`Verdict`] out.

pub mod batch;
pub mod client;
pub mod limit;
pub mod options;
pub mod proxy;
pub mod request;
pub mod reservation;
pub mod server;
mod stats;

pub use limit::{DhcpLimits, Rate};
pub use request::{Inbound, Malformed};
pub use server::DhcpServer;
pub use stats::DhcpStats;

use dhcproto::v4::MessageType;
use std::net::{Ipv4Addr, SocketAddrV4};
use tinker_core::boot::{BootDecision, BootTarget, IgnoreReason, NetworkConfig};

/// Replies shorter than this are padded: some PXE ROMs drop short BOOTP replies
/// (RFC 951's 300-byte minimum).
pub const MIN_REPLY_LEN: usize = 300;

/// What the server hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Addresses and boot information, from each Hardware's reservation.
    Reservation,
    /// Boot information only, beside another DHCP server (PXE proxyDHCP).
    Proxy,
}

/// Settings of the protocol engine.
#[derive(Debug, Clone)]
pub struct DhcpConfig {
    /// Reservation or proxy.
    pub mode: Mode,
    /// Our address on the boot network (option 54, `siaddr` default).
    pub server_ip: Ipv4Addr,
    /// The port clients listen on (68; tests may use another).
    pub client_port: u16,
    /// The port relay agents listen on (67).
    pub relay_port: u16,
}

impl DhcpConfig {
    /// Standard ports for `server_ip` in `mode`.
    pub fn new(mode: Mode, server_ip: Ipv4Addr) -> Self {
        DhcpConfig {
            mode,
            server_ip,
            client_port: 68,
            relay_port: 67,
        }
    }
}

/// The decided answer to a request, before any bytes are built.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer<'d> {
    /// An OFFER or ACK.
    Reply {
        /// OFFER or ACK.
        kind: MessageType,
        /// The address handed out (`yiaddr`; unspecified in proxy mode and for INFORM).
        yiaddr: Ipv4Addr,
        /// Network options (reservation mode).
        network: Option<&'d NetworkConfig>,
        /// Boot information, when the policy gave a target.
        boot: Option<&'d BootTarget>,
    },
    /// A NAK: the client asked for an address that is not its reservation.
    Nak,
}

/// Why a request gets no reply. Rendered to text only in logs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Skip {
    /// The boot responder said to ignore the client.
    Policy(IgnoreReason),
    /// proxyDHCP, and not a netboot client (no `PXEClient` or `HTTPClient`
    /// vendor class): the other DHCP server's business.
    NotNetbootClient,
    /// The mode does not answer this kind of request (proxyDHCP answers
    /// DISCOVER on 67 and REQUEST on 4011 only).
    NotForThisMode,
    /// Reservation mode, and the Hardware has no address for this MAC.
    NoReservation,
    /// Relayed from a subnet that is not the reservation's.
    ForeignSubnet,
    /// A REQUEST answering another server's OFFER.
    OtherServerChosen,
    /// A REQUEST with neither a requested address nor `ciaddr`.
    NoAddressRequested,
    /// A RELEASE: addresses are reservations, nothing to free.
    Release,
    /// A DECLINE: the client found its address in use (logged by the server).
    Decline,
    /// A message type a server never answers (OFFER, ACK, NAK from a client).
    NotAClientMessage,
    /// proxyDHCP, and the policy gave no boot target (netboot not allowed, or no
    /// boot file for the client).
    NoBootTarget,
    /// The reply could not be encoded.
    Unencodable,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Policy(reason) => write!(f, "boot responder: {reason}"),
            Skip::NotNetbootClient => f.write_str("not a PXE or HTTP-boot client"),
            Skip::NotForThisMode => {
                f.write_str("proxyDHCP answers DISCOVER on 67 and REQUEST on 4011 only")
            }
            Skip::NoReservation => f.write_str("no address reserved for this MAC"),
            Skip::ForeignSubnet => {
                f.write_str("relayed from a subnet that is not the reservation's")
            }
            Skip::OtherServerChosen => f.write_str("the client chose another server"),
            Skip::NoAddressRequested => {
                f.write_str("REQUEST with neither a requested address nor ciaddr")
            }
            Skip::Release => f.write_str("RELEASE (addresses are reservations; nothing to free)"),
            Skip::Decline => f.write_str("DECLINE (address conflict reported)"),
            Skip::NotAClientMessage => f.write_str("not a client message"),
            Skip::NoBootTarget => f.write_str("no boot target for this machine"),
            Skip::Unencodable => f.write_str("the reply could not be encoded"),
        }
    }
}

/// A reply to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Outbound {
    /// The encoded reply, at least [`MIN_REPLY_LEN`] bytes.
    pub bytes: Vec<u8>,
    /// Where to send it.
    pub dest: SocketAddrV4,
    /// Its DHCP type.
    pub kind: MessageType,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Send this.
    Reply(Outbound),
    /// Say nothing, for this reason (logged and counted).
    Ignore(Skip),
}

/// Decides the answer to `inbound` for the policy's `decision`, by mode.
pub fn decide<'d>(
    config: &DhcpConfig,
    inbound: &Inbound,
    decision: &'d BootDecision,
) -> Result<Answer<'d>, Skip> {
    let (network, boot) = match decision {
        BootDecision::Ignore { reason } => return Err(Skip::Policy(reason.clone())),
        BootDecision::Answer { network, boot } => (network.as_ref(), boot.as_ref()),
        // A decision this server does not know how to carry out: say nothing
        // rather than answer wrongly.
        _ => return Err(Skip::Unencodable),
    };
    match config.mode {
        Mode::Proxy => proxy::answer(inbound, boot),
        Mode::Reservation => reservation::answer(config, inbound, network, boot),
    }
}

/// Decides and builds the reply to `inbound` for `decision`.
pub fn reply(config: &DhcpConfig, inbound: &Inbound, decision: &BootDecision) -> Verdict {
    match decide(config, inbound, decision) {
        Ok(answer) => match options::build(config, inbound, &answer) {
            Some(out) => Verdict::Reply(out),
            None => Verdict::Ignore(Skip::Unencodable),
        },
        Err(skip) => Verdict::Ignore(skip),
    }
}
