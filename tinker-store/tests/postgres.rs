//! The PostgreSQL store against a real PostgreSQL, started by the test as the
//! `postgres` user in a temporary directory on loopback: the conformance suite,
//! and two replicas sharing one database.

use std::sync::Arc;
use tinker_core::WorkflowStore;
use tinker_core::state::{ActionOutcome, WorkflowEvent};
use tinker_core::store::Precondition;
use tinker_core::testing::{self, mac};
use tinker_store::PostgresStore;
use tinker_store::testing::TempPostgres as Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_conforms() {
    let Some(pg) = Cluster::start() else { return };
    let store = PostgresStore::connect(&pg.url).await.unwrap();
    testing::store::run_all(Arc::new(store)).await;
    let small = PostgresStore::connect(&pg.url)
        .await
        .unwrap()
        .with_event_cap(6);
    testing::store::event_log_is_bounded(&small, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_acts_survive_a_restart() {
    let Some(pg) = Cluster::start() else { return };
    {
        let store = PostgresStore::connect(&pg.url).await.unwrap();
        testing::store::operator_acts(&store).await;
    }
    // A new connection pool, as a restarted control plane opens.
    let store = PostgresStore::connect(&pg.url).await.unwrap();
    testing::store::operator_acts_survive(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_one_database() {
    let Some(pg) = Cluster::start() else { return };
    let a: Arc<dyn WorkflowStore> = Arc::new(PostgresStore::connect(&pg.url).await.unwrap());
    let b: Arc<dyn WorkflowStore> = Arc::new(PostgresStore::connect(&pg.url).await.unwrap());
    // A write on one replica reaches the other's change feed.
    let mut feed = b.watch();
    a.put(testing::hardware("shared", 1).into(), Precondition::Absent)
        .await
        .unwrap();
    let change = tokio::time::timeout(std::time::Duration::from_secs(10), feed.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((change.key.name.as_str(), change.version), ("shared", 1));
    // A stale version from one replica is refused after the other wrote.
    let v = b
        .put(
            testing::hardware("shared", 1).into(),
            Precondition::Version(1),
        )
        .await
        .unwrap();
    assert_eq!(v, 2);
    assert!(
        a.put(
            testing::hardware("shared", 1).into(),
            Precondition::Version(1)
        )
        .await
        .is_err()
    );
    // Workers of the same identity on both replicas: every action claimed once.
    for w in 0..8u32 {
        for k in 0..3 {
            a.put(
                testing::rendered_workflow(&format!("rep-{w}-{k}"), mac(500 + w), 4, 600).into(),
                Precondition::Absent,
            )
            .await
            .unwrap();
        }
    }
    let total = 8 * 3 * 4;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let mut tasks = Vec::new();
    for t in 0..32u32 {
        let store = if t % 2 == 0 { a.clone() } else { b.clone() };
        let (done, seen) = (done.clone(), seen.clone());
        let worker = mac(500 + t % 8).to_string();
        tasks.push(tokio::spawn(async move {
            while done.load(std::sync::atomic::Ordering::SeqCst) < total {
                match store
                    .claim_next_action(&worker, jiff::Timestamp::now())
                    .await
                    .unwrap()
                {
                    Some(x) => {
                        assert!(
                            seen.lock()
                                .unwrap()
                                .insert((x.workflow.name.clone(), x.action_index)),
                            "claimed twice across replicas"
                        );
                        let r = WorkflowEvent::Report {
                            action: x.action_index,
                            attempt: x.attempt,
                            outcome: ActionOutcome::Success,
                        };
                        store
                            .apply_event(&x.workflow, &r, jiff::Timestamp::now())
                            .await
                            .unwrap();
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    None => tokio::time::sleep(std::time::Duration::from_millis(2)).await,
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(seen.lock().unwrap().len(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_newer_than_the_code_is_refused_unchanged() {
    let Some(pg) = Cluster::start() else { return };
    drop(PostgresStore::connect(&pg.url).await.unwrap());
    let client = raw_client(&pg.url).await;
    let next = PostgresStore::SCHEMA_VERSION as i32 + 1;
    client
        .execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&next],
        )
        .await
        .unwrap();
    let e = PostgresStore::connect(&pg.url).await.unwrap_err();
    let tinker_core::Error::Backend { source, .. } = &e else {
        panic!("expected a backend error, got {e:?}");
    };
    let Some(tinker_store::StoreError::SchemaTooNew {
        found, supported, ..
    }) = source.downcast_ref()
    else {
        panic!("expected SchemaTooNew, got {e}");
    };
    assert_eq!(
        (*found as i32, *supported),
        (next, PostgresStore::SCHEMA_VERSION)
    );
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<i32> = (1..next).chain([next]).collect();
    assert_eq!(versions, expected, "nothing was changed");
}

#[tokio::test]
async fn a_url_that_does_not_parse_is_named_without_echoing_it() {
    let e = PostgresStore::connect("postgres://tinker:hunter2@[bad")
        .await
        .unwrap_err();
    let tinker_core::Error::Backend { source, .. } = &e else {
        panic!("expected a backend error, got {e:?}");
    };
    assert!(matches!(
        source.downcast_ref(),
        Some(tinker_store::StoreError::InvalidUrl)
    ));
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

/// A database that hangs (here: a table locked by another session) holds every
/// pooled connection. A further call waits for its pool wait, then fails as
/// `Unreachable` instead of queueing for as long as the database hangs, and
/// the held calls finish once the lock goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_finds_every_connection_busy_fails_after_its_wait() {
    let Some(pg) = Cluster::start() else { return };
    let store = Arc::new(
        PostgresStore::connect(&pg.url)
            .await
            .unwrap()
            .with_pool_wait(std::time::Duration::from_millis(300)),
    );
    let hw = testing::hardware("held", 1);
    store
        .put(hw.clone().into(), Precondition::Absent)
        .await
        .unwrap();
    let key = tinker_core::model::Object::from(hw).key();
    let locker = raw_client(&pg.url).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE objects IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let held: Vec<_> = (0..PostgresStore::POOL_SIZE)
        .map(|_| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move { store.get(&key).await })
        })
        .collect();
    // Every pooled connection is waiting on the lock before the next call.
    let mut waiting = 0;
    // Watched from a session of its own: inside the locker's transaction
    // pg_stat_activity would stay the snapshot taken at its first read.
    let watcher = raw_client(&pg.url).await;
    for _ in 0..1_500 {
        waiting = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if waiting as usize >= PostgresStore::POOL_SIZE {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        waiting as usize,
        PostgresStore::POOL_SIZE,
        "calls waiting on the lock"
    );
    let e = tokio::time::timeout(std::time::Duration::from_secs(60), store.get(&key))
        .await
        .expect("the call waited for as long as the database hung")
        .unwrap_err();
    assert!(
        matches!(&e, tinker_core::Error::Unreachable { reason, .. } if reason.contains("busy for 300 ms")),
        "{e:?}"
    );
    locker.batch_execute("COMMIT").await.unwrap();
    for call in held {
        let found = call.await.unwrap().unwrap();
        assert!(
            found.is_some(),
            "a held call reads the machine once the lock goes"
        );
    }
}

/// A stored body that is JSON but not an object of this version (a row
/// edited by hand, a bug) reads as the store's record error, which says why,
/// and leaves the store usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_read_is_a_record_error() {
    let Some(pg) = Cluster::start() else { return };
    let store = PostgresStore::connect(&pg.url).await.unwrap();
    let hw = testing::hardware("odd", 7);
    let key = tinker_core::model::Object::from(hw.clone()).key();
    store.put(hw.into(), Precondition::Absent).await.unwrap();
    let client = raw_client(&pg.url).await;
    let changed = client
        .execute(
            "UPDATE objects SET body = '{\"kind\": \"Hardware\", \"spec\": 5}'::jsonb",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(changed, 1);
    let e = store.get(&key).await.unwrap_err();
    let tinker_core::Error::Backend { source, .. } = &e else {
        panic!("expected a backend error, got {e:?}");
    };
    assert!(
        matches!(
            source.downcast_ref(),
            Some(tinker_store::StoreError::Record(_))
        ),
        "expected a record error, got {e}"
    );
    assert!(e.to_string().contains("not valid JSON"), "{e}");
    let other = testing::hardware("fine", 8);
    store.put(other.into(), Precondition::Absent).await.unwrap();
    assert!(store.hardware_by_mac(mac(8)).await.unwrap().is_some());
}

/// A question for work that finds nothing to claim (its machine is being
/// prepared) opens no claim transaction and locks no row: one plain read.
/// Once an action is ready, the claim is written back by one conditional
/// statement (`swap`), still without a lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_finds_nothing_takes_no_lock() {
    use tinker_core::WorkflowStoreExt;
    let Some(pg) = Cluster::start_with(&["shared_preload_libraries=pg_stat_statements"]) else {
        return;
    };
    let store = PostgresStore::connect(&pg.url).await.unwrap();
    let client = statement_counter(&pg.url).await;
    let locking_claims = || calls(&client, "%SKIP LOCKED%");
    let swaps = || calls(&client, "WITH updated AS%");
    let worker = mac(31).to_string();
    let mut wf = testing::rendered_workflow("prep", mac(31), 1, 600);
    wf.status.as_mut().unwrap().machine.phase = tinker_core::model::MachinePhase::Preparing;
    store.put(wf.into(), Precondition::Absent).await.unwrap();
    let before = locking_claims().await;
    for _ in 0..5 {
        let got = store
            .claim_next_action(&worker, jiff::Timestamp::now())
            .await
            .unwrap();
        assert!(got.is_none(), "being prepared: nothing to run");
    }
    assert_eq!(locking_claims().await, before, "no locking claim was run");
    let found = store.workflow("default", "prep").await.unwrap().unwrap();
    let mut ready = found.value;
    ready.status.as_mut().unwrap().machine.phase = tinker_core::model::MachinePhase::Ready;
    store
        .put(ready.into(), Precondition::Version(found.version))
        .await
        .unwrap();
    let got = store
        .claim_next_action(&worker, jiff::Timestamp::now())
        .await
        .unwrap();
    assert!(got.is_some(), "ready: claimed");
    assert_eq!(locking_claims().await, before, "no locking claim was run");
    let swapped = swaps().await;
    let again = store
        .claim_next_action(&worker, jiff::Timestamp::now())
        .await
        .unwrap();
    assert!(again.is_none(), "its one action is running");
    assert_eq!(
        swaps().await,
        swapped,
        "a look that finds nothing writes nothing"
    );
}

/// A plain client of the cluster at `url`, beside the store's own
/// connections (to lock, watch or count from outside).
async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// A client of the cluster at `url` with `pg_stat_statements` ready (the
/// cluster started with it preloaded), for counting statements.
async fn statement_counter(url: &str) -> tokio_postgres::Client {
    let client = raw_client(url).await;
    client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .unwrap();
    client
}

/// Calls so far of the statements whose text is like `pattern`.
async fn calls(client: &tokio_postgres::Client, pattern: &str) -> i64 {
    client
        .query_one(
            "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements WHERE query LIKE $1",
            &[&pattern],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
}

/// Writers that race for one workflow: each event reads the workflow and
/// writes it back only if nobody wrote in between, and one that keeps losing
/// takes the row's lock; none of them fails or is lost. Sixteen tasks send
/// heartbeats, each at a later time than the last, and every one is applied:
/// the workflow's version counts them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_that_race_for_one_workflow_are_all_applied() {
    use tinker_core::WorkflowStoreExt;
    let Some(pg) = Cluster::start() else {
        return;
    };
    let store = Arc::new(PostgresStore::connect(&pg.url).await.unwrap());
    let worker = mac(41).to_string();
    store
        .put(
            testing::rendered_workflow("busy", mac(41), 1, 600).into(),
            Precondition::Absent,
        )
        .await
        .unwrap();
    let t0 = jiff::Timestamp::now();
    let a = store
        .claim_next_action(&worker, t0)
        .await
        .unwrap()
        .expect("ready: claimed");
    let before = store
        .workflow("default", "busy")
        .await
        .unwrap()
        .unwrap()
        .version;
    let (tasks, each) = (16u32, 20u32);
    let next = Arc::new(std::sync::atomic::AtomicI64::new(1));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (store, next, key) = (store.clone(), next.clone(), a.workflow.clone());
        handles.push(tokio::spawn(async move {
            for _ in 0..each {
                // A time later than any heartbeat before it, so each one changes
                // the workflow (a later heartbeat is what extends the claim).
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let at = t0 + jiff::SignedDuration::from_millis(n);
                let event = WorkflowEvent::Heartbeat {
                    action: a.action_index,
                    attempt: a.attempt,
                };
                store.apply_event(&key, &event, at).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.expect("heartbeat task");
    }
    let after = store.workflow("default", "busy").await.unwrap().unwrap();
    assert_eq!(
        after.version,
        before + u64::from(tasks * each),
        "each heartbeat written once"
    );
    assert_eq!(
        after.value.state(),
        Some(tinker_core::state::WorkflowState::Running),
        "still running under its claim"
    );
}

/// Schema step 3 keeps bodies as `json` text compressed with lz4, the rows
/// already there included: a store at step 2 (bodies as jsonb, compressed
/// with the server's default) holding a workflow over the TOAST threshold is
/// opened by this code, and reads back the same workflow, stored as lz4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_three_stores_bodies_as_json_in_lz4_rows_already_there_included() {
    use tinker_core::WorkflowStoreExt;
    let Some(pg) = Cluster::start() else { return };
    let store = PostgresStore::connect(&pg.url).await.unwrap();
    let client = raw_client(&pg.url).await;
    // Back to step 2, as an older release left it.
    client
        .batch_execute(
            "ALTER TABLE objects ALTER COLUMN body TYPE jsonb USING body::jsonb;
             ALTER TABLE objects ALTER COLUMN body SET COMPRESSION pglz;
             DELETE FROM schema_migrations WHERE version = 3;",
        )
        .await
        .unwrap();
    drop(store);
    let client2 = raw_client(&pg.url).await;
    let mut wf = testing::rendered_workflow("big", mac(51), 40, 600);
    wf.metadata
        .annotations
        .get_or_insert_default()
        .insert("note".into(), "x".repeat(6000));
    let body = serde_json::to_string(&tinker_core::model::Object::Workflow(wf.clone())).unwrap();
    client2
        .execute(
            "INSERT INTO objects (key, version, body) VALUES ('Workflow/default/big', 1, $1::text::jsonb)",
            &[&body],
        )
        .await
        .unwrap();
    let before: String = client2
        .query_one(
            "SELECT pg_column_compression(body) FROM objects WHERE key = 'Workflow/default/big'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(before, "pglz");
    let store = PostgresStore::connect(&pg.url).await.unwrap();
    let row = client2
        .query_one(
            "SELECT pg_column_compression(body), pg_typeof(body)::text FROM objects \
             WHERE key = 'Workflow/default/big'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("lz4".to_string(), "json".to_string())
    );
    let read = store.workflow("default", "big").await.unwrap().unwrap();
    assert_eq!(read.value, wf, "the same workflow back");
}

/// An agent's report right after its claim is tried against the workflow as
/// the claim wrote it: one conditional write, no read. A copy that another
/// replica's write made stale costs that write (which writes nothing) and
/// the report lands on the workflow as it is, the other write kept; a
/// workflow deleted and made again under its name is never written from the
/// old copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_after_its_claim_is_written_without_a_read_and_never_onto_a_stale_copy() {
    use tinker_core::WorkflowStoreExt;
    let Some(pg) = Cluster::start_with(&["shared_preload_libraries=pg_stat_statements"]) else {
        return;
    };
    let a = PostgresStore::connect(&pg.url).await.unwrap();
    let b = PostgresStore::connect(&pg.url).await.unwrap();
    let client = statement_counter(&pg.url).await;
    let reads = || calls(&client, "SELECT version, body FROM objects WHERE key = $1");
    let worker = mac(51).to_string();
    let report = |a: &tinker_core::store::Assignment| WorkflowEvent::FromWorker {
        worker: worker.clone(),
        sent: Box::new(WorkflowEvent::Report {
            action: a.action_index,
            attempt: a.attempt,
            outcome: ActionOutcome::Success,
        }),
    };
    a.put(
        testing::rendered_workflow("rep", mac(51), 3, 600).into(),
        Precondition::Absent,
    )
    .await
    .unwrap();
    let now = jiff::Timestamp::now();

    // Claim, then report: the report reads nothing.
    let first = a.claim_next_action(&worker, now).await.unwrap().unwrap();
    let before = reads().await;
    a.apply_event(&first.workflow, &report(&first), now)
        .await
        .unwrap();
    assert_eq!(
        reads().await,
        before,
        "the report was written from the claim's copy"
    );

    // Claim the second; another replica writes the workflow (a heartbeat)
    // before the report: the report is applied to what is there.
    let second = a.claim_next_action(&worker, now).await.unwrap().unwrap();
    let beat = WorkflowEvent::Heartbeat {
        action: second.action_index,
        attempt: second.attempt,
    };
    let beaten = b
        .apply_event(
            &second.workflow,
            &beat,
            now + jiff::SignedDuration::from_secs(1),
        )
        .await
        .unwrap()
        .workflow;
    let done = a
        .apply_event(&second.workflow, &report(&second), now)
        .await
        .unwrap();
    assert_eq!(
        done.workflow.version,
        beaten.version + 1,
        "on top of the heartbeat"
    );
    let stored = a.workflow("default", "rep").await.unwrap().unwrap();
    assert_eq!(stored.version, done.workflow.version);
    assert_eq!(stored.value.status, done.workflow.value.status);

    // Claim the third; the workflow is deleted and made again elsewhere, and
    // brought back to the copy's version: the old agent's report must not be
    // written from the copy over the new workflow.
    let third = a.claim_next_action(&worker, now).await.unwrap().unwrap();
    let copy_version = a.workflow("default", "rep").await.unwrap().unwrap().version;
    let mut feed = a.watch();
    b.delete(&third.workflow, Precondition::Any).await.unwrap();
    let mut version = b
        .put(
            testing::rendered_workflow("rep", mac(51), 3, 600).into(),
            Precondition::Absent,
        )
        .await
        .unwrap();
    // The deletion's announcement has reached the first replica.
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !feed.recv().await.unwrap().deleted {}
    })
    .await
    .expect("the deletion is announced");
    while version < copy_version {
        let again = b.workflow("default", "rep").await.unwrap().unwrap();
        version = b
            .put(again.value.into(), Precondition::Version(again.version))
            .await
            .unwrap();
    }
    assert_eq!(version, copy_version);
    let fresh = b.workflow("default", "rep").await.unwrap().unwrap();
    let refused = a.apply_event(&third.workflow, &report(&third), now).await;
    let after = b.workflow("default", "rep").await.unwrap().unwrap();
    assert!(
        refused.is_err() || after.value.status == fresh.value.status,
        "the new workflow was written from the old copy: {refused:?}"
    );
    assert_eq!(after.version, fresh.version, "nothing written: {refused:?}");
}

/// A long poll's look at a worker's workflows is answered from the store's
/// copies while they are current: again and again without a statement, and
/// after the store's own claim with the claim in it. Another replica's write,
/// a workflow it makes for the worker, its deletion of one, and its write
/// that takes one from the worker are each seen at the next look once
/// announced (that look reads the database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_look_is_answered_from_copies_until_another_replica_writes() {
    use tinker_core::WorkflowStoreExt;
    use tinker_core::store::Change;
    let Some(pg) = Cluster::start_with(&["shared_preload_libraries=pg_stat_statements"]) else {
        return;
    };
    let a = PostgresStore::connect(&pg.url).await.unwrap();
    let b = PostgresStore::connect(&pg.url).await.unwrap();
    let client = statement_counter(&pg.url).await;
    let looks = || {
        calls(
            &client,
            "SELECT o.version, o.body FROM objects o JOIN index_terms t%COLLATE%",
        )
    };
    let worker = mac(61).to_string();
    let now = jiff::Timestamp::now();
    let versions = |found: &[tinker_core::store::Versioned<tinker_core::model::Workflow>]| {
        found
            .iter()
            .map(|w| (w.value.metadata.name.clone(), w.version))
            .collect::<Vec<_>>()
    };
    // Waits until `a` has heard of a change matching `what`.
    async fn heard(
        feed: &mut tokio::sync::broadcast::Receiver<Change>,
        what: impl Fn(&Change) -> bool,
    ) {
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while !what(&feed.recv().await.unwrap()) {}
        })
        .await
        .expect("announced");
    }
    let mut feed = a.watch();
    a.put(
        testing::rendered_workflow("one", mac(61), 2, 600).into(),
        Precondition::Absent,
    )
    .await
    .unwrap();
    // Made in a transaction: its announcement drops the lists, as another
    // replica's write would.
    heard(&mut feed, |c| c.key.name == "one").await;

    let before = looks().await;
    let first = a.workflows_for_worker(&worker).await.unwrap();
    assert_eq!(versions(&first), vec![("one".to_string(), 1)]);
    assert_eq!(
        looks().await,
        before + 1,
        "the first look reads the database"
    );
    for _ in 0..3 {
        let again = a.workflows_for_worker(&worker).await.unwrap();
        assert_eq!(again, first);
    }
    assert_eq!(
        looks().await,
        before + 1,
        "later looks are answered from the copies"
    );

    // Our own claim: the copy is the claimed workflow, still no look.
    let claimed = a
        .claim_looked_at(&worker, None, first, now)
        .await
        .unwrap()
        .expect("the first action is ready");
    let after_claim = a.workflows_for_worker(&worker).await.unwrap();
    let stored = b.workflow("default", "one").await.unwrap().unwrap();
    assert_eq!(
        after_claim,
        vec![stored.clone()],
        "the look is the stored workflow"
    );
    assert_eq!(looks().await, before + 1);

    // Another replica's heartbeat: once announced, the look reads again.
    let beaten = b
        .apply_event(
            &claimed.workflow,
            &WorkflowEvent::Heartbeat {
                action: claimed.action_index,
                attempt: claimed.attempt,
            },
            now + jiff::SignedDuration::from_secs(1),
        )
        .await
        .unwrap()
        .workflow;
    heard(&mut feed, |c| c.version == beaten.version).await;
    let seen = a.workflows_for_worker(&worker).await.unwrap();
    assert_eq!(versions(&seen), vec![("one".to_string(), beaten.version)]);
    assert_eq!(seen[0].value, beaten.value);
    assert_eq!(looks().await, before + 2, "read from the database");

    // A workflow the other replica makes for the worker appears.
    b.put(
        testing::rendered_workflow("two", mac(61), 1, 600).into(),
        Precondition::Absent,
    )
    .await
    .unwrap();
    heard(&mut feed, |c| c.key.name == "two").await;
    let names = |found: Vec<tinker_core::store::Versioned<tinker_core::model::Workflow>>| {
        found
            .into_iter()
            .map(|w| w.value.metadata.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(a.workflows_for_worker(&worker).await.unwrap()),
        ["one", "two"]
    );

    // And one it deletes goes.
    b.delete(&claimed.workflow, Precondition::Any)
        .await
        .unwrap();
    heard(&mut feed, |c| c.deleted).await;
    // Looks twice: the second from the copies.
    let twice = async |expected: &[&str]| {
        assert_eq!(
            names(a.workflows_for_worker(&worker).await.unwrap()),
            expected
        );
        let looked = looks().await;
        assert_eq!(
            names(a.workflows_for_worker(&worker).await.unwrap()),
            expected
        );
        assert_eq!(looks().await, looked, "from the copies again");
    };
    twice(&["two"]).await;

    // The other replica gives the worker a workflow of another worker with
    // a conditional write: the announcement says which workers it moved
    // between, and the worker's next look reads it.
    b.put(
        testing::rendered_workflow("three", mac(62), 1, 600).into(),
        Precondition::Absent,
    )
    .await
    .unwrap();
    heard(&mut feed, |c| c.key.name == "three").await;
    twice(&["two"]).await;
    let three = b.workflow("default", "three").await.unwrap().unwrap();
    let mut moved = three.value.clone();
    for task in &mut moved.status.as_mut().unwrap().tasks {
        task.agent_id = worker.clone();
    }
    let v = b
        .put(moved.into(), Precondition::Version(three.version))
        .await
        .unwrap();
    heard(&mut feed, |c| c.key.name == "three" && c.version == v).await;
    assert_eq!(
        names(a.workflows_for_worker(&worker).await.unwrap()),
        ["three", "two"]
    );
    let three_key =
        tinker_core::model::ObjectKey::default_ns(tinker_core::model::Kind::Workflow, "three");
    b.delete(&three_key, Precondition::Any).await.unwrap();
    heard(&mut feed, |c| c.deleted).await;

    // The other replica disables "two" with a conditional write: it leaves
    // the worker (its announcement says which workers it left).
    let two = b.workflow("default", "two").await.unwrap().unwrap();
    let mut disabled = two.value.clone();
    disabled.spec.disabled = Some(true);
    let v = b
        .put(disabled.into(), Precondition::Version(two.version))
        .await
        .unwrap();
    heard(&mut feed, |c| c.key.name == "two" && c.version == v).await;
    assert!(a.workflows_for_worker(&worker).await.unwrap().is_empty());
}

/// A write that takes a workflow from hundreds of workers at once still fits
/// its announcement in NOTIFY's 8,000 bytes (the workers it moved are then
/// not listed, and every replica drops every list): disabling a workflow
/// whose tasks name 400 workers lands, and is announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_moves_hundreds_of_workers_is_announced() {
    use tinker_core::WorkflowStoreExt;
    let Some(pg) = Cluster::start() else {
        return;
    };
    let store = PostgresStore::connect(&pg.url).await.unwrap();
    let mut wf = testing::rendered_workflow("wide", mac(71), 1, 600);
    let status = wf.status.as_mut().unwrap();
    let task = status.tasks[0].clone();
    status.tasks = (0..400)
        .map(|i| {
            let mut t = task.clone();
            t.name = format!("task-{i}");
            t.agent_id = format!("a-worker-with-a-long-name-{i:04}");
            t
        })
        .collect();
    store.put(wf.into(), Precondition::Absent).await.unwrap();
    let one = "a-worker-with-a-long-name-0007";
    assert_eq!(store.workflows_for_worker(one).await.unwrap().len(), 1);
    let stored = store.workflow("default", "wide").await.unwrap().unwrap();
    let mut disabled = stored.value.clone();
    disabled.spec.disabled = Some(true);
    let mut feed = store.watch();
    let v = store
        .put(disabled.into(), Precondition::Version(stored.version))
        .await
        .expect("the write lands");
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while feed.recv().await.unwrap().version != v {}
    })
    .await
    .expect("announced");
    assert!(store.workflows_for_worker(one).await.unwrap().is_empty());
}

/// The change feed listens again after the database restarts: another
/// store's write made after the restart is announced to a store connected
/// before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_listens_again_after_the_database_restarts() {
    let Some(pg) = Cluster::start() else {
        return;
    };
    let a = PostgresStore::connect(&pg.url).await.unwrap();
    let mut feed = a.watch();
    pg.restart();
    let b = PostgresStore::connect(&pg.url).await.unwrap();
    // The first listen again comes after half a second, the next ones later:
    // a write each second until one is heard.
    let heard = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        for i in 0.. {
            let hw = testing::hardware(&format!("after-{i}"), 200 + i);
            b.put(hw.into(), Precondition::Absent).await.unwrap();
            if let Ok(Ok(change)) =
                tokio::time::timeout(std::time::Duration::from_secs(1), feed.recv()).await
            {
                return change;
            }
        }
        unreachable!("the loop returns")
    })
    .await
    .expect("the feed listens again");
    assert!(heard.key.name.starts_with("after-"), "{heard:?}");
}

/// A store's writes are announced after their commit, on a connection of its
/// own: one lost to a database restart is made again, and every write that
/// landed after the restart is heard, the first (whose notice may have been
/// in flight when the connection was found dead) included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stores_writes_are_announced_again_after_the_database_restarts() {
    let Some(pg) = Cluster::start() else {
        return;
    };
    let a = PostgresStore::connect(&pg.url).await.unwrap();
    // Its announcing connection is made at its first write.
    let mut heard_before = a.watch();
    a.put(
        testing::hardware("before", 300).into(),
        Precondition::Absent,
    )
    .await
    .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), heard_before.recv())
        .await
        .expect("the first write is heard")
        .unwrap();
    pg.restart();
    let b = PostgresStore::connect(&pg.url).await.unwrap();
    let mut feed = b.watch();
    // The first tries may fail on pooled connections the restart closed.
    let mut landed = std::collections::BTreeSet::new();
    for i in 0..200 {
        let name = format!("again-{i}");
        let hw = testing::hardware(&name, 400 + i);
        match a.put(hw.into(), Precondition::Absent).await {
            Ok(_) => {
                landed.insert(name);
                if landed.len() == 3 {
                    break;
                }
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    assert_eq!(landed.len(), 3, "the store writes again after the restart");
    let mut heard = std::collections::BTreeSet::new();
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while heard != landed {
            let change = feed.recv().await.expect("feed open");
            if landed.contains(&change.key.name) {
                heard.insert(change.key.name);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("heard {heard:?} of {landed:?}"));
}

/// A change whose announcement would pass NOTIFY's 8,000 bytes is refused
/// before it is written, with its reason; the store's next writes are
/// announced as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_too_long_to_announce_is_refused_and_the_next_is_heard() {
    let Some(pg) = Cluster::start() else {
        return;
    };
    let a = PostgresStore::connect(&pg.url).await.unwrap();
    let b = PostgresStore::connect(&pg.url).await.unwrap();
    let mut feed = b.watch();
    let long = "x".repeat(9_000);
    let refused = a
        .put(testing::hardware(&long, 500).into(), Precondition::Absent)
        .await
        .expect_err("an announcement past 8,000 bytes");
    assert!(
        format!("{refused:#}").contains("announcement") && refused.to_string().len() < 12_000,
        "{refused}"
    );
    let key = tinker_core::model::ObjectKey::default_ns(tinker_core::model::Kind::Hardware, &long);
    assert!(a.get(&key).await.unwrap().is_none(), "nothing written");
    a.put(testing::hardware("short", 501).into(), Precondition::Absent)
        .await
        .unwrap();
    let change = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let change = feed.recv().await.expect("feed open");
            if change.key.name == "short" {
                return change;
            }
        }
    })
    .await
    .expect("the next write is heard");
    assert_eq!(change.version, 1);
}

/// A write whose caller gives up while the write waits on a row lock (the
/// call dropped mid-write) lands once the lock goes, after the first check
/// of its row: it is announced all the same, at a later check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_caller_gave_up_is_announced_once_it_lands() {
    let Some(pg) = Cluster::start() else {
        return;
    };
    let a = PostgresStore::connect(&pg.url).await.unwrap();
    let b = PostgresStore::connect(&pg.url).await.unwrap();
    let hw = testing::hardware("slow", 600);
    a.put(hw.clone().into(), Precondition::Absent)
        .await
        .unwrap();
    let mut feed = b.watch();
    let locker = raw_client(&pg.url).await;
    locker
        .batch_execute("BEGIN; SELECT 1 FROM objects WHERE key LIKE '%slow%' FOR UPDATE")
        .await
        .unwrap();
    // The write waits on the row; its caller gives up.
    let gave_up = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        a.put(hw.into(), Precondition::Version(1)),
    )
    .await;
    assert!(gave_up.is_err(), "the write waits on the lock");
    // The first check finds the row unwritten; then the write lands.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    locker.batch_execute("COMMIT").await.unwrap();
    let change = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            let change = feed.recv().await.expect("feed open");
            if change.key.name == "slow" && change.version == 2 {
                return change;
            }
        }
    })
    .await
    .expect("the write that landed is announced");
    assert!(!change.deleted);
}
