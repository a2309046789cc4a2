//! What a [`PostgresStore`](crate::PostgresStore) knows of its workflows
//! without asking the database: the last copy of each workflow it wrote or
//! looked at, and, for each worker that asked, which workflows are its.
//!
//! Two round trips per question are saved with it:
//! - an event that follows the store's own write of its workflow (an agent's
//!   report after its claim) is tried against the copy: one conditional
//!   write instead of a read and a write;
//! - a long poll's look at a worker's workflows (one per question for work,
//!   one per wake-up; 8 per machine in the PostgreSQL boot storm of issue 17)
//!   is answered from the copies when every workflow of the worker has one
//!   as new as the change feed has announced.
//!
//! A copy or a look may be stale for as long as another replica's commit
//! takes to be announced (milliseconds): every write made from one checks
//! the version it read, so a stale copy costs a write that writes nothing,
//! after which the caller reads the database; and a waiter registered at a
//! stale version is woken by the announcement of the newer one. Nothing is
//! answered from a copy the feed has announced newer: announcements name
//! the replica that wrote (`by`), and another replica's write, or any
//! deletion, drops the workflow's copy and every worker's list (its index
//! terms may have changed). This store's own writes keep the lists unless
//! they changed an index term.
//!
//! Bounded: at most [`Copies::CAP`] copies (the oldest remembered go first)
//! and as many worker lists; a worker whose list names a copy that went is
//! looked up in the database again. Without a feed (it closed) nothing is
//! kept or answered.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use tinker_core::model::Workflow;
use tinker_core::store::Versioned;

/// The store's copies and worker lists (see the module's documentation).
#[derive(Debug, Default)]
pub(crate) struct Copies {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The change feed closed: nothing is kept or answered from then on.
    closed: bool,
    /// Copies by encoded key.
    by_key: HashMap<String, Versioned<Workflow>>,
    /// Keys in the order remembered, oldest first, for forgetting the
    /// oldest. A key remembered again stays at its first place too: popping
    /// it at most drops a newer copy early, which costs a read.
    order: VecDeque<String>,
    /// The last version the feed announced of each workflow (until its
    /// deletion is announced): a copy older than it is not used.
    announced: HashMap<String, u64>,
    /// This store's writes under way, by ticket.
    writing: HashMap<u64, Writing>,
    next_ticket: u64,
    /// Each worker's workflows (encoded keys, in key order), as a look found
    /// them since the last change that may have moved a workflow to or from
    /// a worker.
    workers: HashMap<String, Vec<String>>,
    /// Bumped when every list goes: a look that read before does not record
    /// what it found.
    epoch: u64,
    /// Bumped when some workers' lists go; `moved` keeps its value for each
    /// of them, so a look that read before its worker's list went does not
    /// record it (at most as many entries as lists, then all lists go).
    stamp: u64,
    moved: HashMap<String, u64>,
}

#[derive(Debug)]
struct Writing {
    key: String,
    /// The workflow was deleted while the write was under way: whatever it
    /// wrote is not kept.
    spoiled: bool,
}

/// What a look read the database at ([`Copies::epoch`]), given back to
/// [`Copies::looked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Epoch {
    epoch: u64,
    stamp: u64,
}

/// A write of a workflow under way ([`Copies::begin`]); dropped without
/// [`Ticket::wrote`], the write is taken as lost and the copy goes.
#[must_use]
pub(crate) struct Ticket<'a> {
    copies: &'a Copies,
    id: u64,
    done: bool,
}

impl Ticket<'_> {
    /// The write landed: `written` is the workflow at its new version, and
    /// `moved` the workers it came to or left with it (`None`: unknown, any).
    pub(crate) fn wrote(mut self, written: Versioned<Workflow>, moved: Option<Vec<String>>) {
        self.done = true;
        let mut inner = self.copies.lock();
        let Some(writing) = inner.writing.remove(&self.id) else {
            return;
        };
        match moved {
            None => inner.lists_may_have_changed(),
            Some(workers) if !workers.is_empty() => inner.lists_changed(&workers),
            Some(_) => {}
        }
        if writing.spoiled {
            inner.by_key.remove(&writing.key);
        } else {
            inner.keep(writing.key, written);
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Lost (written by someone else since the read) or failed: the copy
        // is stale or unknown. Another replica's write is announced, and
        // drops the lists then; this store's own is handled by its ticket.
        let mut inner = self.copies.lock();
        if let Some(writing) = inner.writing.remove(&self.id) {
            inner.by_key.remove(&writing.key);
        }
    }
}

impl Inner {
    /// The copy of `k`, if it is as new as the last announced version.
    fn usable(&self, k: &str) -> Option<&Versioned<Workflow>> {
        let copy = self.by_key.get(k)?;
        let announced = self.announced.get(k).copied().unwrap_or(0);
        (copy.version >= announced).then_some(copy)
    }

    /// Keeps `copy` of `k` unless a newer one is kept or announced.
    fn keep(&mut self, k: String, copy: Versioned<Workflow>) {
        if self.closed
            || self.announced.get(&k).is_some_and(|&a| a > copy.version)
            || self
                .by_key
                .get(&k)
                .is_some_and(|c| c.version >= copy.version)
        {
            return;
        }
        if self.by_key.insert(k.clone(), copy).is_none() {
            self.order.push_back(k);
        }
        // A key dropped and kept again is in `order` twice: bounded too.
        while self.by_key.len() > Copies::CAP || self.order.len() > 2 * Copies::CAP {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.by_key.remove(&old);
        }
    }

    fn lists_may_have_changed(&mut self) {
        self.workers.clear();
        self.moved.clear();
        self.epoch += 1;
    }

    /// The lists of `workers` changed (a workflow came to or left them):
    /// theirs go, and a look for one of them under way does not record.
    fn lists_changed(&mut self, workers: &[String]) {
        self.stamp += 1;
        for w in workers {
            self.workers.remove(w);
            self.moved.insert(w.clone(), self.stamp);
        }
        if self.moved.len() > Copies::CAP {
            self.lists_may_have_changed();
        }
    }
}

impl Copies {
    /// Copies kept at most: a workflow is a few kilobytes, so some tens of
    /// megabytes; enough for the machines of a large storm at once.
    pub(crate) const CAP: usize = 16_384;

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The copy of the workflow at encoded key `k`, if one is as new as the
    /// feed has announced.
    pub(crate) fn get(&self, k: &str) -> Option<Versioned<Workflow>> {
        self.lock().usable(k).cloned()
    }

    /// `worker`'s workflows in key order, if a look found them since the
    /// lists last changed and each has a usable copy.
    pub(crate) fn look(&self, worker: &str) -> Option<Vec<Versioned<Workflow>>> {
        let inner = self.lock();
        let keys = inner.workers.get(worker)?;
        keys.iter().map(|k| inner.usable(k).cloned()).collect()
    }

    /// Taken before a look reads the database.
    pub(crate) fn epoch(&self) -> Epoch {
        let inner = self.lock();
        Epoch {
            epoch: inner.epoch,
            stamp: inner.stamp,
        }
    }

    /// What a look for `worker` that read at `epoch` found (`found`, each
    /// with its encoded key): recorded unless the lists changed meanwhile.
    /// An empty answer is not recorded, so made-up worker names cost no
    /// memory.
    pub(crate) fn looked(
        &self,
        worker: &str,
        epoch: Epoch,
        found: &[(String, Versioned<Workflow>)],
    ) {
        let mut inner = self.lock();
        if inner.closed || inner.epoch != epoch.epoch || found.is_empty() {
            return;
        }
        for (k, wf) in found {
            inner.keep(k.clone(), wf.clone());
        }
        if inner.moved.get(worker).is_some_and(|&at| at > epoch.stamp) {
            return;
        }
        if inner.workers.len() >= Self::CAP {
            inner.workers.clear();
        }
        let keys = found.iter().map(|(k, _)| k.clone()).collect();
        inner.workers.insert(worker.to_string(), keys);
    }

    /// A write of the workflow at encoded key `k` is about to be sent.
    pub(crate) fn begin(&self, k: &str) -> Ticket<'_> {
        let mut inner = self.lock();
        let id = inner.next_ticket;
        inner.next_ticket += 1;
        inner.writing.insert(
            id,
            Writing {
                key: k.to_string(),
                spoiled: false,
            },
        );
        Ticket {
            copies: self,
            id,
            done: false,
        }
    }

    /// The workflow at `k` was written another way (created, replaced or
    /// deleted in a transaction): its copy goes, and the lists.
    pub(crate) fn forget(&self, k: &str) {
        let mut inner = self.lock();
        inner.by_key.remove(k);
        inner.lists_may_have_changed();
    }

    /// The feed announced a change of the workflow at `k`: `version`, or its
    /// deletion; `ours` when this store wrote it.
    pub(crate) fn announced(&self, k: &str, version: u64, deleted: bool, ours: bool) {
        let mut inner = self.lock();
        if inner.closed {
            return;
        }
        if deleted {
            inner.by_key.remove(k);
            inner.announced.remove(k);
            for w in inner.writing.values_mut().filter(|w| w.key == k) {
                w.spoiled = true;
            }
            inner.lists_may_have_changed();
            return;
        }
        // Announcements come in commit order: the last one is the row's.
        inner.announced.insert(k.to_string(), version);
        if !ours {
            inner.by_key.remove(k);
            inner.lists_may_have_changed();
        }
    }

    /// The feed closed: nothing is kept or answered from now on (a deletion
    /// would go unseen).
    pub(crate) fn closed(&self) {
        let mut inner = self.lock();
        *inner = Inner {
            closed: true,
            ..Inner::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinker_core::MacAddr;

    fn wf(name: &str, version: u64) -> Versioned<Workflow> {
        Versioned {
            version,
            value: Workflow::new(name, "t", name, MacAddr([2, 0, 0, 0, 0, 1])),
        }
    }

    fn versions(found: Option<Vec<Versioned<Workflow>>>) -> Option<Vec<u64>> {
        found.map(|v| v.iter().map(|w| w.version).collect())
    }

    #[test]
    fn a_look_is_answered_from_copies_the_stores_own_writes_keep_new() {
        let c = Copies::default();
        assert!(c.look("w").is_none(), "nothing looked at yet");
        let e = c.epoch();
        c.looked(
            "w",
            e,
            &[("a".into(), wf("a", 3)), ("b".into(), wf("b", 1))],
        );
        assert_eq!(versions(c.look("w")), Some(vec![3, 1]));
        // Our own write of a, announced before or after it lands.
        let t = c.begin("a");
        c.announced("a", 4, false, true);
        assert!(
            c.look("w").is_none(),
            "the copy at 3 is behind the announced 4"
        );
        t.wrote(wf("a", 4), Some(vec![]));
        assert_eq!(versions(c.look("w")), Some(vec![4, 1]));
        let t = c.begin("a");
        t.wrote(wf("a", 5), Some(vec![]));
        c.announced("a", 5, false, true);
        assert_eq!(versions(c.look("w")), Some(vec![5, 1]));
        assert_eq!(c.get("a").map(|w| w.version), Some(5));
    }

    #[test]
    fn another_replicas_write_or_a_deletion_sends_looks_to_the_database() {
        let c = Copies::default();
        let e = c.epoch();
        c.looked("w", e, &[("a".into(), wf("a", 3))]);
        c.looked("v", e, &[("b".into(), wf("b", 3))]);
        c.announced("b", 4, false, false);
        assert!(
            c.look("w").is_none(),
            "every list goes: terms may have moved"
        );
        assert!(c.get("b").is_none());
        assert_eq!(c.get("a").map(|w| w.version), Some(3), "a's copy stays");
        let e = c.epoch();
        c.looked("w", e, &[("a".into(), wf("a", 3))]);
        c.announced("a", 3, true, true);
        assert!(c.look("w").is_none() && c.get("a").is_none());
    }

    #[test]
    fn a_look_that_read_before_a_change_of_the_lists_records_nothing() {
        let c = Copies::default();
        let e = c.epoch();
        // Our own write moved a workflow between workers meanwhile.
        c.begin("x").wrote(wf("x", 2), None);
        c.looked("w", e, &[("a".into(), wf("a", 3))]);
        assert!(c.look("w").is_none());
        // A look read before a newer version was announced keeps no copy.
        let e = c.epoch();
        c.announced("a", 4, false, true);
        c.looked("w", e, &[("a".into(), wf("a", 3))]);
        assert!(c.look("w").is_none() && c.get("a").is_none());
    }

    #[test]
    fn a_write_that_moves_a_workflow_drops_only_the_lists_of_its_workers() {
        let c = Copies::default();
        let e = c.epoch();
        c.looked("w", e, &[("a".into(), wf("a", 3))]);
        c.looked("v", e, &[("b".into(), wf("b", 3))]);
        // a finished: it left w.
        c.begin("a").wrote(wf("a", 4), Some(vec!["w".into()]));
        assert!(c.look("w").is_none(), "w is looked up again");
        assert_eq!(versions(c.look("v")), Some(vec![3]), "v's list stands");
        assert_eq!(c.get("a").map(|w| w.version), Some(4));
        // A look for w that read before the move records nothing; one for
        // another worker does.
        let e = c.epoch();
        c.begin("a").wrote(wf("a", 5), Some(vec!["w".into()]));
        c.looked("w", e, &[("a".into(), wf("a", 4))]);
        c.looked("u", e, &[("c".into(), wf("c", 1))]);
        assert!(c.look("w").is_none());
        assert_eq!(versions(c.look("u")), Some(vec![1]));
    }

    #[test]
    fn a_lost_write_or_one_spoiled_by_a_deletion_keeps_no_copy() {
        let c = Copies::default();
        c.begin("a").wrote(wf("a", 1), Some(vec![]));
        drop(c.begin("a"));
        assert!(c.get("a").is_none(), "a lost write's copy is unknown");
        c.begin("a").wrote(wf("a", 1), Some(vec![]));
        let t = c.begin("a");
        c.announced("a", 1, true, false);
        t.wrote(wf("a", 2), Some(vec![]));
        assert!(c.get("a").is_none(), "deleted while it was written");
        // An older write landing after a newer one does not replace it.
        let (old, new) = (c.begin("b"), c.begin("b"));
        new.wrote(wf("b", 3), Some(vec![]));
        old.wrote(wf("b", 2), Some(vec![]));
        assert_eq!(c.get("b").map(|w| w.version), Some(3));
    }

    #[test]
    fn copies_are_bounded_and_a_closed_feed_keeps_nothing() {
        let c = Copies::default();
        for i in 0..Copies::CAP + 10 {
            c.begin(&format!("k{i}")).wrote(wf("x", 1), Some(vec![]));
        }
        assert!(c.get("k0").is_none(), "the oldest went");
        assert!(c.get(&format!("k{}", Copies::CAP + 9)).is_some());
        assert_eq!(c.lock().by_key.len(), Copies::CAP);
        let e = c.epoch();
        c.looked("w", e, &[("a".into(), wf("a", 1))]);
        c.closed();
        assert!(c.look("w").is_none() && c.get("a").is_none());
        c.begin("a").wrote(wf("a", 2), Some(vec![]));
        c.looked("w", c.epoch(), &[("a".into(), wf("a", 3))]);
        assert!(c.look("w").is_none() && c.get("a").is_none());
    }
}
