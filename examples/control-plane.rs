//! One control-plane replica as a process: the engine, DHCP, TFTP and HTTP
//! (scripts, assets, metadata, worker and operator APIs, `/metrics`) over a store.
//! Run several over one PostgreSQL for a control plane that outlives any of them.
//!
//! ```text
//! cargo run --example control-plane -- --store postgres://tinker@db/tinker --replica cp1 \
//!     --peers cp1,cp2 --address 10.0.0.1 --secret-file /etc/tinker/worker-secret \
//!     [--workers http://10.0.0.1:8080,http://10.0.0.2:8080] [--mock-bmcs]
//! ```
//!
//! `--help` lists the flags. Prints one line `ready http=… dhcp=… tftp=…` (then
//! `https=…`, `hegel=…`, `syslog=…`, `grpc=…` for those that are on, and
//! `operator-token=PATH`, the file the operator token is in, mode 0600, never the
//! token) when serving; stops cleanly on
//! SIGTERM or Ctrl-C.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tinker::bmc::{Connector, EnvSecrets, MockConnector, RetryPolicy};
use tinker::boot::operators::OperatorTokens;
use tinker::boot::tftp::FileSource;
use tinker::control_plane::{ControlPlane, Listeners};
use tinker::core::{PowerConnector, WorkflowStore};
use tinker::store::{PostgresStore, RedbStore};

/// One control-plane replica: the engine, DHCP, TFTP and HTTP over a store.
#[derive(Debug, clap::Parser)]
#[command(version)]
struct Args {
    /// The store: `redb:PATH` or `postgres://...`.
    #[arg(long)]
    store: String,
    /// This replica's name (default: `replica-<pid>`).
    #[arg(long)]
    replica: Option<String>,
    /// Every replica's name, this one's included, comma-separated: each
    /// workflow's changes are acted on at once by its one owner among them,
    /// by the others only after the takeover delay (a replica that is gone is
    /// still stood in for). Unset: this replica acts on every change at once.
    #[arg(long, value_delimiter = ',', requires = "replica")]
    peers: Vec<String>,
    /// The address to serve on.
    #[arg(long, default_value_t = Ipv4Addr::LOCALHOST)]
    address: Ipv4Addr,
    /// DHCP port (0 picks a free one).
    #[arg(long, default_value_t = 67)]
    dhcp_port: u16,
    /// TFTP port (0 picks a free one).
    #[arg(long, default_value_t = 69)]
    tftp_port: u16,
    /// HTTP port (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// The port relay agents listen on.
    #[arg(long, default_value_t = 67)]
    relay_port: u16,
    /// The secret every token derives from, the same file for every replica
    /// (private to its owner, mode 0600; created with a random secret if absent).
    #[arg(long)]
    secret_file: PathBuf,
    /// Where to write the operator's token (mode 0600) for the operator's tools;
    /// it is never printed, its path is (default: `operator-token` beside the
    /// secret file, the data directory).
    #[arg(long)]
    operator_token_file: Option<PathBuf>,
    /// Named operators: a file of `NAME sha256:HEX` lines (the SHA-256 of each
    /// operator's token), so that each change says who made it.
    #[arg(long)]
    operator_tokens: Option<PathBuf>,
    /// The machines reach this replica through NAT: give and take worker tokens
    /// whatever the caller's address (weaker; see the README's Security section).
    #[arg(long)]
    behind_nat: bool,
    /// A PEM certificate for HTTPS (with --tls-key): the worker API and the
    /// operator's page and API are then served over HTTPS only, and each
    /// machine's agent pins this certificate.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's PEM private key (mode 0600).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// HTTPS port (0 picks a free one).
    #[arg(long, default_value_t = 8443)]
    https_port: u16,
    /// The metadata service also on Hegel's port, where Cluster API Provider
    /// Tinkerbell points cloud-init (0 turns it off).
    #[arg(long, default_value_t = 50061)]
    hegel_port: u16,
    /// Also serve the EC2 tree under /tootles/instanceID/<id>/2009-04-04/ (the
    /// id must be the caller's own).
    #[arg(long)]
    tootles_instance_endpoint: bool,
    /// Port of Tinkerbell's gRPC WorkflowService for tink-agent (default
    /// 42113; 0 turns it off; off by default with --behind-nat, where it
    /// cannot run).
    #[arg(long)]
    grpc_port: Option<u16>,
    /// The control-plane URLs put on the workers' kernel line (default: this replica).
    #[arg(long)]
    workers: Option<String>,
    /// A directory of boot assets (kernel, initrd, iPXE binaries).
    #[arg(long)]
    assets: Option<PathBuf>,
    /// The provisioning interface Wake-on-LAN packets are broadcast on, and
    /// only there (for Hardware annotated `tinker.dev/power: wake-on-lan` or a
    /// Machine with `preferredOrder: [wol]`); without it they are refused.
    #[arg(long)]
    wol_interface: Option<String>,
    /// The in-memory OS kernel's file name among the assets.
    #[arg(long, default_value = "vmlinuz")]
    kernel: String,
    /// The in-memory OS initrd's file name among the assets.
    #[arg(long, default_value = "initrd.img")]
    initrd: String,
    /// Give every machine a simulated BMC (demos and load tests).
    #[arg(long)]
    mock_bmcs: bool,
    /// Worker API requests at once before it answers 503.
    #[arg(long)]
    api_limit: Option<usize>,
    /// Seconds a replica may hold a workflow's step lease.
    #[arg(long)]
    lease: Option<u64>,
    /// Syslog port, where HookOS, tink-agent and iPXE send their logs (0: off).
    #[arg(long, default_value_t = tinker::boot::syslog::SYSLOG_PORT)]
    syslog_port: u16,
    /// Every machine boots HookOS unless its Hardware's
    /// `tinker.dev/in-memory-os` annotation says `tinker`.
    #[arg(long)]
    hookos: bool,
    /// Where HookOS's `vmlinuz-<arch>` and `initramfs-<arch>` are (default: the assets).
    #[arg(long)]
    hookos_base_url: Option<String>,
    /// HookOS's `grpc_authority=` (default: this address, port 42113).
    #[arg(long)]
    hookos_grpc_authority: Option<String>,
    /// HookOS's `tink_worker_image=`.
    #[arg(long)]
    tink_worker_image: Option<String>,
    /// A further HookOS kernel argument (repeatable), before each Hardware's own.
    #[arg(long)]
    hookos_kernel_arg: Vec<String>,
}

async fn open_store(url: &str) -> Result<Arc<dyn WorkflowStore>, String> {
    if let Some(path) = url.strip_prefix("redb:") {
        return Ok(Arc::new(
            RedbStore::open(path).await.map_err(|e| e.to_string())?,
        ));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(
            PostgresStore::connect(url)
                .await
                .map_err(|e| e.to_string())?,
        ));
    }
    Err(format!(
        "--store {url:?}: expected redb:PATH or postgres://..."
    ))
}

async fn run(a: Args) -> Result<(), String> {
    let secret = tinker::boot::credentials::read_or_create_secret_file(&a.secret_file)
        .map_err(|e| e.to_string())?;
    let token_file = a.operator_token_file.clone().unwrap_or_else(|| {
        a.secret_file
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("operator-token")
    });
    tinker::boot::credentials::write_secret_file(
        &token_file,
        &tinker::boot::credentials::operator_token(&secret),
    )
    .map_err(|e| e.to_string())?;
    let operators = match &a.operator_tokens {
        Some(path) => OperatorTokens::read(path).map_err(|e| e.to_string())?,
        None => OperatorTokens::new(),
    };
    let store = open_store(&a.store).await?;
    let power: Arc<dyn PowerConnector> = if a.mock_bmcs {
        Arc::new(MockConnector::new())
    } else {
        // Real BMCs: the Rufio Machines in the store... none yet: a machine without
        // a BMC is booted by hand, and the engine says so in its events.
        let connector = Connector::new(Arc::new(EnvSecrets::new()), RetryPolicy::default());
        Arc::new(match &a.wol_interface {
            Some(interface) => connector.with_wake_on_lan(interface),
            None => connector,
        })
    };
    let address = a.address;
    let mut listeners = Listeners::bind(address, a.dhcp_port, a.tftp_port, a.http_port)
        .await
        .map_err(|e| format!("binding on {address}: {e}"))?;
    if a.syslog_port != 0 {
        listeners.syslog = Some(
            tokio::net::UdpSocket::bind((address, a.syslog_port))
                .await
                .map_err(|e| format!("binding syslog on {address}: {e}"))?,
        );
    }
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => Some(
            tinker::boot::http::tls::TlsIdentity::from_files(cert, key)
                .map_err(|e| e.to_string())?,
        ),
        _ => None,
    };
    if tls.is_some() {
        listeners.https = Some(
            tokio::net::TcpListener::bind((address, a.https_port))
                .await
                .map_err(|e| format!("binding HTTPS on {address}: {e}"))?,
        );
    }
    if a.hegel_port != 0 {
        listeners.hegel = Some(
            tokio::net::TcpListener::bind((address, a.hegel_port))
                .await
                .map_err(|e| format!("binding Hegel's metadata port on {address}: {e}"))?,
        );
    }
    let grpc_port = a.grpc_port.unwrap_or(if a.behind_nat {
        0
    } else {
        tinker::grpc::DEFAULT_PORT
    });
    if grpc_port != 0 {
        listeners.grpc = Some(
            tokio::net::TcpListener::bind((address, grpc_port))
                .await
                .map_err(|e| format!("binding gRPC on {address}: {e}"))?,
        );
    }
    let mut plane = ControlPlane::new(store, power, address, secret);
    plane.tootles_instance_endpoint = a.tootles_instance_endpoint;
    plane.operator_tokens = operators;
    if a.behind_nat {
        plane.address_check = tinker::boot::credentials::AddressCheck::BehindNat;
    }
    plane.tls = tls;
    plane.engine.replica = a
        .replica
        .clone()
        .unwrap_or_else(|| format!("replica-{}", std::process::id()));
    if let Some(s) = a.lease {
        plane.engine.lease = Duration::from_secs(s);
    }
    plane.engine.peers = a.peers.clone();
    plane.relay_port = a.relay_port;
    plane.worker_api_in_flight = a.api_limit;
    if let Some(dir) = &a.assets {
        plane.assets = Some(FileSource::directory(dir).map_err(|e| format!("assets: {e}"))?);
    }
    plane.osie.kernel = a.kernel.clone();
    plane.osie.initrd = a.initrd.clone();
    plane.osie.control_plane = a.workers.clone().unwrap_or_default();
    if a.hookos {
        plane.osie.default_os = tinker::boot::http::InMemoryOs::HookOs;
    }
    let hook = &mut plane.osie.hookos;
    hook.base_url = a.hookos_base_url.clone().unwrap_or_default();
    hook.grpc_authority = a.hookos_grpc_authority.clone().unwrap_or_default();
    hook.tink_worker_image = a.tink_worker_image.clone();
    hook.extra_args = a.hookos_kernel_arg.clone();
    // The optional listeners, each as ` name=address`.
    let mut more = match &listeners.https {
        Some(l) => format!(" https={}", l.local_addr().map_err(|e| e.to_string())?),
        None => String::new(),
    };
    if let Some(l) = &listeners.hegel {
        more += &format!(" hegel={}", l.local_addr().map_err(|e| e.to_string())?);
    }
    if let Some(s) = &listeners.syslog {
        more += &format!(" syslog={}", s.local_addr().map_err(|e| e.to_string())?);
    }
    if let Some(l) = &listeners.grpc {
        more += &format!(" grpc={}", l.local_addr().map_err(|e| e.to_string())?);
    }
    println!(
        // The token file's path, never the token.
        "ready http={} dhcp={} tftp={} replica={}{more} operator-token={}",
        listeners.http.local_addr().map_err(|e| e.to_string())?,
        listeners.dhcp.local_addr().map_err(|e| e.to_string())?,
        listeners.tftp.local_addr().map_err(|e| e.to_string())?,
        plane.engine.replica,
        token_file.display()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    plane
        .serve(listeners, async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(serve_main()),
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = <Args as clap::Parser>::parse();
    match run(a).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
