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
    /// Host name.
    pub hostname: Option<String>,
    /// Its IPv4 address.
    pub local_ipv4: Option<std::net::Ipv4Addr>,
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
