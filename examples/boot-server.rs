//! Runs the boot services (DHCP, TFTP, HTTP with iPXE scripts, assets and
//! metadata) for the Hardware YAML files in a directory:
//!
//! ```text
//! cargo run --release --example boot-server -- --interface IF --address IP --hardware DIR \
//!     [--proxy] [--tftp-root DIR] [--assets DIR] [--http-port N] \
//!     [--tftp-transfers-per-address N]
//! ```
//!
//! DHCP answers on IF only (port 67, and 4011 with `--proxy`); TFTP serves the
//! iPXE binaries (default `/usr/lib/ipxe`, Debian's `ipxe` package) on IP:69; HTTP
//! listens on IP:80 (or `--http-port`) with `/metrics`. Every decision is logged
//! (`RUST_LOG=debug` for more). Stops cleanly on Ctrl-C or SIGTERM.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tinker::boot::credentials::{AddressCheck, CallerCheck};
use tinker::boot::dhcp::{DhcpConfig, DhcpLimits, DhcpServer, Mode, Rate, server::bind_udp};
use tinker::boot::http::{HttpConfig, HttpServer, OsieConfig};
use tinker::boot::tftp::{FileSource, TftpLimits, TftpServer, default_ipxe_dir};
use tinker::boot::worker_api::WorkerApi;
use tinker::boot::{BootConfig, StoreBootResponder, StoreMetadata};
use tinker::core::model::{Document, parse_documents};
use tinker::core::{Precondition, WorkflowStore};
use tinker::store::MemoryStore;

/// The boot services (DHCP, TFTP, HTTP) for a directory of Hardware YAML files.
#[derive(Debug, clap::Parser)]
#[command(version)]
struct Args {
    /// The interface DHCP answers on.
    #[arg(long)]
    interface: String,
    /// The address TFTP and HTTP serve on (and DHCP names as the server).
    #[arg(long)]
    address: Ipv4Addr,
    /// A directory of Tinkerbell Hardware YAML files.
    #[arg(long)]
    hardware: PathBuf,
    /// Serve proxyDHCP (another server hands out addresses).
    #[arg(long)]
    proxy: bool,
    /// The iPXE binaries to serve over TFTP.
    #[arg(long, default_value_os_t = default_ipxe_dir())]
    tftp_root: PathBuf,
    /// A directory of boot assets served over HTTP.
    #[arg(long)]
    assets: Option<PathBuf>,
    /// HTTP port.
    #[arg(long, default_value_t = 80)]
    http_port: u16,
    /// DHCP port.
    #[arg(long, default_value_t = 67)]
    dhcp_port: u16,
    /// TFTP port.
    #[arg(long, default_value_t = 69)]
    tftp_port: u16,
    /// The port DHCP clients listen on.
    #[arg(long = "dhcp-client-port", default_value_t = 68)]
    client_port: u16,
    /// The in-memory OS kernel's file name among the assets.
    #[arg(long, default_value = "vmlinuz")]
    kernel: String,
    /// The in-memory OS initrd's file name among the assets.
    #[arg(long, default_value = "initrd.img")]
    initrd: String,
    /// Extra kernel arguments, space-separated.
    #[arg(long, default_value = "console=tty0 console=ttyS0,115200", value_parser = split_words)]
    kernel_args: Words,
    /// The worker-token secret (a file private to its owner, mode 0600); with
    /// it, the worker API is served too.
    #[arg(long)]
    worker_secret_file: Option<PathBuf>,
    /// The machines reach this server through NAT: give and take worker tokens
    /// whatever the caller's address (weaker; see the README's Security section).
    #[arg(long)]
    behind_nat: bool,
    /// TFTP transfers at once from one address (default: `TftpLimits`'
    /// default, 8). Raise it for machines behind NAT, which share an address.
    #[arg(long)]
    tftp_transfers_per_address: Option<usize>,
    /// DHCP packets per second from one relay (or the attached segment),
    /// burst twice that (default: `DhcpLimits`' default, 20,000). Raise it
    /// for a load generator behind a single relay.
    #[arg(long)]
    dhcp_relay_rate: Option<f64>,
}

/// Space-separated words of one flag.
#[derive(Debug, Clone)]
struct Words(Vec<String>);

fn split_words(s: &str) -> Result<Words, String> {
    Ok(Words(s.split_whitespace().map(str::to_string).collect()))
}

async fn load_hardware(store: &dyn WorkflowStore, dir: &std::path::Path) -> Result<usize, String> {
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if !path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            continue;
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let name = path.display().to_string();
        let docs = parse_documents(&name, &text).map_err(|e| e.to_string())?;
        let findings = tinker::core::validate::documents(&name, &docs);
        if !findings.0.is_empty() {
            return Err(findings.to_string());
        }
        for d in docs {
            if let Document::Object(o) = d {
                store
                    .put(o, Precondition::Any)
                    .await
                    .map_err(|e| e.to_string())?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// The DHCP thread's result, or an error if it ended without one (it panicked).
fn done_rx_result(
    r: Result<std::io::Result<()>, tokio::sync::oneshot::error::RecvError>,
) -> std::io::Result<()> {
    r.unwrap_or_else(|_| Err(std::io::Error::other("the DHCP thread panicked")))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = <Args as clap::Parser>::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(a: Args) -> Result<(), String> {
    let worker_secret = match &a.worker_secret_file {
        Some(path) => {
            Some(tinker::boot::credentials::read_secret_file(path).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let n = load_hardware(store.as_ref(), &a.hardware).await?;
    tracing::info!(objects = n, dir = %a.hardware.display(), "loaded");
    let http_base = format!("http://{}:{}", a.address, a.http_port);

    // Bind everything first: fail fast, before serving anything.
    let dhcp_socket = bind_udp(
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, a.dhcp_port)),
        Some(&a.interface),
    )
    .map_err(|e| format!("DHCP port {} on {}: {e}", a.dhcp_port, a.interface))?;
    let proxy_socket = if a.proxy {
        Some(
            bind_udp(
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, 4011)),
                Some(&a.interface),
            )
            .map_err(|e| format!("proxyDHCP port 4011: {e}"))?,
        )
    } else {
        None
    };
    let tftp_socket = tokio::net::UdpSocket::bind((a.address, a.tftp_port))
        .await
        .map_err(|e| format!("TFTP {}:{}: {e}", a.address, a.tftp_port))?;
    let listener = tokio::net::TcpListener::bind((a.address, a.http_port))
        .await
        .map_err(|e| format!("HTTP {}:{}: {e}", a.address, a.http_port))?;

    // The iPXE binaries are read once, by their real paths (Debian links some to
    // /boot); anything else is served from the directory with no way out of it.
    let binaries = FileSource::ipxe_binaries(&a.tftp_root)
        .and_then(|s| s.with_directory(&a.tftp_root))
        .map_err(|e| e.to_string())?;
    tracing::info!(dir = %a.tftp_root.display(), files = ?binaries.names(), "iPXE binaries");
    let mut tftp_limits = TftpLimits::default();
    if let Some(n) = a.tftp_transfers_per_address {
        tftp_limits.max_transfers_per_address = n;
    }
    let tftp = TftpServer::new(binaries.clone()).with_limits(tftp_limits);

    let responder = StoreBootResponder::new(
        store.clone(),
        BootConfig {
            tftp_server: a.address,
            http_base: http_base.clone(),
            default_lease_seconds: 86400,
            record_events: true,
        },
    );
    let mut dhcp_config = DhcpConfig::new(
        if a.proxy {
            Mode::Proxy
        } else {
            Mode::Reservation
        },
        a.address,
    );
    dhcp_config.client_port = a.client_port;
    let callers = CallerCheck {
        mode: if a.behind_nat {
            AddressCheck::BehindNat
        } else {
            AddressCheck::Strict
        },
        ..CallerCheck::default()
    };
    let mut dhcp_limits = DhcpLimits::default();
    if let Some(rate) = a.dhcp_relay_rate {
        dhcp_limits.per_relay = Rate {
            burst: 2.0 * rate,
            per_second: rate,
        };
    }
    let dhcp = DhcpServer::new(dhcp_config, Arc::new(responder))
        .with_limits(dhcp_limits)
        .with_observed_addresses(callers.observed.clone())
        // Under load, one wakeup per batch of requests, not per request. At
        // 15,000 exchanges/s with 1 ms, 18% of the server's CPU was the context
        // switches around its waits (on a virtual machine each may exit to the
        // hypervisor); 2 ms halves them and nearly fills a batch of 64 at
        // 30,000 datagrams/s, and a client waits 2 ms more, against its 4 s
        // retransmission (BENCHMARKS.md, DHCP).
        .with_coalescing(std::time::Duration::from_millis(2));

    let assets = match &a.assets {
        Some(dir) => {
            Some(FileSource::directory(dir).map_err(|e| format!("assets {}: {e}", dir.display()))?)
        }
        None => None,
    };
    let osie_from_assets = assets.is_some();
    let http = HttpServer::new(HttpConfig {
        store: store.clone(),
        metadata: Arc::new(
            StoreMetadata::new(store.clone()).with_observed_addresses(callers.observed.clone()),
        ),
        osie: OsieConfig {
            base_url: format!("{http_base}/assets"),
            kernel: a.kernel.clone(),
            initrd: a.initrd.clone(),
            control_plane: http_base.clone(),
            extra_args: a.kernel_args.0.clone(),
            worker_secret: worker_secret.clone(),
            ..Default::default()
        },
        assets,
        binaries: Some(binaries),
        trusted_proxies: Vec::<IpAddr>::new(),
        // With a secret, the worker API is served here too, and each machine's
        // script carries its token.
        extra: worker_secret.clone().map(|s| {
            Arc::new(WorkerApi::new(store.clone(), s, 10).with_caller_check(callers.clone()))
                as Arc<dyn tinker::boot::http::ExtraRoutes>
        }),
        metrics: vec![dhcp.stats(), tftp.stats()],
        callers: callers.clone(),
        serves_machines: true,
        osie_from_assets,
    });
    tracing::info!(interface = %a.interface, address = %a.address, mode = if a.proxy { "proxy" } else { "reservation" }, http = %http_base, "serving");

    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let stop = |tx: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = tx.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };
    // DHCP gets a thread of its own with a single-threaded runtime: its loop
    // then sleeps in its own epoll and wakes itself, where on the shared
    // multi-threaded runtime each wakeup crossed threads (a futex and a context
    // switch per batch in the profile of issue 17). Its sockets are registered
    // with that runtime's reactor, so they move there as std sockets.
    let dhcp_done = {
        let stop = stop(&stop_tx);
        let socket = dhcp_socket.into_std().map_err(|e| e.to_string())?;
        let proxy = match proxy_socket {
            Some(s) => Some(s.into_std().map_err(|e| e.to_string())?),
            None => None,
        };
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("dhcp".into())
            .spawn(move || {
                let served = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|rt| {
                        rt.block_on(async move {
                            let socket = tokio::net::UdpSocket::from_std(socket)?;
                            let proxy = proxy.map(tokio::net::UdpSocket::from_std).transpose()?;
                            dhcp.serve(socket, proxy, stop).await
                        })
                    });
                let _ = done_tx.send(served);
            })
            .map_err(|e| e.to_string())?;
        done_rx
    };
    let tasks = vec![
        tokio::spawn(async move { done_rx_result(dhcp_done.await) }),
        tokio::spawn(tftp.serve(tftp_socket, stop(&stop_tx))),
        tokio::spawn(http.serve(listener, stop(&stop_tx))),
    ];
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(());
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            tracing::warn!(error = %e, "a service ended with an error");
        }
    }
    Ok(())
}
