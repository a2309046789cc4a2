//! The HTTP server under connection attacks, on loopback: thousands of idle
//! connections, trickled headers (slowloris), more connections than the server
//! admits, a client that never reads its answer; a real client is still served,
//! and every attacker's connection is closed by the limits, counted on
//! `/metrics`. Each source address is its own 127.x.y.z, as machines on a
//! network are.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tinker_boot::http::{ConnStats, HttpConfig, HttpLimits, HttpServer, client};
use tinker_boot::tftp::FileSource;
use tinker_store::MemoryStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Lets this process open a few thousand sockets (both ends of each connection
/// live in it).
fn raise_nofile(want: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current.is_some_and(|c| c < want) {
        lim.current = Some(lim.maximum.map_or(want, |m| m.min(want)));
        setrlimit(Resource::Nofile, lim).expect("raise RLIMIT_NOFILE");
    }
}

async fn serve(
    limits: HttpLimits,
    assets: Option<&std::path::Path>,
) -> (SocketAddr, Arc<ConnStats>) {
    let mut config = HttpConfig::new(Arc::new(MemoryStore::new()));
    config.assets = assets.map(|d| FileSource::directory(d).unwrap());
    let server = HttpServer::new(config).with_limits(limits);
    let stats = server.conn_stats();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener, std::future::pending()));
    (addr, stats)
}

/// A connection from `from`; `None` when the server reset it before the
/// connect returned (a refused connection, closed that fast).
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> Option<TcpStream> {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from((from, 0))).unwrap();
    match s.connect(to).await {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
        Err(e) => panic!("connect: {e}"),
    }
}

/// Polls `cond` until it holds; a generous bound only so that a broken server
/// fails the test instead of hanging it (no speed is asserted).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

fn load(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Whether the server has closed the connection (EOF or reset), waiting for it.
async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_and_slowloris_connections_do_not_starve_a_real_client() {
    raise_nofile(16_384);
    let mut limits = HttpLimits::new();
    limits.max_connections = 1000;
    limits.max_connections_per_address = 200;
    limits.header_read_timeout = Duration::from_secs(3);
    let (addr, stats) = serve(limits, None).await;

    // 3,000 idle connections from one address: 200 are held, the rest closed
    // at once.
    let idle_from = Ipv4Addr::new(127, 0, 0, 2);
    let mut idle = Vec::new();
    for _ in 0..3000 {
        idle.extend(connect_from(idle_from, addr).await);
    }
    eventually("every idle connection admitted or refused", || {
        load(&stats.served) + load(&stats.refused_per_address) >= 3000
    })
    .await;
    assert_eq!(load(&stats.served), 200);
    assert_eq!(load(&stats.refused_per_address), 2800);
    assert_eq!(load(&stats.refused_total), 0);

    // Slowloris from three more addresses: headers trickled a line at a time.
    let mut slow = Vec::new();
    for a in 3..6 {
        for _ in 0..200 {
            let mut s = connect_from(Ipv4Addr::new(127, 0, 0, a), addr)
                .await
                .expect("under the limits");
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            slow.push(s);
        }
    }
    let trickle = tokio::spawn(async move {
        // Keeps sending header lines (progress, so no stall) until the server
        // gives up on the headers and the writes fail.
        let mut alive = slow;
        for _ in 0..600 {
            let mut still = Vec::new();
            for mut s in alive {
                if s.write_all(b"X-Slow: 1\r\n").await.is_ok() {
                    still.push(s);
                }
            }
            alive = still;
            if alive.is_empty() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        false
    });
    eventually("the slowloris connections admitted", || {
        load(&stats.served) >= 800
    })
    .await;

    // While they are all held, a real client from its own address is served.
    let real = Ipv4Addr::new(127, 0, 0, 9);
    let resp = client::request(
        addr,
        Some(IpAddr::V4(real)),
        client::Method::GET,
        "/healthz",
        &[],
        Vec::new(),
    )
    .await
    .expect("the real client is served");
    assert_eq!(resp.status, 200);
    let metrics = client::request(
        addr,
        Some(IpAddr::V4(real)),
        client::Method::GET,
        "/metrics",
        &[],
        Vec::new(),
    )
    .await
    .unwrap()
    .text();
    for line in [
        "tinker_http_connections_refused_total{reason=\"per_address_limit\"} 2800",
        "tinker_http_connections_refused_total{reason=\"total_limit\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line:?} in\n{metrics}");
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tinker_http_connections_open ")),
        "{metrics}"
    );

    // The idle ones and the slowloris ones are closed by the header timeout.
    for s in idle.iter_mut() {
        assert!(closed_by_server(s).await);
    }
    assert!(
        trickle.await.unwrap(),
        "every trickling connection was cut off"
    );
    eventually("no connection left open", || load(&stats.open) == 0).await;
    assert!(
        load(&stats.header_timeouts) >= 800,
        "{} header timeouts",
        load(&stats.header_timeouts)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_total_limit_are_closed_and_counted() {
    raise_nofile(8192);
    let mut limits = HttpLimits::new();
    limits.max_connections = 1000;
    limits.max_connections_per_address = 30;
    limits.header_read_timeout = Duration::from_secs(600);
    let (addr, stats) = serve(limits, None).await;
    // 50 addresses with 30 each: no address is over its limit, together they
    // are 500 over the total.
    let mut held = Vec::new();
    for a in 0..50u8 {
        for _ in 0..30 {
            held.extend(connect_from(Ipv4Addr::new(127, 0, 1, a + 1), addr).await);
        }
    }
    eventually("every connection admitted or refused", || {
        load(&stats.served) + load(&stats.refused_total) >= 1500
    })
    .await;
    assert_eq!(load(&stats.served), 1000);
    assert_eq!(load(&stats.open), 1000);
    assert_eq!(load(&stats.refused_total), 500);
    assert_eq!(load(&stats.refused_per_address), 0);
    // The admitted ones are served; the refused ones were closed.
    let (mut answered, mut closed) = (0, 0);
    for s in held.iter_mut() {
        let _ = s
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        if out.starts_with(b"HTTP/1.1 200") {
            answered += 1;
        } else if out.is_empty() {
            closed += 1;
        }
    }
    assert_eq!(answered, 1000);
    assert_eq!(
        closed + (1500 - held.len()),
        500,
        "reset before or after connect"
    );
    drop(held);
    eventually("slots freed when clients leave", || load(&stats.open) == 0).await;
    let resp = client::request(addr, None, client::Method::GET, "/healthz", &[], Vec::new())
        .await
        .expect("served once the attackers left");
    assert_eq!(resp.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    // Larger than what the loopback's socket buffers take in.
    std::fs::write(dir.path().join("big.img"), vec![7u8; 48 << 20]).unwrap();
    let mut limits = HttpLimits::new();
    limits.stall_timeout = Duration::from_secs(1);
    let (addr, stats) = serve(limits, Some(dir.path())).await;
    let mut s = connect_from(Ipv4Addr::new(127, 0, 2, 1), addr)
        .await
        .unwrap();
    s.write_all(b"GET /assets/big.img HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Never reads: the server's writes stop making progress.
    eventually("the slow reader's connection closed", || {
        load(&stats.stalled) == 1 && load(&stats.open) == 0
    })
    .await;
    // What it was sent is bounded by the socket buffers, not the file.
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert!(got < 48 << 20, "{got} bytes: the whole file went out");
}

/// Kept-alive connections past the idle cap are closed, the one idle longest
/// first, and counted; the newest stay open and serve their next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_cap_are_closed_oldest_first() {
    let mut limits = HttpLimits::new();
    limits.max_idle_connections = 3;
    let (addr, stats) = serve(limits, None).await;
    let mut conns = Vec::new();
    for i in 0..5u8 {
        let from = IpAddr::from(Ipv4Addr::new(127, 0, 9, i + 1));
        let mut c = client::HttpConnection::connect(addr, Some(from))
            .await
            .unwrap();
        assert_eq!(c.get("/healthz").await.unwrap().status, 200);
        conns.push(c);
    }
    eventually("the two oldest idle connections closed", || {
        conns[0].is_closed() && conns[1].is_closed()
    })
    .await;
    assert_eq!(load(&stats.idle_closed), 2);
    for c in &mut conns[2..] {
        assert!(!c.is_closed());
        assert_eq!(c.get("/healthz").await.unwrap().status, 200, "kept alive");
    }
    assert_eq!(load(&stats.idle_closed), 2, "three idle: none past the cap");
}
