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
//! `--help` lists the flags (`--machines N`, `--data DIR`, `--hold SECONDS`,
//! `--config FILE`). The status page's address, and the path of the file holding the operator token (mode 0600; never the token), are printed at the start.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tinker::actions::NativeRuntime;
use tinker::actions::agent::{Agent, AgentConfig, HttpTransport, RuntimeRouter};
use tinker::bmc::{MockBmc, MockCall, StaticConnector};
use tinker::boot::credentials;
use tinker::boot::dhcp::client::{self as dhcp_client, Dora, PxeClient};
use tinker::boot::tftp::{FileSource, client as tftp};
use tinker::control_plane::{ControlPlane, Listeners};
use tinker::core::clock::SystemClock;
use tinker::core::model::{Hardware, Template, Workflow};
use tinker::core::{
    BootDevice, MacAddr, PowerController, PowerState, Precondition, WorkflowStore, WorkflowStoreExt,
};
use tinker::store::RedbStore;
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

/// The reference stack: a simulated rack, or (`--config`) a real home lab.
#[derive(Debug, clap::Parser)]
#[command(version)]
struct Args {
    /// Simulated machines to provision.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=200))]
    machines: u8,
    /// The data directory (a second run reuses it).
    #[arg(long, default_value = "tinker-data")]
    data: PathBuf,
    /// Seconds to keep serving the status page after the run.
    #[arg(long, default_value_t = 0)]
    hold: u64,
    /// Run the real thing for a home lab from this config file
    /// (see examples/homelab/README.md).
    #[arg(long)]
    config: Option<PathBuf>,
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
    let a = <Args as clap::Parser>::parse();
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

/// A simulated machine of the rack: its Hardware's name, MAC and reserved
/// address, and its BMC.
struct RackMachine {
    name: String,
    mac: MacAddr,
    ip: Ipv4Addr,
    bmc: MockBmc,
    /// Where its "disk" file lives (image2disk may write files only there).
    disks: PathBuf,
}

/// The loopback sockets the control plane serves on, and the relay the
/// simulated machines send DHCP through.
struct Network {
    listeners: Listeners,
    relay: Arc<tokio::sync::Mutex<UdpSocket>>,
    dhcp: SocketAddr,
    tftp: SocketAddr,
    http: String,
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
    let secret = credentials::read_or_create_secret_file(&data.join("worker-secret"))
        .map_err(|e| e.to_string())?;
    let operator_file = data.join("operator-token");
    credentials::write_secret_file(&operator_file, &credentials::operator_token(&secret))
        .map_err(|e| e.to_string())?;
    let net = bind_loopback().await?;
    let power = Arc::new(StaticConnector::new());
    let run_id = jiff::Timestamp::now().as_second();
    let rack = put_rack(store.as_ref(), &power, &data, &net.http, a.machines, run_id).await?;

    // The services: one control-plane replica (see `tinker::control_plane`) on
    // loopback, the machines' relay agent on the relay's port.
    let mut plane = ControlPlane::new(store.clone(), power, Ipv4Addr::LOCALHOST, secret);
    plane.relay_port = net
        .relay
        .lock()
        .await
        .local_addr()
        .map_err(io("relay"))?
        .port();
    let ipxe_bytes =
        std::fs::read("/usr/lib/ipxe/undionly.kpxe").unwrap_or_else(|_| vec![0x55; 70_000]);
    plane.tftp_files = FileSource::empty().with_file("undionly.kpxe", ipxe_bytes);
    plane.assets = Some(FileSource::directory(data.join("assets")).map_err(io("assets"))?);
    // The simulated machines boot no kernel: there is none to check for.
    plane.check_osie_assets = false;
    plane.heartbeat_seconds = 2;
    let Network {
        listeners,
        relay,
        dhcp,
        tftp,
        http,
    } = net;
    tokio::spawn(plane.serve(listeners, std::future::pending()));

    println!(
        "Tinker homelab: {} simulated machines; data in {}; control plane {http}",
        a.machines,
        data.display()
    );
    println!(
        "status page: {http}/status  (sign in with the token in {}; metrics: {http}/metrics)",
        operator_file.display()
    );
    let started = Instant::now();
    let results = provision(rack, relay, dhcp, tftp, &http).await?;
    let done = report(store.as_ref(), results, run_id, started).await?;
    if a.hold > 0 {
        println!("serving the status page for {} s more", a.hold);
        use std::io::Write;
        let _ = std::io::stdout().flush();
        tokio::time::sleep(Duration::from_secs(a.hold)).await;
    }
    Ok(done == a.machines as usize)
}

/// Loopback, unprivileged ports: DHCP (and its relay), TFTP, HTTP.
async fn bind_loopback() -> Result<Network, String> {
    let dhcp = UdpSocket::bind("127.0.0.1:0").await.map_err(io("DHCP"))?;
    let relay = UdpSocket::bind("127.0.0.1:0").await.map_err(io("relay"))?;
    let tftp = UdpSocket::bind("127.0.0.1:0").await.map_err(io("TFTP"))?;
    let http = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io("HTTP"))?;
    Ok(Network {
        dhcp: dhcp.local_addr().map_err(io("DHCP"))?,
        tftp: tftp.local_addr().map_err(io("TFTP"))?,
        http: format!("http://{}", http.local_addr().map_err(io("HTTP"))?),
        relay: Arc::new(tokio::sync::Mutex::new(relay)),
        listeners: Listeners {
            dhcp,
            proxy: None,
            tftp,
            http,
            management: None,
            https: None,
            hegel: None,
            syslog: None,
            grpc: None,
        },
    })
}

/// The machines: a Hardware, a mock BMC and a workflow each, in the store.
async fn put_rack(
    store: &dyn WorkflowStore,
    power: &StaticConnector,
    data: &Path,
    http: &str,
    machines: u8,
    run_id: i64,
) -> Result<Vec<RackMachine>, String> {
    store
        .put(
            Template::new("homelab-install", TEMPLATE).into(),
            Precondition::Any,
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut rack = Vec::new();
    for i in 0..machines {
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
            .map_err(|e| e.to_string())?,
        );
        store
            .put(hw.into(), Precondition::Any)
            .await
            .map_err(|e| e.to_string())?;
        let bmc = MockBmc::new(&name);
        power.insert(&name, Arc::new(bmc.clone()));
        let mut wf = Workflow::new(&format!("{name}-{run_id}"), "homelab-install", &name, mac);
        let disk = data.join("disks").join(format!("{name}.img"));
        wf.spec
            .hardware_map
            .insert("disk".into(), disk.display().to_string());
        wf.spec
            .hardware_map
            .insert("image_url".into(), format!("{http}/assets/os.img.gz"));
        store
            .put(wf.into(), Precondition::Any)
            .await
            .map_err(|e| e.to_string())?;
        rack.push(RackMachine {
            name,
            mac,
            ip,
            bmc,
            disks: data.join("disks"),
        });
    }
    Ok(rack)
}

/// Runs every machine of the rack at once, with a progress line each; returns
/// each machine's name, what its installed OS said (or why it failed), and how
/// long it took.
async fn provision(
    rack: Vec<RackMachine>,
    relay: Arc<tokio::sync::Mutex<UdpSocket>>,
    dhcp: SocketAddr,
    tftp: SocketAddr,
    http: &str,
) -> Result<Vec<(String, Result<String, String>, Duration)>, String> {
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:.bold} {spinner} {elapsed:>4} {msg}")
        .map_err(|e| e.to_string())?;
    let mut tasks = Vec::new();
    for m in rack {
        let bar = multi.add(
            ProgressBar::new_spinner()
                .with_style(style.clone())
                .with_prefix(m.name.clone()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        let (relay, http) = (relay.clone(), http.to_string());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let result = machine(&bar, &m, &relay, dhcp, tftp, &http).await;
            match &result {
                Ok(id) => bar.finish_with_message(format!("installed; instance-id {id}")),
                Err(e) => bar.abandon_with_message(format!("failed: {e}")),
            }
            (m.name, result, t.elapsed())
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.map_err(io("machine"))?);
    }
    Ok(results)
}

/// Prints the table of machines and workflow states; returns how many were
/// provisioned.
async fn report(
    store: &dyn WorkflowStore,
    results: Vec<(String, Result<String, String>, Duration)>,
    run_id: i64,
    started: Instant,
) -> Result<usize, String> {
    let machines = results.len();
    let workflows = store.workflows().await.map_err(|e| e.to_string())?;
    let mut done = 0;
    let mut rows = Vec::new();
    for (name, result, took) in results {
        let state = workflows
            .iter()
            .find(|w| {
                w.value.spec.hardware_ref == name
                    && w.value.metadata.name.ends_with(&run_id.to_string())
            })
            .and_then(|w| w.value.state());
        if result.is_ok() && state == Some(tinker::core::state::WorkflowState::Success) {
            done += 1;
        }
        let state = state.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
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
        "\nprovisioned {done}/{machines} machines in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(done)
}

/// One simulated machine, from power-on to its installed OS reading its metadata.
async fn machine(
    bar: &ProgressBar,
    m: &RackMachine,
    relay: &tokio::sync::Mutex<UdpSocket>,
    dhcp: SocketAddr,
    tftp_addr: SocketAddr,
    http: &str,
) -> Result<String, String> {
    let (mac, ip, bmc) = (m.mac, m.ip, &m.bmc);
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
    // From its own address, as a real machine (and the per-address limit).
    let ipxe = tftp::fetch_from(
        tftp_addr,
        Some(ip.into()),
        "undionly.kpxe",
        Some(1428),
        Some(8),
        &tinker::core::clock::SystemClock,
    )
    .await
    .map_err(|e| e.to_string())?;
    bar.set_message(format!(
        "iPXE ({} KiB): fetching its script",
        ipxe.len() / 1024
    ));
    // From the machine's own address, as a real machine calls: only there does
    // the script carry its token.
    let script = get(http, &format!("/ipxe/{mac}/auto.ipxe"), Some(ip)).await?;
    let token = script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("tinker_token="))
        .ok_or("the iPXE script carries no token")?
        .to_string();
    bar.set_message("in-memory OS: worker running actions");
    // Its disk is a file: image2disk may write files there, and only there.
    let native = NativeRuntime::new().with_image_files_under(&m.disks);
    let agent = Agent::new(
        AgentConfig::new(http.to_string(), mac.to_string(), token.clone())
            .with_max_backoff(Duration::from_secs(1))
            .with_idle_exit(Duration::from_secs(2)),
        Arc::new(RuntimeRouter {
            native: native.clone(),
            containers: None,
        }),
        Some(native),
    )
    .with_transport(Arc::new(
        HttpTransport::new(tinker::core::Secret::new(token)).with_local_address(ip.into()),
    ));
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

/// DISCOVER/OFFER/REQUEST/ACK through the rack's relay (giaddr 127.0.0.1), by
/// the one DHCP client.
async fn dora(
    relay: &tokio::sync::Mutex<UdpSocket>,
    server: SocketAddr,
    mac: MacAddr,
) -> Result<Ipv4Addr, String> {
    let sock = relay.lock().await;
    let xid = u32::from_be_bytes([mac.0[2], mac.0[3], mac.0[4], mac.0[5]]);
    let mut exchange = Dora::new(PxeClient::new(mac, 0).relayed(Ipv4Addr::LOCALHOST), xid);
    let mut link = RelayLink {
        socket: &sock,
        server,
    };
    let ack = dhcp_client::run(&mut exchange, &mut link, &SystemClock)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ack.address)
}

/// The rack relay's socket as the DHCP client's link.
struct RelayLink<'a> {
    socket: &'a UdpSocket,
    server: SocketAddr,
}

#[async_trait::async_trait]
impl dhcp_client::Link for RelayLink<'_> {
    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.socket.send_to(bytes, self.server).await.map(drop)
    }

    async fn recv(&mut self) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 1500];
        let (n, _) = self.socket.recv_from(&mut buf).await?;
        buf.truncate(n);
        Ok(buf)
    }
}

/// A plain HTTP GET through the one test client, optionally from a given
/// source address (the machine's own).
async fn get(base: &str, path: &str, from: Option<Ipv4Addr>) -> Result<String, String> {
    let addr: SocketAddr = base
        .trim_start_matches("http://")
        .parse()
        .map_err(io("address"))?;
    let resp = tinker::boot::http::client::request(
        addr,
        from.map(Into::into),
        tinker::boot::http::client::Method::GET,
        path,
        &[],
        Vec::new(),
    )
    .await
    .map_err(|e| format!("GET {path}: {e}"))?;
    if resp.status != 200 {
        return Err(format!("GET {path}: {}", resp.status));
    }
    Ok(resp.text())
}
