//! [`BmcEndpoint`]: where a BMC is and which protocol it speaks, one variant per
//! protocol, read from a BMC URL (`ipmi://admin@10.0.0.5:623`,
//! `redfishs://root@10.0.0.6?system=1`, `mock://rack1-node3`) with the `url`
//! crate. It holds no password: passwords come from a
//! [`SecretSource`](crate::SecretSource), never from a URL.
//!
//! Adding a protocol: a folder beside `ipmi/` and `redfish/` with its endpoint
//! type (`from_url`, `url`, `controller`), a variant here, and its arm in each
//! `match` below.

use crate::mock::MockBmc;
use crate::policy::{Resilient, RetryPolicy};
use percent_encoding::percent_decode_str;
use std::sync::Arc;
use tinker_core::clock::{SharedClock, SystemClock};
use tinker_core::{Error, PowerController, Result, Secret};
use url::{Host, Url};

#[cfg(feature = "ipmi")]
use crate::ipmi::IpmiEndpoint;
#[cfg(feature = "redfish")]
use crate::redfish::RedfishEndpoint;

/// Where a BMC is and how to reach it. Holds no password.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BmcEndpoint {
    /// IPMI over LAN (`ipmi://`).
    #[cfg(feature = "ipmi")]
    Ipmi(IpmiEndpoint),
    /// Redfish over HTTP (`redfish://`) or HTTPS (`redfishs://`).
    #[cfg(feature = "redfish")]
    Redfish(RedfishEndpoint),
    /// An in-process [`MockBmc`] (`mock://NAME`): try a command line or a
    /// configuration without hardware.
    Mock {
        /// The mock's name, as its target shows it.
        name: String,
    },
    /// No BMC: the machine is woken by Wake-on-LAN (a Rufio Machine whose
    /// `preferredOrder` names `wol`). The [`Connector`](crate::Connector) builds
    /// its [`WakeOnLan`](crate::WakeOnLan) per Hardware, from the Hardware's
    /// MAC and the provisioning interface.
    WakeOnLan {
        /// The UDP port the magic packet goes to (9 unless set).
        port: u16,
    },
}

/// The parts of a BMC URL every protocol has, decoded; each protocol's endpoint
/// reads its own options from them.
#[derive(Debug, Clone)]
#[cfg_attr(not(any(feature = "ipmi", feature = "redfish")), allow(dead_code))]
pub(crate) struct UrlParts {
    /// The URL with its user name hidden, for messages.
    pub redacted: String,
    pub user: String,
    pub host: String,
    pub port: Option<u16>,
    pub options: Vec<(String, String)>,
}

#[cfg_attr(not(any(feature = "ipmi", feature = "redfish")), allow(dead_code))]
impl UrlParts {
    /// The error for a part of this URL that cannot be used.
    pub fn invalid(&self, part: &str, reason: impl Into<String>) -> Error {
        invalid(&self.redacted, part, reason)
    }
}

fn invalid(url: &str, part: &str, reason: impl Into<String>) -> Error {
    Error::Parse {
        file: url.to_string(),
        path: part.to_string(),
        reason: reason.into(),
    }
}

/// A host as it goes in a URL: an IPv6 address in brackets.
#[cfg_attr(not(any(feature = "ipmi", feature = "redfish")), allow(dead_code))]
pub(crate) fn host_in_url(host: &str) -> std::borrow::Cow<'_, str> {
    if host.contains(':') {
        format!("[{host}]").into()
    } else {
        host.into()
    }
}

const SCHEMES: &str = "expected ipmi://, redfish://, redfishs:// or mock://";

impl BmcEndpoint {
    /// Parses `ipmi://USER@HOST[:PORT]`, `redfish://USER@HOST[:PORT]`,
    /// `redfishs://USER@HOST[:PORT]` (with optional query `insecure=true`,
    /// `system=ID`, `auth=session`) or `mock://NAME`. A password in the URL is
    /// refused: it would end up in shell history and process lists. Errors are
    /// [`Error::Parse`], naming the URL without its user and the part at fault.
    pub fn parse(input: &str) -> Result<Self> {
        let redacted = redact(input);
        let url = Url::parse(input).map_err(|e| invalid(&redacted, "URL", e.to_string()))?;
        if url.password().is_some() {
            return Err(invalid(
                &redacted,
                "password",
                "put the password in the environment, not in the URL",
            ));
        }
        if url.scheme() == "mock" {
            let name = url.host_str().unwrap_or_default();
            if name.is_empty() {
                return Err(invalid(&redacted, "name", "expected mock://NAME"));
            }
            return Ok(BmcEndpoint::Mock {
                name: name.to_string(),
            });
        }
        let parts = url_parts(&url, redacted)?;
        match url.scheme() {
            #[cfg(feature = "ipmi")]
            "ipmi" => Ok(BmcEndpoint::Ipmi(IpmiEndpoint::from_url(parts)?)),
            #[cfg(feature = "redfish")]
            "redfish" | "http" => Ok(BmcEndpoint::Redfish(RedfishEndpoint::from_url(
                parts, false,
            )?)),
            #[cfg(feature = "redfish")]
            "redfishs" | "https" => Ok(BmcEndpoint::Redfish(RedfishEndpoint::from_url(
                parts, true,
            )?)),
            scheme => Err(unknown_scheme(&parts.redacted, scheme)),
        }
    }

    /// The URL form, without credentials.
    pub fn url(&self) -> String {
        match self {
            #[cfg(feature = "ipmi")]
            BmcEndpoint::Ipmi(e) => e.url(),
            #[cfg(feature = "redfish")]
            BmcEndpoint::Redfish(e) => e.url(),
            BmcEndpoint::Mock { name } => format!("mock://{name}"),
            BmcEndpoint::WakeOnLan { port } => format!("wol://:{port}"),
        }
    }

    /// Sets the user name (a Rufio secret holds it beside the password).
    #[cfg_attr(
        not(any(feature = "ipmi", feature = "redfish")),
        allow(unused_variables)
    )]
    pub fn set_user(&mut self, user: &str) {
        match self {
            #[cfg(feature = "ipmi")]
            BmcEndpoint::Ipmi(e) => e.user = user.to_string(),
            #[cfg(feature = "redfish")]
            BmcEndpoint::Redfish(e) => e.user = user.to_string(),
            BmcEndpoint::Mock { .. } | BmcEndpoint::WakeOnLan { .. } => {}
        }
    }

    /// Builds the controller, wrapped in the retry/timeout/session policy, timed
    /// on the system clock.
    pub fn build(&self, password: Secret, policy: RetryPolicy) -> Result<Arc<dyn PowerController>> {
        self.build_with_clock(password, policy, SystemClock::shared())
    }

    /// Builds the controller, wrapped in the retry/timeout/session policy, with
    /// every time limit and wait read on `clock`.
    #[cfg_attr(
        not(any(feature = "ipmi", feature = "redfish")),
        allow(unused_variables)
    )]
    pub fn build_with_clock(
        &self,
        password: Secret,
        policy: RetryPolicy,
        clock: SharedClock,
    ) -> Result<Arc<dyn PowerController>> {
        Ok(match self {
            #[cfg(feature = "ipmi")]
            BmcEndpoint::Ipmi(e) => {
                let controller = e.controller(password).with_clock(clock.clone());
                Arc::new(Resilient::new(controller, policy).with_clock(clock))
            }
            #[cfg(feature = "redfish")]
            BmcEndpoint::Redfish(e) => {
                let controller = e.controller(password)?.with_clock(clock.clone());
                Arc::new(Resilient::new(controller, policy).with_clock(clock))
            }
            BmcEndpoint::Mock { name } => Arc::new(
                Resilient::new(MockBmc::new(name).with_clock(clock.clone()), policy)
                    .with_clock(clock),
            ),
            BmcEndpoint::WakeOnLan { .. } => {
                return Err(Error::Unsupported {
                    target: self.url(),
                    operation: "building a controller without a Hardware: Wake-on-LAN needs \
                                the machine's MAC and the provisioning interface, which the \
                                Connector supplies"
                        .into(),
                });
            }
        })
    }
}

/// A scheme refused: known but compiled out, or unknown.
fn unknown_scheme(url: &str, scheme: &str) -> Error {
    match scheme {
        "ipmi" => compiled_out(url, "ipmi"),
        "redfish" | "redfishs" | "http" | "https" => compiled_out(url, "redfish"),
        _ => invalid(url, "scheme", format!("{SCHEMES}, not {scheme}://")),
    }
}

/// The error for a BMC whose protocol this build of tinker-bmc leaves out.
#[cfg_attr(all(feature = "ipmi", feature = "redfish"), allow(dead_code))]
pub(crate) fn compiled_out(target: &str, feature: &str) -> Error {
    Error::Unsupported {
        target: target.to_string(),
        operation: format!("{feature} (tinker-bmc was built without its `{feature}` feature)"),
    }
}

/// User, host, port and options of a BMC URL, decoded and checked.
fn url_parts(url: &Url, redacted: String) -> Result<UrlParts> {
    let user = percent_decode_str(url.username())
        .decode_utf8()
        .map_err(|e| invalid(&redacted, "user", e.to_string()))?
        .into_owned();
    if user.is_empty() {
        return Err(invalid(&redacted, "user", "missing USER@ before the host"));
    }
    let host = match url.host() {
        Some(Host::Domain(d)) if !d.is_empty() => d.to_string(),
        Some(Host::Ipv4(a)) => a.to_string(),
        Some(Host::Ipv6(a)) => a.to_string(),
        _ => return Err(invalid(&redacted, "host", "missing host")),
    };
    if !matches!(url.path(), "" | "/") {
        return Err(invalid(
            &redacted,
            "path",
            "a BMC URL names a host, not a path",
        ));
    }
    Ok(UrlParts {
        redacted,
        user,
        host,
        port: url.port(),
        options: url.query_pairs().into_owned().collect(),
    })
}

/// A URL with anything between `://` and `@` hidden, for messages.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(at)) if at > scheme.len() && !rest.is_empty() => {
            format!("{scheme}://***{}", &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(feature = "ipmi", feature = "redfish"))]
    #[test]
    fn parses_bmc_urls() {
        let BmcEndpoint::Ipmi(e) = BmcEndpoint::parse("ipmi://admin@10.0.0.5").unwrap() else {
            panic!("not IPMI")
        };
        assert_eq!(e, IpmiEndpoint::new("10.0.0.5", "admin"));
        assert_eq!(e.port, 623);
        let BmcEndpoint::Redfish(e) = BmcEndpoint::parse(
            "redfishs://root@bmc.example:8443?insecure=true&system=System.Embedded.1&auth=session",
        )
        .unwrap() else {
            panic!("not Redfish")
        };
        assert!(e.tls);
        assert_eq!((e.host.as_str(), e.port), ("bmc.example", 8443));
        assert_eq!(e.verification, crate::TlsVerification::Insecure);
        assert_eq!(e.auth, crate::RedfishAuth::Session);
        assert_eq!(e.system.as_deref(), Some("System.Embedded.1"));
        let parsed = BmcEndpoint::parse("redfish://u@[::1]:8000").unwrap();
        let BmcEndpoint::Redfish(e) = &parsed else {
            panic!("not Redfish")
        };
        assert_eq!((e.tls, e.host.as_str(), e.port), (false, "::1", 8000));
        assert_eq!(e.base_url(), "http://[::1]:8000");
        assert_eq!(parsed.url(), "redfish://u@[::1]:8000");
        assert_eq!(BmcEndpoint::parse(&parsed.url()).unwrap(), parsed);
        // https:// is the same as redfishs://, its default port included.
        let BmcEndpoint::Redfish(e) = BmcEndpoint::parse("https://root@10.0.0.6").unwrap() else {
            panic!("not Redfish")
        };
        assert_eq!((e.tls, e.port), (true, 443));
        // A user name may be percent-encoded.
        let BmcEndpoint::Ipmi(e) = BmcEndpoint::parse("ipmi://ops%40dc1@h").unwrap() else {
            panic!("not IPMI")
        };
        assert_eq!(e.user, "ops@dc1");
        for url in ["ipmi://a@b?system=1", "redfish://a@b?colour=red"] {
            match BmcEndpoint::parse(url) {
                Err(Error::Parse { path, .. }) => assert_eq!(path, "query", "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        assert_eq!(
            BmcEndpoint::parse("mock://rack1-node3").unwrap(),
            BmcEndpoint::Mock {
                name: "rack1-node3".into()
            }
        );
    }

    #[test]
    fn refuses_passwords_in_urls_without_echoing_them() {
        let err = BmcEndpoint::parse("ipmi://admin:hunter2@10.0.0.5").unwrap_err();
        assert!(
            matches!(&err, Error::Parse { path, .. } if path == "password"),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("environment"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
        for (url, part) in [
            ("ftp://a@b", "scheme"),
            ("ipmi://10.0.0.5", "user"),
            ("ipmi://a@b:notaport", "URL"),
            ("ipmi://a@b/x", "path"),
            ("mock://", "name"),
        ] {
            match BmcEndpoint::parse(url) {
                Err(Error::Parse { path, .. }) => assert_eq!(path, part, "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[cfg(not(feature = "ipmi"))]
    #[test]
    fn a_protocol_left_out_of_the_build_says_which_feature_it_needs() {
        let err = BmcEndpoint::parse("ipmi://admin@10.0.0.5").unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
        assert!(err.to_string().contains("`ipmi` feature"), "{err}");
    }

    #[tokio::test]
    async fn a_mock_url_builds_a_mock_bmc_behind_the_policy() {
        let bmc = BmcEndpoint::parse("mock://m1")
            .unwrap()
            .build(Secret::default(), RetryPolicy::fast())
            .unwrap();
        assert_eq!(bmc.target(), "mock://m1");
        bmc.power(tinker_core::PowerAction::On).await.unwrap();
        assert_eq!(
            bmc.power_state().await.unwrap(),
            tinker_core::PowerState::On
        );
    }
}
