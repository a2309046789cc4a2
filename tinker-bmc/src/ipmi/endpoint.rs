//! [`IpmiEndpoint`]: where an IPMI BMC is, read from `ipmi://USER@HOST[:PORT]`.

use super::IpmiPower;
use crate::endpoint::{UrlParts, host_in_url};
use tinker_core::{Result, Secret};

/// Where an IPMI BMC is and who to log in as. Holds no password.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IpmiEndpoint {
    /// Host name or address (an IPv6 address without brackets).
    pub host: String,
    /// UDP port.
    pub port: u16,
    /// User name.
    pub user: String,
}

impl IpmiEndpoint {
    /// IPMI's port.
    pub const DEFAULT_PORT: u16 = 623;

    /// The BMC at `host` on IPMI's port, logging in as `user`.
    pub fn new(host: impl Into<String>, user: impl Into<String>) -> Self {
        IpmiEndpoint {
            host: host.into(),
            port: Self::DEFAULT_PORT,
            user: user.into(),
        }
    }

    /// On another port.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// From a parsed `ipmi://` URL; IPMI takes no query options.
    pub(crate) fn from_url(parts: UrlParts) -> Result<Self> {
        if let Some((key, _)) = parts.options.first() {
            return Err(parts.invalid("query", format!("ipmi:// takes no option {key:?}")));
        }
        if parts.user.len() > super::session::MAX_USER_LEN {
            return Err(parts.invalid(
                "user",
                format!(
                    "an IPMI user name has at most {} bytes, not {}",
                    super::session::MAX_USER_LEN,
                    parts.user.len()
                ),
            ));
        }
        Ok(IpmiEndpoint {
            port: parts.port.unwrap_or(Self::DEFAULT_PORT),
            host: parts.host,
            user: parts.user,
        })
    }

    /// The URL form, without credentials.
    pub fn url(&self) -> String {
        format!(
            "ipmi://{}@{}:{}",
            self.user,
            host_in_url(&self.host),
            self.port
        )
    }

    /// The controller (without a policy around it).
    pub fn controller(&self, password: Secret) -> IpmiPower {
        IpmiPower::new(self.host.clone(), self.port, self.user.clone(), password)
    }
}
