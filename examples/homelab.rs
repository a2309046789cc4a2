//! The reference stack, wired in one file: store, engine, BMCs, DHCP, TFTP, HTTP
//! (iPXE scripts, assets, metadata, worker API) and the worker agent.
//!
//! `cargo run --example homelab` provisions a simulated rack: eight machines,
//! each with a mock BMC, each a simulated client that speaks real DHCP (through a
//! relay, as racks do), TFTP and HTTP to our servers over loopback, runs the real
//! worker agent with the native actions, writes its "disk" to a file under the
//! data directory, then boots "from disk" and reads its metadata. It shows live
//! progress per machine and ends with a table and `provisioned N/N machines`.
//!
//! With `--config FILE` it is the real thing for a home lab (see
//! `examples/homelab/README.md`): it binds to an interface, serves DHCP (or
//! proxyDHCP), TFTP and HTTP, reads Tinkerbell YAML from a directory and picks up
//! changes, drives real BMCs (Rufio `Machine` objects, passwords from the
//! environment), and serves until Ctrl-C.
//!
//! Flags: `--machines N` (default 8), `--data DIR` (default `./tinker-data`; a
//! second run reuses it), `--hold SECONDS` (keep serving the status page after).
//! The status page's address (with its operator token) is printed at the start.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tinker::actions::NativeRuntime;
use tinker::actions::agent::{Agent, AgentConfig, RuntimeRouter};
use tinker::bmc::{MockBmc, MockCall, StaticConnector};
use tinker::boot::dhcp::engine::{client_request, decode_reply};
use tinker::boot::tftp::{FileSource, client as tftp};
use tinker::control_plane::{ControlPlane, Listeners};
use tinker::core::model::{Hardware, Template, Workflow};
use tinker::core::{
    BootDevice, MacAddr, PowerController, PowerState, Precondition, WorkflowStore, WorkflowStoreExt,
};
use tinker::store::RedbStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

#[path = "homelab/real.rs"]
mod real;

const TEMPLATE: &str = r#"version: "0.1"
name: homelab-install
global_timeout: 600
tasks:
  - name: os-installation
    worker: "{{.device_1}}"
    actions:
      - name: stream-image
        image: quay.io/tinkerbell/actions/image2disk:latest
        timeout: 300
        environment:
          IMG_URL: "{{.image_url}}"
          DEST_DISK: "{{.disk}}"
          COMPRESSED: true
      - name: check-disk
        image: tinker/exec
        timeout: 60
        command: ["sh", "-c", "test -s {{.disk}} && echo the disk holds $(wc -c < {{.disk}}) bytes"]
"#;

struct Args {
    machines: u8,
    data: PathBuf,
    hold: u64,
    config: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        machines: 8,
        data: PathBuf::from("tinker-data"),
        hold: 0,
        config: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(f) = it.next() {
        match f.as_str() {
            "--machines" => {
                a.machines = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| (1..=200).contains(n))
                    .ok_or("--machines needs 1 to 200")?
            }
            "--data" => {
                a.data = it
                    .next()
                    .map(PathBuf::from)
                    .ok_or("--data needs a directory")?
            }
            "--hold" => {
                a.hold = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--hold needs seconds")?
            }
            "--config" => {
                a.config = Some(
                    it.next()
                        .map(PathBuf::from)
                        .ok_or("--config needs a file")?,
                )
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?} (try --machines N, --data DIR)"
                ));
            }
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(config) = &a.config {
        return match real::run(config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(a).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn io<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// A boot image to install: 4 MiB of data and 4 MiB of zeros, gzip-compressed.
fn ensure_image(assets: &Path) -> Result<(), String> {
    let path = assets.join("os.img.gz");
    if path.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(assets).map_err(io("assets"))?;
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            &format!(
                "(head -c 4194304 /dev/urandom; head -c 4194304 /dev/zero) | gzip -1 > {}",
                path.display()
            ),
        ])
        .status()
        .map_err(io("gzip"))?;
    if out.success() {
        Ok(())
    } else {
        Err("could not make the boot image (needs sh and gzip)".into())
    }
}

fn secret(data: &Path) -> Result<Vec<u8>, String> {
    let p = data.join("worker-secret");
    if let Ok(s) = std::fs::read(&p) {
        return Ok(s);
    }
    let mut s = vec![0u8; 32];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut s))
        .map_err(io("random"))?;
    std::fs::write(&p, &s).map_err(io("secret"))?;
    Ok(s)
}

async fn run(a: Args) -> Result<bool, String> {
    std::fs::create_dir_all(a.data.join("disks")).map_err(io("data directory"))?;
    let data = a.data.canonicalize().map_err(io("data directory"))?;
    ensure_image(&data.join("assets"))?;
    let store: Arc<dyn WorkflowStore> = Arc::new(
        RedbStore::open(data.join("tinker.redb"))
            .await
            .map_err(|e| e.to_string())?,
    );
    let secret = secret(&data)?;
    let operator_token = tinker::boot::worker_api::worker_token(&secret, "operator");

    // Loopback, unprivileged ports: DHCP (and its relay), TFTP, HTTP.
    let dhcp_socket = UdpSocket::bind("127.0.0.1:0").await.map_err(io("DHCP"))?;
    let relay = Arc::new(tokio::sync::Mutex::new(
        UdpSocket::bind("127.0.0.1:0").await.map_err(io("relay"))?,
    ));
    let tftp_socket = UdpSocket::bind("127.0.0.1:0").await.map_err(io("TFTP"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io("HTTP"))?;
    let (dhcp_addr, tftp_addr) = (
        dhcp_socket.local_addr().unwrap(),
        tftp_socket.local_addr().unwrap(),
    );
    let relay_port = relay.lock().await.local_addr().unwrap().port();
    let http = format!("http://{}", listener.local_addr().unwrap());

    // The machines: Hardware in the store, a mock BMC each.
    let power = Arc::new(StaticConnector::new());
    let mut rack = Vec::new();
    store
        .put(
            Template::new("homelab-install", TEMPLATE).into(),
            Precondition::Any,
        )
        .await
        .map_err(|e| e.to_string())?;
    let run_id = jiff::Timestamp::now().as_second();
    for i in 0..a.machines {
        let name = format!("node{:02}", i + 1);
        let mac = MacAddr([0x02, 0x00, 0x00, 0x7e, 0x00, i + 1]);
        let ip = Ipv4Addr::new(127, 77, 0, 10 + i);
        let mut hw = Hardware::new(&name, mac, ip, "255.0.0.0");
        hw.set_allow_pxe(false);
        if let Some(m) = hw.spec.interfaces[0].dhcp.as_mut() {
            m.arch = Some("x86_64".into());
        }
        hw.spec.metadata = Some(
            serde_json::from_value(
                serde_json::json!({"instance": {"id": format!("i-{name}"), "hostname": name}}),
            )
            .unwrap(),
        );
        store
            .put(hw.into(), Precondition::Any)
            .await
            .map_err(|e| e.to_string())?;
        let bmc = MockBmc::new(&name);
        power.insert(&name, Arc::new(bmc.clone()));
        let mut wf = Workflow::new(&format!("{name}-{run_id}"), "homelab-install", &name, mac);
        wf.spec.hardware_map.insert(
            "disk".into(),
            data.join("disks")
                .join(format!("{name}.img"))
                .display()
                .to_string(),
        );
        wf.spec
            .hardware_map
            .insert("image_url".into(), format!("{http}/assets/os.img.gz"));
        store
            .put(wf.into(), Precondition::Any)
            .await
            .map_err(|e| e.to_string())?;
        rack.push((name, mac, ip, bmc));
    }

    // The services: one control-plane replica (see `tinker::control_plane`) on
    // loopback, the machines' relay agent on `relay_port`.
    let mut plane = ControlPlane::new(store.clone(), power, Ipv4Addr::LOCALHOST, secret);
    plane.relay_port = relay_port;
    let ipxe_bytes =
        std::fs::read("/usr/lib/ipxe/undionly.kpxe").unwrap_or_else(|_| vec![0x55; 70_000]);
    plane.tftp_files = FileSource::empty().with_file("undionly.kpxe", ipxe_bytes);
    plane.assets = Some(FileSource::directory(data.join("assets")).map_err(io("assets"))?);
    plane.heartbeat_seconds = 2;
    let listeners = Listeners {
        dhcp: dhcp_socket,
        proxy: None,
        tftp: tftp_socket,
        http: listener,
    };
    tokio::spawn(plane.serve(listeners, std::future::pending()));

    println!(
        "Tinker homelab: {} simulated machines; data in {}; control plane {http}",
        a.machines,
        data.display()
    );
    println!("status page: {http}/status?token={operator_token}  (metrics: {http}/metrics)");
    let multi = MultiProgress::new();
    let style =
        ProgressStyle::with_template("{prefix:.bold} {spinner} {elapsed:>4} {msg}").unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (name, mac, ip, bmc) in rack {
        let bar = multi.add(
            ProgressBar::new_spinner()
                .with_style(style.clone())
                .with_prefix(name.clone()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        let (relay, http) = (relay.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let result = machine(&bar, mac, ip, &bmc, &relay, dhcp_addr, tftp_addr, &http).await;
            match &result {
                Ok(id) => bar.finish_with_message(format!("installed; instance-id {id}")),
                Err(e) => bar.abandon_with_message(format!("failed: {e}")),
            }
            (name, result, t.elapsed())
        }));
    }
    let mut done = 0;
    let mut rows = Vec::new();
    for t in tasks {
        let (name, result, took) = t.await.map_err(io("machine"))?;
        let wf = store
            .workflows()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|w| {
                w.value.spec.hardware_ref == name
                    && w.value.metadata.name.ends_with(&run_id.to_string())
            });
        let state = wf
            .and_then(|w| w.value.state())
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into());
        if result.is_ok() && state == "SUCCESS" {
            done += 1;
        }
        rows.push(format!(
            "{name:<8} {state:<8} {:>6.1} s  {}",
            took.as_secs_f64(),
            result.unwrap_or_else(|e| e)
        ));
    }
    println!(
        "\n{:<8} {:<8} {:>8}  installed OS says",
        "machine", "workflow", "time"
    );
    for r in rows {
        println!("{r}");
    }
    println!(
        "\nprovisioned {done}/{} machines in {:.1} s",
        a.machines,
        started.elapsed().as_secs_f64()
    );
    if a.hold > 0 {
        println!("serving the status page for {} s more", a.hold);
        use std::io::Write;
        let _ = std::io::stdout().flush();
        tokio::time::sleep(Duration::from_secs(a.hold)).await;
    }
    Ok(done == a.machines as usize)
}

/// One simulated machine, from power-on to its installed OS reading its metadata.
#[allow(clippy::too_many_arguments)]
async fn machine(
    bar: &ProgressBar,
    mac: MacAddr,
    ip: Ipv4Addr,
    bmc: &MockBmc,
    relay: &tokio::sync::Mutex<UdpSocket>,
    dhcp: SocketAddr,
    tftp_addr: SocketAddr,
    http: &str,
) -> Result<String, String> {
    bar.set_message("powered off; waiting for its BMC");
    while !bmc.is_on() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.set_message("PXE: DHCP");
    let leased = dora(relay, dhcp, mac).await?;
    if leased != ip {
        return Err(format!("DHCP gave {leased}, not the reservation {ip}"));
    }
    bar.set_message("PXE: TFTP undionly.kpxe");
    let ipxe = tftp::fetch(tftp_addr, "undionly.kpxe", Some(1428), Some(8))
        .await
        .map_err(|e| e.to_string())?;
    bar.set_message(format!(
        "iPXE ({} KiB): fetching its script",
        ipxe.len() / 1024
    ));
    let script = get(http, &format!("/ipxe/{mac}/auto.ipxe"), None).await?;
    let token = script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("tinker_token="))
        .ok_or("the iPXE script carries no token")?
        .to_string();
    bar.set_message("in-memory OS: worker running actions");
    let native = NativeRuntime::new();
    let agent = Agent::new(
        AgentConfig {
            server: http.to_string(),
            worker_id: mac.to_string(),
            token,
            max_backoff: Duration::from_secs(1),
            max_actions: None,
            idle_exit: Some(Duration::from_secs(2)),
            console: false,
        },
        Arc::new(RuntimeRouter {
            native: native.clone(),
            containers: None,
        }),
        Some(native),
    );
    let summary = agent
        .run(std::future::pending())
        .await
        .map_err(|e| e.to_string())?;
    bar.set_message(format!(
        "{} actions done; waiting for the reboot to disk",
        summary.ran.len()
    ));
    // The engine turns netboot off, sets the disk as boot device and reboots.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !bmc.calls().iter().any(|c| {
        !c.failed
            && matches!(
                c.call,
                MockCall::SetBoot {
                    device: BootDevice::Disk,
                    ..
                }
            )
    }) || bmc.power_state().await.map_err(|e| e.to_string())? != PowerState::On
    {
        if Instant::now() > deadline {
            return Err("the machine was not rebooted to its disk".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.set_message("installed OS: reading its metadata");
    let id = get(http, "/2009-04-04/meta-data/instance-id", Some(ip)).await?;
    Ok(id)
}

/// DISCOVER/OFFER/REQUEST/ACK through the rack's relay (giaddr 127.0.0.1).
async fn dora(
    relay: &tokio::sync::Mutex<UdpSocket>,
    server: SocketAddr,
    mac: MacAddr,
) -> Result<Ipv4Addr, String> {
    use dhcproto::v4::{DhcpOption, MessageType};
    let sock = relay.lock().await;
    let xid = u32::from_be_bytes([mac.0[2], mac.0[3], mac.0[4], mac.0[5]]);
    let pxe = |m: &mut dhcproto::v4::Message| {
        m.set_giaddr(Ipv4Addr::LOCALHOST);
        m.opts_mut().insert(DhcpOption::ClassIdentifier(
            b"PXEClient:Arch:00000:UNDI:002001".to_vec(),
        ));
        m.opts_mut()
            .insert(DhcpOption::ClientSystemArchitecture(0u16.into()));
    };
    let mut buf = vec![0u8; 1500];
    let mut offered = None;
    for kind in [MessageType::Discover, MessageType::Request] {
        let req = client_request(kind, xid, mac, |m| {
            pxe(m);
            if let Some(ip) = offered {
                m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
                m.opts_mut()
                    .insert(DhcpOption::ServerIdentifier(Ipv4Addr::LOCALHOST));
            }
        });
        sock.send_to(&req, server).await.map_err(io("DHCP"))?;
        let reply = loop {
            let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
                .await
                .map_err(|_| "no DHCP answer".to_string())?
                .map_err(io("DHCP"))?;
            if let Some(r) = decode_reply(&buf[..n])
                && r.xid() == xid
            {
                break r;
            }
        };
        offered = Some(reply.yiaddr());
    }
    offered.ok_or_else(|| "no address".into())
}

/// A plain HTTP GET, optionally from a given source address (the machine's own).
async fn get(base: &str, path: &str, from: Option<Ipv4Addr>) -> Result<String, String> {
    let addr: SocketAddr = base
        .trim_start_matches("http://")
        .parse()
        .map_err(io("address"))?;
    let socket = tokio::net::TcpSocket::new_v4().map_err(io("socket"))?;
    if let Some(ip) = from {
        socket.bind(SocketAddr::from((ip, 0))).map_err(io("bind"))?;
    }
    let mut s = socket.connect(addr).await.map_err(io("connect"))?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: tinker\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(io("write"))?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.map_err(io("read"))?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "GET {path}: {}",
            head.lines().next().unwrap_or("no answer")
        ));
    }
    Ok(body.to_string())
}
