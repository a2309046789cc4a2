//! The HTTP side of Redfish: one request with its authentication (HTTP basic on
//! every request, or a Redfish session: one login, then the `X-Auth-Token`,
//! renewed once on a 401), time limits read on the caller's clock, and what each
//! failure status means.
//!
//! The BMC is not trusted to say where we connect: every path, ours or a link
//! the BMC sent (`@odata.id`, an action's `target`), is resolved against the
//! base URL and refused unless it stays on the base's scheme, host and port, so
//! a link such as `https://elsewhere/...` or `//elsewhere/...` cannot make us
//! send the credentials to another host. And an answer's body is read with a
//! cap ([`MAX_BODY`]), so a BMC cannot make us hold more than that.

use super::tls::{TlsVerification, tls_config};
use super::wire::{ErrorResponse, SessionLogin, Task};
use crate::time::{whole_seconds, within};
use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tinker_core::clock::{SharedClock, SystemClock};
use tinker_core::{Error, Result, Secret};

/// How to authenticate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedfishAuth {
    /// HTTP basic authentication on every request.
    #[default]
    Basic,
    /// A Redfish session: one login, then the `X-Auth-Token`.
    Session,
}

const SESSIONS: &str = "/redfish/v1/SessionService/Sessions";

/// The largest answer body read from a BMC. A ComputerSystem is a few KiB; the
/// largest resources Tinker reads (a collection of a few hundred members) stay
/// far below this.
pub(super) const MAX_BODY: usize = 4 << 20;

/// The longest piece of a BMC's link quoted in an error message.
const QUOTED_LINK: usize = 120;

type HttpsClient = HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A BMC's answer. No `Debug`: its headers may hold a session token.
pub(super) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The `ETag` header, for a later `If-Match`.
    pub fn etag(&self) -> Option<String> {
        self.headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// An HTTP client for one BMC, with its credentials.
#[derive(Clone)]
pub(super) struct Client {
    base: String,
    /// `base`, parsed: what every link is resolved against and checked with.
    base_url: url::Url,
    user: String,
    password: Secret,
    auth: RedfishAuth,
    token: Arc<Mutex<Option<Secret>>>,
    pub timeout: Duration,
    pub clock: SharedClock,
    http: HttpsClient,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("target", &self.base)
            .field("user", &self.user)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the BMC at `base` (`https://10.0.0.5`, `http://127.0.0.1:8000`).
    pub fn new(
        base: String,
        user: String,
        password: Secret,
        auth: RedfishAuth,
        verification: &TlsVerification,
    ) -> Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        let base_url = match url::Url::parse(&base) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
            _ => {
                return Err(Error::Unsupported {
                    target: base,
                    operation: "a Redfish URL that is not http(s)://host[:port]".into(),
                });
            }
        };
        if matches!(verification, TlsVerification::Insecure) {
            tracing::warn!(bmc = %base, "TLS certificate verification is off for this BMC");
        }
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(verification)?)
            .https_or_http()
            .enable_http1()
            .build();
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_max_idle_per_host(2)
            .build(https);
        Ok(Client {
            base,
            base_url,
            user,
            password,
            auth,
            token: Arc::default(),
            timeout: Duration::from_secs(10),
            clock: SystemClock::shared(),
            http,
        })
    }

    /// What this talks to, for messages: `redfishs://10.0.0.5:443`.
    pub fn target(&self) -> String {
        self.base
            .replacen("https://", "redfishs://", 1)
            .replacen("http://", "redfish://", 1)
    }

    fn token(&self) -> std::sync::MutexGuard<'_, Option<Secret>> {
        self.token.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn auth_header(&self) -> Option<(&'static str, String)> {
        match self.auth {
            RedfishAuth::Basic => Some(("authorization", basic(&self.user, &self.password))),
            RedfishAuth::Session => self
                .token()
                .as_ref()
                .map(|t| ("x-auth-token", t.expose().to_string())),
        }
    }

    /// The URL of `link` (one of our paths, or a link the BMC sent: a path or a
    /// whole URL), resolved against the base URL; refused unless it stays on the
    /// base's scheme, host and port and carries no user name.
    pub fn resolve(&self, link: &str) -> Result<url::Url> {
        let base = &self.base_url;
        let refuse = |why: &str| {
            let mut quoted: String = link.chars().take(QUOTED_LINK).collect();
            if quoted.len() < link.len() {
                quoted.push_str("...");
            }
            Error::Insecure {
                target: self.target(),
                reason: format!(
                    "the BMC's link {quoted:?} {why}; only links on the BMC's own address are followed"
                ),
            }
        };
        let url = base.join(link).map_err(|_| refuse("is not a URL"))?;
        if url.scheme() != base.scheme()
            || url.host() != base.host()
            || url.port_or_known_default() != base.port_or_known_default()
        {
            return Err(refuse("leads to another host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse("carries a user name"));
        }
        Ok(url)
    }

    /// A link the BMC sent, checked by [`Client::resolve`], as the path (and
    /// query) to request.
    pub fn link(&self, link: &str) -> Result<String> {
        let url = self.resolve(link)?;
        Ok(url[url::Position::BeforePath..].to_string())
    }

    /// One request, within the time limit; no status check.
    async fn send(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Bytes>,
        etag: Option<&str>,
        auth: bool,
    ) -> Result<Answer> {
        let url = self.resolve(path)?;
        let mut req = Request::builder()
            .method(method.clone())
            .uri(url.as_str())
            .header("accept", "application/json");
        if auth && let Some((name, value)) = self.auth_header() {
            req = req.header(name, value);
        }
        if let Some(tag) = etag {
            req = req.header("if-match", tag);
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(body.cloned().unwrap_or_default()))
            .map_err(|e| Error::backend("redfish", e))?;
        let target = self.target();
        let timed_out = |what: &str| Error::Timeout {
            target: target.clone(),
            operation: format!("{method} {path}{what}"),
            seconds: whole_seconds(self.timeout),
        };
        let unreachable = |e: &dyn std::error::Error| Error::Unreachable {
            target: target.clone(),
            reason: error_chain(e),
        };
        let response = within(&*self.clock, self.timeout, self.http.request(req))
            .await
            .map_err(|_| timed_out(""))?
            .map_err(|e| unreachable(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = http_body_util::Limited::new(response.into_body(), MAX_BODY);
        let body = within(&*self.clock, self.timeout, body.collect())
            .await
            .map_err(|_| timed_out(" (body)"))?
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    Error::Remote {
                        target: target.clone(),
                        reason: format!(
                            "{method} {path}: the answer is larger than {} MiB, the most Tinker reads",
                            MAX_BODY >> 20
                        ),
                    }
                } else {
                    unreachable(&*e)
                }
            })?
            .to_bytes();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// A request with authentication (logging in first with a session, and once
    /// more on a 401); a failure status becomes the error that says what it means.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        etag: Option<&str>,
    ) -> Result<Answer> {
        let body = body
            .map(|b| serde_json::to_vec(b).map(Bytes::from))
            .transpose()
            .map_err(|e| Error::backend("redfish", e))?;
        let session = self.auth == RedfishAuth::Session;
        if session && self.token().is_none() {
            self.login().await?;
        }
        let mut answer = self.send(&method, path, body.as_ref(), etag, true).await?;
        if answer.status == StatusCode::UNAUTHORIZED && session {
            self.login().await?;
            answer = self.send(&method, path, body.as_ref(), etag, true).await?;
        }
        match answer_error(&self.target(), &method, path, &answer) {
            Some(e) => Err(e),
            None => Ok(answer),
        }
    }

    /// GETs a resource and reads it as `T`; also returns its ETag.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<(T, Option<String>)> {
        let answer = self.call(Method::GET, path, None::<&()>, None).await?;
        let value = serde_json::from_slice(&answer.body).map_err(|e| Error::Remote {
            target: self.target(),
            reason: format!("GET {path}: unexpected answer: {e}"),
        })?;
        Ok((value, answer.etag()))
    }

    async fn login(&self) -> Result<()> {
        let login = SessionLogin {
            user_name: &self.user,
            password: self.password.expose(),
        };
        let body = serde_json::to_vec(&login)
            .map(Bytes::from)
            .map_err(|e| Error::backend("redfish", e))?;
        let answer = self
            .send(&Method::POST, SESSIONS, Some(&body), None, false)
            .await?;
        if let Some(e) = answer_error(&self.target(), &Method::POST, SESSIONS, &answer) {
            return Err(e);
        }
        let token = answer
            .headers
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Remote {
                target: self.target(),
                reason: "session created without an X-Auth-Token".into(),
            })?;
        *self.token() = Some(Secret::new(token));
        tracing::debug!(bmc = %self.target(), "Redfish session opened");
        Ok(())
    }
}

/// The `Authorization` value of HTTP basic authentication.
fn basic(user: &str, password: &Secret) -> String {
    // Held in a Secret so the joined credentials are wiped when dropped.
    let raw = Secret::new(format!("{user}:{}", password.expose()));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw.expose())
    )
}

/// What a failed answer means, or `None` for success. A `202 Accepted` whose
/// Task has already failed is a failure too.
pub(super) fn answer_error(
    target: &str,
    method: &Method,
    path: &str,
    answer: &Answer,
) -> Option<Error> {
    let target = target.to_string();
    let status = answer.status;
    if status == StatusCode::ACCEPTED {
        let task = serde_json::from_slice::<Task>(&answer.body).ok()?;
        if !task.failed() {
            return None;
        }
        let said: Vec<&str> = task
            .messages
            .iter()
            .filter_map(|m| m.message.as_deref())
            .collect();
        return Some(Error::Remote {
            target,
            reason: format!("{method} {path}: the task failed: {}", said.join("; ")),
        });
    }
    if status.is_success() {
        return None;
    }
    let message = serde_json::from_slice::<ErrorResponse>(&answer.body)
        .ok()
        .and_then(|e| e.message().map(str::to_string))
        .unwrap_or_else(|| status.to_string());
    Some(match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::AuthenticationFailed { target },
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => {
            Error::Unsupported {
                target,
                operation: format!("{method} {path} ({message})"),
            }
        }
        StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT
        | StatusCode::TOO_MANY_REQUESTS => Error::Unreachable {
            target,
            reason: format!("{method} {path}: {message}"),
        },
        _ => Error::Remote {
            target,
            reason: format!("{method} {path}: {status}: {message}"),
        },
    })
}

/// An error and its sources, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn basic_authentication_is_rfc7617() {
        assert_eq!(
            basic("admin", &Secret::new("secret")),
            "Basic YWRtaW46c2VjcmV0"
        );
    }

    #[test]
    fn failure_statuses_say_what_happened() {
        let t = "redfish://bmc:80";
        let err = |status, body| answer_error(t, &Method::PATCH, "/s", &answer(status, body));
        assert!(err(204, "").is_none());
        assert!(err(202, "").is_none(), "accepted, no task body");
        assert!(err(202, r#"{"TaskState": "Running"}"#).is_none());
        let e = err(
            202,
            r#"{"TaskState": "Exception", "Messages": [{"Message": "busy"}]}"#,
        );
        assert!(
            matches!(&e, Some(Error::Remote { reason, .. }) if reason.contains("busy")),
            "{e:?}"
        );
        assert!(matches!(
            err(401, ""),
            Some(Error::AuthenticationFailed { .. })
        ));
        let e = err(
            400,
            r#"{"error": {"@Message.ExtendedInfo": [{"Message": "Foo is not allowed"}]}}"#,
        );
        assert!(
            matches!(&e, Some(Error::Remote { reason, .. }) if reason.contains("Foo is not allowed")),
            "{e:?}"
        );
        assert!(matches!(err(405, ""), Some(Error::Unsupported { .. })));
        assert!(matches!(err(503, ""), Some(Error::Unreachable { .. })));
    }
}
