//! `PostgresStore`: the store for several control-plane replicas, on PostgreSQL.
//!
//! - Optimistic concurrency: a `version` column. A write of an object at the
//!   version its writer read (`Precondition::Version`, an event, a claim) is
//!   one statement that updates the row only if it is still at that version,
//!   and its index terms only if it was (`swap`): one round trip and one
//!   commit. Other writes check the version under `SELECT ... FOR
//!   UPDATE` in a transaction.
//! - Claims and events read, decide in Rust, and write back with `swap`; one
//!   that finds its workflow written in between reads again, and after
//!   `OPTIMISTIC_TRIES` races takes row locks that do not block other workers
//!   (`FOR UPDATE SKIP LOCKED` over the worker's workflows), so two replicas
//!   serving the same worker never hand out one action twice.
//! - The change feed is `LISTEN/NOTIFY`, so every replica sees every
//!   replica's writes; each announcement names the store that wrote it. A
//!   write is announced after its commit, in a batch with others, on a
//!   connection of its own ([`Announcer`]): a `NOTIFY` inside the write
//!   would hold PostgreSQL's cluster-wide notify lock through the write's
//!   WAL flush, one committing write at a time.
//! - Copies of the workflows this store wrote alone in a statement or read,
//!   dropped by other replicas' announcements and by its own writes in a
//!   transaction ([`Copies`]): a long poll's look at a worker's workflows and
//!   `recent_workflow` are answered from them, and an event after the store's
//!   own write starts from its copy.
//! - Uniqueness of MACs and IP addresses is a partial unique index, so two replicas
//!   racing to register the same MAC cannot both win.
//!
//! The schema is created and upgraded by [`PostgresStore::connect`]: `MIGRATIONS`
//! lists the steps from each version to the next; the missing ones run in one
//! transaction under an advisory lock (so one replica migrates while the others
//! wait), and `schema_migrations` records each version reached. A database newer
//! than the code is refused ([`StoreError::SchemaTooNew`]) and not changed. No
//! transaction is held across anything but its own statements.
//! - A call waits for a pooled connection at most
//!   [`PostgresStore::POOL_WAIT`] (or [`PostgresStore::with_pool_wait`]'s
//!   time) and for a new one at most [`PostgresStore::CONNECT_TIMEOUT`], then
//!   fails with [`Error::Unreachable`]: with a
//!   database that hangs, requests end (the worker API answers 503 and the
//!   agent backs off) instead of piling up for as long as it hangs.

use crate::StoreError;
use crate::announcer::{Announcer, Notice, Reserved, said_no};
use crate::common::{
    FEED_CAPACITY, Migration, check_key, encode_key, index_diff, kind_prefix, pending_migrations,
    taken,
};
use crate::copies::{Copies, Writer};
use async_trait::async_trait;
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, Timeouts,
    Transaction,
};
use futures_util::StreamExt;
use jiff::Timestamp;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tinker_core::model::{Hardware, Kind, Object, ObjectKey, Workflow};
use tinker_core::state::{Effect, WorkflowEvent};
use tinker_core::store::{
    Applied, Assignment, Change, IndexTerm, MachineEvent, Precondition, Versioned, WorkflowStore,
    apply_to_workflow, check_precondition, claim_in_workflow, index_terms,
};
use tinker_core::{Error, MacAddr, Result};
use tokio::sync::broadcast;
use tokio_postgres::Row;
use tokio_postgres::types::{Json, ToSql};

const CHANNEL: &str = "tinker_changes";

const POOL_SIZE: usize = PostgresStore::POOL_SIZE;
const POOL_WAIT: Duration = PostgresStore::POOL_WAIT;
const CONNECT_TIMEOUT: Duration = PostgresStore::CONNECT_TIMEOUT;

/// The PostgreSQL schema, step by step (SQL run in the connect transaction); the
/// last `to` is the version written.
const MIGRATIONS: &[Migration<&str>] = &[
    Migration {
        to: 1,
        what: "create the objects, index_terms and events tables",
        step: r#"
CREATE TABLE objects (
    key     TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    body    JSONB NOT NULL
);
CREATE TABLE index_terms (
    term TEXT NOT NULL,
    key  TEXT NOT NULL REFERENCES objects(key) ON DELETE CASCADE,
    PRIMARY KEY (term, key)
);
CREATE UNIQUE INDEX index_terms_unique ON index_terms (term) WHERE term NOT LIKE 'worker:%';
CREATE TABLE events (
    seq     BIGSERIAL PRIMARY KEY,
    machine TEXT NOT NULL,
    body    JSONB NOT NULL
);
CREATE INDEX events_machine ON events (machine, seq);
"#,
    },
    Migration {
        to: 2,
        what: "index the index terms by object",
        // A write replaces an object's terms by the object's key (`swap`), and a
        // deleted object's terms go by the foreign key's cascade: both look
        // terms up by key, which the primary key (term, key) does not serve.
        step: "CREATE INDEX index_terms_key ON index_terms (key);",
    },
    Migration {
        to: 3,
        what: "keep objects' bodies as JSON text, compressed with lz4",
        // Bodies are only ever stored and read whole, never queried inside:
        // as jsonb each write was parsed into jsonb's tree and each read
        // printed back to text, and a workflow's body, over the 2 KB TOAST
        // threshold, went through pglz both ways. The rewrite compresses the
        // rows already there with lz4 too (the transaction's default), and a
        // server without lz4 (built without it, or older than 14) keeps its
        // default. Replicas of the code before this step must be stopped
        // first: the statements they prepared read jsonb, and PostgreSQL
        // refuses them once the column's type changes.
        step: "DO $$ BEGIN
                   SET LOCAL default_toast_compression = 'lz4';
               EXCEPTION WHEN invalid_parameter_value OR undefined_object THEN
                   RAISE NOTICE 'lz4 is not available: bodies keep the default compression';
               END $$;
               ALTER TABLE objects ALTER COLUMN body TYPE json USING body::json;
               DO $$ BEGIN
                   ALTER TABLE objects ALTER COLUMN body SET COMPRESSION lz4;
               EXCEPTION WHEN feature_not_supported OR syntax_error THEN
                   NULL;
               END $$;",
    },
];

/// `postgres://host:port/db` for errors and logs: never the user or password.
fn target_name(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("");
    format!("postgres://{host}:{port}/{db}")
}

fn pg(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::backend("postgres", e)
}

fn json_err(e: serde_json::Error) -> Error {
    StoreError::Record(e).into_core("postgres")
}

/// The PostgreSQL [`WorkflowStore`]. Keeps the newest
/// [`MAX_EVENTS_PER_MACHINE`](crate::MAX_EVENTS_PER_MACHINE) events of each
/// machine (or [`PostgresStore::with_event_cap`]'s number): each append deletes
/// what falls past the cap, in its own transaction.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    feed: broadcast::Sender<Change>,
    event_cap: usize,
    /// A call's wait for a pooled connection.
    pool_wait: Duration,
    /// What this store wrote and announces, and its copies of workflows.
    own: Arc<Own>,
}

/// This store as a writer: the name its announcements carry, and what it
/// knows of its workflows without asking ([`Copies`]).
#[derive(Debug)]
struct Own {
    /// Put in each announcement this store makes (`by`), so that its feed
    /// tells its own writes from other replicas'.
    id: u64,
    copies: Copies,
    /// Sends the announcements of writes made alone, after their commit.
    announcer: Announcer,
}

impl Own {
    fn new(announcer: Announcer) -> Self {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS once per process, and each one
        // made after differs: two stores never share a name in practice.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        Own {
            id: h.finish(),
            copies: Copies::default(),
            announcer,
        }
    }

    /// The payload of `change`'s NOTIFY, naming this store if `ours` (see
    /// [`Alone`]); `moved`: the worker terms the write changed, if known,
    /// left out if they would not fit (its readers then drop every list). An error if even the change alone
    /// would not fit (a name of thousands of bytes): checked before the
    /// write, which is then not made.
    fn announcement(
        &self,
        change: &Change,
        ours: bool,
        moved: Option<Vec<String>>,
    ) -> Result<String> {
        let payload = |moved| {
            serde_json::to_string(&Announcement {
                change: change.clone(),
                by: ours.then_some(self.id),
                moved,
            })
            .map_err(json_err)
        };
        let with_moved = moved.is_some();
        let mut made = payload(moved)?;
        if made.len() > MAX_PAYLOAD && with_moved {
            made = payload(None)?;
        }
        if made.len() > MAX_PAYLOAD {
            return Err(StoreError::AnnouncementTooLong {
                key: change.key.to_string(),
                bytes: made.len(),
                max: MAX_PAYLOAD,
            }
            .into_core("postgres"));
        }
        Ok(made)
    }

    /// `change`'s notice if its write's answer never came: sent if the
    /// database shows it landed.
    fn if_landed(&self, change: &Change, ours: bool) -> Result<Notice> {
        Ok(Notice::IfLanded {
            payload: self.announcement(change, ours, None)?,
            key: encode_key(&change.key),
            version: change.version,
            deleted: change.deleted,
        })
    }
}

/// The longest NOTIFY payload PostgreSQL takes is 7,999 bytes.
const MAX_PAYLOAD: usize = 7_999;

/// Whether a write is alone in its statement (autocommitted, its answer
/// telling whether it landed), or part of a transaction. A write in a
/// transaction is not kept as a copy (the transaction may still roll back,
/// or commit unseen), and is announced without the store's name, so that
/// its announcement drops the copy and the lists as another's would; its
/// announcement waits in the transaction's [`Deferred`] for the commit.
#[derive(Debug, Clone, Copy)]
enum Alone<'a> {
    Yes,
    InTransaction(&'a Deferred),
}

/// The notices of a transaction's writes (as [`Notice::IfLanded`], until
/// the commit says), sent once it has committed (see [`Own::commit`]).
#[derive(Debug, Default)]
struct Deferred(std::sync::Mutex<Vec<Notice>>);

impl Deferred {
    fn push(&self, notice: Notice) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(notice);
    }
}

impl Own {
    /// Commits `tx`, forgets the copies at `forget` (read-your-writes: gone
    /// before the writes are announced, even after an error, as the commit
    /// may have landed), then queues its writes' notices: as landed if it
    /// committed, as unsure if its answer never came. Room in the queue is
    /// taken before the commit, so a call dropped during it still announces.
    /// A store's notices go through one queue: writes made one after another
    /// are announced in that order.
    async fn commit(
        &self,
        tx: Transaction<'_>,
        deferred: Deferred,
        forget: &[String],
    ) -> std::result::Result<(), tokio_postgres::Error> {
        let notices = deferred.0.into_inner().unwrap_or_else(|e| e.into_inner());
        let reserved = self.announcer.reserve(notices.clone()).await;
        let committed = tx.commit().await;
        for k in forget {
            self.copies.forget(k);
        }
        match &committed {
            Ok(()) => reserved.landed(notices.into_iter().map(Notice::into_payload)),
            Err(e) if said_no(e) => reserved.none(),
            Err(_) => reserved.unsure(),
        }
        committed
    }
}

/// A NOTIFY's payload: the change, and which store made it (absent from
/// the announcements of versions before it was added, and from writes in a
/// transaction).
#[derive(serde::Serialize, serde::Deserialize)]
struct Announcement {
    #[serde(flatten)]
    change: Change,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    by: Option<u64>,
    /// The worker terms a conditional write changed, as [`SWAP`]'s row
    /// listed them (none if they would not fit in NOTIFY's 8,000 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    moved: Option<Vec<String>>,
}

/// The feed's first pause before listening again, its longest, and how long
/// a connection lasts before the pause starts over.
const FEED_FIRST_PAUSE: Duration = Duration::from_millis(500);
const FEED_MAX_PAUSE: Duration = Duration::from_secs(30);
const FEED_STEADY: Duration = Duration::from_secs(30);

/// A LISTENing connection: its client (the connection closes without it)
/// and its messages (polling them drives the connection).
struct Listening {
    _client: tokio_postgres::Client,
    messages: std::pin::Pin<
        Box<
            dyn futures_util::Stream<
                    Item = std::result::Result<tokio_postgres::AsyncMessage, tokio_postgres::Error>,
                > + Send,
        >,
    >,
}

/// Connects and LISTENs on [`CHANNEL`], within [`CONNECT_TIMEOUT`] (the
/// connect timeout of the URL covers only the TCP connect); the error says
/// why not.
async fn listen(config: &tokio_postgres::Config) -> std::result::Result<Listening, String> {
    tokio::time::timeout(CONNECT_TIMEOUT, listen_once(config))
        .await
        .map_err(|_| format!("no answer within {CONNECT_TIMEOUT:?}"))?
}

async fn listen_once(config: &tokio_postgres::Config) -> std::result::Result<Listening, String> {
    let (client, mut connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = Box::pin(futures_util::stream::poll_fn(move |cx| {
        connection.poll_message(cx)
    }));
    // Announcements that arrive with LISTEN's answer, handed on first.
    let mut early = Vec::new();
    {
        let statement = format!("LISTEN {CHANNEL}");
        let listening = client.batch_execute(&statement);
        tokio::pin!(listening);
        loop {
            tokio::select! {
                done = &mut listening => {
                    done.map_err(|e| e.to_string())?;
                    break;
                }
                message = messages.next() => match message {
                    Some(Ok(message)) => early.push(Ok(message)),
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("the connection closed".into()),
                },
            }
        }
    }
    Ok(Listening {
        _client: client,
        messages: Box::pin(futures_util::stream::iter(early).chain(messages)),
    })
}

/// The feed's task: each announcement goes to the store's copies, then to
/// its subscribers. A lost connection (a database restart, or a network cut
/// that TCP keepalives find within about a minute) is made again, after
/// 0.5 s, then twice as long each time up to 30 s (the pause starts over
/// once a connection has lasted 30 s). While it is down the copies answer
/// nothing; changes made meanwhile are not announced (see ARCHITECTURE.md
/// for who catches them, and who does not). Ends at its next announcement or
/// loss once the store is gone.
async fn run_feed(
    config: tokio_postgres::Config,
    mut listening: Listening,
    tx: broadcast::Sender<Change>,
    own: std::sync::Weak<Own>,
) {
    let mut up_since = std::time::Instant::now();
    let mut pause = FEED_FIRST_PAUSE / 2;
    loop {
        while let Some(Ok(msg)) = listening.messages.next().await {
            let Some(me) = own.upgrade() else {
                return;
            };
            if let tokio_postgres::AsyncMessage::Notification(n) = msg
                && let Ok(Announcement { change, by, moved }) = serde_json::from_str(n.payload())
            {
                // The copies first: a waiter woken by this change looks
                // again, and must not find the copy it was woken about.
                if change.key.kind == Kind::Workflow {
                    let writer = if by == Some(me.id) {
                        Writer::Us
                    } else {
                        Writer::Other
                    };
                    me.copies.announced(
                        &encode_key(&change.key),
                        change.version,
                        change.deleted,
                        writer,
                        moved.map(|terms| workers_in(&terms)),
                    );
                }
                let _ = tx.send(change);
            }
        }
        let Some(me) = own.upgrade() else {
            return;
        };
        me.copies.feed_lost();
        drop(me);
        tracing::warn!("the PostgreSQL change feed connection closed; listening again");
        // A connection that keeps dying at once is not made again at once.
        pause = if up_since.elapsed() >= FEED_STEADY {
            FEED_FIRST_PAUSE
        } else {
            (pause * 2).min(FEED_MAX_PAUSE)
        };
        listening = loop {
            tokio::time::sleep(pause).await;
            if own.strong_count() == 0 {
                return;
            }
            match listen(&config).await {
                Ok(l) => break l,
                Err(reason) => {
                    pause = (pause * 2).min(FEED_MAX_PAUSE);
                    tracing::warn!(%reason, retry_in = ?pause, "the PostgreSQL change feed cannot listen");
                }
            }
        };
        up_since = std::time::Instant::now();
        if let Some(me) = own.upgrade() {
            me.copies.feed_back();
        }
        tracing::info!(
            "the PostgreSQL change feed listens again (changes made while it was down were not announced)"
        );
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects (`postgres://user@host:port/db`), applies the migrations, and
    /// starts listening for changes. The URL may hold a password; it never appears
    /// in errors.
    pub async fn connect(url: &str) -> Result<Self> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|_| StoreError::InvalidUrl.into_core("postgres"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let options = with_generic_plans(config.get_options().unwrap_or_default());
        config.options(&options);
        let target = target_name(&config);
        let unreachable = |e: tokio_postgres::Error| Error::Unreachable {
            target: target.clone(),
            reason: e.to_string(),
        };
        let mgr = Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(pg)?;
        {
            let mut client = pool.get().await.map_err(|e| Error::Unreachable {
                target: target.clone(),
                reason: pool_error(e, POOL_WAIT),
            })?;
            let tx = client.transaction().await.map_err(unreachable)?;
            migrate(&tx, &target, MIGRATIONS).await?;
            tx.commit().await.map_err(pg)?;
        }
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        // The change feed: a connection of its own, LISTENing. The first is
        // made here (a database that cannot be listened to fails `connect`);
        // the feed's task makes the next ones when one is lost.
        // The feed's connection is idle between announcements: keepalives
        // find one cut without a word (about a minute), so it is made again.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_secs(10))
            .keepalives_retries(3);
        let first = listen(&config).await.map_err(|reason| Error::Unreachable {
            target: target.clone(),
            reason,
        })?;
        let own = Arc::new(Own::new(Announcer::start(config.clone(), CHANNEL)));
        tokio::spawn(run_feed(config, first, feed.clone(), Arc::downgrade(&own)));
        Ok(PostgresStore {
            pool,
            feed,
            event_cap: crate::MAX_EVENTS_PER_MACHINE,
            pool_wait: POOL_WAIT,
            own,
        })
    }

    /// Keeps the newest `cap` events of each machine (at least 1) instead of
    /// [`MAX_EVENTS_PER_MACHINE`](crate::MAX_EVENTS_PER_MACHINE).
    pub fn with_event_cap(mut self, cap: usize) -> Self {
        self.event_cap = cap.max(1);
        self
    }

    /// Connections in each replica's pool.
    pub const POOL_SIZE: usize = 16;

    /// How long a call waits for one of the pool's
    /// [`POOL_SIZE`](Self::POOL_SIZE) connections, by default, before it
    /// fails with [`Error::Unreachable`].
    pub const POOL_WAIT: Duration = Duration::from_secs(10);

    /// How long opening (or checking) a database connection may take, unless
    /// the URL sets `connect_timeout`.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

    /// The schema version this code writes; older databases are migrated on connect.
    pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

    /// A call waits at most `wait` for a pooled connection (instead of
    /// [`POOL_WAIT`](Self::POOL_WAIT)), then fails with [`Error::Unreachable`].
    pub fn with_pool_wait(mut self, wait: Duration) -> Self {
        self.pool_wait = wait;
        self
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        let timeouts = Timeouts {
            wait: Some(self.pool_wait),
            ..self.pool.timeouts()
        };
        self.pool
            .timeout_get(&timeouts)
            .await
            .map_err(|e| Error::Unreachable {
                target: "postgres".into(),
                reason: pool_error(e, self.pool_wait),
            })
    }
}

/// The connection's startup `options` with generic plans asked for, unless the
/// URL's own options set `plan_cache_mode` (theirs is kept). Every statement
/// is prepared once per connection and looks rows up by key or term, which
/// one plan serves whatever the value; left to itself the server planned the
/// term joins anew at each execution (custom plans): a fifth of its CPU in the
/// boot storm's profile.
fn with_generic_plans(options: &str) -> String {
    const GENERIC: &str = "-c plan_cache_mode=force_generic_plan";
    // Settings arrive as `-c name=value` or `--name=value`.
    let sets_it = options
        .split_whitespace()
        .any(|w| w.trim_start_matches('-').starts_with("plan_cache_mode="));
    match (sets_it, options.trim().is_empty()) {
        (true, _) => options.to_string(),
        (false, true) => GENERIC.to_string(),
        (false, false) => format!("{options} {GENERIC}"),
    }
}

/// Why no connection came from the pool, in words (a timeout's own message
/// does not say which wait ran out, nor how long it was).
fn pool_error(e: PoolError, wait: Duration) -> String {
    use deadpool_postgres::TimeoutType;
    match e {
        PoolError::Timeout(TimeoutType::Wait) => format!(
            "all {POOL_SIZE} database connections stayed busy for {} ms",
            wait.as_millis()
        ),
        PoolError::Timeout(TimeoutType::Create) => format!(
            "no new database connection within {} ms",
            CONNECT_TIMEOUT.as_millis()
        ),
        PoolError::Timeout(TimeoutType::Recycle) => format!(
            "a pooled database connection did not answer within {} ms",
            CONNECT_TIMEOUT.as_millis()
        ),
        other => other.to_string(),
    }
}

/// Brings the database to the newest schema of `steps` inside `tx` (committed by
/// the caller); returns the version it was found at.
async fn migrate(tx: &Transaction<'_>, store: &str, steps: &[Migration<&str>]) -> Result<u32> {
    // One replica migrates; the others wait here.
    tx.execute("SELECT pg_advisory_xact_lock(7411)", &[])
        .await
        .map_err(pg)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INT PRIMARY KEY)")
        .await
        .map_err(pg)?;
    let found: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(pg)?
        .get(0);
    let found = u32::try_from(found).unwrap_or(0);
    let mut from = found;
    for m in pending_migrations(store, found, steps).map_err(|e| e.into_core("postgres"))? {
        tracing::info!(
            store,
            from,
            to = m.to,
            what = m.what,
            "migrating the PostgreSQL store"
        );
        let failed = |e: tokio_postgres::Error| {
            StoreError::MigrationFailed {
                store: store.to_string(),
                from: found,
                to: m.to,
                what: m.what,
                source: e.into(),
            }
            .into_core("postgres")
        };
        tx.batch_execute(m.step).await.map_err(failed)?;
        let to = m.to as i32;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&to],
        )
        .await
        .map_err(failed)?;
        from = m.to;
    }
    Ok(found)
}

/// Statements run as prepared statements, prepared once per pooled connection
/// and kept there (deadpool's statement cache): PostgreSQL parses each kind
/// once per connection instead of on every call, and plans it generically
/// after a few runs, and a call costs one round trip where an unnamed
/// statement costs two.
trait Prepared: GenericClient + Sync {
    async fn execute_prepared(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<u64, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.execute(&statement, params).await
    }

    async fn query_prepared(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query(&statement, params).await
    }

    async fn query_opt_prepared(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Option<Row>, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query_opt(&statement, params).await
    }
}

impl<C: GenericClient + Sync> Prepared for C {}

async fn read_for_update(tx: &Transaction<'_>, k: &str) -> Result<Option<Versioned<Object>>> {
    let row = tx
        .query_opt_prepared(
            "SELECT version, body FROM objects WHERE key = $1 FOR UPDATE",
            &[&k],
        )
        .await
        .map_err(pg)?;
    row.map(|r| parse_row(&r, 0)).transpose()
}

/// How many times a write that found its row changed since its read (another
/// writer in between) reads and tries again before it takes the row's lock
/// instead: a few, so a busy row still ends in one locked transaction rather
/// than a retry loop.
const OPTIMISTIC_TRIES: usize = 3;

/// The one statement of [`swap`]: the row's update if it is still at the
/// version read, then (only if it was) its index terms made the new object's;
/// its one row (none if nothing was written) lists the worker terms that
/// went and came, which the announcement carries (`moved`: other replicas
/// drop only those workers' lists of workflows; none if they would not fit
/// in NOTIFY's 8,000 bytes, which drops every list). Data-modifying
/// CTEs see the statement's one snapshot, so each sub-statement keys off the
/// `updated` row, not off the table. The deleted and inserted terms never overlap: the stale ones
/// are those not among `$5`, and those of `$5` already there are left as
/// they are.
const SWAP: &str = "WITH updated AS (\
        UPDATE objects SET version = $3, body = $4 WHERE key = $1 AND version = $2 RETURNING key\
    ), stale_terms AS (\
        DELETE FROM index_terms WHERE key IN (SELECT key FROM updated) AND term <> ALL($5::text[]) \
        RETURNING term\
    ), new_terms AS (\
        INSERT INTO index_terms (term, key) SELECT t, u.key FROM updated u, unnest($5::text[]) AS t \
        ON CONFLICT (term, key) DO NOTHING RETURNING term\
    ), moved AS (\
        SELECT ARRAY(SELECT term FROM stale_terms WHERE term LIKE 'worker:%') \
            || ARRAY(SELECT term FROM new_terms WHERE term LIKE 'worker:%') AS terms\
    ) \
    SELECT m.terms FROM updated, moved m";

/// Replaces the object at `key`, if it is still at version `read`, with `new`
/// at `read + 1`: its row and its index terms in one statement, so one round
/// trip and one commit (then its announcement, queued, or deferred to the
/// transaction's commit), where a locking transaction
/// takes four round trips (BEGIN, the read `FOR UPDATE`, the writes, COMMIT).
/// `Ok(None)`: the row is gone or was written since `read` (the caller reads
/// it again). A workflow written alone (`how`) is kept in `own`'s copies at
/// its new version.
async fn swap(
    client: &impl Prepared,
    own: &Own,
    how: Alone<'_>,
    key: &ObjectKey,
    read: u64,
    new: &Object,
) -> Result<Option<u64>> {
    let k = encode_key(key);
    let version = read + 1;
    let terms: Vec<String> = index_terms(new).iter().map(IndexTerm::as_key).collect();
    let change = Change {
        key: key.clone(),
        version,
        deleted: false,
    };
    let ours = matches!(how, Alone::Yes);
    let ticket = match new {
        Object::Workflow(_) if ours => Some(own.copies.begin(&k)),
        _ => None,
    };
    // Checked before the write: a change whose announcement would not fit
    // is not made.
    let unsure = own.if_landed(&change, ours)?;
    let announce = match how {
        Alone::Yes => Announce::Now(own.announcer.reserve(vec![unsure.clone()]).await),
        Alone::InTransaction(deferred) => Announce::AtCommit(deferred),
    };
    let swapped = client
        .query_opt_prepared(
            SWAP,
            &[&k, &(read as i64), &(version as i64), &Json(new), &terms],
        )
        .await;
    match swapped {
        Ok(None) => {
            if let Some(ticket) = ticket {
                ticket.lost();
            }
            announce.none();
            Ok(None)
        }
        Ok(Some(row)) => {
            // The worker terms it came to or left; all of them if the row
            // does not say (or if they would not fit in the announcement).
            let moved = row.try_get::<_, Vec<String>>(0).ok();
            let payload = own.announcement(&change, ours, moved.clone())?;
            match announce {
                Announce::Now(reserved) => reserved.landed([payload]),
                Announce::AtCommit(deferred) => deferred.push(unsure.with_payload(payload)),
            }
            if let (Some(ticket), Object::Workflow(wf)) = (ticket, new) {
                let moved = moved.map(|terms| workers_in(&terms));
                ticket.wrote(
                    Versioned {
                        version,
                        value: wf.clone(),
                    },
                    moved,
                    Instant::now(),
                );
            }
            Ok(Some(version))
        }
        // A MAC or an IP address another object holds: the statement wrote
        // nothing; say which term and who holds it.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            announce.none();
            Err(unique_term_taken(client, key, new, e).await)
        }
        Err(e) => {
            // The database said no (an ERROR): nothing was written. No
            // answer, or the session ended (a FATAL, as at a shutdown): the
            // write may have landed, and is announced if it did.
            if said_no(&e) {
                announce.none();
            } else {
                announce.unsure();
            }
            Err(pg(e))
        }
    }
}

/// Where a [`swap`]'s announcement goes: queued as soon as its statement
/// answers (the statement is its own commit), or left to its transaction's
/// commit, which says how it ended.
enum Announce<'a> {
    Now(Reserved<'a>),
    AtCommit(&'a Deferred),
}

impl Announce<'_> {
    /// The write surely did not land.
    fn none(self) {
        if let Announce::Now(reserved) = self {
            reserved.none();
        }
    }

    /// The write's answer never came.
    fn unsure(self) {
        if let Announce::Now(reserved) = self {
            reserved.unsure();
        }
    }
}

/// The error for a write that broke `index_terms_unique`: the first of
/// `new`'s unique terms another object holds, and which object.
async fn unique_term_taken(
    client: &impl Prepared,
    key: &ObjectKey,
    new: &Object,
    violation: tokio_postgres::Error,
) -> Error {
    let k = encode_key(key);
    let unique: Vec<IndexTerm> = index_terms(new)
        .into_iter()
        .filter(IndexTerm::is_unique)
        .collect();
    for term in &unique {
        match client
            .query_opt_prepared(
                "SELECT key FROM index_terms WHERE term = $1 AND key <> $2",
                &[&term.as_key(), &k],
            )
            .await
        {
            Ok(Some(r)) => return taken(term, key, &r.get::<_, String>(0)),
            Ok(None) => {}
            Err(e) => return pg(e),
        }
    }
    // The holder let go of it in between (or the index broken was not a
    // term's, and the database's own words say which).
    match unique.first() {
        Some(term) => taken(term, key, "another object"),
        None => pg(violation),
    }
}

/// The error for a [`swap`] that wrote nothing: the object is gone
/// ([`Error::NotFound`]) or at another version than the one read
/// ([`Error::Conflict`], with the version found), as `check_precondition` says.
async fn not_swapped(client: &impl Prepared, key: &ObjectKey, read_at: u64) -> Error {
    let found = match read(client, &encode_key(key)).await {
        Ok(found) => found.map(|v| v.version),
        Err(e) => return e,
    };
    check_precondition(key, found, Precondition::Version(read_at))
        .err()
        // Back at the version read (deleted and made again since): still a
        // write that raced another.
        .unwrap_or_else(|| Error::Conflict {
            key: key.to_string(),
            expected: read_at,
            found: read_at,
        })
}

/// The object stored under the encoded key `k`, outside any transaction.
async fn read(client: &impl Prepared, k: &str) -> Result<Option<Versioned<Object>>> {
    let row = client
        .query_opt_prepared("SELECT version, body FROM objects WHERE key = $1", &[&k])
        .await
        .map_err(pg)?;
    row.map(|r| parse_row(&r, 0)).transpose()
}

/// The workflows that name `worker`, in key order, outside any transaction.
async fn look(client: &impl Prepared, worker: &str) -> Result<Vec<Versioned<Workflow>>> {
    let rows = client
        .query_prepared(
            "SELECT o.version, o.body FROM objects o JOIN index_terms t ON t.key = o.key \
             WHERE t.term = $1 ORDER BY o.key COLLATE \"C\"",
            &[&IndexTerm::Worker(worker.to_string()).as_key()],
        )
        .await
        .map_err(pg)?;
    let mut found = Vec::with_capacity(rows.len());
    for r in rows {
        found.extend(parse_row(&r, 0)?.into_workflow());
    }
    Ok(found)
}

/// The workers named among index terms (as stored: `worker:NAME`).
fn workers_in(terms: &[String]) -> Vec<String> {
    terms
        .iter()
        .filter_map(|t| t.strip_prefix("worker:").map(str::to_string))
        .collect()
}

/// The encoded key a workflow is stored (and its copy kept) under.
fn copy_key(wf: &Workflow) -> String {
    encode_key(&workflow_key(wf))
}

/// The key a workflow is stored under.
fn workflow_key(wf: &Workflow) -> ObjectKey {
    ObjectKey::new(
        Kind::Workflow,
        wf.metadata.namespace(),
        wf.metadata.name.clone(),
    )
}

/// How [`apply_once`] reads the workflow.
#[derive(Clone, Copy)]
enum Read<'a> {
    /// Outside any transaction; the write checks the version.
    Plain,
    /// `FOR UPDATE`, inside the caller's transaction (whose announcements
    /// wait in the `Deferred`).
    Locked(&'a Deferred),
}

/// One try of an event: the workflow read, the state machine run, and the
/// workflow written back with [`swap`] if it changed. `None`: written by
/// someone else since the read. The event's refusal comes with the workflow,
/// for the caller to return once what changed (timeouts that fell due) is
/// committed.
async fn apply_once(
    client: &impl Prepared,
    own: &Own,
    key: &ObjectKey,
    event: &WorkflowEvent,
    now: Timestamp,
    how: Read<'_>,
) -> Result<Option<(Versioned<Workflow>, Result<Effect>)>> {
    let k = encode_key(key);
    let sql = match how {
        Read::Plain => "SELECT version, body FROM objects WHERE key = $1",
        Read::Locked(_) => "SELECT version, body FROM objects WHERE key = $1 FOR UPDATE",
    };
    let row = client.query_opt_prepared(sql, &[&k]).await.map_err(pg)?;
    let Some(Versioned {
        version,
        value: Object::Workflow(wf),
    }) = row.map(|r| parse_row(&r, 0)).transpose()?
    else {
        return Err(Error::NotFound {
            key: key.to_string(),
        });
    };
    let source = match how {
        Read::Plain => Source::Read,
        Read::Locked(deferred) => Source::ReadLocked(deferred),
    };
    apply_to(
        client,
        own,
        key,
        Versioned { version, value: wf },
        event,
        now,
        source,
    )
    .await
}

/// Where [`apply_to`]'s workflow came from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// Read from the database just now.
    Read,
    /// Read from the database just now, under the row's lock in the
    /// caller's transaction (the write joins it, its announcement waits in
    /// the `Deferred`).
    ReadLocked(&'a Deferred),
    /// This store's copy of the workflow ([`Copies`]): only a write
    /// at its version proves it current, so an event that changes nothing on
    /// it (a refusal, a repeat) may be a stale copy's answer and is not given.
    Copy,
}

/// The event applied to `read` and written back with [`swap`] at its version
/// if it changed. `None`: written by someone else since (or, from a
/// [`Source::Copy`], nothing to write that would prove the copy current):
/// the caller reads again.
async fn apply_to(
    client: &impl Prepared,
    own: &Own,
    key: &ObjectKey,
    read: Versioned<Workflow>,
    event: &WorkflowEvent,
    now: Timestamp,
    source: Source<'_>,
) -> Result<Option<(Versioned<Workflow>, Result<Effect>)>> {
    let Versioned {
        version,
        value: mut wf,
    } = read;
    let (changed, result) = apply_to_workflow(&mut wf, event, now);
    if !changed {
        return Ok(
            (!matches!(source, Source::Copy)).then(|| (Versioned { version, value: wf }, result))
        );
    }
    let object = Object::Workflow(wf);
    let how = match source {
        Source::ReadLocked(deferred) => Alone::InTransaction(deferred),
        Source::Read | Source::Copy => Alone::Yes,
    };
    let Some(version) = swap(client, own, how, key, version, &object).await? else {
        return Ok(None);
    };
    let Object::Workflow(wf) = object else {
        unreachable!("built as a workflow above")
    };
    Ok(Some((Versioned { version, value: wf }, result)))
}

/// How a claim from one look ended.
#[expect(
    clippy::large_enum_variant,
    reason = "a return value moved once, never stored"
)]
enum Claimed {
    /// The claim, or nothing to claim.
    Done(Option<Assignment>),
    /// A workflow it had to write was written by someone else since the look.
    Raced,
}

/// Claims `worker`'s next action among the `candidates` one look found, each
/// written back with [`swap`] at the version looked at.
async fn claim_from(
    client: &impl Prepared,
    own: &Own,
    how: Alone<'_>,
    candidates: Vec<Versioned<Workflow>>,
    worker: &str,
    request: Option<&str>,
    now: Timestamp,
) -> Result<Claimed> {
    for Versioned {
        version,
        value: mut wf,
    } in candidates
    {
        if !wf
            .status
            .as_ref()
            .is_some_and(|s| s.claimable(worker, request, now))
        {
            continue;
        }
        let key = workflow_key(&wf);
        let (changed, assignment) = claim_in_workflow(&key, &mut wf, worker, request, now);
        if changed {
            let object = Object::Workflow(wf);
            if swap(client, own, how, &key, version, &object)
                .await?
                .is_none()
            {
                return Ok(Claimed::Raced);
            }
        }
        if assignment.is_some() {
            return Ok(Claimed::Done(assignment));
        }
    }
    Ok(Claimed::Done(None))
}

/// A boxed statement of [`write`]'s pipeline.
type Pipelined<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>>;

/// Writes (or deletes) an object and its index terms in `tx`, and defers
/// `change`'s announcement to the transaction's commit ([`Own::commit`]).
///
/// The statements after the unique-term checks go out together: prepared
/// first (from the connection's cache, so no round trip after a statement's
/// first use), then executed as one pipeline, in order (the term rows refer
/// to the object's row), one flush and one wait instead of one round trip
/// each. A failure aborts the transaction, so the statements after it fail
/// too; the first one's error is the one returned.
async fn write(
    tx: &Transaction<'_>,
    own: &Own,
    deferred: &Deferred,
    key: &ObjectKey,
    old: Option<&Object>,
    new: Option<&Versioned<Object>>,
    change: &Change,
) -> Result<()> {
    let k = encode_key(key);
    let (remove, add) = index_diff(old, new.map(|v| &v.value));
    for term in &add {
        if term.is_unique()
            && let Some(r) = tx
                .query_opt_prepared(
                    "SELECT key FROM index_terms WHERE term = $1 AND key <> $2",
                    &[&term.as_key(), &k],
                )
                .await
                .map_err(pg)?
        {
            let holder: String = r.get(0);
            return Err(taken(term, key, &holder));
        }
    }
    let body = new.map(|v| Json(&v.value));
    let version = new.map(|v| v.version as i64);
    deferred.push(own.if_landed(change, false)?);
    let main = tx
        .prepare_cached(match new {
            // A create is a plain INSERT: a concurrent creator that committed
            // first makes it fail on the primary key (never an upsert that
            // overwrites the winner and leaves its index entries behind).
            Some(_) if old.is_none() => {
                "INSERT INTO objects (key, version, body) VALUES ($1, $2, $3)"
            }
            // An update of the row `read_for_update` locked.
            Some(_) => "UPDATE objects SET version = $2, body = $3 WHERE key = $1",
            None => "DELETE FROM objects WHERE key = $1",
        })
        .await
        .map_err(pg)?;
    let remove: Vec<String> = remove.iter().map(IndexTerm::as_key).collect();
    let add: Vec<(&IndexTerm, String)> = if new.is_some() {
        add.iter().map(|t| (t, t.as_key())).collect()
    } else {
        Vec::new()
    };
    let delete_term = tx
        .prepare_cached("DELETE FROM index_terms WHERE term = $1 AND key = $2")
        .await
        .map_err(pg)?;
    // The conflict target is this object's own entry only: a unique term (MAC,
    // IP) that another object holds, or that a concurrent writer has just
    // inserted, fails on `index_terms_unique` instead of being skipped, which
    // would leave two Hardware with one MAC.
    let insert_term = tx
        .prepare_cached(
            "INSERT INTO index_terms (term, key) VALUES ($1, $2) ON CONFLICT (term, key) DO NOTHING",
        )
        .await
        .map_err(pg)?;
    let mut pipeline: Vec<Pipelined<'_>> = Vec::with_capacity(1 + remove.len() + add.len());
    let created = new.is_some() && old.is_none();
    let (main, k_ref) = (&main, &k);
    pipeline.push(Box::pin(async move {
        let r = match (&body, &version) {
            (Some(body), Some(version)) => tx.execute(main, &[k_ref, version, body]).await,
            _ => tx.execute(main, &[k_ref]).await,
        };
        r.map(drop).map_err(|e| {
            if created && e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                Error::AlreadyExists {
                    key: key.to_string(),
                }
            } else {
                pg(e)
            }
        })
    }));
    for term in &remove {
        let delete_term = &delete_term;
        pipeline.push(Box::pin(async move {
            tx.execute(delete_term, &[term, k_ref])
                .await
                .map(drop)
                .map_err(pg)
        }));
    }
    for (term, term_key) in &add {
        let insert_term = &insert_term;
        pipeline.push(Box::pin(async move {
            tx.execute(insert_term, &[term_key, k_ref])
                .await
                .map(drop)
                .map_err(|e| {
                    // Lost a race with another replica for a unique term.
                    if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                        taken(term, key, "another object")
                    } else {
                        pg(e)
                    }
                })
        }));
    }
    // Every statement's answer is awaited, and the first failure in the
    // pipeline's order is the one returned: the statements after it only
    // say that the transaction was aborted. (Returning the first failure to
    // be polled instead let a concurrent create that lost its race report
    // "current transaction is aborted" instead of the clash that aborted it.)
    futures_util::future::join_all(pipeline)
        .await
        .into_iter()
        .collect::<Result<Vec<()>>>()
        .map(drop)
}

/// The object at columns `at` (its version) and `at + 1` (its body): the
/// body is read straight from the row's bytes into the object, without a
/// `serde_json::Value` between (building and converting that tree was a
/// large part of the control plane's time per read in a PostgreSQL storm).
fn parse_row(row: &tokio_postgres::Row, at: usize) -> Result<Versioned<Object>> {
    let version: i64 = row.try_get(at).map_err(pg)?;
    let JsonText(text) = row.try_get(at + 1).map_err(pg)?;
    Ok(Versioned {
        version: version as u64,
        value: serde_json::from_slice(text).map_err(json_err)?,
    })
}

/// A `json` or `jsonb` column's JSON text, borrowed from the row.
struct JsonText<'a>(&'a [u8]);

impl<'a> tokio_postgres::types::FromSql<'a> for JsonText<'a> {
    fn from_sql(
        ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == tokio_postgres::types::Type::JSONB {
            // jsonb's binary form: a format version (1), then the text.
            match raw.split_first() {
                Some((1, text)) => Ok(JsonText(text)),
                _ => Err("unsupported jsonb format version".into()),
            }
        } else {
            Ok(JsonText(raw))
        }
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        matches!(
            *ty,
            tokio_postgres::types::Type::JSON | tokio_postgres::types::Type::JSONB
        )
    }
}

#[async_trait]
impl WorkflowStore for PostgresStore {
    async fn put(&self, object: Object, precondition: Precondition) -> Result<u64> {
        let key = object.key();
        check_key(&key)?;
        // The engine's writes are all of this kind: an object it read, written
        // back at the version it read.
        if let Precondition::Version(read) = precondition {
            let client = self.client().await?;
            return match swap(&client, &self.own, Alone::Yes, &key, read, &object).await? {
                Some(version) => Ok(version),
                None => Err(not_swapped(&client, &key, read).await),
            };
        }
        // A create that loses a race to another creator fails on the primary
        // key. For `Absent` that is the answer; for `Any` the object now exists,
        // so the write is tried again as an update (once is enough: the row is
        // there and locked by the next read). `Version(_)` never creates.
        match self.put_once(&key, &object, precondition).await {
            Err(Error::AlreadyExists { .. }) if precondition == Precondition::Any => {
                self.put_once(&key, &object, precondition).await
            }
            r => r,
        }
    }

    async fn get(&self, key: &ObjectKey) -> Result<Option<Versioned<Object>>> {
        read(&self.client().await?, &encode_key(key)).await
    }

    async fn list(&self, kind: Kind) -> Result<Vec<Versioned<Object>>> {
        let epoch = self.own.copies.epoch();
        let client = self.client().await?;
        let prefix = format!("{}%", kind_prefix(kind));
        let rows = client
            .query_prepared(
                "SELECT version, body FROM objects WHERE key LIKE $1 ORDER BY key COLLATE \"C\"",
                &[&prefix],
            )
            .await
            .map_err(pg)?;
        let listed: Vec<Versioned<Object>> = rows
            .into_iter()
            .map(|r| parse_row(&r, 0))
            .collect::<Result<_>>()?;
        if kind == Kind::Workflow {
            // The engine's sweep reconciles what it listed: its reads of them
            // (`recent_workflow`) are then at least this new.
            let read: Vec<(String, Versioned<Workflow>)> = listed
                .iter()
                .filter_map(|v| match &v.value {
                    Object::Workflow(wf) => Some((
                        copy_key(wf),
                        Versioned {
                            version: v.version,
                            value: wf.clone(),
                        },
                    )),
                    _ => None,
                })
                .collect();
            self.own.copies.read(epoch, &read, Instant::now());
        }
        Ok(listed)
    }

    async fn delete(&self, key: &ObjectKey, precondition: Precondition) -> Result<()> {
        if precondition == Precondition::Absent {
            return Err(Error::Unsupported {
                target: "store".into(),
                operation: "delete with Precondition::Absent".into(),
            });
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let Some(old) = read_for_update(&tx, &encode_key(key)).await? else {
            return Err(Error::NotFound {
                key: key.to_string(),
            });
        };
        check_precondition(key, Some(old.version), precondition)?;
        let deferred = Deferred::default();
        write(
            &tx,
            &self.own,
            &deferred,
            key,
            Some(&old.value),
            None,
            &Change {
                key: key.clone(),
                version: old.version,
                deleted: true,
            },
        )
        .await?;
        // Read-your-writes: gone from the copies before its announcement.
        let forget = match key.kind {
            Kind::Workflow => vec![encode_key(key)],
            _ => Vec::new(),
        };
        let committed = self.own.commit(tx, deferred, &forget).await;
        committed.map_err(pg)
    }

    async fn hardware_by_mac(&self, mac: MacAddr) -> Result<Option<Versioned<Hardware>>> {
        self.hardware_by(IndexTerm::Mac(mac)).await
    }

    async fn recent_workflow(&self, key: &ObjectKey) -> Result<Option<Versioned<Workflow>>> {
        if let Some(copy) = self.own.copies.get(&encode_key(key), Instant::now()) {
            return Ok(Some(copy));
        }
        Ok(self.get(key).await?.and_then(Versioned::into_workflow))
    }

    async fn workflows_for_worker(&self, worker: &str) -> Result<Vec<Versioned<Workflow>>> {
        // A long poll's look, once per question and per wake-up: from the
        // copies when they are current (see `Copies`).
        if let Some(found) = self.own.copies.look(worker, Instant::now()) {
            return Ok(found);
        }
        let epoch = self.own.copies.epoch();
        let found = look(&self.client().await?, worker).await?;
        let keyed: Vec<(String, Versioned<Workflow>)> = found
            .into_iter()
            .map(|wf| (copy_key(&wf.value), wf))
            .collect();
        self.own
            .copies
            .looked(worker, epoch, &keyed, Instant::now());
        Ok(keyed.into_iter().map(|(_, wf)| wf).collect())
    }

    async fn hardware_by_ip(&self, ip: IpAddr) -> Result<Option<Versioned<Hardware>>> {
        self.hardware_by(IndexTerm::Ip(ip)).await
    }

    async fn apply_event(
        &self,
        key: &ObjectKey,
        event: &WorkflowEvent,
        now: Timestamp,
    ) -> Result<Applied> {
        // Read, apply, and write back only if nobody wrote in between: two
        // round trips without a transaction of its own. A row that keeps
        // changing under it is then locked for the event.
        let mut client = self.client().await?;
        let k = encode_key(key);
        if let Some(copy) = self.own.copies.get(&k, Instant::now())
            && let Some((workflow, result)) =
                apply_to(&client, &self.own, key, copy, event, now, Source::Copy).await?
        {
            return Ok(Applied {
                workflow,
                effect: result?,
            });
        }
        for _ in 0..OPTIMISTIC_TRIES {
            if let Some((workflow, result)) =
                apply_once(&client, &self.own, key, event, now, Read::Plain).await?
            {
                return Ok(Applied {
                    workflow,
                    effect: result?,
                });
            }
        }
        let tx = client.transaction().await.map_err(pg)?;
        let deferred = Deferred::default();
        let applied = apply_once(&tx, &self.own, key, event, now, Read::Locked(&deferred)).await?;
        // Not kept as a copy (written in a transaction); read-your-writes.
        let committed = self
            .own
            .commit(tx, deferred, std::slice::from_ref(&k))
            .await;
        committed.map_err(pg)?;
        // Under the row's lock nobody writes in between; were it to happen,
        // the caller hears of a lost race, as from any conflict.
        let (workflow, result) = applied.ok_or_else(|| Error::Conflict {
            key: key.to_string(),
            expected: 0,
            found: 0,
        })?;
        Ok(Applied {
            workflow,
            effect: result?,
        })
    }

    async fn claim_next_action_for_request(
        &self,
        worker: &str,
        request: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<Assignment>> {
        // A look without a transaction or row locks first: most questions
        // find nothing to claim (a machine being prepared, an action still
        // running). A claim is then written back only if nobody wrote the
        // workflow since the look (`swap`): two round trips in all, where a
        // locking transaction takes five. A workflow that becomes claimable
        // just after the look is claimed at the next question, as if this one
        // had come a moment sooner; one written by someone else between the
        // look and the claim is looked at again, and after a few such races
        // claimed under its row lock.
        let mut client = self.client().await?;
        for _ in 0..OPTIMISTIC_TRIES {
            let candidates = look(&client, worker).await?;
            match claim_from(
                &client,
                &self.own,
                Alone::Yes,
                candidates,
                worker,
                request,
                now,
            )
            .await?
            {
                Claimed::Done(found) => return Ok(found),
                Claimed::Raced => continue,
            }
        }
        let tx = client.transaction().await.map_err(pg)?;
        // Workflows another replica is updating right now are skipped, not waited for.
        let rows = tx
            .query_prepared(
                "SELECT o.version, o.body FROM objects o JOIN index_terms t ON t.key = o.key \
                 WHERE t.term = $1 ORDER BY o.key FOR UPDATE OF o SKIP LOCKED",
                &[&IndexTerm::Worker(worker.to_string()).as_key()],
            )
            .await
            .map_err(pg)?;
        let mut locked = Vec::with_capacity(rows.len());
        for r in rows {
            locked.extend(parse_row(&r, 0)?.into_workflow());
        }
        let keys: Vec<String> = locked.iter().map(|wf| copy_key(&wf.value)).collect();
        // The rows are this transaction's: nobody writes them in between.
        let deferred = Deferred::default();
        let found = match claim_from(
            &tx,
            &self.own,
            Alone::InTransaction(&deferred),
            locked,
            worker,
            request,
            now,
        )
        .await?
        {
            Claimed::Done(found) => found,
            Claimed::Raced => None,
        };
        // Not kept as copies (written in a transaction); read-your-writes.
        let committed = self.own.commit(tx, deferred, &keys).await;
        committed.map_err(pg)?;
        Ok(found)
    }

    async fn claim_looked_at(
        &self,
        worker: &str,
        request: Option<&str>,
        looked: Vec<Versioned<Workflow>>,
        now: Timestamp,
    ) -> Result<Option<Assignment>> {
        let client = self.client().await?;
        match claim_from(&client, &self.own, Alone::Yes, looked, worker, request, now).await? {
            Claimed::Done(found) => Ok(found),
            Claimed::Raced => {
                drop(client);
                self.claim_next_action_for_request(worker, request, now)
                    .await
            }
        }
    }

    async fn append_event(&self, event: MachineEvent) -> Result<()> {
        self.append_events(vec![event]).await
    }

    async fn append_events(&self, mut events: Vec<MachineEvent>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // The sequence is the table's; the stored bodies get it too.
        let n = events.len() as i64;
        let mut seqs: Vec<i64> = tx
            .query_prepared(
                "SELECT nextval(pg_get_serial_sequence('events', 'seq')) FROM generate_series(1, $1::bigint)",
                &[&n],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        seqs.sort_unstable();
        let mut machines = Vec::with_capacity(events.len());
        let mut bodies = Vec::with_capacity(events.len());
        for (event, seq) in events.iter_mut().zip(&seqs) {
            event.seq = *seq as u64;
            machines.push(event.machine.clone());
            bodies.push(serde_json::to_value(&*event).map_err(json_err)?);
        }
        // The whole batch in one statement and one commit.
        tx.execute_prepared(
            "INSERT INTO events (seq, machine, body) SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::jsonb[])",
            &[&seqs, &machines, &bodies],
        )
        .await
        .map_err(pg)?;
        // Then what falls past each machine's cap: everything at or below the
        // seq `cap` places from its newest (the index on (machine, seq) walks
        // it), for every machine of the batch in one statement.
        machines.sort_unstable();
        machines.dedup();
        let cap = self.event_cap as i64;
        tx.execute_prepared(
            "DELETE FROM events e USING (\
                 SELECT m.machine, (SELECT seq FROM events WHERE machine = m.machine \
                                    ORDER BY seq DESC OFFSET $2 LIMIT 1) AS floor \
                 FROM unnest($1::text[]) AS m(machine)\
             ) f WHERE e.machine = f.machine AND e.seq <= f.floor",
            &[&machines, &cap],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn events(&self, machine: &str, limit: usize) -> Result<Vec<MachineEvent>> {
        let client = self.client().await?;
        let limit = limit as i64;
        let rows = client
            .query_prepared(
                "SELECT body FROM events WHERE machine = $1 ORDER BY seq DESC LIMIT $2",
                &[&machine, &limit],
            )
            .await
            .map_err(pg)?;
        let mut out: Vec<MachineEvent> = rows
            .into_iter()
            .map(|r| {
                let JsonText(text) = r.try_get(0).map_err(pg)?;
                serde_json::from_slice(text).map_err(json_err)
            })
            .collect::<Result<_>>()?;
        out.reverse();
        Ok(out)
    }

    fn watch(&self) -> broadcast::Receiver<Change> {
        self.feed.subscribe()
    }
}

impl PostgresStore {
    /// One transaction of [`WorkflowStore::put`].
    async fn put_once(
        &self,
        key: &ObjectKey,
        object: &Object,
        precondition: Precondition,
    ) -> Result<u64> {
        let k = encode_key(key);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let old = read_for_update(&tx, &k).await?;
        check_precondition(key, old.as_ref().map(|v| v.version), precondition)?;
        let version = old.as_ref().map_or(0, |v| v.version) + 1;
        let deferred = Deferred::default();
        write(
            &tx,
            &self.own,
            &deferred,
            key,
            old.as_ref().map(|v| &v.value),
            Some(&Versioned {
                version,
                value: object.clone(),
            }),
            &Change {
                key: key.clone(),
                version,
                deleted: false,
            },
        )
        .await?;
        // Made or replaced whole (its workers may have changed): its copy
        // goes, even after an error, as the commit may have landed.
        let forget = match key.kind {
            Kind::Workflow => vec![k],
            _ => Vec::new(),
        };
        let committed = self.own.commit(tx, deferred, &forget).await;
        match committed {
            Ok(()) => Ok(version),
            // Two creators raced past the empty read: the loser gets AlreadyExists.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                Err(Error::AlreadyExists {
                    key: key.to_string(),
                })
            }
            Err(e) => Err(pg(e)),
        }
    }

    async fn hardware_by(&self, term: IndexTerm) -> Result<Option<Versioned<Hardware>>> {
        let client = self.client().await?;
        let row = client
            .query_opt_prepared("SELECT o.version, o.body FROM objects o JOIN index_terms t ON t.key = o.key WHERE t.term = $1 LIMIT 1", &[&term.as_key()])
            .await
            .map_err(pg)?;
        Ok(match row.map(|r| parse_row(&r, 0)).transpose()? {
            Some(Versioned {
                version,
                value: Object::Hardware(h),
            }) => Some(Versioned { version, value: h }),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::with_generic_plans;

    #[test]
    fn generic_plans_are_asked_for_beside_the_urls_own_options() {
        assert_eq!(
            with_generic_plans(""),
            "-c plan_cache_mode=force_generic_plan"
        );
        assert_eq!(
            with_generic_plans("-c search_path=tinker"),
            "-c search_path=tinker -c plan_cache_mode=force_generic_plan"
        );
        // The URL's choice stands, in either spelling.
        for own in [
            "-c plan_cache_mode=force_custom_plan",
            "--plan_cache_mode=auto -c work_mem=4MB",
        ] {
            assert_eq!(with_generic_plans(own), own);
        }
    }
}
