//! What a [`PostgresStore`](crate::PostgresStore) knows of its workflows
//! without asking the database: the last copy of each workflow it wrote or
//! read, and, for each worker that asked, which workflows are its.
//!
//! Round trips saved with it:
//! - an event that follows the store's own write of its workflow (an agent's
//!   report after its claim) is tried against the copy: one conditional
//!   write instead of a read and a write;
//! - a long poll's look at a worker's workflows (one per question for work,
//!   one per wake-up; 8 per machine in the PostgreSQL boot storm of issue 17)
//!   is answered from the copies when every workflow of the worker has one
//!   as new as the change feed has announced;
//! - the engine's reads of a workflow it was told had changed, or found in
//!   its sweep (`WorkflowStore::recent_workflow`; a list of the workflows
//!   refreshes the copies).
//!
//! How stale an answer can be:
//! - Another replica's write is seen once announced (milliseconds: a
//!   store announces its writes after their commit, in batches): its
//!   announcement drops the workflow's copy, and the lists of the workers
//!   the write moved it to or from (the announcement of a conditional write
//!   lists the index terms it changed; without that list, every worker's
//!   list goes). Announcements name the store that wrote (`by`); one without
//!   a name (an older replica's, or a write made in a transaction, whose
//!   outcome its writer may never learn) counts as another's, and any
//!   deletion drops every list.
//! - Until then a copy or a look may be behind: every write made from one
//!   checks the version it read, so a stale copy costs a write that writes
//!   nothing, after which the caller reads the database; and a waiter
//!   registered at a stale version is woken by the announcement of the newer
//!   one.
//! - This store's own write is kept when its statement has answered (it
//!   committed alone); one whose answer never came (an error, a dropped
//!   call) drops the copy and every list at once, and its announcement,
//!   sent if the database shows it landed, is taken as another's.
//! - Announcements can cross (two stores', or one store's sent from two
//!   tasks): the newest version heard of stays in force.
//! - Nothing is older than [`Copies::MAX_AGE`]: a feed that went quiet
//!   without closing (a lost connection not noticed yet) cannot keep an
//!   answer longer, and a feed that closed stops all answers until it
//!   listens again, and forgets all it had.
//!
//! Bounded: at most [`Copies::CAP`] copies (the first kept go first), as
//! many worker lists, and the announced versions of at most twice as many
//! workflows (past that, those of workflows without a copy are forgotten,
//! and what was under way then is not kept). A worker whose list names a
//! copy that went is looked up in the database again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tinker_core::model::Workflow;
use tinker_core::store::Versioned;

/// The store's copies and worker lists (see the module's documentation).
#[derive(Debug, Default)]
pub(crate) struct Copies {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The change feed is down: nothing is kept or answered until it is back.
    closed: bool,
    /// Copies by encoded key, with when each was kept.
    by_key: HashMap<String, (Versioned<Workflow>, Instant)>,
    /// Keys in the order kept, oldest first, for forgetting the oldest. A
    /// key dropped and kept again is here twice: popping the first at most
    /// drops a newer copy early, which costs a read.
    order: VecDeque<String>,
    /// The last version the feed announced of each workflow (until its
    /// deletion is announced): a copy older than it is not used.
    announced: HashMap<String, u64>,
    /// This store's writes under way, by ticket.
    writing: HashMap<u64, Writing>,
    next_ticket: u64,
    /// Each worker's workflows (encoded keys, in key order), as a look found
    /// them, and when.
    workers: HashMap<String, (Vec<String>, Instant)>,
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
    /// The workflow was deleted (or what was announced of it forgotten)
    /// while the write was under way: whatever it wrote is not kept.
    spoiled: bool,
}

/// Who wrote an announced change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writer {
    /// This store, alone in a statement (its ticket keeps the copy).
    Us,
    /// Another replica, or this store in a transaction.
    Other,
}

/// What a look read the database at ([`Copies::epoch`]), given back to
/// [`Copies::looked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Epoch {
    epoch: u64,
    stamp: u64,
}

/// A write of a workflow under way, alone in its statement
/// ([`Copies::begin`]): it ends with [`Ticket::wrote`] or [`Ticket::lost`];
/// dropped without either (an error, or the call dropped), it may have
/// landed unseen, and the copy and the lists go.
#[must_use]
pub(crate) struct Ticket<'a> {
    copies: &'a Copies,
    id: u64,
    done: bool,
}

impl Ticket<'_> {
    /// The write landed: `written` is the workflow at its new version, and
    /// `moved` the workers it came to or left with it (`None`: unknown, any).
    pub(crate) fn wrote(
        mut self,
        written: Versioned<Workflow>,
        moved: Option<Vec<String>>,
        now: Instant,
    ) {
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
            inner.keep(writing.key, written, now);
        }
    }

    /// The write found the workflow written by someone else since its read,
    /// and wrote nothing: the copy it was made from is stale.
    pub(crate) fn lost(mut self) {
        self.done = true;
        let mut inner = self.copies.lock();
        if let Some(writing) = inner.writing.remove(&self.id) {
            inner.by_key.remove(&writing.key);
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut inner = self.copies.lock();
        if let Some(writing) = inner.writing.remove(&self.id) {
            inner.by_key.remove(&writing.key);
            // Its announcement names this store, so it would drop nothing.
            inner.lists_may_have_changed();
        }
    }
}

impl Inner {
    /// The copy of `k`, if it is as new as the last announced version and
    /// younger than [`Copies::MAX_AGE`].
    fn usable(&self, k: &str, now: Instant) -> Option<&Versioned<Workflow>> {
        let (copy, kept_at) = self.by_key.get(k)?;
        let announced = self.announced.get(k).copied().unwrap_or(0);
        (copy.version >= announced && fresh(*kept_at, now)).then_some(copy)
    }

    /// Keeps `copy` of `k` unless a newer one is kept or announced.
    fn keep(&mut self, k: String, copy: Versioned<Workflow>, now: Instant) {
        if self.closed
            || self.announced.get(&k).is_some_and(|&a| a > copy.version)
            || self
                .by_key
                .get(&k)
                .is_some_and(|(c, _)| c.version > copy.version)
        {
            return;
        }
        if self.by_key.insert(k.clone(), (copy, now)).is_none() {
            self.order.push_back(k);
        }
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

/// Whether something kept at `at` may still answer at `now`.
fn fresh(at: Instant, now: Instant) -> bool {
    now.saturating_duration_since(at) < Copies::MAX_AGE
}

impl Copies {
    /// Copies kept at most: a workflow is a few kilobytes, so some tens of
    /// megabytes; enough for the machines of a large storm at once.
    pub(crate) const CAP: usize = 16_384;

    /// The longest a copy or a list answers before the database is asked
    /// again (as `CachedHardwareStore`'s entries).
    pub(crate) const MAX_AGE: Duration = Duration::from_secs(30);

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The copy of the workflow at encoded key `k`, if one is current.
    pub(crate) fn get(&self, k: &str, now: Instant) -> Option<Versioned<Workflow>> {
        self.lock().usable(k, now).cloned()
    }

    /// `worker`'s workflows in key order, if a look found them since the
    /// lists last changed and each has a current copy.
    pub(crate) fn look(&self, worker: &str, now: Instant) -> Option<Vec<Versioned<Workflow>>> {
        let inner = self.lock();
        let (keys, looked_at) = inner.workers.get(worker)?;
        if !fresh(*looked_at, now) {
            return None;
        }
        keys.iter().map(|k| inner.usable(k, now).cloned()).collect()
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
        now: Instant,
    ) {
        let mut inner = self.lock();
        if inner.closed || inner.epoch != epoch.epoch || found.is_empty() {
            return;
        }
        for (k, wf) in found {
            inner.keep(k.clone(), wf.clone(), now);
        }
        if inner.moved.get(worker).is_some_and(|&at| at > epoch.stamp) {
            return;
        }
        if inner.workers.len() >= Self::CAP {
            inner.workers.clear();
        }
        let keys = found.iter().map(|(k, _)| k.clone()).collect();
        inner.workers.insert(worker.to_string(), (keys, now));
    }

    /// What a read of workflows that started at `epoch` found (a list of all
    /// of them): copies kept, as a look's are, but no list.
    pub(crate) fn read(&self, epoch: Epoch, found: &[(String, Versioned<Workflow>)], now: Instant) {
        let mut inner = self.lock();
        if inner.closed || inner.epoch != epoch.epoch {
            return;
        }
        for (k, wf) in found {
            inner.keep(k.clone(), wf.clone(), now);
        }
    }

    /// A write of the workflow at encoded key `k`, alone in its statement,
    /// is about to be sent.
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

    /// The workflow at `k` was written another way (in a transaction:
    /// created, replaced, deleted, or claimed under a lock): its copy goes,
    /// and the lists, so this store reads its own write before the
    /// announcement arrives.
    pub(crate) fn forget(&self, k: &str) {
        let mut inner = self.lock();
        inner.by_key.remove(k);
        inner.lists_may_have_changed();
    }

    /// The feed announced a change of the workflow at `k`: `version`, or its
    /// deletion, written by `writer`; `moved`: the workers the workflow came
    /// to or left, when the announcement says.
    pub(crate) fn announced(
        &self,
        k: &str,
        version: u64,
        deleted: bool,
        writer: Writer,
        moved: Option<Vec<String>>,
    ) {
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
        // Announcements can cross (each store sends its own after their
        // commits, in batches): the newest seen is the row's, or older.
        let newest = inner.announced.entry(k.to_string()).or_insert(version);
        *newest = (*newest).max(version);
        // Our own write whose ticket ended without keeping it (its answer
        // never came, but it landed): what it did is learnt here.
        let unseen = writer == Writer::Us
            && !inner.writing.values().any(|w| w.key == k)
            && inner.by_key.get(k).is_none_or(|(c, _)| c.version < version);
        match if unseen { Writer::Other } else { writer } {
            Writer::Us => {}
            Writer::Other => {
                // A copy past this version was written on top of it (a
                // deletion, which starts versions over, drops copies first).
                if inner
                    .by_key
                    .get(k)
                    .is_some_and(|(c, _)| c.version < version)
                {
                    inner.by_key.remove(k);
                }
                match moved {
                    None => inner.lists_may_have_changed(),
                    Some(workers) if !workers.is_empty() => inner.lists_changed(&workers),
                    // Still in the same lists: only the copy was stale.
                    Some(_) => {}
                }
            }
        }
        if inner.announced.len() > 2 * Self::CAP {
            // Only copies need them. What was read or written before this
            // might be older than a version forgotten here: not kept.
            let Inner {
                announced, by_key, ..
            } = &mut *inner;
            announced.retain(|k, _| by_key.contains_key(k));
            for w in inner.writing.values_mut() {
                w.spoiled = true;
            }
            inner.lists_may_have_changed();
        }
    }

    /// The feed's connection was lost: nothing is kept or answered until
    /// [`feed_back`](Self::feed_back) (a deletion would go unseen), and
    /// nothing read or written before is kept after.
    pub(crate) fn feed_lost(&self) {
        let mut inner = self.lock();
        // Looks under way do not record (the epoch moves on), writes under
        // way are forgotten with their tickets (ids keep counting).
        let (epoch, next_ticket) = (inner.epoch + 1, inner.next_ticket);
        *inner = Inner {
            closed: true,
            epoch,
            next_ticket,
            ..Inner::default()
        };
    }

    /// The feed listens again: copies are kept from what is read and
    /// written from now on (not from writes begun while it was down: one
    /// may have been overtaken unannounced).
    pub(crate) fn feed_back(&self) {
        let mut inner = self.lock();
        inner.closed = false;
        inner.epoch += 1;
        for w in inner.writing.values_mut() {
            w.spoiled = true;
        }
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

    fn one(k: &str, version: u64) -> [(String, Versioned<Workflow>); 1] {
        [(k.to_string(), wf(k, version))]
    }

    #[test]
    fn a_look_is_answered_from_copies_the_stores_own_writes_keep_new() {
        let (c, t) = (Copies::default(), Instant::now());
        assert!(c.look("w", t).is_none(), "nothing looked at yet");
        let e = c.epoch();
        c.looked(
            "w",
            e,
            &[("a".into(), wf("a", 3)), ("b".into(), wf("b", 1))],
            t,
        );
        assert_eq!(versions(c.look("w", t)), Some(vec![3, 1]));
        // Our own write of a, announced before or after it lands.
        let w = c.begin("a");
        c.announced("a", 4, false, Writer::Us, None);
        assert!(
            c.look("w", t).is_none(),
            "the copy at 3 is behind the announced 4"
        );
        w.wrote(wf("a", 4), Some(vec![]), t);
        assert_eq!(versions(c.look("w", t)), Some(vec![4, 1]));
        c.begin("a").wrote(wf("a", 5), Some(vec![]), t);
        c.announced("a", 5, false, Writer::Us, None);
        assert_eq!(versions(c.look("w", t)), Some(vec![5, 1]));
        assert_eq!(c.get("a", t).map(|w| w.version), Some(5));
    }

    #[test]
    fn announcements_that_cross_leave_the_newest_in_force() {
        let (c, t) = (Copies::default(), Instant::now());
        // Another replica's 6 is heard before the 5 it was written on.
        c.announced("a", 6, false, Writer::Other, Some(vec![]));
        c.announced("a", 5, false, Writer::Other, Some(vec![]));
        // A look that read 5 keeps no copy the 6 has passed.
        c.looked("w", c.epoch(), &one("a", 5), t);
        assert!(c.get("a", t).is_none(), "5 is behind the announced 6");
        assert!(c.look("w", t).is_none());
        c.looked("w", c.epoch(), &one("a", 6), t);
        assert_eq!(versions(c.look("w", t)), Some(vec![6]));
    }

    #[test]
    fn another_replicas_write_or_a_deletion_sends_looks_to_the_database() {
        let (c, t) = (Copies::default(), Instant::now());
        let e = c.epoch();
        c.looked("w", e, &one("a", 3), t);
        c.looked("v", e, &one("b", 3), t);
        c.announced("b", 4, false, Writer::Other, None);
        assert!(
            c.look("w", t).is_none(),
            "every list goes: terms may have moved"
        );
        assert!(c.get("b", t).is_none());
        assert_eq!(c.get("a", t).map(|w| w.version), Some(3), "a's copy stays");
        c.looked("w", c.epoch(), &one("a", 3), t);
        c.announced("a", 3, true, Writer::Us, None);
        assert!(c.look("w", t).is_none() && c.get("a", t).is_none());
    }

    #[test]
    fn another_replicas_write_that_says_what_it_moved_drops_only_those_lists() {
        let (c, t) = (Copies::default(), Instant::now());
        let e = c.epoch();
        c.looked("w", e, &one("a", 3), t);
        c.looked("v", e, &one("b", 3), t);
        c.looked("u", e, &one("c", 3), t);
        let other = |moved: &[&str]| Some(moved.iter().map(|w| w.to_string()).collect());
        c.announced("b", 4, false, Writer::Other, other(&[]));
        assert!(c.look("v", t).is_none(), "b's copy went");
        assert_eq!(versions(c.look("w", t)), Some(vec![3]), "w's list stands");
        c.announced("c", 4, false, Writer::Other, other(&["u"]));
        assert!(c.look("u", t).is_none());
        assert_eq!(versions(c.look("w", t)), Some(vec![3]), "w's list stands");
        c.looked("v", c.epoch(), &one("b", 4), t);
        assert_eq!(versions(c.look("v", t)), Some(vec![4]));
        // The announcement of a version our own write came after (it was
        // late) leaves our copy.
        c.begin("b").wrote(wf("b", 6), Some(vec![]), t);
        c.announced("b", 5, false, Writer::Other, other(&[]));
        assert_eq!(versions(c.look("v", t)), Some(vec![6]));
    }

    #[test]
    fn a_look_that_read_before_a_change_of_the_lists_records_nothing() {
        let (c, t) = (Copies::default(), Instant::now());
        let e = c.epoch();
        // Our own write moved a workflow between unknown workers meanwhile.
        c.begin("x").wrote(wf("x", 2), None, t);
        c.looked("w", e, &one("a", 3), t);
        assert!(c.look("w", t).is_none());
        // A look read before a newer version was announced keeps no copy.
        let e = c.epoch();
        c.announced("a", 4, false, Writer::Us, None);
        c.looked("w", e, &one("a", 3), t);
        assert!(c.look("w", t).is_none() && c.get("a", t).is_none());
    }

    #[test]
    fn a_write_that_moves_a_workflow_drops_only_the_lists_of_its_workers() {
        let (c, t) = (Copies::default(), Instant::now());
        let e = c.epoch();
        c.looked("w", e, &one("a", 3), t);
        c.looked("v", e, &one("b", 3), t);
        // a finished: it left w.
        c.begin("a").wrote(wf("a", 4), Some(vec!["w".into()]), t);
        assert!(c.look("w", t).is_none(), "w is looked up again");
        assert_eq!(versions(c.look("v", t)), Some(vec![3]), "v's list stands");
        assert_eq!(c.get("a", t).map(|w| w.version), Some(4));
        // A look for w that read before the move records nothing; one for
        // another worker does.
        let e = c.epoch();
        c.begin("a").wrote(wf("a", 5), Some(vec!["w".into()]), t);
        c.looked("w", e, &one("a", 4), t);
        c.looked("u", e, &one("c", 1), t);
        assert!(c.look("w", t).is_none());
        assert_eq!(versions(c.look("u", t)), Some(vec![1]));
    }

    #[test]
    fn a_lost_write_drops_its_copy_and_one_never_answered_the_lists_too() {
        let (c, t) = (Copies::default(), Instant::now());
        c.looked("w", c.epoch(), &one("a", 1), t);
        c.looked("v", c.epoch(), &one("b", 1), t);
        c.begin("a").lost();
        assert!(
            c.get("a", t).is_none(),
            "the copy it was made from is stale"
        );
        assert!(c.look("v", t).is_some(), "nothing landed: the lists stand");
        c.begin("b").wrote(wf("b", 2), Some(vec![]), t);
        drop(c.begin("b"));
        assert!(c.get("b", t).is_none());
        assert!(c.look("v", t).is_none(), "it may have landed: the lists go");
        // A look read before it landed; then it is announced (it moved a
        // workflow to v): v's list goes again.
        c.looked("v", c.epoch(), &one("b", 2), t);
        c.announced("b", 3, false, Writer::Us, Some(vec!["v".into()]));
        assert!(c.look("v", t).is_none(), "learnt from its announcement");
        // Deleted while it was written.
        c.begin("a").wrote(wf("a", 1), Some(vec![]), t);
        let w = c.begin("a");
        c.announced("a", 1, true, Writer::Other, None);
        w.wrote(wf("a", 2), Some(vec![]), t);
        assert!(c.get("a", t).is_none(), "deleted while it was written");
        // An older write landing after a newer one does not replace it.
        let (old, new) = (c.begin("b"), c.begin("b"));
        new.wrote(wf("b", 3), Some(vec![]), t);
        old.wrote(wf("b", 2), Some(vec![]), t);
        assert_eq!(c.get("b", t).map(|w| w.version), Some(3));
    }

    #[test]
    fn nothing_answers_past_its_age_a_read_makes_it_young_again() {
        let (c, t) = (Copies::default(), Instant::now());
        c.looked("w", c.epoch(), &one("a", 1), t);
        let later = t + Copies::MAX_AGE;
        assert!(c.look("w", later).is_none() && c.get("a", later).is_none());
        c.looked("w", c.epoch(), &one("a", 1), later);
        assert_eq!(versions(c.look("w", later)), Some(vec![1]));
        // A list of every workflow keeps copies (not lists), newer ones only.
        c.read(
            c.epoch(),
            &[("a".into(), wf("a", 2)), ("b".into(), wf("b", 1))],
            later,
        );
        assert_eq!(c.get("a", later).map(|w| w.version), Some(2));
        c.read(c.epoch(), &one("a", 1), later);
        assert_eq!(c.get("a", later).map(|w| w.version), Some(2));
        assert!(c.look("v", later).is_none());
    }

    #[test]
    fn copies_and_announcements_are_bounded_and_a_lost_feed_keeps_nothing_until_back() {
        let (c, t) = (Copies::default(), Instant::now());
        for i in 0..Copies::CAP + 10 {
            c.begin(&format!("k{i}")).wrote(wf("x", 1), Some(vec![]), t);
        }
        assert!(c.get("k0", t).is_none(), "the oldest went");
        assert!(c.get(&format!("k{}", Copies::CAP + 9), t).is_some());
        assert_eq!(c.lock().by_key.len(), Copies::CAP);
        // Announcements of workflows without a copy are forgotten past the
        // bound; a write under way then is not kept.
        let w = c.begin("k20");
        for i in 0..3 * Copies::CAP {
            c.announced(&format!("n{i}"), 1, false, Writer::Us, None);
        }
        assert!(c.lock().announced.len() <= 2 * Copies::CAP);
        w.wrote(wf("x", 2), Some(vec![]), t);
        assert!(c.get("k20", t).is_none(), "not kept");
        c.looked("w", c.epoch(), &one("a", 1), t);
        let (under_way, read_before) = (c.begin("a"), c.epoch());
        c.feed_lost();
        assert!(c.look("w", t).is_none() && c.get("a", t).is_none());
        c.begin("a").wrote(wf("a", 2), Some(vec![]), t);
        c.looked("w", c.epoch(), &one("a", 3), t);
        assert!(c.look("w", t).is_none() && c.get("a", t).is_none());
        // Back: what was under way or read before the loss, or begun while
        // the feed was down, is not kept.
        let begun_while_down = c.begin("b");
        c.feed_back();
        under_way.wrote(wf("a", 4), Some(vec![]), t);
        begun_while_down.wrote(wf("b", 4), Some(vec![]), t);
        assert!(c.get("b", t).is_none());
        c.looked("w", read_before, &one("a", 4), t);
        assert!(c.look("w", t).is_none() && c.get("a", t).is_none());
        c.looked("w", c.epoch(), &one("a", 5), t);
        assert_eq!(versions(c.look("w", t)), Some(vec![5]));
    }
}
