//! The agent's driver over an in-memory transport, under a clock that moves only
//! when the test moves it: no sockets, no real time. A scripted control plane
//! hands out one action, stops answering for a while, and then has nothing more
//! to do; the test checks what the agent asked, in which order, and what its
//! caller was told. An overloaded one asks the agent to wait (`Retry-After`),
//! and the driver carries that advice from the transport to the core.

use async_trait::async_trait;
use jiff::Timestamp;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tinker_actions::agent::{
    Agent, AgentConfig, AgentEvent, Answer, EventSink, HeartbeatAnswer, Reply, ReportAnswer,
    Request, RetryAfter, Transport,
};
use tinker_core::clock::{Clock, ManualClock, SharedClock};
use tinker_core::runtime::{
    ActionOutcome, ActionRuntime, ActionSpec, CancelToken, OutputSink, Stream,
};
use tinker_core::worker_api::{NextActionResponse, WorkerAction};
use tinker_core::{Error, Result};

/// One action, then nothing; the first report is lost (the replica is down).
#[derive(Debug, Default)]
struct ScriptedControlPlane {
    seen: Mutex<Vec<(String, String)>>,
}

#[async_trait]
impl Transport for ScriptedControlPlane {
    async fn send(&self, replica: &str, request: &Request) -> Result<Reply> {
        let mut seen = self.seen.lock().unwrap();
        let first = |op: &str| !seen.iter().any(|(_, o)| o == op);
        let reply = match request {
            Request::NextAction(_) if first("next-action") => {
                Ok(Reply::NextAction(NextActionResponse::Action(action())))
            }
            Request::NextAction(_) => Ok(Reply::NextAction(NextActionResponse::Wait {
                retry_after_seconds: 1,
                reason: "no action".into(),
            })),
            Request::Report(_) if first("report") => Err(Error::Unreachable {
                target: replica.into(),
                reason: "down".into(),
            }),
            Request::Report(_) => Ok(Reply::Report(ReportAnswer::Accepted {
                workflow_state: None,
            })),
            Request::Heartbeat(_) => Ok(Reply::Heartbeat(HeartbeatAnswer::Continue)),
            _ => Ok(Reply::Logs),
        };
        seen.push((replica.to_string(), request.operation().to_string()));
        reply
    }
}

fn action() -> WorkerAction {
    WorkerAction {
        workflow_id: "default/wf".into(),
        task_name: "t".into(),
        action_index: 0,
        attempt: 1,
        name: "work".into(),
        image: "fake".into(),
        timeout_seconds: None,
        command: vec![],
        environment: Default::default(),
        volumes: vec![],
        pid: None,
        heartbeat_seconds: 1,
    }
}

/// Prints a line, works for 2.5 s on the test's clock, prints another.
#[derive(Debug)]
struct SlowWork(SharedClock);

#[async_trait]
impl ActionRuntime for SlowWork {
    async fn run(
        &self,
        _spec: &ActionSpec,
        out: &dyn OutputSink,
        _cancel: &CancelToken,
    ) -> Result<ActionOutcome> {
        out.line(Stream::Stdout, "starting");
        self.0.sleep(Duration::from_millis(2500)).await;
        out.line(Stream::Stdout, "done");
        Ok(ActionOutcome::Success)
    }
}

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<AgentEvent>>);

impl EventSink for Recorder {
    fn event(&self, event: &AgentEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_driver_runs_the_core_over_any_transport_under_a_manual_clock() {
    let clock = Arc::new(ManualClock::new(
        Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    let plane = Arc::new(ScriptedControlPlane::default());
    let events = Arc::new(Recorder::default());
    let agent = Agent::new(
        AgentConfig::new("mem://a,mem://b", "w1", "secret")
            .with_jitter_seed(1)
            .with_idle_exit(Duration::from_secs(2)),
        Arc::new(SlowWork(clock.clone())),
        None,
    )
    .with_transport(plane.clone())
    .with_clock(clock.clone())
    .with_events(events.clone());
    // Time moves in 50 ms steps whenever the agent waits.
    let ticker = {
        let clock = clock.clone();
        tokio::spawn(async move {
            loop {
                tokio::task::yield_now().await;
                clock.advance(Duration::from_millis(50));
            }
        })
    };
    let summary = agent.run(std::future::pending()).await.unwrap();
    ticker.abort();
    assert_eq!(
        summary.ran,
        vec!["default/wf/work: Success (workflow acknowledged)".to_string()]
    );
    let seen = plane.seen.lock().unwrap().clone();
    let ops: Vec<&str> = seen.iter().map(|(_, op)| op.as_str()).collect();
    // Heartbeats at 1 s and 2 s (the first with the output so far), the rest of
    // the output, the report (lost, then retried on the other replica), then
    // questions until idle for 2 s.
    assert_eq!(
        &ops[..7],
        [
            "next-action",
            "logs",
            "heartbeat",
            "heartbeat",
            "logs",
            "report",
            "report"
        ],
        "{seen:?}"
    );
    assert_eq!(seen[5].0, "mem://a");
    assert_eq!(seen[6].0, "mem://b");
    assert!(ops[7..].iter().all(|op| *op == "next-action"), "{ops:?}");
    let events = events.0.lock().unwrap();
    let lines: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Output { line, .. } => Some(line.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(lines, ["starting", "done"]);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, AgentEvent::Retrying { what: "report", .. }))
    );
    assert!(events.iter().any(
        |e| matches!(e, AgentEvent::FailedOver { from, to } if from == "mem://a" && to == "mem://b")
    ));
}

/// An overloaded control plane: the first question gets a 503 with
/// `Retry-After: 7`, every later one "nothing to do".
#[derive(Debug)]
struct Overloaded {
    clock: Arc<ManualClock>,
    asked_at: Mutex<Vec<Timestamp>>,
}

#[async_trait]
impl Transport for Overloaded {
    async fn send(&self, replica: &str, request: &Request) -> Result<Reply> {
        self.call(replica, request).await.reply
    }

    async fn call(&self, replica: &str, _request: &Request) -> Answer {
        let mut asked = self.asked_at.lock().unwrap();
        asked.push(self.clock.now());
        if asked.len() == 1 {
            let busy: Result<Reply> = Err(Error::Unreachable {
                target: replica.into(),
                reason: "next-action: 503 Service Unavailable".into(),
            });
            return Answer::from(busy)
                .with_retry_after(Some(RetryAfter::Delay(Duration::from_secs(7))));
        }
        Answer::from(Ok(Reply::NextAction(NextActionResponse::Wait {
            retry_after_seconds: 0,
            reason: "no action".into(),
        })))
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_driver_hands_the_transport_s_retry_after_to_the_core() {
    let t0 = Timestamp::from_second(1_800_000_000).unwrap();
    let clock = Arc::new(ManualClock::new(t0));
    let plane = Arc::new(Overloaded {
        clock: clock.clone(),
        asked_at: Mutex::new(Vec::new()),
    });
    let events = Arc::new(Recorder::default());
    let agent = Agent::new(
        AgentConfig::new("mem://a,mem://b", "w1", "secret")
            .with_jitter_seed(1)
            .with_idle_exit(Duration::from_secs(8)),
        Arc::new(SlowWork(clock.clone())),
        None,
    )
    .with_transport(plane.clone())
    .with_clock(clock.clone())
    .with_events(events.clone());
    let ticker = {
        let clock = clock.clone();
        tokio::spawn(async move {
            loop {
                tokio::task::yield_now().await;
                clock.advance(Duration::from_millis(50));
            }
        })
    };
    agent.run(std::future::pending()).await.unwrap();
    ticker.abort();
    let asked = plane.asked_at.lock().unwrap().clone();
    // The own backoff would have asked again within 200 ms.
    assert!(asked.len() >= 2, "{asked:?}");
    assert_eq!(asked[0], t0);
    let waited = asked[1].duration_since(asked[0]);
    // The server's 7 s, spread by up to half again (the manual clock ticks
    // in steps, so a little past the retry's time).
    assert!(
        waited >= jiff::SignedDuration::from_secs(7)
            && waited < jiff::SignedDuration::from_millis(10_600),
        "{waited:?}"
    );
    assert!(events.0.lock().unwrap().iter().any(|e| matches!(
        e,
        AgentEvent::Retrying { what: "next action", delay, .. }
            if *delay >= Duration::from_secs(7) && *delay <= Duration::from_millis(10_500)
    )));
}
