//! Stores written by older code open with this code: the committed fixtures
//! under `tests/fixtures/` were written by the schema-version-1 code (commit
//! 9fe7b6d, before stores had migrations), and every object, workflow and
//! machine event in them must still be found, and the store must still work.

use jiff::Timestamp;
use tinker_core::model::{Kind, Workflow};
use tinker_core::state::{ActionOutcome, ActionState, WorkflowEvent, WorkflowState};
use tinker_core::store::{EventKind, EventSource, MachineEvent, Precondition};
use tinker_core::testing::{self, mac};
use tinker_core::{WorkflowStore, WorkflowStoreExt};
use tinker_store::testing::TempPostgres;
use tinker_store::{PostgresStore, RedbStore};

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + second).unwrap()
}

/// An event as version 1 wrote it (a source name and a message), as today's
/// code reads it: a [`EventKind::Note`] from a typed source.
fn event(second: i64, machine: &str, source: &str, message: &str) -> MachineEvent {
    let source: EventSource =
        serde_json::from_value(serde_json::Value::from(source)).expect("a known source");
    MachineEvent::new(
        at(second),
        machine,
        source,
        EventKind::Note {
            message: message.into(),
        },
    )
}

/// Claims the worker's next action and reports `outcome` for it.
async fn run_one(store: &dyn WorkflowStore, worker: u32, second: i64, outcome: ActionOutcome) {
    let a = store
        .claim_next_action(&mac(worker).to_string(), at(second))
        .await
        .unwrap()
        .expect("an action to claim");
    let report = WorkflowEvent::Report {
        action: a.action_index,
        attempt: a.attempt,
        outcome,
    };
    store
        .apply_event(&a.workflow, &report, at(second + 1))
        .await
        .unwrap();
}

/// What the fixtures hold, written through the public API of the code of the day.
/// Kept to write the next schema version's fixture the same way; the committed
/// files are never rewritten, as they stand for stores in the field.
async fn write_fixture(store: &dyn WorkflowStore) {
    for (name, n) in [("sm01", 1), ("sm02", 2), ("sm03", 3), ("sm04", 4)] {
        store
            .put(testing::hardware(name, n).into(), Precondition::Absent)
            .await
            .unwrap();
    }
    let mut lab = testing::hardware("gpu01", 5);
    lab.metadata.namespace = Some("lab".into());
    store.put(lab.into(), Precondition::Absent).await.unwrap();
    for (name, actions) in [("ubuntu", 2), ("debian", 3)] {
        store
            .put(
                testing::template(name, actions, 600).into(),
                Precondition::Absent,
            )
            .await
            .unwrap();
    }
    // Not yet seen by the engine: no status.
    let fresh = Workflow::new("wf-new", "ubuntu", "sm01", mac(1));
    store.put(fresh.into(), Precondition::Absent).await.unwrap();
    for (name, worker, actions) in [
        ("wf-running", 2, 3),
        ("wf-done", 3, 2),
        ("wf-failed", 4, 2),
        ("wf-timeout", 5, 1),
    ] {
        store
            .put(
                testing::rendered_workflow(name, mac(worker), actions, 600).into(),
                Precondition::Absent,
            )
            .await
            .unwrap();
    }
    // wf-running: the first action succeeded, the second is claimed.
    run_one(store, 2, 10, ActionOutcome::Success).await;
    store
        .claim_next_action_for_request(&mac(2).to_string(), Some("req-7"), at(20))
        .await
        .unwrap()
        .expect("the second action");
    run_one(store, 3, 30, ActionOutcome::Success).await;
    run_one(store, 3, 40, ActionOutcome::Success).await;
    run_one(
        store,
        4,
        50,
        ActionOutcome::Failed {
            exit_code: Some(3),
            message: "disk /dev/sda not found".into(),
        },
    )
    .await;
    run_one(
        store,
        5,
        60,
        ActionOutcome::Timeout {
            message: "no output for 600 s".into(),
        },
    )
    .await;
    for e in fixture_events() {
        store.append_event(e).await.unwrap();
    }
}

fn fixture_events() -> Vec<MachineEvent> {
    vec![
        event(1, "default/sm01", "dhcp", "offered 10.0.0.1 with ipxe.efi"),
        event(2, "default/sm01", "http", "served auto.ipxe"),
        event(3, "02:00:00:00:00:63", "dhcp", "ignored: unknown MAC"),
        event(10, "default/sm02", "worker", "claimed step-0 (attempt 1)"),
        event(11, "default/sm02", "worker", "step-0 succeeded"),
        event(50, "default/sm04", "worker", "step-0 failed: exit code 3"),
        event(61, "lab/gpu01", "bmc", "power cycle: unreachable"),
    ]
}

/// Everything [`write_fixture`] wrote is there, with the versions it had, and
/// the store still claims, reports and logs.
async fn check_fixture(store: &dyn WorkflowStore) {
    let keys = |kind| async move {
        store
            .list(kind)
            .await
            .unwrap()
            .into_iter()
            .map(|o| (o.value.key().to_string(), o.version))
            .collect::<Vec<_>>()
    };
    let owned = |v: &[(&str, u64)]| {
        v.iter()
            .map(|(k, n)| (k.to_string(), *n))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(Kind::Hardware).await,
        owned(&[
            ("Hardware default/sm01", 1),
            ("Hardware default/sm02", 1),
            ("Hardware default/sm03", 1),
            ("Hardware default/sm04", 1),
            ("Hardware lab/gpu01", 1),
        ])
    );
    assert_eq!(
        keys(Kind::Template).await,
        owned(&[
            ("Template default/debian", 1),
            ("Template default/ubuntu", 1)
        ])
    );
    assert_eq!(
        keys(Kind::Workflow).await,
        owned(&[
            ("Workflow default/wf-done", 5),
            ("Workflow default/wf-failed", 3),
            ("Workflow default/wf-new", 1),
            ("Workflow default/wf-running", 4),
            ("Workflow default/wf-timeout", 3),
        ])
    );
    // The indexes came along: lookups by MAC and by IP address.
    let sm03 = store.hardware_by_mac(mac(3)).await.unwrap().unwrap();
    assert_eq!(sm03.value.metadata.name, "sm03");
    let gpu = store
        .hardware_by_ip("10.0.0.5".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gpu.value.metadata.namespace(), "lab");
    let tpl = store.template("default", "debian").await.unwrap().unwrap();
    assert!(tpl.value.spec.data.as_deref().unwrap().contains("step-2"));

    let wf = |name: &'static str| async move {
        store
            .workflow("default", name)
            .await
            .unwrap()
            .unwrap()
            .value
    };
    assert!(wf("wf-new").await.status.is_none());
    let states = |w: &Workflow| {
        let s = w.status.as_ref().unwrap();
        (
            s.state,
            s.actions().map(|(_, a)| a.state).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        states(&wf("wf-done").await),
        (WorkflowState::Success, vec![ActionState::Success; 2])
    );
    let failed = wf("wf-failed").await;
    assert_eq!(
        states(&failed),
        (
            WorkflowState::Failed,
            vec![ActionState::Failed, ActionState::Pending]
        )
    );
    let step0 = failed.status.as_ref().unwrap().actions().next().unwrap().1;
    assert_eq!(step0.exit_code, Some(3));
    assert!(
        step0
            .message
            .as_deref()
            .unwrap()
            .ends_with("disk /dev/sda not found")
    );
    assert_eq!(
        states(&wf("wf-timeout").await),
        (WorkflowState::Timeout, vec![ActionState::Timeout])
    );
    let running = wf("wf-running").await;
    assert_eq!(
        states(&running),
        (
            WorkflowState::Running,
            vec![
                ActionState::Success,
                ActionState::Running,
                ActionState::Pending
            ]
        )
    );
    let step0 = running.status.as_ref().unwrap().actions().next().unwrap().1;
    assert_eq!(step0.execution_start, Some(at(10)));
    assert_eq!(step0.execution_stop, Some(at(11)));

    let messages = |machine: &'static str| async move {
        store
            .events(machine, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.seq, e.at, e.source, e.message()))
            .collect::<Vec<_>>()
    };
    let all = fixture_events();
    for machine in [
        "default/sm01",
        "02:00:00:00:00:63",
        "default/sm02",
        "default/sm04",
        "lab/gpu01",
    ] {
        let expected: Vec<_> = all
            .iter()
            .enumerate()
            .filter(|(_, e)| e.machine == machine)
            .map(|(i, e)| (i as u64 + 1, e.at, e.source, e.message()))
            .collect();
        assert_eq!(messages(machine).await, expected, "events of {machine}");
    }

    // Still a working store: the claimed action's request gets it again, its
    // report lands, the last action follows, and new events come after the old.
    let worker = mac(2).to_string();
    let again = store
        .claim_next_action_for_request(&worker, Some("req-7"), at(100))
        .await
        .unwrap()
        .expect("the same assignment for the same request");
    assert_eq!((again.action_index, again.attempt), (1, 1));
    let report = WorkflowEvent::Report {
        action: 1,
        attempt: 1,
        outcome: ActionOutcome::Success,
    };
    store
        .apply_event(&again.workflow, &report, at(101))
        .await
        .unwrap();
    let last = store.claim_next_action(&worker, at(102)).await.unwrap();
    assert_eq!(last.map(|a| a.action_index), Some(2));
    store
        .append_event(event(103, "default/sm02", "worker", "after the upgrade"))
        .await
        .unwrap();
    let sm02 = store.events("default/sm02", 100).await.unwrap();
    assert_eq!(sm02.len(), 3);
    assert!(sm02[2].seq > 7, "new events come after the old: {sm02:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_redb_store_opens_and_works() {
    let dir = tempfile::tempdir().unwrap();
    // Opening upgrades the file in place: work on a copy.
    let path = dir.path().join("v1.redb");
    std::fs::copy(FIXTURES.to_owned() + "/v1.redb", &path).unwrap();
    let store = RedbStore::open(&path).await.unwrap();
    check_fixture(&store).await;
    drop(store);
    // And again, now that it is upgraded.
    let store = RedbStore::open(&path).await.unwrap();
    assert_eq!(store.workflows().await.unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_postgres_store_opens_and_works() {
    let Some(pg) = TempPostgres::start() else {
        return;
    };
    let dump = std::fs::read_to_string(FIXTURES.to_owned() + "/v1-postgres.sql").unwrap();
    let (client, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client.batch_execute(&dump).await.unwrap();
    drop(client);
    let store = PostgresStore::connect(&pg.url).await.unwrap();
    check_fixture(&store).await;
}

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// Writes `tests/fixtures/v1.redb` (run by hand: `--ignored write_redb_fixture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the fixture; run by hand with the code of the schema version to record"]
async fn write_redb_fixture() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1.redb");
    let _ = std::fs::remove_file(path);
    {
        let store = RedbStore::open(path).await.unwrap();
        write_fixture(&store).await;
    }
}

/// Writes a PostgreSQL store and dumps it to `tests/fixtures/v1-postgres.sql`
/// (run by hand: `--ignored write_postgres_fixture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the fixture; run by hand with the code of the schema version to record"]
async fn write_postgres_fixture() {
    let pg = TempPostgres::start().expect("PostgreSQL");
    {
        let store = PostgresStore::connect(&pg.url).await.unwrap();
        write_fixture(&store).await;
    }
    let out = std::process::Command::new("pg_dump")
        .args([
            "--inserts",
            "--no-owner",
            "--no-privileges",
            "--dbname",
            &pg.url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/v1-postgres.sql"
        ),
        out.stdout,
    )
    .unwrap();
}
