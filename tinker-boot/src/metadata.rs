//! The default metadata source: the Hardware that holds the caller's address.

use crate::credentials::ObservedAddresses;
use async_trait::async_trait;
use serde::Deserialize;
use std::net::IpAddr;
use std::sync::Arc;
use tinker_core::{InstanceMetadata, MetadataSource, OperatingSystem, Result, WorkflowStore};

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
        let document = serde_json::to_value(&hw.spec.metadata).unwrap_or_default();
        let view = TootlesView::read(&document, &hw.metadata.name);
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
            // Tootles' rule (the first private IPv4 of `instance.ips`), else
            // the address the machine calls from.
            local_ipv4: view.first_ip(false, 4).or(match addr {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            }),
            public_ipv4: view.first_ip(true, 4),
            public_ipv6: view
                .instance
                .ips
                .iter()
                .find_map(|ip| (ip.family == 6).then(|| ip.address.parse().ok()).flatten()),
            iqn: None,
            plan: view.facility.plan_slug,
            facility: view.facility.facility_code,
            operating_system: OperatingSystem {
                slug: view.instance.operating_system.slug,
                distro: view.instance.operating_system.distro,
                version: view.instance.operating_system.version,
                image_tag: view.instance.operating_system.image_tag,
                license_activation_state: view.instance.operating_system.license_activation.state,
            },
            public_keys: instance.map(|i| i.ssh_keys.clone()).unwrap_or_default(),
            user_data: hw
                .spec
                .user_data
                .clone()
                .or_else(|| instance.and_then(|i| i.userdata.clone())),
            vendor_data: hw.spec.vendor_data.clone(),
            tags: instance.map(|i| i.tags.clone()).unwrap_or_default(),
            document,
            token_sha256: hw
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(tinker_core::model::METADATA_TOKEN_SHA256))
                .map(|h| h.trim().to_ascii_lowercase()),
            machine: Some(format!("{}/{}", hw.metadata.namespace(), hw.metadata.name)),
        }))
    }
}

/// The parts of `spec.metadata` Tootles reads besides the typed ones (they sit
/// in the model's unknown fields): `instance.ips`, `instance.operating_system`
/// and `facility`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TootlesView {
    instance: InstanceView,
    facility: FacilityView,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct InstanceView {
    ips: Vec<IpView>,
    operating_system: OsView,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct IpView {
    address: String,
    family: i64,
    public: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OsView {
    slug: Option<String>,
    distro: Option<String>,
    version: Option<String>,
    image_tag: Option<String>,
    license_activation: LicenseView,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LicenseView {
    state: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FacilityView {
    plan_slug: Option<String>,
    facility_code: Option<String>,
}

impl TootlesView {
    /// Reads `spec.metadata`; one whose fields have the wrong types serves
    /// none of them (and says so), rather than failing the whole answer.
    fn read(document: &serde_json::Value, name: &str) -> Self {
        if document.is_null() {
            return TootlesView::default();
        }
        serde_json::from_value(document.clone()).unwrap_or_else(|e| {
            tracing::warn!(hardware = name, error = %e, "spec.metadata: ips, operating_system or facility unreadable; not served");
            TootlesView::default()
        })
    }

    /// The first IPv4 address of `instance.ips` that is public or not, as
    /// Tootles picks them.
    fn first_ip(&self, public: bool, family: i64) -> Option<std::net::Ipv4Addr> {
        self.instance
            .ips
            .iter()
            .filter(|ip| ip.family == family && ip.public == public)
            .find_map(|ip| ip.address.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use tinker_core::Precondition;
    use tinker_core::model::Hardware;
    use tinker_core::testing::mac;

    async fn source(hw: Hardware) -> StoreMetadata {
        let store: Arc<dyn WorkflowStore> = Arc::new(tinker_store::MemoryStore::new());
        store.put(hw.into(), Precondition::Any).await.unwrap();
        StoreMetadata::new(store)
    }

    #[tokio::test]
    async fn reads_the_fields_tootles_reads() {
        let mut hw = Hardware::new("sm01", mac(1), Ipv4Addr::new(10, 0, 0, 7), "255.0.0.0");
        hw.spec.metadata = Some(
            serde_json::from_value(serde_json::json!({
                "facility": {"plan_slug": "c3.small.x86", "facility_code": "onprem"},
                "instance": {
                    "id": "i-sm01", "hostname": "sm01.lab",
                    "ips": [
                        {"address": "not an address", "family": 4, "public": true},
                        {"address": "2001:db8::7", "family": 6},
                        {"address": "192.0.2.7", "family": 4, "public": true},
                        {"address": "10.1.0.7", "family": 4, "public": false},
                        {"address": "10.1.0.8", "family": 4, "public": false}
                    ],
                    "operating_system": {"slug": "ubuntu_22_04", "distro": "ubuntu", "version": "22.04",
                        "image_tag": "abc", "license_activation": {"state": "unlicensed"}},
                    "ssh_keys": ["ssh-ed25519 AAAA a", "ssh-ed25519 BBBB b"],
                    "tags": ["rack-1"]
                }
            }))
            .unwrap(),
        );
        let m = source(hw)
            .await
            .metadata_for(IpAddr::from([10, 0, 0, 7]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.instance_id, "i-sm01");
        assert_eq!(m.hostname.as_deref(), Some("sm01.lab"));
        assert_eq!(m.plan.as_deref(), Some("c3.small.x86"));
        assert_eq!(m.facility.as_deref(), Some("onprem"));
        assert_eq!(m.public_ipv4, Some(Ipv4Addr::new(192, 0, 2, 7)));
        assert_eq!(m.local_ipv4, Some(Ipv4Addr::new(10, 1, 0, 7)));
        assert_eq!(m.public_ipv6, Some("2001:db8::7".parse().unwrap()));
        assert_eq!(m.public_keys.len(), 2);
        assert_eq!(m.tags, ["rack-1"]);
        let os = &m.operating_system;
        assert_eq!(
            (
                os.slug.as_deref(),
                os.distro.as_deref(),
                os.version.as_deref(),
                os.image_tag.as_deref(),
                os.license_activation_state.as_deref()
            ),
            (
                Some("ubuntu_22_04"),
                Some("ubuntu"),
                Some("22.04"),
                Some("abc"),
                Some("unlicensed")
            )
        );
    }

    #[tokio::test]
    async fn without_them_the_reservation_and_the_name_stand_in() {
        let hw = Hardware::new("bare", mac(2), Ipv4Addr::new(10, 0, 0, 8), "255.0.0.0");
        let m = source(hw)
            .await
            .metadata_for(IpAddr::from([10, 0, 0, 8]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.instance_id, "bare");
        assert_eq!(m.hostname.as_deref(), Some("bare"));
        assert_eq!(m.local_ipv4, Some(Ipv4Addr::new(10, 0, 0, 8)));
        assert_eq!((m.public_ipv4, m.public_ipv6), (None, None));
        assert_eq!(m.operating_system, OperatingSystem::default());
        assert!(m.plan.is_none() && m.facility.is_none() && m.iqn.is_none());
    }

    #[tokio::test]
    async fn ill_typed_extras_are_dropped_not_fatal() {
        let mut hw = Hardware::new("odd", mac(3), Ipv4Addr::new(10, 0, 0, 9), "255.0.0.0");
        hw.spec.metadata = Some(
            serde_json::from_value(serde_json::json!({
                "facility": "not a map",
                "instance": {"id": "i-odd"}
            }))
            .unwrap(),
        );
        let m = source(hw)
            .await
            .metadata_for(IpAddr::from([10, 0, 0, 9]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.instance_id, "i-odd");
        assert!(m.facility.is_none());
    }
}
