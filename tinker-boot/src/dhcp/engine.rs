//! The DHCP protocol without I/O: decode and classify a packet ([`parse`]), then
//! build the answer for a boot decision ([`reply`]). RFC 2131 for the address
//! exchange, RFC 2132 options, RFC 3046 relay information, RFC 4578 client
//! architecture, the PXE 2.1 specification for proxyDHCP.

use dhcproto::v4::{self, DhcpOption, Flags, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use tinker_core::MacAddr;
use tinker_core::boot::{BootDecision, BootRequest, BootTarget, ClientKind, NetworkConfig};

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
    Ignore(&'static str),
}

/// Why a packet was dropped before it was understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

/// Decodes and classifies a packet. Anything that is not a well-formed Ethernet
/// BOOTREQUEST with a DHCP message type is [`Malformed`].
pub fn parse(bytes: &[u8], source: SocketAddr, on_proxy_port: bool) -> Result<Inbound, Malformed> {
    // dhcproto asserts option lengths with `debug_assert!` and subtracts from
    // lengths unchecked in places (found by our property test with a length-0
    // option 0x9b..0x9e), so a hostile packet can panic the decoder in a debug
    // build. Decoding is pure; contain it.
    let decoded = std::panic::catch_unwind(|| v4::Message::from_bytes(bytes))
        .map_err(|_| Malformed("undecodable: the decoder rejected a malformed option".into()))?;
    let msg = decoded.map_err(|e| Malformed(format!("undecodable: {e}")))?;
    if msg.opcode() != Opcode::BootRequest {
        return Err(Malformed("not a BOOTREQUEST".into()));
    }
    if msg.htype() != v4::HType::Eth || msg.hlen() != 6 || msg.chaddr().len() < 6 {
        return Err(Malformed("not an Ethernet client".into()));
    }
    let kind = msg
        .opts()
        .msg_type()
        .ok_or_else(|| Malformed("no DHCP message type (plain BOOTP)".into()))?;
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

/// Whether the boot responder must be asked (the rest is answered or dropped
/// without a store lookup).
pub fn wants_decision(config: &DhcpConfig, inbound: &Inbound) -> bool {
    match config.mode {
        Mode::Reservation => matches!(
            inbound.kind,
            MessageType::Discover | MessageType::Request | MessageType::Inform
        ),
        // proxyDHCP answers only netboot clients: DISCOVER on 67, REQUEST on 4011.
        Mode::Proxy => {
            inbound.netboot_client
                && ((inbound.kind == MessageType::Discover && !inbound.on_proxy_port)
                    || (inbound.kind == MessageType::Request && inbound.on_proxy_port))
        }
    }
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    u32::from(a) & mask == u32::from(b) & mask
}

/// Builds the answer to `inbound` for `decision`.
pub fn reply(config: &DhcpConfig, inbound: &Inbound, decision: &BootDecision) -> Verdict {
    let (network, boot) = match decision {
        BootDecision::Ignore { .. } => return Verdict::Ignore("boot responder: ignore"),
        BootDecision::Answer { network, boot } => (network.as_ref(), boot.as_ref()),
    };
    match config.mode {
        Mode::Proxy => proxy_reply(config, inbound, boot),
        Mode::Reservation => reservation_reply(config, inbound, network, boot),
    }
}

fn reservation_reply(
    config: &DhcpConfig,
    inbound: &Inbound,
    network: Option<&NetworkConfig>,
    boot: Option<&BootTarget>,
) -> Verdict {
    let Some(net) = network else {
        return Verdict::Ignore("no address reserved for this MAC");
    };
    let giaddr = inbound.msg.giaddr();
    if !giaddr.is_unspecified() && !same_subnet(giaddr, net.address, net.prefix) {
        return Verdict::Ignore("relayed from a subnet that is not the reservation's");
    }
    let ciaddr = inbound.msg.ciaddr();
    match inbound.kind {
        MessageType::Discover => build(
            config,
            inbound,
            MessageType::Offer,
            Some(net),
            boot,
            net.address,
        ),
        MessageType::Request => {
            let wanted = match (inbound.server_id, inbound.requested_ip) {
                // SELECTING: the client answers an OFFER, ours or another server's.
                (Some(sid), requested) => {
                    if sid != config.server_ip {
                        return Verdict::Ignore("the client chose another server");
                    }
                    requested.unwrap_or(ciaddr)
                }
                // INIT-REBOOT: the client asks to keep an address it remembers.
                (None, Some(requested)) => requested,
                // RENEWING (unicast) or REBINDING (broadcast): ciaddr is its address.
                (None, None) if !ciaddr.is_unspecified() => ciaddr,
                (None, None) => {
                    return Verdict::Ignore("REQUEST with neither a requested address nor ciaddr");
                }
            };
            if wanted == net.address {
                build(
                    config,
                    inbound,
                    MessageType::Ack,
                    Some(net),
                    boot,
                    net.address,
                )
            } else {
                nak(
                    config,
                    inbound,
                    "requested address is not the one reserved for this machine",
                )
            }
        }
        MessageType::Inform => build(
            config,
            inbound,
            MessageType::Ack,
            Some(net),
            boot,
            Ipv4Addr::UNSPECIFIED,
        ),
        MessageType::Release => {
            Verdict::Ignore("RELEASE (addresses are reservations; nothing to free)")
        }
        MessageType::Decline => Verdict::Ignore("DECLINE (address conflict reported)"),
        _ => Verdict::Ignore("not a client message"),
    }
}

fn proxy_reply(config: &DhcpConfig, inbound: &Inbound, boot: Option<&BootTarget>) -> Verdict {
    if boot.is_none() {
        return Verdict::Ignore("netboot not allowed for this machine");
    }
    match (inbound.kind, inbound.on_proxy_port) {
        (MessageType::Discover, false) => build(
            config,
            inbound,
            MessageType::Offer,
            None,
            boot,
            Ipv4Addr::UNSPECIFIED,
        ),
        (MessageType::Request, true) => build(
            config,
            inbound,
            MessageType::Ack,
            None,
            boot,
            Ipv4Addr::UNSPECIFIED,
        ),
        _ => Verdict::Ignore("proxyDHCP answers DISCOVER on 67 and REQUEST on 4011 only"),
    }
}

fn nak(config: &DhcpConfig, inbound: &Inbound, why: &str) -> Verdict {
    let req = &inbound.msg;
    let mut msg = v4::Message::new_with_id(
        req.xid(),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        req.giaddr(),
        &req.chaddr()[..6],
    );
    msg.set_opcode(Opcode::BootReply).set_flags(req.flags());
    let o = msg.opts_mut();
    o.insert(DhcpOption::MessageType(MessageType::Nak));
    o.insert(DhcpOption::ServerIdentifier(config.server_ip));
    o.insert(DhcpOption::Message(why.to_string()));
    echo_relay_info(req, o);
    // RFC 2131 4.3.2: a NAK goes to the relay, else it is broadcast.
    let dest = if req.giaddr().is_unspecified() {
        SocketAddrV4::new(Ipv4Addr::BROADCAST, config.client_port)
    } else {
        SocketAddrV4::new(req.giaddr(), config.relay_port)
    };
    encode(msg, dest, MessageType::Nak)
}

fn echo_relay_info(req: &v4::Message, o: &mut v4::DhcpOptions) {
    if let Some(info) = req.opts().get(OptionCode::RelayAgentInformation) {
        o.insert(info.clone());
    }
}

fn build(
    config: &DhcpConfig,
    inbound: &Inbound,
    kind: MessageType,
    net: Option<&NetworkConfig>,
    boot: Option<&BootTarget>,
    yiaddr: Ipv4Addr,
) -> Verdict {
    let req = &inbound.msg;
    let ciaddr = if kind == MessageType::Ack {
        req.ciaddr()
    } else {
        Ipv4Addr::UNSPECIFIED
    };
    let mut msg = v4::Message::new_with_id(
        req.xid(),
        ciaddr,
        yiaddr,
        config.server_ip,
        req.giaddr(),
        &req.chaddr()[..6],
    );
    msg.set_opcode(Opcode::BootReply).set_flags(req.flags());
    let o = msg.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ServerIdentifier(config.server_ip));
    if let Some(n) = net {
        let mask = if n.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(n.prefix.min(32)))
        };
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::from(mask)));
        o.insert(DhcpOption::BroadcastAddr(Ipv4Addr::from(
            u32::from(n.address) | !mask,
        )));
        if let Some(gw) = n.gateway {
            o.insert(DhcpOption::Router(vec![gw]));
        }
        if !n.dns.is_empty() {
            o.insert(DhcpOption::DomainNameServer(n.dns.clone()));
        }
        if !n.ntp.is_empty() {
            o.insert(DhcpOption::NtpServers(n.ntp.clone()));
        }
        if let Some(h) = &n.hostname {
            o.insert(DhcpOption::Hostname(h.clone()));
        }
        if let Some(d) = &n.domain {
            o.insert(DhcpOption::DomainName(d.clone()));
        }
        // An INFORM gets options, never a lease (RFC 2131 3.4).
        if inbound.kind != MessageType::Inform {
            let lease = n.lease_seconds.max(60);
            o.insert(DhcpOption::AddressLeaseTime(lease));
            o.insert(DhcpOption::Renewal(lease / 2));
            o.insert(DhcpOption::Rebinding(lease / 8 * 7));
        }
    }
    if inbound.netboot_client || inbound.request.client == ClientKind::Ipxe {
        let pxe = inbound.netboot_client || matches!(boot, Some(BootTarget::Tftp { .. }));
        if let Some(target) = boot {
            match target {
                BootTarget::Tftp { server, file } => {
                    msg.set_siaddr(*server);
                    msg.set_fname_str(file);
                    if let Some(name) = file.get(..file.len().min(127)) {
                        msg.opts_mut()
                            .insert(DhcpOption::BootfileName(name.as_bytes().to_vec()));
                    }
                }
                BootTarget::IpxeScript { url } | BootTarget::Http { url } => {
                    if url.len() < 128 {
                        msg.set_fname_str(url);
                    }
                    msg.opts_mut()
                        .insert(DhcpOption::BootfileName(url.as_bytes().to_vec()));
                }
            }
            let o = msg.opts_mut();
            let class: &[u8] = if matches!(target, BootTarget::Http { .. }) {
                b"HTTPClient"
            } else {
                b"PXEClient"
            };
            if inbound.netboot_client {
                o.insert(DhcpOption::ClassIdentifier(class.to_vec()));
            }
            if pxe && inbound.request.client != ClientKind::HttpBoot {
                // PXE discovery control: boot from the file name, skip boot server discovery.
                o.insert(DhcpOption::VendorExtensions(vec![6, 1, 8, 255]));
            }
            if let Some(guid) = req.opts().get(OptionCode::ClientMachineIdentifier) {
                o.insert(guid.clone());
            }
        }
    }
    echo_relay_info(req, msg.opts_mut());
    let dest = destination(config, inbound, kind);
    encode(msg, dest, kind)
}

/// RFC 2131 4.1: relayed replies go to the relay's server port; replies to a
/// client that has an address go to it; replies on the proxy port go back to the
/// sender; the rest is broadcast (without raw sockets a server cannot unicast to a
/// client that has no address yet).
fn destination(config: &DhcpConfig, inbound: &Inbound, kind: MessageType) -> SocketAddrV4 {
    let req = &inbound.msg;
    if !req.giaddr().is_unspecified() {
        return SocketAddrV4::new(req.giaddr(), config.relay_port);
    }
    if inbound.on_proxy_port
        && let SocketAddr::V4(src) = inbound.source
        && !src.ip().is_unspecified()
    {
        return src;
    }
    if !req.ciaddr().is_unspecified()
        && (kind == MessageType::Ack || inbound.kind == MessageType::Inform)
    {
        return SocketAddrV4::new(req.ciaddr(), config.client_port);
    }
    SocketAddrV4::new(Ipv4Addr::BROADCAST, config.client_port)
}

fn encode(msg: v4::Message, dest: SocketAddrV4, kind: MessageType) -> Verdict {
    match msg.to_vec() {
        Ok(mut bytes) => {
            if bytes.len() < MIN_REPLY_LEN {
                bytes.resize(MIN_REPLY_LEN, 0);
            }
            Verdict::Reply(Outbound { bytes, dest, kind })
        }
        Err(_) => Verdict::Ignore("the reply could not be encoded"),
    }
}

/// Builds a client request (for tests, simulations and the load generator).
pub fn client_request(
    kind: MessageType,
    xid: u32,
    mac: MacAddr,
    configure: impl FnOnce(&mut v4::Message),
) -> Vec<u8> {
    let mut msg = v4::Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac.octets(),
    );
    msg.set_flags(Flags::default());
    msg.opts_mut().insert(DhcpOption::MessageType(kind));
    configure(&mut msg);
    msg.to_vec().unwrap_or_default()
}

/// Decodes a reply (tests, simulations).
pub fn decode_reply(bytes: &[u8]) -> Option<v4::Message> {
    let msg = v4::Message::decode(&mut dhcproto::Decoder::new(bytes)).ok()?;
    (msg.opcode() == Opcode::BootReply).then_some(msg)
}
