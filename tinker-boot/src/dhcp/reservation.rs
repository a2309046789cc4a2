//! Reservation mode's answers: each Hardware's interface reserves one address
//! for its MAC; DISCOVER gets an OFFER of it, REQUEST an ACK (or a NAK when the
//! client asks for another address), INFORM its options (RFC 2131 3.1 to 3.4,
//! 4.3). Pure: the decision only, [`options`](super::options) builds the bytes.

use super::{Answer, DhcpConfig, Inbound, Skip};
use dhcproto::v4::MessageType;
use std::net::Ipv4Addr;
use tinker_core::boot::{BootTarget, NetworkConfig};

/// The answer to `inbound`, given the machine's reservation and boot target.
pub fn answer<'d>(
    config: &DhcpConfig,
    inbound: &Inbound,
    network: Option<&'d NetworkConfig>,
    boot: Option<&'d BootTarget>,
) -> Result<Answer<'d>, Skip> {
    let net = network.ok_or(Skip::NoReservation)?;
    let giaddr = inbound.msg.giaddr();
    if !giaddr.is_unspecified() && !same_subnet(giaddr, net.address, net.prefix) {
        return Err(Skip::ForeignSubnet);
    }
    let reply = |kind, yiaddr| Answer::Reply {
        kind,
        yiaddr,
        network: Some(net),
        boot,
    };
    match inbound.kind {
        MessageType::Discover => Ok(reply(MessageType::Offer, net.address)),
        MessageType::Request => {
            if requested_address(config, inbound)? == net.address {
                Ok(reply(MessageType::Ack, net.address))
            } else {
                Ok(Answer::Nak)
            }
        }
        MessageType::Inform => Ok(reply(MessageType::Ack, Ipv4Addr::UNSPECIFIED)),
        MessageType::Release => Err(Skip::Release),
        MessageType::Decline => Err(Skip::Decline),
        _ => Err(Skip::NotAClientMessage),
    }
}

/// The address a REQUEST asks for, by the client's state (RFC 2131 4.3.2).
fn requested_address(config: &DhcpConfig, inbound: &Inbound) -> Result<Ipv4Addr, Skip> {
    let ciaddr = inbound.msg.ciaddr();
    match (inbound.server_id, inbound.requested_ip) {
        // SELECTING: the client answers an OFFER, ours or another server's.
        (Some(sid), _) if sid != config.server_ip => Err(Skip::OtherServerChosen),
        (Some(_), requested) => Ok(requested.unwrap_or(ciaddr)),
        // INIT-REBOOT: the client asks to keep an address it remembers.
        (None, Some(requested)) => Ok(requested),
        // RENEWING (unicast) or REBINDING (broadcast): ciaddr is its address.
        (None, None) if !ciaddr.is_unspecified() => Ok(ciaddr),
        (None, None) => Err(Skip::NoAddressRequested),
    }
}

/// The network mask of a prefix length.
pub fn prefix_mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    let mask = prefix_mask(prefix);
    u32::from(a) & mask == u32::from(b) & mask
}
