//! Operators act on workflows through the real parts: a control plane (store,
//! engine, HTTP operator and worker APIs), the `tinker` command line, and the
//! worker agent running actions natively or in a real Docker engine (its image
//! made with `docker import`). An action with `retries` that fails once; a
//! cancel that stops a hanging native action and a hanging container; a retry
//! that resumes from the failed action and a re-run that starts afresh, each
//! keeping the earlier execution's history.

#[path = "support/common.rs"]
mod common;
use common::{require_real, sh};

use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tinker::actions::agent::{
    Agent, AgentConfig, AgentEvent, AgentSummary, EventSink, RuntimeRouter,
};
use tinker::actions::{DockerRuntime, NativeRuntime};
use tinker::boot::credentials::{operator_token, worker_token};
use tinker::control_plane::{ControlPlane, Listeners};
use tinker::core::model::{Hardware, Restart, Template, Workflow};
use tinker::core::runtime::ActionRuntime;
use tinker::core::state::{ActionState, WorkflowState};
use tinker::core::{MacAddr, Precondition, Secret, WorkflowStore, WorkflowStoreExt};
use tinker::store::RedbStore;

const SECRET: &str = "operator-acts-secret";
const MAC: &str = "02:00:00:00:16:01";

struct Plane {
    server: String,
    store: Arc<dyn WorkflowStore>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Plane {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A control plane on loopback over an embedded store, with a machine `m1`
/// (no BMC) at 127.0.0.1 and a workflow `wf1` of `template` for it.
async fn plane(template: &str) -> Plane {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn WorkflowStore> = Arc::new(
        RedbStore::open(dir.path().join("tinker.redb"))
            .await
            .unwrap(),
    );
    let listeners = Listeners::bind(Ipv4Addr::LOCALHOST, 0, 0, 0).await.unwrap();
    let server = format!("http://{}", listeners.http_addr().unwrap());
    let plane = ControlPlane::new(
        store.clone(),
        Arc::new(tinker::bmc::MockConnector::new()),
        Ipv4Addr::LOCALHOST,
        Secret::new(SECRET),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(plane.serve(listeners, async {
        let _ = stopped.await;
    }));
    let mut hw = Hardware::new(
        "m1",
        MAC.parse::<MacAddr>().unwrap(),
        "127.0.0.1".parse().unwrap(),
        "255.0.0.0",
    );
    hw.set_allow_pxe(false);
    store.put(hw.into(), Precondition::Absent).await.unwrap();
    store
        .put(Template::new("t1", template).into(), Precondition::Absent)
        .await
        .unwrap();
    let wf = Workflow::new("wf1", "t1", "m1", MAC.parse().unwrap());
    store.put(wf.into(), Precondition::Absent).await.unwrap();
    Plane {
        server,
        store,
        stop: Some(stop),
        _dir: dir,
    }
}

/// A template of one task for the machine with these actions (YAML lines).
fn template(actions: &str) -> String {
    format!(
        "version: \"0.1\"\nname: t\ntasks:\n  - name: a\n    worker: \"{{{{.device_1}}}}\"\n    actions:\n{actions}"
    )
}

/// The token the machine's boot script carries for its netboot; a netboot
/// newer than `after`, when given (a re-run turns netboot on again).
async fn machine_token(store: &dyn WorkflowStore, after: Option<&str>) -> Secret {
    for _ in 0..600 {
        let hw = store
            .hardware("default", "m1")
            .await
            .unwrap()
            .unwrap()
            .value;
        if hw.allows_pxe() && after.is_none_or(|t| hw.netboot_since() != t) {
            return worker_token(&Secret::new(SECRET), MAC, hw.netboot_since());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the engine never turned the machine's netboot on");
}

/// The agent's events, in order, with the test's clock reading at each.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<(std::time::Instant, AgentEvent)>>);

impl EventSink for Recorder {
    fn event(&self, event: &AgentEvent) {
        self.0
            .lock()
            .unwrap()
            .push((std::time::Instant::now(), event.clone()));
    }
}

impl Recorder {
    fn events(&self) -> Vec<(std::time::Instant, AgentEvent)> {
        self.0.lock().unwrap().clone()
    }
}

/// Our agent on the machine: native actions, and Docker when there is one.
async fn agent(
    server: &str,
    token: Secret,
    config: impl FnOnce(AgentConfig) -> AgentConfig,
    events: Arc<Recorder>,
) -> tokio::task::JoinHandle<AgentSummary> {
    let docker: Option<Arc<dyn ActionRuntime>> = DockerRuntime::connect()
        .await
        .ok()
        .map(|d| Arc::new(d) as Arc<dyn ActionRuntime>);
    let runtime = Arc::new(RuntimeRouter {
        native: NativeRuntime::new(),
        containers: docker,
    });
    let config = config(
        AgentConfig::new(server, MAC, token)
            .with_max_backoff(Duration::from_millis(500))
            .with_poll_interval(Duration::from_millis(200)),
    );
    let a = Agent::new(config, runtime, Some(NativeRuntime::new())).with_events(events);
    tokio::spawn(async move { a.run(std::future::pending()).await.unwrap() })
}

/// The workflow once `done` holds (a minute at most: a fail-safe, not a measure).
async fn wait_for(store: &dyn WorkflowStore, done: impl Fn(&Workflow) -> bool) -> Workflow {
    for _ in 0..1200 {
        let wf = store
            .workflow("default", "wf1")
            .await
            .unwrap()
            .unwrap()
            .value;
        if done(&wf) {
            return wf;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the workflow never got there");
}

fn ended(wf: &Workflow) -> bool {
    wf.state().is_some_and(|s| s.is_terminal())
}

/// Runs `tinker ARGS` with the server and token in the environment.
async fn tinker(server: &str, args: &[&str]) -> Output {
    let token = operator_token(&Secret::new(SECRET)).expose().to_string();
    let server = server.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tinker"))
            .args(&args)
            .env("TINKER_SERVER", server)
            .env("TINKER_TOKEN", token)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_action_with_retries_fails_once_then_succeeds_with_both_attempts_visible() {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("tried");
    let p = plane(&template(&format!(
        "      - name: flaky\n        image: tinker/exec\n        timeout: 60\n        retries: 2\n        command: [sh, -c, \"if [ -e {m} ]; then echo second try works; else touch {m}; echo first try fails >&2; exit 3; fi\"]\n",
        m = mark.display()
    )))
    .await;
    let token = machine_token(p.store.as_ref(), None).await;
    let events = Arc::new(Recorder::default());
    let run = agent(&p.server, token, |c| c.with_max_actions(2), events.clone()).await;
    let summary = run.await.unwrap();
    let wf = wait_for(p.store.as_ref(), ended).await;
    let s = wf.status.unwrap();
    assert_eq!(s.state, WorkflowState::Success, "{:?}", s.reason);
    let (_, a) = s.action(0).unwrap();
    let kept: Vec<(u32, ActionState)> = a.attempts.iter().map(|r| (r.attempt, r.state)).collect();
    assert_eq!(
        kept,
        vec![(1, ActionState::Failed), (2, ActionState::Success)],
        "both attempts kept, in order"
    );
    assert!(
        a.attempts[0]
            .message
            .as_deref()
            .unwrap()
            .contains("exit code 3"),
        "{:?}",
        a.attempts[0]
    );
    assert_eq!(summary.ran.len(), 2, "the agent ran it twice: {summary:?}");

    // The operator API's JSON carries the attempts; `describe` shows them.
    let json = tinker(&p.server, &["get", "workflow", "wf1", "-o", "json"]).await;
    let listed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let attempts = &listed[0]["value"]["status"]["tasks"][0]["actions"][0]["attempts"];
    assert_eq!(attempts[0]["attempt"], 1, "{attempts}");
    assert_eq!(attempts[0]["state"], "FAILED");
    assert_eq!(attempts[1]["attempt"], 2);
    assert_eq!(attempts[1]["state"], "SUCCESS");
    let described = tinker(&p.server, &["describe", "workflow", "wf1"]).await;
    let text = out(&described);
    assert!(described.status.success(), "{text}");
    assert!(text.contains("attempt 1 FAILED"), "{text}");
    assert!(text.contains("attempt 2 SUCCESS"), "{text}");
    // Each attempt's output is in the machine's log.
    let logs = out(&tinker(&p.server, &["logs", "wf1"]).await);
    assert!(
        logs.contains("first try fails") && logs.contains("second try works"),
        "{logs}"
    );
}

/// Cancels the running workflow through the CLI once `running` says the
/// action is under way; returns the agent's events and the workflow.
async fn cancel_when(
    p: &Plane,
    running: impl Fn() -> bool,
) -> (Vec<(std::time::Instant, AgentEvent)>, Workflow, Vec<String>) {
    let token = machine_token(p.store.as_ref(), None).await;
    let events = Arc::new(Recorder::default());
    let run = agent(&p.server, token, |c| c.with_max_actions(1), events.clone()).await;
    for _ in 0..1200 {
        if running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(running(), "the action never started");
    let cancelled_at = std::time::Instant::now();
    let cancel = tinker(&p.server, &["cancel", "workflow", "wf1"]).await;
    assert!(cancel.status.success(), "{}", out(&cancel));
    assert!(out(&cancel).contains("cancelled"), "{}", out(&cancel));
    let summary = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the agent stopped the action and went on")
        .unwrap();
    let wf = wait_for(p.store.as_ref(), ended).await;
    let events = events.events();
    if let Some((at, _)) = events
        .iter()
        .find(|(_, e)| matches!(e, AgentEvent::StoppedByControlPlane { .. }))
    {
        eprintln!(
            "the agent heard of the cancel {:?} after it was sent",
            at.saturating_duration_since(cancelled_at)
        );
    }
    (events, wf, summary.ran)
}

/// The cancel's effects every runtime shares: the agent heard it at a heartbeat
/// and only then did the action end (stopped, not run out); its report was
/// refused; the workflow is FAILED, cancelled by the operator, and the cancel's
/// record says the worker heard (so the engine leaves the power alone).
fn assert_cancelled(events: &[(std::time::Instant, AgentEvent)], wf: &Workflow) {
    let kinds: Vec<&AgentEvent> = events.iter().map(|(_, e)| e).collect();
    let heard = kinds
        .iter()
        .position(|e| matches!(e, AgentEvent::StoppedByControlPlane { .. }))
        .expect("the agent heard of the cancel at a heartbeat");
    let ended = kinds
        .iter()
        .position(|e| matches!(e, AgentEvent::ActionEnded { .. }))
        .expect("the action ended");
    assert!(
        heard < ended,
        "the action ended because of the cancel: {kinds:?}"
    );
    match kinds[ended] {
        AgentEvent::ActionEnded { outcome, .. } => assert!(
            format!("{outcome:?}").contains("stopped by the control plane"),
            "{outcome:?}"
        ),
        _ => unreachable!(),
    }
    assert!(
        kinds[ended..]
            .iter()
            .any(|e| matches!(e, AgentEvent::ReportRefused { .. })),
        "the report of a cancelled action is refused: {kinds:?}"
    );
    let s = wf.status.as_ref().unwrap();
    assert_eq!(s.state, WorkflowState::Failed);
    assert_eq!(s.reason.as_deref(), Some("cancelled by operator"));
    let c = s.cancelled.as_ref().unwrap();
    assert_eq!(c.by, "operator");
    assert!(c.acknowledged.is_some(), "our agent heard: {c:?}");
    assert_eq!(s.action(0).unwrap().1.state, ActionState::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_stops_a_hanging_native_action() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let p = plane(&template(&format!(
        "      - name: hangs\n        image: tinker/exec\n        timeout: 600\n        command: [sh, -c, \"echo $$ > {f}; exec sleep 600\"]\n",
        f = pidfile.display()
    )))
    .await;
    let pid = || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
    };
    // The action's process, while it is the one the action started.
    let alive = |pid: u32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("600"))
    };
    let (events, wf, ran) = cancel_when(&p, || pid().is_some_and(alive)).await;
    let pid = pid().unwrap();
    assert!(!alive(pid), "the action's process {pid} is gone");
    assert_eq!(ran.len(), 1);
    assert_cancelled(&events, &wf);
}

fn docker_ready() -> bool {
    let ok = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !require_real(),
            "a Docker engine is required (TINKER_REQUIRE_REAL=1)"
        );
        eprintln!("skipped: needs a Docker engine");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_stops_a_hanging_container_action() {
    if !docker_ready() {
        return;
    }
    // The image the template names, made locally (no registry).
    sh(
        "docker image inspect tinker-test/busybox:1 >/dev/null 2>&1 || (d=$(mktemp -d) && cd $d && apt-get download busybox-static >/dev/null && dpkg -x busybox-static_*.deb x && mkdir -p root/bin && cp x/bin/busybox root/bin/ && for a in sh echo cat sleep; do ln -s busybox root/bin/$a; done && tar -C root -c . | docker import - tinker-test/busybox:1 >/dev/null)",
    );
    let p = plane(&template(
        "      - name: hangs-in-docker\n        image: tinker-test/busybox:1\n        timeout: 600\n        command: [sleep, \"600\"]\n",
    ))
    .await;
    // Containers of this action (the runtime names them after the workflow
    // and the action), running or not.
    let containers = |all: bool| {
        let flag = if all { "-aq" } else { "-q" };
        let o = Command::new("docker")
            .args([
                "ps",
                flag,
                "--filter",
                "name=tinker-default-wf1-hangs-in-docker",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let (events, wf, _) = cancel_when(&p, || !containers(false).is_empty()).await;
    assert_eq!(containers(true), "", "the container is stopped and removed");
    assert_cancelled(&events, &wf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_resumes_from_the_failed_action_and_a_rerun_starts_afresh_keeping_history() {
    let dir = tempfile::tempdir().unwrap();
    let (counter, mark) = (dir.path().join("runs"), dir.path().join("mark"));
    let p = plane(&template(&format!(
        "      - name: first\n        image: tinker/exec\n        timeout: 60\n        command: [sh, -c, \"echo first >> {c}\"]\n      - name: second\n        image: tinker/exec\n        timeout: 60\n        command: [sh, -c, \"echo second >> {c}; if [ -e {m} ]; then exit 0; fi; touch {m}; exit 5\"]\n",
        c = counter.display(),
        m = mark.display()
    )))
    .await;
    let token = machine_token(p.store.as_ref(), None).await;
    let events = Arc::new(Recorder::default());
    let run = agent(&p.server, token, |c| c, events.clone()).await;
    let wf = wait_for(p.store.as_ref(), ended).await;
    assert_eq!(wf.state(), Some(WorkflowState::Failed));

    // Refused while it is not finished, and without a JSON content type.
    let addr: std::net::SocketAddr = p.server.trim_start_matches("http://").parse().unwrap();
    let auth = format!("Bearer {}", operator_token(&Secret::new(SECRET)).expose());
    let form = tinker::boot::http::client::request(
        addr,
        None,
        tinker::boot::http::client::Method::POST,
        "/api/v1/workflows/default/wf1/retry",
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(form.status, 415, "a form post (CSRF) is refused");
    let post = |path: &'static str, auth: Option<String>, body: &'static str| async move {
        let mut headers = vec![("content-type", "application/json".to_string())];
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        tinker::boot::http::client::request(
            addr,
            None,
            tinker::boot::http::client::Method::POST,
            path,
            &headers,
            body.as_bytes().to_vec(),
        )
        .await
        .unwrap()
    };
    let anonymous = post("/api/v1/workflows/default/wf1/retry", None, "{}").await;
    assert_eq!(anonymous.status, 401, "the operator API's authentication");
    let unknown = post(
        "/api/v1/workflows/default/wf1/retry",
        Some(auth.clone()),
        r#"{"action": "no-such-action"}"#,
    )
    .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    let missing = post(
        "/api/v1/workflows/default/nope/cancel",
        Some(auth.clone()),
        "",
    )
    .await;
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert_eq!(
        p.store
            .workflow("default", "wf1")
            .await
            .unwrap()
            .unwrap()
            .value
            .state(),
        Some(WorkflowState::Failed),
        "nothing refused changed the workflow"
    );

    let retried = tinker(&p.server, &["retry", "workflow", "wf1"]).await;
    assert!(retried.status.success(), "{}", out(&retried));
    let wf = wait_for(p.store.as_ref(), |w| {
        w.state() == Some(WorkflowState::Success)
    })
    .await;
    run.abort();
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap(),
        "first\nsecond\nsecond\n",
        "the retry resumed from the failed action; the success before it stood"
    );
    let s = wf.status.unwrap();
    assert_eq!(s.execution, 2);
    let first = &s.executions[0];
    assert_eq!(first.state, WorkflowState::Failed);
    assert!(first.reason.as_deref().unwrap().contains("exit code 5"));
    assert_eq!(first.restart, Restart::Retry { from: 1 });
    assert_eq!(first.restarted_by, "operator");
    assert_eq!(first.actions[1].attempts[0].state, ActionState::Failed);
    assert_eq!(s.action(0).unwrap().1.attempts.len(), 1, "not run again");

    // A re-run of the finished workflow: netboot on again (the machine boots
    // its in-memory OS again, with a new token), every action again.
    let since = p
        .store
        .hardware("default", "m1")
        .await
        .unwrap()
        .unwrap()
        .value
        .netboot_since()
        .to_string();
    let wf = wait_for(p.store.as_ref(), |w| {
        w.status.as_ref().is_some_and(|s| {
            s.machine.phase == tinker::core::model::MachinePhase::Rebooted
                || s.machine.no_bmc
                    && s.machine.phase == tinker::core::model::MachinePhase::NetbootDisabled
        })
    })
    .await;
    assert_eq!(wf.state(), Some(WorkflowState::Success));
    let rerun = tinker(&p.server, &["rerun", "workflow", "wf1"]).await;
    assert!(rerun.status.success(), "{}", out(&rerun));
    assert!(out(&rerun).contains("execution 3"), "{}", out(&rerun));
    let again = tinker(&p.server, &["rerun", "workflow", "wf1"]).await;
    assert!(!again.status.success(), "a running workflow is not re-run");
    assert!(
        out(&again).contains("only a finished workflow"),
        "{}",
        out(&again)
    );
    let token = machine_token(p.store.as_ref(), Some(&since)).await;
    let run = agent(&p.server, token, |c| c, Arc::new(Recorder::default())).await;
    let wf = wait_for(p.store.as_ref(), |w| {
        w.state() == Some(WorkflowState::Success)
    })
    .await;
    run.abort();
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap(),
        "first\nsecond\nsecond\nfirst\nsecond\n"
    );
    let s = wf.status.unwrap();
    assert_eq!(s.execution, 3);
    assert_eq!(s.executions.len(), 2, "both earlier executions kept");
    assert_eq!(s.executions[1].state, WorkflowState::Success);
    assert_eq!(s.executions[1].restart, Restart::Rerun);
    let described = out(&tinker(&p.server, &["describe", "workflow", "wf1"]).await);
    assert!(described.contains("Execution: 3"), "{described}");
    assert!(described.contains("Earlier executions:"), "{described}");
    assert!(described.contains("#1 FAILED"), "{described}");
    assert!(described.contains("#2 SUCCESS"), "{described}");

    // A retry from a named action of a workflow that succeeded.
    let named = tinker(&p.server, &["retry", "workflow", "wf1", "second"]).await;
    assert!(named.status.success(), "{}", out(&named));
    let s = p
        .store
        .workflow("default", "wf1")
        .await
        .unwrap()
        .unwrap()
        .value
        .status
        .unwrap();
    assert_eq!(s.execution, 4);
    assert_eq!(s.executions[2].restart, Restart::Retry { from: 1 });
    assert_eq!(s.action(0).unwrap().1.state, ActionState::Success);
    assert_eq!(s.action(1).unwrap().1.state, ActionState::Pending);
}
