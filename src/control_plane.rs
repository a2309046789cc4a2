//! One control-plane replica, wired from the crates: the engine, DHCP, TFTP and
//! HTTP (iPXE scripts, assets, metadata, worker API, operator API, `/metrics`)
//! over one [`WorkflowStore`].
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
use tinker_boot::credentials::{AddressCheck, CallerCheck, operator_token};
use tinker_boot::dhcp::{DhcpConfig, DhcpLimits, DhcpServer, Mode};
use tinker_boot::http::tls::TlsIdentity;
use tinker_boot::http::{HttpConfig, HttpLimits, HttpServer, OperatorApi, OsieConfig, RouteChain};
use tinker_boot::operators::OperatorTokens;
use tinker_boot::tftp::{FileSource, TftpLimits, TftpServer};
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
            http: TcpListener::bind((address, http)).await?,
            management: None,
            https: None,
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
    /// The in-memory OS and where its worker reports. `base_url` and
    /// `control_plane` empty: this replica's own HTTP address. `control_plane`
    /// may list every replica, comma-separated, for the workers to fail over.
    pub osie: OsieConfig,
    /// Worker heartbeat interval, in seconds.
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
            osie: OsieConfig {
                kernel: "vmlinuz".into(),
                initrd: "initrd.img".into(),
                ..OsieConfig::default()
            },
            heartbeat_seconds: 10,
            worker_api_in_flight: None,
            clock: SystemClock::shared(),
            address_check: AddressCheck::Strict,
            tls: None,
            http_limits: HttpLimits::default(),
            tftp_limits: TftpLimits::default(),
            dhcp_limits: DhcpLimits::default(),
            operator_tokens: OperatorTokens::new(),
        }
    }

    /// Wires the services for a replica whose HTTP server is reached at
    /// `http_addr`, without binding or spawning anything: the same services
    /// [`ControlPlane::serve`] runs on sockets, a simulation can drive over
    /// in-memory transports.
    pub fn services(self, http_addr: SocketAddr) -> Services {
        self.wire(http_addr, None, false)
    }

    /// [`ControlPlane::services`] with HTTPS at `https_addr` (when
    /// [`ControlPlane::tls`] is set), and the operator's routes only on the
    /// management server when `separate_management`.
    fn wire(
        self,
        http_addr: SocketAddr,
        https_addr: Option<SocketAddr>,
        separate_management: bool,
    ) -> Services {
        let http = format!("http://{http_addr}");
        let mut osie = self.osie;
        if osie.base_url.is_empty() {
            osie.base_url = format!("{http}/assets");
        }
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
                    self.store.clone(),
                    BootConfig {
                        tftp_server: self.address,
                        http_base: http.clone(),
                        default_lease_seconds: 86400,
                        record_events: true,
                    },
                )
                .with_clock(self.clock.clone()),
            ),
        )
        .with_observed_addresses(callers.observed.clone())
        .with_limits(self.dhcp_limits)
        .with_clock(self.clock.clone());
        let tftp = TftpServer::new(self.tftp_files.clone())
            .with_clock(self.clock.clone())
            .with_limits(self.tftp_limits);
        let mut worker_api = WorkerApi::new(
            self.store.clone(),
            self.secret.clone(),
            self.heartbeat_seconds,
        )
        .with_clock(self.clock.clone())
        .with_caller_check(callers.clone());
        if let Some(n) = self.worker_api_in_flight {
            worker_api = worker_api.with_limit(n);
        }
        let metrics: Vec<Arc<dyn tinker_boot::http::MetricsSource>> =
            vec![dhcp.stats(), tftp.stats(), worker_api.metrics()];
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
                tinker_boot::StoreMetadata::new(self.store.clone())
                    .with_observed_addresses(callers.observed.clone()),
            ),
            callers,
            ..HttpConfig::new(self.store.clone())
        };
        let https = tls.map(|(identity, _)| {
            let config = HttpConfig {
                extra: Some(Arc::new(RouteChain(secure_routes))),
                ..machine_config.clone()
            };
            (
                HttpServer::new(config)
                    .with_clock(self.clock.clone())
                    .with_limits(self.http_limits.clone()),
                identity,
            )
        });
        let http = HttpServer::new(machine_config)
            .with_clock(self.clock.clone())
            .with_limits(self.http_limits);
        let engine =
            Engine::new(self.store.clone(), self.power, self.engine).with_clock(self.clock);
        Services {
            dhcp,
            tftp,
            http,
            management,
            https,
            engine,
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
        } = self.wire(http_addr, https_addr, listeners.management.is_some());

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
    /// The engine.
    Engine,
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Service::Dhcp => "DHCP",
            Service::Tftp => "TFTP",
            Service::Http => "HTTP",
            Service::Management => "management HTTP",
            Service::Https => "HTTPS",
            Service::Engine => "engine",
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
