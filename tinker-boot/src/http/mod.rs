//! The HTTP side of booting, on hyper: per-machine iPXE scripts, iPXE binaries for
//! UEFI HTTP boot, boot assets (kernel, initrd, disk images) with Range requests,
//! the metadata service as Hegel serves it (EC2 paths and Tinkerbell's
//! `/metadata`), and Prometheus `/metrics`.
//!
//! | path | what |
//! |---|---|
//! | `/ipxe/{mac}/auto.ipxe`, `/auto.ipxe` | the machine's iPXE script (by MAC, or by source address) |
//! | `/ipxe/binary/{name}` | iPXE binaries (UEFI HTTP boot) |
//! | `/assets/{path}` | boot assets from a directory; `GET`/`HEAD`, single `Range` |
//! | `/2009-04-04/meta-data/...`, `/2009-04-04/user-data`, `/latest/...` | EC2 metadata of the caller |
//! | `/metadata` | Tinkerbell's metadata JSON of the caller |
//! | `/metrics`, `/healthz` | Prometheus counters, liveness |
//!
//! A machine is known by the source address of its connection, never by what it
//! says; `X-Forwarded-For` is read only from the proxies listed as trusted.

mod body;
mod ipxe;
mod metadata;
mod operator;

pub use body::Body;
pub(crate) use body::full as body_full;
pub use ipxe::{OsieConfig, script};
pub use operator::{OperatorApi, RouteChain};

use crate::tftp::{FileSource, SourceError};
use body::{FileBody, full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Asset bytes sent.
    pub asset_bytes: AtomicU64,
    /// Paths refused (outside the served directory).
    pub refused: AtomicU64,
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
}

/// Something with Prometheus counters to show on `/metrics`.
pub trait MetricsSource: Send + Sync + std::fmt::Debug + 'static {
    /// Appends its counters in the text exposition format.
    fn render(&self, out: &mut String);
}

impl MetricsSource for crate::dhcp::DhcpStats {
    fn render(&self, out: &mut String) {
        crate::dhcp::DhcpStats::render(self, out)
    }
}

impl MetricsSource for crate::tftp::TftpStats {
    fn render(&self, out: &mut String) {
        crate::tftp::TftpStats::render(self, out)
    }
}

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
        }
    }
}

/// The HTTP server.
#[derive(Debug, Clone)]
pub struct HttpServer {
    config: Arc<HttpConfig>,
    stats: Arc<HttpStats>,
}

impl HttpServer {
    /// A server with this configuration.
    pub fn new(config: HttpConfig) -> Self {
        HttpServer {
            config: Arc::new(config),
            stats: Arc::default(),
        }
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<HttpStats> {
        self.stats.clone()
    }

    /// Serves connections from `listener` until `shutdown` resolves; then lets
    /// the requests in flight finish (at most 10 s) and closes every connection,
    /// keep-alive ones included.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        tokio::pin!(shutdown);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => {
                    drop(listener);
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), graceful.shutdown()).await;
                    return Ok(());
                }
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!(error = %e, "HTTP accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            let svc = hyper::service::service_fn(move |req| {
                let this = this.clone();
                async move { Ok::<_, std::convert::Infallible>(this.route(req, peer).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
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
            Some(extra) => match extra.handle(req, caller).await {
                Ok(resp) => return resp,
                Err(req) => req,
            },
            None => req,
        };
        // iPXE percent-encodes the colons of a MAC in a path.
        let path = percent_decode(req.uri().path());
        let head = req.method() == Method::HEAD;
        if req.method() != Method::GET && !head {
            return status(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n");
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let resp = match segments.as_slice() {
            ["healthz"] => status(StatusCode::OK, "ok\n"),
            ["metrics"] => self.metrics(),
            ["auto.ipxe"] => self.script_by_ip(caller).await,
            ["ipxe", mac, "auto.ipxe"] => self.script_by_mac(mac).await,
            ["ipxe", "binary", rest @ ..] => self.binary(&rest.join("/")),
            ["assets", rest @ ..] => {
                self.asset(
                    &rest.join("/"),
                    req.headers().get("range").and_then(|v| v.to_str().ok()),
                    head,
                )
                .await
            }
            ["metadata"] => metadata::tinkerbell_json(self, caller).await,
            [version, rest @ ..] if *version == "2009-04-04" || *version == "latest" => {
                metadata::ec2(self, caller, rest).await
            }
            _ => status(StatusCode::NOT_FOUND, "not found\n"),
        };
        if head { strip_body(resp) } else { resp }
    }

    fn metrics(&self) -> Response<Body> {
        let mut out = String::new();
        for (name, v, help) in [
            (
                "tinker_http_requests_total",
                &self.stats.requests,
                "HTTP requests",
            ),
            (
                "tinker_http_ipxe_scripts_total",
                &self.stats.scripts,
                "iPXE scripts served",
            ),
            (
                "tinker_http_metadata_total",
                &self.stats.metadata,
                "metadata answers",
            ),
            (
                "tinker_http_metadata_unknown_total",
                &self.stats.metadata_unknown,
                "metadata requests from unknown addresses",
            ),
            (
                "tinker_http_asset_bytes_total",
                &self.stats.asset_bytes,
                "boot asset bytes sent",
            ),
            (
                "tinker_http_refused_total",
                &self.stats.refused,
                "paths refused",
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        for source in &self.config.metrics {
            source.render(&mut out);
        }
        let mut r = Response::new(full(out));
        r.headers_mut().insert(
            "content-type",
            "text/plain; version=0.0.4".parse().expect("static header"),
        );
        r
    }

    fn binary(&self, name: &str) -> Response<Body> {
        let Some(src) = &self.config.binaries else {
            return status(StatusCode::NOT_FOUND, "no binaries configured\n");
        };
        match src.get(name) {
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

/// Decodes `%XX` escapes; an invalid escape is kept as it is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a single `bytes=` range against a size: `Some((first, last))`, or `None`
/// when unsatisfiable. Multiple ranges are answered with the first.
fn parse_range(header: &str, size: u64) -> Option<(u64, u64)> {
    let spec = header
        .trim()
        .strip_prefix("bytes=")?
        .split(',')
        .next()?
        .trim();
    let (a, b) = spec.split_once('-')?;
    let (first, last) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return None;
        }
        (size.saturating_sub(n), size.checked_sub(1)?)
    } else {
        let first: u64 = a.parse().ok()?;
        let last = if b.is_empty() {
            size.checked_sub(1)?
        } else {
            b.parse::<u64>().ok()?.min(size.checked_sub(1)?)
        };
        (first, last)
    };
    (first <= last && first < size).then_some((first, last))
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
        assert_eq!(
            super::percent_decode("/ipxe/52%3A54%3a00/auto.ipxe"),
            "/ipxe/52:54:00/auto.ipxe"
        );
        assert_eq!(super::percent_decode("/a%zz%4"), "/a%zz%4");
        assert_eq!(
            super::percent_decode("/assets/%2e%2e/secret"),
            "/assets/../secret"
        );
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
