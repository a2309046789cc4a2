//! Metadata for the right machine only: in proxyDHCP mode a machine is bound to
//! the address its own REQUEST asks for; an optional per-machine token closes
//! what an address alone leaves open.

use dhcproto::v4::{DhcpOption, MessageType};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tinker_boot::credentials::ObservedAddresses;
use tinker_boot::dhcp::client::{PxeClient, encode};
use tinker_boot::dhcp::{DhcpConfig, DhcpServer, Mode};
use tinker_boot::http::{HttpConfig, HttpServer, client};
use tinker_boot::{BootConfig, StoreBootResponder, StoreMetadata};
use tinker_core::clock::ManualClock;
use tinker_core::model::{Hardware, METADATA_TOKEN_SHA256};
use tinker_core::store::{EventKind, EventSource, Precondition};
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

/// Two machines with Tootles' fields, on loopback addresses of their own.
async fn two_machines() -> Arc<dyn WorkflowStore> {
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    for (name, n, last) in [("a", 1, 20), ("b", 2, 21)] {
        let mut hw = Hardware::new(name, mac(n), Ipv4Addr::new(127, 0, 3, last), "255.0.0.0");
        hw.spec.metadata = Some(
            serde_json::from_value(serde_json::json!({
                "facility": {"plan_slug": format!("plan-{name}"), "facility_code": "onprem"},
                "instance": {"id": format!("i-{name}"), "hostname": format!("host-{name}"),
                             "ssh_keys": [format!("ssh-ed25519 AAAA {name}")]}
            }))
            .unwrap(),
        );
        hw.spec.user_data = Some(format!("#cloud-config\nhostname: host-{name}\n"));
        store.put(hw.into(), Precondition::Any).await.unwrap();
    }
    store
}

/// Routes that answer everything: a metadata-only server must never reach them.
#[derive(Debug)]
struct Everything;

#[async_trait::async_trait]
impl tinker_boot::http::ExtraRoutes for Everything {
    async fn handle(
        &self,
        _req: hyper::Request<hyper::body::Incoming>,
        _peer: IpAddr,
    ) -> Result<hyper::Response<tinker_boot::http::Body>, hyper::Request<hyper::body::Incoming>>
    {
        use http_body_util::BodyExt;
        let body = http_body_util::Full::new(hyper::body::Bytes::from("extra"))
            .map_err(|never| match never {})
            .boxed();
        Ok(hyper::Response::new(body))
    }
}

async fn start(server: HttpServer) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener, std::future::pending()));
    addr
}

async fn get(addr: SocketAddr, from: [u8; 4], path: &str) -> (u16, String) {
    let r = client::request(
        addr,
        Some(IpAddr::from(from)),
        client::Method::GET,
        path,
        &[],
        Vec::new(),
    )
    .await
    .unwrap();
    (r.status, r.text())
}

const A: [u8; 4] = [127, 0, 3, 20];
const B: [u8; 4] = [127, 0, 3, 21];
const NOBODY: [u8; 4] = [127, 0, 3, 22];

#[tokio::test]
async fn the_tootles_tree_serves_the_callers_own_id_only() {
    let store = two_machines().await;
    let server = HttpServer::new(HttpConfig::new(store)).with_tootles_instance_endpoint(true);
    let stats = server.stats();
    let addr = start(server).await;
    let tree = "/tootles/instanceID/i-a/2009-04-04";
    assert_eq!(
        get(addr, A, &format!("{tree}/meta-data/hostname")).await,
        (200, "host-a".into())
    );
    assert_eq!(
        get(addr, A, &format!("{tree}/meta-data/plan/")).await,
        (200, "plan-a".into())
    );
    assert_eq!(
        get(addr, A, &format!("{tree}/")).await,
        (200, "meta-data/\nuser-data".into())
    );
    assert_eq!(
        get(addr, A, &format!("{tree}/user-data")).await,
        (200, "#cloud-config\nhostname: host-a\n".into())
    );
    // Another machine naming a's id, or an id nobody has: the same refusal.
    for path in [
        format!("{tree}/meta-data/hostname"),
        format!("{tree}/user-data"),
        format!("{tree}/meta-data"),
        "/tootles/instanceID/i-nobody/2009-04-04/meta-data/hostname".to_string(),
    ] {
        let (code, body) = get(addr, B, &path).await;
        assert_eq!(code, 403, "{path}");
        assert!(!body.contains("host-a") && !body.contains("cloud-config"));
    }
    assert_eq!(stats.metadata_refused.load(Ordering::Relaxed), 4);
    // An address no machine has gets nothing, listings included.
    for path in [
        format!("{tree}/meta-data/hostname"),
        "/2009-04-04".to_string(),
        "/2009-04-04/meta-data/".to_string(),
        "/metadata".to_string(),
    ] {
        assert_eq!(get(addr, NOBODY, &path).await.0, 404, "{path}");
    }
    // Off, as by default in Tootles: no such tree.
    let off = start(HttpServer::new(HttpConfig::new(two_machines().await))).await;
    assert_eq!(
        get(off, A, &format!("{tree}/meta-data/hostname")).await.0,
        404
    );
    assert_eq!(
        get(off, A, "/2009-04-04/meta-data/hostname").await,
        (200, "host-a".into())
    );
}

#[tokio::test]
async fn the_hegel_listener_serves_metadata_and_nothing_else() {
    let store = two_machines().await;
    let config = HttpConfig {
        extra: Some(Arc::new(Everything)),
        ..HttpConfig::new(store)
    };
    let full = start(HttpServer::new(config.clone())).await;
    assert_eq!(get(full, A, "/anything").await, (200, "extra".into()));
    let hegel = start(HttpServer::new(config).metadata_only()).await;
    assert_eq!(
        get(hegel, A, "/2009-04-04/meta-data/instance-id").await,
        (200, "i-a".into())
    );
    assert_eq!(
        get(hegel, B, "/2009-04-04/meta-data/public-keys").await,
        (200, "ssh-ed25519 AAAA b".into())
    );
    assert_eq!(
        get(hegel, A, "/metadata").await.1,
        r#"{"metadata":{"instance":{"storage":{"disks":null,"filesystems":null}}}}"#
    );
    assert_eq!(get(hegel, A, "/healthz").await.0, 200);
    for path in [
        "/anything",
        "/auto.ipxe",
        "/ipxe/binary/ipxe.efi",
        "/assets/vmlinuz",
    ] {
        assert_eq!(get(hegel, A, path).await.0, 404, "{path}");
    }
}

/// The paths of the "metadata served" events in `machine`'s log, once the
/// background writes are in: asked until `at_least` are there (a bounded
/// number of times), then once more after any write still on its way landed,
/// so that too many would be seen.
async fn metadata_reads(
    store: &Arc<dyn WorkflowStore>,
    machine: &str,
    at_least: usize,
) -> Vec<String> {
    for _ in 0..200 {
        if metadata_reads_now(store, machine).await.len() >= at_least {
            break;
        }
        tokio::task::yield_now().await;
    }
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    metadata_reads_now(store, machine).await
}

async fn metadata_reads_now(store: &Arc<dyn WorkflowStore>, machine: &str) -> Vec<String> {
    let events = store.events(machine, 1000).await.unwrap();
    events
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::MetadataServed { path } => {
                assert_eq!(e.source, EventSource::Http);
                Some(path)
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_machine_reading_its_metadata_is_in_its_event_log_a_burst_once() {
    let store = two_machines().await;
    let clock = Arc::new(ManualClock::new(
        jiff::Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    let server = HttpServer::new(HttpConfig::new(store.clone()))
        .with_clock(clock.clone())
        .with_tootles_instance_endpoint(true);
    // Hegel's port shares the control plane's server, as there.
    let hegel = start(server.clone().metadata_only()).await;
    let addr = start(server).await;
    assert_eq!(
        get(addr, A, "/2009-04-04/meta-data/hostname").await,
        (200, "host-a".into())
    );
    assert_eq!(
        metadata_reads(&store, "default/a", 1).await,
        ["/2009-04-04/meta-data/hostname"]
    );
    // cloud-init reads dozens of paths, by every tree: still one event.
    for _ in 0..20 {
        for path in [
            "/2009-04-04/user-data",
            "/latest/meta-data/",
            "/metadata",
            "/tootles/instanceID/i-a/2009-04-04/meta-data/plan",
        ] {
            assert_eq!(get(addr, A, path).await.0, 200, "{path}");
        }
        assert_eq!(
            get(hegel, A, "/2009-04-04/meta-data/instance-id").await.0,
            200
        );
    }
    // Refused and unknown callers record nothing.
    assert_eq!(
        get(addr, B, "/tootles/instanceID/i-a/2009-04-04/meta-data/plan")
            .await
            .0,
        403
    );
    assert_eq!(get(addr, NOBODY, "/metadata").await.0, 404);
    assert_eq!(metadata_reads(&store, "default/a", 1).await.len(), 1);
    assert!(metadata_reads_now(&store, "default/b").await.is_empty());
    // Once the window has passed, the next read is recorded again, by any tree.
    clock.advance(std::time::Duration::from_secs(11));
    assert_eq!(get(hegel, A, "/metadata").await.0, 200);
    assert_eq!(
        metadata_reads(&store, "default/a", 2).await,
        ["/2009-04-04/meta-data/hostname", "/metadata"]
    );
    // Another machine has its own.
    assert_eq!(get(addr, B, "/2009-04-04/user-data").await.0, 200);
    assert_eq!(
        metadata_reads(&store, "default/b", 1).await,
        ["/2009-04-04/user-data"]
    );
}
