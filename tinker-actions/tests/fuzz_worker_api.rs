//! Property-based fuzzing of what the agent reads from the network: the worker
//! API's answers (`decode`, `decode_answer` with a `Retry-After`), and what the
//! agent core does with a decoded action or advice. Whatever the status and the
//! bytes, nothing panics; a refusal is a typed error or a "no work" with its
//! reason; a server's wait is bounded.
//!
//! Each property runs a bounded number of cases (64 by default, as in CI); a
//! longer run by hand uses the same tests with more:
//! `PROPTEST_CASES=100000 cargo test -p tinker-actions --test fuzz_worker_api`.

use jiff::Timestamp;
use proptest::prelude::*;
use std::time::Duration;
use tinker_actions::agent::{
    AgentConfig, AgentCore, MAX_ACTION_TIMEOUT, MAX_SERVER_PAUSE, Output, Reply, Request,
    RetryAfter, action_spec, decode, decode_answer,
};
use tinker_core::runtime::ActionOutcome;
use tinker_core::worker_api::{
    ActionReport, Heartbeat, LogBatch, NextActionRequest, NextActionResponse,
};
use tinker_core::{Error, Retryable};

/// Cases per property: 64, or `PROPTEST_CASES`.
fn cases() -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn requests() -> Vec<Request> {
    vec![
        Request::NextAction(NextActionRequest {
            worker_id: "w1".into(),
            request_id: Some("r-1".into()),
        }),
        Request::Heartbeat(Heartbeat {
            worker_id: "w1".into(),
            workflow_id: "default/wf".into(),
            action_index: 0,
            attempt: 1,
        }),
        Request::Report(ActionReport {
            worker_id: "w1".into(),
            workflow_id: "default/wf".into(),
            action_index: 0,
            attempt: 1,
            outcome: ActionOutcome::Success,
            started_at: None,
            finished_at: None,
        }),
        Request::Logs(LogBatch {
            worker_id: "w1".into(),
            workflow_id: "default/wf".into(),
            action_index: 0,
            lines: vec![],
        }),
    ]
}

/// A JSON value of any shape, a few levels deep.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
            prop::collection::btree_map(".{0,12}", inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An action answer whose fields hold any value (right type or not, any size).
fn action_answer() -> impl Strategy<Value = serde_json::Value> {
    let field = |name: &'static str, good: BoxedStrategy<serde_json::Value>| {
        (
            Just(name),
            prop_oneof![3 => good, 1 => json().boxed(), 1 => Just(serde_json::Value::Null)],
        )
    };
    let s = || ".{0,20}".prop_map(serde_json::Value::from).boxed();
    let n = || any::<u64>().prop_map(serde_json::Value::from).boxed();
    let strings = || {
        prop::collection::vec(".{0,10}", 0..4)
            .prop_map(serde_json::Value::from)
            .boxed()
    };
    (
        field("workflow_id", s()),
        field("task_name", s()),
        field("action_index", n()),
        field("attempt", n()),
        field("name", s()),
        field("image", s()),
        field("timeout_seconds", n()),
        field("command", strings()),
        field("environment", json().boxed()),
        field("volumes", strings()),
        field("heartbeat_seconds", n()),
    )
        .prop_map(|fields| {
            let (a, b, c, d, e, f, g, h, i, j, k) = fields;
            let mut m = serde_json::Map::new();
            m.insert("status".into(), "action".into());
            for (key, v) in [a, b, c, d, e, f, g, h, i, j, k] {
                m.insert(key.into(), v);
            }
            serde_json::Value::Object(m)
        })
}

/// Decodes one answer and checks the rules every answer follows.
fn check(request: &Request, status: u16, body: &[u8]) {
    match decode(request, "http://cp", status, body) {
        Err(Error::AuthenticationFailed { .. }) => assert_eq!(status, 401),
        Err(e) if e.is_retryable() => assert!(status == 429 || (500..600).contains(&status)),
        // Only a status that is no HTTP status is an error of another kind.
        Err(e) => assert!(!(100..1000).contains(&status), "{status}: {e}"),
        Ok(reply) => {
            assert!((100..1000).contains(&status) && status != 401 && status != 429);
            if let Reply::NextAction(NextActionResponse::Wait { reason, .. }) = &reply {
                assert!(!reason.is_empty(), "a refusal says why");
            }
        }
    }
}

/// Feeds a decoded next-action answer to a core that asked for it, and runs
/// the action's first heartbeat cycle: nothing panics, the time limit is bounded.
fn drive(reply: Reply) {
    let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let mut core = AgentCore::new(&AgentConfig::new("http://cp", "w1", "t"), "fuzz", t0);
    let ask = match core.poll_output() {
        Some(Output::Send(t)) => t,
        other => panic!("{other:?}"),
    };
    core.handle_reply(t0, ask.id, Ok(reply));
    while let Some(o) = core.poll_output() {
        if let Output::StartAction(a) = o {
            let spec = action_spec(&a);
            assert!(spec.timeout.is_none_or(|t| t <= MAX_ACTION_TIMEOUT));
        }
    }
    if let Some(next) = core.poll_timeout() {
        core.handle_timeout(next);
        while core.poll_output().is_some() {}
    }
}

/// `Retry-After` values: any bytes, numbers of any size, and date-like text.
fn retry_after_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        "[0-9]{1,40}".prop_map(String::into_bytes),
        "[ \t]?[A-Za-z]{3,9},? [0-9]{1,2}[ -][A-Za-z]{3}[ -][0-9]{2,4} [0-9]{2}:[0-9]{2}:[0-9]{2}( GMT)?"
            .prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn any_retry_after_decodes_without_panic_and_the_wait_is_bounded(
        status in prop_oneof![Just(503u16), Just(429), any::<u16>()],
        value in retry_after_value(),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        for r in requests() {
            let answer = decode_answer(&r, "http://cp", status, Some(&value), &body);
            // The reply is `decode`'s; the advice comes only with a 503 or 429.
            prop_assert_eq!(
                format!("{:?}", answer.reply),
                format!("{:?}", decode(&r, "http://cp", status, &body))
            );
            prop_assert!(answer.retry_after.is_none() || status == 503 || status == 429);
            prop_assert_eq!(
                answer.retry_after,
                if status == 503 || status == 429 { RetryAfter::parse(&value) } else { None }
            );
        }
        // A question answered so waits no longer than the bound.
        let config = AgentConfig::new("http://cp", "w1", "t").with_jitter_seed(1);
        let mut core = AgentCore::new(&config, "fuzz", t0);
        let Some(Output::Send(ask)) = core.poll_output() else { panic!("no question") };
        let answer = decode_answer(&ask.request, &ask.replica, status, Some(&value), &body);
        core.handle_answer(t0, ask.id, answer);
        while core.poll_output().is_some() {}
        if let Some(next) = core.poll_timeout() {
            let wait = Duration::try_from(next.duration_since(t0)).unwrap();
            prop_assert!(wait <= MAX_SERVER_PAUSE.max(config.max_backoff), "{:?}", wait);
        }
    }

    #[test]
    fn any_status_and_bytes_decode_without_panic(status in any::<u16>(), body in prop::collection::vec(any::<u8>(), 0..512)) {
        for r in requests() {
            check(&r, status, &body);
        }
    }

    #[test]
    fn any_json_decodes_without_panic(status in prop_oneof![Just(200u16), Just(409), 100u16..600], v in json()) {
        let body = serde_json::to_vec(&v).unwrap();
        for r in requests() {
            check(&r, status, &body);
        }
    }

    #[test]
    fn an_action_with_any_fields_is_taken_or_refused_cleanly(v in action_answer(), cut in any::<prop::sample::Index>()) {
        let ask = &requests()[0];
        let body = serde_json::to_vec(&v).unwrap();
        check(ask, 200, &body);
        if let Ok(reply) = decode(ask, "http://cp", 200, &body) {
            drive(reply);
        }
        // The same answer cut short anywhere: no work, with the reason.
        let short = &body[..cut.index(body.len())];
        match decode(ask, "http://cp", 200, short).unwrap() {
            Reply::NextAction(NextActionResponse::Wait { reason, .. }) => {
                prop_assert!(reason.starts_with("unreadable answer"), "{reason}")
            }
            other => prop_assert!(false, "{other:?}"),
        }
    }
}

#[test]
fn an_action_asking_for_an_endless_time_limit_gets_a_bounded_one() {
    let body = br#"{"status":"action","workflow_id":"default/wf","task_name":"t","action_index":0,
        "attempt":1,"name":"a","image":"exec","timeout_seconds":18446744073709551615,
        "command":["true"],"environment":{},"volumes":[],"heartbeat_seconds":4294967295}"#;
    let reply = decode(&requests()[0], "http://cp", 200, body).unwrap();
    let Reply::NextAction(NextActionResponse::Action(a)) = &reply else {
        panic!("{reply:?}")
    };
    assert_eq!(action_spec(a).timeout, Some(MAX_ACTION_TIMEOUT));
    drive(reply);
}
