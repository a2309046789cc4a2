//! Rufio `Machine` objects (`bmc.tinkerbell.org/v1alpha1`), as Tinkerbell's BMC
//! controller defines them: read into types at the edge, then turned into a
//! [`BmcEndpoint`] and the name of the secret that holds its credentials.
//!
//! Providers: Tinker speaks Redfish (Rufio's `redfish` options, or `gofish` /
//! `redfish` in `preferredOrder`) and IPMI (`ipmitool`). A Machine whose provider
//! options or preferred order name only providers Tinker does not speak (Intel
//! AMT, Rufio's `rpc`, a vendor's own) is refused with
//! [`Error::Unsupported`], never driven over IPMI on port 623 by guess. A
//! Machine with no provider options at all is IPMI, as in Rufio.
//!
//! Tinker's own provider, for machines without a BMC: `wol` (or `wake-on-lan`)
//! in `preferredOrder` chooses Wake-on-LAN (`providerOptions.wol.port` sets the
//! UDP port, 9 by default). `host` and `authSecretRef`, which Rufio requires,
//! are not used by it.

use crate::endpoint::BmcEndpoint;
use serde::Deserialize;
use tinker_core::{Error, Result};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Metadata {
    name: String,
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Machine {
    spec: Spec,
}

#[derive(Debug, Deserialize)]
struct Spec {
    connection: Connection,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Connection {
    host: String,
    port: Option<u16>,
    auth_secret_ref: SecretRef,
    #[serde(rename = "insecureTLS", default)]
    insecure_tls: bool,
    #[serde(default)]
    provider_options: ProviderOptions,
}

#[derive(Debug, Deserialize)]
struct SecretRef {
    name: String,
    namespace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ProviderOptions {
    redfish: Option<RedfishOptions>,
    ipmitool: Option<PortOption>,
    /// Tinker's Wake-on-LAN options.
    wol: Option<PortOption>,
    preferred_order: Vec<String>,
    /// Options of providers Tinker does not speak (`intelAMT`, `rpc`, ...), kept
    /// by name so that a Machine that needs one is refused, not guessed at.
    #[serde(flatten)]
    others: std::collections::BTreeMap<String, serde_norway::Value>,
}

/// The providers Tinker speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    Redfish,
    Ipmi,
    WakeOnLan,
}

impl Provider {
    /// The provider a name in `preferredOrder` means (bmclib's provider names),
    /// or `None` for one Tinker does not speak.
    fn named(name: &str) -> Option<Provider> {
        let name = name.to_ascii_lowercase();
        if name == "gofish" || name.starts_with("redfish") {
            Some(Provider::Redfish)
        } else if name == "ipmitool" || name == "ipmi" {
            Some(Provider::Ipmi)
        } else if name == "wol" || name == "wake-on-lan" || name == "wakeonlan" {
            Some(Provider::WakeOnLan)
        } else {
            None
        }
    }
}

impl ProviderOptions {
    /// Which provider drives the Machine: the first in `preferredOrder` Tinker
    /// speaks; else the one whose options are given (Rufio tries the others
    /// after the preferred ones); with no options and no order at all, IPMI
    /// (Rufio's default). `Err` names the providers asked for when Tinker speaks
    /// none of them.
    fn provider(&self) -> std::result::Result<Provider, Vec<String>> {
        if let Some(p) = self.preferred_order.iter().find_map(|p| Provider::named(p)) {
            return Ok(p);
        }
        if self.redfish.is_some() {
            Ok(Provider::Redfish)
        } else if self.ipmitool.is_some() {
            Ok(Provider::Ipmi)
        } else if self.wol.is_some() {
            Ok(Provider::WakeOnLan)
        } else if self.others.is_empty() && self.preferred_order.is_empty() {
            Ok(Provider::Ipmi)
        } else {
            let mut asked = self.preferred_order.clone();
            asked.extend(self.others.keys().cloned());
            Err(asked)
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RedfishOptions {
    port: Option<u16>,
    system_name: Option<String>,
    use_basic_auth: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PortOption {
    port: Option<u16>,
}

/// A Rufio Machine, read: its namespace and name, its BMC, and its secret's
/// `namespace/name`.
#[derive(Debug)]
pub(crate) struct RufioMachine {
    pub namespace: String,
    pub name: String,
    pub endpoint: BmcEndpoint,
    pub secret: String,
}

/// Reads one Machine document. The user name is left empty: Rufio keeps it in
/// the secret beside the password.
pub(crate) fn read(value: &serde_norway::Value) -> Result<RufioMachine> {
    let meta: Metadata = value
        .get("metadata")
        .cloned()
        .map(serde_norway::from_value)
        .transpose()
        .ok()
        .flatten()
        .unwrap_or_default();
    let ns = meta.namespace.as_deref().unwrap_or("default");
    let file = format!("Machine {ns}/{}", meta.name);
    let machine: Machine =
        serde_path_to_error::deserialize(value.clone()).map_err(|e| Error::Parse {
            file: file.clone(),
            path: e.path().to_string(),
            reason: e.inner().to_string(),
        })?;
    let c = machine.spec.connection;
    let secret_ns = c.auth_secret_ref.namespace.as_deref().unwrap_or(ns);
    let secret = format!("{secret_ns}/{}", c.auth_secret_ref.name);
    let endpoint = endpoint(c, &file)?;
    Ok(RufioMachine {
        namespace: ns.to_string(),
        name: meta.name,
        endpoint,
        secret,
    })
}

/// The endpoint a connection describes, for the provider it asks for (see
/// [`ProviderOptions::provider`]).
fn endpoint(c: Connection, machine: &str) -> Result<BmcEndpoint> {
    let options = c.provider_options;
    let provider = options.provider().map_err(|asked| Error::Unsupported {
        target: machine.to_string(),
        operation: format!(
            "the BMC provider(s) {asked:?}: Tinker speaks redfish (gofish), ipmitool and \
             wol (Wake-on-LAN); give the Machine redfish or ipmitool providerOptions, \
             preferredOrder [wol], or power it by hand"
        ),
    })?;
    if provider == Provider::WakeOnLan {
        let port = options.wol.and_then(|o| o.port).unwrap_or(crate::WOL_PORT);
        return Ok(BmcEndpoint::WakeOnLan { port });
    }
    if provider == Provider::Redfish {
        redfish_endpoint(
            machine,
            c.host,
            c.port,
            c.insecure_tls,
            options.redfish.unwrap_or_default(),
        )
    } else {
        let port = options.ipmitool.and_then(|o| o.port).or(c.port);
        ipmi_endpoint(machine, c.host, port)
    }
}

#[cfg(feature = "redfish")]
fn redfish_endpoint(
    _machine: &str,
    host: String,
    port: Option<u16>,
    insecure_tls: bool,
    o: RedfishOptions,
) -> Result<BmcEndpoint> {
    use crate::redfish::{RedfishAuth, RedfishEndpoint, TlsVerification};
    let mut e = RedfishEndpoint::new(host, "");
    e.port = o.port.or(port).unwrap_or(443);
    if insecure_tls {
        e.verification = TlsVerification::Insecure;
    }
    e.system = o.system_name;
    if o.use_basic_auth == Some(false) {
        e.auth = RedfishAuth::Session;
    }
    Ok(BmcEndpoint::Redfish(e))
}

#[cfg(not(feature = "redfish"))]
fn redfish_endpoint(
    machine: &str,
    _: String,
    _: Option<u16>,
    _: bool,
    _: RedfishOptions,
) -> Result<BmcEndpoint> {
    Err(crate::endpoint::compiled_out(machine, "redfish"))
}

#[cfg(feature = "ipmi")]
fn ipmi_endpoint(_machine: &str, host: String, port: Option<u16>) -> Result<BmcEndpoint> {
    use crate::ipmi::IpmiEndpoint;
    let e = IpmiEndpoint::new(host, "");
    Ok(BmcEndpoint::Ipmi(match port {
        Some(p) => e.with_port(p),
        None => e,
    }))
}

#[cfg(not(feature = "ipmi"))]
fn ipmi_endpoint(machine: &str, _: String, _: Option<u16>) -> Result<BmcEndpoint> {
    Err(crate::endpoint::compiled_out(machine, "ipmi"))
}

#[cfg(all(test, feature = "redfish", feature = "ipmi"))]
mod tests {
    use super::*;

    fn value(yaml: &str) -> serde_norway::Value {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn reads_a_redfish_machine() {
        let m = read(&value("apiVersion: bmc.tinkerbell.org/v1alpha1\nkind: Machine\nmetadata: {name: node1, namespace: tink}\nspec:\n  connection:\n    host: 10.0.0.5\n    authSecretRef: {name: bmc-creds, namespace: tink}\n    insecureTLS: true\n    providerOptions:\n      redfish: {port: 8443, systemName: S1}\n")).unwrap();
        assert_eq!(m.name, "node1");
        assert_eq!(m.secret, "tink/bmc-creds");
        let BmcEndpoint::Redfish(e) = m.endpoint else {
            panic!("{:?}", m.endpoint)
        };
        assert!(e.tls);
        assert_eq!((e.port, e.system.as_deref()), (8443, Some("S1")));
        assert_eq!(e.verification, crate::TlsVerification::Insecure);
        assert_eq!(e.auth, crate::RedfishAuth::Basic);
    }

    #[test]
    fn reads_an_ipmi_machine_and_names_what_is_missing() {
        let m = read(&value("metadata: {name: n2}\nspec:\n  connection:\n    host: 10.0.0.7\n    port: 6230\n    authSecretRef: {name: c}\n")).unwrap();
        assert_eq!(m.secret, "default/c");
        let BmcEndpoint::Ipmi(e) = m.endpoint else {
            panic!("{:?}", m.endpoint)
        };
        assert_eq!((e.host.as_str(), e.port), ("10.0.0.7", 6230));
        assert_eq!(m.namespace, "default");

        let err = read(&value("metadata: {name: n3, namespace: t}\nspec:\n  connection:\n    authSecretRef: {name: c}\n")).unwrap_err();
        match err {
            Error::Parse { file, path, reason } => {
                assert_eq!(file, "Machine t/n3");
                assert_eq!(path, "spec.connection");
                assert!(reason.contains("host"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    fn machine(options: &str) -> Result<RufioMachine> {
        read(&value(&format!(
            "metadata: {{name: nuc1, namespace: lab}}\nspec:\n  connection:\n    host: 10.0.0.9\n    authSecretRef: {{name: c}}\n    providerOptions: {options}\n"
        )))
    }

    #[test]
    fn a_provider_tinker_does_not_speak_is_refused_not_guessed_as_ipmi() {
        for options in [
            "{intelAMT: {port: 16992}}",
            "{rpc: {consumerURL: 'http://x'}}",
            "{preferredOrder: [IntelAMT]}",
            "{preferredOrder: [asrockrack], intelAMT: {port: 16992}}",
        ] {
            let err = machine(options).unwrap_err();
            assert!(
                matches!(&err, Error::Unsupported { target, .. } if target == "Machine lab/nuc1"),
                "{options}: {err:?}"
            );
            assert!(err.to_string().contains("Tinker speaks redfish"), "{err}");
        }
        // Ones it does speak, also beside one it does not.
        for (options, redfish) in [
            ("{}", false),
            ("{intelAMT: {port: 16992}, ipmitool: {port: 6230}}", false),
            ("{preferredOrder: [IntelAMT], ipmitool: {port: 623}}", false),
            ("{preferredOrder: [IntelAMT, gofish]}", true),
            (
                "{preferredOrder: [ipmitool, gofish], redfish: {port: 8443}}",
                false,
            ),
            ("{intelAMT: {}, redfish: {port: 8443}}", true),
        ] {
            let m = machine(options).unwrap_or_else(|e| panic!("{options}: {e}"));
            assert_eq!(
                matches!(m.endpoint, BmcEndpoint::Redfish(_)),
                redfish,
                "{options}: {:?}",
                m.endpoint
            );
        }
    }

    #[test]
    fn wol_in_the_preferred_order_chooses_wake_on_lan() {
        for (options, port) in [
            ("{preferredOrder: [wol]}", 9),
            (
                "{preferredOrder: [IntelAMT, Wake-On-LAN], wol: {port: 7}}",
                7,
            ),
        ] {
            let m = machine(options).unwrap_or_else(|e| panic!("{options}: {e}"));
            assert_eq!(m.endpoint, BmcEndpoint::WakeOnLan { port }, "{options}");
        }
        // Only when asked for: options of Redfish still mean Redfish.
        let m = machine("{redfish: {port: 8443}, wol: {port: 7}}").unwrap();
        assert!(
            matches!(m.endpoint, BmcEndpoint::Redfish(_)),
            "{:?}",
            m.endpoint
        );
        let m = machine("{wol: {port: 7}}").unwrap();
        assert_eq!(m.endpoint, BmcEndpoint::WakeOnLan { port: 7 });
    }
}
