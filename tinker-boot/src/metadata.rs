//! The default metadata source: the Hardware that holds the caller's address.

use crate::credentials::ObservedAddresses;
use async_trait::async_trait;
use std::net::IpAddr;
use std::sync::Arc;
use tinker_core::{InstanceMetadata, MetadataSource, Result, WorkflowStore};

/// Metadata from the store, found by the caller's IP address: the Hardware that
/// reserves it, or (proxyDHCP mode, where another server hands out addresses)
/// the machine whose own DHCP REQUEST last asked for it.
#[derive(Debug, Clone)]
pub struct StoreMetadata {
    store: Arc<dyn WorkflowStore>,
    observed: Option<Arc<ObservedAddresses>>,
}

impl StoreMetadata {
    /// A source over `store`, by reserved addresses only.
    pub fn new(store: Arc<dyn WorkflowStore>) -> Self {
        StoreMetadata {
            store,
            observed: None,
        }
    }

    /// Also answers a caller whose address a machine asked for in its own DHCP
    /// traffic (proxyDHCP mode). Weaker than a reservation: a host that sends a
    /// REQUEST with another machine's MAC is taken for it; see the README's
    /// Security section.
    pub fn with_observed_addresses(mut self, observed: Arc<ObservedAddresses>) -> Self {
        self.observed = Some(observed);
        self
    }
}

#[async_trait]
impl MetadataSource for StoreMetadata {
    async fn metadata_for(&self, addr: IpAddr) -> Result<Option<InstanceMetadata>> {
        let hw = match self.store.hardware_by_ip(addr).await? {
            Some(hw) => hw,
            None => match self.observed.as_ref().and_then(|o| o.mac_of(addr)) {
                Some(mac) => match self.store.hardware_by_mac(mac).await? {
                    Some(hw) => hw,
                    None => return Ok(None),
                },
                None => return Ok(None),
            },
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
            token_sha256: hw
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(tinker_core::model::METADATA_TOKEN_SHA256))
                .map(|h| h.trim().to_ascii_lowercase()),
        }))
    }
}
