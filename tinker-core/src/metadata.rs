//! `MetadataSource`: the metadata, user-data and vendor-data of the machine behind
//! a source address, as the metadata service (EC2 paths, Tinkerbell's `/metadata`)
//! serves it. A machine gets its own data and nobody else's: the lookup key is the
//! caller's address, never something the caller says about itself.

use crate::error::Result;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::net::IpAddr;

/// What the installed OS may learn about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceMetadata {
    /// EC2 `instance-id`.
    pub instance_id: String,
    /// Host name (also EC2 `local-hostname`, as Tootles answers it).
    pub hostname: Option<String>,
    /// Its private IPv4 address (EC2 `local-ipv4`).
    pub local_ipv4: Option<std::net::Ipv4Addr>,
    /// Its public IPv4 address (EC2 `public-ipv4`).
    #[serde(default)]
    pub public_ipv4: Option<std::net::Ipv4Addr>,
    /// Its IPv6 address (EC2 `public-ipv6`).
    #[serde(default)]
    pub public_ipv6: Option<std::net::Ipv6Addr>,
    /// The iSCSI qualified name (EC2 `iqn`; Tootles never fills it).
    #[serde(default)]
    pub iqn: Option<String>,
    /// The hardware plan (Equinix heritage: `facility.plan_slug`).
    #[serde(default)]
    pub plan: Option<String>,
    /// The site (Equinix heritage: `facility.facility_code`).
    #[serde(default)]
    pub facility: Option<String>,
    /// The operating system to install (`instance.operating_system`).
    #[serde(default)]
    pub operating_system: OperatingSystem,
    /// SSH public keys.
    pub public_keys: Vec<String>,
    /// cloud-init user-data.
    pub user_data: Option<String>,
    /// cloud-init vendor-data.
    pub vendor_data: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Tinkerbell's `/metadata` document (the Hardware's `spec.metadata`).
    pub document: serde_json::Value,
    /// When set, the metadata is served only to a caller that also presents the
    /// token whose SHA-256 this is (lower-case hex), as the
    /// `X-Tinker-Metadata-Token` header: for networks where the address alone
    /// is weak proof (proxyDHCP mode). Never serialized.
    #[serde(skip)]
    pub token_sha256: Option<String>,
    /// The machine this is, `namespace/name` of its Hardware, when the source
    /// knows it: the metadata service records its reads in that machine's
    /// event log. Never serialized.
    #[serde(skip)]
    pub machine: Option<String>,
}

/// The operating system a machine is to run, as Tinkerbell's Hardware names it
/// (`spec.metadata.instance.operating_system`) and Tootles serves it under
/// `meta-data/operating-system/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatingSystem {
    /// `slug`, such as `ubuntu_22_04`.
    pub slug: Option<String>,
    /// `distro`, such as `ubuntu`.
    pub distro: Option<String>,
    /// `version`, such as `22.04`.
    pub version: Option<String>,
    /// `image_tag`.
    pub image_tag: Option<String>,
    /// `license_activation.state`.
    pub license_activation_state: Option<String>,
}

/// Finds a machine's metadata by its source address.
///
/// ```
/// use async_trait::async_trait;
/// use std::net::IpAddr;
/// use std::sync::Arc;
/// use tinker_core::{InstanceMetadata, MetadataSource};
///
/// #[derive(Debug)]
/// struct One(IpAddr, InstanceMetadata);
///
/// #[async_trait]
/// impl MetadataSource for One {
///     async fn metadata_for(&self, addr: IpAddr) -> tinker_core::Result<Option<InstanceMetadata>> {
///         Ok((addr == self.0).then(|| self.1.clone()))
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let me: IpAddr = "192.0.2.10".parse().unwrap();
/// let src: Arc<dyn MetadataSource> = Arc::new(One(me, InstanceMetadata { instance_id: "i-1".into(), ..Default::default() }));
/// assert_eq!(src.metadata_for(me).await.unwrap().unwrap().instance_id, "i-1");
/// assert!(src.metadata_for("192.0.2.11".parse().unwrap()).await.unwrap().is_none());
/// # });
/// ```
#[async_trait]
pub trait MetadataSource: Send + Sync + Debug + 'static {
    /// The metadata of the machine at `addr`, or `None` for an unknown address.
    async fn metadata_for(&self, addr: IpAddr) -> Result<Option<InstanceMetadata>>;
}
