//! tink-agent's side of Tinkerbell's WorkflowService, played by a client
//! generated from Tinkerbell's unchanged protos (PyPI's grpcio-tools compiles
//! their `edition = "2023"`), against our server built from the proto3
//! transcription: the wire format and the answers are Tinkerbell's.
//!
//! Each machine calls from its own loopback address (127.0.0.N, its
//! Hardware's address) through a small forwarder that connects from there, as
//! a machine on the provisioning network would.

use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use tinker_boot::credentials::{AddressCheck, CallerCheck};
use tinker_boot::worker_core::WorkerCore;
use tinker_core::model::{Disk, Hardware, MachineSteps, Template, Workflow};
use tinker_core::state::{ActionState, WorkflowState};
use tinker_core::store::{EventKind, Precondition};
use tinker_core::testing::{mac, require_real};
use tinker_core::{MacAddr, WorkflowStore, WorkflowStoreExt};
use tinker_grpc::{AGENT_ATTRIBUTES, GrpcError, GrpcServer, GrpcStats, NO_ACTION_AVAILABLE};
use tinker_store::MemoryStore;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// The template the agent plays through: task-wide environment and volumes,
/// an action that overrides one variable, one with a command and its own
/// volume, one in the host's PID namespace.
const TEMPLATE: &str = r#"version: "0.1"
name: provision
global_timeout: 1800
tasks:
  - name: os-installation
    worker: "{{.device_1}}"
    volumes:
      - /dev:/dev
      - /statedir:/statedir
    environment:
      SHARED: task
      MIRROR: http://mirror
    actions:
      - name: stream-image
        image: quay.io/tinkerbell/actions/image2disk:latest
        timeout: 600
        environment:
          DEST_DISK: "{{ index .Hardware.Disks 0 }}"
          SHARED: action
      - name: write-file
        image: quay.io/tinkerbell/actions/writefile:latest
        timeout: 90
        command: ["/bin/sh", "-c", "echo hi"]
        volumes:
          - /tmp:/tmp
      - name: reboot
        image: ghcr.io/jacobweinstock/waitdaemon:latest
        timeout: 90
        pid: host
"#;

/// The Python with grpcio-tools and grpcio-status, or `None` (a skip, unless
/// real parts are required).
fn python() -> Option<PathBuf> {
    let venv = std::env::var("TINKER_GRPC_VENV").unwrap_or_else(|_| "/opt/tinker-venv".into());
    let py = PathBuf::from(venv).join("bin/python");
    let ok = std::process::Command::new(&py)
        .args(["-c", "import grpc_tools, grpc_status"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(py);
    }
    assert!(
        !require_real(),
        "{} lacks grpcio-tools/grpcio-status (see .ci/run)",
        py.display()
    );
    eprintln!("skipped: no grpcio-tools in {}", py.display());
    None
}

/// The Python agent: a client generated from Tinkerbell's protos, one JSON
/// request and answer per line.
struct Agent {
    _child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
    _generated: tempfile::TempDir,
}

impl Agent {
    async fn start(py: &PathBuf) -> Agent {
        let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let protos = fixtures.join("tinkerbell-proto");
        let generated = tempfile::tempdir().unwrap();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&protos)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "proto"))
            .collect();
        files.sort();
        assert_eq!(files.len(), 5, "Tinkerbell's five proto files");
        let out = std::process::Command::new(py)
            .args(["-m", "grpc_tools.protoc"])
            .arg(format!("-I{}", protos.display()))
            .arg(format!("--python_out={}", generated.path().display()))
            .arg(format!("--grpc_python_out={}", generated.path().display()))
            .args(&files)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "grpc_tools.protoc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut child = tokio::process::Command::new(py)
            .arg("-u")
            .arg(fixtures.join("tink_agent.py"))
            .arg(generated.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Agent {
            _child: child,
            stdin,
            stdout,
            _generated: generated,
        }
    }

    async fn call(&mut self, request: Value) -> Value {
        let mut line = request.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        let answer = self.stdout.next_line().await.unwrap().expect("an answer");
        serde_json::from_str(&answer).unwrap()
    }

    async fn get(&mut self, target: SocketAddr, agent: &str) -> Value {
        self.call(json!({"op": "get", "target": target.to_string(), "agent_id": agent}))
            .await
    }

    async fn report(&mut self, target: SocketAddr, request: Value) -> Value {
        self.call(json!({"op": "report", "target": target.to_string(), "request": request}))
            .await
    }
}

/// A local port whose connections reach `server` from `from` (a machine's own
/// address).
async fn forward_from(from: Ipv4Addr, server: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
                let mut outbound = socket.connect(server).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    local
}

/// A machine `name` with MAC `mac` at `address`, netboot on, one disk.
async fn machine(store: &dyn WorkflowStore, name: &str, mac: MacAddr, address: Ipv4Addr) {
    let mut hw = Hardware::new(name, mac, address, "255.0.0.0");
    hw.spec.disks.push(Disk {
        device: "/dev/sda".into(),
        extra: Default::default(),
    });
    store.put(hw.into(), Precondition::Any).await.unwrap();
}

/// A workflow `name` of [`TEMPLATE`] for the machine `hw` (MAC `mac`),
/// rendered; `preparing`: the engine has yet to prepare the machine.
async fn workflow(store: &dyn WorkflowStore, name: &str, hw: &str, mac: MacAddr, preparing: bool) {
    let template = Template::new("provision", TEMPLATE);
    let hardware = store.hardware("default", hw).await.unwrap().unwrap().value;
    let mut wf = Workflow::new(name, "provision", hw, mac);
    let mut status = tinker_core::render::instantiate(&wf, &template, Some(&hardware)).unwrap();
    if preparing {
        status.machine = MachineSteps::preparing();
    }
    wf.status = Some(status);
    store.put(wf.into(), Precondition::Any).await.unwrap();
}

async fn serve(store: Arc<dyn WorkflowStore>) -> SocketAddr {
    serve_counted(store).await.0
}

/// [`serve`], with the server's counters.
async fn serve_counted(store: Arc<dyn WorkflowStore>) -> (SocketAddr, Arc<GrpcStats>) {
    let server = GrpcServer::new(WorkerCore::new(store)).unwrap();
    let stats = server.stats();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(server.serve(listener, std::future::pending()));
    (SocketAddr::from(([127, 0, 0, 1], port)), stats)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The report tink-agent sends for `action` (a GetAction answer).
fn report_of(action: &Value, state: &str, message: &str) -> Value {
    json!({
        "workflow_id": action["workflow_id"],
        "agent_id": action["agent_id"],
        "task_id": action["task_id"],
        "action_id": action["action_id"],
        "action_name": action["name"],
        "action_state": state,
        "execution_start": "2026-12-01T10:00:00Z",
        "execution_stop": "2026-12-01T10:00:07Z",
        "execution_duration": "7s",
        "message": {"message": message},
    })
}

async fn workflow_state(store: &dyn WorkflowStore, name: &str) -> WorkflowState {
    store
        .workflow("default", name)
        .await
        .unwrap()
        .unwrap()
        .value
        .state()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tink_agent_runs_a_whole_workflow() {
    let Some(py) = python() else { return };
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let ip = Ipv4Addr::new(127, 0, 0, 11);
    machine(store.as_ref(), "m-a", mac(1), ip).await;
    workflow(store.as_ref(), "wf-a", "m-a", mac(1), false).await;
    let server = serve(store.clone()).await;
    let target = forward_from(ip, server).await;
    let mut agent = Agent::start(&py).await;
    let me = mac(1).to_string();

    // The agent's attributes, as tink-agent detects them.
    let attributes = json!({
        "cpu": {"total_cores": 8, "total_threads": 16,
                "processors": [{"id": 0, "cores": 8, "threads": 16, "vendor": "GenuineIntel", "model": "Xeon"}]},
        "memory": {"total": "64GB", "usable": "62GB"},
        "block": [{"name": "sda", "size": "480GB", "drive_type": "SSD", "serial_number": "S1"}],
        "network": [{"name": "eth0", "mac": me, "speed": "10Gb/s"}],
        "chassis": {"serial": "C1", "vendor": "Dell"},
        "bios": {"vendor": "Dell", "version": "2.1", "release_date": "2025-01-01"},
        "product": {"name": "R650", "vendor": "Dell", "serial_number": "P1"},
    });
    let first = agent
        .call(json!({"op": "get", "target": target.to_string(), "agent_id": me, "attributes": attributes}))
        .await;
    let a0 = first["ok"].clone();
    assert_eq!(a0["workflow_id"], "default/wf-a", "{first}");
    assert_eq!(a0["task_id"], "os-installation");
    assert_eq!(a0["agent_id"], me.as_str());
    assert_eq!(a0["name"], "stream-image");
    assert_eq!(a0["image"], "quay.io/tinkerbell/actions/image2disk:latest");
    // int64 is a string in proto3 JSON.
    assert_eq!(a0["timeout"], "600");
    assert_eq!(
        strings(&a0["environment"]),
        [
            "DEST_DISK=/dev/sda",
            "MIRROR=http://mirror",
            "SHARED=action"
        ],
        "task's and action's, the action wins, sorted K=V"
    );
    assert_eq!(
        strings(&a0["volumes"]),
        ["/dev:/dev", "/statedir:/statedir"]
    );
    assert!(strings(&a0["command"]).is_empty());

    // The inventory is on the Hardware, with Tinkerbell's field names.
    let hw = store
        .hardware("default", "m-a")
        .await
        .unwrap()
        .unwrap()
        .value;
    let kept: Value =
        serde_json::from_str(&hw.metadata.annotations.as_ref().unwrap()[AGENT_ATTRIBUTES]).unwrap();
    assert_eq!(kept["cpu"]["totalCores"], 8);
    assert_eq!(kept["blockDevices"][0]["serialNumber"], "S1");
    assert_eq!(kept["networkInterfaces"][0]["mac"], me.as_str());
    assert_eq!(kept["bios"]["releaseDate"], "2025-01-01");
    assert!(
        kept.get("gpuDevices").is_none(),
        "empty fields left out: {kept}"
    );
    // And the operator API shows it with the machine.
    let operator = tinker_boot::http::HttpServer::new(tinker_boot::http::HttpConfig {
        extra: Some(Arc::new(tinker_boot::http::OperatorApi::new(
            store.clone(),
            tinker_core::Secret::new("operator"),
        ))),
        ..tinker_boot::http::HttpConfig::new(store.clone())
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    tokio::spawn(operator.serve(listener, std::future::pending()));
    let listed = tinker_boot::http::client::request(
        api,
        None,
        tinker_boot::http::client::Method::GET,
        "/api/v1/hardware",
        &[("authorization", "Bearer operator")],
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(listed.status, 200);
    let listed: Value = serde_json::from_str(&listed.text()).unwrap();
    let shown = listed
        .as_array()
        .unwrap()
        .iter()
        .find_map(|o| o["value"]["metadata"]["annotations"][AGENT_ATTRIBUTES].as_str())
        .expect("the operator API shows the agent's attributes");
    assert_eq!(serde_json::from_str::<Value>(shown).unwrap(), kept);

    let ok = |v: &Value| v.get("ok").is_some();
    let r = agent
        .report(target, report_of(&a0, "RUNNING", "running action"))
        .await;
    assert!(ok(&r), "{r}");
    // Asked again while it runs (a restarted agent), it gets the same action.
    let again = agent.get(target, &me).await;
    assert_eq!(again["ok"]["action_id"], a0["action_id"], "{again}");
    let r = agent
        .report(target, report_of(&a0, "SUCCESS", "action completed"))
        .await;
    assert!(ok(&r), "{r}");
    // The same report again (its answer lost): accepted, nothing changes.
    let r = agent
        .report(target, report_of(&a0, "SUCCESS", "action completed"))
        .await;
    assert!(ok(&r), "a repeated report: {r}");

    let a1 = agent.get(target, &me).await["ok"].clone();
    assert_eq!(a1["name"], "write-file");
    assert_eq!(a1["timeout"], "90");
    assert_eq!(strings(&a1["command"]), ["/bin/sh", "-c", "echo hi"]);
    assert_eq!(
        strings(&a1["volumes"]),
        ["/dev:/dev", "/statedir:/statedir", "/tmp:/tmp"],
        "the task's volumes, then the action's"
    );
    assert_eq!(
        strings(&a1["environment"]),
        ["MIRROR=http://mirror", "SHARED=task"]
    );
    for state in ["RUNNING", "SUCCESS"] {
        let r = agent.report(target, report_of(&a1, state, "ok")).await;
        assert!(ok(&r), "{r}");
    }
    let a2 = agent.get(target, &me).await["ok"].clone();
    assert_eq!(a2["name"], "reboot");
    assert_eq!(a2["pid"], "host");
    assert_eq!(a2["namespaces"]["pid"], "host");
    assert_eq!(
        workflow_state(store.as_ref(), "wf-a").await,
        WorkflowState::Running
    );
    for state in ["RUNNING", "SUCCESS"] {
        let r = agent
            .report(target, report_of(&a2, state, "rebooting"))
            .await;
        assert!(ok(&r), "{r}");
    }
    assert_eq!(
        workflow_state(store.as_ref(), "wf-a").await,
        WorkflowState::Success
    );

    // The last action is done: NOT_FOUND, as Tinkerbell answers.
    let done = agent.get(target, &me).await;
    assert_eq!(done["code"], "NOT_FOUND", "{done}");

    // The agent's messages and times are in the machine's timeline.
    let events = store.events("default/m-a", 100).await.unwrap();
    let reports: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ActionReported {
                action_index,
                state,
                message,
                execution_start,
                execution_duration,
                ..
            } => Some((
                *action_index,
                *state,
                message.clone(),
                *execution_start,
                execution_duration.clone(),
            )),
            _ => None,
        })
        .collect();
    // Six: the repeated SUCCESS of the first action was kept once.
    assert_eq!(reports.len(), 6, "{reports:?}");
    assert_eq!(reports[0].0, 0);
    assert_eq!(reports[0].1, ActionState::Running);
    assert_eq!(reports[1].2, "action completed");
    assert_eq!(
        reports[1].3.map(|t| t.to_string()).as_deref(),
        Some("2026-12-01T10:00:00Z")
    );
    assert_eq!(reports[1].4, "7s");
    assert_eq!(reports[5].0, 2);
    assert_eq!(reports[5].1, ActionState::Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_report_ends_the_workflow_failed() {
    let Some(py) = python() else { return };
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let ip = Ipv4Addr::new(127, 0, 0, 12);
    machine(store.as_ref(), "m-f", mac(2), ip).await;
    workflow(store.as_ref(), "wf-f", "m-f", mac(2), false).await;
    let server = serve(store.clone()).await;
    let target = forward_from(ip, server).await;
    let mut agent = Agent::start(&py).await;
    let me = mac(2).to_string();
    let a0 = agent.get(target, &me).await["ok"].clone();
    assert_eq!(a0["name"], "stream-image");
    let r = agent
        .report(target, report_of(&a0, "RUNNING", "running action"))
        .await;
    assert!(r.get("ok").is_some(), "{r}");
    let r = agent
        .report(target, report_of(&a0, "FAILED", "disk /dev/sda not found"))
        .await;
    assert!(r.get("ok").is_some(), "{r}");
    let wf = store
        .workflow("default", "wf-f")
        .await
        .unwrap()
        .unwrap()
        .value;
    let status = wf.status.unwrap();
    assert_eq!(status.state, WorkflowState::Failed);
    assert!(
        status
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("disk /dev/sda not found"),
        "{:?}",
        status.reason
    );
    let next = agent.get(target, &me).await;
    assert_eq!(next["code"], "NOT_FOUND", "{next}");
    // A report after the end changes nothing and is refused for good
    // (tink-agent stops retrying on FAILED_PRECONDITION).
    let late = agent.report(target, report_of(&a0, "SUCCESS", "")).await;
    assert_eq!(late["code"], "FAILED_PRECONDITION", "{late}");
    assert_eq!(
        workflow_state(store.as_ref(), "wf-f").await,
        WorkflowState::Failed
    );
}

/// A TIMEOUT report ends the workflow TIMEOUT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_report_ends_the_workflow_timeout() {
    let Some(py) = python() else { return };
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let ip = Ipv4Addr::new(127, 0, 0, 13);
    machine(store.as_ref(), "m-t", mac(3), ip).await;
    workflow(store.as_ref(), "wf-t", "m-t", mac(3), false).await;
    let server = serve(store.clone()).await;
    let target = forward_from(ip, server).await;
    let mut agent = Agent::start(&py).await;
    let me = mac(3).to_string();
    let a0 = agent.get(target, &me).await["ok"].clone();
    for state in ["RUNNING", "TIMEOUT"] {
        let r = agent
            .report(target, report_of(&a0, state, "deadline exceeded"))
            .await;
        assert!(r.get("ok").is_some(), "{r}");
    }
    assert_eq!(
        workflow_state(store.as_ref(), "wf-t").await,
        WorkflowState::Timeout
    );
}

/// No action, an unknown agent, another machine's workflow, the wrong
/// address: each answered as Tinkerbell would, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_answer_as_tinkerbell_does() {
    let Some(py) = python() else { return };
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let (ip_a, ip_b, ip_c) = (
        Ipv4Addr::new(127, 0, 0, 21),
        Ipv4Addr::new(127, 0, 0, 22),
        Ipv4Addr::new(127, 0, 0, 23),
    );
    machine(store.as_ref(), "m-a", mac(11), ip_a).await;
    machine(store.as_ref(), "m-b", mac(12), ip_b).await;
    machine(store.as_ref(), "m-c", mac(13), ip_c).await;
    workflow(store.as_ref(), "wf-b", "m-b", mac(12), false).await;
    workflow(store.as_ref(), "wf-c", "m-c", mac(13), true).await;
    let (server, stats) = serve_counted(store.clone()).await;
    let (from_a, from_b, from_c) = (
        forward_from(ip_a, server).await,
        forward_from(ip_b, server).await,
        forward_from(ip_c, server).await,
    );
    let mut agent = Agent::start(&py).await;
    let (a, b, c) = (
        mac(11).to_string(),
        mac(12).to_string(),
        mac(13).to_string(),
    );

    // An agent id no machine has.
    let r = agent.get(from_a, &mac(99).to_string()).await;
    assert_eq!(r["code"], "NOT_FOUND", "{r}");
    // A machine with no workflow.
    let r = agent.get(from_a, &a).await;
    assert_eq!(r["code"], "NOT_FOUND", "{r}");
    // A workflow whose machine is being prepared: FAILED_PRECONDITION with
    // the violation tink-agent looks for.
    let r = agent.get(from_c, &c).await;
    assert_eq!(r["code"], "FAILED_PRECONDITION", "{r}");
    assert_eq!(r["violations"], json!([NO_ACTION_AVAILABLE]), "{r}");
    // Machine A's address asking as machine B: answered as an unknown agent
    // (nothing learnt of which machines exist), and counted.
    let r = agent.get(from_a, &b).await;
    assert_eq!(r["code"], "NOT_FOUND", "{r}");

    // B takes its first action.
    let b0 = agent.get(from_b, &b).await["ok"].clone();
    assert_eq!(b0["workflow_id"], "default/wf-b");
    // A reports on B's action as itself: not its action.
    let mut as_a = report_of(&b0, "FAILED", "sabotage");
    as_a["agent_id"] = json!(a);
    let r = agent.report(from_a, as_a).await;
    assert_eq!(r["code"], "NOT_FOUND", "{r}");
    // A reports on B's action as B: the wrong address.
    let r = agent
        .report(from_a, report_of(&b0, "FAILED", "sabotage"))
        .await;
    assert_eq!(r["code"], "NOT_FOUND", "{r}");
    // A report of a claim that is not the current one.
    let mut stale = report_of(&b0, "SUCCESS", "");
    stale["action_id"] = json!("0-7");
    let r = agent.report(from_b, stale).await;
    assert_eq!(r["code"], "FAILED_PRECONDITION", "{r}");
    // PENDING is no report.
    let r = agent.report(from_b, report_of(&b0, "PENDING", "")).await;
    assert_eq!(r["code"], "INVALID_ARGUMENT", "{r}");
    let wf = store
        .workflow("default", "wf-b")
        .await
        .unwrap()
        .unwrap()
        .value;
    let status = wf.status.unwrap();
    assert_eq!(status.state, WorkflowState::Running, "nothing changed");
    assert_eq!(status.tasks[0].actions[0].state, ActionState::Running);
    assert_eq!(
        stats
            .wrong_address
            .load(std::sync::atomic::Ordering::Relaxed),
        2,
        "each call from the wrong address is counted"
    );
    let events = store.events("default/m-b", 100).await.unwrap();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.kind, EventKind::ActionReported { .. })),
        "refused reports leave no trace in the timeline: {events:?}"
    );
}

/// Behind NAT every caller has one address, so nothing tells agents apart:
/// the service refuses to start.
#[test]
fn the_service_refuses_to_start_behind_nat() {
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let core = WorkerCore::new(store).with_caller_check(CallerCheck {
        mode: AddressCheck::BehindNat,
        ..CallerCheck::default()
    });
    let err = GrpcServer::new(core).unwrap_err();
    assert!(matches!(err, GrpcError::BehindNat));
    assert!(err.to_string().contains("NAT"), "{err}");
}

/// Server reflection is on, as Tinkerbell has it: `grpcurl` and friends list
/// the service and read its messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_describes_the_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let server = serve(store).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{server}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let ask = |m| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    let requests = tokio_stream::iter([
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol(
            "proto.WorkflowService".into(),
        )),
    ]);
    let mut answers = client
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"proto.WorkflowService"), "{names:?}");
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("no descriptor for proto.WorkflowService")
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

/// tink-agent brings no token, so only the Hardware's own address proves it
/// is the machine: an address learnt from a DHCP REQUEST in proxyDHCP mode
/// (anyone can send one with another machine's MAC) is not taken for it.
/// Before, a host that forged a REQUEST with a victim's MAC got the victim's
/// actions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_learnt_from_dhcp_is_not_an_agents_proof() {
    use tinker_grpc::proto::ActionRequest;
    use tinker_grpc::proto::workflow_service_client::WorkflowServiceClient;
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let victim = mac(0x61);
    machine(
        store.as_ref(),
        "victim",
        victim,
        Ipv4Addr::new(127, 61, 0, 1),
    )
    .await;
    workflow(store.as_ref(), "wf-victim", "victim", victim, false).await;
    let forger = Ipv4Addr::new(127, 61, 0, 9);
    let callers = CallerCheck::default();
    // What a forged REQUEST with the victim's MAC leaves in proxyDHCP mode.
    callers.observed.record(victim, IpAddr::V4(forger));
    let core = WorkerCore::new(store.clone()).with_caller_check(callers);
    let server = GrpcServer::new(core).unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(server.serve(listener, std::future::pending()));
    let ask = |from: Ipv4Addr| async move {
        let local = forward_from(from, SocketAddr::from(([127, 0, 0, 1], port))).await;
        let mut client = WorkflowServiceClient::connect(format!("http://{local}"))
            .await
            .unwrap();
        client
            .get_action(ActionRequest {
                agent_id: Some(victim.to_string()),
                agent_attributes: None,
            })
            .await
    };
    let refused = ask(forger).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    // The machine's own address gets its action.
    let action = ask(Ipv4Addr::new(127, 61, 0, 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(action.workflow_id.as_deref(), Some("default/wf-victim"));
}
