//! Metadata for the right machine only: in proxyDHCP mode a machine is bound to
//! the address its own REQUEST asks for; an optional per-machine token closes
//! what an address alone leaves open.

use dhcproto::v4::{DhcpOption, MessageType};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tinker_boot::credentials::ObservedAddresses;
use tinker_boot::dhcp::client::{PxeClient, encode};
use tinker_boot::dhcp::{DhcpConfig, DhcpServer, Mode};
use tinker_boot::http::{HttpConfig, HttpServer, client};
use tinker_boot::{BootConfig, StoreBootResponder, StoreMetadata};
use tinker_core::model::{Hardware, METADATA_TOKEN_SHA256};
use tinker_core::store::Precondition;
use tinker_core::testing::mac;
use tinker_core::{MacAddr, WorkflowStore};
use tinker_store::MemoryStore;

/// A Hardware without a reserved address, as in proxyDHCP mode.
fn unreserved(name: &str, mac: MacAddr) -> Hardware {
    let mut hw = Hardware::new(name, mac, Ipv4Addr::UNSPECIFIED, "255.0.0.0");
    for i in &mut hw.spec.interfaces {
        if let Some(d) = i.dhcp.as_mut() {
            d.ip = None;
        }
    }
    hw.spec.metadata = Some(
        serde_json::from_value(serde_json::json!({"instance": {"id": format!("i-{name}")}}))
            .unwrap(),
    );
    hw
}

async fn http(store: Arc<dyn WorkflowStore>, observed: Arc<ObservedAddresses>) -> SocketAddr {
    let mut config = HttpConfig::new(store.clone());
    config.metadata = Arc::new(StoreMetadata::new(store).with_observed_addresses(observed.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(HttpServer::new(config).serve(listener, std::future::pending()));
    addr
}

async fn instance_id(addr: SocketAddr, from: [u8; 4], token: Option<&str>) -> (u16, String) {
    let headers: Vec<(&str, &str)> = token
        .map(|t| vec![("x-tinker-metadata-token", t)])
        .unwrap_or_default();
    let r = client::request(
        addr,
        Some(IpAddr::from(from)),
        client::Method::GET,
        "/2009-04-04/meta-data/instance-id",
        &headers,
        Vec::new(),
    )
    .await
    .unwrap();
    (r.status, r.text())
}

#[tokio::test]
async fn proxy_mode_binds_a_machine_to_the_address_its_own_request_asks_for() {
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    store
        .put(unreserved("nuc1", mac(1)).into(), Precondition::Any)
        .await
        .unwrap();
    let observed = Arc::<ObservedAddresses>::default();
    let dhcp = DhcpServer::new(
        DhcpConfig::new(Mode::Proxy, Ipv4Addr::LOCALHOST),
        Arc::new(StoreBootResponder::new(
            store.clone(),
            BootConfig {
                tftp_server: Ipv4Addr::LOCALHOST,
                http_base: "http://127.0.0.1".into(),
                default_lease_seconds: 600,
                record_events: false,
            },
        )),
    )
    .with_observed_addresses(observed.clone());
    let addr = http(store, observed.clone()).await;
    // Before the machine has said anything, its address is nobody's.
    assert_eq!(instance_id(addr, [127, 0, 3, 7], None).await.0, 404);
    // The machine's REQUEST to the router (broadcast; the proxy sees it).
    let mut request = PxeClient::new(mac(1), 0).message(MessageType::Request, 7);
    request
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(127, 0, 3, 7)));
    let _ = dhcp
        .handle(
            &encode(&request),
            SocketAddr::from(([0, 0, 0, 0], 68)),
            false,
        )
        .await;
    assert_eq!(observed.get(mac(1)), Some(IpAddr::from([127, 0, 3, 7])));
    assert_eq!(
        instance_id(addr, [127, 0, 3, 7], None).await,
        (200, "i-nuc1".to_string())
    );
    assert_eq!(
        instance_id(addr, [127, 0, 3, 8], None).await.0,
        404,
        "another address is not the machine"
    );
}

#[tokio::test]
async fn a_metadata_token_closes_what_an_address_leaves_open() {
    use sha2::Digest;
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let mut hw = Hardware::new("nuc2", mac(2), Ipv4Addr::new(127, 0, 3, 9), "255.0.0.0");
    hw.spec.metadata =
        Some(serde_json::from_value(serde_json::json!({"instance": {"id": "i-nuc2"}})).unwrap());
    let hash: String = sha2::Sha256::digest(b"metadata-s3cret")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    hw.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(METADATA_TOKEN_SHA256.into(), hash);
    store.put(hw.into(), Precondition::Any).await.unwrap();
    let addr = http(store, Arc::default()).await;
    let from = [127, 0, 3, 9];
    let (code, text) = instance_id(addr, from, None).await;
    assert_eq!(code, 401, "{text}");
    assert!(!text.contains("i-nuc2"));
    assert_eq!(instance_id(addr, from, Some("wrong")).await.0, 401);
    assert_eq!(
        instance_id(addr, from, Some("metadata-s3cret")).await,
        (200, "i-nuc2".to_string())
    );
}
