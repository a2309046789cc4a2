//! The `MetadataSource` conformance suite, written once, run by every source
//! over every store it can read: `run_all(source, store).await`. The suite
//! registers machines through `store` and asks the source by source address.
//! A machine gets its own metadata and nobody else's: the key is the caller's
//! address, and an address no machine has gets nothing.

use super::hardware;
use crate::metadata::MetadataSource;
use crate::model::{HardwareMetadata, Instance};
use crate::store::{Precondition, WorkflowStore};
use std::net::IpAddr;

/// Runs every check.
pub async fn run_all(source: &dyn MetadataSource, store: &dyn WorkflowStore) {
    own_metadata_by_address(source, store).await;
    a_stranger_gets_nothing(source, store).await;
}

/// Two machines, each asking from its own address, each get their own
/// instance id, host name, address, keys, user-data and tags.
pub async fn own_metadata_by_address(source: &dyn MetadataSource, store: &dyn WorkflowStore) {
    let mut addresses = Vec::new();
    for (name, n) in [("meta-a", 9501u32), ("meta-b", 9502)] {
        let mut hw = hardware(name, n);
        hw.spec.metadata = Some(HardwareMetadata {
            instance: Some(Instance {
                id: Some(format!("i-{name}")),
                hostname: Some(format!("{name}.lab")),
                ssh_keys: vec![format!("ssh-ed25519 AAAA {name}")],
                tags: vec![format!("rack-{n}")],
                ..Default::default()
            }),
            ..Default::default()
        });
        hw.spec.user_data = Some(format!("#cloud-config\nhostname: {name}\n"));
        addresses.push((name, n, IpAddr::V4(hw.ipv4s()[0])));
        store
            .put(hw.into(), Precondition::Absent)
            .await
            .expect("the suite's Hardware is stored");
    }
    for (name, n, addr) in addresses {
        let md = source
            .metadata_for(addr)
            .await
            .unwrap_or_else(|e| panic!("metadata for {addr}: {e}"))
            .unwrap_or_else(|| panic!("{name} at {addr} gets its metadata"));
        assert_eq!(md.instance_id, format!("i-{name}"));
        assert_eq!(md.hostname.as_deref(), Some(&*format!("{name}.lab")));
        assert_eq!(md.local_ipv4.map(IpAddr::V4), Some(addr));
        assert_eq!(md.public_keys, vec![format!("ssh-ed25519 AAAA {name}")]);
        assert_eq!(md.tags, vec![format!("rack-{n}")]);
        assert_eq!(
            md.user_data.as_deref(),
            Some(&*format!("#cloud-config\nhostname: {name}\n"))
        );
    }
}

/// An address no machine has (IPv4 or IPv6) gets nothing, even while other
/// machines are known.
pub async fn a_stranger_gets_nothing(source: &dyn MetadataSource, store: &dyn WorkflowStore) {
    store
        .put(hardware("meta-known", 9503).into(), Precondition::Absent)
        .await
        .expect("the suite's Hardware is stored");
    for stranger in ["10.250.250.250", "192.0.2.77", "2001:db8::77"] {
        let addr: IpAddr = stranger.parse().expect("a literal address");
        let md = source
            .metadata_for(addr)
            .await
            .unwrap_or_else(|e| panic!("metadata for {addr}: {e}"));
        assert!(md.is_none(), "a stranger at {addr} got {md:?}");
    }
}
