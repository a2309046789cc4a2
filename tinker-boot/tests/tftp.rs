//! TFTP on loopback with a client of our own that negotiates windowsize (no
//! packaged client does), loses packets on purpose, and runs many transfers at once.

use std::sync::Arc;
use std::time::Duration;
use tinker_boot::tftp::packet::Packet;
use tinker_boot::tftp::{FileSource, TftpServer};
use tokio::net::UdpSocket;

async fn server(data: &[u8]) -> (std::net::SocketAddr, Arc<tinker_boot::tftp::TftpStats>) {
    let src = FileSource::empty().with_file("boot.bin", data.to_vec());
    let server = TftpServer::new(src);
    let stats = server.stats();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(server.serve(socket, std::future::pending()));
    (addr, stats)
}

/// Fetches `file`, dropping every DATA packet whose (absolute) block number is in
/// `drop_once` the first time it arrives. Returns the bytes. Each fetch comes
/// from an address of its own (127.0.3.x, 127.0.4.x, ...), as each machine has
/// its own, so the per-address transfer limit does not apply across them.
async fn fetch(
    server: std::net::SocketAddr,
    file: &str,
    options: &[(&str, &str)],
    drop_once: &[u64],
) -> Vec<u8> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let from = std::net::Ipv4Addr::new(127, 0, 3 + (n / 250) as u8, (n % 250 + 1) as u8);
    let sock = UdpSocket::bind((from, 0)).await.unwrap();
    let rrq = Packet::Rrq {
        file: file.into(),
        mode: "octet".into(),
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    sock.send_to(&rrq.encode(), server).await.unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 70_000];
    let (mut blksize, mut window) = (512usize, 1u64);
    let mut expected: u64 = 1;
    let mut in_window = 0u64;
    let mut dropped = std::collections::HashSet::new();
    loop {
        let (n, peer) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
            .await
            .expect("server answers")
            .unwrap();
        match Packet::decode(&buf[..n]).unwrap() {
            Packet::Oack { options } => {
                for (k, v) in options {
                    match k.as_str() {
                        "blksize" => blksize = v.parse().unwrap(),
                        "windowsize" => window = v.parse().unwrap(),
                        _ => {}
                    }
                }
                sock.send_to(&Packet::Ack { block: 0 }.encode(), peer)
                    .await
                    .unwrap();
            }
            Packet::Data { block, data } => {
                if block != (expected & 0xffff) as u16 {
                    // Out of order after a loss: ask again from the last good block (RFC 7440).
                    sock.send_to(
                        &Packet::Ack {
                            block: ((expected - 1) & 0xffff) as u16,
                        }
                        .encode(),
                        peer,
                    )
                    .await
                    .unwrap();
                    in_window = 0;
                    continue;
                }
                if drop_once.contains(&expected) && dropped.insert(expected) {
                    continue;
                }
                out.extend_from_slice(&data);
                in_window += 1;
                let last = data.len() < blksize;
                if in_window == window || last {
                    sock.send_to(&Packet::Ack { block }.encode(), peer)
                        .await
                        .unwrap();
                    in_window = 0;
                }
                expected += 1;
                if last {
                    return out;
                }
            }
            Packet::Error { code, message } => panic!("TFTP error {code}: {message}"),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The server counts a transfer once it reads the final ACK, a moment after the
/// client has everything: wait for the count rather than race it.
async fn completed(stats: &tinker_boot::tftp::TftpStats, want: u64) -> u64 {
    for _ in 0..200 {
        let n = stats.completed.load(std::sync::atomic::Ordering::Relaxed);
        if n >= want {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stats.completed.load(std::sync::atomic::Ordering::Relaxed)
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 256) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowsize_blksize_and_loss() {
    let file = data(300_000);
    let (addr, stats) = server(&file).await;
    assert_eq!(
        fetch(addr, "boot.bin", &[], &[]).await,
        file,
        "plain RFC 1350"
    );
    let got = fetch(
        addr,
        "boot.bin",
        &[("blksize", "1428"), ("windowsize", "8"), ("tsize", "0")],
        &[3, 9, 10, 40],
    )
    .await;
    assert_eq!(got, file, "windowed with losses");
    let got = fetch(
        addr,
        "boot.bin",
        &[("blksize", "512"), ("timeout", "1")],
        &[2, 5],
    )
    .await;
    assert_eq!(got, file, "lost blocks are retransmitted after the timeout");
    assert_eq!(completed(&stats, 3).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_transfers_at_once() {
    let file = data(200_000);
    let (addr, stats) = server(&file).await;
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let file = file.clone();
            tokio::spawn(async move {
                let opts: &[(&str, &str)] = if i % 2 == 0 {
                    &[("blksize", "1428"), ("windowsize", "4")]
                } else {
                    &[]
                };
                assert_eq!(fetch(addr, "boot.bin", opts, &[]).await, file);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(completed(&stats, 100).await, 100);
}

#[tokio::test]
async fn missing_files_and_writes_are_errors() {
    let (addr, stats) = server(b"x").await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = [0u8; 600];
    sock.send_to(
        &Packet::Rrq {
            file: "nope".into(),
            mode: "octet".into(),
            options: vec![],
        }
        .encode(),
        addr,
    )
    .await
    .unwrap();
    let (n, _) = sock.recv_from(&mut buf).await.unwrap();
    assert!(matches!(
        Packet::decode(&buf[..n]),
        Some(Packet::Error { code: 1, .. })
    ));
    let mut wrq = vec![0u8, 2];
    wrq.extend_from_slice(b"f\0octet\0");
    sock.send_to(&wrq, addr).await.unwrap();
    let (n, _) = sock.recv_from(&mut buf).await.unwrap();
    assert!(
        matches!(
            Packet::decode(&buf[..n]),
            Some(Packet::Error { code: 2, .. })
        ),
        "read-only"
    );
    sock.send_to(&[0xff, 0xff, 1], addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The write request and the noise: each refused and counted.
    assert_eq!(
        stats.malformed.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert_eq!(
        stats.not_found.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn retransmissions_follow_the_injected_clock() {
    use tinker_core::clock::ManualClock;
    let clock = Arc::new(ManualClock::new(
        jiff::Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    let src = FileSource::empty().with_file("boot.bin", vec![5u8; 100]);
    let server = TftpServer::new(src).with_clock(clock.clone());
    let stats = server.stats();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(server.serve(socket, std::future::pending()));

    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rrq = Packet::Rrq {
        file: "boot.bin".into(),
        mode: "octet".into(),
        options: vec![],
    };
    sock.send_to(&rrq.encode(), addr).await.unwrap();
    let mut buf = vec![0u8; 1500];
    let (n, _) = sock.recv_from(&mut buf).await.unwrap();
    assert!(matches!(
        Packet::decode(&buf[..n]),
        Some(Packet::Data { block: 1, .. })
    ));
    // The block goes unacknowledged. On the wall clock its 1 s timeout passes,
    // but the server's clock stands still: nothing is sent again.
    let quiet = tokio::time::timeout(Duration::from_millis(1300), sock.recv_from(&mut buf)).await;
    assert!(quiet.is_err(), "retransmitted without its clock moving");
    // Each wait on the server's clock is one retransmission, backing off from
    // 1 s to 4 s, then it gives up.
    let wait = |retry: u32| Duration::from_secs(1 << retry).min(tinker_boot::tftp::MAX_BACKOFF);
    for retry in 0..tinker_boot::tftp::MAX_RETRIES {
        clock.advance(wait(retry));
        let (n, _) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
            .await
            .expect("a retransmission once the clock moved")
            .unwrap();
        assert!(matches!(
            Packet::decode(&buf[..n]),
            Some(Packet::Data { block: 1, .. })
        ));
    }
    clock.advance(wait(tinker_boot::tftp::MAX_RETRIES));
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
        .await
        .expect("the server gives up aloud")
        .unwrap();
    assert!(matches!(
        Packet::decode(&buf[..n]),
        Some(Packet::Error { .. })
    ));
    for _ in 0..100 {
        if stats.failed.load(std::sync::atomic::Ordering::Relaxed) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the abandoned transfer was not counted");
}

fn rrq(file: &str, options: &[(&str, &str)]) -> Vec<u8> {
    Packet::Rrq {
        file: file.into(),
        mode: "octet".into(),
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
    .encode()
}

/// Spoofed read requests, all from one address, asking for the longest
/// timeout: the address holds at most its limit of transfers; the rest are
/// shed (not answered: nothing goes to the victim of a spoofed request, and a
/// real client retransmits) and counted; another address is still served.
#[tokio::test]
async fn spoofed_requests_from_one_address_hold_at_most_its_limit() {
    use std::sync::atomic::Ordering::Relaxed;
    let src = FileSource::empty().with_file("boot.bin", vec![9u8; 100_000]);
    let mut limits = tinker_boot::tftp::TftpLimits::new();
    limits.max_transfers_per_address = 4;
    let server = TftpServer::new(src).with_limits(limits);
    let stats = server.stats();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(server.serve(socket, std::future::pending()));

    let mut socks = Vec::new();
    for _ in 0..40 {
        let s = UdpSocket::bind("127.0.0.7:0").await.unwrap();
        s.send_to(&rrq("boot.bin", &[("timeout", "255")]), addr)
            .await
            .unwrap();
        socks.push(s);
    }
    // Every request has been decided once 40 are counted.
    while stats.requests.load(Relaxed) < 40 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stats.active.load(Relaxed), 4);
    assert_eq!(stats.shed_per_address.load(Relaxed), 36);
    // What was sent has arrived on loopback well within this.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut buf = vec![0u8; 1500];
    let mut served = 0;
    for s in &socks {
        // Each served socket has its first block (and maybe a retransmission).
        if let Ok((n, _)) = s.try_recv_from(&mut buf) {
            match Packet::decode(&buf[..n]) {
                Some(Packet::Data { block: 1, .. }) => served += 1,
                other => panic!("a shed request is not answered: {other:?}"),
            }
        }
    }
    assert_eq!(served, 4);
    // Another address is not held up by them.
    let got = tinker_boot::tftp::client::fetch(addr, "boot.bin", None, None)
        .await
        .unwrap();
    assert_eq!(got.len(), 100_000);
}

/// At the transfer limit a read request is shed: no answer at all (an ERROR
/// would end a PXE ROM's boot), counted; the client's retransmission, once a
/// transfer has ended, is served. A request repeated while its transfer runs
/// starts no second transfer.
#[tokio::test]
async fn at_the_transfer_limit_a_request_is_shed_and_its_retransmission_served() {
    use std::sync::atomic::Ordering::Relaxed;
    use tinker_core::clock::ManualClock;
    let file = data(1000);
    let src = FileSource::empty().with_file("boot.bin", file.clone());
    let mut limits = tinker_boot::tftp::TftpLimits::new();
    limits.max_transfers = 1;
    let server = TftpServer::new(src).with_limits(limits);
    let stats = server.stats();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(server.serve(socket, std::future::pending()));

    // A holds the one transfer: it has block 1 and has not acknowledged it.
    let a = UdpSocket::bind("127.0.0.8:0").await.unwrap();
    a.send_to(&rrq("boot.bin", &[]), addr).await.unwrap();
    let mut buf = vec![0u8; 1500];
    let (n, a_peer) = a.recv_from(&mut buf).await.unwrap();
    assert!(matches!(
        Packet::decode(&buf[..n]),
        Some(Packet::Data { block: 1, .. })
    ));
    // B asks through the one TFTP client, whose retransmissions run on a
    // clock of the test's.
    let clock = Arc::new(ManualClock::new(
        jiff::Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    let b = tokio::spawn({
        let clock = clock.clone();
        async move {
            tinker_boot::tftp::client::fetch_from(
                addr,
                Some("127.0.0.9".parse().unwrap()),
                "boot.bin",
                None,
                None,
                &*clock,
            )
            .await
        }
    });
    while stats.shed.load(Relaxed) < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Not answered: an ERROR would have ended B's fetch.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b.is_finished(), "B was answered: {:?}", b.await);
    assert_eq!(stats.active.load(Relaxed), 1);
    // A finishes, freeing the slot.
    a.send_to(&Packet::Ack { block: 1 }.encode(), a_peer)
        .await
        .unwrap();
    let (n, _) = a.recv_from(&mut buf).await.unwrap();
    assert!(matches!(
        Packet::decode(&buf[..n]),
        Some(Packet::Data { block: 2, .. })
    ));
    a.send_to(&Packet::Ack { block: 2 }.encode(), a_peer)
        .await
        .unwrap();
    while stats.active.load(Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // B's first retransmission is due a quarter second after its request.
    clock.advance(tinker_boot::tftp::client::RRQ_RETRANSMISSIONS[0]);
    let got = tokio::time::timeout(Duration::from_secs(30), b)
        .await
        .expect("B is served after its retransmission")
        .unwrap()
        .unwrap();
    assert_eq!(got, file);
    assert_eq!(stats.shed.load(Relaxed), 1);
    assert_eq!(completed(&stats, 2).await, 2);

    // C repeats its request while its transfer runs: one transfer, not two
    // (and the repeat is not shed, though the one slot is taken).
    let c = UdpSocket::bind("127.0.0.10:0").await.unwrap();
    c.send_to(&rrq("boot.bin", &[]), addr).await.unwrap();
    let (_, c_peer) = c.recv_from(&mut buf).await.unwrap();
    c.send_to(&rrq("boot.bin", &[]), addr).await.unwrap();
    while stats.requests.load(Relaxed) < 5 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stats.duplicate_requests.load(Relaxed), 1);
    assert_eq!(stats.shed.load(Relaxed), 1);
    c.send_to(&Packet::Ack { block: 1 }.encode(), c_peer)
        .await
        .unwrap();
    let (n, from) = c.recv_from(&mut buf).await.unwrap();
    assert_eq!(from, c_peer, "only the one transfer answers");
    assert!(matches!(
        Packet::decode(&buf[..n]),
        Some(Packet::Data { block: 2, .. })
    ));
}

/// A transfer whose client acknowledges the options and then never answers is
/// abandoned once it has sent its limit of unanswered bytes, however long the
/// file and however many retries remain.
#[tokio::test]
async fn a_client_that_never_acks_is_sent_a_bounded_number_of_bytes() {
    use std::sync::atomic::Ordering::Relaxed;
    use tinker_core::clock::ManualClock;
    let clock = Arc::new(ManualClock::new(
        jiff::Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    let src = FileSource::empty().with_file("big.bin", vec![1u8; 16 << 20]);
    let mut limits = tinker_boot::tftp::TftpLimits::new();
    limits.max_unanswered_bytes = 150_000;
    let server = TftpServer::new(src)
        .with_clock(clock.clone())
        .with_limits(limits);
    let stats = server.stats();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(server.serve(socket, std::future::pending()));

    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(
        &rrq("big.bin", &[("blksize", "1468"), ("windowsize", "64")]),
        addr,
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 70_000];
    let (_, peer) = sock.recv_from(&mut buf).await.unwrap(); // the OACK
    sock.send_to(&Packet::Ack { block: 0 }.encode(), peer)
        .await
        .unwrap();
    let mut received = 0usize;
    loop {
        match tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf)).await {
            Ok(r) => {
                let (n, _) = r.unwrap();
                received += n;
                if let Some(Packet::Error { .. }) = Packet::decode(&buf[..n]) {
                    break;
                }
            }
            // The window is in; move the server's clock past its timeout.
            Err(_) => clock.advance(Duration::from_secs(2)),
        }
    }
    assert!(
        received <= 150_000 + 100,
        "{received} bytes to a client that never answered"
    );
    assert_eq!(stats.unanswered.load(Relaxed), 1);
}

/// Two transfers of a directory file read it from disk once; a file replaced
/// on disk is read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_of_one_file_read_it_from_disk_once() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ipxe.efi"), vec![4u8; 300_000]).unwrap();
    let server = TftpServer::new(FileSource::directory(dir.path()).unwrap());
    let stats = server.stats();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(server.serve(socket, std::future::pending()));
    let fetch = || tinker_boot::tftp::client::fetch(addr, "ipxe.efi", Some(1428), Some(8));
    let (a, b) = tokio::join!(fetch(), fetch());
    assert_eq!(a.unwrap(), vec![4u8; 300_000]);
    assert_eq!(b.unwrap(), vec![4u8; 300_000]);
    assert_eq!(fetch().await.unwrap().len(), 300_000);
    assert_eq!(stats.file_reads.load(Relaxed), 1, "read from disk once");
    assert_eq!(stats.cache_hits.load(Relaxed), 2);
    std::fs::write(dir.path().join("ipxe.efi"), vec![5u8; 200_000]).unwrap();
    assert_eq!(fetch().await.unwrap(), vec![5u8; 200_000], "the new file");
    assert_eq!(stats.file_reads.load(Relaxed), 2);
}

/// The TFTP events in `machine`'s log: asked until `at_least` are there (a
/// bounded number of times), then once more after any write still on its way
/// landed, so that too many would be seen.
async fn tftp_events(
    store: &Arc<dyn tinker_core::WorkflowStore>,
    machine: &str,
    at_least: usize,
) -> Vec<tinker_core::store::EventKind> {
    let now = || async {
        let events = store.events(machine, 1000).await.unwrap();
        events
            .into_iter()
            .filter(|e| e.source == tinker_core::store::EventSource::Tftp)
            .map(|e| e.kind)
            .collect::<Vec<_>>()
    };
    for _ in 0..1000 {
        if now().await.len() >= at_least {
            break;
        }
        tokio::task::yield_now().await;
    }
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    now().await
}

#[tokio::test]
async fn a_machine_s_transfers_are_in_its_event_log_a_burst_once() {
    use tinker_core::store::{EventKind, Precondition};
    let store: Arc<dyn tinker_core::WorkflowStore> = Arc::new(tinker_store::MemoryStore::new());
    let machine = std::net::Ipv4Addr::new(127, 0, 5, 10);
    let hw =
        tinker_core::model::Hardware::new("m1", tinker_core::testing::mac(1), machine, "255.0.0.0");
    store.put(hw.into(), Precondition::Any).await.unwrap();
    let clock = Arc::new(tinker_core::clock::ManualClock::new(
        jiff::Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    let src = FileSource::empty().with_file("ipxe.efi", vec![7u8; 3000]);
    let server = TftpServer::new(src)
        .with_clock(clock.clone())
        .with_observer(Arc::new(tinker_boot::tftp::StoreTransferLog::new(
            store.clone(),
        )));
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(server.serve(socket, std::future::pending()));
    let fetch = |from: std::net::Ipv4Addr, file: &'static str| {
        let clock = clock.clone();
        async move {
            tinker_boot::tftp::client::fetch_from(
                addr,
                Some(from.into()),
                file,
                None,
                None,
                clock.as_ref(),
            )
            .await
        }
    };
    assert_eq!(fetch(machine, "ipxe.efi").await.unwrap().len(), 3000);
    let sent = EventKind::TftpTransfer {
        file: "ipxe.efi".into(),
        bytes: 3000,
        millis: 0,
        failed: None,
    };
    assert_eq!(
        tftp_events(&store, "default/m1", 1).await,
        std::slice::from_ref(&sent)
    );
    // A firmware fetching in a loop: still one event in the window; a file
    // the server has not and another address record nothing.
    for _ in 0..10 {
        assert!(fetch(machine, "ipxe.efi").await.is_ok());
    }
    assert!(fetch(machine, "nothing.efi").await.is_err());
    assert!(
        fetch(std::net::Ipv4Addr::new(127, 0, 5, 11), "ipxe.efi")
            .await
            .is_ok()
    );
    assert_eq!(
        tftp_events(&store, "default/m1", 1).await,
        std::slice::from_ref(&sent)
    );
    // Past the window, the next one is recorded again.
    clock.advance(Duration::from_secs(11));
    assert!(fetch(machine, "ipxe.efi").await.is_ok());
    assert_eq!(
        tftp_events(&store, "default/m1", 2).await,
        [sent.clone(), sent.clone()]
    );
    // A transfer the firmware abandons (as after learning the size) is
    // recorded too, with why.
    let sock = UdpSocket::bind((machine, 0)).await.unwrap();
    let rrq = Packet::Rrq {
        file: "ipxe.efi".into(),
        mode: "octet".into(),
        options: Vec::new(),
    };
    sock.send_to(&rrq.encode(), addr).await.unwrap();
    let mut buf = vec![0u8; 1500];
    let (_, transfer) = sock.recv_from(&mut buf).await.unwrap();
    let abort =
        tinker_boot::tftp::packet::error(tinker_boot::tftp::packet::code::UNDEFINED, "tsize only");
    sock.send_to(&abort, transfer).await.unwrap();
    let abandoned = EventKind::TftpTransfer {
        file: "ipxe.efi".into(),
        bytes: 3000,
        millis: 0,
        failed: Some("the client sent an error".into()),
    };
    assert_eq!(
        tftp_events(&store, "default/m1", 3).await,
        [sent.clone(), sent, abandoned]
    );
}
