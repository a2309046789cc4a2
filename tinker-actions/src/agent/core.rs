//! The agent's engine, without I/O ("sans-IO", as quinn-proto holds a QUIC
//! connection): answers, action ends and the current time go in; requests to
//! send (and to which replica), actions to start or cancel, events, and the next
//! deadline come out. No sockets, no tasks, no sleeping, no printing: the
//! [`Agent`](super::Agent) driver does those, and tests drive this core by hand.
//!
//! The loop it encodes: ask for the next action (one request id per question,
//! kept across its retries, so a lost answer that handed out an action hands
//! the same action out again); run it, sending buffered output and a heartbeat
//! every `heartbeat_seconds` (a 409 to a heartbeat cancels it); send the rest of
//! its output; report its end, retrying until the control plane has the report;
//! after an acknowledged success, let the driver take the final step (kexec,
//! reboot); ask again. Failed calls back off with jitter and move to the next
//! replica, waiting at least as long as an overloaded control plane's
//! `Retry-After` asked (which the transport reads, and the core bounds).

use super::events::AgentEvent;
use super::transport::{Answer, HeartbeatAnswer, Reply, ReportAnswer, Request, RetryAfter};
use super::{AgentConfig, AgentSummary};
use jiff::{SignedDuration, Timestamp};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use tinker_core::retry::{Backoff, BackoffConfig};
use tinker_core::runtime::{ActionOutcome, ActionSpec};
use tinker_core::worker_api::{
    ActionReport, Heartbeat, LogBatch, LogLine, NextActionRequest, NextActionResponse, WorkerAction,
};
use tinker_core::{Error, Result, Retryable};

/// The longest the agent waits, when told to, before asking for work again,
/// or before retrying a call the control plane answered with `Retry-After`.
pub const MAX_SERVER_PAUSE: Duration = Duration::from_secs(60);

/// The first wait before retrying a failed call (it doubles up to
/// [`AgentConfig::max_backoff`]).
pub const FIRST_RETRY: Duration = Duration::from_millis(200);

/// Names one request the core asked to send; its answer comes back with it.
pub type RequestId = u64;

/// A request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Give this back with the answer ([`AgentCore::handle_reply`]).
    pub id: RequestId,
    /// The replica to send it to (one of [`AgentConfig::replicas`]).
    pub replica: String,
    /// The request.
    pub request: Request,
}

/// What the core asks its driver to do, in order.
#[derive(Debug)]
#[non_exhaustive]
pub enum Output {
    /// Send this request; feed its answer to [`AgentCore::handle_reply`].
    Send(Transmit),
    /// Start running this action; feed its output lines to
    /// [`AgentCore::handle_output`] and its end to
    /// [`AgentCore::handle_action_finished`].
    StartAction(WorkerAction),
    /// Cancel the running action (it still ends through
    /// [`AgentCore::handle_action_finished`]).
    CancelAction,
    /// Tell the caller (see [`EventSink`](super::EventSink)).
    Event(AgentEvent),
    /// The last action's success was acknowledged: take its final step (kexec,
    /// reboot), if it has one, before anything else.
    TakeFinalStep,
    /// The run is over, with this result. Nothing follows.
    Done(Result<AgentSummary>),
}

/// A call retried until it gets an answer.
#[derive(Debug)]
struct Call {
    request: Request,
    what: &'static str,
    in_flight: Option<RequestId>,
    retry_at: Option<Timestamp>,
}

impl Call {
    fn new(what: &'static str, request: Request) -> Self {
        Call {
            request,
            what,
            in_flight: None,
            retry_at: None,
        }
    }
}

/// The heartbeat cycle of a running action: wait, send the buffered output,
/// then the heartbeat, then wait again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Beat {
    Due(Timestamp),
    Logs(RequestId),
    Heartbeat(RequestId),
    Off,
}

#[derive(Debug)]
struct Running {
    action: WorkerAction,
    started: Timestamp,
    lines: Vec<LogLine>,
    beat: Beat,
    stopped: bool,
}

/// An action that ended, on its way to being reported.
#[derive(Debug)]
struct Ended {
    action: WorkerAction,
    started: Timestamp,
    outcome: ActionOutcome,
}

#[derive(Debug)]
enum Phase {
    /// Asking for the next action.
    Asking(Call),
    /// Nothing to do; ask again at `until`.
    Pausing {
        until: Timestamp,
    },
    Running(Running),
    /// Sending the ended action's last output.
    Flushing(Ended, Call),
    /// Sending the ended action's report.
    Reporting(Ended, Call),
    Done,
}

/// The worker agent's state.
#[derive(Debug)]
pub struct AgentCore {
    worker_id: String,
    replicas: Vec<String>,
    current: usize,
    instance: String,
    asked: u64,
    next_id: RequestId,
    in_flight: BTreeMap<RequestId, usize>,
    backoff: Backoff,
    max_actions: Option<usize>,
    idle_exit: Option<Duration>,
    poll_interval: Duration,
    idle_since: Timestamp,
    summary: AgentSummary,
    phase: Phase,
    out: VecDeque<Output>,
}

impl AgentCore {
    /// A core for `config`, started at `now`. `instance` names this run (request
    /// ids are made from it), so it must differ from every earlier run's.
    pub fn new(config: &AgentConfig, instance: impl Into<String>, now: Timestamp) -> Self {
        let backoff_config = BackoffConfig::new(FIRST_RETRY, config.max_backoff);
        let mut core = AgentCore {
            worker_id: config.worker_id.clone(),
            replicas: config.replicas(),
            current: 0,
            instance: instance.into(),
            asked: 0,
            next_id: 0,
            in_flight: BTreeMap::new(),
            backoff: match config.jitter_seed {
                Some(seed) => Backoff::with_seed(backoff_config, seed),
                None => Backoff::new(backoff_config),
            },
            max_actions: config.max_actions,
            idle_exit: config.idle_exit,
            poll_interval: config.poll_interval,
            idle_since: now,
            summary: AgentSummary::default(),
            phase: Phase::Done,
            out: VecDeque::new(),
        };
        core.ask();
        core
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When to call [`AgentCore::handle_timeout`] next, if the core waits on time.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match &self.phase {
            Phase::Asking(c) | Phase::Flushing(_, c) | Phase::Reporting(_, c) => c.retry_at,
            Phase::Pausing { until } => Some(*until),
            Phase::Running(r) => match r.beat {
                Beat::Due(t) => Some(t),
                _ => None,
            },
            Phase::Done => None,
        }
    }

    /// Whether the agent is between actions (asking, or waiting to ask): a
    /// shutdown may stop it now without losing a report.
    pub fn is_idle(&self) -> bool {
        matches!(
            self.phase,
            Phase::Asking(_) | Phase::Pausing { .. } | Phase::Done
        )
    }

    /// What the agent has done so far.
    pub fn summary(&self) -> &AgentSummary {
        &self.summary
    }

    /// The replica requests go to now.
    pub fn replica(&self) -> &str {
        &self.replicas[self.current]
    }

    /// Time passed: retries, heartbeats and pauses that are due go out.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Asking(c) => self.phase = Phase::Asking(self.resend_if_due(now, c)),
            Phase::Flushing(e, c) => self.phase = Phase::Flushing(e, self.resend_if_due(now, c)),
            Phase::Reporting(e, c) => self.phase = Phase::Reporting(e, self.resend_if_due(now, c)),
            Phase::Pausing { until } if until <= now => self.ask(),
            Phase::Running(mut r) => {
                if matches!(r.beat, Beat::Due(t) if t <= now) {
                    r.beat = self.beat(&mut r);
                }
                self.phase = Phase::Running(r);
            }
            other => self.phase = other,
        }
    }

    /// A line of the running action's output, to be sent with the next batch.
    pub fn handle_output(&mut self, line: LogLine) {
        if let Phase::Running(r) = &mut self.phase {
            r.lines.push(line);
        }
    }

    /// The running action ended with `outcome`.
    pub fn handle_action_finished(&mut self, now: Timestamp, outcome: ActionOutcome) {
        let Phase::Running(r) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return;
        };
        // The control plane already decided this action's end: say so, with
        // what the runtime said about stopping it (its cleanup report).
        let outcome = if r.stopped {
            let said = match &outcome {
                ActionOutcome::Failed { message, .. } | ActionOutcome::Timeout { message } => {
                    message.clone()
                }
                ActionOutcome::Success => "it had already succeeded".into(),
                other => format!("{other:?}"),
            };
            ActionOutcome::Failed {
                exit_code: None,
                message: format!("stopped by the control plane; {said}"),
            }
        } else {
            outcome
        };
        self.emit(AgentEvent::ActionEnded {
            workflow_id: r.action.workflow_id.clone(),
            action_index: r.action.action_index,
            name: r.action.name.clone(),
            outcome: outcome.clone(),
        });
        let ended = Ended {
            action: r.action,
            started: r.started,
            outcome,
        };
        if r.lines.is_empty() {
            self.report(now, ended);
        } else {
            let batch = self.batch(&ended.action, r.lines);
            let call = self.start_call(Call::new("logs", batch));
            self.phase = Phase::Flushing(ended, call);
        }
    }

    /// The answer to request `id` (an answer to a request the core no longer
    /// waits for is dropped), without advice on when to call again.
    pub fn handle_reply(&mut self, now: Timestamp, id: RequestId, reply: Result<Reply>) {
        self.handle_answer(now, id, reply.into());
    }

    /// The answer to request `id` with the control plane's advice on when to
    /// call again ([`Transport::call`](super::Transport::call)): a call that
    /// failed is retried no sooner than the advice says (bounded by
    /// [`MAX_SERVER_PAUSE`]).
    pub fn handle_answer(&mut self, now: Timestamp, id: RequestId, answer: Answer) {
        let Answer {
            reply,
            retry_after: advice,
        } = answer;
        let Some(replica) = self.in_flight.remove(&id) else {
            return;
        };
        if let Err(e) = &reply
            && e.is_retryable()
        {
            self.fail_over(replica);
        }
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Asking(c) if c.in_flight == Some(id) => {
                self.answered_ask(now, c, replica, reply, advice)
            }
            // Heartbeats keep the schedule the control plane set, advice or
            // not: one held back could get the action timed out.
            Phase::Running(r) => self.answered_beat(now, r, id, reply),
            Phase::Flushing(e, c) if c.in_flight == Some(id) => match reply {
                Err(err) if err.is_retryable() => {
                    self.phase = Phase::Flushing(e, self.retry(now, c, replica, err, advice))
                }
                // Output that cannot be delivered does not hold up the report.
                _ => self.report(now, e),
            },
            Phase::Reporting(e, c) if c.in_flight == Some(id) => match reply {
                Ok(Reply::Report(answer)) => self.reported(e, answer),
                Ok(_) => self.reported(
                    e,
                    ReportAnswer::Accepted {
                        workflow_state: None,
                    },
                ),
                Err(err) if err.is_retryable() => {
                    self.phase = Phase::Reporting(e, self.retry(now, c, replica, err, advice))
                }
                Err(err) => self.finish(Err(err)),
            },
            other => self.phase = other,
        }
    }

    fn answered_ask(
        &mut self,
        now: Timestamp,
        c: Call,
        replica: usize,
        reply: Result<Reply>,
        advice: Option<RetryAfter>,
    ) {
        match reply {
            Ok(Reply::NextAction(NextActionResponse::Action(action))) => self.start(now, action),
            Ok(reply) => {
                let mut pause = self.poll_interval;
                if let Reply::NextAction(NextActionResponse::Wait {
                    reason,
                    retry_after_seconds,
                }) = reply
                {
                    self.emit(AgentEvent::NoActionYet { reason });
                    // The control plane knows when asking again is worth it
                    // (a machine being prepared, netboot turned off); its
                    // word is bounded, so a wrong one cannot park the agent.
                    pause = pause
                        .max(Duration::from_secs(retry_after_seconds.into()).min(MAX_SERVER_PAUSE));
                }
                let idle_exit = self
                    .idle_exit
                    .and_then(|d| SignedDuration::try_from(d).ok())
                    .map(|d| self.idle_since + d);
                if idle_exit.is_some_and(|at| now >= at) {
                    self.finish(Ok(self.summary.clone()));
                } else {
                    let until = now + pause;
                    self.phase = Phase::Pausing {
                        until: idle_exit.map_or(until, |at| until.min(at)),
                    };
                }
            }
            Err(e) if e.is_retryable() => {
                self.phase = Phase::Asking(self.retry(now, c, replica, e, advice))
            }
            Err(e) => self.finish(Err(e)),
        }
    }

    fn answered_beat(
        &mut self,
        now: Timestamp,
        mut r: Running,
        id: RequestId,
        reply: Result<Reply>,
    ) {
        match r.beat {
            // Sent or not, the output batch is followed by the heartbeat.
            Beat::Logs(sent) if sent == id => r.beat = self.heartbeat(&r.action),
            Beat::Heartbeat(sent) if sent == id => {
                if let Ok(Reply::Heartbeat(HeartbeatAnswer::Stop)) = reply {
                    self.emit(AgentEvent::StoppedByControlPlane {
                        workflow_id: r.action.workflow_id.clone(),
                        action_index: r.action.action_index,
                    });
                    self.out.push_back(Output::CancelAction);
                    r.stopped = true;
                    r.beat = Beat::Off;
                } else {
                    r.beat = Beat::Due(now + heartbeat_every(&r.action));
                }
            }
            _ => {}
        }
        self.phase = Phase::Running(r);
    }

    /// Asks for the next action, unless the configured number has run.
    fn ask(&mut self) {
        if self
            .max_actions
            .is_some_and(|m| self.summary.ran.len() >= m)
        {
            self.finish(Ok(self.summary.clone()));
            return;
        }
        self.asked += 1;
        let request = Request::NextAction(NextActionRequest {
            worker_id: self.worker_id.clone(),
            request_id: Some(format!("{}-{}", self.instance, self.asked)),
        });
        self.phase = Phase::Asking(self.start_call(Call::new("next action", request)));
    }

    fn start(&mut self, now: Timestamp, action: WorkerAction) {
        self.idle_since = now;
        self.emit(AgentEvent::ActionStarted {
            workflow_id: action.workflow_id.clone(),
            action_index: action.action_index,
            name: action.name.clone(),
            image: action.image.clone(),
        });
        self.out.push_back(Output::StartAction(action.clone()));
        self.phase = Phase::Running(Running {
            beat: Beat::Due(now + heartbeat_every(&action)),
            action,
            started: now,
            lines: Vec::new(),
            stopped: false,
        });
    }

    /// The heartbeat is due: the buffered output goes first, if there is any.
    fn beat(&mut self, r: &mut Running) -> Beat {
        if r.lines.is_empty() {
            return self.heartbeat(&r.action);
        }
        let batch = self.batch(&r.action, std::mem::take(&mut r.lines));
        Beat::Logs(self.transmit(batch))
    }

    fn heartbeat(&mut self, a: &WorkerAction) -> Beat {
        let hb = Request::Heartbeat(Heartbeat {
            worker_id: self.worker_id.clone(),
            workflow_id: a.workflow_id.clone(),
            action_index: a.action_index,
            attempt: a.attempt,
        });
        Beat::Heartbeat(self.transmit(hb))
    }

    fn batch(&self, a: &WorkerAction, lines: Vec<LogLine>) -> Request {
        Request::Logs(LogBatch {
            worker_id: self.worker_id.clone(),
            workflow_id: a.workflow_id.clone(),
            action_index: a.action_index,
            lines,
        })
    }

    fn report(&mut self, now: Timestamp, e: Ended) {
        let report = Request::Report(ActionReport {
            worker_id: self.worker_id.clone(),
            workflow_id: e.action.workflow_id.clone(),
            action_index: e.action.action_index,
            attempt: e.action.attempt,
            outcome: e.outcome.clone(),
            started_at: Some(e.started),
            finished_at: Some(now),
        });
        // Retried until the control plane has it: the action is not run again,
        // whatever happens to the control plane meanwhile.
        let call = self.start_call(Call::new("report", report));
        self.phase = Phase::Reporting(e, call);
    }

    fn reported(&mut self, e: Ended, answer: ReportAnswer) {
        let (acknowledged, state) = match answer {
            ReportAnswer::Accepted { workflow_state } => (
                true,
                workflow_state.map_or_else(|| "acknowledged".to_string(), |s| s.to_string()),
            ),
            ReportAnswer::Refused { reason } => {
                self.emit(AgentEvent::ReportRefused {
                    workflow_id: e.action.workflow_id.clone(),
                    action_index: e.action.action_index,
                    reason: reason.clone(),
                });
                (false, reason)
            }
        };
        self.summary.ran.push(format!(
            "{}/{}: {:?} (workflow {state})",
            e.action.workflow_id, e.action.name, e.outcome
        ));
        if acknowledged && e.outcome == ActionOutcome::Success {
            self.out.push_back(Output::TakeFinalStep);
        }
        self.ask();
    }

    fn start_call(&mut self, mut c: Call) -> Call {
        self.backoff.reset();
        c.in_flight = Some(self.transmit(c.request.clone()));
        c
    }

    fn resend_if_due(&mut self, now: Timestamp, mut c: Call) -> Call {
        if c.retry_at.is_some_and(|t| t <= now) {
            c.retry_at = None;
            c.in_flight = Some(self.transmit(c.request.clone()));
        }
        c
    }

    /// Schedules `c` again after it failed on `replica`: after the own jittered
    /// backoff, or after the control plane's `advice` (`Retry-After`, spread
    /// over up to half again) when that is longer, bounded by
    /// [`MAX_SERVER_PAUSE`] so a wrong or hostile server cannot park the agent.
    fn retry(
        &mut self,
        now: Timestamp,
        mut c: Call,
        replica: usize,
        error: Error,
        advice: Option<RetryAfter>,
    ) -> Call {
        // The backoff advances either way, so the own delays that follow keep
        // growing as if the advice had not come.
        let own = self.backoff.next_delay();
        // The retry goes to the next replica (see `fail_over`), and still waits
        // what the failed one asked: the replicas share one store, so an
        // overloaded one speaks for all of them under a boot storm, and a rack
        // that skipped the wait would only carry the storm to the next
        // replica. The own backoff spans replicas the same way.
        // Spread, as the own delays are: every agent a shed rack holds would
        // otherwise come back at the same instant.
        let server = advice.map_or(Duration::ZERO, |a| {
            self.backoff
                .spread(a.delay_from(now).min(MAX_SERVER_PAUSE))
                .min(MAX_SERVER_PAUSE)
        });
        let delay = own.max(server);
        self.emit(AgentEvent::Retrying {
            what: c.what,
            replica: self.replicas[replica].clone(),
            error: error.to_string(),
            delay,
        });
        c.in_flight = None;
        c.retry_at = Some(now + delay);
        c
    }

    /// Moves to the next replica after `failed` failed (several calls may fail
    /// at once; only the first of them moves on).
    fn fail_over(&mut self, failed: usize) {
        if self.replicas.len() > 1 && failed == self.current {
            self.current = (self.current + 1) % self.replicas.len();
            self.emit(AgentEvent::FailedOver {
                from: self.replicas[failed].clone(),
                to: self.replicas[self.current].clone(),
            });
        }
    }

    fn transmit(&mut self, request: Request) -> RequestId {
        let id = self.next_id;
        self.next_id += 1;
        self.in_flight.insert(id, self.current);
        self.out.push_back(Output::Send(Transmit {
            id,
            replica: self.replicas[self.current].clone(),
            request,
        }));
        id
    }

    fn emit(&mut self, event: AgentEvent) {
        self.out.push_back(Output::Event(event));
    }

    fn finish(&mut self, result: Result<AgentSummary>) {
        self.phase = Phase::Done;
        self.out.push_back(Output::Done(result));
    }
}

fn heartbeat_every(a: &WorkerAction) -> Duration {
    Duration::from_secs(u64::from(a.heartbeat_seconds.max(1)))
}

/// The runtime's view of an action handed out by the worker API.
pub fn action_spec(a: &WorkerAction) -> ActionSpec {
    ActionSpec {
        workflow: a.workflow_id.clone(),
        name: a.name.clone(),
        image: a.image.clone(),
        command: a.command.clone(),
        environment: a.environment.clone(),
        volumes: a.volumes.clone(),
        pid: a.pid.clone(),
        timeout: a
            .timeout_seconds
            .map(|t| Duration::from_secs(t.min(MAX_ACTION_TIMEOUT.as_secs()))),
    }
}

/// The longest time limit an action is given, whatever the control plane asks
/// (a year): a deadline past the end of the clock's range cannot be computed.
pub const MAX_ACTION_TIMEOUT: Duration = Duration::from_secs(366 * 24 * 3600);

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
