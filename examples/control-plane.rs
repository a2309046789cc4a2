//! One control-plane replica as a process: the engine, DHCP, TFTP and HTTP
//! (scripts, assets, metadata, worker and operator APIs, `/metrics`) over a store.
//! Run several over one PostgreSQL for a control plane that outlives any of them.
//!
//! ```text
//! cargo run --example control-plane -- --store postgres://tinker@db/tinker --replica cp1 \
//!     --address 10.0.0.1 --secret-file /etc/tinker/worker-secret \
//!     [--workers http://10.0.0.1:8080,http://10.0.0.2:8080] [--mock-bmcs]
//! ```
//!
//! Flags: `--store redb:PATH | postgres://...` (required), `--replica NAME`
//! (default: the host name and process id), `--address IP` (default 127.0.0.1),
//! `--dhcp-port`, `--tftp-port`, `--http-port` (defaults 67, 69, 8080; 0 picks a
//! free port), `--relay-port` (where relay agents listen; default 67),
//! `--secret-file FILE` (the worker-token secret, the same for every replica;
//! required), `--workers URLS` (the control-plane URLs put on the workers' kernel
//! line; default this replica), `--assets DIR`, `--kernel`, `--initrd`,
//! `--mock-bmcs` (every machine gets a simulated BMC: demos and load tests),
//! `--api-limit N` (worker API requests at once before 503), `--lease SECONDS`.
//! Prints one line `ready http=… dhcp=… tftp=…` when serving; stops cleanly on
//! SIGTERM or Ctrl-C.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tinker::bmc::{Connector, EnvSecrets, MockConnector, RetryPolicy};
use tinker::boot::tftp::FileSource;
use tinker::control_plane::{ControlPlane, Listeners};
use tinker::core::{PowerConnector, WorkflowStore};
use tinker::store::{PostgresStore, RedbStore};

#[derive(Debug, Default)]
struct Args {
    store: String,
    replica: Option<String>,
    address: Option<Ipv4Addr>,
    dhcp_port: u16,
    tftp_port: u16,
    http_port: u16,
    relay_port: u16,
    secret_file: Option<PathBuf>,
    workers: Option<String>,
    assets: Option<PathBuf>,
    kernel: Option<String>,
    initrd: Option<String>,
    mock_bmcs: bool,
    api_limit: Option<usize>,
    lease: Option<u64>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        dhcp_port: 67,
        tftp_port: 69,
        http_port: 8080,
        relay_port: 67,
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let port = |v: String| v.parse::<u16>().map_err(|_| format!("bad port {v:?}"));
        match flag.as_str() {
            "--store" => a.store = value()?,
            "--replica" => a.replica = Some(value()?),
            "--address" => {
                a.address = Some(value()?.parse().map_err(|_| "bad --address".to_string())?)
            }
            "--dhcp-port" => a.dhcp_port = port(value()?)?,
            "--tftp-port" => a.tftp_port = port(value()?)?,
            "--http-port" => a.http_port = port(value()?)?,
            "--relay-port" => a.relay_port = port(value()?)?,
            "--secret-file" => a.secret_file = Some(value()?.into()),
            "--workers" => a.workers = Some(value()?),
            "--assets" => a.assets = Some(value()?.into()),
            "--kernel" => a.kernel = Some(value()?),
            "--initrd" => a.initrd = Some(value()?),
            "--mock-bmcs" => a.mock_bmcs = true,
            "--api-limit" => {
                a.api_limit = Some(
                    value()?
                        .parse()
                        .map_err(|_| "bad --api-limit".to_string())?,
                )
            }
            "--lease" => a.lease = Some(value()?.parse().map_err(|_| "bad --lease".to_string())?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.store.is_empty() {
        return Err("--store redb:PATH or --store postgres://... is required".into());
    }
    Ok(a)
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
    let secret = match &a.secret_file {
        Some(f) => std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?,
        None => return Err("--secret-file is required (the same file for every replica)".into()),
    };
    let store = open_store(&a.store).await?;
    let power: Arc<dyn PowerConnector> = if a.mock_bmcs {
        Arc::new(MockConnector::new())
    } else {
        // Real BMCs: the Rufio Machines in the store... none yet: a machine without
        // a BMC is booted by hand, and the engine says so in its events.
        Arc::new(Connector::new(Arc::new(EnvSecrets), RetryPolicy::default()))
    };
    let address = a.address.unwrap_or(Ipv4Addr::LOCALHOST);
    let listeners = Listeners::bind(address, a.dhcp_port, a.tftp_port, a.http_port)
        .await
        .map_err(|e| format!("binding on {address}: {e}"))?;
    let mut plane = ControlPlane::new(
        store,
        power,
        address,
        tinker::boot::worker_api::secret_from_bytes(&secret),
    );
    plane.engine.replica = a
        .replica
        .clone()
        .unwrap_or_else(|| format!("replica-{}", std::process::id()));
    if let Some(s) = a.lease {
        plane.engine.lease = Duration::from_secs(s);
    }
    plane.relay_port = a.relay_port;
    plane.worker_api_in_flight = a.api_limit;
    if let Some(dir) = &a.assets {
        plane.assets = Some(FileSource::directory(dir).map_err(|e| format!("assets: {e}"))?);
    }
    plane.osie.kernel = a.kernel.clone().unwrap_or_else(|| "vmlinuz".into());
    plane.osie.initrd = a.initrd.clone().unwrap_or_else(|| "initrd.img".into());
    plane.osie.control_plane = a.workers.clone().unwrap_or_default();
    println!(
        "ready http={} dhcp={} tftp={} replica={}",
        listeners.http.local_addr().map_err(|e| e.to_string())?,
        listeners.dhcp.local_addr().map_err(|e| e.to_string())?,
        listeners.tftp.local_addr().map_err(|e| e.to_string())?,
        plane.engine.replica
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
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
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
    match run(a).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
