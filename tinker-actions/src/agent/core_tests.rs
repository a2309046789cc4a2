//! The agent's core, driven by hand: no sockets, no sleeps, no runtime. Each test
//! feeds answers and times and checks exactly what the core asks for.

use super::*;
use crate::agent::http::{decode, decode_answer};
use tinker_core::runtime::Stream;
use tinker_core::state::WorkflowState;

fn t0() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn config() -> AgentConfig {
    AgentConfig::new("http://a, http://b/", "w1", "token")
        .with_jitter_seed(7)
        .with_max_backoff(secs(5))
}

fn action(heartbeat_seconds: u32) -> WorkerAction {
    WorkerAction {
        workflow_id: "default/wf".into(),
        task_name: "t".into(),
        action_index: 0,
        attempt: 3,
        name: "stream".into(),
        image: "image2disk".into(),
        timeout_seconds: Some(60),
        command: vec![],
        environment: Default::default(),
        volumes: vec![],
        pid: None,
        heartbeat_seconds,
    }
}

fn drain(core: &mut AgentCore) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

/// The one request the core asked to send, and nothing else besides events.
fn one_send(core: &mut AgentCore) -> Transmit {
    let sends: Vec<Transmit> = drain(core)
        .into_iter()
        .filter_map(|o| match o {
            Output::Send(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(sends.len(), 1, "{sends:?}");
    sends.into_iter().next().unwrap()
}

fn request_id(t: &Transmit) -> String {
    match &t.request {
        Request::NextAction(r) => r.request_id.clone().unwrap(),
        other => panic!("not a question: {other:?}"),
    }
}

fn unreachable(replica: &str) -> Error {
    Error::Unreachable {
        target: replica.into(),
        reason: "connection refused".into(),
    }
}

fn line(text: &str) -> LogLine {
    LogLine {
        stream: Stream::Stdout,
        text: text.into(),
    }
}

/// A core that was handed `action` at `t0`.
fn running(config: &AgentConfig, a: WorkerAction) -> AgentCore {
    let mut core = AgentCore::new(config, "run", t0());
    let ask = one_send(&mut core);
    core.handle_reply(
        t0(),
        ask.id,
        Ok(Reply::NextAction(NextActionResponse::Action(a))),
    );
    core
}

#[test]
fn asks_then_runs_the_action_heartbeating_with_its_output() {
    let mut core = AgentCore::new(&config(), "run", t0());
    assert_eq!(core.replica(), "http://a");
    let ask = one_send(&mut core);
    assert_eq!(ask.replica, "http://a");
    assert_eq!(request_id(&ask), "run-1");
    assert!(core.is_idle());

    core.handle_reply(
        t0(),
        ask.id,
        Ok(Reply::NextAction(NextActionResponse::Action(action(5)))),
    );
    let out = drain(&mut core);
    assert!(
        matches!(&out[0], Output::Event(AgentEvent::ActionStarted { name, .. }) if name == "stream")
    );
    assert!(matches!(&out[1], Output::StartAction(a) if a.attempt == 3));
    assert_eq!(out.len(), 2);
    assert!(!core.is_idle(), "a shutdown waits for the report");
    assert_eq!(core.poll_timeout(), Some(t0() + secs(5)));

    // Before the heartbeat is due, nothing goes out.
    core.handle_output(line("one"));
    core.handle_timeout(t0() + secs(4));
    assert!(drain(&mut core).is_empty());

    // Due: the buffered output first, then the heartbeat, then the next one
    // `heartbeat_seconds` after the answer.
    core.handle_timeout(t0() + secs(5));
    let logs = one_send(&mut core);
    assert!(matches!(&logs.request, Request::Logs(b) if b.lines == vec![line("one")]));
    assert_eq!(
        core.poll_timeout(),
        None,
        "no second batch while one is out"
    );
    core.handle_reply(t0() + secs(6), logs.id, Ok(Reply::Logs));
    let hb = one_send(&mut core);
    assert!(
        matches!(&hb.request, Request::Heartbeat(h) if h.attempt == 3 && h.workflow_id == "default/wf")
    );
    core.handle_reply(
        t0() + secs(6),
        hb.id,
        Ok(Reply::Heartbeat(HeartbeatAnswer::Continue)),
    );
    assert_eq!(core.poll_timeout(), Some(t0() + secs(11)));
    // No output since: only the heartbeat.
    core.handle_timeout(t0() + secs(11));
    let hb = one_send(&mut core);
    assert!(matches!(hb.request, Request::Heartbeat(_)));
}

#[test]
fn an_ended_action_sends_its_last_output_then_its_report_then_asks_again() {
    let mut core = running(&config(), action(5));
    drain(&mut core);
    core.handle_timeout(t0() + secs(5));
    let hb = one_send(&mut core);

    // The action ends while that heartbeat is out: its answer no longer matters.
    core.handle_output(line("two"));
    core.handle_action_finished(t0() + secs(12), ActionOutcome::Success);
    let out = drain(&mut core);
    assert!(matches!(
        &out[0],
        Output::Event(AgentEvent::ActionEnded {
            outcome: ActionOutcome::Success,
            ..
        })
    ));
    let Output::Send(rest) = &out[1] else {
        panic!("{out:?}")
    };
    assert!(matches!(&rest.request, Request::Logs(b) if b.lines == vec![line("two")]));
    core.handle_reply(
        t0() + secs(12),
        hb.id,
        Ok(Reply::Heartbeat(HeartbeatAnswer::Stop)),
    );
    assert!(drain(&mut core).is_empty(), "a late answer is dropped");

    core.handle_reply(t0() + secs(13), rest.id, Ok(Reply::Logs));
    let report = one_send(&mut core);
    let Request::Report(r) = &report.request else {
        panic!("{report:?}")
    };
    assert_eq!(r.started_at, Some(t0()));
    assert_eq!(r.finished_at, Some(t0() + secs(13)));
    assert_eq!((r.attempt, r.outcome.clone()), (3, ActionOutcome::Success));

    core.handle_reply(
        t0() + secs(13),
        report.id,
        Ok(Reply::Report(ReportAnswer::Accepted {
            workflow_state: Some(WorkflowState::Success),
        })),
    );
    let out = drain(&mut core);
    assert!(matches!(out[0], Output::TakeFinalStep), "{out:?}");
    let Output::Send(ask) = &out[1] else {
        panic!("{out:?}")
    };
    assert_eq!(request_id(ask), "run-2", "a new question, a new id");
    assert_eq!(
        core.summary().ran,
        vec!["default/wf/stream: Success (workflow SUCCESS)".to_string()]
    );
}

#[test]
fn a_failed_question_is_asked_again_with_the_same_id_on_the_next_replica_after_a_jittered_backoff()
{
    let delays = |seed: u64| {
        let mut core = AgentCore::new(&config().with_jitter_seed(seed), "run", t0());
        let mut now = t0();
        let mut seen = Vec::new();
        let mut replicas = Vec::new();
        for _ in 0..6 {
            let ask = one_send(&mut core);
            assert_eq!(request_id(&ask), "run-1");
            replicas.push(ask.replica.clone());
            core.handle_reply(now, ask.id, Err(unreachable(&ask.replica)));
            let retry_at = core.poll_timeout().unwrap();
            let delay = retry_at.duration_since(now).unsigned_abs();
            let events = drain(&mut core);
            assert!(
                events.iter().any(|o| matches!(o, Output::Event(AgentEvent::Retrying { what: "next action", delay: d, .. }) if *d == delay)),
                "{events:?}"
            );
            seen.push(delay);
            // Nothing before the deadline; the same question at it.
            core.handle_timeout(retry_at - Duration::from_millis(1));
            assert!(core.poll_output().is_none());
            now = retry_at;
            core.handle_timeout(now);
        }
        (seen, replicas)
    };
    let (first, replicas) = delays(7);
    assert_eq!(first, delays(7).0, "the same seed, the same delays");
    assert_ne!(first, delays(8).0, "another seed, other delays");
    let backoff = BackoffConfig::new(FIRST_RETRY, secs(5));
    for (i, d) in first.iter().enumerate() {
        let ceiling = backoff.ceiling(i as u32 + 1);
        assert!(*d >= ceiling / 2 && *d <= ceiling, "retry {i}: {d:?}");
    }
    assert_eq!(
        replicas,
        [
            "http://a", "http://b", "http://a", "http://b", "http://a", "http://b"
        ]
    );
}

/// The answer `status` with `Retry-After: retry_after` (if any) to `t`,
/// through the HTTP codec.
fn answer(t: &Transmit, status: u16, retry_after: Option<&[u8]>) -> Answer {
    decode_answer(&t.request, &t.replica, status, retry_after, b"")
}

/// Sends the call that is out the answer `fail` gives at `now`, and returns
/// the wait before it goes out again (told in the `Retrying` event), leaving
/// the core at that time with the call sent again.
fn retry_delay(
    core: &mut AgentCore,
    now: Timestamp,
    fail: impl FnOnce(&Transmit) -> Answer,
) -> (Duration, Timestamp) {
    let call = one_send(core);
    core.handle_answer(now, call.id, fail(&call));
    let retry_at = core.poll_timeout().expect("a retry");
    let delay = retry_at.duration_since(now).unsigned_abs();
    let events = drain(core);
    assert!(
        events.iter().any(
            |o| matches!(o, Output::Event(AgentEvent::Retrying { delay: d, .. }) if *d == delay)
        ),
        "{events:?}"
    );
    core.handle_timeout(retry_at - Duration::from_millis(1));
    assert!(core.poll_output().is_none(), "nothing before the deadline");
    core.handle_timeout(retry_at);
    (delay, retry_at)
}

/// The own backoff's delays for `n` failed questions in a row, by a core
/// made from `config` (the twin of the one under test: the same seed).
fn own_delays(config: &AgentConfig, n: usize) -> Vec<Duration> {
    let mut core = AgentCore::new(config, "run", t0());
    let mut now = t0();
    (0..n)
        .map(|_| {
            let (delay, at) = retry_delay(&mut core, now, |t| Err(unreachable(&t.replica)).into());
            now = at;
            delay
        })
        .collect()
}

#[test]
fn a_503_with_retry_after_is_asked_again_no_sooner_than_the_control_plane_said_on_the_next_replica()
{
    let mut core = AgentCore::new(&config(), "run", t0());
    let (delay, at) = retry_delay(&mut core, t0(), |t| answer(t, 503, Some(b"7")));
    // The own backoff would have waited at most 200 ms; the control plane
    // asked for 7 s, and gets it, not more.
    let ceiling = BackoffConfig::new(FIRST_RETRY, secs(5)).ceiling(1);
    assert!(ceiling < secs(7));
    // Spread over up to half again, as the own delays are.
    assert!(
        delay >= secs(7) && delay <= ceiling.max(secs(7)) * 3 / 2,
        "{delay:?}"
    );
    // The same question, on the other replica: the wait is not skipped by
    // moving on (the replicas share one store, and one storm).
    let ask = one_send(&mut core);
    assert_eq!(
        (ask.replica.as_str(), request_id(&ask).as_str()),
        ("http://b", "run-1")
    );
    // A 429 is advice too (the Retrying event has a `delay` of 3 s).
    core.handle_answer(at, ask.id, answer(&ask, 429, Some(b" 3 ")));
    let retry_at = core.poll_timeout().unwrap();
    assert!(
        retry_at >= at + secs(3) && retry_at <= at + Duration::from_millis(4500),
        "{retry_at}"
    );
}

#[test]
fn the_control_plane_s_wait_never_shortens_the_own_backoff() {
    let own = own_delays(&config(), 6);
    let mut core = AgentCore::new(&config(), "run", t0());
    let mut now = t0();
    let mut advised = Vec::new();
    for _ in 0..6 {
        let (delay, at) = retry_delay(&mut core, now, |t| answer(t, 503, Some(b"2")));
        advised.push(delay);
        now = at;
    }
    // Each wait is at least the server's 2 s and at least the own backoff's
    // floor (half its ceiling), and at most the larger of the own ceiling and
    // the server's wait spread by half again.
    let backoff = BackoffConfig::new(FIRST_RETRY, secs(5));
    for (i, d) in advised.iter().enumerate() {
        let ceiling = backoff.ceiling(i as u32 + 1);
        assert!(
            *d >= secs(2) && *d >= ceiling / 2 && *d <= ceiling.max(secs(3)),
            "retry {i}: {d:?} (ceiling {ceiling:?}, own alone {own:?})"
        );
    }
    // Both rules were at work: the server's wait first, the grown backoff
    // last (its floor, 2.5 s... of a 5 s ceiling, past the server's 2 s).
    assert!(advised[0] <= secs(3), "{advised:?}");
    assert!(advised[5] >= Duration::from_millis(2500), "{advised:?}");
}

#[test]
fn a_rack_shed_together_does_not_come_back_together() {
    let delays: Vec<Duration> = (0..20)
        .map(|seed| {
            let mut core = AgentCore::new(&config().with_jitter_seed(seed), "run", t0());
            retry_delay(&mut core, t0(), |t| answer(t, 503, Some(b"2"))).0
        })
        .collect();
    assert!(
        delays.iter().all(|d| *d >= secs(2) && *d <= secs(3)),
        "{delays:?}"
    );
    let mut distinct = delays.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() > 10, "spread: {delays:?}");
}

#[test]
fn a_huge_retry_after_is_bounded_by_the_max_server_pause() {
    for huge in [&b"86400"[..], b"99999999999999999999999999999"] {
        let mut core = AgentCore::new(&config(), "run", t0());
        let (delay, _) = retry_delay(&mut core, t0(), |t| answer(t, 503, Some(huge)));
        assert_eq!(
            delay,
            MAX_SERVER_PAUSE,
            "{:?}",
            String::from_utf8_lossy(huge)
        );
    }
    // A report is bounded the same way.
    let mut core = running(&config(), action(30));
    drain(&mut core);
    core.handle_action_finished(t0() + secs(1), ActionOutcome::Success);
    let (delay, _) = retry_delay(&mut core, t0() + secs(1), |t| {
        answer(t, 503, Some(b"4294967296"))
    });
    assert_eq!(delay, MAX_SERVER_PAUSE);
    assert!(matches!(one_send(&mut core).request, Request::Report(_)));
}

#[test]
fn an_unreadable_absent_past_or_misplaced_retry_after_falls_back_to_the_own_backoff() {
    let own = own_delays(&config(), 1)[0];
    assert!(own < secs(1), "{own:?}");
    for (status, value) in [
        (503, None),
        (503, Some(&b"soon"[..])),
        (503, Some(b"-5")),
        (503, Some(b"1.5")),
        (503, Some(b"")),
        (503, Some(b"\xff\xfe7")),
        (503, Some(b"Sun, 06 Nov 1994 08:49:37 GMT")),
        // Only an overloaded or rate-limiting answer is advice.
        (500, Some(b"7")),
        (502, Some(b"7")),
    ] {
        let mut core = AgentCore::new(&config(), "run", t0());
        let (delay, _) = retry_delay(&mut core, t0(), |t| answer(t, status, value));
        assert_eq!(delay, own, "{status} {value:?}");
    }
}

#[test]
fn an_http_date_retry_after_is_read_on_the_core_s_clock() {
    // t0 + 9 s, in each of the three forms RFC 9110 has recipients accept.
    for date in [
        &b"Fri, 15 Jan 2027 08:00:09 GMT"[..],
        b"Friday, 15-Jan-27 08:00:09 GMT",
        b"Fri Jan 15 08:00:09 2027",
    ] {
        let mut core = AgentCore::new(&config(), "run", t0());
        let (delay, _) = retry_delay(&mut core, t0() + secs(1), |t| answer(t, 503, Some(date)));
        assert!(
            delay >= secs(8) && delay <= secs(12),
            "{delay:?} {:?}",
            String::from_utf8_lossy(date)
        );
    }
}

#[test]
fn a_503_moves_to_the_next_replica_once_however_many_calls_fail_together() {
    let mut core = running(&config(), action(1));
    drain(&mut core);
    core.handle_output(line("x"));
    core.handle_timeout(t0() + secs(1));
    let logs = one_send(&mut core);
    let unavailable = decode(&logs.request, &logs.replica, 503, b"");
    core.handle_reply(t0() + secs(1), logs.id, unavailable);
    let out = drain(&mut core);
    assert!(
        matches!(&out[0], Output::Event(AgentEvent::FailedOver { from, to }) if from == "http://a" && to == "http://b")
    );
    // The heartbeat follows on the new replica.
    let Output::Send(hb) = &out[1] else {
        panic!("{out:?}")
    };
    assert_eq!(hb.replica, "http://b");
    // A failure from the replica already left behind does not move on again.
    core.handle_reply(t0() + secs(1), hb.id, Err(unreachable("http://b")));
    assert_eq!(core.replica(), "http://a");
    let mut core = running(&config(), action(1));
    drain(&mut core);
    core.handle_action_finished(t0(), ActionOutcome::Success);
    let report = one_send(&mut core);
    core.handle_reply(t0(), report.id, Err(unreachable("http://a")));
    assert_eq!(core.replica(), "http://b");
    core.handle_timeout(core.poll_timeout().unwrap());
    let again = one_send(&mut core);
    assert_eq!(
        (again.replica.as_str(), &again.request),
        ("http://b", &report.request)
    );
}

#[test]
fn a_409_to_a_heartbeat_cancels_the_action_and_reports_it_stopped() {
    let mut core = running(&config(), action(2));
    drain(&mut core);
    core.handle_timeout(t0() + secs(2));
    let hb = one_send(&mut core);
    let stop = decode(&hb.request, &hb.replica, 409, b"");
    core.handle_reply(t0() + secs(2), hb.id, stop);
    let out = drain(&mut core);
    assert!(matches!(
        out[0],
        Output::Event(AgentEvent::StoppedByControlPlane { .. })
    ));
    assert!(matches!(out[1], Output::CancelAction));
    assert_eq!(core.poll_timeout(), None, "no more heartbeats");
    core.handle_action_finished(
        t0() + secs(3),
        ActionOutcome::Failed {
            exit_code: None,
            message: "cancelled; cleanup: process group 7 ended on SIGTERM".into(),
        },
    );
    let report = one_send(&mut core);
    let Request::Report(r) = &report.request else {
        panic!("{report:?}")
    };
    // The report says who stopped it and what the runtime cleaned.
    assert_eq!(
        r.outcome,
        ActionOutcome::Failed {
            exit_code: None,
            message:
                "stopped by the control plane; cancelled; cleanup: process group 7 ended on SIGTERM"
                    .into()
        }
    );
    // The control plane refuses it (the action is no longer this worker's): no
    // final step, and the refusal is in the summary.
    core.handle_reply(
        t0() + secs(3),
        report.id,
        Ok(Reply::Report(ReportAnswer::Refused {
            reason: "409 Conflict".into(),
        })),
    );
    let out = drain(&mut core);
    assert!(
        matches!(&out[0], Output::Event(AgentEvent::ReportRefused { reason, .. }) if reason == "409 Conflict")
    );
    assert!(matches!(out[1], Output::Send(_)));
    assert!(!out.iter().any(|o| matches!(o, Output::TakeFinalStep)));
    assert!(core.summary().ran[0].ends_with("(workflow 409 Conflict)"));
}

#[test]
fn a_report_is_retried_until_the_control_plane_has_it_and_a_failure_takes_no_final_step() {
    let mut core = running(&config().with_max_actions(1), action(30));
    drain(&mut core);
    let failed = ActionOutcome::Failed {
        exit_code: Some(1),
        message: "boom".into(),
    };
    core.handle_action_finished(t0() + secs(1), failed.clone());
    let mut report = one_send(&mut core);
    let first = report.request.clone();
    for _ in 0..4 {
        let now = t0() + secs(1);
        core.handle_reply(now, report.id, Err(unreachable(&report.replica)));
        assert!(!core.is_idle());
        core.handle_timeout(core.poll_timeout().unwrap());
        report = one_send(&mut core);
        assert_eq!(report.request, first, "the same report, every time");
    }
    core.handle_reply(
        t0() + secs(9),
        report.id,
        Ok(Reply::Report(ReportAnswer::Accepted {
            workflow_state: Some(WorkflowState::Failed),
        })),
    );
    let out = drain(&mut core);
    assert!(!out.iter().any(|o| matches!(o, Output::TakeFinalStep)));
    // One action was asked for, one ran: done.
    let Some(Output::Done(Ok(summary))) = out.into_iter().last() else {
        panic!("not done")
    };
    assert_eq!(summary.ran.len(), 1);
}

/// Asks, is told to wait `retry_after` seconds, and returns when the core
/// will ask again.
fn next_ask_after_a_wait(core: &mut AgentCore, now: Timestamp, retry_after: u32) -> Timestamp {
    let ask = one_send(core);
    core.handle_reply(
        now,
        ask.id,
        Ok(Reply::NextAction(NextActionResponse::Wait {
            retry_after_seconds: retry_after,
            reason: "no action".into(),
        })),
    );
    let next = core.poll_timeout().expect("a pause");
    core.handle_timeout(next);
    next
}

#[test]
fn nothing_to_do_asks_again_when_the_control_plane_says_and_not_sooner_than_the_poll_interval() {
    let mut core = AgentCore::new(&config(), "run", t0());
    let mut now = t0();
    for (retry_after, pause) in [
        (3, Duration::from_secs(3)),
        // No advice (or a refusal turned into a wait): the poll interval.
        (0, Duration::from_millis(500)),
        // Advice past the bound is bounded.
        (u32::MAX, MAX_SERVER_PAUSE),
    ] {
        let next = next_ask_after_a_wait(&mut core, now, retry_after);
        assert_eq!(next, now + pause, "told {retry_after} s");
        now = next;
    }
}

#[test]
fn nothing_to_do_is_told_each_time_and_stops_when_idle_long_enough() {
    let mut core = AgentCore::new(&config().with_idle_exit(secs(5)), "run", t0());
    let mut now = t0();
    let mut waits_told = 0;
    let mut asked = vec![];
    loop {
        let out = drain(&mut core);
        // Each wait is told, with the control plane's reason (the in-memory
        // OS's console shows it).
        waits_told += out
            .iter()
            .filter(|o| matches!(o, Output::Event(e @ AgentEvent::NoActionYet { reason }) if reason == "no action" && e.to_string() == "no action yet: no action"))
            .count();
        if let Some(Output::Done(result)) = out.last() {
            assert!(result.is_ok());
            break;
        }
        let Some(Output::Send(ask)) = out.iter().find(|o| matches!(o, Output::Send(_))) else {
            panic!("{out:?}")
        };
        asked.push(now);
        core.handle_reply(
            now,
            ask.id,
            Ok(Reply::NextAction(NextActionResponse::Wait {
                retry_after_seconds: 3,
                reason: "no action".into(),
            })),
        );
        if let Some(next) = core.poll_timeout() {
            now = next;
            core.handle_timeout(now);
        }
    }
    // At 0 and 3 s as told, then at the idle limit (5 s, not 6), where it stops.
    assert_eq!(asked, [t0(), t0() + secs(3), t0() + secs(5)]);
    assert_eq!(waits_told, 3, "one `no action yet` per wait");
}

#[test]
fn refused_credentials_end_the_run() {
    let mut core = AgentCore::new(&config(), "run", t0());
    let ask = one_send(&mut core);
    let denied = decode(&ask.request, &ask.replica, 401, b"");
    core.handle_reply(t0(), ask.id, denied);
    let out = drain(&mut core);
    assert!(matches!(
        out.last(),
        Some(Output::Done(Err(Error::AuthenticationFailed { .. })))
    ));
    assert_eq!(core.poll_timeout(), None);
}

#[test]
fn zero_actions_asks_nothing() {
    let mut core = AgentCore::new(&config().with_max_actions(0), "run", t0());
    let out = drain(&mut core);
    assert!(matches!(&out[..], [Output::Done(Ok(s))] if s.ran.is_empty()));
}
