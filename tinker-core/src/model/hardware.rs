//! The `Hardware` object: one machine, its interfaces (DHCP reservation and netboot
//! switches), disks, BMC reference and the instance metadata served to it.

use super::{Extra, ObjectMeta};
use crate::mac::MacAddr;
use serde::{Deserialize, Serialize};

/// The annotation that, when set, holds the SHA-256 (lower-case hex) of a token
/// the installed OS must present to read its metadata (the
/// `X-Tinker-Metadata-Token` header), on top of calling from its own address.
pub const METADATA_TOKEN_SHA256: &str = "tinker.dev/metadata-token-sha256";

/// The annotation that records when the engine last turned a machine's netboot
/// on (RFC 3339); see [`Hardware::netboot_since`].
pub const NETBOOT_SINCE: &str = "tinker.dev/netboot-since";

/// A machine, as `tinkerbell.org/v1alpha1` `Hardware`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hardware {
    /// `tinkerbell.org/v1alpha1`.
    pub api_version: String,
    /// `Hardware`.
    pub kind: String,
    /// Name, namespace, labels.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What the machine is.
    #[serde(default)]
    pub spec: HardwareSpec,
    /// Status as another system wrote it; kept, not interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_norway::Value>,
    /// Unknown top-level fields, kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `Hardware.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HardwareSpec {
    /// The BMC (a Rufio `Machine`) that powers this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc_ref: Option<ObjectReference>,
    /// Network interfaces; the first one with DHCP data is the boot interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Equinix-heritage instance metadata, served by the metadata service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<HardwareMetadata>,
    /// Disks; templates refer to them as `.Hardware.Disks`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    /// cloud-init user-data for the installed OS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// cloud-init vendor-data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_data: Option<String>,
    /// Unknown fields (`resources`, `tinkVersion`, `references`, ...), kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A typed reference to another object (`spec.bmcRef`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    /// API group, such as `bmc.tinkerbell.org`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// Kind, such as `Machine`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A disk (`spec.disks[]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    /// Device path, such as `/dev/nvme0n1`.
    #[serde(default)]
    pub device: String,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A network interface (`spec.interfaces[]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// The DHCP reservation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<Dhcp>,
    /// Netboot switches and overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netboot: Option<Netboot>,
    /// When true, the DHCP server does not answer this interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_dhcp: Option<bool>,
    /// Unknown fields (`isoboot`, ...), kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The DHCP reservation of an interface. Field names are snake_case, as in
/// Tinkerbell's CRD.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dhcp {
    /// The interface's MAC, written as in the file (validated separately).
    #[serde(default)]
    pub mac: String,
    /// Host name (option 12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Domain name (option 15).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_name: Option<String>,
    /// Lease time in seconds (option 51).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_time: Option<i64>,
    /// DNS servers (option 6).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub name_servers: Vec<String>,
    /// NTP servers (option 42).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub time_servers: Vec<String>,
    /// Architecture, such as `x86_64` or `aarch64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Whether the machine boots UEFI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uefi: Option<bool>,
    /// The OS's name for the interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface_name: Option<String>,
    /// Address, netmask and gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpConfig>,
    /// VLAN id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan_id: Option<String>,
    /// TFTP server name (option 66); set together with `boot_file_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tftp_server_name: Option<String>,
    /// Boot file name (option 67); set together with `tftp_server_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_file_name: Option<String>,
    /// Unknown fields (`classless_static_routes`, ...), kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `dhcp.ip`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// IPv4 address.
    #[serde(default)]
    pub address: String,
    /// Dotted netmask, such as `255.255.255.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netmask: Option<String>,
    /// Default gateway (option 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Address family (4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<i64>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `interfaces[].netboot`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Netboot {
    /// Whether the machine may PXE boot (the DHCP server hands it a boot file).
    #[serde(default, rename = "allowPXE", skip_serializing_if = "Option::is_none")]
    pub allow_pxe: Option<bool>,
    /// Whether workflows may run on the machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_workflow: Option<bool>,
    /// iPXE overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipxe: Option<Ipxe>,
    /// In-memory OS overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub osie: Option<Osie>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `netboot.ipxe`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ipxe {
    /// A script URL to chain to instead of the default script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A script to serve instead of the default script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents: Option<String>,
    /// The iPXE binary to hand out instead of the one chosen by architecture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `netboot.osie`: where the in-memory OS comes from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Osie {
    /// Base URL of kernel and initrd.
    #[serde(default, rename = "baseURL", skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Kernel file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Initrd file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// Extra kernel parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_params: Vec<String>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec.metadata`: what the metadata service tells the installed OS.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HardwareMetadata {
    /// The instance (the installed OS's identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<Instance>,
    /// Unknown fields (`facility`, `manufacturer`, `state`, ...), kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec.metadata.instance`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Instance id (EC2 `instance-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// cloud-init user-data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userdata: Option<String>,
    /// SSH public keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_keys: Vec<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Unknown fields (`operating_system`, `ips`, `storage`, ...), kept.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Hardware {
    /// A minimal valid Hardware with one interface, for examples and tests.
    pub fn new(name: &str, mac: MacAddr, address: std::net::Ipv4Addr, netmask: &str) -> Self {
        Hardware {
            api_version: super::API_VERSION_V1ALPHA1.into(),
            kind: "Hardware".into(),
            metadata: ObjectMeta::named(name),
            spec: HardwareSpec {
                interfaces: vec![Interface {
                    dhcp: Some(Dhcp {
                        mac: mac.to_string(),
                        hostname: Some(name.into()),
                        ip: Some(IpConfig {
                            address: address.to_string(),
                            netmask: Some(netmask.into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    netboot: Some(Netboot {
                        allow_pxe: Some(true),
                        allow_workflow: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            },
            status: None,
            extra: Extra::new(),
        }
    }

    /// The MACs of all interfaces that parse as one.
    pub fn macs(&self) -> Vec<MacAddr> {
        self.spec
            .interfaces
            .iter()
            .filter_map(|i| i.dhcp.as_ref()?.mac.parse().ok())
            .collect()
    }

    /// The IPv4 addresses of all interfaces that parse as one.
    pub fn ipv4s(&self) -> Vec<std::net::Ipv4Addr> {
        self.spec
            .interfaces
            .iter()
            .filter_map(|i| i.dhcp.as_ref()?.ip.as_ref()?.address.parse().ok())
            .collect()
    }

    /// The interface whose DHCP MAC is `mac`.
    pub fn interface(&self, mac: MacAddr) -> Option<&Interface> {
        self.spec
            .interfaces
            .iter()
            .find(|i| i.dhcp.as_ref().and_then(|d| d.mac.parse().ok()) == Some(mac))
    }

    /// Whether any interface allows PXE.
    pub fn allows_pxe(&self) -> bool {
        self.spec
            .interfaces
            .iter()
            .any(|i| i.netboot.as_ref().and_then(|n| n.allow_pxe) == Some(true))
    }

    /// When netboot was last turned on by [`Hardware::set_allow_pxe_at`] (the
    /// [`NETBOOT_SINCE`] annotation), or `""` for a machine whose netboot was
    /// only ever set in its YAML. Worker tokens are derived from it, so turning
    /// netboot on again issues the machine a new one.
    pub fn netboot_since(&self) -> &str {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(NETBOOT_SINCE))
            .map_or("", String::as_str)
    }

    /// Sets `allowPXE` on every interface; turning it on from off records `now`
    /// as [`Hardware::netboot_since`], which rotates the machine's worker token.
    pub fn set_allow_pxe_at(&mut self, allow: bool, now: jiff::Timestamp) {
        if allow && !self.allows_pxe() {
            self.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(NETBOOT_SINCE.to_string(), now.to_string());
        }
        self.set_allow_pxe(allow);
    }

    /// Sets `allowPXE` on every interface, as Tinkerbell's `toggleAllowNetboot` does.
    pub fn set_allow_pxe(&mut self, allow: bool) {
        for i in &mut self.spec.interfaces {
            i.netboot.get_or_insert_with(Default::default).allow_pxe = Some(allow);
        }
    }

    /// Whether the machine boots UEFI, per its first interface that says.
    pub fn uefi(&self) -> bool {
        self.spec
            .interfaces
            .iter()
            .find_map(|i| i.dhcp.as_ref()?.uefi)
            .unwrap_or(false)
    }

    /// The instance metadata, if any.
    pub fn instance(&self) -> Option<&Instance> {
        self.spec.metadata.as_ref()?.instance.as_ref()
    }
}
