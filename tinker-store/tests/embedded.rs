//! The embedded store: the conformance suite, and surviving a crash.

use jiff::{SignedDuration, Timestamp};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use tinker_core::state::{ActionOutcome, ActionState, WorkflowEvent, WorkflowState};
use tinker_core::store::Precondition;
use tinker_core::testing::{self, mac};
use tinker_core::{WorkflowStore, WorkflowStoreExt};
use tinker_store::RedbStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("tinker.redb"))
        .await
        .unwrap();
    testing::store::run_all(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_acts_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tinker.redb");
    {
        let store = RedbStore::open(&path).await.unwrap();
        testing::store::operator_acts(&store).await;
    }
    let store = RedbStore::open(&path).await.unwrap();
    testing::store::operator_acts_survive(&store).await;
}

#[tokio::test]
async fn redb_event_log_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("tinker.redb"))
        .await
        .unwrap()
        .with_event_cap(6);
    testing::store::event_log_is_bounded(&store, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_store_conforms_through_a_box() {
    let dir = tempfile::tempdir().unwrap();
    let store: Box<dyn WorkflowStore> = Box::new(
        RedbStore::open(dir.path().join("tinker.redb"))
            .await
            .unwrap(),
    );
    testing::store::crud_and_optimistic_concurrency(store.as_ref()).await;
    testing::store::claim_and_report_in_order(store.as_ref()).await;
}

fn t0() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

const CHILD_ENV: &str = "TINKER_CRASH_CHILD";

/// Runs in a child process: starts a workflow, finishes its first action, claims
/// the second, and dies without any shutdown (abort: no destructors, no flush).
async fn crash_child_mid_workflow(path: &str) {
    let store = RedbStore::open(path).await.unwrap();
    store
        .put(
            testing::rendered_workflow("crashy", mac(9001), 3, 600).into(),
            Precondition::Absent,
        )
        .await
        .unwrap();
    let worker = mac(9001).to_string();
    let a = store
        .claim_next_action(&worker, t0())
        .await
        .unwrap()
        .unwrap();
    let report = WorkflowEvent::Report {
        action: a.action_index,
        attempt: a.attempt,
        outcome: ActionOutcome::Success,
    };
    store.apply_event(&a.workflow, &report, t0()).await.unwrap();
    let b = store
        .claim_next_action(&worker, t0())
        .await
        .unwrap()
        .unwrap();
    println!("claimed {} {}", b.action_index, b.attempt);
    std::process::abort();
}

/// Runs in a child process: writes as fast as it can, printing each committed version.
async fn crash_child_writing(path: &str) {
    let store = RedbStore::open(path).await.unwrap();
    let hw = testing::hardware("busy", 9100);
    let mut version = store
        .put(hw.clone().into(), Precondition::Absent)
        .await
        .unwrap();
    loop {
        let mut next = hw.clone();
        next.spec.user_data = Some(format!("version {}", version + 1));
        version = store
            .put(next.into(), Precondition::Version(version))
            .await
            .unwrap();
        println!("committed {version}");
    }
}

#[test]
fn crash_child() {
    // Not a test on its own: the entry point of the child processes below.
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mode, path) = spec.split_once(':').unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    match mode {
        "mid-workflow" => rt.block_on(crash_child_mid_workflow(path)),
        "writing" => rt.block_on(crash_child_writing(path)),
        _ => panic!("unknown mode {mode}"),
    }
}

fn child(mode: &str, path: &std::path::Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{mode}:{}", path.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_continues_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tinker.redb");
    let out = child("mid-workflow", &path).wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "the child must die, not exit cleanly"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("claimed 1 1"), "child output: {stdout}");

    let store = RedbStore::open(&path).await.unwrap();
    let wf = store
        .workflow("default", "crashy")
        .await
        .unwrap()
        .expect("workflow survived");
    let status = wf.value.status.unwrap();
    assert_eq!(status.state, WorkflowState::Running);
    let states: Vec<ActionState> = status.actions().map(|(_, a)| a.state).collect();
    assert_eq!(
        states,
        [
            ActionState::Success,
            ActionState::Running,
            ActionState::Pending
        ]
    );

    // The claimed action is not handed out again; its worker's report lands.
    let worker = mac(9001).to_string();
    assert!(
        store
            .claim_next_action(&worker, t0())
            .await
            .unwrap()
            .is_none(),
        "action 1 would run twice"
    );
    let key =
        tinker_core::model::ObjectKey::default_ns(tinker_core::model::Kind::Workflow, "crashy");
    let report = WorkflowEvent::Report {
        action: 1,
        attempt: 1,
        outcome: ActionOutcome::Success,
    };
    store
        .apply_event(&key, &report, t0() + SignedDuration::from_secs(5))
        .await
        .unwrap();
    let c = store
        .claim_next_action(&worker, t0())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((c.action_index, c.attempt), (2, 1));
    let report = WorkflowEvent::Report {
        action: 2,
        attempt: 1,
        outcome: ActionOutcome::Success,
    };
    let done = store
        .apply_event(&key, &report, t0() + SignedDuration::from_secs(9))
        .await
        .unwrap();
    assert_eq!(done.workflow.value.state(), Some(WorkflowState::Success));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_write_keeps_every_committed_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tinker.redb");
    let mut proc = child("writing", &path);
    let mut lines = BufReader::new(proc.stdout.take().unwrap()).lines();
    let mut last = 0u64;
    // Let it commit a few hundred writes, then SIGKILL it mid-stream.
    while last < 200 {
        let line = lines.next().expect("child writes").unwrap();
        if let Some(v) = line.strip_prefix("committed ") {
            last = v.trim().parse().unwrap();
        }
    }
    proc.kill().unwrap();
    proc.wait().unwrap();
    // Lines already printed were committed before they were printed.
    for line in lines.map_while(Result::ok) {
        if let Some(Ok(v)) = line
            .strip_prefix("committed ")
            .map(|v| v.trim().parse::<u64>())
        {
            last = last.max(v);
        }
    }
    let store = RedbStore::open(&path).await.unwrap();
    let hw = store
        .hardware("default", "busy")
        .await
        .unwrap()
        .expect("hardware survived");
    assert!(
        hw.version >= last,
        "committed version {last} lost, found {}",
        hw.version
    );
    let expected = if hw.version == 1 {
        None
    } else {
        Some(format!("version {}", hw.version))
    };
    assert_eq!(
        hw.value.spec.user_data, expected,
        "the stored object matches its version"
    );
    // The store is fully usable after recovery.
    store
        .put(hw.value.into(), Precondition::Version(hw.version))
        .await
        .unwrap();
    assert!(
        store.hardware_by_mac(mac(9100)).await.unwrap().is_some(),
        "index survived"
    );
}

/// Group commit: hundreds of writes at once share commits; a write that fails its
/// check (here: a second create of the same name, or a MAC already taken) fails
/// alone, the rest of its batch lands, and all of it is there after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_share_commits_and_fail_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tinker.redb");
    let store: Arc<dyn WorkflowStore> = Arc::new(RedbStore::open(&path).await.unwrap());
    let mut tasks = Vec::new();
    for i in 0..400u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // Pairs: i and i+200 create the same name; odd names reuse a MAC.
            let n = i % 200;
            let hw =
                testing::hardware(&format!("gc-{n}"), if n % 2 == 1 { 9000 } else { 9001 + n });
            store.put(hw.into(), Precondition::Absent).await.is_ok()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap() as usize;
    }
    // 100 even names succeed once each; of the 100 odd names sharing one MAC,
    // exactly one gets it.
    assert_eq!(ok, 101);
    drop(store);
    let store = RedbStore::open(&path).await.unwrap();
    let all = store
        .list(tinker_core::model::Kind::Hardware)
        .await
        .unwrap();
    assert_eq!(
        all.len(),
        101,
        "every acknowledged write survived the reopen"
    );
    assert!(all.iter().all(|v| v.version == 1));
}
