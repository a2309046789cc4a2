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
//!   queue is taken before the write ([`Announcer::reserve`]), so a write
//!   that lands is announced even if its caller is dropped mid-write; one
//!   whose answer never came is announced only if the database shows it
//!   landed ([`Notice::IfLanded`]). A control plane that stops between the
//!   commit and the send leaves that write unannounced: the other replicas
//!   learn of it as of a change made while their feed was down (copies and
//!   caches age out, waiters reach their deadline, the engine sweeps), and no
//!   write is lost, each being conditional on the version it read.
//! - Two stores' announcements can cross; the feed's readers keep the newest
//!   version they heard of.
//! - A notice the database refuses (it cannot be, as payloads are checked
//!   before their write, but a database may be read-only after a failover)
//!   is dropped with a warning rather than retried forever: the queue behind
//!   it must move.

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
/// they were made, and folds identical ones into one).
const NOTIFY_MANY: &str = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p";

/// A write whose answer never came, announced if its row shows it landed:
/// at its version or past it (a deletion: the row gone, or past it).
const NOTIFY_IF_WRITTEN: &str = "SELECT pg_notify($1, $2) \
    WHERE EXISTS (SELECT 1 FROM objects WHERE key = $3 AND version >= $4)";
const NOTIFY_IF_DELETED: &str = "SELECT pg_notify($1, $2) \
    WHERE NOT EXISTS (SELECT 1 FROM objects WHERE key = $3 AND version <= $4)";

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
        let mut permits = Vec::with_capacity(if_dropped.len());
        for _ in 0..if_dropped.len() {
            // Closed only if the task panicked: nothing to announce to then.
            match self.queue.reserve().await {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
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
    while waiting.recv_many(&mut batch, BATCH).await > 0 {
        let mut tries_after_close = 0;
        loop {
            let sent = match &sender {
                Some(c) => c.send(channel, &batch).await,
                None => match Connection::open(&config).await {
                    Ok(c) => sender.insert(c).send(channel, &batch).await,
                    Err(reason) => Err(reason),
                },
            };
            let Err(reason) = sent else {
                backoff.reset();
                break;
            };
            // Resent whole from a new connection: a notice sent twice says
            // the same version twice, which every reader takes as once.
            sender = None;
            if waiting.is_closed() {
                tries_after_close += 1;
                if tries_after_close >= TRIES_AFTER_CLOSE {
                    tracing::warn!(
                        %reason,
                        dropped = batch.len() + waiting.len(),
                        "the store is gone and PostgreSQL does not answer: its last changes are not announced"
                    );
                    return;
                }
            }
            let pause = backoff.next_delay();
            tracing::warn!(%reason, retry_in = ?pause, "announcing PostgreSQL changes failed; connecting again");
            tokio::time::sleep(pause).await;
        }
        batch.clear();
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

    /// Sends `notices` in order: each run of landed ones in one statement,
    /// each unsure one alone. `Err`: the connection failed (send them all
    /// again on another). A statement the database refuses is sent again
    /// one notice at a time, and a notice it refuses alone is dropped with a
    /// warning.
    async fn send(&self, channel: &str, notices: &[Notice]) -> Result<(), String> {
        let mut rest = notices;
        while let Some(first) = rest.first() {
            let run = match first {
                Notice::Landed(_) => rest
                    .iter()
                    .take_while(|n| matches!(n, Notice::Landed(_)))
                    .count(),
                Notice::IfLanded { .. } => 1,
            };
            let (now, later) = rest.split_at(run);
            if let Refused::Yes(e) = self.execute(channel, now).await? {
                if now.len() == 1 {
                    tracing::warn!(error = %e, "PostgreSQL refused a change's announcement; dropped");
                } else {
                    for one in now.chunks(1) {
                        if let Refused::Yes(e) = self.execute(channel, one).await? {
                            tracing::warn!(error = %e, "PostgreSQL refused a change's announcement; dropped");
                        }
                    }
                }
            }
            rest = later;
        }
        Ok(())
    }

    /// One statement for `notices` (a run of landed ones, or one unsure).
    async fn execute(&self, channel: &str, notices: &[Notice]) -> Result<Refused, String> {
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
                    self.client
                        .execute(statement, &[&channel, payload, key, &version])
                        .await
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
                        .await
                }
            }
        };
        match tokio::time::timeout(SEND_TIMEOUT, sending).await {
            Err(_) => Err(format!("no answer within {SEND_TIMEOUT:?}")),
            Ok(Ok(_)) => Ok(Refused::No),
            // The database answered, and said no.
            Ok(Err(e)) if e.code().is_some() => Ok(Refused::Yes(e)),
            Ok(Err(e)) => Err(e.to_string()),
        }
    }
}

/// Whether the database refused a statement (its error), as opposed to the
/// connection failing.
enum Refused {
    No,
    Yes(tokio_postgres::Error),
}
