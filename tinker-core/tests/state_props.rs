//! Property tests of the workflow state machine over random event sequences.

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use std::collections::HashMap;
use tinker_core::model::{ActionStatus, TaskStatus, WorkflowStatus};
use tinker_core::state::{ActionOutcome, ActionState, Effect, WorkflowEvent, WorkflowState};

const WORKERS: [&str; 2] = ["w0", "w1"];

fn action(name: String, timeout: Option<i64>) -> ActionStatus {
    ActionStatus {
        id: name.clone(),
        name,
        image: "busybox".into(),
        timeout,
        command: vec![],
        volumes: vec![],
        pid: None,
        environment: Default::default(),
        state: ActionState::Pending,
        attempt: 0,
        execution_start: None,
        execution_stop: None,
        execution_duration: None,
        last_heartbeat: None,
        exit_code: None,
        message: None,
        claim_request: None,
        retries: 0,
        retry_at: None,
        attempts: Vec::new(),
    }
}

fn status_strategy() -> impl Strategy<Value = WorkflowStatus> {
    let task = (
        0usize..2,
        prop::collection::vec(prop::option::of(1i64..50), 1..4),
    );
    (
        prop::collection::vec(task, 1..3),
        prop::option::of(10i64..200),
        prop::option::of(5i64..60),
    )
        .prop_map(|(tasks, global, grace)| {
            let tasks = tasks
                .into_iter()
                .enumerate()
                .map(|(t, (worker, timeouts))| TaskStatus {
                    name: format!("task-{t}"),
                    agent_id: WORKERS[worker].to_string(),
                    volumes: vec![],
                    environment: Default::default(),
                    actions: timeouts
                        .into_iter()
                        .enumerate()
                        .map(|(a, to)| action(format!("a{t}-{a}"), to))
                        .collect(),
                })
                .collect();
            let mut s = WorkflowStatus::pending(tasks, global);
            s.heartbeat_grace_seconds = grace;
            s
        })
}

fn outcome_strategy() -> impl Strategy<Value = ActionOutcome> {
    prop_oneof![
        4 => Just(ActionOutcome::Success),
        1 => (prop::option::of(-1i32..255), "[a-z ]{0,8}").prop_map(|(exit_code, message)| ActionOutcome::Failed { exit_code, message }),
        1 => "[a-z ]{0,8}".prop_map(|message| ActionOutcome::Timeout { message }),
    ]
}

fn event_strategy() -> impl Strategy<Value = (u8, WorkflowEvent)> {
    let ev = prop_oneof![
        4 => (0usize..2).prop_map(|w| WorkflowEvent::Claim { worker: WORKERS[w].to_string() }),
        4 => (0usize..6, 0u32..3, outcome_strategy()).prop_map(|(action, attempt, outcome)| WorkflowEvent::Report { action, attempt, outcome }),
        2 => (0usize..6, 0u32..3).prop_map(|(action, attempt)| WorkflowEvent::Heartbeat { action, attempt }),
        1 => "[a-z ]{0,6}".prop_map(|reason| WorkflowEvent::Fail { reason }),
        2 => Just(WorkflowEvent::Tick),
    ];
    // Seconds that pass before the event.
    (0u8..40, ev)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn invariants_hold_for_any_event_sequence(
        mut status in status_strategy(),
        events in prop::collection::vec(event_strategy(), 0..60),
    ) {
        let mut now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut claims: HashMap<usize, u32> = HashMap::new();
        for (dt, event) in events {
            now += SignedDuration::from_secs(i64::from(dt));
            let before = status.clone();
            let (changed, result) = status.apply(now, &event);

            // A finished workflow never changes.
            if before.state.is_terminal() {
                prop_assert_eq!(&status, &before);
                prop_assert!(!changed);
            }
            // A refused event changes nothing but the timeouts that fell due.
            if result.is_err() && !changed {
                prop_assert_eq!(&status, &before);
            }
            // An action is handed out at most once.
            if let Ok(Effect::Claimed { action, attempt }) = result {
                prop_assert_eq!(attempt, 1);
                *claims.entry(action).or_default() += 1;
                prop_assert_eq!(claims[&action], 1, "action {} claimed twice", action);
            }
            // States only move forward.
            prop_assert!(status.state.rank() >= before.state.rank());
            if before.state.is_terminal() {
                prop_assert_eq!(status.state, before.state);
            }
            for ((_, a), (_, b)) in status.actions().zip(before.actions()) {
                prop_assert!(a.state.rank() >= b.state.rank(), "{} went {} -> {}", a.name, b.state, a.state);
                if b.state.is_terminal() {
                    prop_assert_eq!(a.state, b.state);
                }
                prop_assert!(a.attempt >= b.attempt);
            }
            // Every failure carries a reason.
            if matches!(status.state, WorkflowState::Failed | WorkflowState::Timeout) {
                prop_assert!(status.reason.as_deref().is_some_and(|r| !r.trim().is_empty()));
            }
            for (_, a) in status.actions() {
                if matches!(a.state, ActionState::Failed | ActionState::Timeout) {
                    prop_assert!(a.message.as_deref().is_some_and(|m| !m.trim().is_empty()), "{} has no reason", a.name);
                }
            }
            // Structure: actions run in order; at most one runs; nothing after a failure.
            let states: Vec<ActionState> = status.actions().map(|(_, a)| a.state).collect();
            let first_unfinished = states.iter().position(|s| *s != ActionState::Success).unwrap_or(states.len());
            prop_assert!(states[first_unfinished.min(states.len())..].iter().skip(1).all(|s| *s == ActionState::Pending));
            prop_assert!(states.iter().filter(|s| **s == ActionState::Running).count() <= 1);
            if status.state == WorkflowState::Success {
                prop_assert!(states.iter().all(|s| *s == ActionState::Success));
            }
            if states.iter().all(|s| *s == ActionState::Success) {
                prop_assert_eq!(status.state, WorkflowState::Success);
            }
            if status.state == WorkflowState::Running {
                prop_assert!(states.iter().all(|s| !matches!(s, ActionState::Failed | ActionState::Timeout)));
            }
        }
    }

    #[test]
    fn a_workflow_always_finishes_when_its_workers_keep_working(status in status_strategy()) {
        let mut status = status;
        let mut now = Timestamp::from_second(1_800_000_000).unwrap();
        for _ in 0..100 {
            if status.state.is_terminal() { break; }
            let worker = status.current_state.as_ref().map(|c| c.agent_id.clone()).unwrap();
            if let (_, Ok(Effect::Claimed { action, attempt })) = status.apply(now, &WorkflowEvent::Claim { worker }) {
                now += SignedDuration::from_millis(500);
                // Reported before any timeout (the shortest is 1 s) falls due.
                let _ = status.apply(now, &WorkflowEvent::Report { action, attempt, outcome: ActionOutcome::Success });
            }
        }
        prop_assert_eq!(status.state, WorkflowState::Success);
    }
}

#[test]
fn global_timeout_and_missed_heartbeats_end_a_running_workflow() {
    let t0 = Timestamp::from_second(1_800_000_000).unwrap();
    let tasks = vec![TaskStatus {
        name: "t".into(),
        agent_id: "w0".into(),
        volumes: vec![],
        environment: Default::default(),
        actions: vec![action("a".into(), None), action("b".into(), None)],
    }];
    let mut s = WorkflowStatus::pending(tasks.clone(), Some(100));
    s.apply(
        t0,
        &WorkflowEvent::Claim {
            worker: "w0".into(),
        },
    )
    .1
    .unwrap();
    assert_eq!(s.next_deadline(), Some(t0 + SignedDuration::from_secs(100)));
    s.apply(
        t0 + SignedDuration::from_secs(10),
        &WorkflowEvent::Report {
            action: 0,
            attempt: 1,
            outcome: ActionOutcome::Success,
        },
    )
    .1
    .unwrap();
    s.apply(
        t0 + SignedDuration::from_secs(10),
        &WorkflowEvent::Claim {
            worker: "w0".into(),
        },
    )
    .1
    .unwrap();
    let (changed, _) = s.apply(t0 + SignedDuration::from_secs(100), &WorkflowEvent::Tick);
    assert!(changed);
    assert_eq!(s.state, WorkflowState::Timeout);
    assert!(
        s.reason
            .as_deref()
            .unwrap()
            .contains("global timeout of 100 s")
    );

    let mut s = WorkflowStatus::pending(tasks, None);
    s.heartbeat_grace_seconds = Some(30);
    s.apply(
        t0,
        &WorkflowEvent::Claim {
            worker: "w0".into(),
        },
    )
    .1
    .unwrap();
    s.apply(
        t0 + SignedDuration::from_secs(20),
        &WorkflowEvent::Heartbeat {
            action: 0,
            attempt: 1,
        },
    )
    .1
    .unwrap();
    s.apply(t0 + SignedDuration::from_secs(49), &WorkflowEvent::Tick)
        .1
        .unwrap();
    assert_eq!(
        s.state,
        WorkflowState::Running,
        "heartbeat extended the grace"
    );
    s.apply(t0 + SignedDuration::from_secs(50), &WorkflowEvent::Tick)
        .1
        .unwrap();
    assert_eq!(s.state, WorkflowState::Timeout);
    assert!(
        s.reason
            .as_deref()
            .unwrap()
            .contains("no heartbeat for 30 s")
    );
}
