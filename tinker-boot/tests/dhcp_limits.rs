//! The DHCP server under floods: per-MAC and per-relay rate limits on a
//! simulated clock, a flood of made-up MACs that grows nothing without bound,
//! the same over loopback with the drops on `/metrics`, and a stored boot file
//! name too long for a DHCP reply.

use dhcproto::v4::{DhcpOption, MessageType, OptionCode};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tinker_boot::dhcp::client::{self, PxeClient};
use tinker_boot::dhcp::{DhcpConfig, DhcpLimits, DhcpServer, Mode, Rate};
use tinker_boot::http::{HttpConfig, HttpServer};
use tinker_boot::{BootConfig, StoreBootResponder};
use tinker_core::clock::ManualClock;
use tinker_core::model::{Hardware, Ipxe};
use tinker_core::{MacAddr, Precondition, WorkflowStore};
use tinker_store::MemoryStore;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const KNOWN: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        jiff::Timestamp::from_second(1_800_000_000).unwrap(),
    ))
}

async fn server(limits: DhcpLimits, clock: Arc<ManualClock>, binary: Option<String>) -> DhcpServer {
    let store = Arc::new(MemoryStore::new());
    let mut hw = Hardware::new("m1", KNOWN, Ipv4Addr::new(10, 77, 0, 10), "255.255.255.0");
    hw.set_allow_pxe(true);
    if let Some(b) = binary {
        hw.spec.interfaces[0].netboot.as_mut().unwrap().ipxe = Some(Ipxe {
            binary: Some(b),
            ..Ipxe::default()
        });
    }
    store.put(hw.into(), Precondition::Absent).await.unwrap();
    let responder = StoreBootResponder::new(
        store,
        BootConfig {
            tftp_server: SERVER,
            http_base: "http://10.77.0.1:8080".into(),
            default_lease_seconds: 3600,
            record_events: false,
        },
    );
    DhcpServer::new(
        DhcpConfig::new(Mode::Reservation, SERVER),
        Arc::new(responder),
    )
    .with_limits(limits)
    .with_clock(clock)
}

fn limits(mac: (f64, f64), relay: (f64, f64), macs: usize) -> DhcpLimits {
    let mut l = DhcpLimits::new();
    l.per_mac = Rate {
        burst: mac.0,
        per_second: mac.1,
    };
    l.per_relay = Rate {
        burst: relay.0,
        per_second: relay.1,
    };
    l.max_tracked_macs = macs;
    l
}

fn discover(mac: MacAddr, xid: u32, giaddr: Option<Ipv4Addr>) -> Vec<u8> {
    let mut m = PxeClient::new(mac, 0).message(MessageType::Discover, xid);
    if let Some(g) = giaddr {
        m.set_giaddr(g);
    }
    client::encode(&m)
}

fn made_up(i: u32) -> MacAddr {
    let b = i.to_be_bytes();
    MacAddr([0x02, 0xee, b[0], b[1], b[2], b[3]])
}

fn src() -> SocketAddr {
    "0.0.0.0:68".parse().unwrap()
}

#[tokio::test]
async fn a_mac_over_its_rate_is_dropped_and_counted() {
    let clock = clock();
    let s = server(limits((4.0, 1.0), (1e6, 1e6), 1000), clock.clone(), None).await;
    let mut answered = 0;
    for xid in 0..10 {
        if s.handle(&discover(KNOWN, xid, None), src(), false)
            .await
            .is_some()
        {
            answered += 1;
        }
    }
    assert_eq!(answered, 4);
    assert_eq!(s.stats().rate_limited_mac.load(Relaxed), 6);
    clock.advance(Duration::from_secs(1));
    assert!(
        s.handle(&discover(KNOWN, 11, None), src(), false)
            .await
            .is_some()
    );
    assert!(
        s.handle(&discover(KNOWN, 12, None), src(), false)
            .await
            .is_none()
    );
}

/// 20,000 DISCOVERs from made-up MACs through one relay: the relay's rate
/// bounds what reaches the store, the MAC table stays under its cap (counted
/// evictions), and a real machine on another segment is still answered.
#[tokio::test]
async fn a_flood_of_made_up_macs_grows_nothing_and_is_limited_per_relay() {
    let clock = clock();
    let s = server(
        limits((16.0, 2.0), (500.0, 100.0), 1000),
        clock.clone(),
        None,
    )
    .await;
    let flood = Some(Ipv4Addr::new(10, 1, 0, 1));
    for i in 0..20_000 {
        let _ = s
            .handle(&discover(made_up(i), i, flood), src(), false)
            .await;
        assert!(s.tracked().0 <= 1000, "{:?}", s.tracked());
    }
    let stats = s.stats();
    assert_eq!(
        stats.unknown_mac.load(Relaxed),
        500,
        "only the relay's burst reached the store"
    );
    assert_eq!(stats.rate_limited_relay.load(Relaxed), 19_500);
    assert!(stats.limiter_evictions.load(Relaxed) > 0);
    let offer = s
        .handle(&discover(KNOWN, 1, None), src(), false)
        .await
        .expect("the machine on its own segment is answered");
    assert_eq!(offer.kind, MessageType::Offer);
    // A second later the flooding relay has a hundred more.
    clock.advance(Duration::from_secs(1));
    for i in 20_000..21_000 {
        let _ = s
            .handle(&discover(made_up(i), i, flood), src(), false)
            .await;
    }
    assert_eq!(stats.unknown_mac.load(Relaxed), 600);
}

/// The same flood over loopback through the server's socket, the drops on
/// `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_over_loopback_is_dropped_and_shown_on_metrics() {
    let clock = clock();
    let s = server(limits((16.0, 2.0), (200.0, 1.0), 500), clock, None).await;
    let stats = s.stats();
    let socket = tinker_boot::dhcp::server::bind_udp("127.0.0.1:0".parse().unwrap(), None).unwrap();
    let addr = socket.local_addr().unwrap();
    let tracked = s.clone();
    tokio::spawn(s.serve(socket, None, std::future::pending()));
    let sender = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let relay = Some(Ipv4Addr::new(127, 0, 60, 1));
    for i in 0..3000 {
        sender
            .send_to(&discover(made_up(i), i, relay), addr)
            .await
            .unwrap();
        if i % 200 == 0 {
            // Keep under the socket's buffer; nothing is asserted about speed.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for _ in 0..600 {
        let done = stats.unknown_mac.load(Relaxed)
            + stats.rate_limited_relay.load(Relaxed)
            + stats.overload_drops.load(Relaxed);
        if done >= stats.received.load(Relaxed) && stats.received.load(Relaxed) == 3000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stats.received.load(Relaxed), 3000);
    assert!(stats.unknown_mac.load(Relaxed) <= 200);
    assert!(stats.rate_limited_relay.load(Relaxed) >= 2800 - stats.overload_drops.load(Relaxed));
    assert!(tracked.tracked().0 <= 500);

    let http = HttpServer::new({
        let mut c = HttpConfig::new(Arc::new(MemoryStore::new()));
        c.metrics = vec![stats.clone()];
        c
    });
    let (near, far) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        http.serve_connection(far, "10.0.0.1:1".parse().unwrap())
            .await
    });
    let text = tinker_boot::http::client::HttpConnection::over(near)
        .await
        .unwrap()
        .get("/metrics")
        .await
        .unwrap()
        .text();
    let line = format!(
        "tinker_dhcp_rate_limited_relay_total {}",
        stats.rate_limited_relay.load(Relaxed)
    );
    assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("tinker_dhcp_limiter_evictions_total ")),
        "{text}"
    );
}

/// A boot file name stored in a Hardware that does not fit the header's 128
/// bytes goes in option 67 alone; one that does not fit an option is refused
/// and counted. Neither panics the encoder.
#[tokio::test]
async fn a_boot_file_name_too_long_for_dhcp_does_not_panic() {
    let long = format!("{}.efi", "b".repeat(196));
    let s = server(DhcpLimits::new(), clock(), Some(long.clone())).await;
    let offer = s
        .handle(&discover(KNOWN, 1, None), src(), false)
        .await
        .expect("answered");
    let msg = client::decode(&offer.bytes).unwrap();
    assert!(msg.fname().is_none_or(|f| f.iter().all(|&b| b == 0)));
    assert_eq!(
        msg.opts().get(OptionCode::BootfileName),
        Some(&DhcpOption::BootfileName(long.into_bytes()))
    );

    let s = server(DhcpLimits::new(), clock(), Some("c".repeat(300))).await;
    assert!(
        s.handle(&discover(KNOWN, 2, None), src(), false)
            .await
            .is_none()
    );
    assert_eq!(s.stats().unencodable.load(Relaxed), 1);
}
