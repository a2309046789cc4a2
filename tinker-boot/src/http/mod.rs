//! The HTTP side of booting, on hyper: per-machine iPXE scripts, iPXE binaries for
//! UEFI HTTP boot, boot assets (kernel, initrd, disk images) with Range requests,
//! the metadata service as Tinkerbell's Tootles serves it (EC2 paths,
//! Tinkerbell's `/metadata`, the opt-in instance-id tree), and Prometheus
//! `/metrics`. [`HttpServer::metadata_only`] serves the metadata alone, for
//! Hegel's port 50061.
//!
//! | path | what |
//! |---|---|
//! | `/ipxe/{mac}/auto.ipxe`, `/ipxe/script/{mac}/auto.ipxe`, `/auto.ipxe` | the machine's iPXE script (by MAC, at our path or Smee's, or by source address) |
//! | `/ipxe/binary/{name}`, `/ipxe/binary/{mac}/{name}` | iPXE binaries (UEFI HTTP boot; Smee's form names the MAC first) |
//! | `/assets/{path}` | boot assets from a directory; `GET`/`HEAD`, single `Range` |
//! | `/2009-04-04/meta-data/...`, `/2009-04-04/user-data`, `/latest/...` | EC2 metadata of the caller |
//! | `/metadata` | Tinkerbell's metadata JSON of the caller (what rootio reads) |
//! | `/tootles/instanceID/{id}/2009-04-04/...` | the same EC2 tree, when [`HttpServer::with_tootles_instance_endpoint`]; `{id}` must be the caller's |
//! | `/metrics`, `/healthz` | Prometheus counters, liveness |
//!
//! A machine is known by the source address of its connection, never by what it
//! says; `X-Forwarded-For` is read only from the proxies listed as trusted.
//!
//! Time (the pause after a failed accept, the grace period at shutdown) is read
//! from the clock given with [`HttpServer::with_clock`].

mod body;
pub mod client;
mod conn;
mod csrf;
mod diagnosis;
mod ipxe;
mod metadata;
mod metrics;
mod operate;
mod operator;
mod pages;
pub mod tls;

pub use body::Body;
pub(crate) use body::full as body_full;
pub use conn::{ConnStats, HttpLimits, Refusal};
pub use csrf::CSRF_HEADER;
pub use ipxe::{
    HookOsConfig, IN_MEMORY_OS_ANNOTATION, InMemoryOs, OsieConfig, SMEE_KERNEL_ARGS,
    TINK_GRPC_PORT, UnknownOs, hookos_kernel_args, in_memory_os, script,
};
pub use metrics::MetricsSource;
pub use metrics::{CounterRow, register_counters};
pub use operator::{
    MAX_APPLY_BODY, MAX_SESSIONS, MAX_WATCHES, OperatorApi, RouteChain, SESSION_LIFETIME,
    WATCH_WAIT, kind_named,
};
/// The Prometheus client `MetricsSource` registers into, re-exported so a
/// vendor's own source uses the same version.
pub use prometheus_client;

use crate::tftp::{FileSource, SourceError};
use body::{FileBody, full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use prometheus_client::registry::Registry;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tinker_core::clock::{SharedClock, SystemClock};
use tinker_core::store::{EventKind, EventSource, MachineEvent};
use tinker_core::{MetadataSource, WorkflowStore};
use tokio::net::TcpListener;

/// A hook for routes served beside these (the worker API): `None` means "not mine".
#[async_trait::async_trait]
pub trait ExtraRoutes: Send + Sync + std::fmt::Debug + 'static {
    /// Answers the request, or returns it untouched as `Err`.
    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: IpAddr,
    ) -> Result<Response<Body>, Request<Incoming>>;
}

/// Counters of the HTTP server.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Requests served.
    pub requests: AtomicU64,
    /// iPXE scripts served.
    pub scripts: AtomicU64,
    /// Metadata answers.
    pub metadata: AtomicU64,
    /// Metadata requests from unknown addresses.
    pub metadata_unknown: AtomicU64,
    /// Metadata requests by an instance id that is not the caller's.
    pub metadata_refused: AtomicU64,
    /// Asset bytes sent.
    pub asset_bytes: AtomicU64,
    /// Paths refused (outside the served directory).
    pub refused: AtomicU64,
    /// Scripts served without the machine's token, to a caller that is not the
    /// machine (someone who knows its MAC).
    pub scripts_without_token: AtomicU64,
    /// Scripts that told a machine to wait: its in-memory OS (kernel or
    /// initrd) was missing from the assets.
    pub scripts_osie_missing: AtomicU64,
}

/// Everything the HTTP server serves from.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Where the machines' Hardware lives.
    pub store: Arc<dyn WorkflowStore>,
    /// Metadata by source address.
    pub metadata: Arc<dyn MetadataSource>,
    /// What the default script boots.
    pub osie: OsieConfig,
    /// Boot assets (kernel, initrd, images); `None` serves none.
    pub assets: Option<FileSource>,
    /// iPXE binaries for HTTP boot.
    pub binaries: Option<FileSource>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Other routes (the worker API).
    pub extra: Option<Arc<dyn ExtraRoutes>>,
    /// Metrics of the other services, appended to `/metrics`.
    pub metrics: Vec<Arc<dyn MetricsSource>>,
    /// Whether a caller is the machine it names (scripts with tokens, metadata
    /// in proxyDHCP mode); share it with the worker API and the DHCP server.
    pub callers: crate::credentials::CallerCheck,
    /// Whether this server answers machines (scripts, binaries, assets,
    /// metadata). `false` for a management listener, which serves only the
    /// extra routes (the operator's), `/metrics` and `/healthz`.
    pub serves_machines: bool,
    /// The in-memory OS's kernel and initrd are served from `assets` (the
    /// base URL is this server's `/assets`): a machine is sent to them only
    /// while both are there, checked at each script; otherwise its script
    /// says what is missing and asks again in [`OSIE_MISSING_RETRY_SECONDS`].
    pub osie_from_assets: bool,
}

/// How long a machine whose in-memory OS is missing waits before asking for
/// its script again.
pub const OSIE_MISSING_RETRY_SECONDS: u32 = 30;

impl HttpConfig {
    /// A configuration over `store` with its metadata from the same store, no
    /// assets, no binaries, no trusted proxies, no extra routes; fill in the rest.
    pub fn new(store: Arc<dyn WorkflowStore>) -> Self {
        HttpConfig {
            metadata: Arc::new(crate::StoreMetadata::new(store.clone())),
            store,
            osie: OsieConfig::default(),
            assets: None,
            binaries: None,
            trusted_proxies: Vec::new(),
            extra: None,
            metrics: Vec::new(),
            callers: Default::default(),
            serves_machines: true,
            osie_from_assets: false,
        }
    }
}

/// The HTTP server.
#[derive(Clone)]
pub struct HttpServer {
    config: Arc<HttpConfig>,
    stats: Arc<HttpStats>,
    registry: Arc<Registry>,
    clock: SharedClock,
    limits: Arc<HttpLimits>,
    conns: Arc<ConnStats>,
    /// When each machine's last event of each kind this server records was
    /// recorded (only known machines are served a script or metadata).
    machine_events: Arc<crate::event_window::EventWindow>,
    /// Writes the machine events in batches, off the answer's path.
    events: Arc<crate::event_writer::EventWriter>,
    /// Serves the metadata service alone (Hegel's port).
    only_metadata: bool,
    /// Serves Tootles' `/tootles/instanceID/<id>/...` tree.
    tootles_instance_endpoint: bool,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("config", &self.config)
            .field("stats", &self.stats)
            .field("clock", &self.clock)
            .field("limits", &self.limits)
            .field("conns", &self.conns)
            .field("only_metadata", &self.only_metadata)
            .field("tootles_instance_endpoint", &self.tootles_instance_endpoint)
            .finish_non_exhaustive()
    }
}

/// How long requests in flight may take to finish once shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The pause after a failed accept (out of file descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

impl HttpServer {
    /// A server with this configuration; its `/metrics` registry holds its own
    /// counters and those of every [`HttpConfig::metrics`] source.
    pub fn new(config: HttpConfig) -> Self {
        let stats = Arc::<HttpStats>::default();
        let conns = Arc::<ConnStats>::default();
        let mut registry = metrics::registry(stats.clone(), &config.metrics);
        registry.register_collector(Box::new(ConnCollector(conns.clone())));
        let events = Arc::new(crate::event_writer::EventWriter::new(
            config.store.clone(),
            "http",
        ));
        HttpServer {
            config: Arc::new(config),
            stats,
            registry: Arc::new(registry),
            clock: SystemClock::shared(),
            limits: Arc::new(HttpLimits::default()),
            conns,
            machine_events: Arc::default(),
            events,
            only_metadata: false,
            tootles_instance_endpoint: false,
        }
    }

    /// This server answering only the metadata service (the EC2 tree,
    /// `/metadata`, the Tootles tree when on) and `/healthz` and `/metrics`,
    /// with the same configuration and counters: what Hegel served on port
    /// 50061, where Cluster API Provider Tinkerbell still points cloud-init.
    pub fn metadata_only(mut self) -> Self {
        self.only_metadata = true;
        self
    }

    /// Also serves the EC2 tree under `/tootles/instanceID/<id>/2009-04-04/`,
    /// as Tootles does with `--tootles-instance-endpoint` (off by default, as
    /// there). Unlike Tootles, the id does not stand in for the caller's
    /// address: the caller is still found by its address, and an id that is
    /// not its own is refused (403).
    pub fn with_tootles_instance_endpoint(mut self, on: bool) -> Self {
        self.tootles_instance_endpoint = on;
        self
    }

    /// Holds clients to `limits` instead of [`HttpLimits::default`].
    pub fn with_limits(mut self, limits: HttpLimits) -> Self {
        self.limits = Arc::new(limits);
        self
    }

    /// The limits connections are held to.
    pub fn limits(&self) -> &HttpLimits {
        &self.limits
    }

    /// The connection layer's counters (also on `/metrics`).
    pub fn conn_stats(&self) -> Arc<ConnStats> {
        self.conns.clone()
    }

    /// Reads the time from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<HttpStats> {
        self.stats.clone()
    }

    /// Serves connections from `listener` until `shutdown` resolves; then lets
    /// the requests in flight finish (at most 10 s) and closes every connection,
    /// keep-alive ones included. Each connection is held to the server's
    /// [`HttpLimits`]: one past the total or its address's limit is closed as
    /// soon as it is accepted, and counted.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        self.serve_with(listener, None, shutdown).await
    }

    /// [`HttpServer::serve`] over TLS with `config` (see [`tls`]): the same
    /// routes, limits and timeouts, and a TLS handshake that must finish within
    /// the header-read timeout.
    pub async fn serve_tls(
        self,
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        self.serve_with(listener, Some(acceptor), shutdown).await
    }

    async fn serve_with(
        self,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        tokio::pin!(shutdown);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let total = Arc::new(tokio::sync::Semaphore::new(self.limits.max_connections));
        let per_address = Arc::new(crate::per_address::PerAddress::default());
        let idle = conn::IdleConns::new(self.limits.max_idle_connections, self.conns.clone());
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => {
                    drop(listener);
                    tokio::select! {
                        _ = graceful.shutdown() => {}
                        _ = self.clock.sleep(SHUTDOWN_GRACE) => {}
                    }
                    return Ok(());
                }
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!(error = %e, "HTTP accept failed");
                        self.clock.sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            // Accepted and closed at once rather than left in the backlog: the
            // descriptor is freed now and the client learns it at once.
            let Ok(permit) = total.clone().try_acquire_owned() else {
                self.refuse(stream, peer, Refusal::TotalLimit);
                continue;
            };
            let Some(slot) = per_address.try_take(
                peer.ip().to_canonical(),
                self.limits.max_connections_per_address,
            ) else {
                self.refuse(stream, peer, Refusal::PerAddressLimit);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let open = conn::OpenGuard::new(self.conns.clone());
            let state = Arc::new(conn::ConnState::default());
            let io = self.guard(stream).closed_when_idle(state.clone());
            let tracked = Some((idle.clone(), state.clone()));
            let idle_slot = conn::IdleSlot(idle.clone(), state);
            let conns = self.conns.clone();
            let Some(acceptor) = tls.clone() else {
                let conn = conn::builder(&self.limits, &self.clock)
                    .serve_connection(TokioIo::new(io), self.service(peer, tracked));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _held = (permit, slot, open, idle_slot);
                    if let Err(e) = conn.await {
                        count_timeout(&conns, &e);
                    }
                });
                continue;
            };
            let watcher = graceful.watcher();
            let this = self.clone();
            tokio::spawn(async move {
                let _held = (permit, slot, open, idle_slot);
                // The handshake is bounded like a request head: a client that
                // opens a connection and says nothing holds it no longer.
                let stream = tokio::select! {
                    r = acceptor.accept(io) => match r {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                    },
                    _ = this.clock.sleep(this.limits.header_read_timeout) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let conn = conn::builder(&this.limits, &this.clock)
                    .serve_connection(TokioIo::new(stream), this.service(peer, tracked));
                if let Err(e) = watcher.watch(conn).await {
                    count_timeout(&conns, &e);
                }
            });
        }
    }

    /// Records `kind` in `machine`'s event log (what "why is it pending?" and
    /// the timeline read), at most once per [`MACHINE_EVENT_WINDOW`](crate::event_window::MACHINE_EVENT_WINDOW) per
    /// machine and kind of event: a client fetching in a loop does not push
    /// the machine's other events out of its bounded log.
    fn record_machine_event(&self, machine: String, kind: EventKind) {
        let sort = match &kind {
            EventKind::IpxeScriptServed { .. } => "script",
            EventKind::MetadataServed { .. } => "metadata",
            _ => "other",
        };
        let now = self.clock.now();
        if !self.machine_events.admit(&machine, sort, now) {
            return;
        }
        let event = MachineEvent::new(now, machine, EventSource::Http, kind);
        // In the background: the machine does not wait for the log.
        self.events.record(event);
    }

    fn refuse(&self, stream: tokio::net::TcpStream, peer: SocketAddr, why: Refusal) {
        self.conns.refused(why);
        tracing::debug!(%peer, reason = why.label(), "HTTP connection refused");
        // No lingering: the descriptor is released at once, and the peer sees a
        // reset rather than a connection that waits for data.
        let _ = stream.set_zero_linger();
        drop(stream);
    }

    fn guard<I>(&self, io: I) -> conn::Guarded<I> {
        conn::Guarded::new(
            io,
            self.clock.clone(),
            self.limits.stall_timeout,
            self.conns.clone(),
        )
    }

    /// Serves one connection over any byte stream from `peer` until the client
    /// closes it: what [`HttpServer::serve`] does for each accepted socket (with
    /// the same timeouts, but no connection count), and what a simulation does
    /// over an in-memory pipe (`tokio::io::duplex`).
    pub async fn serve_connection<I>(&self, io: I, peer: SocketAddr) -> hyper::Result<()>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let _open = conn::OpenGuard::new(self.conns.clone());
        conn::builder(&self.limits, &self.clock)
            .serve_connection(TokioIo::new(self.guard(io)), self.service(peer, None))
            .await
            .inspect_err(|e| count_timeout(&self.conns, e))
    }

    /// The routes, as a hyper service for one connection from `peer`; with
    /// `idle`, its requests are counted for the idle-connection cap.
    fn service(
        &self,
        peer: SocketAddr,
        idle: Option<(Arc<conn::IdleConns>, Arc<conn::ConnState>)>,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Response<Body>,
        Error = std::convert::Infallible,
        Future = impl Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send,
    > + Send
    + 'static {
        let this = self.clone();
        hyper::service::service_fn(move |req| {
            let this = this.clone();
            // Counted in flight from the head's arrival to the body's drop.
            let answered = idle.as_ref().map(|(queue, state)| {
                queue.busy(state);
                conn::Answered(queue.clone(), state.clone())
            });
            async move {
                let resp = this.route(req, peer).await;
                Ok::<_, std::convert::Infallible>(match answered {
                    Some(a) => resp.map(|b| body::Tracked::wrap(b, a)),
                    None => resp,
                })
            }
        })
    }

    /// The caller's address: the connection's, or the last `X-Forwarded-For`
    /// entry when the connection comes from a trusted proxy.
    fn caller(&self, req: &Request<Incoming>, peer: SocketAddr) -> IpAddr {
        let ip = peer.ip().to_canonical();
        if !self.config.trusted_proxies.contains(&ip) {
            return ip;
        }
        req.headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(ip)
    }

    async fn route(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let caller = self.caller(&req, peer);
        let req = match &self.config.extra {
            Some(extra) if !self.only_metadata => match extra.handle(req, caller).await {
                Ok(resp) => return resp,
                Err(req) => req,
            },
            _ => req,
        };
        // iPXE percent-encodes the colons of a MAC in a path.
        let path = percent_decode_str(req.uri().path()).decode_utf8_lossy();
        let head = req.method() == Method::HEAD;
        if req.method() != Method::GET && !head {
            return status(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n");
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let resp = match segments.as_slice() {
            ["healthz"] => status(StatusCode::OK, "ok\n"),
            ["metrics"] => self.metrics(),
            _ if !self.config.serves_machines => status(StatusCode::NOT_FOUND, "not found\n"),
            ["metadata"] => {
                metadata::tinkerbell_json(self, caller, metadata_token(&req), &path).await
            }
            [version, rest @ ..] if *version == "2009-04-04" || *version == "latest" => {
                let token = metadata_token(&req);
                let tree = metadata::Tree::ByAddress;
                metadata::ec2(self, caller, token, tree, rest, &path).await
            }
            ["tootles", "instanceID", id, "2009-04-04", rest @ ..]
                if self.tootles_instance_endpoint =>
            {
                let tree = metadata::Tree::ByInstanceId(id);
                metadata::ec2(self, caller, metadata_token(&req), tree, rest, &path).await
            }
            _ if self.only_metadata => status(StatusCode::NOT_FOUND, "not found\n"),
            ["auto.ipxe"] => self.script_by_ip(caller).await,
            // Ours, and Smee's (what Tinkerbell's DHCP setups and embedded
            // iPXE binaries point machines at).
            ["ipxe", mac, "auto.ipxe"] | ["ipxe", "script", mac, "auto.ipxe"] => {
                self.script_by_mac(mac, caller).await
            }
            // Smee hands UEFI HTTP boot clients `/ipxe/binary/<mac>/<file>` and
            // serves the file by its base name: the MAC only says who asks.
            ["ipxe", "binary", mac, name] if is_mac(mac) => self.binary(name).await,
            ["ipxe", "binary", rest @ ..] => self.binary(&rest.join("/")).await,
            ["assets", rest @ ..] => {
                self.asset(
                    &rest.join("/"),
                    req.headers().get("range").and_then(|v| v.to_str().ok()),
                    head,
                )
                .await
            }
            _ => status(StatusCode::NOT_FOUND, "not found\n"),
        };
        if head { strip_body(resp) } else { resp }
    }

    fn metrics(&self) -> Response<Body> {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            return status(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n");
        }
        let mut r = Response::new(full(out));
        r.headers_mut().insert(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
                .parse()
                .expect("static header"),
        );
        r
    }

    async fn binary(&self, name: &str) -> Response<Body> {
        let Some(src) = &self.config.binaries else {
            return status(StatusCode::NOT_FOUND, "no binaries configured\n");
        };
        // Off the async threads, and from the cache the TFTP server shares.
        match src.load(name).await.map(|(bytes, _)| bytes) {
            Ok(bytes) => {
                let mut r = Response::new(full(bytes.to_vec()));
                r.headers_mut().insert(
                    "content-type",
                    "application/octet-stream".parse().expect("static header"),
                );
                r
            }
            Err(SourceError::Outside) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                status(StatusCode::FORBIDDEN, "forbidden\n")
            }
            Err(SourceError::NotFound) => status(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    async fn asset(&self, name: &str, range: Option<&str>, head: bool) -> Response<Body> {
        let Some(src) = &self.config.assets else {
            return status(StatusCode::NOT_FOUND, "no assets configured\n");
        };
        let path = match src.resolve_path(name) {
            Ok(p) => p,
            Err(SourceError::Outside) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    name,
                    "HTTP: asset path outside the served directory refused"
                );
                return status(StatusCode::FORBIDDEN, "forbidden\n");
            }
            Err(SourceError::NotFound) => return status(StatusCode::NOT_FOUND, "not found\n"),
        };
        let Ok(meta) = tokio::fs::metadata(&path).await else {
            return status(StatusCode::NOT_FOUND, "not found\n");
        };
        let size = meta.len();
        let (code, start, len) = match range.map(|r| parse_range(r, size)) {
            None => (StatusCode::OK, 0, size),
            Some(Some((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
            Some(None) => {
                let mut r = status(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
                r.headers_mut().insert(
                    "content-range",
                    format!("bytes */{size}").parse().expect("valid header"),
                );
                return r;
            }
        };
        let body = if head {
            full(Vec::new())
        } else {
            match FileBody::open(&path, start, len, self.stats.clone()).await {
                Ok(b) => b,
                Err(_) => {
                    return status(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the asset\n");
                }
            }
        };
        let mut r = Response::new(body);
        *r.status_mut() = code;
        let h = r.headers_mut();
        h.insert(
            "content-length",
            len.to_string().parse().expect("valid header"),
        );
        h.insert("accept-ranges", "bytes".parse().expect("static header"));
        h.insert(
            "content-type",
            "application/octet-stream".parse().expect("static header"),
        );
        if code == StatusCode::PARTIAL_CONTENT {
            h.insert(
                "content-range",
                format!("bytes {start}-{}/{size}", start + len - 1)
                    .parse()
                    .expect("valid header"),
            );
        }
        r
    }
}

/// Counts a connection that ended on hyper's header timeout (a stall is
/// counted where it happens, in the stream guard).
fn count_timeout(conns: &ConnStats, e: &hyper::Error) {
    if e.is_timeout() {
        conns.header_timeouts.fetch_add(1, Ordering::Relaxed);
    }
}

/// The connection layer's metrics in the server's registry.
#[derive(Debug)]
struct ConnCollector(Arc<ConnStats>);

impl prometheus_client::collector::Collector for ConnCollector {
    fn encode(
        &self,
        encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
}

/// Whether a path segment is a MAC address (with `:` or `-`).
fn is_mac(segment: &str) -> bool {
    segment
        .replace('-', ":")
        .parse::<tinker_core::MacAddr>()
        .is_ok()
}

/// Reads a `Range` header against a size: `Some((first, last))` of its first
/// range, or `None` when it is malformed or unsatisfiable (answered 416).
fn parse_range(header: &str, size: u64) -> Option<(u64, u64)> {
    let ranges = http_range_header::parse_range_header(header.trim())
        .ok()?
        .validate(size)
        .ok()?;
    let first = ranges.first()?;
    Some((*first.start(), *first.end()))
}

/// The `X-Tinker-Metadata-Token` header, if the caller sent one.
fn metadata_token<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get("x-tinker-metadata-token")
        .and_then(|v| v.to_str().ok())
}

fn status(code: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(full(text));
    *r.status_mut() = code;
    r.headers_mut()
        .insert("content-type", "text/plain".parse().expect("static header"));
    r
}

fn strip_body(resp: Response<Body>) -> Response<Body> {
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, full(Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn percent_decoding() {
        let decode = |s| {
            super::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        assert_eq!(
            decode("/ipxe/52%3A54%3a00/auto.ipxe"),
            "/ipxe/52:54:00/auto.ipxe"
        );
        assert_eq!(decode("/a%zz%4"), "/a%zz%4");
        assert_eq!(decode("/assets/%2e%2e/secret"), "/assets/../secret");
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some((0, 99)));
        assert_eq!(parse_range("bytes=900-", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=-100", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=990-2000", 1000), Some((990, 999)));
        assert_eq!(parse_range("bytes=0-0,5-9", 1000), Some((0, 0)));
        assert_eq!(parse_range("bytes=1000-", 1000), None);
        assert_eq!(parse_range("bytes=5-1", 1000), None);
        assert_eq!(parse_range("bytes=0-", 0), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
    }
}
