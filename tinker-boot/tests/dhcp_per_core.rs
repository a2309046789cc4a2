//! The DHCP server's per-core path (issue 17): the boot responder's MAC →
//! Hardware cache (no store lookup per packet, yet a changed reservation is
//! answered at once, without a restart), and overload shed by silence and
//! counted: requests beyond the ones waiting on the responder, and datagrams
//! the kernel dropped from a full receive queue.

use async_trait::async_trait;
use dhcproto::v4::MessageType;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tinker_boot::dhcp::client::{self, PxeClient};
use tinker_boot::dhcp::{DhcpConfig, DhcpServer, DhcpStats, Mode};
use tinker_boot::{BootConfig, StoreBootResponder};
use tinker_core::boot::{BootDecision, BootRequest, BootResponder};
use tinker_core::model::{Hardware, Kind, Object, ObjectKey};
use tinker_core::state::WorkflowEvent;
use tinker_core::store::{Applied, Assignment, Change, MachineEvent};
use tinker_core::{MacAddr, Precondition, Versioned, WorkflowStore};
use tinker_store::MemoryStore;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const KNOWN: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
const NEW: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 2]);

/// A memory store that counts its lookups by MAC.
#[derive(Debug, Default)]
struct Counting {
    inner: MemoryStore,
    by_mac: AtomicU64,
}

#[async_trait]
impl WorkflowStore for Counting {
    async fn put(&self, o: Object, p: Precondition) -> tinker_core::Result<u64> {
        self.inner.put(o, p).await
    }
    async fn get(&self, k: &ObjectKey) -> tinker_core::Result<Option<Versioned<Object>>> {
        self.inner.get(k).await
    }
    async fn list(&self, kind: Kind) -> tinker_core::Result<Vec<Versioned<Object>>> {
        self.inner.list(kind).await
    }
    async fn delete(&self, k: &ObjectKey, p: Precondition) -> tinker_core::Result<()> {
        self.inner.delete(k, p).await
    }
    async fn hardware_by_mac(
        &self,
        mac: MacAddr,
    ) -> tinker_core::Result<Option<Versioned<Hardware>>> {
        self.by_mac.fetch_add(1, Relaxed);
        self.inner.hardware_by_mac(mac).await
    }
    async fn hardware_by_ip(&self, ip: IpAddr) -> tinker_core::Result<Option<Versioned<Hardware>>> {
        self.inner.hardware_by_ip(ip).await
    }
    async fn apply_event(
        &self,
        k: &ObjectKey,
        e: &WorkflowEvent,
        now: jiff::Timestamp,
    ) -> tinker_core::Result<Applied> {
        self.inner.apply_event(k, e, now).await
    }
    async fn claim_next_action_for_request(
        &self,
        worker: &str,
        request: Option<&str>,
        now: jiff::Timestamp,
    ) -> tinker_core::Result<Option<Assignment>> {
        self.inner
            .claim_next_action_for_request(worker, request, now)
            .await
    }
    async fn append_event(&self, e: MachineEvent) -> tinker_core::Result<()> {
        self.inner.append_event(e).await
    }
    async fn events(&self, machine: &str, limit: usize) -> tinker_core::Result<Vec<MachineEvent>> {
        self.inner.events(machine, limit).await
    }
    fn watch(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.inner.watch()
    }
}

fn hardware(name: &str, mac: MacAddr, last: u8) -> Object {
    let mut hw = Hardware::new(name, mac, Ipv4Addr::new(10, 77, 0, last), "255.255.255.0");
    hw.set_allow_pxe(true);
    hw.into()
}

fn responder(store: Arc<dyn WorkflowStore>) -> StoreBootResponder {
    StoreBootResponder::new(
        store,
        BootConfig {
            tftp_server: SERVER,
            http_base: "http://10.77.0.1:8080".into(),
            default_lease_seconds: 3600,
            record_events: false,
        },
    )
}

fn src() -> SocketAddr {
    "0.0.0.0:68".parse().unwrap()
}

fn discover(mac: MacAddr, xid: u32) -> Vec<u8> {
    client::encode(&PxeClient::new(mac, 0).message(MessageType::Discover, xid))
}

/// The address offered to `mac`, if any.
async fn offered(s: &DhcpServer, mac: MacAddr, xid: u32) -> Option<Ipv4Addr> {
    let out = s.handle(&discover(mac, xid), src(), false).await?;
    assert_eq!(out.kind, MessageType::Offer);
    Some(client::decode(&out.bytes).unwrap().yiaddr())
}

#[tokio::test]
async fn a_changed_reservation_is_answered_with_the_new_address_without_restart() {
    let store = Arc::new(Counting::default());
    store
        .put(hardware("m1", KNOWN, 10), Precondition::Absent)
        .await
        .unwrap();
    let responder = responder(store.clone());
    let cache = responder.cache().clone();
    let s = DhcpServer::new(
        DhcpConfig::new(Mode::Reservation, SERVER),
        Arc::new(responder),
    );

    assert_eq!(
        offered(&s, KNOWN, 1).await,
        Some(Ipv4Addr::new(10, 77, 0, 10))
    );
    assert_eq!(
        offered(&s, KNOWN, 2).await,
        Some(Ipv4Addr::new(10, 77, 0, 10))
    );
    assert_eq!(offered(&s, NEW, 3).await, None, "not in the inventory");
    assert_eq!(offered(&s, NEW, 4).await, None);
    assert_eq!(
        store.by_mac.load(Relaxed),
        2,
        "one store lookup per MAC, not one per packet"
    );
    assert_eq!(cache.len(), (1, 1));

    // The operator moves the machine to another address: the next packet gets it.
    store
        .put(hardware("m1", KNOWN, 20), Precondition::Any)
        .await
        .unwrap();
    assert_eq!(
        offered(&s, KNOWN, 5).await,
        Some(Ipv4Addr::new(10, 77, 0, 20))
    );
    // A machine added to the inventory is answered though it was unknown a
    // packet ago.
    store
        .put(hardware("m2", NEW, 30), Precondition::Absent)
        .await
        .unwrap();
    assert_eq!(
        offered(&s, NEW, 6).await,
        Some(Ipv4Addr::new(10, 77, 0, 30))
    );
    // And one deleted is no longer answered.
    store
        .delete(
            &ObjectKey::new(Kind::Hardware, "default", "m1"),
            Precondition::Any,
        )
        .await
        .unwrap();
    assert_eq!(offered(&s, KNOWN, 7).await, None);
    assert_eq!(cache.invalidations(), 3);
}

/// A boot responder that never decides: every request waits on it.
#[derive(Debug)]
struct Stuck;

#[async_trait]
impl BootResponder for Stuck {
    async fn decide(&self, _: &BootRequest) -> tinker_core::Result<BootDecision> {
        std::future::pending().await
    }
}

fn made_up(i: u32) -> MacAddr {
    let b = i.to_be_bytes();
    MacAddr([2, 0x42, b[0], b[1], b[2], b[3]])
}

/// Waits (no bound on speed asserted) until `done` holds of the counters.
async fn until(stats: &DhcpStats, done: impl Fn(&DhcpStats) -> bool) {
    for _ in 0..1200 {
        if done(stats) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_those_waiting_are_shed_without_an_answer_and_counted() {
    let s = DhcpServer::new(DhcpConfig::new(Mode::Reservation, SERVER), Arc::new(Stuck))
        .with_max_in_flight(3);
    let stats = s.stats();
    let socket = tinker_boot::dhcp::server::bind_udp("127.0.0.1:0".parse().unwrap(), None).unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(s.serve(socket, None, std::future::pending()));
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..10 {
        client
            .send_to(&discover(made_up(i), i), addr)
            .await
            .unwrap();
    }
    until(&stats, |s| s.received.load(Relaxed) == 10).await;
    assert_eq!(stats.received.load(Relaxed), 10);
    assert_eq!(stats.overload_drops.load(Relaxed), 7);
    assert_eq!(stats.shed.load(Relaxed), 7);
    assert_eq!(stats.naks.load(Relaxed), 0, "shed by silence, never a NAK");
    let mut buf = [0u8; 1500];
    assert!(
        client.try_recv_from(&mut buf).is_err(),
        "nothing is answered while the responder has not decided"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_the_kernel_dropped_from_a_full_queue_are_counted_as_shed() {
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let s = DhcpServer::new(
        DhcpConfig::new(Mode::Reservation, SERVER),
        Arc::new(responder(store)),
    );
    let stats = s.stats();
    // The smallest receive queue the kernel allows, filled before the server
    // reads anything: most of the flood is dropped by the kernel.
    let socket = tinker_boot::dhcp::server::bind_udp("127.0.0.1:0".parse().unwrap(), None).unwrap();
    socket2::SockRef::from(&socket)
        .set_recv_buffer_size(1)
        .unwrap();
    let addr = socket.local_addr().unwrap();
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let flood = 500u32;
    for i in 0..flood {
        client
            .send_to(&discover(made_up(i), i), addr)
            .await
            .unwrap();
    }
    tokio::spawn(s.serve(socket, None, std::future::pending()));
    // The kernel reports its count on the next datagram it queues: send one at
    // a time until every datagram sent is either read or counted as dropped.
    let mut sent = flood;
    for i in 0..200 {
        let accounted = stats.received.load(Relaxed) + stats.kernel_drops.load(Relaxed);
        if accounted == u64::from(sent) {
            break;
        }
        client
            .send_to(&discover(made_up(flood + i), flood + i), addr)
            .await
            .unwrap();
        sent += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let dropped = stats.kernel_drops.load(Relaxed);
    assert!(dropped > 0, "a 500-datagram flood into the smallest queue");
    assert_eq!(stats.received.load(Relaxed) + dropped, u64::from(sent));
    assert_eq!(stats.shed.load(Relaxed), dropped);
}
