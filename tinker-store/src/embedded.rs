//! `RedbStore`: the embedded persistent store, one file, no server.
//!
//! Why redb: pure Rust (no C toolchain, no SQLite version skew), ACID with
//! copy-on-write B-trees and a two-phase commit whose committed transactions
//! survive a crash or power loss, and a single writer at a time, which makes every
//! claim and report atomic without lock choreography. A control plane for a rack
//! writes a few thousand small records per minute; a single writer is no limit
//! there (see BENCHMARKS.md).
//!
//! Layout: `objects` (encoded key → JSON of the versioned object), `index`
//! (multimap term → encoded key: MACs, IPs, workers with unfinished workflows),
//! `events` ((machine, seq) → JSON), `meta` (counters). redb is blocking, so
//! reads run in `spawn_blocking`; the change feed is sent after commit.
//!
//! Group commit: writes go to one writer thread, which runs every write waiting
//! for it in one transaction, in order, and commits them together: one fsync for
//! the batch instead of one per write. Each caller is answered only after the
//! commit that holds its write, so an acknowledged write survives a crash exactly
//! as before; under a boot storm (thousands of claims and reports at once) the
//! store commits hundreds of writes per fsync instead of queueing them. A write
//! that fails on a logical check (a stale version, a taken MAC) changes nothing
//! and fails alone; a storage error fails its whole batch.

use crate::common::{
    FEED_CAPACITY, check_key, decode_key, encode_key, index_diff, kind_prefix, taken,
};
use async_trait::async_trait;
use jiff::Timestamp;
use redb::{
    Database, MultimapTableDefinition, ReadableDatabase, ReadableMultimapTable, ReadableTable,
    TableDefinition, WriteTransaction,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tinker_core::model::{Hardware, Kind, Object, ObjectKey};
use tinker_core::state::WorkflowEvent;
use tinker_core::store::{
    Applied, Assignment, Change, IndexTerm, MachineEvent, Precondition, Versioned, WorkflowStore,
    apply_to_workflow, check_precondition, claim_in_workflow,
};
use tinker_core::{Error, MacAddr, Result};
use tokio::sync::broadcast;

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const INDEX: MultimapTableDefinition<&str, &str> = MultimapTableDefinition::new("index");
const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const EVENT_SEQ: &str = "event_seq";

/// The embedded persistent [`WorkflowStore`], in one redb file.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    path: PathBuf,
    feed: broadcast::Sender<Change>,
    writer: Arc<Writer>,
}

/// The writer thread's queue; when the last handle to the store goes, the queue
/// closes and the thread is joined, so the file is closed when `drop` returns (a
/// store reopened at once finds it free).
struct Writer {
    jobs: std::sync::Mutex<Option<std::sync::mpsc::Sender<WriteJob>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.lock().ok().and_then(|mut j| j.take()));
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

/// What a write job tells the writer after running in the batch's transaction.
struct JobOutcome {
    /// Called with the batch's commit result: answers the caller.
    finish: Box<dyn FnOnce(std::result::Result<(), String>) + Send>,
    /// It wrote something (a batch of no-ops is not committed).
    wrote: bool,
    /// It failed on storage, possibly after writing part: the batch is abandoned.
    storage_failed: bool,
}

type WriteJob = Box<dyn FnOnce(&WriteTransaction) -> JobOutcome + Send>;

/// Most writes one commit carries: bounds a batch's latency.
const MAX_BATCH: usize = 512;

/// The writer thread: takes every job waiting, runs them in one transaction, in
/// order, commits once, then answers each.
fn writer_loop(db: Arc<Database>, jobs: std::sync::mpsc::Receiver<WriteJob>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let txn = match db.begin_write() {
            Ok(t) => t,
            Err(e) => {
                // Dropping the jobs unrun answers each caller with an error.
                tracing::error!(error = %e, "redb: cannot begin a write transaction");
                drop(batch);
                continue;
            }
        };
        let mut outcomes = Vec::with_capacity(batch.len());
        let (mut wrote, mut failed) = (false, false);
        for job in batch {
            // A job that panics fails its batch (its caller sees the writer drop
            // it); the writer goes on.
            let Ok(o) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&txn))) else {
                failed = true;
                continue;
            };
            wrote |= o.wrote;
            failed |= o.storage_failed;
            outcomes.push(o.finish);
        }
        let committed = if failed {
            let _ = txn.abort();
            Err("a storage error in this batch of writes; nothing of it was written".to_string())
        } else if wrote {
            txn.commit().map_err(|e| e.to_string())
        } else {
            txn.abort().map_err(|e| e.to_string())
        };
        for finish in outcomes {
            finish(committed.clone());
        }
    }
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

fn db_err(e: impl Into<redb::Error>) -> Error {
    Error::backend("redb", e.into())
}

fn json_err(e: serde_json::Error) -> Error {
    Error::backend("redb (stored JSON)", e)
}

impl RedbStore {
    /// Opens (or creates) the store file. If the last process died mid-write,
    /// redb repairs the file here and the last committed state is what is read.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        let db = tokio::task::spawn_blocking(move || -> Result<Database> {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Error::backend("redb", format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            let db = Database::create(&p)
                .map_err(|e| Error::backend("redb", format!("cannot open {}: {e}", p.display())))?;
            // Create the tables once so readers never meet a missing table.
            let txn = db.begin_write().map_err(db_err)?;
            txn.open_table(OBJECTS).map_err(db_err)?;
            txn.open_multimap_table(INDEX).map_err(db_err)?;
            txn.open_table(EVENTS).map_err(db_err)?;
            txn.open_table(META).map_err(db_err)?;
            txn.commit().map_err(db_err)?;
            Ok(db)
        })
        .await
        .map_err(|e| Error::backend("redb", e))??;
        tracing::debug!(path = %path.display(), "opened embedded store");
        let db = Arc::new(db);
        let (jobs_tx, jobs) = std::sync::mpsc::channel();
        let d = db.clone();
        let thread = std::thread::Builder::new()
            .name("redb-writer".into())
            .spawn(move || writer_loop(d, jobs))
            .map_err(|e| Error::backend("redb", e))?;
        Ok(RedbStore {
            db,
            path,
            feed: broadcast::channel(FEED_CAPACITY).0,
            writer: Arc::new(Writer {
                jobs: std::sync::Mutex::new(Some(jobs_tx)),
                thread: std::sync::Mutex::new(Some(thread)),
            }),
        })
    }

    /// Runs `f` in the writer's next batch transaction and answers once that
    /// batch is committed. `f` returns its result and whether it wrote anything;
    /// it must not write before a check that can fail (every write here checks
    /// first), so a failed check leaves the batch as it was.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<(T, bool)> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T>>();
        let job: WriteJob = Box::new(move |txn| {
            let r = f(txn);
            let wrote = matches!(&r, Ok((_, true)));
            let storage_failed = matches!(&r, Err(Error::Backend { .. }));
            JobOutcome {
                finish: Box::new(move |committed| {
                    let answer = match (r, committed) {
                        (Ok((v, _)), Ok(())) => Ok(v),
                        (Ok(_), Err(why)) => Err(Error::backend("redb", why)),
                        (Err(e), _) => Err(e),
                    };
                    let _ = tx.send(answer);
                }),
                wrote,
                storage_failed,
            }
        });
        let sent = self
            .writer
            .jobs
            .lock()
            .ok()
            .and_then(|j| j.as_ref().map(|j| j.send(job).is_ok()));
        if sent != Some(true) {
            return Err(Error::backend("redb", "the writer thread has stopped"));
        }
        rx.await.map_err(|_| {
            Error::backend(
                "redb",
                "the writer dropped a write (its transaction could not begin)",
            )
        })?
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| Error::backend("redb", e))?
    }

    fn notify(&self, changes: Vec<Change>) {
        for c in changes {
            let _ = self.feed.send(c);
        }
    }
}

fn read_object(txn: &WriteTransaction, k: &str) -> Result<Option<Versioned<Object>>> {
    let table = txn.open_table(OBJECTS).map_err(db_err)?;
    let got = table.get(k).map_err(db_err)?;
    got.map(|v| serde_json::from_slice(v.value()).map_err(json_err))
        .transpose()
}

/// Writes (or deletes, with `None`) an object and its index terms in `txn`.
fn write_object(
    txn: &WriteTransaction,
    key: &ObjectKey,
    old: Option<&Object>,
    new: Option<&Versioned<Object>>,
) -> Result<()> {
    let k = encode_key(key);
    let (remove, add) = index_diff(old, new.map(|v| &v.value));
    {
        let mut index = txn.open_multimap_table(INDEX).map_err(db_err)?;
        for term in &add {
            if term.is_unique() {
                let holders = index.get(term.as_key().as_str()).map_err(db_err)?;
                for h in holders {
                    let h = h.map_err(db_err)?;
                    if h.value() != k {
                        return Err(taken(term, key, h.value()));
                    }
                }
            }
        }
        for term in remove {
            index
                .remove(term.as_key().as_str(), k.as_str())
                .map_err(db_err)?;
        }
        for term in add {
            index
                .insert(term.as_key().as_str(), k.as_str())
                .map_err(db_err)?;
        }
    }
    let mut table = txn.open_table(OBJECTS).map_err(db_err)?;
    match new {
        Some(v) => {
            let bytes = serde_json::to_vec(v).map_err(json_err)?;
            table.insert(k.as_str(), bytes.as_slice()).map_err(db_err)?;
        }
        None => {
            table.remove(k.as_str()).map_err(db_err)?;
        }
    }
    Ok(())
}

fn hardware_by(db: &Database, term: &IndexTerm) -> Result<Option<Versioned<Hardware>>> {
    let txn = db.begin_read().map_err(db_err)?;
    let index = txn.open_multimap_table(INDEX).map_err(db_err)?;
    let objects = txn.open_table(OBJECTS).map_err(db_err)?;
    let mut holders = index.get(term.as_key().as_str()).map_err(db_err)?;
    let Some(k) = holders.next() else {
        return Ok(None);
    };
    let k = k.map_err(db_err)?;
    let Some(v) = objects.get(k.value()).map_err(db_err)? else {
        return Ok(None);
    };
    let stored: Versioned<Object> = serde_json::from_slice(v.value()).map_err(json_err)?;
    Ok(match stored.value {
        Object::Hardware(h) => Some(Versioned {
            version: stored.version,
            value: h,
        }),
        _ => None,
    })
}

#[async_trait]
impl WorkflowStore for RedbStore {
    async fn put(&self, object: Object, precondition: Precondition) -> Result<u64> {
        let key = object.key();
        check_key(&key)?;
        let k2 = key.clone();
        let version = self
            .write(move |txn| {
                let old = read_object(txn, &encode_key(&k2))?;
                check_precondition(&k2, old.as_ref().map(|v| v.version), precondition)?;
                let version = old.as_ref().map_or(0, |v| v.version) + 1;
                write_object(
                    txn,
                    &k2,
                    old.as_ref().map(|v| &v.value),
                    Some(&Versioned {
                        version,
                        value: object,
                    }),
                )?;
                Ok((version, true))
            })
            .await?;
        self.notify(vec![Change {
            key,
            version,
            deleted: false,
        }]);
        Ok(version)
    }

    async fn get(&self, key: &ObjectKey) -> Result<Option<Versioned<Object>>> {
        let k = encode_key(key);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let table = txn.open_table(OBJECTS).map_err(db_err)?;
            let got = table.get(k.as_str()).map_err(db_err)?;
            got.map(|v| serde_json::from_slice(v.value()).map_err(json_err))
                .transpose()
        })
        .await
    }

    async fn list(&self, kind: Kind) -> Result<Vec<Versioned<Object>>> {
        let prefix = kind_prefix(kind);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let table = txn.open_table(OBJECTS).map_err(db_err)?;
            let mut out = Vec::new();
            for entry in table.range(prefix.as_str()..).map_err(db_err)? {
                let (k, v) = entry.map_err(db_err)?;
                if !k.value().starts_with(&prefix) {
                    break;
                }
                out.push(serde_json::from_slice(v.value()).map_err(json_err)?);
            }
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &ObjectKey, precondition: Precondition) -> Result<()> {
        if precondition == Precondition::Absent {
            return Err(Error::Unsupported {
                target: "store".into(),
                operation: "delete with Precondition::Absent".into(),
            });
        }
        let k2 = key.clone();
        let version = self
            .write(move |txn| {
                let Some(old) = read_object(txn, &encode_key(&k2))? else {
                    return Err(Error::NotFound {
                        key: k2.to_string(),
                    });
                };
                check_precondition(&k2, Some(old.version), precondition)?;
                write_object(txn, &k2, Some(&old.value), None)?;
                Ok((old.version, true))
            })
            .await?;
        self.notify(vec![Change {
            key: key.clone(),
            version,
            deleted: true,
        }]);
        Ok(())
    }

    async fn hardware_by_mac(&self, mac: MacAddr) -> Result<Option<Versioned<Hardware>>> {
        self.blocking(move |db| hardware_by(db, &IndexTerm::Mac(mac)))
            .await
    }

    async fn hardware_by_ip(&self, ip: IpAddr) -> Result<Option<Versioned<Hardware>>> {
        self.blocking(move |db| hardware_by(db, &IndexTerm::Ip(ip)))
            .await
    }

    async fn apply_event(
        &self,
        key: &ObjectKey,
        event: &WorkflowEvent,
        now: Timestamp,
    ) -> Result<Applied> {
        let (k2, ev) = (key.clone(), event.clone());
        let (applied, changed, result) = self
            .write(move |txn| {
                let Some(Versioned {
                    version,
                    value: Object::Workflow(old),
                }) = read_object(txn, &encode_key(&k2))?
                else {
                    return Err(Error::NotFound {
                        key: k2.to_string(),
                    });
                };
                let mut wf = old.clone();
                let (changed, result) = apply_to_workflow(&mut wf, &ev, now);
                let version = if changed { version + 1 } else { version };
                let applied = Versioned { version, value: wf };
                if changed {
                    let stored = Versioned {
                        version,
                        value: Object::Workflow(applied.value.clone()),
                    };
                    write_object(txn, &k2, Some(&Object::Workflow(old)), Some(&stored))?;
                }
                Ok(((applied, changed, result), changed))
            })
            .await?;
        if changed {
            self.notify(vec![Change {
                key: key.clone(),
                version: applied.version,
                deleted: false,
            }]);
        }
        let effect = result?;
        Ok(Applied {
            workflow: applied,
            effect,
        })
    }

    async fn claim_next_action_for_request(
        &self,
        worker: &str,
        request: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<Assignment>> {
        let worker = worker.to_string();
        let request = request.map(str::to_string);
        let mut skip = std::collections::HashSet::new();
        let mut changes = Vec::new();
        // Bounded: each round either claims, or marks one candidate seen.
        for _ in 0..64 {
            // A read first: most polls find nothing to do, and they stay off the
            // writer. Stop at the first candidate with something due, so a worker
            // with a backlog costs one parse per claim, not one per workflow.
            let (w, r, seen) = (worker.clone(), request.clone(), skip.clone());
            let candidate = self
                .blocking(move |db| {
                    let term = IndexTerm::Worker(w.clone()).as_key();
                    let txn = db.begin_read().map_err(db_err)?;
                    let index = txn.open_multimap_table(INDEX).map_err(db_err)?;
                    let objects = txn.open_table(OBJECTS).map_err(db_err)?;
                    for k in index.get(term.as_str()).map_err(db_err)? {
                        let k = k.map_err(db_err)?.value().to_string();
                        if seen.contains(&k) {
                            continue;
                        }
                        let Some(v) = objects.get(k.as_str()).map_err(db_err)? else {
                            continue;
                        };
                        let stored: Versioned<Object> =
                            serde_json::from_slice(v.value()).map_err(json_err)?;
                        if let Object::Workflow(wf) = &stored.value
                            && let Some(s) = &wf.status
                            && (s.wants_attention(&w, now)
                                || r.as_deref().is_some_and(|r| s.claimed_by_request(&w, r)))
                        {
                            return Ok(Some(k));
                        }
                    }
                    Ok(None)
                })
                .await?;
            let Some(k) = candidate else { break };
            skip.insert(k.clone());
            let Some(key) = decode_key(&k) else { continue };
            let (w, r, key2) = (worker.clone(), request.clone(), key.clone());
            // Then the claim itself, in the writer's batch: read again there, as
            // the workflow may have changed since.
            let (assignment, version) = self
                .write(move |txn| {
                    let Some(Versioned {
                        version,
                        value: Object::Workflow(old),
                    }) = read_object(txn, &k)?
                    else {
                        return Ok(((None, None), false));
                    };
                    let mut wf = old.clone();
                    let (changed, assignment) =
                        claim_in_workflow(&key2, &mut wf, &w, r.as_deref(), now);
                    if !changed {
                        return Ok(((assignment, None), false));
                    }
                    let stored = Versioned {
                        version: version + 1,
                        value: Object::Workflow(wf),
                    };
                    write_object(txn, &key2, Some(&Object::Workflow(old)), Some(&stored))?;
                    Ok(((assignment, Some(version + 1)), true))
                })
                .await?;
            if let Some(version) = version {
                changes.push(Change {
                    key,
                    version,
                    deleted: false,
                });
            }
            if assignment.is_some() {
                self.notify(changes);
                return Ok(assignment);
            }
        }
        self.notify(changes);
        Ok(None)
    }

    async fn append_event(&self, mut event: MachineEvent) -> Result<()> {
        self.write(move |txn| {
            {
                let mut meta = txn.open_table(META).map_err(db_err)?;
                let seq = meta
                    .get(EVENT_SEQ)
                    .map_err(db_err)?
                    .map_or(0, |v| v.value())
                    + 1;
                meta.insert(EVENT_SEQ, seq).map_err(db_err)?;
                event.seq = seq;
                let bytes = serde_json::to_vec(&event).map_err(json_err)?;
                let mut events = txn.open_table(EVENTS).map_err(db_err)?;
                events
                    .insert((event.machine.as_str(), seq), bytes.as_slice())
                    .map_err(db_err)?;
            }
            Ok(((), true))
        })
        .await
    }

    async fn events(&self, machine: &str, limit: usize) -> Result<Vec<MachineEvent>> {
        let machine = machine.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let table = txn.open_table(EVENTS).map_err(db_err)?;
            let mut out = Vec::new();
            let range = table
                .range((machine.as_str(), 0)..=(machine.as_str(), u64::MAX))
                .map_err(db_err)?;
            for entry in range.rev().take(limit) {
                let (_, v) = entry.map_err(db_err)?;
                out.push(serde_json::from_slice(v.value()).map_err(json_err)?);
            }
            out.reverse();
            Ok(out)
        })
        .await
    }

    fn watch(&self) -> broadcast::Receiver<Change> {
        self.feed.subscribe()
    }
}
