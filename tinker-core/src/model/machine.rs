//! Rufio's `Machine` (`bmc.tinkerbell.org/v1alpha1`): how to reach a machine's
//! BMC. Stored and served like the other objects; the BMC crate turns it into
//! an endpoint. Only what validation needs is typed; the rest (provider
//! options, status) is kept as it was written.

use super::{Extra, ObjectMeta};
use serde::{Deserialize, Serialize};

/// The API version of Rufio's objects.
pub const RUFIO_API_VERSION: &str = "bmc.tinkerbell.org/v1alpha1";

/// A Rufio `Machine`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    /// `bmc.tinkerbell.org/v1alpha1`.
    pub api_version: String,
    /// `Machine`.
    pub kind: String,
    /// Name, namespace, labels, annotations.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// How to reach the BMC.
    #[serde(default)]
    pub spec: MachineSpec,
    /// Unknown fields (`status`, ...), kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A Machine's spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineSpec {
    /// The BMC's address and credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<MachineConnection>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Where a BMC is and which secret holds its credentials.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineConnection {
    /// The BMC's host name or address.
    #[serde(default)]
    pub host: String,
    /// Its port, when not the provider's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The secret that holds the user name and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<SecretReference>,
    /// Whether to accept any certificate (Redfish).
    #[serde(rename = "insecureTLS", default)]
    pub insecure_tls: bool,
    /// Per-provider options (`redfish`, `ipmitool`, `preferredOrder`, ...).
    #[serde(default, skip_serializing_if = "Extra::is_empty")]
    pub provider_options: Extra,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A reference to a Kubernetes secret.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecretReference {
    /// The secret's name.
    #[serde(default)]
    pub name: String,
    /// Its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl MachineConnection {
    /// The providers asked for that Tinker does not speak, when it speaks none
    /// of those asked for (so the Machine cannot be driven); empty otherwise.
    /// Tinker speaks Redfish (`redfish`, `gofish`), IPMI (`ipmitool`) and its
    /// own Wake-on-LAN (`wol`, `wake-on-lan`) for machines without a BMC; with
    /// no options at all, Rufio's default is IPMI.
    pub fn unspoken_providers(&self) -> Vec<String> {
        let spoken = |name: &str| {
            let n = name.to_ascii_lowercase();
            n == "gofish"
                || n.starts_with("redfish")
                || n == "ipmitool"
                || n == "ipmi"
                || n == "wol"
                || n == "wake-on-lan"
                || n == "wakeonlan"
        };
        let order: Vec<String> = self
            .provider_options
            .get("preferredOrder")
            .and_then(|v| v.as_sequence())
            .map(|s| {
                s.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let options: Vec<&String> = self
            .provider_options
            .keys()
            .filter(|k| *k != "preferredOrder")
            .collect();
        if order.iter().any(|p| spoken(p)) || options.iter().any(|k| spoken(k)) {
            return Vec::new();
        }
        order
            .into_iter()
            .chain(options.into_iter().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{Document, Object, parse_documents};

    fn unspoken(options: &str) -> Vec<String> {
        let yaml = format!(
            "apiVersion: bmc.tinkerbell.org/v1alpha1\nkind: Machine\nmetadata: {{name: nuc1}}\nspec:\n  connection:\n    host: 10.0.0.5\n    authSecretRef: {{name: c}}\n    providerOptions: {options}\n"
        );
        match parse_documents("m.yaml", &yaml).unwrap().remove(0) {
            Document::Object(Object::Machine(m)) => m.spec.connection.unwrap().unspoken_providers(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wake_on_lan_is_a_provider_tinker_speaks() {
        assert!(unspoken("{preferredOrder: [wol]}").is_empty());
        assert!(unspoken("{preferredOrder: [IntelAMT, Wake-on-LAN]}").is_empty());
        assert!(unspoken("{wol: {port: 9}}").is_empty());
        assert_eq!(unspoken("{preferredOrder: [IntelAMT]}"), ["IntelAMT"]);
    }
}
