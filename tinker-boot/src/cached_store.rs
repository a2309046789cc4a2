//! [`CachedHardwareStore`]: a store whose Hardware lookups by MAC and by IP
//! address are answered from memory, for the services that find a machine by
//! who is calling (the TFTP log, the iPXE script, the metadata service,
//! syslog, and behind their own caches the boot responder and the worker
//! API). In the PostgreSQL boot storm of issue 17 those lookups were four to
//! five round trips per machine, each service asking once for each machine it
//! had not seen. The first lookup reads the whole inventory in one query and
//! caches every Hardware under each of its MACs and addresses; later misses
//! (a Hardware created or changed since) read one each.
//!
//! Kept fresh as [`HardwareCache`] is, by the store's change feed (drained
//! before every lookup), and, for writes made through this store, at once: a
//! `put` or `delete` of a Hardware drops what is cached of it before it
//! returns, so a writer reads its own write. Another replica's write is seen
//! when its announcement arrives (with PostgreSQL, a NOTIFY that follows the
//! commit, within milliseconds while the database answers). A Hardware read more than [`MAX_CACHED_AGE`] ago is read again,
//! so a feed that stopped without saying so (a lost LISTEN connection) leaves
//! answers at most that old. Only found Hardware is cached: a MAC or address
//! nobody holds is asked of the store each time, so made-up callers cannot
//! fill the cache (it holds at most the inventory, twice).

use crate::hardware_cache::{Cached, HardwareCache};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tinker_core::clock::{SharedClock, SystemClock};
use tinker_core::model::{Hardware, Kind, Object, ObjectKey, Workflow};
use tinker_core::state::WorkflowEvent;
use tinker_core::store::{
    Applied, Assignment, Change, IndexTerm, MachineEvent, Precondition, Versioned, index_terms,
};
use tinker_core::{MacAddr, Result, WorkflowStore};
use tokio::sync::broadcast;

/// The longest a cached Hardware answers a lookup before it is read again.
pub const MAX_CACHED_AGE: Duration = Duration::from_secs(30);

/// What is kept of a found Hardware: it, and when it was read.
type Entry = (Arc<Versioned<Hardware>>, jiff::Timestamp);

/// A [`WorkflowStore`] that answers [`hardware_by_mac`] and [`hardware_by_ip`]
/// from memory when it can, and passes everything else to the store it wraps.
///
/// [`hardware_by_mac`]: WorkflowStore::hardware_by_mac
/// [`hardware_by_ip`]: WorkflowStore::hardware_by_ip
///
/// ```
/// # async fn demo() -> tinker_core::Result<()> {
/// use std::sync::Arc;
/// use tinker_boot::cached_store::CachedHardwareStore;
/// use tinker_core::WorkflowStore;
/// use tinker_core::model::Hardware;
/// use tinker_core::store::Precondition;
///
/// let store: Arc<dyn WorkflowStore> = Arc::new(tinker_store::MemoryStore::new());
/// let cached = CachedHardwareStore::new(store);
/// let mac = tinker_core::MacAddr([2, 0, 0, 0, 0, 1]);
/// let hw = Hardware::new("m1", mac, std::net::Ipv4Addr::new(10, 0, 0, 5), "255.255.255.0");
/// cached.put(hw.into(), Precondition::Any).await?;
/// // The first lookup reads the inventory; lookups are answered from memory.
/// assert!(cached.hardware_by_mac(mac).await?.is_some());
/// assert!(cached.hardware_by_mac(mac).await?.is_some());
/// assert_eq!(cached.lookups_from_store(), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct CachedHardwareStore {
    inner: Arc<dyn WorkflowStore>,
    by_mac: HardwareCache<Entry, MacAddr>,
    by_ip: HardwareCache<Entry, IpAddr>,
    clock: SharedClock,
    from_store: std::sync::atomic::AtomicU64,
    /// Set once the inventory has been read into the cache.
    primed: tokio::sync::OnceCell<()>,
    /// When reading the inventory last failed: it is not tried again for
    /// [`MAX_CACHED_AGE`], so callers (anyone on the network can make one)
    /// cannot turn a failing store into a full read per request.
    prime_failed: std::sync::Mutex<Option<jiff::Timestamp>>,
}

impl CachedHardwareStore {
    /// Wraps `inner`, on the system clock.
    pub fn new(inner: Arc<dyn WorkflowStore>) -> Self {
        CachedHardwareStore {
            // Unknown entries are never made (only found Hardware is cached).
            by_mac: HardwareCache::new(inner.watch(), 1),
            by_ip: HardwareCache::new(inner.watch(), 1),
            inner,
            clock: SystemClock::shared(),
            from_store: Default::default(),
            primed: tokio::sync::OnceCell::new(),
            prime_failed: std::sync::Mutex::new(None),
        }
    }

    /// Reads the time (the cached entries' age) from `clock`.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Lookups by MAC or IP that went to the wrapped store so far.
    pub fn lookups_from_store(&self) -> u64 {
        self.from_store.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads every Hardware into the cache, once (concurrent first lookups
    /// wait for the one read). A failed read is tried again
    /// [`MAX_CACHED_AGE`] later; meanwhile lookups read one Hardware each.
    async fn prime(&self) {
        if self.primed.initialized() {
            return;
        }
        let failed_at = *self.prime_failed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = failed_at
            && Duration::try_from(self.clock.now().duration_since(at))
                .is_ok_and(|since| since < MAX_CACHED_AGE)
        {
            return;
        }
        let read = self
            .primed
            .get_or_try_init(|| async {
                let epochs = (self.by_mac.epoch(), self.by_ip.epoch());
                let now = self.clock.now();
                let all = self.inner.list(Kind::Hardware).await?;
                for object in all {
                    let terms = index_terms(&object.value);
                    let Object::Hardware(hw) = object.value else {
                        continue;
                    };
                    let entry = Arc::new(Versioned {
                        version: object.version,
                        value: hw,
                    });
                    let m = &entry.value.metadata;
                    for term in terms {
                        let value = (entry.clone(), now);
                        match term {
                            IndexTerm::Mac(mac) => self.by_mac.insert(
                                mac,
                                epochs.0,
                                Some((m.namespace(), &m.name, value)),
                            ),
                            IndexTerm::Ip(ip) => self.by_ip.insert(
                                ip,
                                epochs.1,
                                Some((m.namespace(), &m.name, value)),
                            ),
                            IndexTerm::Worker(_) => {}
                        }
                    }
                }
                Ok::<(), tinker_core::Error>(())
            })
            .await;
        if let Err(e) = read {
            *self.prime_failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(self.clock.now());
            tracing::debug!(error = %e, "could not read the inventory into the lookup cache");
        }
    }

    fn invalidate(&self, namespace: &str, name: &str) {
        self.by_mac.invalidate(namespace, name);
        self.by_ip.invalidate(namespace, name);
    }

    /// `term`'s Hardware from `cache` if read less than [`MAX_CACHED_AGE`]
    /// ago, else from the store (by `read`), then cached if found.
    async fn lookup<K, F>(
        &self,
        cache: &HardwareCache<Entry, K>,
        term: K,
        read: F,
    ) -> Result<Option<Versioned<Hardware>>>
    where
        K: Copy + Eq + Hash,
        F: std::future::Future<Output = Result<Option<Versioned<Hardware>>>>,
    {
        self.prime().await;
        let now = self.clock.now();
        let fresh = |at: jiff::Timestamp| {
            Duration::try_from(now.duration_since(at)).is_ok_and(|age| age < MAX_CACHED_AGE)
        };
        let epoch = match cache.get_fresh(term, |(_, at)| fresh(*at)) {
            Ok(Cached::Known((hw, _))) => return Ok(Some((*hw).clone())),
            Ok(Cached::Unknown) => return Ok(None),
            Err(epoch) => epoch,
        };
        self.from_store
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let found = read.await?;
        if let Some(hw) = &found {
            let m = &hw.value.metadata;
            cache.insert(
                term,
                epoch,
                Some((m.namespace(), &m.name, (Arc::new(hw.clone()), now))),
            );
        }
        Ok(found)
    }
}

#[async_trait::async_trait]
impl WorkflowStore for CachedHardwareStore {
    async fn put(&self, object: Object, precondition: Precondition) -> Result<u64> {
        let hardware = match &object {
            Object::Hardware(hw) => Some((
                hw.metadata.namespace().to_string(),
                hw.metadata.name.clone(),
            )),
            _ => None,
        };
        let written = self.inner.put(object, precondition).await;
        if let Some((namespace, name)) = hardware {
            self.invalidate(&namespace, &name);
        }
        written
    }

    async fn get(&self, key: &ObjectKey) -> Result<Option<Versioned<Object>>> {
        self.inner.get(key).await
    }

    async fn list(&self, kind: Kind) -> Result<Vec<Versioned<Object>>> {
        self.inner.list(kind).await
    }

    async fn delete(&self, key: &ObjectKey, precondition: Precondition) -> Result<()> {
        let deleted = self.inner.delete(key, precondition).await;
        if key.kind == Kind::Hardware {
            self.invalidate(&key.namespace, &key.name);
        }
        deleted
    }

    async fn hardware_by_mac(&self, mac: MacAddr) -> Result<Option<Versioned<Hardware>>> {
        self.lookup(&self.by_mac, mac, self.inner.hardware_by_mac(mac))
            .await
    }

    async fn hardware_by_ip(&self, ip: IpAddr) -> Result<Option<Versioned<Hardware>>> {
        self.lookup(&self.by_ip, ip, self.inner.hardware_by_ip(ip))
            .await
    }

    async fn apply_event(
        &self,
        workflow: &ObjectKey,
        event: &WorkflowEvent,
        now: jiff::Timestamp,
    ) -> Result<Applied> {
        self.inner.apply_event(workflow, event, now).await
    }

    async fn claim_next_action_for_request(
        &self,
        worker: &str,
        request: Option<&str>,
        now: jiff::Timestamp,
    ) -> Result<Option<Assignment>> {
        self.inner
            .claim_next_action_for_request(worker, request, now)
            .await
    }

    async fn claim_looked_at(
        &self,
        worker: &str,
        request: Option<&str>,
        looked: Vec<Versioned<Workflow>>,
        now: jiff::Timestamp,
    ) -> Result<Option<Assignment>> {
        self.inner
            .claim_looked_at(worker, request, looked, now)
            .await
    }

    async fn claim_next_action(
        &self,
        worker: &str,
        now: jiff::Timestamp,
    ) -> Result<Option<Assignment>> {
        self.inner.claim_next_action(worker, now).await
    }

    async fn workflows_for_worker(&self, worker: &str) -> Result<Vec<Versioned<Workflow>>> {
        self.inner.workflows_for_worker(worker).await
    }

    async fn recent_workflow(&self, key: &ObjectKey) -> Result<Option<Versioned<Workflow>>> {
        self.inner.recent_workflow(key).await
    }

    async fn append_event(&self, event: MachineEvent) -> Result<()> {
        self.inner.append_event(event).await
    }

    async fn append_events(&self, events: Vec<MachineEvent>) -> Result<()> {
        self.inner.append_events(events).await
    }

    async fn events(&self, machine: &str, limit: usize) -> Result<Vec<MachineEvent>> {
        self.inner.events(machine, limit).await
    }

    fn watch(&self) -> broadcast::Receiver<Change> {
        self.inner.watch()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinker_core::clock::ManualClock;
    use tinker_store::MemoryStore;

    fn machine(name: &str, last: u8) -> (Hardware, MacAddr, IpAddr) {
        let mac = MacAddr([2, 0, 0, 0, 0, last]);
        let ip = std::net::Ipv4Addr::new(10, 0, 0, last);
        (
            Hardware::new(name, mac, ip, "255.255.255.0"),
            mac,
            ip.into(),
        )
    }

    /// Every store runs the conformance suite; a wrapper that caches must
    /// pass it too (its lookups right after writes, MAC moves, deletes).
    #[tokio::test]
    async fn the_wrapped_memory_store_passes_the_conformance_suite() {
        let store = CachedHardwareStore::new(Arc::new(MemoryStore::new()));
        tinker_core::testing::store::run_all(Arc::new(store)).await;
    }

    #[tokio::test]
    async fn lookups_are_answered_from_memory_until_the_hardware_changes() {
        let inner: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
        let store = CachedHardwareStore::new(inner.clone());
        let (mut hw, mac, ip) = machine("m1", 5);
        store
            .put(hw.clone().into(), Precondition::Any)
            .await
            .unwrap();
        for _ in 0..3 {
            assert_eq!(
                store
                    .hardware_by_mac(mac)
                    .await
                    .unwrap()
                    .unwrap()
                    .value
                    .metadata
                    .name,
                "m1"
            );
            assert!(store.hardware_by_ip(ip).await.unwrap().is_some());
        }
        assert_eq!(
            store.lookups_from_store(),
            0,
            "answered from the inventory read at the first lookup"
        );

        // Written elsewhere (another replica, the engine on the plain store):
        // the feed brings the change, and the next lookup reads it.
        hw.set_allow_pxe(false);
        inner
            .put(hw.clone().into(), Precondition::Any)
            .await
            .unwrap();
        let read = store.hardware_by_mac(mac).await.unwrap().unwrap();
        assert!(!read.value.allows_pxe(), "the change is seen");
        assert_eq!(store.lookups_from_store(), 1);
        assert!(store.hardware_by_ip(ip).await.unwrap().is_some());
        assert_eq!(store.lookups_from_store(), 2);
        store.hardware_by_mac(mac).await.unwrap();
        assert_eq!(store.lookups_from_store(), 2, "and cached again");

        // Written through this store, its MAC moved: the old MAC is nobody's
        // at once, and an address nobody holds is asked each time.
        let (moved, new_mac, _) = machine("m1", 6);
        store.put(moved.into(), Precondition::Any).await.unwrap();
        assert!(store.hardware_by_mac(mac).await.unwrap().is_none());
        assert!(store.hardware_by_mac(mac).await.unwrap().is_none());
        assert!(store.hardware_by_mac(new_mac).await.unwrap().is_some());
        assert_eq!(store.lookups_from_store(), 5);

        // Deleted through this store: gone at once.
        let key = ObjectKey::new(Kind::Hardware, "default", "m1");
        store.delete(&key, Precondition::Any).await.unwrap();
        assert!(store.hardware_by_mac(new_mac).await.unwrap().is_none());
    }

    /// A MemoryStore whose inventory read (`list` of Hardware) fails while
    /// `failing` is set, counting those reads.
    #[derive(Debug, Default)]
    struct FailingInventory {
        inner: MemoryStore,
        failing: std::sync::atomic::AtomicBool,
        lists: std::sync::atomic::AtomicU64,
    }

    #[async_trait::async_trait]
    impl WorkflowStore for FailingInventory {
        async fn put(&self, object: Object, precondition: Precondition) -> Result<u64> {
            self.inner.put(object, precondition).await
        }
        async fn get(&self, key: &ObjectKey) -> Result<Option<Versioned<Object>>> {
            self.inner.get(key).await
        }
        async fn list(&self, kind: Kind) -> Result<Vec<Versioned<Object>>> {
            use std::sync::atomic::Ordering::Relaxed;
            if kind == Kind::Hardware {
                self.lists.fetch_add(1, Relaxed);
                if self.failing.load(Relaxed) {
                    return Err(tinker_core::Error::backend("test", "the database is down"));
                }
            }
            self.inner.list(kind).await
        }
        async fn delete(&self, key: &ObjectKey, precondition: Precondition) -> Result<()> {
            self.inner.delete(key, precondition).await
        }
        async fn hardware_by_mac(&self, mac: MacAddr) -> Result<Option<Versioned<Hardware>>> {
            self.inner.hardware_by_mac(mac).await
        }
        async fn hardware_by_ip(&self, ip: IpAddr) -> Result<Option<Versioned<Hardware>>> {
            self.inner.hardware_by_ip(ip).await
        }
        async fn apply_event(
            &self,
            key: &ObjectKey,
            event: &WorkflowEvent,
            now: jiff::Timestamp,
        ) -> Result<Applied> {
            self.inner.apply_event(key, event, now).await
        }
        async fn claim_next_action_for_request(
            &self,
            worker: &str,
            request: Option<&str>,
            now: jiff::Timestamp,
        ) -> Result<Option<Assignment>> {
            self.inner
                .claim_next_action_for_request(worker, request, now)
                .await
        }
        async fn append_event(&self, event: MachineEvent) -> Result<()> {
            self.inner.append_event(event).await
        }
        async fn events(&self, machine: &str, limit: usize) -> Result<Vec<MachineEvent>> {
            self.inner.events(machine, limit).await
        }
        fn watch(&self) -> broadcast::Receiver<Change> {
            self.inner.watch()
        }
    }

    /// Anyone on the network can make a lookup: while the inventory cannot
    /// be read, lookups read one Hardware each and the whole inventory is
    /// tried again only once [`MAX_CACHED_AGE`] has passed, then cached.
    #[tokio::test]
    async fn a_failed_inventory_read_is_tried_again_only_after_a_pause() {
        use std::sync::atomic::Ordering::Relaxed;
        let clock = Arc::new(ManualClock::new(
            jiff::Timestamp::from_second(1_800_000_000).unwrap(),
        ));
        let inner = Arc::new(FailingInventory::default());
        let store = CachedHardwareStore::new(inner.clone()).with_clock(clock.clone());
        let (hw, mac, ip) = machine("m3", 9);
        inner.put(hw.into(), Precondition::Any).await.unwrap();
        inner.failing.store(true, Relaxed);

        for _ in 0..5 {
            assert!(store.hardware_by_mac(mac).await.unwrap().is_some());
        }
        assert_eq!(inner.lists.load(Relaxed), 1, "one inventory read, failed");
        clock.advance(MAX_CACHED_AGE - Duration::from_secs(1));
        assert!(store.hardware_by_ip(ip).await.unwrap().is_some());
        assert_eq!(
            inner.lists.load(Relaxed),
            1,
            "not tried again before the pause ends"
        );

        inner.failing.store(false, Relaxed);
        clock.advance(Duration::from_secs(2));
        let before = store.lookups_from_store();
        assert!(store.hardware_by_ip(ip).await.unwrap().is_some());
        assert_eq!(inner.lists.load(Relaxed), 2, "tried again after the pause");
        assert_eq!(
            store.lookups_from_store(),
            before,
            "answered from the inventory read"
        );
        store.hardware_by_mac(mac).await.unwrap();
        assert_eq!(inner.lists.load(Relaxed), 2, "read once it has succeeded");
    }

    /// A feed that stops without a word (a lost LISTEN connection) cannot keep
    /// an answer forever: past its age it is read again.
    #[tokio::test]
    async fn an_old_answer_is_read_again() {
        let clock = Arc::new(ManualClock::new(
            jiff::Timestamp::from_second(1_800_000_000).unwrap(),
        ));
        let store =
            CachedHardwareStore::new(Arc::new(MemoryStore::new())).with_clock(clock.clone());
        let (hw, mac, _) = machine("m2", 7);
        store.put(hw.into(), Precondition::Any).await.unwrap();
        store.hardware_by_mac(mac).await.unwrap();
        clock.advance(MAX_CACHED_AGE - Duration::from_secs(1));
        store.hardware_by_mac(mac).await.unwrap();
        assert_eq!(store.lookups_from_store(), 0, "from the inventory read");
        clock.advance(Duration::from_secs(2));
        store.hardware_by_mac(mac).await.unwrap();
        assert_eq!(store.lookups_from_store(), 1, "read again past its age");
        store.hardware_by_mac(mac).await.unwrap();
        assert_eq!(store.lookups_from_store(), 1);
    }
}
