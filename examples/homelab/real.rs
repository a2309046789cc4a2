//! `homelab --config FILE`: the stack on a real network.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tinker::bmc::{Connector, EnvSecrets, RetryPolicy};
use tinker::boot::credentials::{
    AddressCheck, operator_token, read_or_create_secret_file, write_secret_file,
};
use tinker::boot::dhcp::Mode;
use tinker::boot::dhcp::server::bind_udp;
use tinker::boot::http::InMemoryOs;
use tinker::boot::operators::OperatorTokens;
use tinker::boot::tftp::FileSource;
use tinker::control_plane::{ControlPlane, Listeners};
use tinker::core::WorkflowStore;
use tinker::core::model::Document;
use tinker::store::RedbStore;
use tinker::watched;

#[path = "../osie/build.rs"]
mod osie_build;

/// The configuration file (see `examples/homelab/homelab.yaml`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    interface: String,
    address: Ipv4Addr,
    #[serde(default)]
    proxy_dhcp: bool,
    objects: PathBuf,
    #[serde(default)]
    assets: Option<PathBuf>,
    #[serde(default = "default_data")]
    data: PathBuf,
    #[serde(default = "default_http")]
    http_port: u16,
    #[serde(default = "default_dhcp")]
    dhcp_port: u16,
    #[serde(default = "default_tftp")]
    tftp_port: u16,
    #[serde(default = "default_tftp_root")]
    tftp_root: PathBuf,
    #[serde(default = "default_kernel")]
    kernel: String,
    #[serde(default = "default_initrd")]
    initrd: String,
    #[serde(default)]
    kernel_args: Vec<String>,
    #[serde(default)]
    bmc_user: Option<String>,
    /// The machines reach the control plane through NAT (weaker; see the
    /// README's Security section).
    #[serde(default)]
    behind_nat: bool,
    /// Where the operator's page and API listen, on a management network of
    /// their own (default: beside the machines' services).
    #[serde(default)]
    management_address: Option<SocketAddr>,
    /// A PEM certificate and its key (mode 0600): the worker API, the operator
    /// page and metadata are then also served over HTTPS on `https_port`, and
    /// the machines' agents pin the certificate.
    #[serde(default)]
    tls_cert: Option<PathBuf>,
    #[serde(default)]
    tls_key: Option<PathBuf>,
    #[serde(default = "default_https")]
    https_port: u16,
    /// The metadata service also on Hegel's port (0: off).
    #[serde(default = "default_hegel")]
    hegel_port: u16,
    /// Tootles' `/tootles/instanceID/<id>/2009-04-04/` tree (the id must be
    /// the caller's own).
    #[serde(default)]
    tootles_instance_endpoint: bool,
    /// Tinkerbell's gRPC WorkflowService for tink-agent: 42113 unless set
    /// (0 turns it off; off unless set when `behind_nat`, where it cannot run).
    #[serde(default)]
    grpc_port: Option<u16>,
    /// One password (`TINKER_BMC_PASSWORD`) for every BMC whose secret has no
    /// variable of its own. Off unless set: a typo in a secret's name must not
    /// send the shared password to that BMC silently.
    #[serde(default)]
    bmc_shared_password: bool,
    /// Named operators: a file of `NAME sha256:HEX` lines, beside the
    /// generated operator token (named `operator`).
    #[serde(default)]
    operator_tokens: Option<PathBuf>,
    /// Where HookOS, tink-agent and iPXE send their logs (UDP; 0 turns the
    /// receiver off).
    #[serde(default = "default_syslog")]
    syslog_port: u16,
    /// HookOS, Tinkerbell's in-memory OS.
    #[serde(default)]
    hookos: HookOs,
    /// Tinker's own in-memory OS: `prebuilt` (the default: `kernel` and
    /// `initrd` must be in the assets) or `build` (built into the assets
    /// before serving when they are not there).
    #[serde(default)]
    osie: Osie,
}

/// `osie:` in the config file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Osie {
    /// Serve what the assets hold; refuse to start without it.
    #[default]
    Prebuilt,
    /// Build it into the assets first when it is missing.
    Build,
}

/// `hookos:` in the config file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HookOs {
    /// Every machine boots HookOS unless its Hardware says otherwise (the
    /// `tinker.dev/in-memory-os` annotation).
    #[serde(default)]
    default: bool,
    /// Where `vmlinuz-<arch>` and `initramfs-<arch>` are (default: the assets).
    #[serde(default)]
    base_url: Option<String>,
    /// `grpc_authority=` (default: this address, port 42113).
    #[serde(default)]
    grpc_authority: Option<String>,
    /// `tinkerbell_tls=` and `tinkerbell_insecure_tls=`.
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    insecure_tls: bool,
    /// `tink_worker_image=`.
    #[serde(default)]
    tink_worker_image: Option<String>,
    /// Further kernel arguments, before each Hardware's `osie.kernelParams`.
    #[serde(default)]
    extra_args: Vec<String>,
}

fn default_data() -> PathBuf {
    "tinker-data".into()
}
fn default_http() -> u16 {
    8080
}
fn default_https() -> u16 {
    8443
}
fn default_hegel() -> u16 {
    50061
}
fn default_dhcp() -> u16 {
    67
}
fn default_tftp() -> u16 {
    69
}
fn default_syslog() -> u16 {
    tinker::boot::syslog::SYSLOG_PORT
}
fn default_tftp_root() -> PathBuf {
    "/usr/lib/ipxe".into()
}
fn default_kernel() -> String {
    "vmlinuz".into()
}
fn default_initrd() -> String {
    "initramfs".into()
}

/// Makes sure the in-memory OS the boot scripts name is in the assets, so no
/// machine is sent to a kernel that is not there: built when the config says
/// `osie: build`, else an error that says the one command that builds it.
fn ensure_in_memory_os(c: &Config, assets: Option<&Path>, config: &Path) -> Result<(), String> {
    if c.hookos.default {
        // Every machine boots HookOS from its own base URL.
        return Ok(());
    }
    let Some(assets) = assets else {
        return Err(format!(
            "no `assets:` directory in {}: machines boot the in-memory OS from it. Add `assets: ./assets` and build the OS into it:\n  {}",
            config.display(),
            osie_build::command(Path::new("assets"))
        ));
    };
    let missing: Vec<&str> = [c.kernel.as_str(), c.initrd.as_str()]
        .into_iter()
        .filter(|f| !assets.join(f).is_file())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if c.osie == Osie::Build && c.kernel == "vmlinuz" && c.initrd == "initramfs" {
        println!(
            "no in-memory OS in {}; building it (osie: build)",
            assets.display()
        );
        // The worker built beside this program, when it is there.
        let worker = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("worker")))
            .filter(|w| w.is_file());
        let w = osie_build::build(
            tinker_osie::Arch::X86_64,
            assets,
            &osie_build::default_cache(),
            worker.as_deref(),
            false,
        )?;
        println!(
            "built {} ({} bytes, sha256 {})",
            w.initramfs.display(),
            w.initramfs_size,
            w.initramfs_sha256
        );
        return Ok(());
    }
    Err(format!(
        "no in-memory OS in {}: {} missing, and no machine is sent to a kernel that is not there. Build it with:\n  {}\nor set `osie: build` in {} to build it before serving{}",
        assets.display(),
        missing.join(" and "),
        osie_build::command(assets),
        config.display(),
        if c.kernel != "vmlinuz" || c.initrd != "initramfs" {
            " (with `kernel: vmlinuz` and `initrd: initramfs`, the names it writes)"
        } else {
            ""
        }
    ))
}

fn e<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |err| format!("{what}: {err}")
}

/// Loads the objects directory and prints what became of each file and object.
async fn load(store: &dyn WorkflowStore, files: &BTreeMap<PathBuf, SystemTime>) -> Vec<Document> {
    let loaded = watched::load(store, files).await;
    for o in &loaded.outcomes {
        match o {
            watched::Outcome::Stored { .. } => println!("{o}"),
            _ => eprintln!("{o}"),
        }
    }
    loaded.documents
}

pub async fn run(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(e("config"))?;
    let c: Config =
        serde_norway::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let rel = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let (objects, data) = (rel(&c.objects), rel(&c.data));
    let assets = c
        .assets
        .as_deref()
        .map(|a| rel(a.strip_prefix(".").unwrap_or(a)));
    ensure_in_memory_os(&c, assets.as_deref(), path)?;
    std::fs::create_dir_all(&data).map_err(e("data directory"))?;
    let store: Arc<dyn WorkflowStore> = Arc::new(
        RedbStore::open(data.join("tinker.redb"))
            .await
            .map_err(|x| x.to_string())?,
    );
    let secret = read_or_create_secret_file(&data.join("worker-secret")).map_err(e("secret"))?;
    let operator_file = data.join("operator-token");
    write_secret_file(&operator_file, &operator_token(&secret)).map_err(e("operator token"))?;
    let operators = match &c.operator_tokens {
        Some(p) => OperatorTokens::read(&rel(p)).map_err(|x| x.to_string())?,
        None => OperatorTokens::new(),
    };
    let http = format!("http://{}:{}", c.address, c.http_port);

    let tls = match (&c.tls_cert, &c.tls_key) {
        (Some(cert), Some(key)) => Some(
            tinker::boot::http::tls::TlsIdentity::from_files(&rel(cert), &rel(key))
                .map_err(|x| x.to_string())?,
        ),
        (None, None) => None,
        _ => return Err("tls_cert and tls_key go together".into()),
    };

    // Bind everything first: fail fast with the reason.
    let listeners = Listeners {
        dhcp: bind_udp(
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, c.dhcp_port)),
            Some(&c.interface),
        )
        .map_err(e("DHCP (run as root; is the interface right?)"))?,
        proxy: if c.proxy_dhcp {
            Some(
                bind_udp(
                    SocketAddr::from((Ipv4Addr::UNSPECIFIED, 4011)),
                    Some(&c.interface),
                )
                .map_err(e("proxyDHCP port 4011"))?,
            )
        } else {
            None
        },
        tftp: tokio::net::UdpSocket::bind((c.address, c.tftp_port))
            .await
            .map_err(e("TFTP"))?,
        http: tokio::net::TcpListener::bind((c.address, c.http_port))
            .await
            .map_err(e("HTTP"))?,
        https: match &tls {
            Some(_) => Some(
                tokio::net::TcpListener::bind((c.address, c.https_port))
                    .await
                    .map_err(e("HTTPS"))?,
            ),
            None => None,
        },
        hegel: match c.hegel_port {
            0 => None,
            port => Some(
                tokio::net::TcpListener::bind((c.address, port))
                    .await
                    .map_err(e("Hegel's metadata port"))?,
            ),
        },
        grpc: match c.grpc_port.unwrap_or(if c.behind_nat {
            0
        } else {
            tinker::grpc::DEFAULT_PORT
        }) {
            0 => None,
            port => Some(
                tokio::net::TcpListener::bind((c.address, port))
                    .await
                    .map_err(e("gRPC"))?,
            ),
        },
        management: match c.management_address {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(e("management address"))?,
            ),
            None => None,
        },
        syslog: match c.syslog_port {
            0 => None,
            port => Some(
                tokio::net::UdpSocket::bind((c.address, port))
                    .await
                    .map_err(e("syslog"))?,
            ),
        },
    };
    let operator_url = match c.management_address {
        Some(addr) => format!("http://{addr}"),
        None => http.clone(),
    };

    let mut files = watched::scan(&objects);
    let docs = load(store.as_ref(), &files).await;
    let secrets = if c.bmc_shared_password {
        EnvSecrets::with_shared_fallback()
    } else {
        EnvSecrets::new()
    };
    // Machines without a BMC (annotated `tinker.dev/power: wake-on-lan`, or a
    // Machine with `preferredOrder: [wol]`) are woken on the provisioning
    // interface, and only there.
    let mut connector =
        Connector::new(Arc::new(secrets), RetryPolicy::default()).with_wake_on_lan(&c.interface);
    let machines = connector
        .add_rufio_machines(&docs)
        .map_err(|x| x.to_string())?;
    if let Some(user) = &c.bmc_user {
        connector.set_user_everywhere(user);
    }

    // One control-plane replica (see `tinker::control_plane`) on this network.
    let mut plane = ControlPlane::new(store.clone(), Arc::new(connector), c.address, secret);
    if c.proxy_dhcp {
        plane.dhcp_mode = Mode::Proxy;
    }
    if c.behind_nat {
        plane.address_check = AddressCheck::BehindNat;
    }
    plane.tls = tls;
    plane.tootles_instance_endpoint = c.tootles_instance_endpoint;
    plane.operator_tokens = operators;
    plane.tftp_files = FileSource::ipxe_binaries(&c.tftp_root)
        .and_then(|s| s.with_directory(&c.tftp_root))
        .map_err(|x| x.to_string())?;
    if let Some(a) = &assets {
        plane.assets = Some(FileSource::directory(a.clone()).map_err(e("assets"))?);
    }
    plane.osie.kernel = c.kernel.clone();
    plane.osie.initrd = c.initrd.clone();
    plane.osie.extra_args = c.kernel_args.clone();
    if c.hookos.default {
        plane.osie.default_os = InMemoryOs::HookOs;
    }
    let hook = &mut plane.osie.hookos;
    hook.base_url = c.hookos.base_url.clone().unwrap_or_default();
    hook.grpc_authority = c.hookos.grpc_authority.clone().unwrap_or_default();
    hook.tls = c.hookos.tls;
    hook.insecure_tls = c.hookos.insecure_tls;
    hook.tink_worker_image = c.hookos.tink_worker_image.clone();
    hook.extra_args = c.hookos.extra_args.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(plane.serve(listeners, async {
        let _ = stopped.await;
    }));
    println!(
        "Tinker homelab on {} ({}): {} BMCs; objects from {}",
        c.interface,
        c.address,
        machines,
        objects.display()
    );
    println!(
        "status page: {operator_url}/status  (sign in with the token in {}; metrics: {operator_url}/metrics)",
        operator_file.display()
    );
    println!("serving; Ctrl-C to stop");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(e("signals"))?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {
                let now = watched::scan(&objects);
                if now != files {
                    files = now;
                    load(store.as_ref(), &files).await;
                }
            }
        }
    }
    println!("stopping");
    let _ = stop.send(());
    match serving.await {
        Ok(Err(err)) => eprintln!("a service ended with an error: {err}"),
        Err(err) => eprintln!("the services panicked: {err}"),
        Ok(Ok(())) => {}
    }
    println!("stopped");
    Ok(())
}
