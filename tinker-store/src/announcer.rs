//! Announcements of committed writes, sent after their commit, in batches,
//! on a connection of their own that does not wait for its commits to reach
//! the disk.
//!
//! Why not `pg_notify` inside the write: PostgreSQL serializes every
//! transaction that notifies, cluster-wide, from its `NOTIFY` to the end of
//! its commit (a lock on "database 0", taken in `PreCommit_Notify` and held
//! through the commit's WAL flush, so that the queue is in commit order). A
//! write that announces itself holds that lock through its own `fdatasync`,
//! and no two such writes share a flush: in the boot storm, sampled from
//! `pg_stat_activity`, 85% of the active backends were waiting on that lock
//! (`Lock:object`). Here the writes commit alone (group commit works again)
//! and their announcements follow in one short transaction per batch,
//! which holds the lock for no flush (`synchronous_commit = off`: an
//! announcement is not state; the write it announces is already durable).
//!
//! What this gives up, and how it is bounded:
//! - A write and its announcement are no longer one commit. Room in the
//!   queue is taken before the write ([`Announcer::reserve`]). A write whose
//!   answer never came, or whose caller was dropped mid-write, is announced
//!   if its row shows it landed ([`Notice::IfLanded`]), checked at once and
//!   again after 1, 5 and 30 s (the write may still be waiting on a lock or
//!   the WAL); one that lands later than that is not announced. A control
//!   plane that stops between the commit and the send leaves that write
//!   unannounced: the other replicas learn of it as of a change made while
//!   their feed was down (copies and caches age out, waiters reach their
//!   deadline, the engine sweeps), and no write is lost, each being
//!   conditional on the version it read.
//! - Announcements can cross (two stores', or one store's from two tasks):
//!   the copies and the waiters keep the newest version they heard of. Not
//!   handled: an update heard after a deletion and a re-creation of the same
//!   object leaves that newer version in force until the object passes it
//!   (copies of it are not used, waiters below it are woken at once).
//! - A notice the database refuses (payloads are checked before their
//!   write, but a NOTIFY queue can be full, or a database read-only after a
//!   failover) is dropped with a warning rather than retried forever: the
//!   queue behind it must move. While the database cannot be reached the
//!   announcer retries with backoff up to 30 s, and announcements wait.

use futures_util::FutureExt;
use std::time::Duration;
use tinker_core::retry::{Backoff, BackoffConfig};
use tokio::sync::mpsc;

/// Notices sent in one transaction, at most.
const BATCH: usize = 256;

/// Notices waiting to be sent, at most; a writer beyond it waits for room
/// before it writes (the database is then slower than the writes, which it
/// also takes).
const QUEUE: usize = 16_384;

/// How long one send may take before its connection is given up.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// After the store is gone, how many failed sends the rest of the queue is
/// given before it is dropped.
const TRIES_AFTER_CLOSE: u32 = 5;

/// One statement for a batch: each payload notified on the channel, in
/// order (PostgreSQL delivers a transaction's notifications in the order
/// they were made, and folds identical ones into one: see
/// [`Connection::send`]).
const NOTIFY_MANY: &str = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p";

/// A write whose answer never came, announced if its row shows it landed:
/// at its version or past it; a deletion, if the row is no longer at the
/// version deleted (gone, re-created, or written past: a deletion that did
/// not land but is announced costs its readers a read, one missed would
/// keep them believing in the object).
const NOTIFY_IF_WRITTEN: &str = "SELECT pg_notify($1, $2) \
    WHERE EXISTS (SELECT 1 FROM objects WHERE key = $3 AND version >= $4)";
const NOTIFY_IF_DELETED: &str = "SELECT pg_notify($1, $2) \
    WHERE NOT EXISTS (SELECT 1 FROM objects WHERE key = $3 AND version = $4)";

/// What the announcer sends.
#[derive(Debug, Clone)]
pub(crate) enum Notice {
    /// A committed write's payload.
    Landed(String),
    /// The payload of a write whose answer never came: sent if the row at
    /// `key` shows it landed.
    IfLanded {
        payload: String,
        key: String,
        version: u64,
        deleted: bool,
    },
}

impl Notice {
    /// What is notified.
    pub(crate) fn into_payload(self) -> String {
        match self {
            Notice::Landed(payload) | Notice::IfLanded { payload, .. } => payload,
        }
    }

    /// The same notice with another payload (one that says more of the
    /// write, once its answer came).
    pub(crate) fn with_payload(self, payload: String) -> Notice {
        match self {
            Notice::Landed(_) => Notice::Landed(payload),
            Notice::IfLanded {
                key,
                version,
                deleted,
                ..
            } => Notice::IfLanded {
                payload,
                key,
                version,
                deleted,
            },
        }
    }
}

/// The sending end: cheap to clone, shared by a store's writers.
#[derive(Clone, Debug)]
pub(crate) struct Announcer {
    queue: mpsc::Sender<Notice>,
}

impl Announcer {
    /// Starts the task that sends, on `channel`, through connections made
    /// from `config` (a connection is made at the first notice, and again
    /// after one fails). The task ends once every `Announcer` is gone and
    /// what they queued is sent (or could not be, [`TRIES_AFTER_CLOSE`]
    /// times).
    pub(crate) fn start(config: tokio_postgres::Config, channel: &'static str) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        tokio::spawn(run(config, channel, waiting));
        Announcer { queue }
    }

    /// Room for the notices of writes about to be made, one per entry of
    /// `if_dropped`: what is sent for each if the [`Reserved`] is dropped
    /// before it says how the writes ended (the caller dropped mid-write).
    pub(crate) async fn reserve(&self, if_dropped: Vec<Notice>) -> Reserved<'_> {
        // All at once (callers taking theirs one by one could each hold part
        // of a full queue); never more than the queue holds. An error: the
        // task is gone (it panicked), nothing to announce to.
        let permits = match self.queue.reserve_many(if_dropped.len().min(QUEUE)).await {
            Ok(permits) => permits.collect(),
            Err(_) => Vec::new(),
        };
        Reserved {
            permits,
            if_dropped,
        }
    }
}

/// Room taken in the queue for some writes' notices.
pub(crate) struct Reserved<'a> {
    permits: Vec<mpsc::Permit<'a, Notice>>,
    if_dropped: Vec<Notice>,
}

impl Reserved<'_> {
    /// The writes landed: their notices, in order.
    pub(crate) fn landed(mut self, payloads: impl IntoIterator<Item = String>) {
        for (permit, payload) in std::mem::take(&mut self.permits).into_iter().zip(payloads) {
            permit.send(Notice::Landed(payload));
        }
    }

    /// The writes' answers never came: each is announced if it landed
    /// (what a drop sends).
    pub(crate) fn unsure(self) {}

    /// The writes surely did not land: nothing to announce.
    pub(crate) fn none(mut self) {
        self.permits.clear();
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        for (permit, notice) in self.permits.drain(..).zip(self.if_dropped.drain(..)) {
            permit.send(notice);
        }
    }
}

/// When an unsure notice whose row did not show its write yet is checked
/// again, after its first check: its write may still be under way (waiting
/// for a row lock or the WAL) when its caller gave up.
const RECHECKS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
];

async fn run(
    config: tokio_postgres::Config,
    channel: &'static str,
    mut waiting: mpsc::Receiver<Notice>,
) {
    let mut sender: Option<Connection> = None;
    let mut backoff = Backoff::new(BackoffConfig::new(
        Duration::from_millis(100),
        Duration::from_secs(30),
    ));
    let mut batch = Vec::with_capacity(BATCH);
    // Unsure notices to check again: when, and how many checks they had.
    let mut later: Vec<(tokio::time::Instant, usize, Notice)> = Vec::new();
    let mut checks = Vec::with_capacity(BATCH);
    let mut closed = false;
    loop {
        let next = later.iter().map(|(at, ..)| *at).min();
        tokio::select! {
            got = waiting.recv_many(&mut batch, BATCH), if !closed => {
                closed = got == 0;
                checks.extend(std::iter::repeat_n(0, got));
            }
            () = tokio::time::sleep_until(next.unwrap_or_else(tokio::time::Instant::now)), if next.is_some() => {
                let now = tokio::time::Instant::now();
                let (due, not_yet): (Vec<_>, Vec<_>) = later.drain(..).partition(|(at, ..)| *at <= now);
                later = not_yet;
                for (_, done, notice) in due {
                    batch.push(notice);
                    checks.push(done);
                }
            }
        }
        if batch.is_empty() {
            // The queue closed (and rechecks may still be due), or nothing
            // came: no connection is made for nothing.
            if closed && later.is_empty() {
                return;
            }
            continue;
        }
        let mut tries_after_close = 0;
        let not_yet = loop {
            let sent = match &sender {
                Some(c) => c.send(channel, &batch).await,
                None => match Connection::open(&config).await {
                    Ok(c) => sender.insert(c).send(channel, &batch).await,
                    Err(reason) => Err(reason),
                },
            };
            let reason = match sent {
                Ok(not_yet) => {
                    backoff.reset();
                    break not_yet;
                }
                Err(reason) => reason,
            };
            // Resent whole from a new connection: a notice sent twice says
            // the same version twice, which every reader takes as once.
            sender = None;
            if waiting.is_closed() {
                tries_after_close += 1;
                if tries_after_close >= TRIES_AFTER_CLOSE {
                    tracing::warn!(
                        %reason,
                        dropped = batch.len() + waiting.len() + later.len(),
                        "the store is gone and PostgreSQL does not answer: its last changes are not announced"
                    );
                    return;
                }
            }
            let pause = backoff.next_delay();
            tracing::warn!(%reason, retry_in = ?pause, "announcing PostgreSQL changes failed; connecting again");
            tokio::time::sleep(pause).await;
        };
        let now = tokio::time::Instant::now();
        for at in not_yet {
            let done = checks[at];
            if let Some(wait) = RECHECKS.get(done) {
                later.push((now + *wait, done + 1, batch[at].clone()));
            }
        }
        batch.clear();
        checks.clear();
    }
}

/// The announcer's connection, and its statement for batches (the unsure
/// notices' statements, rare, are prepared when sent: prepared here, they
/// would wait for any lock on the objects table at every connect).
struct Connection {
    client: tokio_postgres::Client,
    notify_many: tokio_postgres::Statement,
}

impl Connection {
    /// A connection whose commits do not wait for the disk, within
    /// `CONNECT_TIMEOUT`.
    async fn open(config: &tokio_postgres::Config) -> Result<Connection, String> {
        let opening = async {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(connection.map(drop));
            client.batch_execute("SET synchronous_commit = off").await?;
            Ok::<_, tokio_postgres::Error>(Connection {
                notify_many: client.prepare(NOTIFY_MANY).await?,
                client,
            })
        };
        let timeout = crate::PostgresStore::CONNECT_TIMEOUT;
        match tokio::time::timeout(timeout, opening).await {
            Ok(opened) => opened.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }

    /// Sends `notices` in order: each run of landed ones in one statement
    /// (a run ends before a payload it already holds: PostgreSQL folds a
    /// transaction's identical notifications into one, and a create, a
    /// deletion and the same create again must reach the feed as three),
    /// each unsure one alone. `Ok`: the places of the unsure notices whose
    /// row did not show their write. `Err`: the connection failed (send them
    /// all again on another). A statement the database refuses is sent
    /// again one notice at a time, and a notice it refuses alone is dropped
    /// with a warning.
    async fn send(&self, channel: &str, notices: &[Notice]) -> Result<Vec<usize>, String> {
        let mut not_yet = Vec::new();
        let mut at = 0;
        while at < notices.len() {
            let run = match &notices[at] {
                Notice::Landed(_) => {
                    let mut seen = std::collections::HashSet::new();
                    notices[at..]
                        .iter()
                        .take_while(|n| match n {
                            Notice::Landed(p) => seen.insert(p.as_str()),
                            Notice::IfLanded { .. } => false,
                        })
                        .count()
                }
                Notice::IfLanded { .. } => 1,
            };
            let now = &notices[at..at + run];
            match self.execute(channel, now).await? {
                Sent::Yes => {}
                Sent::NotYet => not_yet.push(at),
                Sent::Refused(e) if now.len() == 1 => {
                    tracing::warn!(error = %e, "PostgreSQL refused a change's announcement; dropped");
                }
                Sent::Refused(_) => {
                    for one in now.chunks(1) {
                        if let Sent::Refused(e) = self.execute(channel, one).await? {
                            tracing::warn!(error = %e, "PostgreSQL refused a change's announcement; dropped");
                        }
                    }
                }
            }
            at += run;
        }
        Ok(not_yet)
    }

    /// One statement for `notices` (a run of landed ones, or one unsure).
    async fn execute(&self, channel: &str, notices: &[Notice]) -> Result<Sent, String> {
        let sending = async {
            match notices {
                [
                    Notice::IfLanded {
                        payload,
                        key,
                        version,
                        deleted,
                    },
                ] => {
                    let statement = if *deleted {
                        NOTIFY_IF_DELETED
                    } else {
                        NOTIFY_IF_WRITTEN
                    };
                    let version = *version as i64;
                    let rows = self
                        .client
                        .execute(statement, &[&channel, payload, key, &version])
                        .await?;
                    Ok(if rows == 0 { Sent::NotYet } else { Sent::Yes })
                }
                _ => {
                    let payloads: Vec<&str> = notices
                        .iter()
                        .filter_map(|n| match n {
                            Notice::Landed(p) => Some(p.as_str()),
                            Notice::IfLanded { .. } => None,
                        })
                        .collect();
                    self.client
                        .execute(&self.notify_many, &[&channel, &payloads])
                        .await?;
                    Ok(Sent::Yes)
                }
            }
        };
        match tokio::time::timeout(SEND_TIMEOUT, sending).await {
            Err(_) => Err(format!("no answer within {SEND_TIMEOUT:?}")),
            Ok(Ok(sent)) => Ok(sent),
            Ok(Err(e)) if said_no(&e) => Ok(Sent::Refused(e)),
            Ok(Err(e)) => Err(e.to_string()),
        }
    }
}

/// How one statement of notices went.
enum Sent {
    Yes,
    /// An unsure notice whose row does not show its write (yet).
    NotYet,
    /// The database refused the statement (its error).
    Refused(tokio_postgres::Error),
}

/// Whether `e` is the database refusing a statement, with the session going
/// on (an ERROR: nothing of it was done), as opposed to the connection
/// failing or the server ending the session (no answer, or a FATAL such as
/// a shutdown's, which can come after a commit that landed).
pub(crate) fn said_no(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::Severity;
    e.as_db_error().is_some_and(|db| {
        !matches!(
            db.parsed_severity(),
            Some(Severity::Fatal | Severity::Panic)
        )
    })
}
