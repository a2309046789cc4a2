//! The one small HTTP/1.1 client (hyper) that simulated machines, benchmarks and
//! tests speak through: a connection kept alive between requests, opened from a
//! chosen source address (the metadata service knows a machine by its address)
//! or over any byte stream (an in-memory pipe in a simulation).
//!
//! It is not a general-purpose client: no redirects, no pooling; TLS only with
//! the trust its caller configures ([`HttpConnection::connect_tls`], which the
//! `tinker` command line uses). The worker agent has its own transport
//! (`tinker_actions::agent::HttpTransport`).

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
pub use hyper::{HeaderMap, Method};
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncRead, AsyncWrite};

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The connection could not be opened.
    #[error("connecting to {server}: {source}")]
    Connect {
        /// The server.
        server: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The request could not be built (a path that is not a URI, a header that is
    /// not a header).
    #[error("bad request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The exchange failed (the connection closed, a malformed answer).
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The TLS handshake failed: the server's certificate is not the one
    /// trusted, or the name is not one a certificate can hold.
    #[error("TLS with {server}: {source}")]
    Tls {
        /// The server.
        server: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// An answer: its status, headers and whole body.
#[derive(Debug, Clone)]
pub struct ClientResponse {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl ClientResponse {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value as text, if present and readable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One HTTP/1.1 connection, kept alive between requests.
#[derive(Debug)]
pub struct HttpConnection {
    sender: SendRequest<Full<Bytes>>,
}

impl HttpConnection {
    /// Connects to `server`, from `from` (any port) when given.
    pub async fn connect(server: SocketAddr, from: Option<IpAddr>) -> Result<Self, ClientError> {
        let connect = async {
            let socket = match server {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            if let Some(ip) = from {
                socket.bind(SocketAddr::new(ip, 0))?;
            }
            let stream = socket.connect(server).await?;
            let _ = stream.set_nodelay(true);
            Ok::<_, std::io::Error>(stream)
        };
        let stream = connect
            .await
            .map_err(|source| ClientError::Connect { server, source })?;
        Self::over(stream).await
    }

    /// Connects to `server` over TLS, checking its certificate for `name` (a
    /// host name or an address) with `config`'s trust.
    pub async fn connect_tls(
        server: SocketAddr,
        name: &str,
        config: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<Self, ClientError> {
        let tls = |source| ClientError::Tls { server, source };
        let name = rustls::pki_types::ServerName::try_from(name.to_string())
            .map_err(|e| tls(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
        let stream = tokio::net::TcpStream::connect(server)
            .await
            .map_err(|source| ClientError::Connect { server, source })?;
        let _ = stream.set_nodelay(true);
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(tls)?;
        Self::over(stream).await
    }

    /// Speaks HTTP over `io`, such as one end of `tokio::io::duplex` whose other
    /// end an `HttpServer::serve_connection` serves.
    pub async fn over<I>(io: I) -> Result<Self, ClientError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(async move {
            // Ends when the connection closes; its error, if any, reaches the
            // request in flight.
            let _ = conn.await;
        });
        Ok(HttpConnection { sender })
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<ClientResponse, ClientError> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "tinker");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(body.into()))?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(ClientResponse {
            status,
            headers,
            body,
        })
    }

    /// Whether the connection has closed (the server closed it, or it
    /// failed): the next request would fail without being sent.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> Result<ClientResponse, ClientError> {
        self.send(Method::GET, path, &[], Bytes::new()).await
    }
}

/// One request on a connection of its own (opened from `from` when given).
pub async fn request(
    server: SocketAddr,
    from: Option<IpAddr>,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<ClientResponse, ClientError> {
    HttpConnection::connect(server, from)
        .await?
        .send(method, path, headers, body)
        .await
}
