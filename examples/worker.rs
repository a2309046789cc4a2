//! The worker agent, as it runs in the in-memory OS:
//!
//! ```text
//! cargo run --example worker -- [--server URL] [--worker-id ID] [--token TOKEN] [--no-docker]
//! ```
//!
//! `--help` lists the flags.
//! Anything not given on the command line is read from the kernel command line,
//! where the iPXE script puts it (`tinker_server=`, `worker_id=`, `tinker_token=`).
//! It asks for its actions, runs the Tinkerbell hub actions natively and anything
//! else in Docker, prints what it does, and after a `kexec` or `reboot` action's
//! success has been reported, takes that final step.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tinker::actions::agent::{
    Agent, AgentConfig, AgentEvent, EventSink, HttpTransport, RuntimeRouter, ServerTrust,
    TracingEvents,
};
use tinker::actions::{DockerRuntime, NativeRuntime};
use tinker::core::runtime::ActionRuntime;

/// The machine's screen: what the agent does, and its actions' output, as it
/// happens (and everything in the log too).
#[derive(Debug)]
struct Console;

impl EventSink for Console {
    fn event(&self, event: &AgentEvent) {
        match event {
            AgentEvent::Output { .. } => println!("{event}"),
            // Retries and fail-overs are for the log; the screen stays calm.
            AgentEvent::Retrying { .. } | AgentEvent::FailedOver { .. } => {}
            _ => println!("tinker: {event}"),
        }
        TracingEvents.event(event);
    }
}

/// The worker agent: asks the control plane for its actions and runs them.
#[derive(Debug, clap::Parser)]
#[command(version)]
struct Args {
    /// The control plane's URL (default: `tinker_server=` on the kernel command line).
    #[arg(long)]
    server: Option<String>,
    /// This machine's worker ID (default: `worker_id=` on the kernel command line).
    #[arg(long)]
    worker_id: Option<String>,
    /// The worker token (default: `tinker_token=` on the kernel command line, then `TINKER_TOKEN`).
    #[arg(long)]
    token: Option<String>,
    /// Run the built-in actions only, without a container engine.
    #[arg(long)]
    no_docker: bool,
    /// Trust exactly the control plane certificate with this SHA-256 fingerprint
    /// for an `https://` server (default: `tinker_tls_fingerprint=` on the kernel
    /// command line).
    #[arg(long)]
    tls_fingerprint: Option<String>,
    /// Trust the CAs in this PEM file for an `https://` server (default:
    /// `/etc/tinker/ca.pem` when the image has one).
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
}

/// Where an in-memory OS image keeps the control plane's CA.
const IMAGE_CA: &str = "/etc/tinker/ca.pem";

/// What the agent trusts for an `https://` control plane: the fingerprint
/// (flag, then kernel line), else a CA file (flag, then the image's), else the
/// Web PKI.
fn server_trust(
    fingerprint: Option<String>,
    ca_file: Option<std::path::PathBuf>,
) -> Result<Option<ServerTrust>, String> {
    if let Some(fp) = fingerprint.or_else(|| from_cmdline("tinker_tls_fingerprint")) {
        return ServerTrust::parse_fingerprint(&fp)
            .map(Some)
            .map_err(|e| e.to_string());
    }
    let ca = ca_file.or_else(|| {
        let image = std::path::PathBuf::from(IMAGE_CA);
        image.exists().then_some(image)
    });
    match ca {
        Some(path) => std::fs::read(&path)
            .map(|pem| Some(ServerTrust::CaPem(pem)))
            .map_err(|e| format!("{}: {e}", path.display())),
        None => Ok(None),
    }
}

/// The value of `key=` on the kernel command line.
fn from_cmdline(key: &str) -> Option<String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").ok()?;
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")).map(str::to_string))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Bad flags exit 2 (clap's code for usage errors), as they always have.
    let Args {
        server,
        worker_id,
        token,
        no_docker,
        tls_fingerprint,
        ca_file,
    } = clap::Parser::parse();
    let trust = match server_trust(tls_fingerprint, ca_file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tinker: {e}");
            return ExitCode::from(2);
        }
    };
    let (Some(server), Some(worker_id)) = (
        server.or_else(|| from_cmdline("tinker_server")),
        worker_id.or_else(|| from_cmdline("worker_id")),
    ) else {
        eprintln!(
            "no control plane: pass --server and --worker-id, or boot with tinker_server= and worker_id="
        );
        return ExitCode::from(2);
    };
    let token = token
        .or_else(|| from_cmdline("tinker_token"))
        .or_else(|| std::env::var("TINKER_TOKEN").ok())
        .unwrap_or_default();
    let containers: Option<Arc<dyn ActionRuntime>> = if !no_docker {
        match DockerRuntime::connect().await {
            Ok(d) => Some(Arc::new(d)),
            Err(e) => {
                println!("tinker: no container engine ({e}); built-in actions only");
                None
            }
        }
    } else {
        None
    };
    println!("tinker: worker {worker_id} asking {server} for work");
    let mut transport = HttpTransport::new(token.as_str().into());
    if let Some(trust) = trust {
        transport = match transport.with_tls(trust) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("tinker: {e}");
                return ExitCode::from(2);
            }
        };
    }
    let agent = Agent::new(
        AgentConfig::new(server, worker_id, token).with_max_backoff(Duration::from_secs(10)),
        Arc::new(RuntimeRouter {
            native: NativeRuntime::new(),
            containers,
        }),
        Some(NativeRuntime::new()),
    )
    .with_transport(Arc::new(transport))
    .with_events(Arc::new(Console));
    match agent
        .run(async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await
    {
        Ok(s) => {
            println!("tinker: stopped after {} actions", s.ran.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tinker: {e}");
            ExitCode::FAILURE
        }
    }
}
