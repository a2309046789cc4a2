//! Property tests of every decoder that takes input from the network: DHCP
//! packets (parse, screen, the whole engine), TFTP packets (the codec, option
//! negotiation, a transfer fed anything, the server's socket), and HTTP
//! requests (the router with any path, method and headers). Each asserts no
//! panic and a clear, counted rejection: every packet or request ends in an
//! answer or in exactly one counter.
//!
//! Cases per property: 256, or `PROPTEST_CASES`.

use dhcproto::v4::MessageType;
use proptest::prelude::*;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tinker_boot::dhcp::client::{self, PxeClient};
use tinker_boot::dhcp::{DhcpConfig, DhcpServer, DhcpStats, Mode, request};
use tinker_boot::http::{HttpConfig, HttpServer};
use tinker_boot::tftp::packet::Packet;
use tinker_boot::tftp::{FileSource, MAX_BLKSIZE_NO_FRAG, MAX_TIMEOUT_OPTION, Transfer, negotiate};
use tinker_boot::{BootConfig, StoreBootResponder};
use tinker_core::model::Hardware;
use tinker_core::{MacAddr, Precondition, WorkflowStore};
use tinker_store::MemoryStore;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig::with_cases(cases)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const KNOWN: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);

async fn dhcp(mode: Mode) -> DhcpServer {
    let store = Arc::new(MemoryStore::new());
    let mut hw = Hardware::new("m1", KNOWN, Ipv4Addr::new(10, 77, 0, 10), "255.255.255.0");
    hw.set_allow_pxe(true);
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
    DhcpServer::new(DhcpConfig::new(mode, SERVER), Arc::new(responder))
}

/// Every way a packet can end, each counted once (RELEASE and DECLINE are
/// counted beside the `ignored` they end in).
fn outcomes(s: &DhcpStats) -> u64 {
    let c: [&AtomicU64; 11] = [
        &s.malformed,
        &s.ignored,
        &s.unknown_mac,
        &s.rate_limited_mac,
        &s.rate_limited_relay,
        &s.responder_errors,
        &s.unencodable,
        &s.offers,
        &s.acks,
        &s.naks,
        &s.informs,
    ];
    c.iter().map(|c| c.load(Ordering::Relaxed)).sum()
}

fn src() -> SocketAddr {
    "0.0.0.0:68".parse().unwrap()
}

/// A packet to feed the engine: noise, or a real request with bytes changed.
fn dhcp_packet() -> impl Strategy<Value = Vec<u8>> {
    let kinds = prop::sample::select(vec![
        MessageType::Discover,
        MessageType::Request,
        MessageType::Inform,
        MessageType::Release,
        MessageType::Decline,
        MessageType::Offer,
    ]);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..700),
        (
            kinds,
            any::<bool>(),
            prop::collection::vec((0usize..400, any::<u8>()), 0..12),
            prop::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(kind, known, flips, tail)| {
                let mac = if known {
                    KNOWN
                } else {
                    MacAddr([2, 1, 2, 3, 4, 5])
                };
                let mut b = client::encode(&PxeClient::new(mac, 7).message(kind, 9));
                for (at, v) in flips {
                    if at < b.len() {
                        b[at] = v;
                    }
                }
                b.extend(tail);
                b
            }),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Any packet, in either mode, on either port: an answer that decodes, or
    /// exactly one counter for why not.
    #[test]
    fn dhcp_any_packet_is_answered_or_counted(
        bytes in dhcp_packet(),
        proxy in any::<bool>(),
        on_proxy_port in any::<bool>(),
    ) {
        rt().block_on(async {
            let s = dhcp(if proxy { Mode::Proxy } else { Mode::Reservation }).await;
            let out = s.handle(&bytes, src(), on_proxy_port).await;
            let stats = s.stats();
            assert_eq!(stats.received.load(Ordering::Relaxed), 1);
            assert_eq!(outcomes(&stats), 1, "one outcome counted for {bytes:?}");
            if let Some(out) = out {
                assert!(out.bytes.len() >= tinker_boot::dhcp::MIN_REPLY_LEN);
                assert!(client::decode(&out.bytes).is_some(), "a reply that decodes");
            }
        });
    }

    /// The decoder and the screen: a typed result, never a panic, and a
    /// rejection that says what was wrong.
    #[test]
    fn dhcp_parse_and_screen_reject_clearly(bytes in dhcp_packet(), proxy in any::<bool>()) {
        match request::parse(&bytes, src(), proxy) {
            Ok(inbound) => {
                let mode = if proxy { Mode::Proxy } else { Mode::Reservation };
                if let Err(skip) = request::screen(&DhcpConfig::new(mode, SERVER), &inbound) {
                    assert!(!skip.to_string().is_empty());
                }
            }
            Err(why) => assert!(!why.to_string().is_empty()),
        }
    }

    /// The TFTP codec: any bytes decode or are refused, and what decodes encodes
    /// back to a packet that decodes the same.
    #[test]
    fn tftp_decode_is_total_and_stable(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Some(p) = Packet::decode(&bytes) {
            let again = Packet::decode(&p.encode());
            // A write request carries nothing we keep; the rest round-trips.
            if p != Packet::Wrq {
                assert_eq!(again, Some(p));
            }
        }
    }

    /// Well-formed packets survive encoding.
    #[test]
    fn tftp_packets_round_trip(
        file in "[a-zA-Z0-9/._-]{1,60}",
        opts in prop::collection::vec(("[a-z]{1,10}", "[0-9]{0,6}"), 0..5),
        block in any::<u16>(),
        data in prop::collection::vec(any::<u8>(), 0..600),
        code in any::<u16>(),
        message in "[ -~]{0,80}",
    ) {
        for p in [
            Packet::Rrq { file: file.clone(), mode: "octet".into(), options: opts.clone() },
            Packet::Data { block, data: data.clone() },
            Packet::Ack { block },
            Packet::Error { code, message: message.clone() },
            Packet::Oack { options: opts.clone() },
        ] {
            assert_eq!(Packet::decode(&p.encode()), Some(p));
        }
    }

    /// Whatever a client asks for, the negotiated options stay in bounds.
    #[test]
    fn tftp_negotiation_stays_in_bounds(
        opts in prop::collection::vec(
            (prop::sample::select(vec!["blksize", "tsize", "timeout", "windowsize", "x"]), "[0-9]{0,8}|[ -~]{0,8}"),
            0..8,
        ),
        size in any::<u32>(),
    ) {
        let requested: Vec<(String, String)> =
            opts.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let (o, ack) = negotiate(&requested, u64::from(size), MAX_BLKSIZE_NO_FRAG);
        assert!((8..=MAX_BLKSIZE_NO_FRAG).contains(&o.blksize) || o.blksize == 512);
        assert!((1..=64).contains(&o.windowsize));
        assert!(o.timeout.as_secs() <= MAX_TIMEOUT_OPTION && o.timeout.as_secs() >= 1);
        assert!(ack.len() <= requested.len());
    }

    /// A transfer fed any packets from its client answers with DATA or an
    /// ERROR, never a panic, and stays within its unanswered-bytes limit.
    #[test]
    fn tftp_transfer_takes_any_packet(
        packets in prop::collection::vec(prop_oneof![
            prop::collection::vec(any::<u8>(), 0..40),
            any::<u16>().prop_map(|b| Packet::Ack { block: b }.encode()),
        ], 0..40),
        windowsize in 1u16..16,
    ) {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let opts = vec![("windowsize".to_string(), windowsize.to_string())];
        let (mut t, _) = Transfer::start(vec![1u8; 20_000].into(), &opts, 1468, now);
        for p in packets {
            for out in t.on_packet(&p, now) {
                assert!(matches!(
                    Packet::decode(&out),
                    Some(Packet::Data { .. } | Packet::Error { .. })
                ));
            }
            for out in t.on_timeout(t.deadline()) {
                assert!(matches!(
                    Packet::decode(&out),
                    Some(Packet::Data { .. } | Packet::Error { .. } | Packet::Oack { .. })
                ));
            }
        }
    }
}

/// The TFTP server's socket: any datagram is a read request (a transfer, or a
/// refusal sent back) or counted as malformed; a write request is refused
/// aloud.
#[test]
fn tftp_server_counts_every_datagram() {
    let config = config();
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (addr, stats) = rt.block_on(async {
        let server =
            tinker_boot::tftp::TftpServer::new(FileSource::empty().with_file("f", vec![1u8; 10]));
        let stats = server.stats();
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(server.serve(socket, std::future::pending()));
        (addr, stats)
    });
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        "[a-z]{0,8}".prop_map(|f| packet_rrq(&f)),
        Just(vec![0, 2, b'f', 0, b'o', b'c', b't', b'e', b't', 0]),
    ];
    runner
        .run(&strategy, |bytes| {
            let before = counted(&stats);
            let shed_before = shed(&stats);
            rt.block_on(async {
                // A socket of its own for each case: the same port again,
                // while an earlier transfer to it still runs, is a
                // retransmitted request the server rightly ignores.
                let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                sock.send_to(&bytes, addr).await.unwrap();
                let is_request = matches!(
                    Packet::decode(&bytes),
                    Some(Packet::Rrq { .. } | Packet::Wrq)
                );
                for _ in 0..2000 {
                    if counted(&stats) > before {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                // The answer to a read or write request, unless the earlier
                // cases' transfers still fill this address's share and the
                // request is shed by silence (counted); none to noise.
                if is_request {
                    let mut buf = [0u8; 1500];
                    let shed_counted = async {
                        while shed(&stats) == shed_before {
                            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                        }
                    };
                    tokio::select! {
                        r = sock.recv_from(&mut buf) => {
                            let (n, _) = r.unwrap();
                            assert!(Packet::decode(&buf[..n]).is_some());
                        }
                        () = shed_counted => {}
                        () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {
                            panic!("a request is neither answered nor counted as shed: {bytes:?}")
                        }
                    }
                }
            });
            assert_eq!(counted(&stats), before + 1, "{bytes:?}");
            Ok(())
        })
        .unwrap();
}

fn packet_rrq(file: &str) -> Vec<u8> {
    Packet::Rrq {
        file: file.into(),
        mode: "octet".into(),
        options: vec![],
    }
    .encode()
}

fn shed(s: &tinker_boot::tftp::TftpStats) -> u64 {
    s.shed.load(Ordering::Relaxed) + s.shed_per_address.load(Ordering::Relaxed)
}

fn counted(s: &tinker_boot::tftp::TftpStats) -> u64 {
    s.requests.load(Ordering::Relaxed) + s.malformed.load(Ordering::Relaxed)
}

/// A path for the router: segments it knows, traversal attempts, escapes and
/// noise.
fn http_path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        prop::sample::select(vec![
            "assets",
            "ipxe",
            "binary",
            "auto.ipxe",
            "metadata",
            "latest",
            "2009-04-04",
            "meta-data",
            "user-data",
            "metrics",
            "healthz",
            "..",
            ".",
            "%2e%2e",
            "%2F",
            "%00",
            "",
            "52:54:00:00:00:01",
            "52%3A54%3A00%3A00%3A00%3A01",
            "file.img",
            "%zz",
            "x",
        ])
        .prop_map(str::to_string),
        "[a-zA-Z0-9%._~:@!$&'()*+,;=-]{0,30}",
    ];
    (
        prop::collection::vec(segment, 0..8),
        "(\\?[a-z=&%0-9]{0,20})?",
    )
        .prop_map(|(segs, query)| format!("/{}{query}", segs.join("/")))
}

proptest! {
    #![proptest_config(config())]

    /// Any path, method and header through the router: an answer, never a
    /// server error or a dropped connection; a path out of the asset directory
    /// is refused and counted.
    #[test]
    fn http_router_answers_any_request(
        path in http_path(),
        method in prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]),
        header in ("[a-zA-Z-]{1,20}", "[ -~]{0,100}"),
        range in proptest::option::of("[ -~]{0,30}"),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let assets = dir.path().join("assets");
        std::fs::create_dir(&assets).unwrap();
        std::fs::write(assets.join("file.img"), vec![5u8; 1000]).unwrap();
        std::fs::write(dir.path().join("secret"), b"private").unwrap();
        rt().block_on(async {
            let mut config = HttpConfig::new(Arc::new(MemoryStore::new()));
            config.assets = Some(FileSource::directory(&assets).unwrap());
            let server = HttpServer::new(config);
            let stats = server.stats();
            let (near, far) = tokio::io::duplex(64 * 1024);
            let peer: SocketAddr = "10.0.0.9:5000".parse().unwrap();
            let serving = {
                let server = server.clone();
                tokio::spawn(async move { server.serve_connection(far, peer).await })
            };
            let mut headers = vec![(header.0.as_str(), header.1.as_str())];
            if let Some(r) = &range {
                headers.push(("range", r.as_str()));
            }
            let mut conn = tinker_boot::http::client::HttpConnection::over(near).await.unwrap();
            let method: tinker_boot::http::client::Method = method.parse().unwrap();
            match conn.send(method, &path, &headers, Vec::new()).await {
                Ok(resp) => {
                    assert!(resp.status < 500, "{path}: {}", resp.status);
                    assert_eq!(stats.requests.load(Ordering::Relaxed), 1);
                    if resp.status == 200 && path.starts_with("/assets/") {
                        assert_ne!(resp.body.as_ref(), b"private", "{path}");
                    }
                    if resp.status == 403 {
                        assert_eq!(stats.refused.load(Ordering::Relaxed), 1, "{path}");
                    }
                }
                // The client would not send it (a header or path it cannot
                // encode): nothing reached the server.
                Err(tinker_boot::http::client::ClientError::Request(_)) => {}
                Err(e) => {
                    drop(conn);
                    let served = serving.await;
                    panic!("{path}: no answer: {e} (server: {served:?})");
                }
            }
        });
    }
}

/// A JSON-ish body: arbitrary bytes, or JSON objects with the worker API's own
/// field names and values of any type.
fn worker_body() -> impl Strategy<Value = Vec<u8>> {
    let value = prop_oneof![
        Just("null".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        "\"[ -~]{0,40}\"",
        Just("\"52:54:00:00:00:01\"".to_string()),
        Just("\"default/wf\"".to_string()),
        Just("{\"outcome\":\"success\"}".to_string()),
        Just("[{\"stream\":\"stdout\",\"text\":\"x\"}]".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
    ];
    let field = prop::sample::select(vec![
        "worker_id",
        "request_id",
        "workflow_id",
        "action_index",
        "attempt",
        "outcome",
        "lines",
        "started_at",
        "finished_at",
        "x",
    ]);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        prop::collection::vec((field, value), 0..8).prop_map(|kv| {
            let inner: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", inner.join(",")).into_bytes()
        }),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Any body to any worker API operation, with the machine's valid token:
    /// an answer that says what was wrong (4xx) or what happened, never a
    /// server error, a panic or a dropped connection.
    #[test]
    fn worker_api_answers_any_body(
        op in prop::sample::select(vec!["next-action", "report", "heartbeat", "logs", "other"]),
        body in worker_body(),
    ) {
        use tinker_boot::credentials::{AddressCheck, CallerCheck, worker_token};
        rt().block_on(async {
            let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
            let hw = Hardware::new("m1", KNOWN, Ipv4Addr::new(10, 0, 0, 9), "255.0.0.0");
            store.put(hw.into(), Precondition::Absent).await.unwrap();
            let secret = tinker_core::Secret::new("k");
            let token = worker_token(&secret, &KNOWN.to_string(), "");
            let api = tinker_boot::worker_api::WorkerApi::new(store.clone(), secret, 5)
                .with_caller_check(CallerCheck { mode: AddressCheck::Strict, ..CallerCheck::default() });
            let mut config = HttpConfig::new(store);
            config.extra = Some(Arc::new(api));
            let server = HttpServer::new(config);
            let (near, far) = tokio::io::duplex(64 * 1024);
            let peer: SocketAddr = "10.0.0.9:5000".parse().unwrap();
            tokio::spawn(async move { server.serve_connection(far, peer).await });
            let auth = format!("Bearer {}", token.expose());
            let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
            let mut conn = tinker_boot::http::client::HttpConnection::over(near).await.unwrap();
            let path = format!("/v1/workers/{KNOWN}/{op}");
            let resp = conn
                .send(tinker_boot::http::client::Method::POST, &path, &headers, body.clone())
                .await
                .unwrap_or_else(|e| panic!("{op}: no answer: {e}"));
            assert!(resp.status < 500, "{op} {:?}: {}", String::from_utf8_lossy(&body), resp.status);
            if resp.status == 400 {
                assert!(resp.text().contains("error"), "a reason: {}", resp.text());
            }
        });
    }
}
