//! One control-plane replica, wired from the crates: the engine, DHCP, TFTP,
//! HTTP (iPXE scripts, assets, metadata, worker API, operator API, `/metrics`)
//! and syslog (HookOS's logs) over one [`WorkflowStore`].
//!
//! Several replicas may share one store built for it (`PostgresStore`): each
//! answers any machine, claims are atomic in the store, and the engine takes a
//! lease on a workflow before each BMC step, so a step is done once however many
//! replicas see it (see `tinker_core::engine`). A replica that dies loses nothing:
//! its workers move to another (`AgentConfig::server` may list several), and a
//! lease it held runs out after `EngineConfig::lease`, after which another replica
//! takes the step over.
//!
//! ```no_run
//! # async fn run(store: std::sync::Arc<dyn tinker::core::WorkflowStore>) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tinker::control_plane::{ControlPlane, Listeners};
//!
//! let me = "10.0.0.1".parse().unwrap();
//! let plane = ControlPlane::new(store, Arc::new(tinker::bmc::MockConnector::new()), me, tinker::core::Secret::new("secret"));
//! let listeners = Listeners::bind(me, 67, 69, 8080).await?;
//! plane.serve(listeners, std::future::pending()).await?;
//! # Ok(())
//! # }
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tinker_boot::cached_store::CachedHardwareStore;
use tinker_boot::credentials::{AddressCheck, CallerCheck, operator_token};
use tinker_boot::dhcp::{DhcpConfig, DhcpLimits, DhcpServer, Mode};
use tinker_boot::http::tls::TlsIdentity;
use tinker_boot::http::{
    HttpConfig, HttpLimits, HttpServer, OperatorApi, OsieConfig, RouteChain, TINK_GRPC_PORT,
};
use tinker_boot::operators::OperatorTokens;
use tinker_boot::syslog::{SyslogLimits, SyslogServer};
use tinker_boot::tftp::{FileSource, StoreTransferLog, TftpLimits, TftpServer};
use tinker_boot::worker_api::WorkerApi;
use tinker_boot::{BootConfig, StoreBootResponder};
use tinker_core::clock::{SharedClock, SystemClock};
use tinker_core::engine::{Engine, EngineConfig};
use tinker_core::{PowerConnector, Secret, WorkflowStore};
use tokio::net::{TcpListener, UdpSocket};

/// The sockets a replica serves on, bound by the caller (so it can fail early, or
/// pass sockets it was handed).
#[derive(Debug)]
pub struct Listeners {
    /// DHCP (port 67 in the field; relays send here).
    pub dhcp: UdpSocket,
    /// proxyDHCP's port 4011, in proxy mode.
    pub proxy: Option<UdpSocket>,
    /// TFTP.
    pub tftp: UdpSocket,
    /// HTTP: scripts, assets, metadata, the worker API, and the operator's
    /// page and API unless `management` is given.
    pub http: TcpListener,
    /// The operator's page and API (and `/metrics`) on a management network of
    /// their own: given, they are served only here, not to the machines.
    pub management: Option<TcpListener>,
    /// HTTPS, when [`ControlPlane::tls`] is set: the worker API, the
    /// operator's page and API and metadata, over TLS.
    pub https: Option<TcpListener>,
    /// The metadata service alone on Hegel's port (50061 in the field), where
    /// Cluster API Provider Tinkerbell points cloud-init; `None`: off.
    pub hegel: Option<TcpListener>,
    /// Syslog (UDP 514 in the field, where HookOS sends its logs): given, the
    /// lines are filed in the machines' timelines, and HookOS's kernel line
    /// names this replica as its `syslog_host` (unless set).
    pub syslog: Option<UdpSocket>,
    /// Tinkerbell's gRPC `WorkflowService` for tink-agent (port 42113 in the
    /// field); none: not served.
    pub grpc: Option<TcpListener>,
}

/// Connections the kernel completes and holds for the HTTP server to accept:
/// the most Linux allows by default (`net.core.somaxconn`). Ten thousand
/// agents polling, whose idle connections the server closes past its cap,
/// reconnect by the thousand at once; a short queue (128, the usual default)
/// drops their SYNs, and each retransmission waits seconds longer than the
/// last.
pub const HTTP_BACKLOG: u32 = 4096;

/// The HTTP listener on `addr`, with [`HTTP_BACKLOG`].
fn listen_http(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(HTTP_BACKLOG)
}

impl Listeners {
    /// Binds DHCP, TFTP and HTTP on `address` (a port of 0 picks a free one).
    pub async fn bind(
        address: Ipv4Addr,
        dhcp: u16,
        tftp: u16,
        http: u16,
    ) -> std::io::Result<Listeners> {
        Ok(Listeners {
            // Broadcast allowed (replies to clients without an address), and a
            // receive buffer for bursts.
            dhcp: tinker_boot::dhcp::server::bind_udp(SocketAddr::from((address, dhcp)), None)?,
            proxy: None,
            tftp: UdpSocket::bind((address, tftp)).await?,
            http: listen_http(SocketAddr::from((address, http)))?,
            management: None,
            https: None,
            hegel: None,
            syslog: None,
            grpc: None,
        })
    }

    /// The HTTP address.
    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.http.local_addr()
    }
}

/// One replica's settings.
#[derive(Debug)]
pub struct ControlPlane {
    /// The store, shared by every replica.
    pub store: Arc<dyn WorkflowStore>,
    /// How the engine reaches each machine's BMC.
    pub power: Arc<dyn PowerConnector>,
    /// The engine's settings; `replica` must differ between replicas.
    pub engine: EngineConfig,
    /// The address machines reach this replica at (the TFTP server in DHCP answers).
    pub address: Ipv4Addr,
    /// Reservation (hand out addresses) or proxyDHCP.
    pub dhcp_mode: Mode,
    /// The port relay agents listen on (67 in the field).
    pub relay_port: u16,
    /// The secret worker tokens are derived from; the same on every replica.
    pub secret: Secret,
    /// Files served over TFTP (and HTTP boot): the iPXE binaries.
    pub tftp_files: FileSource,
    /// Kernels, initrds and images, served at `/assets`.
    pub assets: Option<FileSource>,
    /// Whether each iPXE script first checks that the in-memory OS's kernel
    /// and initrd are in [`assets`](Self::assets) when this replica serves
    /// them (`osie.base_url` empty): on by default, so a machine is never
    /// sent to a kernel that is not there. A simulation whose machines boot
    /// no kernel turns it off.
    pub check_osie_assets: bool,
    /// The in-memory OS and where its worker reports. `base_url` and
    /// `control_plane` empty: this replica's own HTTP address. `control_plane`
    /// may list every replica, comma-separated, for the workers to fail over.
    pub osie: OsieConfig,
    /// Worker heartbeat interval while an action runs, in seconds (1 by
    /// default). It is also how soon our agent hears that its workflow was
    /// cancelled (the heartbeat is refused and the agent stops the action), so
    /// the default keeps that within a second; a large rack may raise it to
    /// spend fewer requests and store writes (one each per running action per
    /// interval), at the cost of a slower cancel.
    pub heartbeat_seconds: u32,
    /// Worker API requests handled at once before the rest get 503 (`None`: the
    /// API's default).
    pub worker_api_in_flight: Option<usize>,
    /// The clock every service reads (the system's, unless simulated).
    pub clock: SharedClock,
    /// Whether a machine's token is given and taken only at its own address
    /// (the default), or the machines sit behind NAT.
    pub address_check: AddressCheck,
    /// The certificate and key of the HTTPS listener. Set, the worker API and
    /// the operator's page and API are served over HTTPS only (plain HTTP keeps
    /// scripts, binaries, assets and metadata, which firmware and iPXE fetch),
    /// and each machine's kernel line names the HTTPS URL and the certificate's
    /// fingerprint (`tinker_tls_fingerprint=`), which its agent pins.
    pub tls: Option<TlsIdentity>,
    /// What one client, and all together, may hold of the HTTP server.
    pub http_limits: HttpLimits,
    /// What one address may hold of the TFTP server.
    pub tftp_limits: TftpLimits,
    /// DHCP rate limits per MAC and per relay.
    pub dhcp_limits: DhcpLimits,
    /// Also serve the EC2 tree under `/tootles/instanceID/<id>/2009-04-04/`,
    /// as Tootles' `--tootles-instance-endpoint` does (off by default); the id
    /// must be the calling machine's own.
    pub tootles_instance_endpoint: bool,
    /// What each address may send to the syslog receiver.
    pub syslog_limits: SyslogLimits,
    /// Named operators (a tokens file), beside the operator token derived from
    /// [`ControlPlane::secret`], which is the operator named `operator`.
    pub operator_tokens: OperatorTokens,
}

impl ControlPlane {
    /// A replica with defaults: reservation DHCP, relays on 67, iPXE binaries from
    /// Debian's `ipxe` package (none if it is missing), no assets, an in-memory OS
    /// of `vmlinuz` and `initrd.img`.
    pub fn new(
        store: Arc<dyn WorkflowStore>,
        power: Arc<dyn PowerConnector>,
        address: Ipv4Addr,
        secret: Secret,
    ) -> Self {
        ControlPlane {
            store,
            power,
            engine: EngineConfig::default(),
            address,
            dhcp_mode: Mode::Reservation,
            relay_port: 67,
            secret,
            tftp_files: FileSource::ipxe_binaries("/usr/lib/ipxe")
                .unwrap_or_else(|_| FileSource::empty()),
            assets: None,
            check_osie_assets: true,
            osie: OsieConfig {
                kernel: "vmlinuz".into(),
                initrd: "initrd.img".into(),
                ..OsieConfig::default()
            },
            heartbeat_seconds: 1,
            worker_api_in_flight: None,
            clock: SystemClock::shared(),
            address_check: AddressCheck::Strict,
            tls: None,
            http_limits: HttpLimits::default(),
            tftp_limits: TftpLimits::default(),
            dhcp_limits: DhcpLimits::default(),
            tootles_instance_endpoint: false,
            syslog_limits: SyslogLimits::default(),
            operator_tokens: OperatorTokens::new(),
        }
    }

    /// Wires the services for a replica whose HTTP server is reached at
    /// `http_addr`, without binding or spawning anything: the same services
    /// [`ControlPlane::serve`] runs on sockets, a simulation can drive over
    /// in-memory transports.
    pub fn services(self, http_addr: SocketAddr) -> Services {
        self.wire(http_addr, None, false, false)
    }

    /// [`ControlPlane::services`] with HTTPS at `https_addr` (when
    /// [`ControlPlane::tls`] is set), and the operator's routes only on the
    /// management server when `separate_management`; HookOS is told to log
    /// here when `syslog` (a receiver runs).
    fn wire(
        self,
        http_addr: SocketAddr,
        https_addr: Option<SocketAddr>,
        separate_management: bool,
        syslog: bool,
    ) -> Services {
        let http = format!("http://{http_addr}");
        // The services that find a machine by who is calling (its MAC, its
        // address) share one cache of those lookups, filled from one read of
        // the inventory, instead of a store round trip per machine and service
        // (the boot responder and the worker API keep caches of their own in
        // front of it). The engine and the operators use the store itself.
        let by_caller: Arc<dyn WorkflowStore> =
            Arc::new(CachedHardwareStore::new(self.store.clone()).with_clock(self.clock.clone()));
        let mut osie = self.osie;
        // Our own assets serve the in-memory OS: a script sends a machine to
        // it only while it is there.
        let osie_from_assets =
            self.check_osie_assets && osie.base_url.is_empty() && self.assets.is_some();
        if osie.base_url.is_empty() {
            osie.base_url = format!("{http}/assets");
        }
        if osie.hookos.grpc_authority.is_empty() {
            osie.hookos.grpc_authority = format!("{}:{TINK_GRPC_PORT}", self.address);
        }
        if syslog && osie.hookos.syslog_host.is_empty() {
            osie.hookos.syslog_host = self.address.to_string();
        }
        // A network booting HookOS is a Tinkerbell network: iPXE is sent to
        // Smee's script path.
        let smee_paths = osie.default_os == tinker_boot::http::InMemoryOs::HookOs;
        let tls = self.tls.clone().zip(https_addr);
        if osie.control_plane.is_empty() {
            osie.control_plane = match &tls {
                Some((_, addr)) => format!("https://{addr}"),
                None => http.clone(),
            };
        }
        if let Some((identity, _)) = &tls {
            osie.extra_args.push(format!(
                "tinker_tls_fingerprint={}",
                tinker_boot::http::tls::fingerprint_text(&identity.fingerprint())
            ));
        }
        osie.worker_secret = Some(self.secret.clone());
        let callers = CallerCheck {
            mode: self.address_check,
            ..CallerCheck::default()
        };

        let mut dhcp_config = DhcpConfig::new(self.dhcp_mode, self.address);
        dhcp_config.relay_port = self.relay_port;
        let dhcp = DhcpServer::new(
            dhcp_config,
            Arc::new(
                StoreBootResponder::new(
                    by_caller.clone(),
                    BootConfig {
                        tftp_server: self.address,
                        http_base: http.clone(),
                        default_lease_seconds: 86400,
                        record_events: true,
                    },
                )
                .with_clock(self.clock.clone())
                .with_smee_script_path(smee_paths),
            ),
        )
        .with_observed_addresses(callers.observed.clone())
        .with_limits(self.dhcp_limits)
        .with_clock(self.clock.clone());
        let tftp = TftpServer::new(self.tftp_files.clone())
            .with_clock(self.clock.clone())
            .with_limits(self.tftp_limits)
            // The machines' timelines show when each loaded iPXE.
            .with_observer(Arc::new(
                StoreTransferLog::new(by_caller.clone())
                    .with_observed_addresses(callers.observed.clone()),
            ));
        let mut worker_api = WorkerApi::new(
            by_caller.clone(),
            self.secret.clone(),
            self.heartbeat_seconds,
        )
        .with_clock(self.clock.clone())
        .with_caller_check(callers.clone());
        if let Some(n) = self.worker_api_in_flight {
            worker_api = worker_api.with_limit(n);
        }
        let syslog = SyslogServer::new(by_caller.clone())
            .with_limits(self.syslog_limits)
            .with_clock(self.clock.clone());
        // The same rules as the worker API's (its address alone, since
        // tink-agent brings no token); none behind NAT, where it must not run.
        let grpc = tinker_grpc::GrpcServer::new(worker_api.core().clone());
        let mut metrics: Vec<Arc<dyn tinker_boot::http::MetricsSource>> = vec![
            dhcp.stats(),
            tftp.stats(),
            worker_api.metrics(),
            syslog.stats(),
        ];
        if let Ok(grpc) = &grpc {
            metrics.push(grpc.stats());
        }
        let operator: Arc<dyn tinker_boot::http::ExtraRoutes> = Arc::new(
            OperatorApi::new(self.store.clone(), operator_token(&self.secret))
                .with_operators(&self.operator_tokens)
                .with_clock(self.clock.clone()),
        );
        let worker_api: Arc<dyn tinker_boot::http::ExtraRoutes> = Arc::new(worker_api);
        // With TLS, what carries a token is served over HTTPS only.
        let mut secure_routes = vec![worker_api];
        if !separate_management {
            secure_routes.push(operator.clone());
        }
        let machine_routes = if tls.is_some() {
            Vec::new()
        } else {
            secure_routes.clone()
        };
        let management = HttpServer::new(HttpConfig {
            extra: Some(operator),
            metrics: metrics.clone(),
            serves_machines: false,
            ..HttpConfig::new(self.store.clone())
        })
        .with_clock(self.clock.clone())
        .with_limits(self.http_limits.clone());
        let machine_config = HttpConfig {
            osie,
            assets: self.assets,
            binaries: Some(self.tftp_files),
            extra: Some(Arc::new(RouteChain(machine_routes))),
            metrics,
            metadata: Arc::new(
                tinker_boot::StoreMetadata::new(by_caller.clone())
                    .with_observed_addresses(callers.observed.clone()),
            ),
            callers,
            osie_from_assets,
            ..HttpConfig::new(by_caller)
        };
        let https = tls.map(|(identity, _)| {
            let config = HttpConfig {
                extra: Some(Arc::new(RouteChain(secure_routes))),
                ..machine_config.clone()
            };
            (
                HttpServer::new(config)
                    .with_clock(self.clock.clone())
                    .with_limits(self.http_limits.clone())
                    .with_tootles_instance_endpoint(self.tootles_instance_endpoint),
                identity,
            )
        });
        let http = HttpServer::new(machine_config)
            .with_clock(self.clock.clone())
            .with_limits(self.http_limits)
            .with_tootles_instance_endpoint(self.tootles_instance_endpoint);
        let engine =
            Engine::new(self.store.clone(), self.power, self.engine).with_clock(self.clock);
        Services {
            dhcp,
            tftp,
            http,
            management,
            https,
            engine,
            syslog,
            grpc,
        }
    }

    /// Serves until `shutdown` resolves, then stops every service (finishing the
    /// requests in progress); the first service that fails stops the rest.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let http_addr = listeners
            .http
            .local_addr()
            .map_err(|source| ServeError::Failed {
                service: Service::Http,
                source: source.into(),
            })?;
        let https_addr = match (&self.tls, &listeners.https) {
            (Some(_), Some(l)) => Some(l.local_addr().map_err(|source| ServeError::Failed {
                service: Service::Https,
                source: source.into(),
            })?),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ServeError::Misconfigured {
                    reason: "TLS is configured but there is no HTTPS listener".into(),
                });
            }
            (None, Some(_)) => {
                return Err(ServeError::Misconfigured {
                    reason: "an HTTPS listener is given but no TLS certificate".into(),
                });
            }
        };
        let Services {
            dhcp,
            tftp,
            http,
            management,
            https,
            engine,
            syslog,
            grpc,
        } = self.wire(
            http_addr,
            https_addr,
            listeners.management.is_some(),
            listeners.syslog.is_some(),
        );
        let grpc = match (listeners.grpc, grpc) {
            (Some(listener), Ok(server)) => Some((listener, server)),
            (Some(_), Err(e)) => {
                return Err(ServeError::Misconfigured {
                    reason: e.to_string(),
                });
            }
            (None, _) => None,
        };

        let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
        let wait = |tx: &tokio::sync::broadcast::Sender<()>| {
            let mut rx = tx.subscribe();
            async move {
                let _ = rx.recv().await;
            }
        };
        let failed = |service: Service| {
            move |e: std::io::Error| ServeError::Failed {
                service,
                source: e.into(),
            }
        };
        let mut tasks = tokio::task::JoinSet::new();
        let w = wait(&stop);
        tasks.spawn(async move {
            let r = dhcp.serve(listeners.dhcp, listeners.proxy, w).await;
            (Service::Dhcp, r.map_err(failed(Service::Dhcp)))
        });
        let w = wait(&stop);
        tasks.spawn(async move {
            let r = tftp.serve(listeners.tftp, w).await;
            (Service::Tftp, r.map_err(failed(Service::Tftp)))
        });
        if let Some(listener) = listeners.hegel {
            // The same server (configuration, counters) answering metadata only.
            let hegel = http.clone().metadata_only();
            let w = wait(&stop);
            tasks.spawn(async move {
                let r = hegel.serve(listener, w).await;
                (Service::Hegel, r.map_err(failed(Service::Hegel)))
            });
        }
        let w = wait(&stop);
        tasks.spawn(async move {
            let r = http.serve(listeners.http, w).await;
            (Service::Http, r.map_err(failed(Service::Http)))
        });
        if let (Some(listener), Some((server, identity))) = (listeners.https, https) {
            let w = wait(&stop);
            tasks.spawn(async move {
                let r = server.serve_tls(listener, identity.config(), w).await;
                (Service::Https, r.map_err(failed(Service::Https)))
            });
        }
        if let Some(listener) = listeners.management {
            let w = wait(&stop);
            tasks.spawn(async move {
                let r = management.serve(listener, w).await;
                (Service::Management, r.map_err(failed(Service::Management)))
            });
        }
        if let Some(socket) = listeners.syslog {
            let w = wait(&stop);
            tasks.spawn(async move {
                let r = syslog.serve(socket, w).await;
                (Service::Syslog, r.map_err(failed(Service::Syslog)))
            });
        }
        if let Some((listener, server)) = grpc {
            let w = wait(&stop);
            tasks.spawn(async move {
                let r = server
                    .serve(listener, w)
                    .await
                    .map_err(|e| ServeError::Failed {
                        service: Service::Grpc,
                        source: e.into(),
                    });
                (Service::Grpc, r)
            });
        }
        let w = wait(&stop);
        tasks.spawn(async move {
            let r = engine.run(w).await.map_err(|e| ServeError::Failed {
                service: Service::Engine,
                source: e.into(),
            });
            (Service::Engine, r)
        });
        supervise(tasks, stop, shutdown).await
    }
}

/// Waits for `shutdown` or the first service to end, stops the others, and
/// reports the first failure.
async fn supervise(
    mut tasks: tokio::task::JoinSet<(Service, Result<(), ServeError>)>,
    stop: tokio::sync::broadcast::Sender<()>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    tokio::pin!(shutdown);
    let mut result = Ok(());
    tokio::select! {
        _ = &mut shutdown => {}
        Some(ended) = tasks.join_next() => {
            result = match ended {
                Ok((service, Ok(()))) => Err(ServeError::StoppedByItself { service }),
                Ok((_, Err(e))) => Err(e),
                Err(e) => Err(ServeError::Panicked { reason: e.to_string() }),
            };
        }
    }
    let _ = stop.send(());
    while let Some(ended) = tasks.join_next().await {
        if let (Ok(()), Ok((_, Err(e)))) = (&result, ended) {
            result = Err(e);
        }
    }
    result
}

/// The services of one replica, wired but not running.
#[derive(Debug)]
pub struct Services {
    /// DHCP (reservation or proxyDHCP).
    pub dhcp: DhcpServer,
    /// TFTP.
    pub tftp: TftpServer,
    /// HTTP: scripts, assets, metadata, the worker and operator APIs, `/metrics`.
    pub http: HttpServer,
    /// The operator's page and API and `/metrics` alone, for a management
    /// listener.
    pub management: HttpServer,
    /// With TLS: the worker API, the operator's routes and metadata, and the
    /// identity to serve them with.
    pub https: Option<(HttpServer, TlsIdentity)>,
    /// The workflow engine.
    pub engine: Engine,
    /// The syslog receiver (its counters are on `/metrics` whether it runs
    /// or not).
    pub syslog: SyslogServer,
    /// Tinkerbell's gRPC `WorkflowService`, or why it cannot run (behind NAT).
    pub grpc: Result<tinker_grpc::GrpcServer, tinker_grpc::GrpcError>,
}

/// One of a replica's services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Service {
    /// DHCP.
    Dhcp,
    /// TFTP.
    Tftp,
    /// HTTP.
    Http,
    /// The management listener (operator page and API).
    Management,
    /// HTTPS.
    Https,
    /// The metadata service on Hegel's port.
    Hegel,
    /// The engine.
    Engine,
    /// The syslog receiver.
    Syslog,
    /// The gRPC `WorkflowService`.
    Grpc,
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Service::Dhcp => "DHCP",
            Service::Tftp => "TFTP",
            Service::Http => "HTTP",
            Service::Management => "management HTTP",
            Service::Https => "HTTPS",
            Service::Hegel => "Hegel metadata",
            Service::Engine => "engine",
            Service::Syslog => "syslog",
            Service::Grpc => "gRPC",
        })
    }
}

/// Why a replica stopped serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A service failed.
    #[error("{service}: {source}")]
    Failed {
        /// Which.
        service: Service,
        /// Its error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A service ended without being asked to.
    #[error("{service} stopped by itself")]
    StoppedByItself {
        /// Which.
        service: Service,
    },
    /// The listeners and the settings do not fit together.
    #[error("misconfigured: {reason}")]
    Misconfigured {
        /// What does not fit.
        reason: String,
    },
    /// A service panicked.
    #[error("a service panicked: {reason}")]
    Panicked {
        /// The panic, as the runtime reports it.
        reason: String,
    },
}
