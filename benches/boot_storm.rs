//! The boot storm: N simulated machines (10,000 by default) go through the whole
//! lifecycle at once against a control plane of separate processes on this
//! machine: DHCP DORA through rack relays, TFTP of the iPXE binary, the iPXE
//! script, the worker API (claims and reports for a four-action template), and the
//! installed OS's metadata fetch from its own address. Configurations: the
//! embedded store with one replica, PostgreSQL with one and with three replicas,
//! and the embedded store at twice the machines (back-pressure).
//!
//! `cargo bench --bench boot_storm` (root: it starts PostgreSQL as `postgres`).
//! `TINKER_STORM_MACHINES=N` changes N; `TINKER_STORM_CONFIGS=redb,pg1,pg3,redb2x`
//! picks configurations. Writes its section of BENCHMARKS.md.
//!
//! The control plane runs in child processes (this binary re-executed with
//! `--serve`), so its peak memory is its own. Every machine uses its own loopback
//! address (127.x.y.z) for TFTP and HTTP, as a real machine has its own address.

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tinker::boot::dhcp::client::{self as dhcp_client, Dora, PxeClient};
use tinker::boot::http::client::{HttpConnection, Method};
use tinker::boot::tftp::client as tftp;
use tinker::core::clock::SystemClock;
use tinker::core::model::{Hardware, Template, Workflow};
use tinker::core::worker_api::{ActionReport, NextActionRequest, NextActionResponse};
use tinker::core::{MacAddr, Precondition, WorkflowStore};
use tokio::net::UdpSocket;

const TEMPLATE: &str = r#"version: "0.1"
name: storm
global_timeout: 3600
tasks:
  - name: install
    worker: "{{.device_1}}"
    actions:
      - {name: wipe-disks, image: quay.io/tinkerbell/actions/exec, timeout: 600}
      - {name: stream-image, image: quay.io/tinkerbell/actions/image2disk, timeout: 600}
      - {name: write-netplan, image: quay.io/tinkerbell/actions/writefile, timeout: 600}
      - {name: kexec, image: quay.io/tinkerbell/actions/kexec, timeout: 600}
"#;
const RACKS: u32 = 40;
const SECRET: &[u8] = b"boot-storm-worker-secret";

fn mac(i: u32) -> MacAddr {
    let b = i.to_be_bytes();
    MacAddr([0x02, 0x5b, b[0], b[1], b[2], b[3]])
}

/// Machine `i`'s address: 127.(100 + i / 62500).(i / 250 % 250).(i % 250 + 2).
fn ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(
        127,
        100 + (i / 62_500) as u8,
        (i / 250 % 250) as u8,
        (i % 250 + 2) as u8,
    )
}

fn rack_giaddr(r: u32) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 50 + r as u8, 1)
}

// ---------------------------------------------------------------------------
// The control-plane process.

async fn serve(store_url: &str, replica: &str, peers: &str, relay_port: u16) -> Result<(), String> {
    let store: Arc<dyn WorkflowStore> = if let Some(p) = store_url.strip_prefix("redb:") {
        Arc::new(
            tinker::store::RedbStore::open(p)
                .await
                .map_err(|e| e.to_string())?,
        )
    } else {
        Arc::new(
            tinker::store::PostgresStore::connect(store_url)
                .await
                .map_err(|e| e.to_string())?,
        )
    };
    let listeners = tinker::control_plane::Listeners::bind(Ipv4Addr::LOCALHOST, 0, 0, 0)
        .await
        .map_err(|e| e.to_string())?;
    let mut plane = tinker::control_plane::ControlPlane::new(
        store,
        Arc::new(tinker::bmc::MockConnector::new()),
        Ipv4Addr::LOCALHOST,
        tinker::boot::credentials::secret_from_bytes(SECRET),
    );
    plane.engine.replica = replica.to_string();
    // Every replica's name: each workflow's changes are acted on at once by
    // its one owner among them, by the others only after the takeover delay.
    plane.engine.peers = peers.split(',').map(str::to_string).collect();
    plane.relay_port = relay_port;
    plane.heartbeat_seconds = 60;
    let ipxe = std::fs::read("/usr/lib/ipxe/undionly.kpxe").unwrap_or_else(|_| vec![0x55; 70_000]);
    plane.tftp_files = tinker::boot::tftp::FileSource::empty().with_file("undionly.kpxe", ipxe);
    println!(
        "ready http={} dhcp={} tftp={}",
        listeners.http.local_addr().unwrap(),
        listeners.dhcp.local_addr().unwrap(),
        listeners.tftp.local_addr().unwrap()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    plane
        .serve(listeners, std::future::pending())
        .await
        .map_err(|e| e.to_string())
}

struct Replica {
    child: Child,
    http: SocketAddr,
    dhcp: SocketAddr,
    tftp: SocketAddr,
}

impl Replica {
    fn start(store: &str, name: &str, peers: &str, relay_port: u16) -> Replica {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--serve", store, name, peers, &relay_port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let get = |k: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap_or_else(|| panic!("replica {name}: {line:?}"))
                .parse()
                .unwrap()
        };
        Replica {
            http: get("http="),
            dhcp: get("dhcp="),
            tftp: get("tftp="),
            child,
        }
    }

    /// Peak resident memory, in MiB.
    fn peak_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }
}

/// The fields of `/proc/PID/stat` after the command name (which may hold
/// spaces): field N of the whole line is at N - 3.
fn stat_fields(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let (_, rest) = s.rsplit_once(") ")?;
            Some(rest.split_whitespace().map(str::to_string).collect())
        })
        .unwrap_or_default()
}

/// CPU seconds (user + system) of process `pid`, with `children`: also those
/// of its children that it has waited for (PostgreSQL's exited backends).
fn cpu_seconds(pid: u32, children: bool) -> f64 {
    let fields = stat_fields(pid);
    let at = |n: usize| -> f64 {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .unwrap_or(0.0)
    };
    // utime, stime, cutime, cstime: fields 14 to 17.
    let ticks = at(14) + at(15) + if children { at(16) + at(17) } else { 0.0 };
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU seconds of a PostgreSQL server: the postmaster with the backends it
/// has reaped, and those still running.
fn postgres_cpu_seconds(postmaster: u32) -> f64 {
    let running: f64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        // Field 4: the parent.
        .filter(|&pid| stat_fields(pid).get(1).and_then(|f| f.parse().ok()) == Some(postmaster))
        .map(|pid| cpu_seconds(pid, false))
        .sum();
    cpu_seconds(postmaster, true) + running
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The machines.

#[derive(Default)]
struct Stats {
    dhcp_ms: Mutex<Vec<f64>>,
    api_ms: Mutex<Vec<f64>>,
    tftp_ms: Mutex<Vec<f64>>,
    requests: AtomicU64,
    dhcp_retries: AtomicU64,
    pxe_restarts: AtomicU64,
    /// PXE restarts after a TFTP request went unanswered through all its tries.
    tftp_restarts: AtomicU64,
    api_503: AtomicU64,
    /// Worker-API requests that found no connection (refused or reset).
    api_conn_errors: AtomicU64,
    errors: Mutex<Vec<String>>,
}

/// A rack's relay agent: one socket, replies matched to machines by `xid`.
struct Relay {
    socket: Arc<UdpSocket>,
    waiting: Arc<Mutex<HashMap<u32, tokio::sync::mpsc::UnboundedSender<Vec<u8>>>>>,
}

impl Relay {
    async fn bind(giaddr: Ipv4Addr, port: u16) -> Relay {
        let socket = Arc::new(
            tinker::boot::dhcp::server::bind_udp(SocketAddr::from((giaddr, port)), None).unwrap(),
        );
        let waiting: Arc<Mutex<HashMap<u32, tokio::sync::mpsc::UnboundedSender<_>>>> =
            Arc::default();
        let (s, w) = (socket.clone(), waiting.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            while let Ok((n, _)) = s.recv_from(&mut buf).await {
                if let Some(m) = dhcp_client::decode(&buf[..n])
                    && let Some(tx) = w.lock().unwrap().get(&m.xid())
                {
                    let _ = tx.send(buf[..n].to_vec());
                }
            }
        });
        Relay { socket, waiting }
    }
}

/// One machine's view of its rack's relay, as the DHCP client's link: sends
/// through the relay's socket, receives the replies the relay matched to its
/// `xid`, and times each answer.
struct RelayLink<'a> {
    relay: &'a Relay,
    server: SocketAddr,
    replies: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    sent_at: Instant,
    stats: &'a Stats,
}

#[async_trait::async_trait]
impl dhcp_client::Link for RelayLink<'_> {
    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.sent_at = Instant::now();
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.relay
            .socket
            .send_to(bytes, self.server)
            .await
            .map(drop)
    }

    async fn recv(&mut self) -> std::io::Result<Vec<u8>> {
        let reply = self.replies.recv().await.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the relay stopped")
        })?;
        self.stats
            .dhcp_ms
            .lock()
            .unwrap()
            .push(self.sent_at.elapsed().as_secs_f64() * 1000.0);
        Ok(reply)
    }
}

/// DISCOVER/OFFER/REQUEST/ACK through the rack's relay by the one DHCP client,
/// on a PXE ROM's retransmission schedule.
async fn dora(
    relay: &Relay,
    giaddr: Ipv4Addr,
    server: SocketAddr,
    mac: MacAddr,
    xid: u32,
    stats: &Stats,
) -> Result<Ipv4Addr, String> {
    let (tx, replies) = tokio::sync::mpsc::unbounded_channel();
    relay.waiting.lock().unwrap().insert(xid, tx);
    let mut exchange = Dora::new(PxeClient::new(mac, 0).relayed(giaddr), xid);
    let mut link = RelayLink {
        relay,
        server,
        replies,
        sent_at: Instant::now(),
        stats,
    };
    let result = dhcp_client::run(&mut exchange, &mut link, &SystemClock).await;
    stats
        .dhcp_retries
        .fetch_add(u64::from(exchange.retransmissions()), Ordering::Relaxed);
    relay.waiting.lock().unwrap().remove(&xid);
    result.map(|ack| ack.address).map_err(|e| e.to_string())
}

/// An HTTP/1.1 connection (the one test client, `tinker::boot::http::client`)
/// from a machine's own address, kept alive between calls as the agent's HTTP
/// client does (reopened when the server closes it); iPXE and the installed OS
/// make one request on one of their own.
struct KeepAlive {
    from: Ipv4Addr,
    to: SocketAddr,
    conn: Option<HttpConnection>,
}

impl KeepAlive {
    fn new(from: Ipv4Addr, to: SocketAddr) -> Self {
        KeepAlive {
            from,
            to,
            conn: None,
        }
    }

    /// Status, `Retry-After` and body; `prefer`: an RFC 7240 `Prefer` value.
    async fn request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        prefer: Option<&str>,
        body: &[u8],
    ) -> Result<(u16, Option<u64>, Vec<u8>), String> {
        let method: Method = method.parse().map_err(|e| format!("{e}"))?;
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        if let Some(p) = prefer {
            headers.push(("prefer", p));
        }
        let mut last = String::new();
        for _ in 0..2 {
            // The server closes idle connections past its cap (and after its
            // idle timeout): a closed one is replaced before sending.
            if self.conn.as_ref().is_some_and(HttpConnection::is_closed) {
                self.conn = None;
            }
            if self.conn.is_none() {
                self.conn = Some(
                    HttpConnection::connect(self.to, Some(self.from.into()))
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            let conn = self.conn.as_mut().expect("connected above");
            match conn
                .send(method.clone(), path, &headers, body.to_vec())
                .await
            {
                Ok(resp) => {
                    if resp.header("connection") == Some("close") {
                        self.conn = None;
                    }
                    let retry_after = resp.header("retry-after").and_then(|v| v.parse().ok());
                    return Ok((resp.status, retry_after, resp.body.to_vec()));
                }
                Err(e) => {
                    // The server closed an idle connection: open a new one.
                    self.conn = None;
                    last = e.to_string();
                }
            }
        }
        Err(last)
    }
}

/// A timed worker-API call, retried on 503 after `Retry-After` (the agent's way).
/// `wait`: a question for work that may wait for it (`Prefer: wait=20`, as
/// the agent asks); its time is not a latency, so it is not among the timed.
async fn api(
    conn: &mut KeepAlive,
    path: &str,
    token: &str,
    wait: bool,
    body: Vec<u8>,
    stats: &Stats,
) -> Result<Vec<u8>, String> {
    let prefer = wait.then_some("wait=20");
    let from = conn.from;
    let mut backoff = Duration::from_millis(200);
    // The agent backs off and asks again for as long as it runs; here, for up
    // to ten minutes.
    let since = Instant::now();
    while since.elapsed() < Duration::from_secs(600) {
        let t = Instant::now();
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let (status, retry_after, resp) =
            match conn.request("POST", path, Some(token), prefer, &body).await {
                Ok(r) => r,
                // Unreachable (refused, reset): the agent backs off and asks again.
                Err(_) => {
                    stats.api_conn_errors.fetch_add(1, Ordering::Relaxed);
                    let jitter = Duration::from_millis((from.octets()[3] as u64 * 7) % 500);
                    tokio::time::sleep(backoff + jitter).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
        if !wait {
            stats
                .api_ms
                .lock()
                .unwrap()
                .push(t.elapsed().as_secs_f64() * 1000.0);
        }
        match status {
            200 => return Ok(resp),
            503 => {
                stats.api_503.fetch_add(1, Ordering::Relaxed);
                let wait = retry_after.map(Duration::from_secs).unwrap_or(backoff);
                // Jitter, so shed workers do not come back in one wave.
                let jitter = Duration::from_millis((from.octets()[3] as u64 * 7) % 500);
                tokio::time::sleep(wait.min(Duration::from_secs(5)) + jitter).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            other => {
                return Err(format!(
                    "{path}: HTTP {other}: {}",
                    String::from_utf8_lossy(&resp)
                ));
            }
        }
    }
    Err(format!("{path}: still overloaded after ten minutes"))
}

/// One GET on a connection of its own, tried again a second later (then two,
/// up to ten tries) when the server cannot be reached: iPXE retries its
/// script (or the ROM its boot), and cloud-init waits for the metadata
/// service for minutes.
async fn fetch_retrying(
    me: Ipv4Addr,
    http_addr: SocketAddr,
    path: &str,
    stats: &Stats,
) -> Result<(u16, Option<u64>, Vec<u8>), String> {
    let mut tries = 0u64;
    loop {
        match KeepAlive::new(me, http_addr)
            .request("GET", path, None, None, &[])
            .await
        {
            Ok(r) => return Ok(r),
            Err(e) if tries >= 10 => return Err(e),
            Err(_) => {
                tries += 1;
                stats.api_conn_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(tries.min(5))).await;
            }
        }
    }
}

async fn machine(
    i: u32,
    replica: &(SocketAddr, SocketAddr, SocketAddr),
    relay: &Relay,
    stats: &Stats,
) -> Result<(), String> {
    let (http_addr, dhcp_addr, tftp_addr) = *replica;
    let (mac, me) = (mac(i), ip(i));
    let giaddr = rack_giaddr(i % RACKS);
    // A ROM that gives up (no DHCP answer after its four tries, or no TFTP
    // answer after its six) hands over to the BIOS, which tries its boot order
    // again: PXE once more, for up to ten minutes here.
    let since = Instant::now();
    let mut round = 0u32;
    let ipxe = loop {
        let leased = match dora(
            relay,
            giaddr,
            dhcp_addr,
            mac,
            (0x5b00_0000 ^ i).wrapping_add(round << 24),
            stats,
        )
        .await
        {
            Ok(ip) => ip,
            Err(e) if since.elapsed() > Duration::from_secs(600) => return Err(e),
            Err(_) => {
                stats.pxe_restarts.fetch_add(1, Ordering::Relaxed);
                round += 1;
                continue;
            }
        };
        if leased != me {
            return Err(format!("DHCP gave {leased}, not {me}"));
        }
        let t = Instant::now();
        stats.requests.fetch_add(1, Ordering::Relaxed);
        // From the machine's own address, as for HTTP: the server's per-address
        // transfer limit counts each machine apart. The client retransmits its
        // request on a PXE ROM's schedule (the server sheds by not answering).
        match tftp::fetch_from(
            tftp_addr,
            Some(me.into()),
            "undionly.kpxe",
            Some(1428),
            Some(8),
            &SystemClock,
        )
        .await
        {
            Ok(ipxe) => {
                stats
                    .tftp_ms
                    .lock()
                    .unwrap()
                    .push(t.elapsed().as_secs_f64() * 1000.0);
                break ipxe;
            }
            Err(tftp::FetchError::NoAnswer { .. })
                if since.elapsed() <= Duration::from_secs(600) =>
            {
                stats.tftp_restarts.fetch_add(1, Ordering::Relaxed);
                round += 1;
            }
            Err(e) => return Err(format!("TFTP: {e}")),
        }
    };
    if ipxe.len() < 1000 {
        return Err("short iPXE binary".into());
    }
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let (status, _, script) =
        fetch_retrying(me, http_addr, &format!("/ipxe/{mac}/auto.ipxe"), stats).await?;
    let script = String::from_utf8_lossy(&script).to_string();
    let token = script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("tinker_token="))
        .ok_or_else(|| format!("script (HTTP {status}) without a token: {script}"))?
        .to_string();
    let worker = mac.to_string();
    let mut conn = KeepAlive::new(me, http_addr);
    let mut done = 0;
    let mut asked = 0;
    while done < 4 {
        asked += 1;
        let ask = serde_json::to_vec(&NextActionRequest {
            worker_id: worker.clone(),
            request_id: Some(format!("storm-{i}-{asked}")),
        })
        .unwrap();
        let path = format!("/v1/workers/{worker}/next-action");
        let resp = api(&mut conn, &path, &token, true, ask, stats).await?;
        match serde_json::from_slice::<NextActionResponse>(&resp) {
            Ok(NextActionResponse::Action(a)) => {
                let report = ActionReport {
                    worker_id: worker.clone(),
                    workflow_id: a.workflow_id.clone(),
                    action_index: a.action_index,
                    attempt: a.attempt,
                    outcome: tinker::core::state::ActionOutcome::Success,
                    started_at: None,
                    finished_at: None,
                };
                let path = format!("/v1/workers/{worker}/report");
                api(
                    &mut conn,
                    &path,
                    &token,
                    false,
                    serde_json::to_vec(&report).unwrap(),
                    stats,
                )
                .await?;
                done += 1;
            }
            Ok(NextActionResponse::Wait {
                retry_after_seconds,
                ..
            }) => {
                tokio::time::sleep(Duration::from_millis(
                    (retry_after_seconds as u64 * 1000).clamp(250, 2000),
                ))
                .await
            }
            Err(e) => return Err(format!("next-action: {e}")),
        }
    }
    // The installed OS reads its metadata from its own address.
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let (status, _, id) =
        fetch_retrying(me, http_addr, "/2009-04-04/meta-data/instance-id", stats).await?;
    if status != 200 || id != format!("i-{i}").as_bytes() {
        return Err(format!(
            "metadata: HTTP {status} {:?}",
            String::from_utf8_lossy(&id)
        ));
    }
    Ok(())
}

async fn load(store: Arc<dyn WorkflowStore>, n: u32) {
    store
        .put(Template::new("storm", TEMPLATE).into(), Precondition::Any)
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    for i in 0..n {
        let (store, sem) = (store.clone(), sem.clone());
        tasks.spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let name = format!("m{i}");
            let mut hw = Hardware::new(&name, mac(i), ip(i), "255.0.0.0");
            // As in most Tinkerbell Hardware: netboot allowed from the start, so a
            // machine that powers on by itself (a row switched on at once) boots.
            hw.set_allow_pxe(true);
            if let Some(d) = hw.spec.interfaces[0].dhcp.as_mut() {
                d.arch = Some("x86_64".into());
            }
            hw.spec.metadata = Some(
                serde_json::from_value(serde_json::json!({"instance": {"id": format!("i-{i}")}}))
                    .unwrap(),
            );
            store.put(hw.into(), Precondition::Any).await.unwrap();
            store
                .put(
                    Workflow::new(&format!("{name}-install"), "storm", &name, mac(i)).into(),
                    Precondition::Any,
                )
                .await
                .unwrap();
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// The kernel's count of UDP datagrams dropped for a full receive buffer.
fn udp_receive_buffer_errors() -> i64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs one configuration; its table row.
async fn run(
    label: &str,
    store_url: &str,
    replicas: usize,
    n: u32,
    postmaster: Option<u32>,
) -> String {
    eprintln!("== {label}: {n} machines, {replicas} replica(s)");
    let relay_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let peers = (0..replicas)
        .map(|k| format!("cp{k}"))
        .collect::<Vec<_>>()
        .join(",");
    let cps: Vec<Replica> = (0..replicas)
        .map(|k| Replica::start(store_url, &format!("cp{k}"), &peers, relay_port))
        .collect();
    let mut relays = Vec::new();
    for r in 0..RACKS {
        relays.push(Arc::new(Relay::bind(rack_giaddr(r), relay_port).await));
    }
    let stats = Arc::new(Stats::default());
    let udp_drops_before = udp_receive_buffer_errors();
    let pg_cpu_before = postmaster.map(postgres_cpu_seconds).unwrap_or(0.0);
    let generator_cpu_before = cpu_seconds(std::process::id(), false);
    let cp_cpu_before: f64 = cps.iter().map(|c| cpu_seconds(c.child.id(), false)).sum();
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(n as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed:>4} {bar:40} {pos}/{len} machines provisioned",
        )
        .unwrap(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let cp = &cps[i as usize % replicas];
        let target = (cp.http, cp.dhcp, cp.tftp);
        let relay = relays[(i % RACKS) as usize].clone();
        let (stats, bar) = (stats.clone(), bar.clone());
        tasks.spawn(async move {
            if let Err(e) = machine(i, &target, &relay, &stats).await {
                stats.errors.lock().unwrap().push(format!("m{i}: {e}"));
            }
            bar.inc(1);
        });
    }
    while tasks.join_next().await.is_some() {}
    let total = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    // The engine's last steps (netboot off, disk boot, power cycle) follow each
    // machine's last report; wait for them too.
    let metric = |cp: &Replica, name: &str| -> f64 {
        let text = std::process::Command::new("curl")
            .args(["-s", &format!("http://{}/metrics", cp.http)])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let dhcp_dropped: f64 = cps
        .iter()
        .map(|c| metric(c, "tinker_dhcp_overload_drops_total"))
        .sum();
    let shed: f64 = cps
        .iter()
        .map(|c| metric(c, "tinker_worker_api_shed_total"))
        .sum();
    let sum = |name: &str| -> f64 { cps.iter().map(|c| metric(c, name)).sum() };
    let (waits, woken, ran_out, lags) = (
        sum("tinker_worker_api_waits_total"),
        sum("tinker_worker_api_waits_woken_total"),
        sum("tinker_worker_api_waits_ran_out_total"),
        sum("tinker_worker_api_wait_feed_lags_total"),
    );
    let tftp_shed: f64 = cps
        .iter()
        .map(|c| {
            metric(c, "tinker_tftp_shed_total") + metric(c, "tinker_tftp_shed_per_address_total")
        })
        .sum();
    let peak: f64 = cps.iter().map(Replica::peak_mib).sum();
    let cp_cpu: f64 = cps
        .iter()
        .map(|c| cpu_seconds(c.child.id(), false))
        .sum::<f64>()
        - cp_cpu_before;
    let pg_cpu = postmaster.map(postgres_cpu_seconds).unwrap_or(0.0) - pg_cpu_before;
    let generator_cpu = cpu_seconds(std::process::id(), false) - generator_cpu_before;
    let kernel_drops = udp_receive_buffer_errors() - udp_drops_before;
    let errors = stats.errors.lock().unwrap().clone();
    for e in errors.iter().take(5) {
        eprintln!("  error: {e}");
    }
    let requests = stats.requests.load(Ordering::Relaxed);
    let mut dhcp = stats.dhcp_ms.lock().unwrap().clone();
    let mut api = stats.api_ms.lock().unwrap().clone();
    let mut tftp_ms = stats.tftp_ms.lock().unwrap().clone();
    let row = format!(
        "| {label} | {n} | {replicas} | {}/{n} | **{total:.1} s** | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} | {:.0} / {:.0} | {:.0} | {peak:.0} MiB | {cp_cpu:.0} / {pg_cpu:.0} / {generator_cpu:.0} | {} retransmissions, {} PXE restarts, {dhcp_dropped:.0} shed, {kernel_drops} kernel drops | {tftp_shed:.0} shed, {} PXE restarts | {} x 503 ({shed:.0} shed), {} unreachable, {waits:.0} waits ({woken:.0} woken, {ran_out:.0} ran out, {lags:.0} feed lags) | {} |\n",
        n as usize - errors.len(),
        pct(&mut dhcp, 0.5),
        pct(&mut dhcp, 0.99),
        pct(&mut dhcp, 1.0),
        pct(&mut api, 0.5),
        pct(&mut api, 0.99),
        pct(&mut api, 1.0),
        pct(&mut tftp_ms, 0.5),
        pct(&mut tftp_ms, 0.99),
        requests as f64 / total,
        stats.dhcp_retries.load(Ordering::Relaxed),
        stats.pxe_restarts.load(Ordering::Relaxed),
        stats.tftp_restarts.load(Ordering::Relaxed),
        stats.api_503.load(Ordering::Relaxed),
        stats.api_conn_errors.load(Ordering::Relaxed),
        errors.len(),
    );
    eprint!("{row}");
    drop(cps);
    row
}

/// Resets PostgreSQL's statement statistics (`label` None), or prints where
/// the database's time went since: the statements by total time.
async fn statements(url: &str, label: Option<&str>) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let Some(label) = label else {
        client
            .batch_execute(
                "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()",
            )
            .await
            .unwrap();
        return;
    };
    let rows = client
        .query(
            "SELECT calls, total_exec_time, mean_exec_time, rows, \
                    sum(total_exec_time) OVER (), \
                    left(regexp_replace(query, '\\s+', ' ', 'g'), 100) \
             FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             ORDER BY total_exec_time DESC LIMIT 12",
            &[],
        )
        .await
        .unwrap();
    let all: f64 = rows.first().map(|r| r.get(4)).unwrap_or(0.0);
    println!(
        "\nPostgreSQL statements, {label} (pg_stat_statements; {:.1} s of execution in all):\n\n| calls | total s | share | mean ms | rows | statement |\n|---:|---:|---:|---:|---:|---|",
        all / 1000.0
    );
    for r in rows {
        let (calls, total, mean, n, query): (i64, f64, f64, i64, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(5));
        println!(
            "| {calls} | {:.1} | {:.0}% | {mean:.2} | {n} | `{}` |",
            total / 1000.0,
            100.0 * total / all.max(1e-9),
            query.replace('|', "\\|")
        );
    }
}

/// Raises this process's open-file limit (children inherit it): 20,000
/// simulated machines keep their worker connections open while they wait
/// for work, beside their TFTP sockets, past a shell's usual 20,000.
fn raise_open_file_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let want = 262_144;
    let now = getrlimit(Resource::Nofile);
    if now.current.is_some_and(|c| c >= want) {
        return;
    }
    let limit = Rlimit {
        current: Some(want),
        maximum: Some(want.max(now.maximum.unwrap_or(0))),
    };
    if let Err(e) = setrlimit(Resource::Nofile, limit) {
        eprintln!("could not raise the open-file limit to {want}: {e}");
    }
}

fn main() {
    raise_open_file_limit();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let r = rt.block_on(serve(
            &args[2],
            &args[3],
            &args[4],
            args[5].parse().unwrap(),
        ));
        if let Err(e) = r {
            eprintln!("control plane: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.iter().any(|a| a == "--list") || args.iter().any(|a| a == "--test") {
        return; // `cargo test --benches` runs benchmarks in test mode: nothing to do
    }
    let n: u32 = std::env::var("TINKER_STORM_MACHINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let configs =
        std::env::var("TINKER_STORM_CONFIGS").unwrap_or_else(|_| "redb,pg1,pg3,redb2x".into());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rows = String::new();
    let mut pg: Option<tinker::store::testing::TempPostgres> = None;
    for config in configs.split(',') {
        let dir = tempfile::tempdir().unwrap();
        // `on_postgres`: the run's database is the cluster `pg` (CPU and
        // statements reported).
        let (label, url, replicas, machines, on_postgres) = match config {
            "redb" | "redb2x" => {
                let url = format!("redb:{}", dir.path().join("tinker.redb").display());
                let machines = if config == "redb2x" { 2 * n } else { n };
                let label = if config == "redb2x" {
                    "embedded (redb), twice the machines".to_string()
                } else {
                    "embedded (redb)".to_string()
                };
                (label, url, 1, machines, false)
            }
            "pg1" | "pg3" => {
                // A fresh database for each run, in one throwaway cluster.
                // pg_stat_statements: where the database's time goes (printed
                // after each PostgreSQL run).
                let cluster = pg.get_or_insert_with(|| {
                    tinker::store::testing::TempPostgres::start_with(&[
                        "shared_preload_libraries=pg_stat_statements",
                    ])
                    .expect("PostgreSQL")
                });
                let db = format!("storm_{config}");
                let admin = cluster.url.clone();
                rt.block_on(async {
                    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                        .await
                        .unwrap();
                    tokio::spawn(conn);
                    for sql in [
                        format!("DROP DATABASE IF EXISTS {db}"),
                        format!("CREATE DATABASE {db}"),
                    ] {
                        client.batch_execute(&sql).await.unwrap();
                    }
                });
                let url = admin.replace("/postgres", &format!("/{db}"));
                let replicas = if config == "pg3" { 3 } else { 1 };
                (
                    format!("PostgreSQL, {replicas} replica(s)"),
                    url,
                    replicas,
                    n,
                    true,
                )
            }
            other => panic!("unknown configuration {other}"),
        };
        // Load the machines, then close the store so the replicas can open it.
        rt.block_on(async {
            let store: Arc<dyn WorkflowStore> = match url.strip_prefix("redb:") {
                Some(p) => Arc::new(tinker::store::RedbStore::open(p).await.unwrap()),
                None => Arc::new(tinker::store::PostgresStore::connect(&url).await.unwrap()),
            };
            load(store, machines).await;
        });
        let postmaster = pg.as_ref().filter(|_| on_postgres);
        if postmaster.is_some() {
            rt.block_on(statements(&url, None));
        }
        rows.push_str(&rt.block_on(run(
            &label,
            &url,
            replicas,
            machines,
            postmaster.and_then(|c| c.pid()),
        )));
        if postmaster.is_some() {
            rt.block_on(statements(&url, Some(&label)));
        }
    }
    let body = format!(
        "`cargo bench --bench boot_storm` (root; 2 cores shared by the control plane and the load generator; each machine: DHCP DISCOVER/OFFER and REQUEST/ACK through one of {RACKS} rack relays, TFTP of undionly.kpxe (blksize 1428, windowsize 8), its iPXE script, next-action (long poll: `Prefer: wait=20`, as the agent asks) and report for each of 4 actions, its metadata from its own address; the worker's API calls on one kept-alive connection, the script and the metadata on one each; the engine's BMC steps against mock BMCs; worker API latency is of the reports, a next-action waits for work by design)\n\n| store | machines | replicas | provisioned | total | DHCP ms p50 / p99 / max | worker API ms p50 / p99 / max | TFTP ms p50 / p99 | requests/s | control-plane peak memory | CPU s: control plane / PostgreSQL / load generator | DHCP | TFTP | worker API | errors |\n|---|---:|---:|---:|---:|---|---|---|---:|---:|---|---|---|---|---:|\n{rows}\n"
    );
    support::write_section("boot_storm", "Boot storm", &body);
    println!("{body}");
}
