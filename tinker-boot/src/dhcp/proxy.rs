//! proxyDHCP mode's answers (PXE 2.1, as smee's proxy handler gives them): beside
//! a DHCP server that hands out the addresses, answer a netboot client's
//! DISCOVER on port 67 with an OFFER that carries only boot information, and its
//! boot-server REQUEST on port 4011 with an ACK. Pure: the decision only.

use super::{Answer, Inbound, Skip};
use dhcproto::v4::MessageType;
use std::net::Ipv4Addr;
use tinker_core::boot::BootTarget;

/// The answer to `inbound`, given the machine's boot target.
pub fn answer<'d>(inbound: &Inbound, boot: Option<&'d BootTarget>) -> Result<Answer<'d>, Skip> {
    let boot = boot.ok_or(Skip::NoBootTarget)?;
    let kind = match (inbound.kind, inbound.on_proxy_port) {
        (MessageType::Discover, false) => MessageType::Offer,
        (MessageType::Request, true) => MessageType::Ack,
        _ => return Err(Skip::NotForThisMode),
    };
    Ok(Answer::Reply {
        kind,
        yiaddr: Ipv4Addr::UNSPECIFIED,
        network: None,
        boot: Some(boot),
    })
}
