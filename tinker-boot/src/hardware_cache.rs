//! The Hardware of each MAC that asked lately, so the boot responder answers a
//! DHCP packet without a store lookup (a lock, an index search and a clone of
//! the whole Hardware per packet in the profile of issue 17; a round trip with
//! PostgreSQL). Kept fresh by the store's change feed: every change to a
//! Hardware drops that Hardware's MACs and every "unknown MAC" entry (the
//! change may have added the MAC), and a feed that fell behind drops
//! everything. The feed is drained before each lookup, so a change the store
//! has announced is seen by the next packet (with PostgreSQL the
//! announcement, a NOTIFY, follows the commit in a batch with others, within
//! milliseconds while the database answers). A lookup that
//! raced a change caches what it read unless the change was to the Hardware
//! it found (before, any change in between kept it out, and under a storm of
//! Hardware writes the cache then held almost nothing: the PostgreSQL storm
//! of issue 17 looked Hardware up five times per machine).
//!
//! Bounded against a hostile network: a MAC is cached as known only when the
//! store has a Hardware for it (so known entries are at most the MACs of the
//! inventory), and the "unknown" entries, which anyone can make up, are capped
//! and forgotten oldest first.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use tinker_core::MacAddr;
use tinker_core::model::{Hardware, Kind};
use tinker_core::store::Change;
use tokio::sync::broadcast::{self, error::TryRecvError};

/// "Unknown MAC" entries kept by default.
pub const DEFAULT_MAX_UNKNOWN: usize = 4096;

/// Hardware whose last change is remembered for lookups in flight; past it
/// the memory is cleared and the lookups then in flight cache nothing. Only
/// Hardware changes fill it (the inventory, not the network).
const MAX_TRACKED_CHANGES: usize = 65_536;

/// What the cache knows of a MAC: `V` is what its owner keeps of the MAC's
/// Hardware (the Hardware itself by default; the boot responder keeps the
/// answer's parts already worked out).
#[derive(Debug, Clone)]
pub enum Cached<V = Arc<Hardware>> {
    /// The store had a Hardware for it.
    Known(V),
    /// The store had no Hardware for it.
    Unknown,
}

/// A ticket for [`HardwareCache::insert`]: which invalidation the lookup began
/// after, so a lookup that raced a change does not cache what it read.
#[derive(Debug, Clone, Copy)]
pub struct Epoch(u64);

#[derive(Debug)]
struct Inner<V, K> {
    feed: broadcast::Receiver<Change>,
    known: HashMap<K, V>,
    /// Hardware `namespace/name` to its cached MACs, to drop them on a change.
    by_key: HashMap<(String, String), Vec<K>>,
    unknown: HashMap<K, ()>,
    /// Unknown MACs in insertion order, for forgetting the oldest.
    unknown_order: VecDeque<K>,
    max_unknown: usize,
    /// Bumped by every invalidation.
    epoch: u64,
    /// The epoch of each Hardware's last invalidation, so a lookup that raced
    /// a change to another Hardware still caches what it read (under a storm
    /// of changes nearly every lookup races one). Cleared when it grows past
    /// [`MAX_TRACKED_CHANGES`], raising `floor`.
    changed_at: HashMap<(String, String), u64>,
    /// Lookups begun before this epoch cache nothing (the feed fell behind, or
    /// `changed_at` was cleared).
    floor: u64,
    /// Invalidations applied, for tests and metrics.
    invalidations: u64,
    /// The feed has closed: nothing is cached from then on.
    closed: bool,
}

/// MAC → Hardware, fed by a store's change feed. Cheap to share: one lock, held
/// for a hash lookup, never across an `.await`.
#[derive(Debug)]
///
/// Keyed by MAC by default; `K` may be another of a Hardware's unique terms
/// (its IP addresses, for callers known by their address).
pub struct HardwareCache<V = Arc<Hardware>, K = MacAddr> {
    inner: Mutex<Inner<V, K>>,
}

impl<V: Clone, K: Copy + Eq + Hash> HardwareCache<V, K> {
    /// A cache kept fresh by `feed` (the store's `watch()`, taken before the
    /// first lookup), keeping at most `max_unknown` unknown MACs.
    pub fn new(feed: broadcast::Receiver<Change>, max_unknown: usize) -> Self {
        HardwareCache {
            inner: Mutex::new(Inner {
                feed,
                known: HashMap::new(),
                by_key: HashMap::new(),
                unknown: HashMap::new(),
                unknown_order: VecDeque::new(),
                max_unknown: max_unknown.max(1),
                epoch: 0,
                changed_at: HashMap::new(),
                floor: 0,
                invalidations: 0,
                closed: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<V, K>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What is cached for `mac` after applying the changes the store has
    /// announced, or the epoch to hand to [`insert`](Self::insert) after
    /// asking the store.
    pub fn get(&self, mac: K) -> Result<Cached<V>, Epoch> {
        let mut inner = self.lock();
        inner.drain_feed();
        if let Some(hw) = inner.known.get(&mac) {
            return Ok(Cached::Known(hw.clone()));
        }
        if inner.unknown.contains_key(&mac) {
            return Ok(Cached::Unknown);
        }
        Err(Epoch(inner.epoch))
    }

    /// [`get`](Self::get), with a known entry that `fresh` finds too old
    /// forgotten and answered as a miss (its epoch), so the caller reads it
    /// again.
    pub fn get_fresh(&self, mac: K, fresh: impl Fn(&V) -> bool) -> Result<Cached<V>, Epoch> {
        let mut inner = self.lock();
        inner.drain_feed();
        match inner.known.get(&mac) {
            Some(v) if fresh(v) => return Ok(Cached::Known(v.clone())),
            Some(_) => {
                inner.known.remove(&mac);
            }
            None if inner.unknown.contains_key(&mac) => return Ok(Cached::Unknown),
            None => {}
        }
        Err(Epoch(inner.epoch))
    }

    /// The epoch to hand to [`insert`](Self::insert) for a read that begins
    /// now (of several entries at once, such as the whole inventory).
    pub fn epoch(&self) -> Epoch {
        let mut inner = self.lock();
        inner.drain_feed();
        Epoch(inner.epoch)
    }

    /// Caches what the store answered for `mac` (`found`: the Hardware's
    /// namespace, name, and what to keep of it), unless that Hardware changed
    /// since `epoch` (then the answer may be stale, and the next packet asks
    /// again). "Unknown" is cached only if no Hardware changed since: any
    /// change may have given the MAC to someone.
    pub fn insert(&self, mac: K, epoch: Epoch, found: Option<(&str, &str, V)>) {
        let mut inner = self.lock();
        inner.drain_feed();
        if inner.closed || epoch.0 < inner.floor {
            return;
        }
        match found {
            Some((namespace, name, value)) => {
                let key = (namespace.to_string(), name.to_string());
                if inner.changed_at.get(&key).is_some_and(|&at| at > epoch.0) {
                    return;
                }
                if inner.known.insert(mac, value).is_none() {
                    inner.by_key.entry(key).or_default().push(mac);
                }
            }
            None if inner.epoch != epoch.0 => {}
            None => {
                if inner.unknown.insert(mac, ()).is_none() {
                    inner.unknown_order.push_back(mac);
                }
                while inner.unknown.len() > inner.max_unknown {
                    match inner.unknown_order.pop_front() {
                        Some(old) => {
                            inner.unknown.remove(&old);
                        }
                        None => break,
                    }
                }
            }
        }
    }

    /// Drops what is cached of the Hardware `namespace/name` (and every
    /// "unknown" entry), as its change on the feed would: for a writer that
    /// knows of the change before the feed brings it.
    pub fn invalidate(&self, namespace: &str, name: &str) {
        let mut inner = self.lock();
        inner.drain_feed();
        inner.drop_hardware((namespace.to_string(), name.to_string()));
    }

    /// Entries kept: known MACs, unknown MACs.
    pub fn len(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.known.len(), inner.unknown.len())
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }

    /// Invalidations applied so far (one per Hardware change, one per feed
    /// that fell behind).
    pub fn invalidations(&self) -> u64 {
        let mut inner = self.lock();
        inner.drain_feed();
        inner.invalidations
    }
}

impl<V, K: Copy + Eq + Hash> Inner<V, K> {
    fn drop_hardware(&mut self, key: (String, String)) {
        for mac in self.by_key.remove(&key).unwrap_or_default() {
            self.known.remove(&mac);
        }
        self.forget_unknown();
        self.bump();
        if self.changed_at.len() >= MAX_TRACKED_CHANGES {
            self.changed_at.clear();
            self.floor = self.epoch;
        }
        self.changed_at.insert(key, self.epoch);
    }

    /// Everything dropped, and no lookup begun before caches what it read.
    fn drop_all(&mut self) {
        self.known.clear();
        self.by_key.clear();
        self.forget_unknown();
        self.bump();
        self.changed_at.clear();
        self.floor = self.epoch;
    }

    fn drain_feed(&mut self) {
        loop {
            match self.feed.try_recv() {
                Ok(change) if change.key.kind == Kind::Hardware => {
                    self.drop_hardware((change.key.namespace, change.key.name));
                }
                Ok(_) => {}
                Err(TryRecvError::Lagged(_)) => self.drop_all(),
                Err(TryRecvError::Empty) => return,
                // A store that announces no changes (its feed is gone): what
                // is cached could go stale unseen, so nothing is kept.
                Err(TryRecvError::Closed) => {
                    if !self.closed {
                        self.closed = true;
                        self.drop_all();
                    }
                    return;
                }
            }
        }
    }

    fn forget_unknown(&mut self) {
        self.unknown.clear();
        self.unknown_order.clear();
    }

    fn bump(&mut self) {
        self.epoch += 1;
        self.invalidations += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinker_core::model::ObjectKey;

    fn hw(name: &str) -> (&'static str, &str, Arc<Hardware>) {
        let hw = Hardware::new(
            name,
            MacAddr([2, 9, 9, 9, 9, 9]),
            std::net::Ipv4Addr::new(10, 0, 0, 1),
            "255.255.255.0",
        );
        ("default", name, Arc::new(hw))
    }

    fn mac(i: u32) -> MacAddr {
        let b = i.to_be_bytes();
        MacAddr([2, 0, b[0], b[1], b[2], b[3]])
    }

    fn change(name: &str) -> Change {
        Change {
            key: ObjectKey::new(Kind::Hardware, "default", name),
            version: 2,
            deleted: false,
        }
    }

    #[test]
    fn nothing_is_kept_once_the_feed_is_gone() {
        let (tx, rx) = broadcast::channel(16);
        let cache: HardwareCache = HardwareCache::new(rx, 16);
        let Err(epoch) = cache.get(mac(1)) else {
            panic!()
        };
        cache.insert(mac(1), epoch, Some(hw("a")));
        assert!(matches!(cache.get(mac(1)), Ok(Cached::Known(_))));
        // No more announcements: a change from now on would go unseen.
        drop(tx);
        assert!(cache.get(mac(1)).is_err(), "asked again");
        let Err(epoch) = cache.get(mac(1)) else {
            panic!()
        };
        cache.insert(mac(1), epoch, Some(hw("a")));
        cache.insert(mac(2), epoch, None);
        assert!(cache.get(mac(1)).is_err(), "still asked again");
        assert!(cache.get(mac(2)).is_err());
        assert!(cache.is_empty());
    }

    #[test]
    fn a_hardware_change_drops_its_macs_and_every_unknown_one() {
        let (tx, rx) = broadcast::channel(16);
        let cache: HardwareCache = HardwareCache::new(rx, 16);
        for (i, name) in [(1, "a"), (2, "b")] {
            let Err(epoch) = cache.get(mac(i)) else {
                panic!()
            };
            cache.insert(mac(i), epoch, Some(hw(name)));
        }
        let Err(epoch) = cache.get(mac(3)) else {
            panic!()
        };
        cache.insert(mac(3), epoch, None);
        assert!(matches!(cache.get(mac(3)), Ok(Cached::Unknown)));
        assert_eq!(cache.len(), (2, 1));
        tx.send(change("a")).unwrap();
        assert!(
            cache.get(mac(1)).is_err(),
            "the changed Hardware is asked again"
        );
        assert!(matches!(cache.get(mac(2)), Ok(Cached::Known(_))));
        assert!(
            cache.get(mac(3)).is_err(),
            "the change may have added this MAC"
        );
        assert_eq!(cache.invalidations(), 1);
    }

    #[test]
    fn a_lookup_that_raced_a_change_is_not_cached() {
        let (tx, rx) = broadcast::channel(16);
        let cache: HardwareCache = HardwareCache::new(rx, 16);
        let Err(epoch) = cache.get(mac(1)) else {
            panic!()
        };
        tx.send(change("a")).unwrap();
        cache.insert(mac(1), epoch, Some(hw("a")));
        assert!(cache.get(mac(1)).is_err());
    }

    /// Under a storm every lookup races some change: one to another Hardware
    /// does not make what was read stale, so it is cached; "unknown" is not
    /// (the change may have given the MAC away), and past the changes it
    /// remembers the cache caches nothing begun before.
    #[test]
    fn a_lookup_that_raced_another_hardwares_change_is_cached() {
        let (tx, rx) = broadcast::channel(16);
        let cache: HardwareCache = HardwareCache::new(rx, 16);
        let (Err(e1), Err(e2)) = (cache.get(mac(1)), cache.get(mac(2))) else {
            panic!()
        };
        tx.send(change("b")).unwrap();
        cache.insert(mac(1), e1, Some(hw("a")));
        cache.insert(mac(2), e2, None);
        assert!(matches!(cache.get(mac(1)), Ok(Cached::Known(_))));
        assert!(cache.get(mac(2)).is_err(), "unknown is not cached");

        let Err(epoch) = cache.get(mac(3)) else {
            panic!()
        };
        {
            let mut inner = cache.lock();
            for i in 0..=MAX_TRACKED_CHANGES {
                inner.drop_hardware(("default".into(), format!("other{i}")));
            }
        }
        cache.insert(mac(3), epoch, Some(hw("c")));
        assert!(
            cache.get(mac(3)).is_err(),
            "begun before the remembered changes were forgotten"
        );
        let Err(epoch) = cache.get(mac(3)) else {
            panic!()
        };
        cache.insert(mac(3), epoch, Some(hw("c")));
        assert!(matches!(cache.get(mac(3)), Ok(Cached::Known(_))));
    }

    #[test]
    fn a_feed_that_fell_behind_drops_everything() {
        let (tx, rx) = broadcast::channel(2);
        let cache: HardwareCache = HardwareCache::new(rx, 16);
        let Err(epoch) = cache.get(mac(1)) else {
            panic!()
        };
        cache.insert(mac(1), epoch, Some(hw("a")));
        for name in ["x", "y", "z", "w"] {
            tx.send(change(name)).unwrap();
        }
        assert!(cache.get(mac(1)).is_err());
    }

    #[test]
    fn made_up_macs_are_capped_oldest_first() {
        let (_tx, rx) = broadcast::channel(2);
        let cache: HardwareCache = HardwareCache::new(rx, 100);
        for i in 0..10_000 {
            let Err(epoch) = cache.get(mac(i)) else {
                panic!()
            };
            cache.insert(mac(i), epoch, None);
            assert!(cache.len().1 <= 100);
        }
        assert!(matches!(cache.get(mac(9_999)), Ok(Cached::Unknown)));
        assert!(cache.get(mac(0)).is_err(), "the oldest is forgotten");
        assert_eq!(cache.len(), (0, 100));
    }
}
