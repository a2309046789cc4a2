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
//! `events` ((machine, seq) → JSON), `meta` (counters and the schema version).
//!
//! The event log is bounded per machine: `meta` counts each machine's events
//! (`event_count/<machine>`, counted from `events` the first time a machine is
//! met, so a file written before the counters is bounded too), and an append
//! past the cap ([`MAX_EVENTS_PER_MACHINE`](crate::MAX_EVENTS_PER_MACHINE) or
//! [`RedbStore::with_event_cap`]) removes the machine's oldest in the same
//! transaction. The counters are plain `meta` entries: no new table, so no
//! schema version.
//! redb is blocking, so reads run in `spawn_blocking`; the change feed is sent
//! after commit.
//!
//! Upgrades: `meta` holds `schema_version`; [`MIGRATIONS`] lists the steps from
//! each version to the next, and [`RedbStore::open`] runs the missing ones in one
//! write transaction before anything else touches the file, so a step that fails
//! leaves the file as it was. A file written before versions were recorded (it
//! has the tables and no version) is version 1. A file newer than the code is
//! refused ([`StoreError::SchemaTooNew`]) and not changed.
//!
//! Group commit: writes go to one writer thread, which runs every write waiting
//! for it in one transaction, in order, and commits them together: one fsync for
//! the batch instead of one per write. Each caller is answered only after the
//! commit that holds its write, so an acknowledged write survives a crash exactly
//! as before; under a boot storm (thousands of claims and reports at once) the
//! store commits hundreds of writes per fsync instead of queueing them. A write
//! that fails on a logical check (a stale version, a taken MAC) changes nothing
//! and fails alone; a storage error fails its whole batch.

use crate::StoreError;
use crate::common::{
    FEED_CAPACITY, Migration, check_key, decode_key, encode_key, index_diff, kind_prefix,
    pending_migrations, taken,
};
use async_trait::async_trait;
use jiff::Timestamp;
use redb::{
    Database, MultimapTableDefinition, ReadableDatabase, ReadableMultimapTable, ReadableTable,
    TableDefinition, TableHandle, WriteTransaction,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tinker_core::model::{Hardware, Kind, Object, ObjectKey, Workflow};
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
/// Prefix of a machine's event counter in `meta`.
const EVENT_COUNT: &str = "event_count/";
const SCHEMA_VERSION_KEY: &str = "schema_version";

/// A migration step of the embedded store: runs inside the open's write transaction.
type RedbStep = fn(&WriteTransaction) -> std::result::Result<(), redb::Error>;

/// The embedded store's schema, step by step; the last `to` is the version written.
const MIGRATIONS: &[Migration<RedbStep>] = &[Migration {
    to: 1,
    what: "create the objects, index, events and meta tables",
    step: create_tables_v1,
}];

/// Version 1: the tables, created once so readers never meet a missing one.
fn create_tables_v1(txn: &WriteTransaction) -> std::result::Result<(), redb::Error> {
    txn.open_table(OBJECTS)?;
    txn.open_multimap_table(INDEX)?;
    txn.open_table(EVENTS)?;
    txn.open_table(META)?;
    Ok(())
}

/// Brings the file to the newest schema of `steps` in one write transaction;
/// returns the version it was found at.
fn migrate(db: &Database, path: &Path, steps: &[Migration<RedbStep>]) -> Result<u32> {
    let store = path.display().to_string();
    let txn = db.begin_write().map_err(db_err)?;
    let recorded = {
        let meta = txn.open_table(META).map_err(db_err)?;
        meta.get(SCHEMA_VERSION_KEY)
            .map_err(db_err)?
            .map(|v| v.value())
    };
    let found = match recorded {
        Some(v) => u32::try_from(v).unwrap_or(u32::MAX),
        // Written before versions were recorded: version 1 if it has the tables.
        None => {
            let has_objects = txn
                .list_tables()
                .map_err(db_err)?
                .any(|t| t.name() == OBJECTS.name());
            u32::from(has_objects)
        }
    };
    let pending = match pending_migrations(&store, found, steps) {
        Ok(p) => p,
        Err(e) => {
            let _ = txn.abort();
            return Err(e.into_core("redb"));
        }
    };
    let mut from = found;
    for m in pending {
        tracing::info!(store = %store, from, to = m.to, what = m.what, "migrating the embedded store");
        (m.step)(&txn).map_err(|e| {
            StoreError::MigrationFailed {
                store: store.clone(),
                from: found,
                to: m.to,
                what: m.what,
                source: e.into(),
            }
            .into_core("redb")
        })?;
        from = m.to;
    }
    if recorded != Some(u64::from(from)) {
        let mut meta = txn.open_table(META).map_err(db_err)?;
        meta.insert(SCHEMA_VERSION_KEY, u64::from(from))
            .map_err(db_err)?;
    }
    txn.commit().map_err(db_err)?;
    Ok(found)
}

/// The embedded persistent [`WorkflowStore`], in one redb file.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    path: PathBuf,
    feed: broadcast::Sender<Change>,
    writer: Arc<Writer>,
    event_cap: usize,
    readers: Arc<Readers>,
}

type ReadJob = Box<dyn FnOnce(&Database) + Send>;

/// The store's own reader threads, a fixed few: reads wait in their queue
/// rather than each taking one of tokio's blocking threads. Unbounded, a boot
/// storm started hundreds of those (tokio allows 512), each with its stack
/// and, under glibc, a malloc arena that keeps its peak: over 1 GiB at 20,000
/// machines (BENCHMARKS.md, "Boot storm"). When the last handle goes, the
/// queue closes and the threads are joined.
struct Readers {
    jobs: std::sync::Mutex<Option<std::sync::mpsc::Sender<ReadJob>>>,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Readers {
    fn start(db: &Arc<Database>, n: usize) -> std::io::Result<Readers> {
        let (tx, rx) = std::sync::mpsc::channel::<ReadJob>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let mut threads = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let (db, rx) = (db.clone(), rx.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("redb-reader-{i}"))
                    .spawn(move || {
                        loop {
                            // The lock is held only to take one job.
                            let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            match job {
                                Ok(job) => job(&db),
                                Err(_) => return,
                            }
                        }
                    })?,
            );
        }
        Ok(Readers {
            jobs: std::sync::Mutex::new(Some(tx)),
            threads: std::sync::Mutex::new(threads),
        })
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        drop(self.jobs.lock().ok().and_then(|mut j| j.take()));
        for t in self
            .threads
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
        {
            let _ = t.join();
        }
    }
}

/// A read the readers dropped unrun (the store is closing) or that panicked.
#[derive(Debug, thiserror::Error)]
#[error("the read was dropped unrun (the store is closing) or panicked")]
struct ReadDropped;

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
    finish: Box<dyn FnOnce(std::result::Result<(), BatchFailure>) + Send>,
    /// It wrote something (a batch of no-ops is not committed).
    wrote: bool,
    /// It failed on storage, possibly after writing part: the batch is abandoned.
    storage_failed: bool,
}

type WriteJob = Box<dyn FnOnce(&WriteTransaction) -> JobOutcome + Send>;

/// Why a batch was not committed, shared by every write in it.
type BatchFailure = Arc<dyn std::error::Error + Send + Sync>;

/// A write the writer dropped unrun: its batch's transaction could not begin, or
/// a write of the batch panicked.
#[derive(Debug, thiserror::Error)]
#[error("the writer dropped the write (its transaction could not begin, or the batch panicked)")]
struct WriteDropped;

/// A batch abandoned because one of its writes failed on storage.
#[derive(Debug, thiserror::Error)]
#[error("another write of the batch failed on storage")]
struct StorageFailedInBatch;

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
        let committed: std::result::Result<(), BatchFailure> = if failed {
            let _ = txn.abort();
            Err(Arc::new(StorageFailedInBatch))
        } else if wrote {
            txn.commit().map_err(|e| Arc::new(e) as BatchFailure)
        } else {
            txn.abort().map_err(|e| Arc::new(e) as BatchFailure)
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

/// The store at (or the directory of) `path` could not be opened.
fn open_err(path: &Path, e: impl Into<crate::error::BoxError>) -> Error {
    StoreError::Open {
        path: path.to_path_buf(),
        source: e.into(),
    }
    .into_core("redb")
}

fn db_err(e: impl Into<redb::Error>) -> Error {
    Error::backend("redb", e.into())
}

fn json_err(e: serde_json::Error) -> Error {
    StoreError::Record(e).into_core("redb")
}

impl RedbStore {
    /// The schema version this code writes; older files are migrated on open.
    pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

    /// Reader threads per core, by default: reads are short and mostly served
    /// from the page cache, so a few per core keep the cores busy, and a read
    /// waiting its turn costs a few bytes rather than a thread.
    pub const READS_PER_CORE: usize = 4;

    /// Opens (or creates) the store file, bringing its schema up to
    /// [`Self::SCHEMA_VERSION`]. If the last process died mid-write, redb repairs
    /// the file here and the last committed state is what is read. A file written
    /// by newer code is refused with [`StoreError::SchemaTooNew`] (as the source
    /// of `Error::Backend`) and left unchanged.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path.as_ref(), MIGRATIONS).await
    }

    async fn open_with(path: &Path, steps: &'static [Migration<RedbStep>]) -> Result<Self> {
        let path = path.to_path_buf();
        let p = path.clone();
        let db = tokio::task::spawn_blocking(move || -> Result<Database> {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| open_err(dir, e))?;
            }
            let db = Database::create(&p).map_err(|e| open_err(&p, e))?;
            migrate(&db, &p, steps)?;
            Ok(db)
        })
        .await
        .map_err(|e| Error::backend("redb", e))??;
        tracing::debug!(path = %path.display(), "opened embedded store");
        let db = Arc::new(db);
        let readers = Readers::start(
            &db,
            Self::READS_PER_CORE
                * std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        )
        .map_err(|e| open_err(&path, e))?;
        let (jobs_tx, jobs) = std::sync::mpsc::channel();
        let d = db.clone();
        let thread = std::thread::Builder::new()
            .name("redb-writer".into())
            .spawn(move || writer_loop(d, jobs))
            .map_err(|e| open_err(&path, e))?;
        Ok(RedbStore {
            db,
            path,
            feed: broadcast::channel(FEED_CAPACITY).0,
            writer: Arc::new(Writer {
                jobs: std::sync::Mutex::new(Some(jobs_tx)),
                thread: std::sync::Mutex::new(Some(thread)),
            }),
            event_cap: crate::MAX_EVENTS_PER_MACHINE,
            readers: Arc::new(readers),
        })
    }

    /// Runs reads on `n` threads of its own (at least 1) instead of
    /// [`Self::READS_PER_CORE`] per core; the others wait their turn.
    pub fn with_reader_threads(mut self, n: usize) -> Result<Self> {
        self.readers = Arc::new(Readers::start(&self.db, n).map_err(|e| open_err(&self.path, e))?);
        Ok(self)
    }

    /// Keeps the newest `cap` events of each machine (at least 1) instead of
    /// [`MAX_EVENTS_PER_MACHINE`](crate::MAX_EVENTS_PER_MACHINE).
    pub fn with_event_cap(mut self, cap: usize) -> Self {
        self.event_cap = cap.max(1);
        self
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
                        (Ok(_), Err(why)) => {
                            Err(StoreError::BatchNotCommitted(why).into_core("redb"))
                        }
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
            return Err(StoreError::WriterStopped.into_core("redb"));
        }
        // The writer drops a job unrun when its batch's transaction cannot begin
        // (logged there) or a job of the batch panicked.
        rx.await
            .map_err(|_| StoreError::BatchNotCommitted(Arc::new(WriteDropped)).into_core("redb"))?
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: ReadJob = Box::new(move |db| {
            // A panicking read answers its caller with an error (the dropped
            // sender) and leaves the reader thread serving.
            if let Ok(r) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(db))) {
                let _ = tx.send(r);
            }
        });
        let queued = self
            .readers
            .jobs
            .lock()
            .ok()
            .and_then(|j| j.as_ref().map(|j| j.send(job).is_ok()))
            .unwrap_or(false);
        if !queued {
            return Err(Error::backend("redb", ReadDropped));
        }
        rx.await.map_err(|_| Error::backend("redb", ReadDropped))?
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

/// Appends `events` in `txn`, numbering them, and removes each machine's oldest
/// past `cap`.
fn append_in(txn: &WriteTransaction, events: Vec<MachineEvent>, cap: u64) -> Result<()> {
    let mut meta = txn.open_table(META).map_err(db_err)?;
    let mut table = txn.open_table(EVENTS).map_err(db_err)?;
    let mut seq = meta
        .get(EVENT_SEQ)
        .map_err(db_err)?
        .map_or(0, |v| v.value());
    let mut counts: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for mut event in events {
        seq += 1;
        event.seq = seq;
        let bytes = serde_json::to_vec(&event).map_err(json_err)?;
        let machine = event.machine;
        table
            .insert((machine.as_str(), seq), bytes.as_slice())
            .map_err(db_err)?;
        let count = match counts.get(&machine) {
            Some(c) => *c,
            // Counted before this insert, from the counter or (a file
            // written before counters) from the events themselves.
            None => match meta
                .get(format!("{EVENT_COUNT}{machine}").as_str())
                .map_err(db_err)?
            {
                Some(c) => c.value(),
                None => {
                    let all = table
                        .range((machine.as_str(), 0)..=(machine.as_str(), u64::MAX))
                        .map_err(db_err)?
                        .count() as u64;
                    all.saturating_sub(1)
                }
            },
        };
        let mut count = count + 1;
        while count > cap {
            let oldest = table
                .range((machine.as_str(), 0)..=(machine.as_str(), u64::MAX))
                .map_err(db_err)?
                .next()
                .transpose()
                .map_err(db_err)?
                .map(|(k, _)| k.value().1);
            let Some(oldest) = oldest else { break };
            table.remove((machine.as_str(), oldest)).map_err(db_err)?;
            count -= 1;
        }
        counts.insert(machine, count);
    }
    meta.insert(EVENT_SEQ, seq).map_err(db_err)?;
    for (machine, count) in counts {
        meta.insert(format!("{EVENT_COUNT}{machine}").as_str(), count)
            .map_err(db_err)?;
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

    async fn workflows_for_worker(&self, worker: &str) -> Result<Vec<Versioned<Workflow>>> {
        let term = IndexTerm::Worker(worker.to_string()).as_key();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let index = txn.open_multimap_table(INDEX).map_err(db_err)?;
            let objects = txn.open_table(OBJECTS).map_err(db_err)?;
            let mut found = Vec::new();
            for k in index.get(term.as_str()).map_err(db_err)? {
                let k = k.map_err(db_err)?;
                let Some(v) = objects.get(k.value()).map_err(db_err)? else {
                    continue;
                };
                let stored: Versioned<Object> =
                    serde_json::from_slice(v.value()).map_err(json_err)?;
                found.extend(stored.into_workflow());
            }
            Ok(found)
        })
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
                            && s.claimable(&w, r.as_deref(), now)
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

    async fn append_event(&self, event: MachineEvent) -> Result<()> {
        self.append_events(vec![event]).await
    }

    async fn append_events(&self, events: Vec<MachineEvent>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let cap = self.event_cap as u64;
        self.write(move |txn| {
            append_in(txn, events, cap)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const MARKER: TableDefinition<&str, u64> = TableDefinition::new("marker");

    fn add_marker(txn: &WriteTransaction) -> std::result::Result<(), redb::Error> {
        txn.open_table(MARKER)?.insert("v2", 2)?;
        Ok(())
    }

    fn fail_after_writing(txn: &WriteTransaction) -> std::result::Result<(), redb::Error> {
        add_marker(txn)?;
        Err(redb::Error::TableDoesNotExist(
            "what the step needed".into(),
        ))
    }

    /// The code's steps plus one more, as the next schema version will add.
    static WITH_V2: [Migration<RedbStep>; 2] = [
        MIGRATIONS[0],
        Migration {
            to: 2,
            what: "add the marker",
            step: add_marker,
        },
    ];

    static FAILING_V2: [Migration<RedbStep>; 2] = [
        MIGRATIONS[0],
        Migration {
            to: 2,
            what: "a step that fails",
            step: fail_after_writing,
        },
    ];

    fn recorded_version(path: &Path) -> Option<u64> {
        let db = Database::create(path).unwrap();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        meta.get(SCHEMA_VERSION_KEY).unwrap().map(|v| v.value())
    }

    fn has_marker(path: &Path) -> bool {
        let db = Database::create(path).unwrap();
        let txn = db.begin_read().unwrap();
        txn.open_table(MARKER).is_ok()
    }

    fn backend_source(e: &Error) -> &StoreError {
        let Error::Backend { source, .. } = e else {
            panic!("expected a backend error, got {e:?}");
        };
        source.downcast_ref::<StoreError>().expect("a StoreError")
    }

    #[tokio::test]
    async fn events_written_before_the_counters_are_counted_and_bounded() {
        use tinker_core::store::{EventKind, EventSource};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let note = |i: usize| {
            MachineEvent::new(
                Timestamp::UNIX_EPOCH,
                "default/old",
                EventSource::Engine,
                EventKind::Note {
                    message: format!("{i}"),
                },
            )
        };
        {
            let store = RedbStore::open(&path).await.unwrap();
            store
                .append_events((0..10).map(note).collect())
                .await
                .unwrap();
        }
        // As a file written before the counters were kept: no counter.
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .remove("event_count/default/old")
                .unwrap()
                .expect("the counter was kept");
            txn.commit().unwrap();
        }
        let store = RedbStore::open(&path).await.unwrap().with_event_cap(4);
        store.append_event(note(10)).await.unwrap();
        let kept = store.events("default/old", 100).await.unwrap();
        let seqs: Vec<u64> = kept.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [8, 9, 10, 11], "the newest four of eleven");
    }

    #[tokio::test]
    async fn a_new_file_gets_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        drop(RedbStore::open(&path).await.unwrap());
        assert_eq!(recorded_version(&path), Some(1));
        assert_eq!(RedbStore::SCHEMA_VERSION, 1);
    }

    #[tokio::test]
    async fn the_next_step_runs_once_and_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        drop(RedbStore::open(&path).await.unwrap());
        drop(RedbStore::open_with(&path, &WITH_V2).await.unwrap());
        assert_eq!(recorded_version(&path), Some(2));
        assert!(has_marker(&path));
        // Opening again finds version 2, so no step is pending.
        let db = Database::create(&path).unwrap();
        assert_eq!(migrate(&db, &path, &WITH_V2).unwrap(), 2);
    }

    #[tokio::test]
    async fn a_failed_step_leaves_the_file_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        drop(RedbStore::open(&path).await.unwrap());
        let e = RedbStore::open_with(&path, &FAILING_V2).await.unwrap_err();
        let StoreError::MigrationFailed { from, to, what, .. } = backend_source(&e) else {
            panic!("expected MigrationFailed, got {e}");
        };
        assert_eq!((*from, *to, *what), (1, 2, "a step that fails"));
        assert_eq!(recorded_version(&path), Some(1));
        assert!(
            !has_marker(&path),
            "the failed step's writes were rolled back"
        );
        // The file still opens with the code it belongs to.
        drop(RedbStore::open(&path).await.unwrap());
    }

    #[tokio::test]
    async fn a_file_newer_than_the_code_is_refused_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        drop(RedbStore::open_with(&path, &WITH_V2).await.unwrap());
        let e = RedbStore::open(&path).await.unwrap_err();
        let StoreError::SchemaTooNew {
            found, supported, ..
        } = backend_source(&e)
        else {
            panic!("expected SchemaTooNew, got {e}");
        };
        assert_eq!((*found, *supported), (2, 1));
        assert!(e.to_string().contains("newer than this code"), "{e}");
        assert_eq!(recorded_version(&path), Some(2));
    }
}
