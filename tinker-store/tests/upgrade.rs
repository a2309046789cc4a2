//! Stores written by older code open with this code: the committed fixtures
//! under `tests/fixtures/` were written by the schema-version-1 code (commit
//! 9fe7b6d, before stores had migrations), and every object, workflow and
//! machine event in them must still be found, and the store must still work.

use jiff::Timestamp;
use std::sync::Arc;
use tinker_core::model::{Kind, Workflow};
use tinker_core::state::{ActionOutcome, WorkflowEvent};
use tinker_core::store::{MachineEvent, Precondition};
use tinker_core::testing::{self, mac};
use tinker_core::{WorkflowStore, WorkflowStoreExt};

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + second).unwrap()
}

fn event(second: i64, machine: &str, source: &str, message: &str) -> MachineEvent {
    MachineEvent {
        seq: 0,
        at: at(second),
        machine: machine.into(),
        source: source.into(),
        message: message.into(),
    }
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
    for kind in [Kind::Hardware, Kind::Template, Kind::Workflow] {
        for o in store.list(kind).await.unwrap() {
            println!("{} v{}", o.value.key(), o.version);
        }
    }
    for wf in store.workflows().await.unwrap() {
        println!("{:#?}", wf.value.status);
    }
    for m in ["default/sm01", "02:00:00:00:00:63", "default/sm02", "default/sm04", "lab/gpu01"] {
        println!("{:?}", store.events(m, 100).await.unwrap());
    }
}

/// Writes `tests/fixtures/v1.redb` (run by hand: `--ignored write_redb_fixture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the fixture; run by hand with the code of the schema version to record"]
async fn write_redb_fixture() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1.redb");
    let _ = std::fs::remove_file(path);
    {
        let store = tinker_store::RedbStore::open(path).await.unwrap();
        write_fixture(&store).await;
    }
    let store = tinker_store::RedbStore::open(path).await.unwrap();
    check_fixture(&store).await;
}

/// Writes a PostgreSQL store and dumps it to `tests/fixtures/v1-postgres.sql`
/// (run by hand: `--ignored write_postgres_fixture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the fixture; run by hand with the code of the schema version to record"]
async fn write_postgres_fixture() {
    let pg = tinker_store::testing::TempPostgres::start().expect("PostgreSQL");
    {
        let store = tinker_store::PostgresStore::connect(&pg.url).await.unwrap();
        write_fixture(&store).await;
        check_fixture(&store).await;
    }
    let out = std::process::Command::new("pg_dump")
        .args(["--inserts", "--no-owner", "--no-privileges", "--dbname", &pg.url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1-postgres.sql"),
        out.stdout,
    )
    .unwrap();
}
