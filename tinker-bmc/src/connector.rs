//! Building controllers from what an operator writes: a BMC URL
//! (`ipmi://admin@10.0.0.5:623`, `redfishs://root@10.0.0.6`), or a Hardware's
//! `spec.bmcRef` naming a Rufio `Machine` (`bmc.tinkerbell.org/v1alpha1`) whose
//! `spec.connection` gives host, port, provider and the secret that holds the
//! credentials. Passwords come from a [`SecretSource`], never from the URL.

use crate::ipmi::IpmiPower;
use crate::policy::{Resilient, RetryPolicy};
use crate::redfish::{RedfishAuth, RedfishPower, TlsVerification};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tinker_core::Secret;
use tinker_core::model::{Document, Hardware};
use tinker_core::{Error, PowerConnector, PowerController, Result};

/// Which protocol a BMC speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// IPMI over LAN.
    Ipmi,
    /// Redfish over HTTPS (`tls: true`) or HTTP.
    Redfish {
        /// Whether to use HTTPS.
        tls: bool,
    },
}

/// Where a BMC is and how to reach it. Holds no password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmcEndpoint {
    /// The protocol.
    pub provider: Provider,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name.
    pub user: String,
    /// Skip TLS verification (Redfish only; explicit per BMC).
    pub insecure_tls: bool,
    /// Redfish system id, when the BMC has several.
    pub system: Option<String>,
    /// Redfish session authentication instead of basic.
    pub session_auth: bool,
}

impl BmcEndpoint {
    /// Parses `ipmi://USER@HOST[:PORT]`, `redfish://USER@HOST[:PORT]` or
    /// `redfishs://USER@HOST[:PORT]`, with optional query `insecure=true`,
    /// `system=ID`, `auth=session`. A password in the URL is refused: it would end
    /// up in shell history and process lists.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| Error::Unsupported {
            target: redact(url),
            operation: format!("BMC URL: {why}"),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected ipmi://, redfish:// or redfishs://"))?;
        let provider = match scheme {
            "ipmi" => Provider::Ipmi,
            "redfish" | "http" => Provider::Redfish { tls: false },
            "redfishs" | "https" => Provider::Redfish { tls: true },
            _ => return Err(bad("expected ipmi://, redfish:// or redfishs://")),
        };
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.trim_end_matches('/');
        let (user, hostport) = authority
            .rsplit_once('@')
            .ok_or_else(|| bad("missing USER@ before the host"))?;
        if user.contains(':') {
            return Err(bad("put the password in the environment, not in the URL"));
        }
        let default_port = match provider {
            Provider::Ipmi => 623,
            Provider::Redfish { tls: true } => 443,
            Provider::Redfish { tls: false } => 80,
        };
        let (host, port) =
            split_host_port(hostport, default_port).ok_or_else(|| bad("bad host or port"))?;
        let mut endpoint = BmcEndpoint {
            provider,
            host,
            port,
            user: user.to_string(),
            insecure_tls: false,
            system: None,
            session_auth: false,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=').unwrap_or((pair, "")) {
                ("insecure", v) => endpoint.insecure_tls = v == "true" || v == "1",
                ("system", v) => endpoint.system = Some(v.to_string()),
                ("auth", "session") => endpoint.session_auth = true,
                ("auth", "basic") => endpoint.session_auth = false,
                (k, _) => return Err(bad(&format!("unknown option {k:?}"))),
            }
        }
        Ok(endpoint)
    }

    /// The URL form, without credentials.
    pub fn url(&self) -> String {
        let scheme = match self.provider {
            Provider::Ipmi => "ipmi",
            Provider::Redfish { tls: true } => "redfishs",
            Provider::Redfish { tls: false } => "redfish",
        };
        format!("{scheme}://{}@{}:{}", self.user, self.host, self.port)
    }

    /// Builds the controller, wrapped in the retry/timeout/session policy.
    pub fn build(&self, password: Secret, policy: RetryPolicy) -> Result<Arc<dyn PowerController>> {
        Ok(match self.provider {
            Provider::Ipmi => Arc::new(Resilient::new(
                IpmiPower::new(self.host.clone(), self.port, self.user.clone(), password),
                policy,
            )),
            Provider::Redfish { tls } => {
                let scheme = if tls { "https" } else { "http" };
                let host = if self.host.contains(':') {
                    format!("[{}]", self.host)
                } else {
                    self.host.clone()
                };
                let verification = if self.insecure_tls {
                    TlsVerification::Insecure
                } else {
                    TlsVerification::WebPki
                };
                let auth = if self.session_auth {
                    RedfishAuth::Session
                } else {
                    RedfishAuth::Basic
                };
                let mut r = RedfishPower::new(
                    format!("{scheme}://{host}:{}", self.port),
                    self.user.clone(),
                    password,
                    auth,
                    verification,
                )?;
                if let Some(s) = &self.system {
                    r = r.with_system(s);
                }
                Arc::new(Resilient::new(r, policy))
            }
        })
    }
}

fn split_host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if tail.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => Some((h.to_string(), p.parse().ok()?)),
        None if !s.is_empty() => Some((s.to_string(), default_port)),
        _ => None,
    }
}

/// A URL with anything before `@` removed, for messages.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***{}", &url[at..]),
        _ => url.to_string(),
    }
}

/// Where passwords come from.
pub trait SecretSource: Send + Sync + std::fmt::Debug + 'static {
    /// The password stored under `name` (a Kubernetes-style `namespace/name`, or
    /// whatever the source uses), or `None`.
    fn password(&self, name: &str) -> Result<Option<Secret>>;
}

/// Passwords from the environment: `TINKER_BMC_PASSWORD_<NAME>` (the secret's
/// name upper-cased, non-alphanumerics as `_`), else `TINKER_BMC_PASSWORD`.
#[derive(Debug, Default, Clone, Copy)]
pub struct EnvSecrets;

impl SecretSource for EnvSecrets {
    fn password(&self, name: &str) -> Result<Option<Secret>> {
        let key: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        Ok(std::env::var(format!("TINKER_BMC_PASSWORD_{key}"))
            .or_else(|_| std::env::var("TINKER_BMC_PASSWORD"))
            .ok()
            .map(Secret::new))
    }
}

/// Passwords held in memory.
#[derive(Debug, Default, Clone)]
pub struct StaticSecrets(pub HashMap<String, Secret>);

impl SecretSource for StaticSecrets {
    fn password(&self, name: &str) -> Result<Option<Secret>> {
        Ok(self.0.get(name).cloned())
    }
}

#[derive(Debug, Clone)]
struct MachineEntry {
    endpoint: BmcEndpoint,
    secret: String,
}

/// The [`PowerConnector`] for real BMCs: maps a Hardware's `spec.bmcRef` name to a
/// BMC endpoint and secret, builds each controller once and hands out the same one
/// after, so its session limit holds across the engine's calls.
#[derive(Debug)]
pub struct Connector {
    machines: HashMap<String, MachineEntry>,
    secrets: Arc<dyn SecretSource>,
    policy: RetryPolicy,
    built: Mutex<HashMap<String, Arc<dyn PowerController>>>,
}

impl Connector {
    /// An empty connector.
    pub fn new(secrets: Arc<dyn SecretSource>, policy: RetryPolicy) -> Self {
        Connector {
            machines: HashMap::new(),
            secrets,
            policy,
            built: Mutex::default(),
        }
    }

    /// Registers a BMC under a machine name, with the name of its secret.
    pub fn add(&mut self, machine: &str, endpoint: BmcEndpoint, secret: &str) {
        self.machines.insert(
            machine.to_string(),
            MachineEntry {
                endpoint,
                secret: secret.to_string(),
            },
        );
    }

    /// Registers the Rufio `Machine` objects among `docs`
    /// (`bmc.tinkerbell.org/v1alpha1`). Returns how many.
    pub fn add_rufio_machines(&mut self, docs: &[Document]) -> Result<usize> {
        let mut n = 0;
        for d in docs {
            let Document::Unsupported {
                api_version,
                kind,
                value,
            } = d
            else {
                continue;
            };
            if kind != "Machine" || !api_version.starts_with("bmc.tinkerbell.org/") {
                continue;
            }
            let name = value["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let ns = value["metadata"]["namespace"].as_str().unwrap_or("default");
            let c = &value["spec"]["connection"];
            let bad = |why: &str| Error::Unsupported {
                target: format!("Machine {ns}/{name}"),
                operation: why.to_string(),
            };
            let host = c["host"]
                .as_str()
                .ok_or_else(|| bad("spec.connection.host is missing"))?
                .to_string();
            let secret_name = c["authSecretRef"]["name"]
                .as_str()
                .ok_or_else(|| bad("spec.connection.authSecretRef.name is missing"))?;
            let secret_ns = c["authSecretRef"]["namespace"].as_str().unwrap_or(ns);
            let options = &c["providerOptions"];
            let redfish = !options["redfish"].is_null()
                || options["preferredOrder"][0]
                    .as_str()
                    .is_some_and(|p| p.starts_with("redfish") || p == "gofish");
            let port = |section: &str, default: u16| {
                options[section]["port"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .or(c["port"].as_u64().and_then(|p| u16::try_from(p).ok()))
                    .unwrap_or(default)
            };
            let endpoint = BmcEndpoint {
                provider: if redfish {
                    Provider::Redfish { tls: true }
                } else {
                    Provider::Ipmi
                },
                port: if redfish {
                    port("redfish", 443)
                } else {
                    port("ipmitool", 623)
                },
                host,
                user: String::new(), // filled from the secret's `username` by the secret source
                insecure_tls: c["insecureTLS"].as_bool().unwrap_or(false),
                system: options["redfish"]["systemName"]
                    .as_str()
                    .map(str::to_string),
                session_auth: options["redfish"]["useBasicAuth"].as_bool() == Some(false),
            };
            self.add(&name, endpoint, &format!("{secret_ns}/{secret_name}"));
            n += 1;
        }
        Ok(n)
    }

    /// Sets the user name of a registered machine's BMC.
    pub fn set_user(&mut self, machine: &str, user: &str) {
        if let Some(m) = self.machines.get_mut(machine) {
            m.endpoint.user = user.to_string();
        }
    }
}

#[async_trait]
impl PowerConnector for Connector {
    async fn connect(&self, hardware: &Hardware) -> Result<Option<Arc<dyn PowerController>>> {
        let Some(bmc_ref) = &hardware.spec.bmc_ref else {
            return Ok(None);
        };
        if let Some(c) = self
            .built
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&bmc_ref.name)
        {
            return Ok(Some(c.clone()));
        }
        let entry = self
            .machines
            .get(&bmc_ref.name)
            .ok_or_else(|| Error::NotFound {
                key: format!(
                    "BMC Machine {:?} (spec.bmcRef of Hardware {})",
                    bmc_ref.name, hardware.metadata.name
                ),
            })?;
        let password = self
            .secrets
            .password(&entry.secret)?
            .ok_or_else(|| Error::NotFound {
                key: format!("secret {:?} for BMC {}", entry.secret, entry.endpoint.url()),
            })?;
        let controller = entry.endpoint.build(password, self.policy.clone())?;
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Some(
            built
                .entry(bmc_ref.name.clone())
                .or_insert(controller)
                .clone(),
        ))
    }
}

/// A connector over controllers made beforehand, by Hardware name: for tests and
/// simulations (a rack of [`MockBmc`](crate::MockBmc)s).
#[derive(Debug, Default)]
pub struct StaticConnector(Mutex<HashMap<String, Arc<dyn PowerController>>>);

impl StaticConnector {
    /// An empty connector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives the Hardware named `hardware` this controller.
    pub fn insert(&self, hardware: &str, controller: Arc<dyn PowerController>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hardware.to_string(), controller);
    }
}

#[async_trait]
impl PowerConnector for StaticConnector {
    async fn connect(&self, hardware: &Hardware) -> Result<Option<Arc<dyn PowerController>>> {
        Ok(self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hardware.metadata.name)
            .cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bmc_urls() {
        let e = BmcEndpoint::parse("ipmi://admin@10.0.0.5").unwrap();
        assert_eq!(
            (e.provider, e.host.as_str(), e.port, e.user.as_str()),
            (Provider::Ipmi, "10.0.0.5", 623, "admin")
        );
        let e = BmcEndpoint::parse(
            "redfishs://root@bmc.example:8443?insecure=true&system=System.Embedded.1&auth=session",
        )
        .unwrap();
        assert_eq!(e.provider, Provider::Redfish { tls: true });
        assert_eq!((e.port, e.insecure_tls, e.session_auth), (8443, true, true));
        assert_eq!(e.system.as_deref(), Some("System.Embedded.1"));
        let e = BmcEndpoint::parse("redfish://u@[::1]:8000").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 8000));
        assert_eq!(e.url(), "redfish://u@::1:8000");
    }

    #[test]
    fn refuses_passwords_in_urls_without_echoing_them() {
        let err = BmcEndpoint::parse("ipmi://admin:hunter2@10.0.0.5")
            .unwrap_err()
            .to_string();
        assert!(err.contains("environment"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert!(BmcEndpoint::parse("ftp://a@b").is_err());
        assert!(BmcEndpoint::parse("ipmi://10.0.0.5").is_err());
        assert!(BmcEndpoint::parse("ipmi://a@b:notaport").is_err());
    }

    #[test]
    fn reads_rufio_machines() {
        let yaml = "apiVersion: bmc.tinkerbell.org/v1alpha1\nkind: Machine\nmetadata: {name: node1, namespace: tink}\nspec:\n  connection:\n    host: 10.0.0.5\n    authSecretRef: {name: bmc-creds, namespace: tink}\n    insecureTLS: true\n    providerOptions:\n      redfish: {port: 8443, systemName: S1}\n";
        let docs = tinker_core::model::parse_documents("m.yaml", yaml).unwrap();
        let mut c = Connector::new(Arc::new(StaticSecrets::default()), RetryPolicy::fast());
        assert_eq!(c.add_rufio_machines(&docs).unwrap(), 1);
        let m = &c.machines["node1"];
        assert_eq!(m.secret, "tink/bmc-creds");
        assert_eq!(m.endpoint.provider, Provider::Redfish { tls: true });
        assert_eq!((m.endpoint.port, m.endpoint.insecure_tls), (8443, true));
        assert_eq!(m.endpoint.system.as_deref(), Some("S1"));
    }
}
