//! [`RedfishEndpoint`]: where a Redfish BMC is, read from
//! `redfish://USER@HOST[:PORT]` (HTTP) or `redfishs://USER@HOST[:PORT]` (HTTPS),
//! with options `insecure=true`, `system=ID`, `auth=session|basic`.

use super::{RedfishAuth, RedfishPower, TlsVerification};
use crate::endpoint::{UrlParts, host_in_url};
use tinker_core::{Result, Secret};

/// Where a Redfish BMC is, who to log in as and how. Holds no password.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedfishEndpoint {
    /// HTTPS (`true`) or plain HTTP.
    pub tls: bool,
    /// Host name or address (an IPv6 address without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// User name.
    pub user: String,
    /// How the certificate is checked (HTTPS only).
    pub verification: TlsVerification,
    /// The ComputerSystem's id, when the BMC has several.
    pub system: Option<String>,
    /// Basic or session authentication.
    pub auth: RedfishAuth,
}

impl RedfishEndpoint {
    /// The BMC at `host` over HTTPS on port 443, logging in as `user` with basic
    /// authentication and a verified certificate.
    pub fn new(host: impl Into<String>, user: impl Into<String>) -> Self {
        RedfishEndpoint {
            tls: true,
            host: host.into(),
            port: 443,
            user: user.into(),
            verification: TlsVerification::WebPki,
            system: None,
            auth: RedfishAuth::Basic,
        }
    }

    /// From a parsed `redfish://` (`tls` false) or `redfishs://` URL.
    pub(crate) fn from_url(parts: UrlParts, tls: bool) -> Result<Self> {
        let mut e = RedfishEndpoint {
            tls,
            port: parts.port.unwrap_or(if tls { 443 } else { 80 }),
            ..RedfishEndpoint::new(parts.host.clone(), parts.user.clone())
        };
        for (key, value) in &parts.options {
            match (key.as_str(), value.as_str()) {
                ("insecure", v) => {
                    e.verification = if v == "true" || v == "1" {
                        TlsVerification::Insecure
                    } else {
                        TlsVerification::WebPki
                    }
                }
                ("system", v) => e.system = Some(v.to_string()),
                ("auth", "session") => e.auth = RedfishAuth::Session,
                ("auth", "basic") => e.auth = RedfishAuth::Basic,
                (k, _) => return Err(parts.invalid("query", format!("unknown option {k:?}"))),
            }
        }
        Ok(e)
    }

    /// The HTTP(S) address of the service root's host: `https://10.0.0.6:443`.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}", host_in_url(&self.host), self.port)
    }

    /// The URL form, without credentials.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "redfishs" } else { "redfish" };
        format!(
            "{scheme}://{}@{}:{}",
            self.user,
            host_in_url(&self.host),
            self.port
        )
    }

    /// The controller (without a policy around it).
    pub fn controller(&self, password: Secret) -> Result<RedfishPower> {
        let r = RedfishPower::new(
            self.base_url(),
            self.user.clone(),
            password,
            self.auth,
            self.verification.clone(),
        )?;
        Ok(match &self.system {
            Some(s) => r.with_system(s),
            None => r,
        })
    }
}
