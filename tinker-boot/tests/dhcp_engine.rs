//! The DHCP server minus its socket, against the default boot responder over a
//! store: every exchange RFC 2131 and PXE describe, and hostile input.

use dhcproto::v4::{self, DhcpOption, MessageType, OptionCode};
use proptest::prelude::*;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tinker_boot::dhcp::client::{self, ClientError, Dora, PxeClient, VendorClass};
use tinker_boot::dhcp::{DhcpConfig, DhcpServer, Mode, Outbound};
use tinker_boot::{BootConfig, StoreBootResponder};
use tinker_core::clock::{Clock, ManualClock};
use tinker_core::model::Hardware;
use tinker_core::{MacAddr, Precondition, WorkflowStore};
use tinker_store::MemoryStore;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

fn mac(n: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0x00, 0x00, 0x00, n])
}

async fn server(mode: Mode, allow_pxe: bool) -> (DhcpServer, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let mut hw = Hardware::new("m1", mac(1), Ipv4Addr::new(10, 77, 0, 10), "255.255.255.0");
    {
        let d = hw.spec.interfaces[0].dhcp.as_mut().unwrap();
        d.ip.as_mut().unwrap().gateway = Some("10.77.0.1".into());
        d.name_servers = vec!["10.77.0.1".into()];
        d.lease_time = Some(3600);
        d.domain_name = Some("lab.example".into());
    }
    hw.set_allow_pxe(allow_pxe);
    store.put(hw.into(), Precondition::Absent).await.unwrap();
    let responder = responder(store.clone());
    (
        DhcpServer::new(DhcpConfig::new(mode, SERVER), Arc::new(responder)),
        store,
    )
}

/// The default responder over `store`, serving from [`SERVER`].
fn responder(store: Arc<MemoryStore>) -> StoreBootResponder {
    StoreBootResponder::new(
        store,
        BootConfig {
            tftp_server: SERVER,
            http_base: "http://10.77.0.1:8080".into(),
            default_lease_seconds: 86400,
            record_events: true,
        },
    )
}

fn src() -> SocketAddr {
    "0.0.0.0:68".parse().unwrap()
}

/// A PXE ROM's `kind` message, as the one DHCP client builds it.
fn pxe(kind: MessageType, xid: u32, mac: MacAddr, arch: u16) -> Vec<u8> {
    client::encode(&PxeClient::new(mac, arch).message(kind, xid))
}

/// A bare `kind` message, changed by `edit`.
fn bare(kind: MessageType, xid: u32, mac: MacAddr, edit: impl FnOnce(&mut v4::Message)) -> Vec<u8> {
    let mut msg = client::message(kind, xid, mac);
    edit(&mut msg);
    client::encode(&msg)
}

fn opt(m: &v4::Message, code: OptionCode) -> Option<&DhcpOption> {
    m.opts().get(code)
}

fn file(m: &v4::Message) -> String {
    String::from_utf8_lossy(m.fname().unwrap_or_default())
        .trim_end_matches('\0')
        .to_string()
}

async fn exchange(s: &DhcpServer, bytes: Vec<u8>) -> Option<(Outbound, v4::Message)> {
    let out = s.handle(&bytes, src(), false).await?;
    let msg = client::decode(&out.bytes).expect("a BOOTREPLY");
    Some((out, msg))
}

#[tokio::test]
async fn pxe_rom_gets_address_and_ipxe_by_architecture() {
    let (s, store) = server(Mode::Reservation, true).await;
    for (arch, want) in [
        (0u16, "undionly.kpxe"),
        (7, "ipxe.efi"),
        (11, "snp-arm64.efi"),
    ] {
        let (out, offer) = exchange(&s, pxe(MessageType::Discover, 42, mac(1), arch))
            .await
            .unwrap();
        assert_eq!(out.kind, MessageType::Offer);
        assert!(out.bytes.len() >= 300, "padded to the BOOTP minimum");
        assert_eq!(out.dest, "255.255.255.255:68".parse().unwrap());
        assert_eq!(offer.xid(), 42);
        assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 77, 0, 10));
        assert_eq!(offer.siaddr(), SERVER);
        assert_eq!(file(&offer), want);
        assert_eq!(
            opt(&offer, OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(SERVER))
        );
        assert_eq!(
            opt(&offer, OptionCode::SubnetMask),
            Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
        );
        assert_eq!(
            opt(&offer, OptionCode::Router),
            Some(&DhcpOption::Router(vec![SERVER]))
        );
        assert_eq!(
            opt(&offer, OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(3600))
        );
        assert_eq!(
            opt(&offer, OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
        );
        assert_eq!(
            opt(&offer, OptionCode::VendorExtensions),
            Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
        );
        assert!(
            opt(&offer, OptionCode::ClientMachineIdentifier).is_some(),
            "option 97 echoed"
        );
        assert_eq!(
            opt(&offer, OptionCode::Hostname),
            Some(&DhcpOption::Hostname("m1".into()))
        );
    }
    // The same question again (a retransmitted DISCOVER) changes no decision.
    exchange(&s, pxe(MessageType::Discover, 43, mac(1), 11))
        .await
        .unwrap();
    // Each decision is written to the event log in the background, once.
    for _ in 0..100 {
        if store.events("default/m1", 10).await.unwrap().len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let events = store.events("default/m1", 10).await.unwrap();
    assert!(
        events.iter().any(|e| e.message().contains("undionly.kpxe")),
        "{events:?}"
    );
    assert_eq!(events.len(), 3, "one event per decision: {events:?}");
}

#[tokio::test]
async fn ipxe_gets_its_script_and_http_boot_a_url() {
    let (s, _) = server(Mode::Reservation, true).await;
    let req = client::encode(
        &PxeClient::new(mac(1), 7)
            .ipxe()
            .message(MessageType::Discover, 1),
    );
    let (_, offer) = exchange(&s, req).await.unwrap();
    assert_eq!(
        file(&offer),
        "http://10.77.0.1:8080/ipxe/52:54:00:00:00:01/auto.ipxe"
    );
    // On a HookOS network the answer names Smee's path, as Tinkerbell's does.
    let (_, store) = server(Mode::Reservation, true).await;
    let smee = DhcpServer::new(
        DhcpConfig::new(Mode::Reservation, SERVER),
        Arc::new(responder(store).with_smee_script_path(true)),
    );
    let req = client::encode(
        &PxeClient::new(mac(1), 7)
            .ipxe()
            .message(MessageType::Discover, 3),
    );
    let (_, offer) = exchange(&smee, req).await.unwrap();
    assert_eq!(
        file(&offer),
        "http://10.77.0.1:8080/ipxe/script/52:54:00:00:00:01/auto.ipxe"
    );
    let req = client::encode(
        &PxeClient::new(mac(1), 16)
            .with_class(VendorClass::Http)
            .message(MessageType::Discover, 2),
    );
    let (_, offer) = exchange(&s, req).await.unwrap();
    assert_eq!(file(&offer), "http://10.77.0.1:8080/ipxe/binary/ipxe.efi");
    assert_eq!(
        opt(&offer, OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
    );
}

#[tokio::test]
async fn request_ack_nak_renew_rebind_inform_per_rfc2131() {
    let (s, _) = server(Mode::Reservation, true).await;
    let ours = Ipv4Addr::new(10, 77, 0, 10);
    // SELECTING, our server id, the offered address: ACK with T1 and T2.
    let req = bare(MessageType::Request, 7, mac(1), |m| {
        m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(ours));
    });
    let (out, ack) = exchange(&s, req).await.unwrap();
    assert_eq!(out.kind, MessageType::Ack);
    assert_eq!(ack.yiaddr(), ours);
    assert_eq!(
        opt(&ack, OptionCode::Renewal),
        Some(&DhcpOption::Renewal(1800))
    );
    assert_eq!(
        opt(&ack, OptionCode::Rebinding),
        Some(&DhcpOption::Rebinding(3150))
    );
    // SELECTING another server: silence.
    let req = bare(MessageType::Request, 8, mac(1), |m| {
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 77, 0, 2)));
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(ours));
    });
    assert!(exchange(&s, req).await.is_none());
    // INIT-REBOOT with a stale address: NAK, broadcast.
    let req = bare(MessageType::Request, 9, mac(1), |m| {
        m.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 77, 0, 99)));
    });
    let (out, nak) = exchange(&s, req).await.unwrap();
    assert_eq!(out.kind, MessageType::Nak);
    assert_eq!(nak.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(out.dest, "255.255.255.255:68".parse().unwrap());
    // RENEWING: ciaddr set, unicast back to it.
    let req = bare(MessageType::Request, 10, mac(1), |m| {
        m.set_ciaddr(ours);
    });
    let (out, ack) = exchange(&s, req).await.unwrap();
    assert_eq!(
        (out.kind, out.dest),
        (MessageType::Ack, format!("{ours}:68").parse().unwrap())
    );
    assert_eq!(ack.ciaddr(), ours);
    // REBINDING with an address that is not ours: NAK.
    let req = bare(MessageType::Request, 11, mac(1), |m| {
        m.set_ciaddr(Ipv4Addr::new(10, 77, 0, 50));
    });
    assert_eq!(exchange(&s, req).await.unwrap().0.kind, MessageType::Nak);
    // INFORM: options, no lease.
    let req = bare(MessageType::Inform, 12, mac(1), |m| {
        m.set_ciaddr(ours);
    });
    let (out, ack) = exchange(&s, req).await.unwrap();
    assert_eq!(out.kind, MessageType::Ack);
    assert!(opt(&ack, OptionCode::AddressLeaseTime).is_none());
    assert!(opt(&ack, OptionCode::DomainNameServer).is_some());
    // RELEASE and DECLINE: counted, no answer.
    assert!(
        exchange(
            &s,
            bare(MessageType::Release, 13, mac(1), |m| {
                m.set_ciaddr(ours);
            })
        )
        .await
        .is_none()
    );
    assert!(
        exchange(&s, bare(MessageType::Decline, 14, mac(1), |_| {}))
            .await
            .is_none()
    );
    let stats = s.stats();
    assert_eq!(stats.releases.load(Ordering::Relaxed), 1);
    assert_eq!(stats.declines.load(Ordering::Relaxed), 1);
    assert_eq!(stats.naks.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn unknown_macs_and_pxe_not_allowed() {
    let (s, _) = server(Mode::Reservation, false).await;
    assert!(
        exchange(&s, pxe(MessageType::Discover, 1, mac(9), 0))
            .await
            .is_none()
    );
    assert_eq!(s.stats().unknown_mac.load(Ordering::Relaxed), 1);
    // allowPXE false: an address, but no boot file.
    let (_, offer) = exchange(&s, pxe(MessageType::Discover, 2, mac(1), 0))
        .await
        .unwrap();
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 77, 0, 10));
    assert_eq!(file(&offer), "");
}

#[tokio::test]
async fn relayed_requests_are_answered_to_the_relay_with_option_82() {
    let (s, _) = server(Mode::Reservation, true).await;
    let info = {
        let mut i = v4::relay::RelayAgentInformation::default();
        i.insert(v4::relay::RelayInfo::AgentCircuitId(
            b"rack7-port3".to_vec(),
        ));
        i
    };
    let req = client::encode(
        &PxeClient::new(mac(1), 0)
            .relayed(Ipv4Addr::new(10, 77, 0, 254))
            .with_circuit_id(b"rack7-port3".to_vec())
            .message(MessageType::Discover, 5),
    );
    let (out, offer) = exchange(&s, req).await.unwrap();
    assert_eq!(out.dest, "10.77.0.254:67".parse().unwrap());
    assert_eq!(offer.giaddr(), Ipv4Addr::new(10, 77, 0, 254));
    assert_eq!(
        opt(&offer, OptionCode::RelayAgentInformation),
        Some(&DhcpOption::RelayAgentInformation(info))
    );
    // A relay on another subnet is not the reservation's: no answer.
    let req = bare(MessageType::Discover, 6, mac(1), |m| {
        m.set_giaddr(Ipv4Addr::new(10, 99, 0, 1));
    });
    assert!(exchange(&s, req).await.is_none());
}

#[tokio::test]
async fn proxy_dhcp_gives_boot_information_only() {
    let (s, _) = server(Mode::Proxy, true).await;
    let (out, offer) = exchange(&s, pxe(MessageType::Discover, 1, mac(1), 7))
        .await
        .unwrap();
    assert_eq!(out.kind, MessageType::Offer);
    assert_eq!(
        offer.yiaddr(),
        Ipv4Addr::UNSPECIFIED,
        "proxyDHCP hands out no address"
    );
    assert!(opt(&offer, OptionCode::AddressLeaseTime).is_none());
    assert_eq!(file(&offer), "ipxe.efi");
    assert_eq!(
        opt(&offer, OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    // The boot server request on 4011 is answered to its sender.
    let mut req = PxeClient::new(mac(1), 7).message(MessageType::Request, 2);
    req.set_ciaddr(Ipv4Addr::new(192, 168, 1, 50));
    let req = client::encode(&req);
    let from: SocketAddr = "192.168.1.50:4011".parse().unwrap();
    let out = s.handle(&req, from, true).await.unwrap();
    assert_eq!(
        (out.kind, std::net::SocketAddr::V4(out.dest)),
        (MessageType::Ack, from)
    );
    // Plain DHCP clients are the other server's business.
    assert!(
        exchange(&s, bare(MessageType::Discover, 3, mac(1), |_| {}))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn malformed_packets_are_dropped_and_counted() {
    let (s, _) = server(Mode::Reservation, true).await;
    let mut reply_shaped = pxe(MessageType::Discover, 1, mac(1), 0);
    reply_shaped[0] = 2; // BOOTREPLY
    for bad in [vec![], vec![1; 10], vec![0xff; 600], reply_shaped] {
        assert!(s.handle(&bad, src(), false).await.is_none());
    }
    assert_eq!(s.stats().malformed.load(Ordering::Relaxed), 4);
}

#[tokio::test]
async fn the_responder_stamps_its_events_with_the_injected_clock() {
    use tinker_core::BootResponder;
    use tinker_core::boot::{BootRequest, ClientKind};
    let store = Arc::new(MemoryStore::new());
    let hw = Hardware::new("m1", mac(1), Ipv4Addr::new(10, 77, 0, 10), "255.255.255.0");
    store.put(hw.into(), Precondition::Absent).await.unwrap();
    let clock = Arc::new(ManualClock::new(t0()));
    let responder = responder(store.clone()).with_clock(clock.clone());
    let req = BootRequest {
        mac: mac(1),
        arch: Some(0),
        client: ClientKind::PxeRom,
        relay: None,
        circuit_id: None,
    };
    responder.decide(&req).await.unwrap();
    for _ in 0..100 {
        let events = store.events("default/m1", 10).await.unwrap();
        if let Some(e) = events.first() {
            assert_eq!(e.at, t0(), "the event's time is the injected clock's");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no event recorded");
}

/// A client that rotates its architecture option on every packet (or makes up
/// a new one each time) gets its answers, but does not get a store write per
/// packet: decisions seen within the window are not recorded again, and at
/// most a few per window are. A repeated decision is recorded again once the
/// window has passed.
#[tokio::test]
async fn a_client_rotating_its_architecture_is_not_a_write_per_packet() {
    use tinker_boot::{BOOT_EVENT_WINDOW, MAX_BOOT_EVENTS_PER_WINDOW};
    use tinker_core::BootResponder;
    use tinker_core::boot::{BootRequest, ClientKind};
    let store = Arc::new(MemoryStore::new());
    let mut hw = Hardware::new("m1", mac(1), Ipv4Addr::new(10, 77, 0, 10), "255.255.255.0");
    hw.set_allow_pxe(true);
    store.put(hw.into(), Precondition::Absent).await.unwrap();
    let clock = Arc::new(ManualClock::new(t0()));
    let responder = responder(store.clone()).with_clock(clock.clone());
    let ask = |arch: u16| BootRequest {
        mac: mac(1),
        arch: Some(arch),
        client: ClientKind::PxeRom,
        relay: None,
        circuit_id: None,
    };
    let limit = MAX_BOOT_EVENTS_PER_WINDOW as usize;
    let settled = |want: usize| {
        let store = store.clone();
        async move {
            // The responder writes in the background: wait for `want` events,
            // then give any extra write the chance to land.
            for _ in 0..200 {
                if store.events("default/m1", 1000).await.unwrap().len() >= want {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            store.events("default/m1", 1000).await.unwrap()
        }
    };
    // Two architectures in turn, 100 packets: two decisions, two writes.
    for i in 0..100u16 {
        responder
            .decide(&ask([0, 7][usize::from(i % 2)]))
            .await
            .unwrap();
    }
    assert_eq!(settled(2).await.len(), 2);
    // Every other architecture in turn (each a decision of its own text), 300
    // packets: no more than the limit per window.
    let others = [1u16, 2, 3, 4, 5, 6, 8, 9, 10, 11, 15, 16, 18, 19, 20, 41];
    for i in 0..300 {
        responder
            .decide(&ask(others[i % others.len()]))
            .await
            .unwrap();
    }
    assert_eq!(settled(limit).await.len(), limit);
    // After the window, a known decision is recorded again (once).
    clock.advance(BOOT_EVENT_WINDOW);
    for _ in 0..10 {
        responder.decide(&ask(0)).await.unwrap();
    }
    assert_eq!(settled(limit + 1).await.len(), limit + 1);
}

#[test]
fn every_silence_has_a_typed_reason() {
    use tinker_boot::dhcp::{self, Skip, request};
    use tinker_core::boot::{BootDecision, BootTarget, IgnoreReason, NetworkConfig};
    let net = NetworkConfig {
        address: Ipv4Addr::new(10, 77, 0, 10),
        prefix: 24,
        gateway: None,
        dns: vec![],
        ntp: vec![],
        hostname: None,
        domain: None,
        lease_seconds: 3600,
    };
    let boot = BootTarget::Tftp {
        server: SERVER,
        file: "undionly.kpxe".into(),
    };
    let answer = BootDecision::Answer {
        network: Some(net),
        boot: Some(boot.clone()),
    };
    let reservation = DhcpConfig::new(Mode::Reservation, SERVER);
    let proxy = DhcpConfig::new(Mode::Proxy, SERVER);
    let parse =
        |bytes: Vec<u8>, on_proxy_port| request::parse(&bytes, src(), on_proxy_port).unwrap();
    let skip = |config: &DhcpConfig, bytes: Vec<u8>, on_proxy_port, decision: &BootDecision| {
        let inbound = parse(bytes, on_proxy_port);
        request::screen(config, &inbound)
            .and_then(|()| dhcp::decide(config, &inbound, decision).map(|_| ()))
            .unwrap_err()
    };
    let discover = || pxe(MessageType::Discover, 1, mac(1), 0);
    assert_eq!(
        skip(
            &reservation,
            discover(),
            false,
            &BootDecision::Ignore {
                reason: IgnoreReason::UnknownMac
            }
        ),
        Skip::Policy(IgnoreReason::UnknownMac)
    );
    assert_eq!(
        skip(
            &reservation,
            discover(),
            false,
            &BootDecision::Answer {
                network: None,
                boot: Some(boot.clone())
            }
        ),
        Skip::NoReservation
    );
    let relayed = client::encode(
        &PxeClient::new(mac(1), 0)
            .relayed(Ipv4Addr::new(10, 99, 0, 1))
            .message(MessageType::Discover, 2),
    );
    assert_eq!(
        skip(&reservation, relayed, false, &answer),
        Skip::ForeignSubnet
    );
    let elsewhere = bare(MessageType::Request, 3, mac(1), |m| {
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 77, 0, 2)));
    });
    assert_eq!(
        skip(&reservation, elsewhere, false, &answer),
        Skip::OtherServerChosen
    );
    let vague = bare(MessageType::Request, 4, mac(1), |_| {});
    assert_eq!(
        skip(&reservation, vague, false, &answer),
        Skip::NoAddressRequested
    );
    let release = bare(MessageType::Release, 5, mac(1), |_| {});
    assert_eq!(skip(&reservation, release, false, &answer), Skip::Release);
    let plain = bare(MessageType::Discover, 6, mac(1), |_| {});
    assert_eq!(skip(&proxy, plain, false, &answer), Skip::NotNetbootClient);
    assert_eq!(
        skip(&proxy, discover(), true, &answer),
        Skip::NotForThisMode
    );
    assert_eq!(
        skip(
            &proxy,
            discover(),
            false,
            &BootDecision::Answer {
                network: None,
                boot: None
            }
        ),
        Skip::NoBootTarget
    );
    // And a decided answer is a value before it is bytes.
    let inbound = parse(discover(), false);
    assert_eq!(
        dhcp::decide(&reservation, &inbound, &answer),
        Ok(dhcp::Answer::Reply {
            kind: MessageType::Offer,
            yiaddr: Ipv4Addr::new(10, 77, 0, 10),
            network: match &answer {
                BootDecision::Answer { network, .. } => network.as_ref(),
                _ => None,
            },
            boot: Some(&boot),
        })
    );
}

/// The server itself as the client's link: no sockets, replies queued.
struct InMemory<'a> {
    server: &'a DhcpServer,
    replies: std::collections::VecDeque<Vec<u8>>,
    /// Sends to drop before the server hears one, as a lossy network would.
    lose: usize,
    sent: usize,
}

#[async_trait::async_trait]
impl client::Link for InMemory<'_> {
    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.sent += 1;
        if self.lose > 0 {
            self.lose -= 1;
            return Ok(());
        }
        if let Some(out) = self.server.handle(bytes, src(), false).await {
            self.replies.push_back(out.bytes);
        }
        Ok(())
    }

    async fn recv(&mut self) -> std::io::Result<Vec<u8>> {
        match self.replies.pop_front() {
            Some(r) => Ok(r),
            None => std::future::pending().await,
        }
    }
}

fn t0() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_800_000_000).unwrap()
}

#[tokio::test]
async fn the_one_client_runs_a_pxe_dora_against_the_server() {
    let (s, _) = server(Mode::Reservation, true).await;
    let clock = ManualClock::new(t0());
    let mut link = InMemory {
        server: &s,
        replies: Default::default(),
        lose: 0,
        sent: 0,
    };
    let mut dora = Dora::new(
        PxeClient::new(mac(1), 0).relayed(Ipv4Addr::new(10, 77, 0, 254)),
        77,
    );
    let ack = client::run(&mut dora, &mut link, &clock).await.unwrap();
    assert_eq!(ack.kind, MessageType::Ack);
    assert_eq!(ack.xid, 77);
    assert_eq!(ack.address, Ipv4Addr::new(10, 77, 0, 10));
    assert_eq!(ack.server_id, Some(SERVER));
    assert_eq!(ack.next_server, SERVER);
    assert_eq!(ack.boot_file.as_deref(), Some("undionly.kpxe"));
    assert_eq!(ack.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
    assert_eq!(ack.router, Some(SERVER));
    assert_eq!(ack.dns, vec![SERVER]);
    assert_eq!(ack.lease_seconds, Some(3600));
    assert_eq!(ack.hostname.as_deref(), Some("m1"));
    assert_eq!(ack.vendor_class.as_deref(), Some(&b"PXEClient"[..]));
    assert_eq!((link.sent, dora.retransmissions()), (2, 0));
    assert_eq!(dora.outcome().unwrap().unwrap(), &ack);
    assert_eq!(s.stats().offers.load(Ordering::Relaxed), 1);
    assert_eq!(s.stats().acks.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn the_client_retransmits_on_the_pxe_schedule_then_gives_up() {
    let (s, _) = server(Mode::Reservation, true).await;
    // Two DISCOVERs lost: the third, sent after about 4 + 8 s, is answered.
    let clock = std::sync::Arc::new(ManualClock::new(t0()));
    let driver = {
        let (s, clock) = (s.clone(), clock.clone());
        tokio::spawn(async move {
            let mut link = InMemory {
                server: &s,
                replies: Default::default(),
                lose: 2,
                sent: 0,
            };
            let mut dora = Dora::new(PxeClient::new(mac(1), 7), 5);
            let ack = client::run(&mut dora, &mut link, clock.as_ref()).await;
            (ack, dora.retransmissions(), link.sent)
        })
    };
    while !driver.is_finished() {
        tokio::task::yield_now().await;
        clock.advance(std::time::Duration::from_millis(500));
    }
    let (ack, retransmissions, sent) = driver.await.unwrap();
    assert_eq!(ack.unwrap().boot_file.as_deref(), Some("ipxe.efi"));
    assert_eq!((retransmissions, sent), (2, 4));
    let waited = clock.now().duration_since(t0()).as_secs_f64();
    assert!((10.0..=16.0).contains(&waited), "answered after {waited} s");

    // Nobody answers: four DISCOVERs, then a typed NoAnswer, sans I/O.
    let mut dora = Dora::new(PxeClient::new(mac(9), 0), 6);
    let mut now = t0();
    let mut sent = 0;
    while dora.outcome().is_none() {
        if dora.poll_transmit(now).is_some() {
            sent += 1;
        }
        now = dora.poll_timeout().unwrap();
        dora.handle_timeout(now);
    }
    let waited = now.duration_since(t0()).as_secs_f64();
    assert!((56.0..=64.0).contains(&waited), "gave up after {waited} s");
    assert_eq!(sent, 4);
    assert!(matches!(
        dora.outcome(),
        Some(Err(ClientError::NoAnswer {
            stage: MessageType::Discover,
            tries: 4
        }))
    ));
}

#[tokio::test]
async fn the_client_reads_a_nak_and_ignores_other_transactions() {
    let (s, _) = server(Mode::Reservation, true).await;
    let now = t0();
    let mut dora = Dora::new(PxeClient::new(mac(1), 0), 8);
    let discover = dora.poll_transmit(now).unwrap();
    let offer = s.handle(&discover, src(), false).await.unwrap().bytes;
    // Another transaction's reply is not ours.
    let mut other = client::decode(&offer).unwrap();
    other.set_xid(9);
    assert!(!dora.handle_datagram(&client::encode(&other), now));
    // An OFFER of an address that is not the reservation: the server NAKs the REQUEST.
    let mut wrong = client::decode(&offer).unwrap();
    wrong.set_yiaddr(Ipv4Addr::new(10, 77, 0, 99));
    assert!(dora.handle_datagram(&client::encode(&wrong), now));
    let request = dora.poll_transmit(now).unwrap();
    let nak = s.handle(&request, src(), false).await.unwrap();
    assert_eq!(nak.kind, MessageType::Nak);
    assert!(dora.handle_datagram(&nak.bytes, now));
    match dora.outcome() {
        Some(Err(ClientError::Refused { message: Some(m) })) => {
            assert!(m.contains("reserved"), "{m}")
        }
        other => panic!("a NAK is a refusal: {other:?}"),
    }
    assert_eq!(dora.poll_timeout(), None, "the exchange ended");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..700)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let (s, _) = server(Mode::Reservation, true).await;
            let _ = s.handle(&bytes, src(), false).await;
            let _ = s.handle(&bytes, src(), true).await;
        });
    }

    #[test]
    fn mutated_requests_never_panic(flips in prop::collection::vec((0usize..400, any::<u8>()), 1..20), proxy in any::<bool>()) {
        let mut bytes = pxe(MessageType::Discover, 9, mac(1), 7);
        for (at, v) in flips {
            if at < bytes.len() { bytes[at] = v; }
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let (s, _) = server(if proxy { Mode::Proxy } else { Mode::Reservation }, true).await;
            if let Some(out) = s.handle(&bytes, src(), proxy).await {
                assert!(out.bytes.len() >= 300);
            }
        });
    }
}
