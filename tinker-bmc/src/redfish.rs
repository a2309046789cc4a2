//! `RedfishPower`: Redfish over HTTP(S) with a hyper client and rustls.
//!
//! Finds the ComputerSystem under `/redfish/v1/Systems` (or uses the one named),
//! resets it with a `ResetType` the system advertises, and sets the boot source
//! override with a PATCH (with `If-Match` when the BMC gives an ETag). TLS
//! certificates are verified against the Web PKI roots plus any CA given for the
//! BMC; skipping verification is an explicit per-BMC choice
//! ([`TlsVerification::Insecure`]). Authentication is HTTP basic, or a Redfish
//! session (a token from `SessionService`, renewed once on a 401).

use async_trait::async_trait;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tinker_core::Secret;
use tinker_core::{
    BootDevice, BootOptions, Error, PowerAction, PowerController, PowerState, Result,
};

/// How the BMC's certificate is checked.
#[derive(Debug, Clone, Default)]
pub enum TlsVerification {
    /// Against the Web PKI roots (default).
    #[default]
    WebPki,
    /// Against these CA certificates (PEM) as well, for BMCs with a private CA.
    CustomCa(Vec<u8>),
    /// Not at all: accepts any certificate. Only for BMCs with self-signed
    /// certificates on a network you trust; chosen per BMC, logged when used.
    Insecure,
}

/// How to authenticate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RedfishAuth {
    /// HTTP basic authentication on every request.
    #[default]
    Basic,
    /// A Redfish session: one login, then the `X-Auth-Token`.
    Session,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Power control of one system through a Redfish BMC.
#[derive(Clone)]
pub struct RedfishPower {
    base: String,
    user: String,
    password: Secret,
    auth: RedfishAuth,
    system: Arc<Mutex<Option<String>>>,
    token: Arc<Mutex<Option<Secret>>>,
    timeout: Duration,
    client: HttpsClient,
}

impl std::fmt::Debug for RedfishPower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedfishPower")
            .field("target", &self.base)
            .field("user", &self.user)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// A TLS verifier that accepts any certificate but still checks that the server
/// holds the key it presents (handshake signatures).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config(verification: &TlsVerification) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::backend("rustls", e))?;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots_list(),
    };
    let config = match verification {
        TlsVerification::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth(),
        TlsVerification::CustomCa(pem) => {
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| {
                    Error::backend("rustls", format!("bad CA certificate PEM: {e}"))
                })?;
                roots.add(cert).map_err(|e| Error::backend("rustls", e))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsVerification::WebPki => builder.with_root_certificates(roots).with_no_client_auth(),
    };
    Ok(config)
}

fn webpki_roots_list() -> Vec<rustls::pki_types::TrustAnchor<'static>> {
    webpki_roots::TLS_SERVER_ROOTS.to_vec()
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl RedfishPower {
    /// A controller for the BMC at `base` (`https://10.0.0.5` or
    /// `http://127.0.0.1:8000`).
    pub fn new(
        base: impl Into<String>,
        user: impl Into<String>,
        password: Secret,
        auth: RedfishAuth,
        verification: TlsVerification,
    ) -> Result<Self> {
        let base: String = base.into();
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(Error::Unsupported {
                target: base,
                operation: "a Redfish URL that is not http(s)".into(),
            });
        }
        if matches!(verification, TlsVerification::Insecure) {
            tracing::warn!(bmc = %base, "TLS certificate verification is off for this BMC");
        }
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(&verification)?)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(2)
            .build(https);
        Ok(RedfishPower {
            base,
            user: user.into(),
            password,
            auth,
            system: Arc::default(),
            token: Arc::default(),
            timeout: Duration::from_secs(10),
            client,
        })
    }

    /// Uses this system (`/redfish/v1/Systems/<id>`) instead of the first listed.
    pub fn with_system(self, id: &str) -> Self {
        *self.system.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(format!("/redfish/v1/Systems/{id}"));
        self
    }

    /// Time limit of each HTTP request (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn auth_header(&self) -> Option<(&'static str, String)> {
        match self.auth {
            RedfishAuth::Basic => {
                let raw = format!("{}:{}", self.user, self.password.expose());
                Some(("authorization", format!("Basic {}", base64(raw.as_bytes()))))
            }
            RedfishAuth::Session => self
                .token
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|t| ("x-auth-token", t.expose().to_string())),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        etag: Option<&str>,
        auth: bool,
    ) -> Result<(StatusCode, hyper::HeaderMap, Value)> {
        let url = format!("{}{}", self.base, path);
        let mut req = Request::builder()
            .method(method.clone())
            .uri(&url)
            .header("accept", "application/json");
        if auth && let Some((name, value)) = self.auth_header() {
            req = req.header(name, value);
        }
        if let Some(tag) = etag {
            req = req.header("if-match", tag);
        }
        let bytes = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(v).map_err(|e| Error::backend("redfish", e))?)
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| Error::backend("redfish", e))?;
        let target = self.target();
        let response = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| Error::Timeout {
                target: target.clone(),
                operation: format!("{method} {path}"),
                seconds: self.timeout.as_secs().max(1),
            })?
            .map_err(|e| Error::Unreachable {
                target: target.clone(),
                reason: error_chain(&e),
            })?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = tokio::time::timeout(self.timeout, response.into_body().collect())
            .await
            .map_err(|_| Error::Timeout {
                target: target.clone(),
                operation: format!("{method} {path} (body)"),
                seconds: self.timeout.as_secs().max(1),
            })?
            .map_err(|e| Error::Unreachable {
                target: target.clone(),
                reason: error_chain(&e),
            })?
            .to_bytes();
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        };
        Ok((status, headers, json))
    }

    /// Sends a request with authentication; on a 401 with a session, logs in
    /// again once. Maps HTTP failures to errors.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        etag: Option<&str>,
    ) -> Result<(hyper::HeaderMap, Value)> {
        if self.auth == RedfishAuth::Session
            && self
                .token
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none()
        {
            self.login().await?;
        }
        let (mut status, mut headers, mut json) =
            self.send(method.clone(), path, body, etag, true).await?;
        if status == StatusCode::UNAUTHORIZED && self.auth == RedfishAuth::Session {
            self.login().await?;
            (status, headers, json) = self.send(method.clone(), path, body, etag, true).await?;
        }
        self.check(status, &method, path, &json)?;
        Ok((headers, json))
    }

    fn check(&self, status: StatusCode, method: &Method, path: &str, json: &Value) -> Result<()> {
        if status.is_success() {
            return Ok(());
        }
        let target = self.target();
        let message = redfish_message(json).unwrap_or_else(|| status.to_string());
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Error::AuthenticationFailed { target }
            }
            StatusCode::NOT_FOUND
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::NOT_IMPLEMENTED => Error::Unsupported {
                target,
                operation: format!("{method} {path} ({message})"),
            },
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

    async fn login(&self) -> Result<()> {
        let body = json!({"UserName": self.user, "Password": self.password.expose()});
        let (status, headers, json) = self
            .send(
                Method::POST,
                "/redfish/v1/SessionService/Sessions",
                Some(&body),
                None,
                false,
            )
            .await?;
        self.check(
            status,
            &Method::POST,
            "/redfish/v1/SessionService/Sessions",
            &json,
        )?;
        let token = headers
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Remote {
                target: self.target(),
                reason: "session created without an X-Auth-Token".into(),
            })?;
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(Secret::new(token));
        tracing::debug!(bmc = %self.target(), "Redfish session opened");
        Ok(())
    }

    async fn system_path(&self) -> Result<String> {
        if let Some(p) = self
            .system
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(p);
        }
        let (_, systems) = self
            .call(Method::GET, "/redfish/v1/Systems", None, None)
            .await?;
        let path = systems["Members"][0]["@odata.id"]
            .as_str()
            .ok_or_else(|| Error::Unsupported {
                target: self.target(),
                operation: "finding a ComputerSystem (the Systems collection is empty)".into(),
            })?
            .to_string();
        *self.system.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.clone());
        Ok(path)
    }

    async fn system(&self) -> Result<(String, Option<String>, Value)> {
        let path = self.system_path().await?;
        let (headers, json) = self.call(Method::GET, &path, None, None).await?;
        let etag = headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((path, etag, json))
    }
}

fn redfish_message(json: &Value) -> Option<String> {
    let e = json.get("error")?;
    e["@Message.ExtendedInfo"][0]["Message"]
        .as_str()
        .or_else(|| e["message"].as_str())
        .map(str::to_string)
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

/// The reset types to try for an action, in order of preference.
fn reset_types(action: PowerAction) -> &'static [&'static str] {
    match action {
        PowerAction::On => &["On", "ForceOn"],
        PowerAction::Off => &["ForceOff", "GracefulShutdown"],
        PowerAction::SoftOff => &["GracefulShutdown"],
        PowerAction::Cycle => &["PowerCycle", "ForceRestart"],
        PowerAction::Reset => &["ForceRestart", "GracefulRestart"],
    }
}

fn boot_target(d: BootDevice) -> &'static str {
    match d {
        BootDevice::Pxe => "Pxe",
        BootDevice::Disk => "Hdd",
        BootDevice::BiosSetup => "BiosSetup",
    }
}

#[async_trait]
impl PowerController for RedfishPower {
    fn target(&self) -> String {
        self.base
            .replacen("https://", "redfishs://", 1)
            .replacen("http://", "redfish://", 1)
    }

    async fn power_state(&self) -> Result<PowerState> {
        let (_, _, sys) = self.system().await?;
        match sys["PowerState"].as_str() {
            Some("On" | "PoweringOn" | "Paused") => Ok(PowerState::On),
            Some("Off" | "PoweringOff") => Ok(PowerState::Off),
            other => Err(Error::Remote {
                target: self.target(),
                reason: format!("unknown PowerState {other:?}"),
            }),
        }
    }

    async fn power(&self, action: PowerAction) -> Result<()> {
        let (path, _, sys) = self.system().await?;
        let reset = &sys["Actions"]["#ComputerSystem.Reset"];
        let action_path = reset["target"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{path}/Actions/ComputerSystem.Reset"));
        let allowed: Option<Vec<&str>> = reset["ResetType@Redfish.AllowableValues"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect());
        let wanted = reset_types(action);
        let chosen = match &allowed {
            Some(list) => wanted
                .iter()
                .find(|t| list.contains(t))
                .copied()
                .ok_or_else(|| Error::Unsupported {
                    target: self.target(),
                    operation: format!("power {action:?} (the system allows {list:?})"),
                })?,
            None => wanted[0],
        };
        self.call(
            Method::POST,
            &action_path,
            Some(&json!({"ResetType": chosen})),
            None,
        )
        .await?;
        Ok(())
    }

    async fn set_boot_device(&self, device: BootDevice, options: BootOptions) -> Result<()> {
        let (path, etag, sys) = self.system().await?;
        let mut boot = json!({
            "BootSourceOverrideTarget": boot_target(device),
            "BootSourceOverrideEnabled": if options.persistent { "Continuous" } else { "Once" },
        });
        // Only name the mode where the system has one; some BMCs refuse the key.
        if sys["Boot"].get("BootSourceOverrideMode").is_some() {
            boot["BootSourceOverrideMode"] = json!(if options.efi { "UEFI" } else { "Legacy" });
        }
        self.call(
            Method::PATCH,
            &path,
            Some(&json!({"Boot": boot})),
            etag.as_deref(),
        )
        .await?;
        Ok(())
    }

    async fn boot_override(&self) -> Result<Option<(BootDevice, BootOptions)>> {
        let (_, _, sys) = self.system().await?;
        let boot = &sys["Boot"];
        if boot["BootSourceOverrideEnabled"].as_str() == Some("Disabled") {
            return Ok(None);
        }
        let device = match boot["BootSourceOverrideTarget"].as_str() {
            Some("Pxe") => BootDevice::Pxe,
            Some("Hdd") => BootDevice::Disk,
            Some("BiosSetup") => BootDevice::BiosSetup,
            _ => return Ok(None),
        };
        Ok(Some((
            device,
            BootOptions {
                persistent: boot["BootSourceOverrideEnabled"].as_str() == Some("Continuous"),
                efi: boot["BootSourceOverrideMode"].as_str() == Some("UEFI"),
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
            ("admin:secret", "YWRtaW46c2VjcmV0"),
        ] {
            assert_eq!(super::base64(i.as_bytes()), o);
        }
    }
}
