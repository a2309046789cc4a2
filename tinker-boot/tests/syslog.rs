//! The syslog receiver on real UDP sockets: senders bound to loopback
//! addresses play the machines (Linux answers all of 127/8 locally), and the
//! store's Hardware says which address is whose.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tinker_boot::dhcp::Rate;
use tinker_boot::syslog::{SyslogLimits, SyslogServer, SyslogStats};
use tinker_core::clock::ManualClock;
use tinker_core::model::Hardware;
use tinker_core::store::{EventKind, EventSource};
use tinker_core::{MacAddr, Precondition, WorkflowStore};
use tinker_store::MemoryStore;

const M1: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 7);
const M2: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 8);
const STRANGER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);

struct Running {
    store: Arc<MemoryStore>,
    stats: Arc<SyslogStats>,
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(limits: SyslogLimits) -> Running {
    let store = Arc::new(MemoryStore::new());
    for (name, mac, ip) in [("m1", 1, M1), ("m2", 2, M2)] {
        let hw = Hardware::new(name, MacAddr([2, 0, 0, 0, 0, mac]), ip, "255.0.0.0");
        store.put(hw.into(), Precondition::Absent).await.unwrap();
    }
    // A clock that does not move: no bucket refills while the test runs.
    let clock = Arc::new(ManualClock::new(
        jiff::Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    let server = SyslogServer::new(store.clone())
        .with_limits(limits)
        .with_clock(clock);
    let stats = server.stats();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(socket, async move {
        let _ = stopped.await;
    }));
    Running {
        store,
        stats,
        addr,
        _stop: stop,
    }
}

/// Sends each datagram from `from` (a loopback address of our choosing).
async fn send(from: Ipv4Addr, to: SocketAddr, datagrams: &[&[u8]]) {
    let socket = tokio::net::UdpSocket::bind((from, 0)).await.unwrap();
    for d in datagrams {
        socket.send_to(d, to).await.unwrap();
    }
}

/// Waits until the receiver has taken `n` datagrams (it handles them in
/// order, one at a time, so the last one counted means all are done).
async fn received(stats: &SyslogStats, n: u64) {
    for _ in 0..2000 {
        if stats.received.load(Ordering::Relaxed) >= n
            && stats.filed.load(Ordering::Relaxed)
                + stats.malformed.load(Ordering::Relaxed)
                + stats.too_large.load(Ordering::Relaxed)
                + stats.rate_limited.load(Ordering::Relaxed)
                + stats.unknown_source.load(Ordering::Relaxed)
                + stats.store_errors.load(Ordering::Relaxed)
                >= n
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "the receiver took {} of {n} datagrams",
        stats.received.load(Ordering::Relaxed)
    );
}

/// The syslog lines in a machine's timeline.
async fn lines(store: &MemoryStore, machine: &str) -> Vec<(IpAddr, Option<String>, String)> {
    store
        .events(machine, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match &e.kind {
            EventKind::SyslogLine {
                from, app, line, ..
            } => {
                assert_eq!(e.source, EventSource::Syslog);
                assert!(e.workflow.is_none());
                assert!(e.message().contains("unauthenticated"), "{}", e.message());
                Some((*from, app.clone(), line.clone()))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_machines_line_is_filed_under_it_and_no_other() {
    let r = start(SyslogLimits::default()).await;
    send(
        M1,
        r.addr,
        &[b"<30>Dec  1 03:04:05 hook tink-agent[42]: pulling image quay.io/x\n"],
    )
    .await;
    send(
        M2,
        r.addr,
        &[b"<11>1 2026-12-01T03:04:05Z hook hook-bootkit 7 - - m2 here"],
    )
    .await;
    send(STRANGER, r.addr, &[b"<13>forger: I am m1"]).await;
    received(&r.stats, 3).await;
    assert_eq!(
        lines(&r.store, "default/m1").await,
        [(
            IpAddr::V4(M1),
            Some("tink-agent".to_string()),
            "pulling image quay.io/x".to_string()
        )]
    );
    assert_eq!(
        lines(&r.store, "default/m2").await,
        [(
            IpAddr::V4(M2),
            Some("hook-bootkit".to_string()),
            "m2 here".to_string()
        )]
    );
    // An address of no Hardware files nothing anywhere, and is counted.
    assert_eq!(r.stats.unknown_source.load(Ordering::Relaxed), 1);
    assert_eq!(r.stats.filed.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn malformed_and_oversized_datagrams_are_counted_and_dropped() {
    let r = start(SyslogLimits::default()).await;
    let big = [b'a'; 3000];
    let mut oversized = b"<13>x: ".to_vec();
    oversized.extend_from_slice(&big);
    send(
        M1,
        r.addr,
        &[
            b"no priority",
            b"<999>bad priority",
            b"\xff\xfe<13>",
            &oversized,
            b"<13>app: the one good line",
        ],
    )
    .await;
    received(&r.stats, 5).await;
    assert_eq!(r.stats.malformed.load(Ordering::Relaxed), 3);
    assert_eq!(r.stats.too_large.load(Ordering::Relaxed), 1);
    let filed = lines(&r.store, "default/m1").await;
    assert_eq!(filed.len(), 1, "{filed:?}");
    assert_eq!(filed[0].2, "the one good line");
}

#[tokio::test]
async fn each_address_is_held_to_its_rate() {
    let mut limits = SyslogLimits::new();
    limits.per_address = Rate {
        burst: 5.0,
        per_second: 1.0,
    };
    let r = start(limits).await;
    let flood: Vec<&[u8]> = vec![b"<13>x: flood"; 50];
    send(M1, r.addr, &flood).await;
    send(M2, r.addr, &[b"<13>x: calm"]).await;
    received(&r.stats, 51).await;
    assert_eq!(lines(&r.store, "default/m1").await.len(), 5);
    assert_eq!(r.stats.rate_limited.load(Ordering::Relaxed), 45);
    // The flood from m1 did not spend m2's budget.
    assert_eq!(lines(&r.store, "default/m2").await.len(), 1);
}
