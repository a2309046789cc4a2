//! Building a reply's bytes for a decided [`Answer`]: the BOOTP header, the
//! network options (RFC 2132), the boot options (file name, `siaddr`, PXE vendor
//! options, as smee's option builder sets them), the echoed relay information
//! (RFC 3046) and where the reply goes (RFC 2131 4.1). Small builders, each one
//! job.

use super::reservation::prefix_mask;
use super::{Answer, DhcpConfig, Inbound, MIN_REPLY_LEN, Outbound};
use dhcproto::Encodable;
use dhcproto::v4::{self, DhcpOption, MessageType, Opcode, OptionCode};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use tinker_core::boot::{BootTarget, ClientKind, NetworkConfig};

/// The longest boot file name or URL a reply carries (one option 67).
pub const MAX_BOOT_FILE_OPTION: usize = 255;

/// The NAK's message (option 56).
const NAK_MESSAGE: &str = "requested address is not the one reserved for this machine";

/// The encoded reply for `answer`; `None` when it cannot be encoded.
pub fn build(config: &DhcpConfig, inbound: &Inbound, answer: &Answer<'_>) -> Option<Outbound> {
    match *answer {
        Answer::Nak => nak(config, inbound),
        Answer::Reply {
            kind,
            yiaddr,
            network,
            boot,
        } => {
            let mut msg = header(config, inbound, kind, yiaddr);
            if let Some(net) = network {
                network_options(msg.opts_mut(), net, inbound.kind == MessageType::Inform);
            }
            if let Some(target) = boot
                && (inbound.netboot_client || inbound.request.client == ClientKind::Ipxe)
            {
                boot_options(&mut msg, inbound, target)?;
            }
            echo_relay_info(&inbound.msg, msg.opts_mut());
            encode(msg, destination(config, inbound, kind), kind)
        }
    }
}

/// The reply's header and its first options (type, server identifier).
fn header(
    config: &DhcpConfig,
    inbound: &Inbound,
    kind: MessageType,
    yiaddr: Ipv4Addr,
) -> v4::Message {
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
    msg
}

/// Mask, broadcast, router, DNS, NTP, host and domain name, and the lease times
/// (which an INFORM never gets: RFC 2131 3.4).
fn network_options(o: &mut v4::DhcpOptions, n: &NetworkConfig, inform: bool) {
    let mask = prefix_mask(n.prefix);
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
    if !inform {
        let lease = n.lease_seconds.max(60);
        o.insert(DhcpOption::AddressLeaseTime(lease));
        o.insert(DhcpOption::Renewal(lease / 2));
        o.insert(DhcpOption::Rebinding(lease / 8 * 7));
    }
}

/// The boot file (header `file` and option 67), `siaddr` for TFTP, the vendor
/// class a netboot client expects back, PXE discovery control, and the client's
/// GUID (option 97) echoed. `None` for a target kind this server cannot put in
/// a DHCP reply.
fn boot_options(msg: &mut v4::Message, inbound: &Inbound, target: &BootTarget) -> Option<()> {
    let name = match target {
        BootTarget::Tftp { server, file } => {
            msg.set_siaddr(*server);
            file
        }
        BootTarget::IpxeScript { url } | BootTarget::Http { url } => url,
        _ => return None,
    };
    // Option 67 is one option of at most 255 bytes; a longer name would need
    // RFC 3396's split options, which PXE ROMs do not read: refuse it (the
    // server counts it) rather than send a name the firmware would cut.
    if name.len() > MAX_BOOT_FILE_OPTION {
        return None;
    }
    // The header's `file` field holds 128 bytes, its last a NUL: a longer name
    // goes in option 67 only (the encoder would panic on it).
    if name.len() < 128 {
        msg.set_fname_str(name);
    }
    msg.opts_mut()
        .insert(DhcpOption::BootfileName(name.as_bytes().to_vec()));
    let o = msg.opts_mut();
    if inbound.netboot_client {
        let class: &[u8] = if matches!(target, BootTarget::Http { .. }) {
            b"HTTPClient"
        } else {
            b"PXEClient"
        };
        o.insert(DhcpOption::ClassIdentifier(class.to_vec()));
    }
    let pxe = inbound.netboot_client || matches!(target, BootTarget::Tftp { .. });
    if pxe && inbound.request.client != ClientKind::HttpBoot {
        // PXE discovery control: boot from the file name, skip boot server discovery.
        o.insert(DhcpOption::VendorExtensions(vec![6, 1, 8, 255]));
    }
    if let Some(guid) = inbound.msg.opts().get(OptionCode::ClientMachineIdentifier) {
        o.insert(guid.clone());
    }
    Some(())
}

/// A NAK: no address, the reason in option 56; to the relay, else broadcast
/// (RFC 2131 4.3.2).
fn nak(config: &DhcpConfig, inbound: &Inbound) -> Option<Outbound> {
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
    o.insert(DhcpOption::Message(NAK_MESSAGE.to_string()));
    echo_relay_info(req, o);
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

/// Encodes and pads to [`MIN_REPLY_LEN`].
fn encode(msg: v4::Message, dest: SocketAddrV4, kind: MessageType) -> Option<Outbound> {
    let mut bytes = msg.to_vec().ok()?;
    if bytes.len() < MIN_REPLY_LEN {
        bytes.resize(MIN_REPLY_LEN, 0);
    }
    Some(Outbound { bytes, dest, kind })
}
