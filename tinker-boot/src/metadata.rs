//! The default metadata source: the Hardware that holds the caller's address.

use async_trait::async_trait;
use std::net::IpAddr;
use std::sync::Arc;
use tinker_core::{InstanceMetadata, MetadataSource, Result, WorkflowStore};

/// Metadata from the store, found by the caller's IP address.
#[derive(Debug, Clone)]
pub struct StoreMetadata {
    store: Arc<dyn WorkflowStore>,
}

impl StoreMetadata {
    /// A source over `store`.
    pub fn new(store: Arc<dyn WorkflowStore>) -> Self {
        StoreMetadata { store }
    }
}

#[async_trait]
impl MetadataSource for StoreMetadata {
    async fn metadata_for(&self, addr: IpAddr) -> Result<Option<InstanceMetadata>> {
        let Some(hw) = self.store.hardware_by_ip(addr).await? else {
            return Ok(None);
        };
        let hw = hw.value;
        let instance = hw.instance();
        let hostname = instance.and_then(|i| i.hostname.clone()).or_else(|| {
            hw.spec
                .interfaces
                .iter()
                .find_map(|i| i.dhcp.as_ref()?.hostname.clone())
        });
        Ok(Some(InstanceMetadata {
            instance_id: instance
                .and_then(|i| i.id.clone())
                .unwrap_or_else(|| hw.metadata.name.clone()),
            hostname,
            local_ipv4: match addr {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            },
            public_keys: instance.map(|i| i.ssh_keys.clone()).unwrap_or_default(),
            user_data: hw
                .spec
                .user_data
                .clone()
                .or_else(|| instance.and_then(|i| i.userdata.clone())),
            vendor_data: hw.spec.vendor_data.clone(),
            tags: instance.map(|i| i.tags.clone()).unwrap_or_default(),
            document: serde_json::to_value(&hw.spec.metadata).unwrap_or_default(),
        }))
    }
}
