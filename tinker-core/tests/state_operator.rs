//! The state machine's operator events and per-action retries: `retries` on an
//! action, cancel, re-run and retry, and the execution history they keep.

use jiff::{SignedDuration, Timestamp};
use tinker_core::model::{MachinePhase, Restart, WorkflowStatus};
use tinker_core::render::{parse_template_data, status_from_data};
use tinker_core::state::{
    ActionOutcome, ActionState, Effect, Refusal, WorkflowEvent, WorkflowState,
};

const TEMPLATE: &str = r#"
version: "0.1"
name: retried
global_timeout: 600
tasks:
  - name: os
    worker: "w1"
    actions:
      - name: first
        image: busybox
      - name: flaky
        image: busybox
        retries: 2
      - name: last
        image: busybox
"#;

fn status() -> WorkflowStatus {
    let data = parse_template_data("retried", TEMPLATE).unwrap();
    status_from_data(&data)
}

fn at(secs: i64) -> Timestamp {
    Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1_800_000_000 + secs)
}

fn claim(s: &mut WorkflowStatus, now: Timestamp) -> Result<(usize, u32), Refusal> {
    match s.apply(
        now,
        &WorkflowEvent::Claim {
            worker: "w1".into(),
        },
    ) {
        (_, Ok(Effect::Claimed { action, attempt })) => Ok((action, attempt)),
        (_, Ok(other)) => panic!("claim did {other:?}"),
        (_, Err(r)) => Err(r),
    }
}

fn report(
    s: &mut WorkflowStatus,
    now: Timestamp,
    (action, attempt): (usize, u32),
    outcome: ActionOutcome,
) -> Result<Effect, Refusal> {
    s.apply(
        now,
        &WorkflowEvent::Report {
            action,
            attempt,
            outcome,
        },
    )
    .1
}

fn failed(message: &str) -> ActionOutcome {
    ActionOutcome::Failed {
        exit_code: Some(1),
        message: message.into(),
    }
}

/// Runs `first` to success and claims `flaky`.
fn to_flaky(s: &mut WorkflowStatus) -> (usize, u32) {
    let c = claim(s, at(0)).unwrap();
    report(s, at(1), c, ActionOutcome::Success).unwrap();
    claim(s, at(2)).unwrap()
}

#[test]
fn retries_are_read_from_a_v1alpha1_template_and_written_back() {
    let data = parse_template_data("retried", TEMPLATE).unwrap();
    assert_eq!(data.tasks[0].actions[1].retries, Some(2));
    let yaml = serde_norway::to_string(&data).unwrap();
    assert!(yaml.contains("retries: 2"), "{yaml}");
    let s = status();
    let (_, flaky) = s.action(1).unwrap();
    assert_eq!(flaky.retries, 2);
    let json = serde_json::to_string(&s).unwrap();
    let back: WorkflowStatus = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    let yaml = serde_norway::to_string(&s).unwrap();
    assert_eq!(serde_norway::from_str::<WorkflowStatus>(&yaml).unwrap(), s);
}

#[test]
fn an_action_with_retries_that_fails_once_then_succeeds_ends_success_with_both_attempts() {
    let mut s = status();
    let first_claim = to_flaky(&mut s);
    assert_eq!(first_claim.0, 1);
    assert_eq!(
        report(&mut s, at(3), first_claim, failed("disk busy")).unwrap(),
        Effect::Recorded(WorkflowState::Running),
        "a failure with retries left does not end the workflow"
    );
    let (_, a) = s.action(1).unwrap();
    assert_eq!(a.state, ActionState::Pending);
    let retry_at = a.retry_at.expect("the retry waits for the backoff");
    let wait = retry_at.duration_since(at(3));
    assert!(
        wait >= SignedDuration::from_millis(500) && wait <= SignedDuration::from_secs(1),
        "the first retry waits between half and all of the backoff's base: {wait:?}"
    );
    // Before the backoff ends, the worker is given nothing.
    assert!(!s.has_work_for("w1", at(3)));
    assert!(matches!(
        claim(&mut s, at(3)),
        Err(Refusal::NoActionForWorker { .. })
    ));
    // The old claim's late report changes nothing.
    assert!(matches!(
        report(&mut s, at(4), first_claim, ActionOutcome::Success),
        Err(Refusal::NotRunning { .. })
    ));
    let second = claim(&mut s, retry_at).unwrap();
    assert_eq!(second, (1, first_claim.1 + 1), "a new claim number");
    report(&mut s, at(6), second, ActionOutcome::Success).unwrap();
    let (_, a) = s.action(1).unwrap();
    assert_eq!(a.state, ActionState::Success);
    let kept: Vec<(u32, ActionState)> = a.attempts.iter().map(|r| (r.attempt, r.state)).collect();
    assert_eq!(
        kept,
        vec![
            (first_claim.1, ActionState::Failed),
            (second.1, ActionState::Success)
        ]
    );
    assert!(
        a.attempts[0]
            .message
            .as_deref()
            .unwrap()
            .contains("disk busy")
    );
    assert_eq!(a.attempts[0].started, Some(at(2)));
    assert_eq!(a.attempts[0].stopped, Some(at(3)));
    let last = claim(&mut s, at(7)).unwrap();
    assert_eq!(
        report(&mut s, at(8), last, ActionOutcome::Success).unwrap(),
        Effect::Recorded(WorkflowState::Success)
    );
}

#[test]
fn retries_run_out_and_the_workflow_fails_after_one_plus_retries_attempts() {
    let mut s = status();
    let mut c = to_flaky(&mut s);
    let mut now = at(3);
    for n in 1..=3 {
        report(&mut s, now, c, failed(&format!("try {n}"))).unwrap();
        if n == 3 {
            break;
        }
        now = s.action(1).unwrap().1.retry_at.unwrap();
        c = claim(&mut s, now).unwrap();
    }
    assert_eq!(s.state, WorkflowState::Failed);
    let (_, a) = s.action(1).unwrap();
    assert_eq!(a.attempts.len(), 3);
    assert!(s.reason.as_deref().unwrap().contains("try 3"));
    // The action without retries fails the workflow at once.
    let mut s = status();
    let c = claim(&mut s, at(0)).unwrap();
    report(&mut s, at(1), c, failed("no")).unwrap();
    assert_eq!(s.state, WorkflowState::Failed);
}

#[test]
fn a_cancel_fails_the_workflow_and_refuses_the_running_worker_which_acknowledges_it() {
    let mut s = status();
    let c = to_flaky(&mut s);
    let (changed, effect) = s.apply(at(5), &WorkflowEvent::Cancel { by: "alice".into() });
    assert!(changed);
    assert_eq!(effect.unwrap(), Effect::Failed);
    assert_eq!(s.state, WorkflowState::Failed);
    assert_eq!(s.reason.as_deref(), Some("cancelled by alice"));
    let cancel = s.cancelled.clone().unwrap();
    assert_eq!(cancel.running, Some(c));
    assert_eq!(cancel.acknowledged, None);
    assert_eq!(s.action(1).unwrap().1.state, ActionState::Failed);
    // The worker's heartbeat is refused as cancelled; that it heard is kept.
    let (changed, refused) = s.apply(
        at(6),
        &WorkflowEvent::Heartbeat {
            action: c.0,
            attempt: c.1,
        },
    );
    assert_eq!(refused, Err(Refusal::Cancelled { by: "alice".into() }));
    assert!(changed, "the acknowledgement is saved");
    assert_eq!(s.cancelled.as_ref().unwrap().acknowledged, Some(at(6)));
    // So is its report, whatever it says; nothing else changes.
    let before = s.clone();
    let (changed, refused) = s.apply(
        at(7),
        &WorkflowEvent::Report {
            action: c.0,
            attempt: c.1,
            outcome: ActionOutcome::Success,
        },
    );
    assert!(matches!(refused, Err(Refusal::Cancelled { .. })));
    assert!(!changed);
    assert_eq!(s, before);
    // A second cancel is refused: the workflow has finished.
    assert!(matches!(
        s.apply(at(8), &WorkflowEvent::Cancel { by: "bob".into() })
            .1,
        Err(Refusal::Cancelled { .. })
    ));
    // A pending workflow can be cancelled too; nothing was running.
    let mut p = status();
    p.apply(at(0), &WorkflowEvent::Cancel { by: "bob".into() })
        .1
        .unwrap();
    assert_eq!(p.reason.as_deref(), Some("cancelled by bob"));
    assert_eq!(p.cancelled.unwrap().running, None);
}

#[test]
fn a_refused_report_alone_is_not_an_acknowledgement_so_a_silent_agent_is_powered_off() {
    // Tinkerbell's agent has no cancel: it reports the action it ran to its
    // end. That report is refused, but it does not say the agent stopped
    // anything, so the engine still powers the machine off after the grace.
    let mut s = status();
    let c = to_flaky(&mut s);
    s.apply(at(5), &WorkflowEvent::Cancel { by: "alice".into() })
        .1
        .unwrap();
    let (_, refused) = s.apply(
        at(6),
        &WorkflowEvent::Report {
            action: c.0,
            attempt: c.1,
            outcome: ActionOutcome::Success,
        },
    );
    assert_eq!(refused, Err(Refusal::Cancelled { by: "alice".into() }));
    assert_eq!(s.cancelled.as_ref().unwrap().acknowledged, None);
    // Nor is it a repeat of what the cancel recorded for that claim (failed,
    // no exit code): the worker did not end it, and hears of the cancel.
    for _ in 0..2 {
        let outcome = ActionOutcome::Failed {
            exit_code: None,
            message: String::new(),
        };
        assert_eq!(
            report(&mut s, at(7), c, outcome),
            Err(Refusal::Cancelled { by: "alice".into() })
        );
    }
}

#[test]
fn a_rerun_starts_a_second_execution_and_keeps_the_first_one_s_history() {
    let mut s = status();
    s.machine.phase = MachinePhase::Rebooted;
    let mut claims = Vec::new();
    for i in 0..3 {
        let c = claim(&mut s, at(10 * i)).unwrap();
        claims.push(c);
        report(&mut s, at(10 * i + 5), c, ActionOutcome::Success).unwrap();
    }
    assert_eq!(s.state, WorkflowState::Success);
    // Not while it runs.
    let mut running = status();
    claim(&mut running, at(0)).unwrap();
    assert_eq!(
        running
            .apply(at(1), &WorkflowEvent::Rerun { by: "alice".into() })
            .1,
        Err(Refusal::NotFinished {
            state: WorkflowState::Running
        })
    );
    let (changed, effect) = s.apply(at(100), &WorkflowEvent::Rerun { by: "alice".into() });
    assert!(changed);
    assert_eq!(effect.unwrap(), Effect::Restarted { execution: 2 });
    assert_eq!(s.state, WorkflowState::Pending);
    assert_eq!(s.execution, 2);
    assert_eq!(
        s.machine.phase,
        MachinePhase::Preparing,
        "netboot goes on again"
    );
    assert!(
        s.actions()
            .all(|(_, a)| a.state == ActionState::Pending && a.attempts.is_empty())
    );
    let first = &s.executions[0];
    assert_eq!(first.execution, 1);
    assert_eq!(first.state, WorkflowState::Success);
    assert_eq!(first.restart, Restart::Rerun);
    assert_eq!(first.restarted_by, "alice");
    assert_eq!(first.started, Some(at(0)));
    assert_eq!(first.finished, Some(at(25)));
    assert_eq!(first.actions.len(), 3);
    assert!(
        first
            .actions
            .iter()
            .all(|a| a.state == ActionState::Success && a.attempts.len() == 1)
    );
    // A report of the first execution's claim does not match the second's.
    s.machine.phase = MachinePhase::Ready;
    let c = claim(&mut s, at(101)).unwrap();
    assert!(c.1 > claims[0].1, "claim numbers keep growing");
    assert!(matches!(
        report(&mut s, at(102), claims[0], ActionOutcome::Success),
        Err(Refusal::NotRunning { .. })
    ));
    // History survives a round trip.
    let back: WorkflowStatus = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
}

#[test]
fn a_retry_after_a_failure_resumes_from_the_failed_action_keeping_earlier_successes() {
    let mut s = status();
    let c = claim(&mut s, at(0)).unwrap();
    report(&mut s, at(1), c, ActionOutcome::Success).unwrap();
    let c = claim(&mut s, at(2)).unwrap();
    s.apply(at(3), &WorkflowEvent::Cancel { by: "alice".into() })
        .1
        .unwrap();
    assert_eq!(
        s.apply(
            at(4),
            &WorkflowEvent::Retry {
                by: "alice".into(),
                from: Some(2)
            }
        )
        .1,
        Err(Refusal::RetryPastFailure {
            action: 2,
            failed: 1
        })
    );
    let effect = s
        .apply(
            at(5),
            &WorkflowEvent::Retry {
                by: "bob".into(),
                from: None,
            },
        )
        .1
        .unwrap();
    assert_eq!(effect, Effect::Restarted { execution: 2 });
    assert_eq!(s.action(0).unwrap().1.state, ActionState::Success, "kept");
    assert_eq!(s.action(0).unwrap().1.attempts.len(), 1);
    assert_eq!(s.action(1).unwrap().1.state, ActionState::Pending);
    assert_eq!(s.current_action(), Some(1));
    assert_eq!(s.cancelled, None);
    let old = &s.executions[0];
    assert_eq!(old.reason.as_deref(), Some("cancelled by alice"));
    assert_eq!(old.restart, Restart::Retry { from: 1 });
    assert_eq!(old.cancelled.as_ref().unwrap().by, "alice");
    assert_eq!(old.actions[1].attempts[0].attempt, c.1);
    // The machine is prepared again before any claim.
    assert!(matches!(claim(&mut s, at(6)), Err(Refusal::Preparing)));
    s.machine.phase = MachinePhase::Ready;
    let next = claim(&mut s, at(7)).unwrap();
    assert_eq!(next.0, 1, "resumes from the failed action");
    // Retrying a success needs an action.
    let mut ok = status();
    for i in 0..3 {
        let c = claim(&mut ok, at(i)).unwrap();
        report(&mut ok, at(i), c, ActionOutcome::Success).unwrap();
    }
    assert_eq!(
        ok.apply(
            at(9),
            &WorkflowEvent::Retry {
                by: "a".into(),
                from: None
            }
        )
        .1,
        Err(Refusal::NothingFailed)
    );
    assert_eq!(
        ok.apply(
            at(9),
            &WorkflowEvent::Retry {
                by: "a".into(),
                from: Some(7)
            }
        )
        .1,
        Err(Refusal::UnknownAction { action: 7 })
    );
    ok.apply(
        at(9),
        &WorkflowEvent::Retry {
            by: "a".into(),
            from: Some(2),
        },
    )
    .1
    .unwrap();
    assert_eq!(ok.current_action(), Some(2));
}

#[test]
fn executions_kept_are_bounded() {
    let mut s = status();
    s.state = WorkflowState::Failed;
    for i in 0..(tinker_core::model::MAX_EXECUTIONS_KEPT as i64 + 5) {
        s.apply(at(i), &WorkflowEvent::Rerun { by: "a".into() })
            .1
            .unwrap();
        s.state = WorkflowState::Failed;
    }
    assert_eq!(s.executions.len(), tinker_core::model::MAX_EXECUTIONS_KEPT);
    assert_eq!(s.executions[0].execution, 6, "the oldest are dropped");
}

/// A worker that lost the answer to its report sends it again: the same
/// outcome under the same claim is answered as kept, and changes nothing,
/// even after the workflow has finished because of it.
#[test]
fn a_report_sent_again_under_the_same_claim_is_kept_not_refused() {
    let mut s = status();
    let flaky = to_flaky(&mut s);
    report(&mut s, at(3), flaky, failed("disk busy")).unwrap();
    let before = s.clone();
    let (changed, again) = s.apply(
        at(4),
        &WorkflowEvent::Report {
            action: flaky.0,
            attempt: flaky.1,
            outcome: failed("disk busy"),
        },
    );
    assert_eq!(again, Ok(Effect::AlreadyRecorded(WorkflowState::Running)));
    assert!(!changed, "a repeated report is not written");
    assert_eq!(s, before);
    // A different outcome for that claim is no repeat: refused as before.
    assert!(matches!(
        report(&mut s, at(4), flaky, ActionOutcome::Success),
        Err(Refusal::NotRunning { .. })
    ));
    assert!(matches!(
        report(
            &mut s,
            at(4),
            flaky,
            ActionOutcome::Failed {
                exit_code: Some(2),
                message: "disk busy".into()
            }
        ),
        Err(Refusal::NotRunning { .. })
    ));

    let second = claim(&mut s, at(10)).unwrap();
    report(&mut s, at(11), second, ActionOutcome::Success).unwrap();
    let last = claim(&mut s, at(12)).unwrap();
    assert_eq!(
        report(&mut s, at(13), last, ActionOutcome::Success).unwrap(),
        Effect::Recorded(WorkflowState::Success)
    );
    let finished = s.clone();
    assert_eq!(
        report(&mut s, at(14), last, ActionOutcome::Success),
        Ok(Effect::AlreadyRecorded(WorkflowState::Success)),
        "the last action's report, sent again, is not told the workflow finished"
    );
    assert_eq!(s, finished);
    assert!(matches!(
        report(&mut s, at(14), last, failed("late")),
        Err(Refusal::Finished { .. })
    ));
    // A claim that never ran that action is not a repeat either.
    assert!(matches!(
        report(&mut s, at(14), (last.0, last.1 + 7), ActionOutcome::Success),
        Err(Refusal::Finished { .. })
    ));
}
