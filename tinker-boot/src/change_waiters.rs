//! Requests waiting for an object to change: the worker API's long poll
//! (`Prefer: wait=N`, RFC 7240). An agent whose workflow is being prepared
//! asks once and is answered when its workflow changes, instead of asking
//! again every few seconds (28 times per machine in a PostgreSQL boot storm,
//! each a token check and a claim query).
//!
//! A waiter registers the keys it waits on, each with the version it read,
//! and is woken by the store's change feed, read by one task for all waiters
//! (a broadcast receiver per waiter would wake every waiter at every change).
//! A change announced between the waiter's read and its registration is not
//! lost: the hub remembers the highest version announced of each key, and a
//! registration behind it is woken at once; a feed that fell behind
//! meanwhile (its changes unknown) wakes it at once too, by the generation
//! the waiter read before its read. A wake-up is only a hint: the
//! waiter looks again, so a change it missed costs a late answer, never a
//! wrong one, and a waiter is bounded by its own deadline. A feed that fell
//! behind wakes every waiter; a feed that closed wakes them all and refuses
//! new waits ([`ChangeWaiters::register`] answers `None`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tinker_core::model::ObjectKey;
use tinker_core::store::Change;
use tokio::sync::Notify;
use tokio::sync::broadcast::{self, error::RecvError};

#[derive(Debug, Default)]
struct Waiting {
    by_key: HashMap<ObjectKey, Vec<Arc<Notify>>>,
    /// The highest version announced of each key that changed (deleted keys
    /// leave; all leave when the feed falls behind): as many entries as the
    /// store has objects, at most.
    announced: HashMap<ObjectKey, u64>,
    /// Bumped each time the feed fell behind (or closed).
    generation: u64,
    /// The feed, until the task that reads it starts (at the first wait).
    feed: Option<broadcast::Receiver<Change>>,
    closed: bool,
}

/// Waiters by key, woken by a store's change feed.
#[derive(Debug)]
pub struct ChangeWaiters {
    waiting: Mutex<Waiting>,
    /// Times the feed fell behind and every waiter was woken.
    lags: AtomicU64,
}

/// Its counters for `/metrics`.
pub(crate) const COUNTERS: &[crate::http::CounterRow<ChangeWaiters>] = &[crate::http::CounterRow {
    name: "tinker_worker_api_wait_feed_lags",
    help: "Times the change feed fell behind the waits' reader and every waiting question was woken.",
    value: |w| &w.lags,
}];

/// One waiter's registration; dropping it forgets the waiter.
#[derive(Debug)]
pub struct Registration {
    hub: Arc<ChangeWaiters>,
    keys: Vec<ObjectKey>,
    notify: Arc<Notify>,
}

impl ChangeWaiters {
    /// Waiters fed by `feed` (a store's `watch()`); its reader starts at the
    /// first [`register`](Self::register), on that caller's runtime.
    pub fn new(feed: broadcast::Receiver<Change>) -> Arc<Self> {
        Arc::new(ChangeWaiters {
            waiting: Mutex::new(Waiting {
                feed: Some(feed),
                ..Waiting::default()
            }),
            lags: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a waiter on `keys`, each with the version the waiter read,
    /// woken by the next change of any of them (one announced before
    /// [`Registration::changed`] is awaited counts, and so does one already
    /// announced past the version read). `None` when the store announces no
    /// changes (its feed closed): the caller answers at once instead of
    /// waiting for nothing.
    ///
    /// `generation` is [`generation`](Self::generation) as read before the
    /// waiter read the keys' versions: if the feed fell behind since, what
    /// it missed is unknown, and the waiter is woken at once.
    pub fn register(
        self: &Arc<Self>,
        keys: Vec<(ObjectKey, u64)>,
        generation: u64,
    ) -> Option<Registration> {
        let notify = Arc::new(Notify::new());
        let feed = {
            let mut waiting = self.lock();
            if waiting.closed {
                return None;
            }
            let mut behind = waiting.generation != generation;
            for (key, read) in &keys {
                behind |= waiting.announced.get(key).is_some_and(|v| v > read);
                waiting
                    .by_key
                    .entry(key.clone())
                    .or_default()
                    .push(notify.clone());
            }
            if behind {
                notify.notify_one();
            }
            waiting.feed.take()
        };
        let keys = keys.into_iter().map(|(key, _)| key).collect();
        if let Some(feed) = feed {
            tokio::spawn(read_feed(Arc::downgrade(self), feed));
        }
        Some(Registration {
            hub: self.clone(),
            keys,
            notify,
        })
    }

    /// Waiters registered, counted once per key they wait on.
    pub fn len(&self) -> usize {
        self.lock().by_key.values().map(Vec::len).sum()
    }

    /// The feed's generation: read it before reading the versions handed to
    /// [`register`](Self::register).
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Times the feed fell behind (every waiter woken).
    pub fn lags(&self) -> u64 {
        self.lags.load(Ordering::Relaxed)
    }

    /// Whether no one waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn changed(&self, change: &Change) {
        let woken = {
            let mut waiting = self.lock();
            if change.deleted {
                waiting.announced.remove(&change.key);
            } else {
                // Announcements may arrive out of order: the highest counts.
                let last = waiting.announced.entry(change.key.clone()).or_default();
                *last = (*last).max(change.version);
            }
            waiting.by_key.remove(&change.key).unwrap_or_default()
        };
        for n in woken {
            n.notify_one();
        }
    }

    fn wake_all(&self, close: bool) {
        let woken = {
            let mut waiting = self.lock();
            waiting.closed |= close;
            // What was missed is unknown: versions remembered from before
            // could be of deleted objects, and a waiter that read before now
            // may have missed a change.
            waiting.announced.clear();
            waiting.generation += 1;
            std::mem::take(&mut waiting.by_key)
        };
        for n in woken.into_values().flatten() {
            n.notify_one();
        }
    }
}

/// The one reader of the feed; ends with the feed or with the waiters.
async fn read_feed(hub: Weak<ChangeWaiters>, mut feed: broadcast::Receiver<Change>) {
    loop {
        let got = feed.recv().await;
        let Some(hub) = hub.upgrade() else { return };
        match got {
            Ok(change) => hub.changed(&change),
            Err(RecvError::Lagged(_)) => {
                hub.lags.fetch_add(1, Ordering::Relaxed);
                hub.wake_all(false)
            }
            Err(RecvError::Closed) => {
                hub.wake_all(true);
                return;
            }
        }
    }
}

impl Registration {
    /// Resolves once a key this waiter registered has changed since it
    /// registered (or the feed fell behind or closed).
    pub async fn changed(&self) {
        self.notify.notified().await
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut waiting = self.hub.lock();
        for key in &self.keys {
            if let Some(list) = waiting.by_key.get_mut(key) {
                list.retain(|n| !Arc::ptr_eq(n, &self.notify));
                if list.is_empty() {
                    waiting.by_key.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinker_core::model::Kind;

    /// Whether `f` is ready at its first poll.
    fn ready(f: impl std::future::Future<Output = ()>) -> bool {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        f.as_mut().poll(&mut cx).is_ready()
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new(Kind::Workflow, "default", name)
    }

    fn change(name: &str) -> Change {
        Change {
            key: key(name),
            version: 2,
            deleted: false,
        }
    }

    /// Keys at the version a waiter read (1).
    fn read(names: &[&str]) -> Vec<(ObjectKey, u64)> {
        names.iter().map(|n| (key(n), 1)).collect()
    }

    /// Lets the feed's reader run.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_change_wakes_the_waiters_on_its_key_only() {
        let (tx, rx) = broadcast::channel(16);
        let hub = ChangeWaiters::new(rx);
        let a = hub.register(read(&["a", "b"]), hub.generation()).unwrap();
        let c = hub.register(read(&["c"]), hub.generation()).unwrap();
        assert_eq!(hub.len(), 3);
        // Announced before the waiter awaits: not lost.
        tx.send(change("b")).unwrap();
        settle().await;
        assert!(ready(a.changed()), "woken by b");
        assert!(!ready(c.changed()), "c did not change");
        tx.send(change("c")).unwrap();
        settle().await;
        assert!(ready(c.changed()));
        drop((a, c));
        assert!(hub.is_empty(), "a dropped registration is forgotten");
    }

    #[tokio::test]
    async fn a_change_announced_between_the_read_and_the_registration_wakes_at_once() {
        let (tx, rx) = broadcast::channel(16);
        let hub = ChangeWaiters::new(rx);
        // The reader starts with the first registration.
        drop(hub.register(read(&["x"]), hub.generation()).unwrap());
        tx.send(change("a")).unwrap();
        settle().await;
        // Read at version 1; version 2 was announced since.
        let late = hub.register(read(&["a"]), hub.generation()).unwrap();
        assert!(ready(late.changed()), "behind the feed: woken at once");
        // Read at version 2, the last announced: waits.
        let current = hub.register(vec![(key("a"), 2)], hub.generation()).unwrap();
        assert!(!ready(current.changed()));
        // A deleted key is forgotten.
        tx.send(Change {
            key: key("a"),
            version: 2,
            deleted: true,
        })
        .unwrap();
        settle().await;
        assert!(ready(current.changed()), "the delete wakes it");
        let after = hub.register(read(&["a"]), hub.generation()).unwrap();
        assert!(!ready(after.changed()), "nothing announced past it");
    }

    #[tokio::test]
    async fn a_dropped_waiter_leaves_nothing_behind_and_others_stay() {
        let (_tx, rx) = broadcast::channel(16);
        let hub = ChangeWaiters::new(rx);
        let a = hub.register(read(&["a"]), hub.generation()).unwrap();
        let b = hub.register(read(&["a"]), hub.generation()).unwrap();
        drop(a);
        assert_eq!(hub.len(), 1);
        drop(b);
        assert!(hub.is_empty());
    }

    #[tokio::test]
    async fn a_feed_that_fell_behind_wakes_everyone_and_a_closed_one_refuses_waits() {
        let (tx, rx) = broadcast::channel(2);
        let hub = ChangeWaiters::new(rx);
        let a = hub.register(read(&["a"]), hub.generation()).unwrap();
        // The reader has not run yet: five changes overflow the channel of 2.
        for name in ["x", "y", "z", "u", "v"] {
            tx.send(change(name)).unwrap();
        }
        settle().await;
        assert!(ready(a.changed()), "lagged: woken");
        assert_eq!(hub.lags(), 1);
        let b = hub.register(read(&["b"]), hub.generation()).unwrap();
        drop(tx);
        settle().await;
        assert!(ready(b.changed()), "closed: woken");
        assert!(
            hub.register(read(&["c"]), hub.generation()).is_none(),
            "closed: no waits"
        );
    }

    #[tokio::test]
    async fn a_waiter_that_read_before_the_feed_fell_behind_is_woken_at_once() {
        let (tx, rx) = broadcast::channel(2);
        let hub = ChangeWaiters::new(rx);
        drop(hub.register(read(&["x"]), hub.generation()).unwrap());
        let before = hub.generation();
        // The waiter reads its versions here; then the feed overflows.
        for name in ["p", "q", "r", "s", "t"] {
            tx.send(change(name)).unwrap();
        }
        settle().await;
        let late = hub.register(read(&["a"]), before).unwrap();
        assert!(ready(late.changed()), "what the lag lost is unknown: woken");
        let fresh = hub.register(read(&["a"]), hub.generation()).unwrap();
        assert!(!ready(fresh.changed()), "read after the lag: waits");
    }
}
