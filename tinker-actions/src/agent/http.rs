//! [`HttpTransport`]: the worker API as JSON over HTTP/1.1 (hyper), the wire
//! format `tinker-boot`'s worker API serves. The codec ([`encode`], [`decode`],
//! [`decode_answer`]) is public so a transport that calls the worker API's
//! handler in process speaks exactly the same bytes, status codes and
//! `Retry-After` advice.

use super::tls::ServerTrust;
use super::transport::{
    Answer, HeartbeatAnswer, Reply, ReportAnswer, Request, RetryAfter, Transport,
};
use async_trait::async_trait;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use std::time::Duration;
use tinker_core::clock::{SharedClock, SystemClock};
use tinker_core::worker_api::{NextActionResponse, ReportResponse};
use tinker_core::{Error, Result, Secret};

/// How long one request may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a question for work may wait at the control plane for an action
/// by default (`Prefer: wait=20`, RFC 7240: the worker API's long poll, which
/// answers as soon as the machine's workflow has an action for it instead of
/// being asked again every few seconds). A control plane that does not know
/// the preference answers at once, as before.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(20);

/// The path and JSON body of `request` for the worker API
/// (`/v1/workers/{worker_id}/{operation}`).
pub fn encode(request: &Request) -> Result<(String, Vec<u8>)> {
    let path = format!(
        "/v1/workers/{}/{}",
        request.worker_id(),
        request.operation()
    );
    let body = match request {
        Request::NextAction(r) => serde_json::to_vec(r),
        Request::Report(r) => serde_json::to_vec(r),
        Request::Heartbeat(h) => serde_json::to_vec(h),
        Request::Logs(l) => serde_json::to_vec(l),
    }
    .map_err(|e| Error::backend("worker api", e))?;
    Ok((path, body))
}

/// Reads the worker API's answer (`status`, `body`) to `request`, sent to
/// `target`: 401 is [`Error::AuthenticationFailed`]; 429 and 5xx are
/// [`Error::Unreachable`] (retryable: back off, try another replica); 409 to a
/// heartbeat means stop; any other non-success refuses a report, and to a
/// request for work means "nothing now", as does a body that is not an answer
/// (with the reason). It never panics, whatever the bytes (see
/// `tests/fuzz_worker_api.rs`).
pub fn decode(request: &Request, target: &str, status: u16, body: &[u8]) -> Result<Reply> {
    let status = StatusCode::from_u16(status).map_err(|e| Error::backend("worker api", e))?;
    if status == StatusCode::UNAUTHORIZED {
        return Err(Error::AuthenticationFailed {
            target: target.to_string(),
        });
    }
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(Error::Unreachable {
            target: target.to_string(),
            reason: format!("{}: {status}", request.operation()),
        });
    }
    Ok(match request {
        Request::NextAction(_) if !status.is_success() => {
            Reply::NextAction(NextActionResponse::Wait {
                retry_after_seconds: 0,
                reason: status.to_string(),
            })
        }
        // An answer that is not an action or a wait is no work, with the
        // reason; the agent asks again later.
        Request::NextAction(_) => {
            Reply::NextAction(serde_json::from_slice(body).unwrap_or_else(|e| {
                NextActionResponse::Wait {
                    retry_after_seconds: 0,
                    reason: format!("unreadable answer ({status}): {e}"),
                }
            }))
        }
        Request::Report(_) if status.is_success() => Reply::Report(ReportAnswer::Accepted {
            workflow_state: serde_json::from_slice::<ReportResponse>(body)
                .ok()
                .map(|r| r.workflow_state),
        }),
        Request::Report(_) => Reply::Report(ReportAnswer::Refused {
            reason: status.to_string(),
        }),
        Request::Heartbeat(_) if status == StatusCode::CONFLICT => {
            Reply::Heartbeat(HeartbeatAnswer::Stop)
        }
        Request::Heartbeat(_) => Reply::Heartbeat(HeartbeatAnswer::Continue),
        Request::Logs(_) => Reply::Logs,
    })
}

/// Reads the worker API's answer like [`decode`], with the value of its
/// `Retry-After` field, if it has one: a 503 (overloaded) or 429 (too many
/// requests) answer that carries a readable one ([`RetryAfter::parse`]) brings
/// it back as advice; on any other status, or unreadable, it is ignored and the
/// agent keeps its own backoff. It never panics, whatever the bytes.
pub fn decode_answer(
    request: &Request,
    target: &str,
    status: u16,
    retry_after: Option<&[u8]>,
    body: &[u8],
) -> Answer {
    let advice = match StatusCode::from_u16(status) {
        Ok(StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS) => {
            retry_after.and_then(RetryAfter::parse)
        }
        _ => None,
    };
    Answer::from(decode(request, target, status, body)).with_retry_after(advice)
}

/// The worker API over HTTP, with the worker's bearer token.
#[derive(Debug)]
pub struct HttpTransport {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    token: Secret,
    clock: SharedClock,
    timeout: Duration,
    wait: Duration,
    local_address: Option<std::net::IpAddr>,
    trust: Option<ServerTrust>,
}

/// A client for `http://` and `https://` replicas: HTTPS trusts `trust`, or
/// the Web PKI roots when none is given.
fn client(
    local_address: Option<std::net::IpAddr>,
    trust: Option<&ServerTrust>,
) -> Result<Client<HttpsConnector<HttpConnector>, Full<Bytes>>> {
    let tls = match trust {
        Some(trust) => trust.client_config()?,
        None => rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::backend("rustls", e))?
        .with_root_certificates(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
        .with_no_client_auth(),
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_local_address(local_address);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(hyper_util::rt::TokioExecutor::new()).build(https))
}

impl HttpTransport {
    /// A client that presents `token`.
    pub fn new(token: Secret) -> Self {
        HttpTransport {
            client: client(None, None).expect("the default TLS configuration builds"),
            token,
            clock: SystemClock::shared(),
            timeout: DEFAULT_TIMEOUT,
            wait: DEFAULT_WAIT,
            local_address: None,
            trust: None,
        }
    }

    /// Talks HTTPS to `https://` replicas trusting only `trust` (a CA built
    /// into the image, or the certificate's fingerprint from the kernel line).
    pub fn with_tls(mut self, trust: ServerTrust) -> Result<Self> {
        self.client = client(self.local_address, Some(&trust))?;
        self.trust = Some(trust);
        Ok(self)
    }

    /// Measures the request time limit on `clock`.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Sends from `address`: a machine with several addresses (or a simulated
    /// one on loopback) calls from the one its Hardware reserves, which is the
    /// only one the worker API takes its token from.
    pub fn with_local_address(mut self, address: std::net::IpAddr) -> Self {
        self.local_address = Some(address);
        self.client = client(self.local_address, self.trust.as_ref())
            .expect("a configuration that built once builds again");
        self
    }

    /// Gives up on a request after `timeout` (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Lets a question for work wait at the control plane up to `wait` for an
    /// action (default [`DEFAULT_WAIT`]; zero: answered at once). Such a
    /// question's time limit is the request timeout plus `wait`.
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The answer's status, `Retry-After` value and body.
    async fn exchange(
        &self,
        target: &str,
        request: &Request,
    ) -> Result<(u16, Option<hyper::header::HeaderValue>, Bytes)> {
        let (path, body) = encode(request)?;
        let mut req = hyper::Request::builder()
            .method(Method::POST)
            .uri(format!("{target}{path}"))
            .header("authorization", format!("Bearer {}", self.token.expose()))
            .header("content-type", "application/json");
        let mut limit = self.timeout;
        if matches!(request, Request::NextAction(_)) && !self.wait.is_zero() {
            req = req.header("prefer", format!("wait={}", self.wait.as_secs()));
            limit += self.wait;
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Error::backend("worker api", e))?;
        let unreachable = |e: &dyn std::fmt::Display| Error::Unreachable {
            target: target.to_string(),
            reason: e.to_string(),
        };
        let resp = tokio::select! {
            r = self.client.request(req) => r.map_err(|e| unreachable(&e))?,
            _ = self.clock.sleep(limit) => return Err(Error::Timeout {
                target: target.to_string(),
                operation: request.operation().to_string(),
                seconds: limit.as_secs(),
            }),
        };
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get(hyper::header::RETRY_AFTER).cloned();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(&e))?
            .to_bytes();
        Ok((status, retry_after, bytes))
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn send(&self, replica: &str, request: &Request) -> Result<Reply> {
        self.call(replica, request).await.reply
    }

    async fn call(&self, replica: &str, request: &Request) -> Answer {
        match self.exchange(replica, request).await {
            Ok((status, retry_after, body)) => decode_answer(
                request,
                replica,
                status,
                retry_after.as_ref().map(|v| v.as_bytes()),
                &body,
            ),
            Err(e) => Err(e).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinker_core::Retryable;
    use tinker_core::worker_api::Heartbeat;

    fn heartbeat() -> Request {
        Request::Heartbeat(Heartbeat {
            worker_id: "w1".into(),
            workflow_id: "default/wf".into(),
            action_index: 0,
            attempt: 1,
        })
    }

    #[test]
    fn status_codes_become_typed_answers() {
        let hb = heartbeat();
        assert_eq!(encode(&hb).unwrap().0, "/v1/workers/w1/heartbeat");
        assert_eq!(
            decode(&hb, "http://a", 409, b"").unwrap(),
            Reply::Heartbeat(HeartbeatAnswer::Stop)
        );
        assert_eq!(
            decode(&hb, "http://a", 204, b"").unwrap(),
            Reply::Heartbeat(HeartbeatAnswer::Continue)
        );
        assert!(
            decode(&hb, "http://a", 503, b"")
                .unwrap_err()
                .is_retryable()
        );
        assert!(
            decode(&hb, "http://a", 429, b"")
                .unwrap_err()
                .is_retryable()
        );
        let denied = decode(&hb, "http://a", 401, b"").unwrap_err();
        assert!(matches!(denied, Error::AuthenticationFailed { .. }));
        assert!(!denied.is_retryable());
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date_and_anything_else_is_no_advice() {
        let at = |s: &str| Some(RetryAfter::At(s.parse().unwrap()));
        for (value, advice) in [
            (&b"7"[..], Some(RetryAfter::Delay(Duration::from_secs(7)))),
            (b" 0\t", Some(RetryAfter::Delay(Duration::ZERO))),
            (
                b"99999999999999999999999",
                Some(RetryAfter::Delay(Duration::from_secs(u64::MAX))),
            ),
            (b"Sun, 06 Nov 1994 08:49:37 GMT", at("1994-11-06T08:49:37Z")),
            (
                b"Sunday, 06-Nov-94 08:49:37 GMT",
                at("1994-11-06T08:49:37Z"),
            ),
            (b"Sun Nov  6 08:49:37 1994", at("1994-11-06T08:49:37Z")),
            (b"", None),
            (b"   ", None),
            (b"-5", None),
            (b"+5", None),
            (b"1.5", None),
            (b"7 s", None),
            (b"soon", None),
            (b"\xff7", None),
            // The wrong weekday: not a date.
            (b"Mon, 06 Nov 1994 08:49:37 GMT", None),
        ] {
            assert_eq!(
                RetryAfter::parse(value),
                advice,
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
        let now: jiff::Timestamp = "1994-11-06T08:49:30Z".parse().unwrap();
        assert_eq!(
            at("1994-11-06T08:49:37Z").unwrap().delay_from(now),
            Duration::from_secs(7)
        );
        assert_eq!(
            at("1994-11-06T08:49:00Z").unwrap().delay_from(now),
            Duration::ZERO,
            "a date past is no wait"
        );
    }

    #[test]
    fn only_a_503_or_429_brings_its_retry_after_back() {
        let hb = heartbeat();
        let seven = Some(RetryAfter::Delay(Duration::from_secs(7)));
        for (status, value, advice) in [
            (503, Some(&b"7"[..]), seven),
            (429, Some(b"7"), seven),
            (503, None, None),
            (503, Some(b"later"), None),
            (500, Some(b"7"), None),
            (502, Some(b"7"), None),
            (204, Some(b"7"), None),
            (301, Some(b"7"), None),
            (1000, Some(b"7"), None),
        ] {
            let answer = decode_answer(&hb, "http://a", status, value, b"");
            assert_eq!(answer.retry_after, advice, "{status} {value:?}");
            // The reply is what `decode` makes of the same answer.
            assert_eq!(
                format!("{:?}", answer.reply),
                format!("{:?}", decode(&hb, "http://a", status, b"")),
            );
        }
    }

    /// A replica under load, on loopback: answers every request with a 503
    /// and `Retry-After: 7`.
    #[tokio::test(flavor = "current_thread")]
    async fn the_http_transport_brings_back_the_retry_after_of_a_503() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            // Reads up to the end of the (small) body before answering.
            while !request.ends_with(b"}") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                request.extend_from_slice(&buf[..n]);
            }
            conn.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 7\r\n\
                  content-type: application/json\r\ncontent-length: 2\r\n\
                  connection: close\r\n\r\n{}",
            )
            .await
            .unwrap();
        });
        let transport = HttpTransport::new(Secret::new("t".to_string()));
        let answer = transport.call(&target, &heartbeat()).await;
        server.await.unwrap();
        assert!(matches!(answer.reply, Err(Error::Unreachable { .. })));
        assert_eq!(
            answer.retry_after,
            Some(RetryAfter::Delay(Duration::from_secs(7)))
        );
    }

    /// The head of one request to a local server that answers `answer`.
    async fn request_head(request: Request, transport: HttpTransport) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.ends_with(b"}") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                got.extend_from_slice(&buf[..n]);
            }
            conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                  content-length: 2\r\nconnection: close\r\n\r\n{}",
            )
            .await
            .unwrap();
            String::from_utf8_lossy(&got).to_ascii_lowercase()
        });
        let _ = transport.call(&target, &request).await;
        server.await.unwrap()
    }

    #[tokio::test]
    async fn a_question_for_work_asks_to_wait_for_it_and_nothing_else_does() {
        let ask = || {
            Request::NextAction(tinker_core::worker_api::NextActionRequest {
                worker_id: "w1".into(),
                request_id: None,
            })
        };
        let token = || Secret::new("t".to_string());
        let head = request_head(ask(), HttpTransport::new(token())).await;
        assert!(head.contains("\r\nprefer: wait=20\r\n"), "{head}");
        let head = request_head(
            ask(),
            HttpTransport::new(token()).with_wait(Duration::from_secs(5)),
        )
        .await;
        assert!(head.contains("\r\nprefer: wait=5\r\n"), "{head}");
        let head = request_head(ask(), HttpTransport::new(token()).with_wait(Duration::ZERO)).await;
        assert!(!head.contains("prefer:"), "{head}");
        let head = request_head(heartbeat(), HttpTransport::new(token())).await;
        assert!(!head.contains("prefer:"), "{head}");
    }

    #[test]
    fn a_refused_report_says_why_and_an_odd_answer_means_wait() {
        let report = Request::Report(tinker_core::worker_api::ActionReport {
            worker_id: "w1".into(),
            workflow_id: "default/wf".into(),
            action_index: 0,
            attempt: 1,
            outcome: tinker_core::runtime::ActionOutcome::Success,
            started_at: None,
            finished_at: None,
        });
        assert_eq!(
            decode(&report, "http://a", 409, b"{}").unwrap(),
            Reply::Report(ReportAnswer::Refused {
                reason: "409 Conflict".into()
            })
        );
        assert_eq!(
            decode(
                &report,
                "http://a",
                200,
                br#"{"workflow_state":"STATE_SUCCESS"}"#
            )
            .unwrap(),
            Reply::Report(ReportAnswer::Accepted {
                workflow_state: Some(tinker_core::state::WorkflowState::Success)
            })
        );
        let ask = Request::NextAction(tinker_core::worker_api::NextActionRequest {
            worker_id: "w1".into(),
            request_id: None,
        });
        assert!(matches!(
            decode(&ask, "http://a", 404, b"not json").unwrap(),
            Reply::NextAction(NextActionResponse::Wait { .. })
        ));
    }
}
