//! Decoding a request: bytes in, a typed [`Inbound`] out, with what the boot
//! policy needs to know (RFC 2131, RFC 2132 options, RFC 3046 relay information,
//! RFC 4578 client architecture, PXE and iPXE client classes).

use super::{DhcpConfig, Mode, Skip};
use dhcproto::Decodable;
use dhcproto::v4::{self, DhcpOption, MessageType, Opcode, OptionCode};
use std::net::{Ipv4Addr, SocketAddr};
use tinker_core::MacAddr;
use tinker_core::boot::{BootRequest, ClientKind};

/// A decoded request, with what the boot policy needs to know.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The message.
    pub msg: v4::Message,
    /// Its DHCP type.
    pub kind: MessageType,
    /// What the boot responder is asked about.
    pub request: BootRequest,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Vendor class (option 60) said `PXEClient` or `HTTPClient`.
    pub netboot_client: bool,
    /// Where it came from.
    pub source: SocketAddr,
    /// It arrived on the proxyDHCP port 4011.
    pub on_proxy_port: bool,
}

/// Why a packet was dropped before it was understood.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformed {
    /// The decoder rejected it (its words).
    Undecodable(String),
    /// A BOOTREPLY, not a BOOTREQUEST.
    NotARequest,
    /// Not an Ethernet client (hardware type or address length).
    NotEthernet,
    /// No DHCP message type: plain BOOTP.
    NoMessageType,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Malformed::Undecodable(why) => write!(f, "undecodable: {why}"),
            Malformed::NotARequest => f.write_str("not a BOOTREQUEST"),
            Malformed::NotEthernet => f.write_str("not an Ethernet client"),
            Malformed::NoMessageType => f.write_str("no DHCP message type (plain BOOTP)"),
        }
    }
}

/// Decodes and classifies a packet. Anything that is not a well-formed Ethernet
/// BOOTREQUEST with a DHCP message type is [`Malformed`].
pub fn parse(bytes: &[u8], source: SocketAddr, on_proxy_port: bool) -> Result<Inbound, Malformed> {
    // dhcproto asserts option lengths with `debug_assert!` and subtracts from
    // lengths unchecked in places (found by our property test with a length-0
    // option 0x9b..0x9e), so a hostile packet can panic the decoder in a debug
    // build. Decoding is pure; contain it.
    let decoded = std::panic::catch_unwind(|| v4::Message::from_bytes(bytes))
        .map_err(|_| Malformed::Undecodable("the decoder rejected a malformed option".into()))?;
    let msg = decoded.map_err(|e| Malformed::Undecodable(e.to_string()))?;
    if msg.opcode() != Opcode::BootRequest {
        return Err(Malformed::NotARequest);
    }
    if msg.htype() != v4::HType::Eth || msg.hlen() != 6 || msg.chaddr().len() < 6 {
        return Err(Malformed::NotEthernet);
    }
    let kind = msg.opts().msg_type().ok_or(Malformed::NoMessageType)?;
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&msg.chaddr()[..6]);
    let opts = msg.opts();
    let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(u16::from(*a)),
        _ => None,
    };
    let class = match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(c)) => c.as_slice(),
        _ => &[],
    };
    let user_class = match opts.get(OptionCode::UserClass) {
        Some(DhcpOption::UserClass(c)) => c.as_slice(),
        _ => &[],
    };
    // iPXE says so in its user class (plain bytes `iPXE`, or `Tinkerbell` from
    // Tinkerbell's build), or by sending its encapsulated options (175).
    let runs_ipxe = user_class == b"iPXE"
        || user_class == b"Tinkerbell"
        || opts.get(OptionCode::from(175u8)).is_some();
    let client = if runs_ipxe {
        ClientKind::Ipxe
    } else if class.starts_with(b"HTTPClient") {
        ClientKind::HttpBoot
    } else if class.starts_with(b"PXEClient") {
        ClientKind::PxeRom
    } else {
        ClientKind::Plain
    };
    let circuit_id = match opts.get(OptionCode::RelayAgentInformation) {
        Some(DhcpOption::RelayAgentInformation(info)) => {
            match info.get(v4::relay::RelayCode::AgentCircuitId) {
                Some(v4::relay::RelayInfo::AgentCircuitId(id)) => Some(id.clone()),
                _ => None,
            }
        }
        _ => None,
    };
    let requested_ip = match opts.get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    };
    let server_id = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    let giaddr = msg.giaddr();
    Ok(Inbound {
        request: BootRequest {
            mac: MacAddr(mac),
            arch,
            client,
            relay: (!giaddr.is_unspecified()).then_some(giaddr),
            circuit_id,
        },
        netboot_client: class.starts_with(b"PXEClient") || class.starts_with(b"HTTPClient"),
        kind,
        requested_ip,
        server_id,
        source,
        on_proxy_port,
        msg,
    })
}

/// Whether the boot responder must be asked: `Ok` for a request this mode
/// answers, else why not (the rest is dropped without a store lookup).
pub fn screen(config: &DhcpConfig, inbound: &Inbound) -> Result<(), Skip> {
    match config.mode {
        Mode::Reservation => match inbound.kind {
            MessageType::Discover | MessageType::Request | MessageType::Inform => Ok(()),
            MessageType::Release => Err(Skip::Release),
            MessageType::Decline => Err(Skip::Decline),
            _ => Err(Skip::NotAClientMessage),
        },
        // proxyDHCP answers only netboot clients: DISCOVER on 67, REQUEST on 4011.
        Mode::Proxy if !inbound.netboot_client => Err(Skip::NotNetbootClient),
        Mode::Proxy => match (inbound.kind, inbound.on_proxy_port) {
            (MessageType::Discover, false) | (MessageType::Request, true) => Ok(()),
            _ => Err(Skip::NotForThisMode),
        },
    }
}
