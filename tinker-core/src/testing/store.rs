//! The `WorkflowStore` conformance suite, written once, run by every store
//! (in-memory, embedded, PostgreSQL): `run_all(store).await` in each backend's tests.
//! Each check uses its own object names, so the checks can share one store.

use super::{hardware, mac, rendered_workflow, template};
use crate::error::Error;
use crate::model::{Kind, Object, ObjectKey};
use crate::state::{ActionOutcome, ActionState, Effect, WorkflowEvent, WorkflowState};
use crate::store::{MachineEvent, Precondition, WorkflowStore, WorkflowStoreExt};
use jiff::{SignedDuration, Timestamp};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

fn t0() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("valid timestamp")
}

fn wf_key(name: &str) -> ObjectKey {
    ObjectKey::default_ns(Kind::Workflow, name)
}

/// Runs every check.
pub async fn run_all(store: Arc<dyn WorkflowStore>) {
    crud_and_optimistic_concurrency(store.as_ref()).await;
    lookups_by_mac_and_ip(store.as_ref()).await;
    duplicate_mac_is_refused(store.as_ref()).await;
    concurrent_creates_have_one_winner(store.clone(), 16).await;
    change_feed_reports_writes(store.as_ref()).await;
    claim_and_report_in_order(store.as_ref()).await;
    a_workers_event_is_checked_on_the_same_read(store.as_ref()).await;
    a_claim_from_a_look(store.as_ref()).await;
    workflows_of_a_worker(store.as_ref()).await;
    a_recent_workflow_follows_the_stores_writes(store.as_ref()).await;
    a_retried_claim_gets_the_same_action(store.as_ref()).await;
    failure_ends_the_workflow(store.as_ref()).await;
    timeouts_are_applied(store.as_ref()).await;
    machine_event_log(store.as_ref()).await;
    operator_acts(store.as_ref()).await;
    operator_acts_survive(store.as_ref()).await;
    concurrent_claims_are_exclusive(store.clone(), 64, 16, 4, 5).await;
}

/// Create, read, update with a version, stale versions refused, list, delete.
pub async fn crud_and_optimistic_concurrency(store: &dyn WorkflowStore) {
    let hw = hardware("crud-a", 1001);
    let key = ObjectKey::default_ns(Kind::Hardware, "crud-a");
    assert_eq!(
        store
            .put(hw.clone().into(), Precondition::Absent)
            .await
            .unwrap(),
        1
    );
    let again = store
        .put(hw.clone().into(), Precondition::Absent)
        .await
        .unwrap_err();
    assert!(
        matches!(again, Error::AlreadyExists { .. }),
        "create twice: {again}"
    );
    let got = store.get(&key).await.unwrap().expect("stored");
    assert_eq!(got.version, 1);
    assert_eq!(got.value, Object::Hardware(hw.clone()));

    let mut changed = hw.clone();
    changed.spec.user_data = Some("#cloud-config\n".into());
    assert_eq!(
        store
            .put(changed.clone().into(), Precondition::Version(1))
            .await
            .unwrap(),
        2
    );
    let stale = store
        .put(hw.clone().into(), Precondition::Version(1))
        .await
        .unwrap_err();
    match &stale {
        Error::Conflict {
            expected, found, ..
        } => assert_eq!((*expected, *found), (1, 2)),
        other => panic!("stale write not refused as a conflict: {other}"),
    }
    assert!(
        stale.to_string().contains("crud-a"),
        "the conflict names the object: {stale}"
    );
    assert_eq!(
        store
            .hardware("default", "crud-a")
            .await
            .unwrap()
            .unwrap()
            .value,
        changed
    );
    let missing = store
        .put(
            hardware("crud-missing", 1002).into(),
            Precondition::Version(3),
        )
        .await
        .unwrap_err();
    assert!(matches!(missing, Error::NotFound { .. }), "{missing}");

    store
        .put(hardware("crud-b", 1003).into(), Precondition::Any)
        .await
        .unwrap();
    let names: Vec<String> = store
        .list(Kind::Hardware)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.value.metadata().name.clone())
        .filter(|n| n.starts_with("crud-"))
        .collect();
    assert_eq!(names, ["crud-a", "crud-b"], "listed in name order");

    let stale = store
        .delete(&key, Precondition::Version(1))
        .await
        .unwrap_err();
    assert!(matches!(stale, Error::Conflict { .. }), "{stale}");
    store.delete(&key, Precondition::Version(2)).await.unwrap();
    assert!(store.get(&key).await.unwrap().is_none());
    let gone = store.delete(&key, Precondition::Any).await.unwrap_err();
    assert!(matches!(gone, Error::NotFound { .. }), "{gone}");
    // A name can be reused after deletion, starting again at version 1.
    assert_eq!(store.put(hw.into(), Precondition::Absent).await.unwrap(), 1);
}

/// Hardware is found by MAC and by IP, and the index follows updates.
pub async fn lookups_by_mac_and_ip(store: &dyn WorkflowStore) {
    let hw = hardware("lookup", 2001);
    let ip = hw.ipv4s()[0];
    store
        .put(hw.clone().into(), Precondition::Absent)
        .await
        .unwrap();
    let by_mac = store
        .hardware_by_mac(mac(2001))
        .await
        .unwrap()
        .expect("by MAC");
    assert_eq!(by_mac.value.metadata.name, "lookup");
    let by_ip = store
        .hardware_by_ip(ip.into())
        .await
        .unwrap()
        .expect("by IP");
    assert_eq!(by_ip.version, 1);
    assert!(store.hardware_by_mac(mac(2002)).await.unwrap().is_none());

    let mut moved = hw.clone();
    moved.spec.interfaces[0].dhcp.as_mut().unwrap().mac = mac(2002).to_string();
    store
        .put(moved.into(), Precondition::Version(1))
        .await
        .unwrap();
    assert!(
        store.hardware_by_mac(mac(2001)).await.unwrap().is_none(),
        "old MAC still indexed"
    );
    assert_eq!(
        store
            .hardware_by_mac(mac(2002))
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );
    store
        .delete(
            &ObjectKey::default_ns(Kind::Hardware, "lookup"),
            Precondition::Any,
        )
        .await
        .unwrap();
    assert!(
        store.hardware_by_mac(mac(2002)).await.unwrap().is_none(),
        "deleted still indexed"
    );
    assert!(store.hardware_by_ip(ip.into()).await.unwrap().is_none());
}

/// Two Hardware cannot share a MAC.
pub async fn duplicate_mac_is_refused(store: &dyn WorkflowStore) {
    store
        .put(hardware("dup-a", 3001).into(), Precondition::Absent)
        .await
        .unwrap();
    let mut other = hardware("dup-b", 3002);
    other.spec.interfaces[0].dhcp.as_mut().unwrap().mac = mac(3001).to_string();
    let err = store
        .put(other.into(), Precondition::Absent)
        .await
        .unwrap_err();
    assert!(is_clash(&err), "a clash, typed: {err:?}");
    assert!(
        err.to_string().contains(&mac(3001).to_string()),
        "names the MAC: {err}"
    );
    assert!(
        store.hardware("default", "dup-b").await.unwrap().is_none(),
        "nothing written"
    );
    // An update at the version read that takes another's MAC: the same
    // refusal, and the stored object and its index as they were.
    let v = store
        .put(hardware("dup-c", 3003).into(), Precondition::Absent)
        .await
        .unwrap();
    let mut taking = hardware("dup-c", 3003);
    taking.spec.interfaces[0].dhcp.as_mut().unwrap().mac = mac(3001).to_string();
    let err = store
        .put(taking.into(), Precondition::Version(v))
        .await
        .unwrap_err();
    assert!(is_clash(&err), "a clash, typed: {err:?}");
    assert!(err.to_string().contains("dup-a"), "names the holder: {err}");
    assert_eq!(
        store
            .hardware("default", "dup-c")
            .await
            .unwrap()
            .unwrap()
            .version,
        v,
        "nothing written"
    );
    assert_eq!(name_by_mac(store, 3001).await.as_deref(), Some("dup-a"));
    assert_eq!(name_by_mac(store, 3003).await.as_deref(), Some("dup-c"));
}

/// The name of the Hardware holding `mac(n)`.
async fn name_by_mac(store: &dyn WorkflowStore, n: u32) -> Option<String> {
    store
        .hardware_by_mac(mac(n))
        .await
        .unwrap()
        .map(|h| h.value.metadata.name)
}

/// Whether `err` is the refusal of a MAC or IP address another object holds.
fn is_clash(err: &Error) -> bool {
    matches!(err, Error::Invalid(v) if v.0.iter().any(|f| f.kind == crate::FindingKind::Clash))
}

/// Concurrent writers, as two control-plane replicas are: two creators of one
/// object (with different MACs) have one winner, the other gets
/// `AlreadyExists`, and the stored object and its index entries are the
/// winner's; two Hardware created at once with one MAC have one winner, the
/// other gets a clash, and the MAC finds the winner. `rounds` pairs of each.
pub async fn concurrent_creates_have_one_winner(store: Arc<dyn WorkflowStore>, rounds: u32) {
    for round in 0..rounds {
        // One name, two MACs.
        let name = format!("race-create-{round}");
        let (ma, mb) = (9000 + 2 * round, 9001 + 2 * round);
        let (a, b) = (hardware(&name, ma), hardware(&name, mb));
        let (ra, rb) = tokio::join!(
            store.put(a.into(), Precondition::Absent),
            store.put(b.into(), Precondition::Absent)
        );
        let (won, lost, err) = match (ra, rb) {
            (Ok(1), Err(e)) => (ma, mb, e),
            (Err(e), Ok(1)) => (mb, ma, e),
            other => panic!("{name}: one creator must win, the other fail: {other:?}"),
        };
        assert!(
            matches!(err, Error::AlreadyExists { .. }),
            "{name}: {err:?}"
        );
        let stored = store.hardware("default", &name).await.unwrap().unwrap();
        assert_eq!(stored.version, 1, "{name}: the loser wrote nothing");
        assert_eq!(
            stored.value.spec.interfaces[0].dhcp.as_ref().unwrap().mac,
            mac(won).to_string(),
            "{name}: the winner's object"
        );
        let by_mac = |n| name_by_mac(store.as_ref(), n);
        assert_eq!(by_mac(won).await.as_deref(), Some(name.as_str()));
        assert_eq!(by_mac(lost).await, None, "{name}: a stale index entry");

        // Two names, one MAC.
        let shared = 9500 + round;
        let (x, y) = (format!("race-mac-{round}-x"), format!("race-mac-{round}-y"));
        let (rx, ry) = tokio::join!(
            store.put(hardware(&x, shared).into(), Precondition::Absent),
            store.put(
                {
                    let mut h = hardware(&y, 9700 + round);
                    h.spec.interfaces[0].dhcp.as_mut().unwrap().mac = mac(shared).to_string();
                    h
                }
                .into(),
                Precondition::Absent
            )
        );
        let (won, lost, err) = match (rx, ry) {
            (Ok(_), Err(e)) => (&x, &y, e),
            (Err(e), Ok(_)) => (&y, &x, e),
            other => panic!("{x}/{y}: one MAC, one winner: {other:?}"),
        };
        assert!(is_clash(&err), "{lost}: {err:?}");
        assert!(store.hardware("default", lost).await.unwrap().is_none());
        assert_eq!(by_mac(shared).await.as_ref(), Some(won));
    }
}

/// Writes and deletes appear on the change feed with their versions.
pub async fn change_feed_reports_writes(store: &dyn WorkflowStore) {
    let mut feed = store.watch();
    let t = template("feed-template", 1, 60);
    store
        .put(t.clone().into(), Precondition::Absent)
        .await
        .unwrap();
    store.put(t.into(), Precondition::Version(1)).await.unwrap();
    let key = ObjectKey::default_ns(Kind::Template, "feed-template");
    store.delete(&key, Precondition::Any).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let c = tokio::time::timeout(std::time::Duration::from_secs(10), feed.recv())
            .await
            .expect("change arrives")
            .expect("feed open");
        if c.key == key {
            seen.push((c.version, c.deleted));
        }
    }
    assert_eq!(seen, [(1, false), (2, false), (2, true)]);
}

/// Actions are claimed one at a time, in order, each once; reports need the claim.
pub async fn claim_and_report_in_order(store: &dyn WorkflowStore) {
    let worker = mac(4001).to_string();
    let wf = rendered_workflow("order", mac(4001), 2, 60);
    store.put(wf.into(), Precondition::Absent).await.unwrap();
    let key = wf_key("order");
    assert!(
        store
            .claim_next_action(&mac(4002).to_string(), t0())
            .await
            .unwrap()
            .is_none(),
        "another worker gets nothing"
    );

    let a = store
        .claim_next_action(&worker, t0())
        .await
        .unwrap()
        .expect("first action");
    assert_eq!(
        (a.workflow.clone(), a.action_index, a.attempt),
        (key.clone(), 0, 1)
    );
    assert_eq!(
        a.action.environment.get("DEST_DISK").map(String::as_str),
        Some("/dev/sda")
    );
    assert!(
        store
            .claim_next_action(&worker, t0())
            .await
            .unwrap()
            .is_none(),
        "running action handed out twice"
    );

    let stale = WorkflowEvent::Report {
        action: 0,
        attempt: 7,
        outcome: ActionOutcome::Success,
    };
    let err = store.apply_event(&key, &stale, t0()).await.unwrap_err();
    assert!(matches!(err, Error::Transition { .. }), "{err}");

    let ok = WorkflowEvent::Report {
        action: 0,
        attempt: 1,
        outcome: ActionOutcome::Success,
    };
    let applied = store.apply_event(&key, &ok, t0()).await.unwrap();
    assert_eq!(applied.workflow.value.state(), Some(WorkflowState::Running));
    // The same report again (its answer was lost): kept, not written twice.
    let again = store.apply_event(&key, &ok, t0()).await.unwrap();
    assert_eq!(
        again.effect,
        Effect::AlreadyRecorded(WorkflowState::Running),
        "the same report again for the same claim"
    );
    assert_eq!(again.workflow.version, applied.workflow.version);
    let other = WorkflowEvent::Report {
        action: 0,
        attempt: 1,
        outcome: ActionOutcome::Timeout {
            message: String::new(),
        },
    };
    let err = store.apply_event(&key, &other, t0()).await.unwrap_err();
    assert!(
        matches!(err, Error::Transition { .. }),
        "another outcome for the same claim: {err}"
    );

    let b = store
        .claim_next_action(&worker, t0())
        .await
        .unwrap()
        .expect("second action");
    assert_eq!((b.action_index, b.attempt), (1, 1));
    let hb = store
        .apply_event(
            &key,
            &WorkflowEvent::Heartbeat {
                action: 1,
                attempt: 1,
            },
            t0() + SignedDuration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(hb.workflow.version > applied.workflow.version);
    let done = WorkflowEvent::Report {
        action: 1,
        attempt: 1,
        outcome: ActionOutcome::Success,
    };
    let applied = store
        .apply_event(&key, &done, t0() + SignedDuration::from_secs(9))
        .await
        .unwrap();
    assert_eq!(applied.workflow.value.state(), Some(WorkflowState::Success));
    assert!(
        store
            .claim_next_action(&worker, t0())
            .await
            .unwrap()
            .is_none()
    );
    let stored = store.workflow("default", "order").await.unwrap().unwrap();
    assert_eq!(
        stored.version, applied.workflow.version,
        "the store returns what it saved"
    );
    let status = stored.value.status.unwrap();
    assert!(
        status
            .actions()
            .all(|(_, a)| a.state == ActionState::Success)
    );
}

/// A worker's unfinished workflows come from the index: another worker's are
/// not among them, and a finished one leaves.
pub async fn workflows_of_a_worker(store: &dyn WorkflowStore) {
    let (me, other) = (mac(4101), mac(4102));
    for (name, worker) in [("mine-b", me), ("theirs", other), ("mine-a", me)] {
        let wf = rendered_workflow(name, worker, 1, 60);
        store.put(wf.into(), Precondition::Absent).await.unwrap();
    }
    let names = |found: Vec<crate::store::Versioned<crate::model::Workflow>>| {
        found
            .into_iter()
            .map(|v| v.value.metadata.name)
            .collect::<Vec<_>>()
    };
    let mine = store.workflows_for_worker(&me.to_string()).await.unwrap();
    assert_eq!(names(mine), ["mine-a", "mine-b"], "by key, only mine");
    let first = store
        .claim_next_action(&me.to_string(), t0())
        .await
        .unwrap()
        .expect("an action");
    let done = WorkflowEvent::Report {
        action: first.action_index,
        attempt: first.attempt,
        outcome: ActionOutcome::Success,
    };
    store
        .apply_event(&first.workflow, &done, t0())
        .await
        .unwrap();
    let left = store.workflows_for_worker(&me.to_string()).await.unwrap();
    assert_eq!(left.len(), 1, "the finished workflow left the index");
    assert_ne!(left[0].value.metadata.name, first.workflow.name);
    assert!(
        store
            .workflows_for_worker(&mac(4103).to_string())
            .await
            .unwrap()
            .is_empty()
    );
    // Not rendered yet: found by the workers its hardware map names, and
    // claiming finds nothing in it.
    let unrendered = crate::model::Workflow::new("later", "t", "hw-later", mac(4103));
    store
        .put(unrendered.into(), Precondition::Absent)
        .await
        .unwrap();
    let found = store
        .workflows_for_worker(&mac(4103).to_string())
        .await
        .unwrap();
    assert_eq!(names(found), ["later"]);
    assert!(
        store
            .claim_next_action(&mac(4103).to_string(), t0())
            .await
            .unwrap()
            .is_none()
    );
}

/// [`WorkflowStore::recent_workflow`] answers what the store's own writes
/// left, as a read does: after a create, a claim, a report, a replacement at
/// a version, and a deletion.
pub async fn a_recent_workflow_follows_the_stores_writes(store: &dyn WorkflowStore) {
    let worker = mac(4601).to_string();
    let key = wf_key("recent");
    let read = || async {
        store
            .get(&key)
            .await
            .unwrap()
            .and_then(crate::store::Versioned::into_workflow)
    };
    assert_eq!(store.recent_workflow(&key).await.unwrap(), None);
    let wf = rendered_workflow("recent", mac(4601), 2, 60);
    store.put(wf.into(), Precondition::Absent).await.unwrap();
    assert_eq!(store.recent_workflow(&key).await.unwrap(), read().await);
    let first = store
        .claim_next_action(&worker, t0())
        .await
        .unwrap()
        .expect("an action");
    let claimed = store.recent_workflow(&key).await.unwrap();
    assert_eq!(claimed, read().await, "after the claim");
    let done = WorkflowEvent::Report {
        action: first.action_index,
        attempt: first.attempt,
        outcome: ActionOutcome::Success,
    };
    store.apply_event(&key, &done, t0()).await.unwrap();
    let reported = store.recent_workflow(&key).await.unwrap().expect("there");
    assert_eq!(Some(&reported), read().await.as_ref(), "after the report");
    let mut replaced = reported.value.clone();
    replaced
        .metadata
        .labels
        .get_or_insert_default()
        .insert("recent".into(), "yes".into());
    store
        .put(replaced.into(), Precondition::Version(reported.version))
        .await
        .unwrap();
    let after = store.recent_workflow(&key).await.unwrap().expect("there");
    assert_eq!(
        Some(&after),
        read().await.as_ref(),
        "after a write at a version"
    );
    let label = after
        .value
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("recent"));
    assert_eq!(label.map(String::as_str), Some("yes"));
    store.delete(&key, Precondition::Any).await.unwrap();
    assert_eq!(
        store.recent_workflow(&key).await.unwrap(),
        None,
        "after the deletion"
    );
}

/// A failed action fails the workflow with its reason; nothing after it runs.
pub async fn failure_ends_the_workflow(store: &dyn WorkflowStore) {
    let worker = mac(5001).to_string();
    store
        .put(
            rendered_workflow("fails", mac(5001), 3, 60).into(),
            Precondition::Absent,
        )
        .await
        .unwrap();
    let key = wf_key("fails");
    let a = store
        .claim_next_action(&worker, t0())
        .await
        .unwrap()
        .unwrap();
    let report = WorkflowEvent::Report {
        action: a.action_index,
        attempt: a.attempt,
        outcome: ActionOutcome::Failed {
            exit_code: Some(3),
            message: "disk not found".into(),
        },
    };
    let applied = store.apply_event(&key, &report, t0()).await.unwrap();
    let status = applied.workflow.value.status.unwrap();
    assert_eq!(status.state, WorkflowState::Failed);
    let reason = status.reason.unwrap();
    assert!(
        reason.contains("exit code 3") && reason.contains("disk not found"),
        "{reason}"
    );
    assert!(
        store
            .claim_next_action(&worker, t0())
            .await
            .unwrap()
            .is_none(),
        "an action ran after a failure"
    );
    let err = store
        .apply_event(&key, &WorkflowEvent::Fail { reason: "x".into() }, t0())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Transition { .. }),
        "a finished workflow changed: {err}"
    );
}

/// A claim whose answer was lost: the same request again gets the same action
/// (same claim number, nothing changed); another request, or another worker,
/// gets nothing while it runs; after its report, the next request gets the next.
pub async fn a_retried_claim_gets_the_same_action(store: &dyn WorkflowStore) {
    let worker = mac(5101).to_string();
    store
        .put(
            rendered_workflow("retried", mac(5101), 2, 60).into(),
            Precondition::Absent,
        )
        .await
        .unwrap();
    let key = wf_key("retried");
    let first = store
        .claim_next_action_for_request(&worker, Some("ask-1"), t0())
        .await
        .unwrap()
        .expect("an action");
    let version = store
        .workflow("default", "retried")
        .await
        .unwrap()
        .unwrap()
        .version;
    let again = store
        .claim_next_action_for_request(&worker, Some("ask-1"), t0())
        .await
        .unwrap()
        .expect("the same action again");
    assert_eq!(
        (again.action_index, again.attempt),
        (first.action_index, first.attempt)
    );
    assert_eq!(
        store
            .workflow("default", "retried")
            .await
            .unwrap()
            .unwrap()
            .version,
        version,
        "handing out the same claim again writes nothing"
    );
    for (who, ask) in [
        (worker.as_str(), "ask-2"),
        (&mac(5102).to_string(), "ask-1"),
    ] {
        assert!(
            store
                .claim_next_action_for_request(who, Some(ask), t0())
                .await
                .unwrap()
                .is_none(),
            "{who} with {ask} got a running action"
        );
    }
    assert!(
        store
            .claim_next_action(&worker, t0())
            .await
            .unwrap()
            .is_none()
    );
    let report = WorkflowEvent::Report {
        action: first.action_index,
        attempt: first.attempt,
        outcome: ActionOutcome::Success,
    };
    store.apply_event(&key, &report, t0()).await.unwrap();
    // The reported action is never handed out again, whatever the request.
    let next = store
        .claim_next_action_for_request(&worker, Some("ask-1"), t0())
        .await
        .unwrap()
        .expect("the next action");
    assert_eq!(next.action_index, first.action_index + 1);
}

/// Action timeouts are applied by a tick, and saved.
pub async fn timeouts_are_applied(store: &dyn WorkflowStore) {
    let worker = mac(6001).to_string();
    store
        .put(
            rendered_workflow("slow", mac(6001), 2, 30).into(),
            Precondition::Absent,
        )
        .await
        .unwrap();
    let key = wf_key("slow");
    store
        .claim_next_action(&worker, t0())
        .await
        .unwrap()
        .unwrap();
    let early = store
        .apply_event(
            &key,
            &WorkflowEvent::Tick,
            t0() + SignedDuration::from_secs(29),
        )
        .await
        .unwrap();
    assert_eq!(early.workflow.value.state(), Some(WorkflowState::Running));
    let late = store
        .apply_event(
            &key,
            &WorkflowEvent::Tick,
            t0() + SignedDuration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(late.workflow.value.state(), Some(WorkflowState::Timeout));
    let stored = store
        .workflow("default", "slow")
        .await
        .unwrap()
        .unwrap()
        .value
        .status
        .unwrap();
    assert_eq!(stored.state, WorkflowState::Timeout);
    assert!(stored.reason.unwrap().contains("timeout of 30 s"));
    // A report that arrives after the deadline is refused: the action already timed out.
    let late_report = WorkflowEvent::Report {
        action: 0,
        attempt: 1,
        outcome: ActionOutcome::Success,
    };
    assert!(
        store
            .apply_event(&key, &late_report, t0() + SignedDuration::from_secs(31))
            .await
            .is_err()
    );
}

/// The event log is append-only, per machine, oldest first, and gives back each
/// event as it was written (its typed kind included).
pub async fn machine_event_log(store: &dyn WorkflowStore) {
    use crate::model::{GaveUp, MachineStep};
    use crate::store::{EventKind, EventSource};
    let kinds = [
        EventKind::BootDecision {
            decision: "event 0".into(),
        },
        EventKind::StepDone {
            step: MachineStep::SetPxeBoot,
        },
        EventKind::GaveUp(GaveUp {
            step: MachineStep::PowerCycle,
            attempts: 6,
            error: "bmc unreachable".into(),
        }),
        EventKind::ActionOutput {
            action_index: 1,
            stream: crate::runtime::Stream::Stdout,
            line: "event 3".into(),
        },
        EventKind::Note {
            message: "event 4".into(),
        },
    ];
    let mut written = Vec::new();
    for (i, kind) in kinds.into_iter().enumerate() {
        let mut event = MachineEvent::new(
            t0() + SignedDuration::from_secs(i as i64),
            "default/log-machine",
            EventSource::Engine,
            kind,
        );
        if i % 2 == 0 {
            event = event.for_workflow("default/wf");
        }
        store.append_event(event.clone()).await.unwrap();
        written.push(event);
    }
    store
        .append_event(MachineEvent::new(
            t0(),
            "default/other",
            EventSource::Dhcp,
            EventKind::Note {
                message: "not mine".into(),
            },
        ))
        .await
        .unwrap();
    let last = store.events("default/log-machine", 3).await.unwrap();
    assert!(
        last.windows(2).all(|w| w[0].seq < w[1].seq),
        "sequence numbers increase"
    );
    let read: Vec<MachineEvent> = last
        .into_iter()
        .map(|mut e| {
            e.seq = 0;
            e
        })
        .collect();
    assert_eq!(
        read,
        written[2..],
        "the last three, oldest first, unchanged"
    );
}

/// The event log is bounded per machine: a store built with an event cap of
/// `cap` (at least 4) keeps the newest `cap` events of each machine, oldest
/// first, and drops the rest; a batch written with `append_events` lands in
/// order with increasing sequence numbers, and is bounded the same way.
pub async fn event_log_is_bounded(store: &dyn WorkflowStore, cap: usize) {
    use crate::store::{EventKind, EventSource};
    assert!(cap >= 4, "the check needs a cap of at least 4");
    let event = |machine: &str, i: usize| {
        MachineEvent::new(
            t0() + SignedDuration::from_secs(i as i64),
            machine,
            EventSource::Worker,
            EventKind::Note {
                message: format!("line {i}"),
            },
        )
    };
    let messages = |events: &[MachineEvent]| -> Vec<String> {
        events
            .iter()
            .map(|e| match &e.kind {
                EventKind::Note { message } => message.clone(),
                other => format!("{other:?}"),
            })
            .collect()
    };
    let lines = |range: std::ops::Range<usize>| -> Vec<String> {
        range.map(|i| format!("line {i}")).collect()
    };
    // One by one, past the cap.
    let total = cap + 5;
    for i in 0..total {
        store
            .append_event(event("default/chatty", i))
            .await
            .unwrap();
    }
    let kept = store.events("default/chatty", total * 2).await.unwrap();
    assert_eq!(
        messages(&kept),
        lines(total - cap..total),
        "the newest {cap}"
    );
    assert!(kept.windows(2).all(|w| w[0].seq < w[1].seq));
    // Another machine keeps its own, unaffected by the first.
    store.append_event(event("default/quiet", 0)).await.unwrap();
    assert_eq!(store.events("default/quiet", 10).await.unwrap().len(), 1);
    assert_eq!(
        store
            .events("default/chatty", total * 2)
            .await
            .unwrap()
            .len(),
        cap
    );
    // A batch larger than the cap: in order, bounded.
    let batch: Vec<MachineEvent> = (100..100 + cap + 3)
        .map(|i| event("default/batch", i))
        .collect();
    store.append_events(batch).await.unwrap();
    let kept = store.events("default/batch", cap * 2).await.unwrap();
    assert_eq!(messages(&kept), lines(103..100 + cap + 3));
    assert!(kept.windows(2).all(|w| w[0].seq < w[1].seq));
    // A small batch after it pushes out as many of the oldest.
    store
        .append_events(vec![
            event("default/batch", 900),
            event("default/batch", 901),
        ])
        .await
        .unwrap();
    let kept = store.events("default/batch", cap * 2).await.unwrap();
    assert_eq!(kept.len(), cap);
    assert_eq!(
        messages(&kept[cap - 2..]),
        ["line 900".to_string(), "line 901".to_string()]
    );
    assert_eq!(messages(&kept[..1]), [format!("line {}", 105)]);
    // One batch of several machines, interleaved, each past the cap: each
    // keeps its own newest.
    let mixed: Vec<MachineEvent> = (0..cap + 2)
        .flat_map(|i| [event("default/mix-a", i), event("default/mix-b", 500 + i)])
        .collect();
    store.append_events(mixed).await.unwrap();
    let a = store.events("default/mix-a", cap * 2).await.unwrap();
    let b = store.events("default/mix-b", cap * 2).await.unwrap();
    assert_eq!(messages(&a), lines(2..cap + 2));
    assert_eq!(messages(&b), lines(502..500 + cap + 2));
}

/// A worker's event ([`WorkflowEvent::FromWorker`]) is applied only to its own
/// action, checked on the read the event is applied to: another worker's
/// report, heartbeat or claim number is refused as `NotYours` and changes
/// nothing, even when it would otherwise be refused for another reason (a
/// disabled workflow says nothing to a stranger); the owner's is applied as
/// the plain event is.
pub async fn a_workers_event_is_checked_on_the_same_read(store: &dyn WorkflowStore) {
    let (owner, stranger) = (mac(4201).to_string(), mac(4202).to_string());
    store
        .put(
            rendered_workflow("owned", mac(4201), 2, 60).into(),
            Precondition::Absent,
        )
        .await
        .unwrap();
    let key = wf_key("owned");
    let a = store
        .claim_next_action(&owner, t0())
        .await
        .unwrap()
        .expect("the owner's first action");
    let from = |worker: &str, sent: WorkflowEvent| WorkflowEvent::FromWorker {
        worker: worker.to_string(),
        sent: Box::new(sent),
    };
    let report = WorkflowEvent::Report {
        action: a.action_index,
        attempt: a.attempt,
        outcome: ActionOutcome::Success,
    };
    let heartbeat = WorkflowEvent::Heartbeat {
        action: a.action_index,
        attempt: a.attempt,
    };
    let before = store.get(&key).await.unwrap().expect("stored").version;
    let not_yours = |r: crate::Result<crate::store::Applied>| {
        matches!(
            r,
            Err(Error::Transition {
                reason: crate::state::Refusal::NotYours,
                ..
            })
        )
    };
    for sent in [report.clone(), heartbeat.clone()] {
        let r = store.apply_event(&key, &from(&stranger, sent), t0()).await;
        assert!(not_yours(r), "a stranger's event is not applied");
    }
    // An action that does not exist, and an event that names no action.
    let r = store
        .apply_event(
            &key,
            &from(
                &owner,
                WorkflowEvent::Heartbeat {
                    action: 99,
                    attempt: 1,
                },
            ),
            t0(),
        )
        .await;
    assert!(not_yours(r), "no action 99");
    let r = store
        .apply_event(&key, &from(&owner, WorkflowEvent::Tick), t0())
        .await;
    assert!(not_yours(r), "a worker's event names an action");
    assert_eq!(
        store.get(&key).await.unwrap().expect("stored").version,
        before,
        "nothing written"
    );
    // Disabled: the stranger still hears only NotYours; the owner hears why.
    let stored = store.workflow("default", "owned").await.unwrap().unwrap();
    let mut disabled = stored.value.clone();
    disabled.spec.disabled = Some(true);
    let v = store
        .put(disabled.into(), Precondition::Version(stored.version))
        .await
        .unwrap();
    let r = store
        .apply_event(&key, &from(&stranger, heartbeat.clone()), t0())
        .await;
    assert!(
        not_yours(r),
        "a disabled workflow says nothing to a stranger"
    );
    let r = store
        .apply_event(&key, &from(&owner, heartbeat.clone()), t0())
        .await;
    assert!(
        matches!(
            r,
            Err(Error::Transition {
                reason: crate::state::Refusal::Disabled,
                ..
            })
        ),
        "the owner hears why: {r:?}"
    );
    let mut enabled = store
        .workflow("default", "owned")
        .await
        .unwrap()
        .unwrap()
        .value;
    enabled.spec.disabled = None;
    store
        .put(enabled.into(), Precondition::Version(v))
        .await
        .unwrap();
    // The owner's own report is recorded as the plain event would be.
    let applied = store
        .apply_event(&key, &from(&owner, report), t0())
        .await
        .unwrap();
    assert_eq!(applied.effect, Effect::Recorded(WorkflowState::Running));
    assert_eq!(
        store.get(&key).await.unwrap().expect("stored").version,
        applied.workflow.version
    );
}

/// [`WorkflowStore::claim_looked_at`]: a claim from the workflows a caller
/// has just read is the claim it would get from the store; a read gone stale
/// (the workflow written since) is not written back over the newer version,
/// and never hands an action out twice.
pub async fn a_claim_from_a_look(store: &dyn WorkflowStore) {
    let worker = mac(4301).to_string();
    store
        .put(
            rendered_workflow("looked", mac(4301), 2, 60).into(),
            Precondition::Absent,
        )
        .await
        .unwrap();
    let looked = store.workflows_for_worker(&worker).await.unwrap();
    assert_eq!(looked.len(), 1);
    // Written after the look.
    let stored = store.workflow("default", "looked").await.unwrap().unwrap();
    let mut touched = stored.value.clone();
    touched
        .metadata
        .labels
        .get_or_insert_default()
        .insert("touched".into(), "after the look".into());
    let v = store
        .put(touched.into(), Precondition::Version(stored.version))
        .await
        .unwrap();
    let a = store
        .claim_looked_at(&worker, None, looked.clone(), t0())
        .await
        .unwrap()
        .expect("claimed from a fresh read");
    assert_eq!((a.action_index, a.attempt), (0, 1));
    let now = store.workflow("default", "looked").await.unwrap().unwrap();
    assert!(now.version > v, "the claim was written after the touch");
    assert_eq!(
        now.value
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("touched"))
            .map(String::as_str),
        Some("after the look"),
        "the write after the look is kept"
    );
    // The same stale look again: its action runs; nothing more to hand out.
    assert!(
        store
            .claim_looked_at(&worker, None, looked, t0())
            .await
            .unwrap()
            .is_none(),
        "never handed out twice"
    );
    // A fresh look finds nothing ready either; after the report, the next.
    let fresh = store.workflows_for_worker(&worker).await.unwrap();
    assert!(
        store
            .claim_looked_at(&worker, None, fresh, t0())
            .await
            .unwrap()
            .is_none()
    );
    let report = WorkflowEvent::Report {
        action: 0,
        attempt: 1,
        outcome: ActionOutcome::Success,
    };
    store
        .apply_event(&wf_key("looked"), &report, t0())
        .await
        .unwrap();
    let fresh = store.workflows_for_worker(&worker).await.unwrap();
    let b = store
        .claim_looked_at(&worker, None, fresh, t0())
        .await
        .unwrap()
        .expect("the second action");
    assert_eq!((b.action_index, b.attempt), (1, 1));
}

/// `tasks` concurrent workers race over `worker_ids` worker identities, each with
/// `workflows_per_worker` workflows of `actions` actions: every action is claimed
/// exactly once and every workflow ends SUCCESS.
pub async fn concurrent_claims_are_exclusive(
    store: Arc<dyn WorkflowStore>,
    tasks: usize,
    worker_ids: u32,
    workflows_per_worker: u32,
    actions: usize,
) {
    let mut total = 0;
    for w in 0..worker_ids {
        for k in 0..workflows_per_worker {
            let name = format!("race-{w}-{k}");
            store
                .put(
                    rendered_workflow(&name, mac(7000 + w), actions, 600).into(),
                    Precondition::Absent,
                )
                .await
                .unwrap();
            total += actions;
        }
    }
    let claimed: Arc<Mutex<HashSet<(String, usize)>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        let claimed = claimed.clone();
        let done = done.clone();
        let worker = mac(7000 + (t as u32 % worker_ids)).to_string();
        handles.push(tokio::spawn(async move {
            let mut mine = 0;
            // Until every action of every worker is done: a task whose worker's
            // action is running elsewhere waits for the next one.
            while done.load(std::sync::atomic::Ordering::SeqCst) < total {
                match store.claim_next_action(&worker, t0()).await.unwrap() {
                    Some(a) => {
                        let fresh = claimed
                            .lock()
                            .unwrap()
                            .insert((a.workflow.name.clone(), a.action_index));
                        assert!(
                            fresh,
                            "{} action {} claimed twice",
                            a.workflow.name, a.action_index
                        );
                        let report = WorkflowEvent::Report {
                            action: a.action_index,
                            attempt: a.attempt,
                            outcome: ActionOutcome::Success,
                        };
                        store.apply_event(&a.workflow, &report, t0()).await.unwrap();
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        mine += 1;
                    }
                    None => tokio::time::sleep(std::time::Duration::from_millis(1)).await,
                }
            }
            mine
        }));
    }
    let mut sum = 0;
    for h in handles {
        sum += h.await.expect("worker task");
    }
    assert_eq!(sum, total, "every action claimed once");
    assert_eq!(claimed.lock().unwrap().len(), total);
    for w in 0..worker_ids {
        for k in 0..workflows_per_worker {
            let wf = store
                .workflow("default", &format!("race-{w}-{k}"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(wf.value.state(), Some(WorkflowState::Success));
        }
    }
}

/// Marks a workflow's machine prepared (the engine's part), as an optimistic write.
async fn mark_prepared(store: &dyn WorkflowStore, name: &str) {
    let wf = store.workflow("default", name).await.unwrap().unwrap();
    let mut value = wf.value;
    if let Some(s) = value.status.as_mut() {
        s.machine.phase = crate::model::MachinePhase::Ready;
    }
    store
        .put(value.into(), Precondition::Version(wf.version))
        .await
        .unwrap();
}

fn failed(message: &str) -> ActionOutcome {
    ActionOutcome::Failed {
        exit_code: Some(1),
        message: message.into(),
    }
}

/// An operator's acts and per-action retries through the store, each in the
/// store's own transaction: an action with `retries` that fails once is given
/// again after its backoff (not before); a cancel refuses the running worker
/// and keeps that it heard; a re-run of a finished workflow and a retry of a
/// failed one start a new execution that is claimable once the machine is
/// prepared again. Leaves `ops-*` workflows for [`operator_acts_survive`].
pub async fn operator_acts(store: &dyn WorkflowStore) {
    let at = |s: i64| t0() + SignedDuration::from_secs(s);
    // Retries.
    let worker = mac(5301).to_string();
    let mut wf = rendered_workflow("ops-retries", mac(5301), 2, 60);
    if let Some(s) = wf.status.as_mut() {
        s.tasks[0].actions[0].retries = 1;
    }
    store.put(wf.into(), Precondition::Absent).await.unwrap();
    let key = wf_key("ops-retries");
    let a = store
        .claim_next_action(&worker, at(0))
        .await
        .unwrap()
        .unwrap();
    let report = |a: &crate::store::Assignment, outcome| WorkflowEvent::Report {
        action: a.action_index,
        attempt: a.attempt,
        outcome,
    };
    let applied = store
        .apply_event(&key, &report(&a, failed("flaky")), at(1))
        .await
        .unwrap();
    assert_eq!(applied.workflow.value.state(), Some(WorkflowState::Running));
    assert!(
        store
            .claim_next_action(&worker, at(1))
            .await
            .unwrap()
            .is_none(),
        "a retry waits for its backoff"
    );
    let again = store
        .claim_next_action(&worker, at(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.action_index, again.attempt), (0, a.attempt + 1));
    store
        .apply_event(&key, &report(&again, ActionOutcome::Success), at(4))
        .await
        .unwrap();

    // Cancel.
    let worker = mac(5302).to_string();
    store
        .put(
            rendered_workflow("ops-cancel", mac(5302), 2, 60).into(),
            Precondition::Absent,
        )
        .await
        .unwrap();
    let key = wf_key("ops-cancel");
    let a = store
        .claim_next_action(&worker, at(0))
        .await
        .unwrap()
        .unwrap();
    store
        .apply_event(&key, &WorkflowEvent::Cancel { by: "alice".into() }, at(1))
        .await
        .unwrap();
    let heartbeat = WorkflowEvent::Heartbeat {
        action: a.action_index,
        attempt: a.attempt,
    };
    let refused = store
        .apply_event(&key, &heartbeat, at(2))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &refused,
            Error::Transition {
                reason: crate::state::Refusal::Cancelled { by },
                ..
            } if by == "alice"
        ),
        "{refused}"
    );
    let refused = store
        .apply_event(&key, &report(&a, ActionOutcome::Success), at(2))
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Transition { .. }), "{refused}");
    assert!(
        store
            .claim_next_action(&worker, at(3))
            .await
            .unwrap()
            .is_none()
    );

    // Re-run.
    let worker = mac(5303).to_string();
    store
        .put(
            rendered_workflow("ops-rerun", mac(5303), 1, 60).into(),
            Precondition::Absent,
        )
        .await
        .unwrap();
    let key = wf_key("ops-rerun");
    let a = store
        .claim_next_action(&worker, at(0))
        .await
        .unwrap()
        .unwrap();
    store
        .apply_event(&key, &report(&a, ActionOutcome::Success), at(1))
        .await
        .unwrap();
    let applied = store
        .apply_event(&key, &WorkflowEvent::Rerun { by: "bob".into() }, at(2))
        .await
        .unwrap();
    assert_eq!(
        applied.effect,
        crate::state::Effect::Restarted { execution: 2 }
    );
    assert!(
        store
            .claim_next_action(&worker, at(3))
            .await
            .unwrap()
            .is_none(),
        "the machine is prepared again first"
    );
    mark_prepared(store, "ops-rerun").await;
    let b = store
        .claim_next_action(&worker, at(4))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((b.action_index, b.attempt), (0, a.attempt + 1));

    // Retry from the failed action.
    let worker = mac(5304).to_string();
    store
        .put(
            rendered_workflow("ops-retry", mac(5304), 2, 60).into(),
            Precondition::Absent,
        )
        .await
        .unwrap();
    let key = wf_key("ops-retry");
    let a = store
        .claim_next_action(&worker, at(0))
        .await
        .unwrap()
        .unwrap();
    store
        .apply_event(&key, &report(&a, ActionOutcome::Success), at(1))
        .await
        .unwrap();
    let a = store
        .claim_next_action(&worker, at(2))
        .await
        .unwrap()
        .unwrap();
    store
        .apply_event(&key, &report(&a, failed("bad disk")), at(3))
        .await
        .unwrap();
    let retry = WorkflowEvent::Retry {
        by: "carol".into(),
        from: None,
    };
    store.apply_event(&key, &retry, at(4)).await.unwrap();
    mark_prepared(store, "ops-retry").await;
    let b = store
        .claim_next_action(&worker, at(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.action_index, 1, "resumes from the failed action");
}

/// What [`operator_acts`] left, read back: from the same store, or from one
/// opened again on the same data (a restart). Every attempt, cancel and earlier
/// execution is there, and the running claims still take their reports.
pub async fn operator_acts_survive(store: &dyn WorkflowStore) {
    let at = |s: i64| t0() + SignedDuration::from_secs(s);
    let status = |name: &'static str| async move {
        store
            .workflow("default", name)
            .await
            .unwrap()
            .unwrap()
            .value
            .status
            .unwrap()
    };
    let s = status("ops-retries").await;
    let (_, a) = s.action(0).unwrap();
    assert_eq!(a.retries, 1);
    let kept: Vec<ActionState> = a.attempts.iter().map(|r| r.state).collect();
    assert_eq!(kept, vec![ActionState::Failed, ActionState::Success]);
    assert!(a.attempts[0].message.as_deref().unwrap().contains("flaky"));
    assert_eq!(a.attempts[0].started, Some(at(0)));

    let s = status("ops-cancel").await;
    assert_eq!(s.state, WorkflowState::Failed);
    assert_eq!(s.reason.as_deref(), Some("cancelled by alice"));
    let c = s.cancelled.unwrap();
    assert_eq!(
        (c.by.as_str(), c.at, c.acknowledged),
        ("alice", at(1), Some(at(2)))
    );

    let s = status("ops-rerun").await;
    assert_eq!(s.execution, 2);
    let first = &s.executions[0];
    assert_eq!(
        (first.execution, first.state, first.restarted_by.as_str()),
        (1, WorkflowState::Success, "bob")
    );
    assert_eq!(first.actions[0].attempts.len(), 1);
    assert_eq!(s.action(0).unwrap().1.state, ActionState::Running);

    let s = status("ops-retry").await;
    let first = &s.executions[0];
    assert_eq!(first.restart, crate::model::Restart::Retry { from: 1 });
    assert!(first.reason.as_deref().unwrap().contains("bad disk"));
    assert_eq!(s.action(0).unwrap().1.state, ActionState::Success);
    let (_, running) = s.action(1).unwrap();
    assert_eq!(running.state, ActionState::Running);
    // The running claim of the new execution still takes its report.
    let report = WorkflowEvent::Report {
        action: 1,
        attempt: running.attempt,
        outcome: ActionOutcome::Success,
    };
    let applied = store
        .apply_event(&wf_key("ops-retry"), &report, at(6))
        .await
        .unwrap();
    assert_eq!(applied.workflow.value.state(), Some(WorkflowState::Success));
}
