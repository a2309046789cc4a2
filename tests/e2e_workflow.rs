//! A workflow end to end, with the real parts: the embedded store, the engine (a
//! mock BMC), our HTTP server hosting assets and the worker API, the worker agent,
//! a real Docker engine and real loop devices. A Tinkerbell template with a Docker
//! action, native image2disk (the image brings a partition table) and native
//! writefile into the ext4 partition it brought; then a failing action, a hanging
//! one, and a control plane restarted in the middle.

#[path = "support/common.rs"]
mod common;
use common::{require_real, sh};

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tinker::actions::agent::{Agent, AgentConfig, RuntimeRouter};
use tinker::actions::{DockerRuntime, NativeRuntime};
use tinker::bmc::{MockBmc, StaticConnector};
use tinker::boot::http::{HttpConfig, HttpServer};
use tinker::boot::tftp::FileSource;
use tinker::boot::worker_api::WorkerApi;
use tinker::core::engine::{Engine, EngineConfig};
use tinker::core::model::{Hardware, Template, Workflow};
use tinker::core::runtime::ActionRuntime;
use tinker::core::state::WorkflowState;
use tinker::core::{MacAddr, Precondition, Secret, WorkflowStore, WorkflowStoreExt};
use tinker::store::RedbStore;

const MAC: &str = "02:00:00:00:77:01";
const SECRET: &str = "test-secret";

fn ready() -> bool {
    let ok = Command::new("sh").args(["-c", "[ \"$(id -u)\" = 0 ] && command -v losetup && command -v sfdisk && command -v mkfs.ext4 && docker info"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !require_real(),
            "root, loop devices and a Docker engine are required (TINKER_REQUIRE_REAL=1)"
        );
        eprintln!("skipped: needs root, loop devices and Docker");
    }
    ok
}

/// The control plane: store, engine, HTTP (assets + worker API), on a port.
struct ControlPlane {
    store: Arc<dyn WorkflowStore>,
    stop: tokio::sync::watch::Sender<bool>,
}

async fn control_plane(db: &std::path::Path, assets: &std::path::Path, port: u16) -> ControlPlane {
    control_plane_with_grace(db, assets, port, 30).await
}

async fn control_plane_with_grace(
    db: &std::path::Path,
    assets: &std::path::Path,
    port: u16,
    grace: i64,
) -> ControlPlane {
    // A restarted control plane opens the file once the old one has let go.
    let mut tries = 0;
    let store: Arc<dyn WorkflowStore> = loop {
        match RedbStore::open(db).await {
            Ok(s) => break Arc::new(s),
            Err(e) if tries < 100 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let power = Arc::new(StaticConnector::new());
    power.insert("m1", Arc::new(MockBmc::new("m1")));
    let engine = Engine::new(
        store.clone(),
        power,
        EngineConfig {
            heartbeat_grace_seconds: Some(grace),
            ..Default::default()
        },
    );
    let (stop, rx) = tokio::sync::watch::channel(false);
    let mut rx2 = rx.clone();
    tokio::spawn(async move {
        let _ = engine
            .run(async move {
                let _ = rx2.changed().await;
            })
            .await;
    });
    let http = HttpServer::new(HttpConfig {
        assets: Some(FileSource::directory(assets).unwrap()),
        extra: Some(Arc::new(WorkerApi::new(
            store.clone(),
            Secret::new(SECRET),
            1,
        ))),
        ..HttpConfig::new(store.clone())
    });
    let listener = loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let mut rx3 = rx;
    tokio::spawn(http.serve(listener, async move {
        let _ = rx3.changed().await;
    }));
    ControlPlane { store, stop }
}

/// The token the machine's boot script would carry: derived for the netboot the
/// engine turned on (so it waits for that).
async fn machine_token(store: &dyn WorkflowStore) -> Secret {
    for _ in 0..600 {
        let hw = store
            .hardware_by_mac(MAC.parse().unwrap())
            .await
            .unwrap()
            .expect("the machine's Hardware")
            .value;
        if hw.allows_pxe() {
            return tinker::boot::credentials::worker_token(
                &Secret::new(SECRET),
                MAC,
                hw.netboot_since(),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the engine never turned the machine's netboot on");
}

async fn agent(token: Secret, port: u16, idle: Duration) -> tinker::actions::agent::AgentSummary {
    let docker: Option<Arc<dyn ActionRuntime>> = DockerRuntime::connect()
        .await
        .ok()
        .map(|d| Arc::new(d) as Arc<dyn ActionRuntime>);
    let runtime = Arc::new(RuntimeRouter {
        native: NativeRuntime::new(),
        containers: docker,
    });
    let a = Agent::new(
        AgentConfig::new(format!("http://127.0.0.1:{port}"), MAC, token)
            .with_max_backoff(Duration::from_millis(500))
            .with_idle_exit(idle),
        runtime,
        Some(NativeRuntime::new()),
    );
    a.run(std::future::pending()).await.unwrap()
}

/// Detaches a loop device when the test ends, however it ends.
struct Detach(String);

impl Drop for Detach {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).output();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn setup(store: &dyn WorkflowStore, template: &str, map: &[(&str, &str)]) {
    let mut hw = Hardware::new(
        "m1",
        MAC.parse::<MacAddr>().unwrap(),
        "127.0.0.1".parse().unwrap(),
        "255.0.0.0",
    );
    hw.set_allow_pxe(false);
    store.put(hw.into(), Precondition::Any).await.unwrap();
    store
        .put(Template::new("t1", template).into(), Precondition::Any)
        .await
        .unwrap();
    let mut wf = Workflow::new("wf1", "t1", "m1", MAC.parse().unwrap());
    for (k, v) in map {
        wf.spec.hardware_map.insert(k.to_string(), v.to_string());
    }
    store.put(wf.into(), Precondition::Absent).await.unwrap();
}

async fn wait_end(store: &dyn WorkflowStore) -> Workflow {
    for _ in 0..600 {
        let wf = store
            .workflow("default", "wf1")
            .await
            .unwrap()
            .unwrap()
            .value;
        if wf.state().is_some_and(|s| s.is_terminal()) {
            return wf;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the workflow did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tinkerbell_template_installs_onto_a_loop_device() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    // The OS image: a partition table and an ext4 partition, gzip-compressed.
    sh(&format!(
        "truncate -s 24M {d}/os.img && echo ',,L' | sfdisk -q {d}/os.img && L=$(losetup -fP --show {d}/os.img) && (for i in $(seq 50); do [ -b ${{L}}p1 ] && break; sleep 0.1; done; [ -b ${{L}}p1 ] || partx -a $L) && mkfs.ext4 -q -F ${{L}}p1 >/dev/null && losetup -d $L && mkdir -p {d}/assets && gzip -c {d}/os.img > {d}/assets/os.img.gz"
    ));
    sh(&format!("truncate -s 32M {d}/target.img"));
    let target = sh(&format!("losetup -fP --show {d}/target.img"));
    let _detach = Detach(target.clone());
    let port = free_port();
    let cp = control_plane(
        &dir.path().join("tinker.redb"),
        &dir.path().join("assets"),
        port,
    )
    .await;
    let template = format!(
        r#"version: "0.1"
name: install
global_timeout: 600
tasks:
  - name: os-installation
    worker: "{{{{.device_1}}}}"
    volumes:
      - /dev:/dev
    actions:
      - name: hello-from-docker
        image: tinker-test/busybox:1
        timeout: 120
        command: ["sh", "-c", "echo docker says $GREETING"]
        environment:
          GREETING: hi
      - name: stream-image
        image: quay.io/tinkerbell/actions/image2disk:latest
        timeout: 120
        environment:
          DEST_DISK: "{{{{.disk}}}}"
          IMG_URL: "http://127.0.0.1:{port}/assets/os.img.gz"
          COMPRESSED: true
      - name: add-cloud-init-config
        image: quay.io/tinkerbell/actions/writefile:latest
        timeout: 90
        environment:
          DEST_DISK: "{{{{ formatPartition .disk 1 }}}}"
          FS_TYPE: ext4
          DEST_PATH: /etc/cloud/cloud.cfg.d/10_tinkerbell.cfg
          CONTENTS: |
            datasource: Ec2
          UID: 0
          GID: 0
          MODE: 0600
          DIRMODE: 0700
"#
    );
    setup(cp.store.as_ref(), &template, &[("disk", &target)]).await;
    // The docker image the template names, made locally.
    sh(
        "docker image inspect tinker-test/busybox:1 >/dev/null 2>&1 || (d=$(mktemp -d) && cd $d && apt-get download busybox-static >/dev/null && dpkg -x busybox-static_*.deb x && mkdir -p root/bin && cp x/bin/busybox root/bin/ && for a in sh echo cat sleep; do ln -s busybox root/bin/$a; done && tar -C root -c . | docker import - tinker-test/busybox:1 >/dev/null)",
    );
    let summary = agent(
        machine_token(cp.store.as_ref()).await,
        port,
        Duration::from_secs(3),
    )
    .await;
    let wf = wait_end(cp.store.as_ref()).await;
    let status = wf.status.clone().unwrap();
    let _ = cp.stop.send(true);
    assert_eq!(
        status.state,
        WorkflowState::Success,
        "{:?}\n{summary:?}",
        status.reason
    );
    assert_eq!(summary.ran.len(), 3, "each action once: {summary:?}");
    // The bytes on the disk are the image's (up to its partition, which writefile
    // has changed since); the file is there, with its mode.
    let head = |f: &str| sh(&format!("head -c 1048576 {f} | sha256sum | cut -d' ' -f1"));
    assert_eq!(
        head(&target),
        head(&format!("{d}/os.img")),
        "partition table and boot area"
    );
    let m = tempfile::tempdir().unwrap();
    let mp = m.path().display();
    let file = sh(&format!(
        "mount {target}p1 {mp} && stat -c '%a %u %g' {mp}/etc/cloud/cloud.cfg.d/10_tinkerbell.cfg && cat {mp}/etc/cloud/cloud.cfg.d/10_tinkerbell.cfg; umount {mp}"
    ));
    assert_eq!(file, "600 0 0\ndatasource: Ec2");
    // The Docker action's output reached the machine's event log.
    let events = cp.store.events(MAC, 100).await.unwrap();
    assert!(
        events.iter().any(|e| matches!(
            &e.kind,
            tinker::core::store::EventKind::ActionOutput { line, .. } if line.contains("docker says hi")
        )),
        "{events:?}"
    );
    // The engine finished the machine: netboot off, disk boot, reboot.
    let m = status.machine;
    assert_eq!(
        m.phase,
        tinker::core::model::MachinePhase::Rebooted,
        "{m:?}"
    );
}

async fn exec_workflow(
    script_actions: &[(&str, &str, u32)],
) -> (Workflow, tinker::actions::agent::AgentSummary) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("assets")).unwrap();
    let port = free_port();
    let cp = control_plane(
        &dir.path().join("tinker.redb"),
        &dir.path().join("assets"),
        port,
    )
    .await;
    let mut t = String::from(
        "version: \"0.1\"\nname: t\ntasks:\n  - name: a\n    worker: \"{{.device_1}}\"\n    actions:\n",
    );
    for (name, script, timeout) in script_actions {
        t.push_str(&format!("      - name: {name}\n        image: tinker/exec\n        timeout: {timeout}\n        command: [\"sh\", \"-c\", {script:?}]\n"));
    }
    setup(cp.store.as_ref(), &t, &[]).await;
    let summary = agent(
        machine_token(cp.store.as_ref()).await,
        port,
        Duration::from_secs(3),
    )
    .await;
    let wf = wait_end(cp.store.as_ref()).await;
    let _ = cp.stop.send(true);
    (wf, summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_action_fails_the_workflow_with_its_exit_code_and_output() {
    let (wf, summary) = exec_workflow(&[
        ("ok", "echo fine", 30),
        ("breaks", "echo partition not found >&2; exit 4", 30),
        ("never", "echo never", 30),
    ])
    .await;
    let s = wf.status.unwrap();
    assert_eq!(s.state, WorkflowState::Failed);
    let reason = s.reason.unwrap();
    assert!(
        reason.contains("exit code 4") && reason.contains("partition not found"),
        "{reason}"
    );
    assert_eq!(
        summary.ran.len(),
        2,
        "nothing ran after the failure: {summary:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_action_times_the_workflow_out() {
    let (wf, _) = exec_workflow(&[("hangs", "sleep 600", 2)]).await;
    let s = wf.status.unwrap();
    assert_eq!(s.state, WorkflowState::Timeout, "{:?}", s.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarting_the_control_plane_mid_workflow_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("assets")).unwrap();
    let counter = dir.path().join("runs");
    let port = free_port();
    let db = dir.path().join("tinker.redb");
    let cp = control_plane(&db, &dir.path().join("assets"), port).await;
    let c = counter.display();
    let t = format!(
        "version: \"0.1\"\nname: t\ntasks:\n  - name: a\n    worker: \"{{{{.device_1}}}}\"\n    actions:\n      - {{name: first, image: tinker/exec, timeout: 60, command: [sh, -c, \"echo first >> {c}; sleep 3\"]}}\n      - {{name: second, image: tinker/exec, timeout: 60, command: [sh, -c, \"echo second >> {c}\"]}}\n"
    );
    setup(cp.store.as_ref(), &t, &[]).await;
    let agent_task = tokio::spawn(agent(
        machine_token(cp.store.as_ref()).await,
        port,
        Duration::from_secs(4),
    ));
    // While the first action runs, the control plane goes away and comes back.
    for _ in 0..100 {
        if std::fs::read_to_string(&counter).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = cp.stop.send(true);
    drop(cp);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cp = control_plane(&db, &dir.path().join("assets"), port).await;
    let summary = agent_task.await.unwrap();
    let wf = wait_end(cp.store.as_ref()).await;
    let _ = cp.stop.send(true);
    assert_eq!(
        wf.state(),
        Some(WorkflowState::Success),
        "{:?}",
        wf.status.and_then(|s| s.reason)
    );
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap(),
        "first\nsecond\n",
        "each action ran exactly once"
    );
    assert_eq!(summary.ran.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_that_vanishes_is_noticed_by_its_missing_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("assets")).unwrap();
    let port = free_port();
    let cp = control_plane_with_grace(
        &dir.path().join("tinker.redb"),
        &dir.path().join("assets"),
        port,
        3,
    )
    .await;
    let t = "version: \"0.1\"\nname: t\ntasks:\n  - name: a\n    worker: \"{{.device_1}}\"\n    actions:\n      - {name: long, image: tinker/exec, timeout: 600, command: [sleep, \"300\"]}\n";
    setup(cp.store.as_ref(), t, &[]).await;
    // The machine dies while its action runs: the agent is gone, nothing reports.
    let agent_task = tokio::spawn(agent(
        machine_token(cp.store.as_ref()).await,
        port,
        Duration::from_secs(60),
    ));
    for _ in 0..100 {
        let wf = cp
            .store
            .workflow("default", "wf1")
            .await
            .unwrap()
            .unwrap()
            .value;
        if wf.state() == Some(WorkflowState::Running) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent_task.abort();
    let wf = wait_end(cp.store.as_ref()).await;
    let _ = cp.stop.send(true);
    let s = wf.status.unwrap();
    assert_eq!(s.state, WorkflowState::Timeout);
    assert!(
        s.reason.unwrap().contains("no heartbeat"),
        "the reason says why"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kexec_reports_success_before_the_machine_leaves_the_in_memory_os() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    std::fs::create_dir_all(dir.path().join("assets")).unwrap();
    // An installed system on a loop device: a kernel and an initrd to load.
    sh(&format!(
        "truncate -s 16M {d}/disk.img && mkfs.ext4 -q -F {d}/disk.img && mkdir -p {d}/m && mount {d}/disk.img {d}/m && mkdir -p {d}/m/boot && echo K > {d}/m/boot/vmlinuz && echo I > {d}/m/boot/initrd.img && umount {d}/m"
    ));
    let dev = sh(&format!("losetup -f --show {d}/disk.img"));
    let _detach = Detach(dev.clone());
    // The test's kexec: records each call with the time it ran.
    let stub = dir.path().join("kexec");
    std::fs::write(
        &stub,
        format!("#!/bin/sh\necho \"$(date +%s.%N) $*\" >> {d}/kexec.log\n"),
    )
    .unwrap();
    sh(&format!("chmod +x {}", stub.display()));
    let port = free_port();
    let cp = control_plane(
        &dir.path().join("tinker.redb"),
        &dir.path().join("assets"),
        port,
    )
    .await;
    let t = format!(
        "version: \"0.1\"\nname: t\ntasks:\n  - name: a\n    worker: \"{{{{.device_1}}}}\"\n    actions:\n      - name: kexec-into-os\n        image: quay.io/tinkerbell/actions/kexec:latest\n        timeout: 60\n        pid: host\n        environment: {{BLOCK_DEVICE: {dev}, FS_TYPE: ext4, KERNEL_PATH: /boot/vmlinuz, INITRD_PATH: /boot/initrd.img, CMD_LINE: \"root=/dev/sda1 ro\"}}\n"
    );
    setup(cp.store.as_ref(), &t, &[]).await;
    let native = || NativeRuntime::new().with_programs(&stub, "/bin/false");
    let a = Agent::new(
        AgentConfig::new(
            format!("http://127.0.0.1:{port}"),
            MAC,
            machine_token(cp.store.as_ref()).await,
        )
        .with_max_backoff(Duration::from_millis(500))
        .with_max_actions(1)
        .with_idle_exit(Duration::from_secs(3)),
        Arc::new(RuntimeRouter {
            native: native(),
            containers: None,
        }),
        Some(native()),
    );
    a.run(std::future::pending()).await.unwrap();
    let wf = wait_end(cp.store.as_ref()).await;
    let _ = cp.stop.send(true);
    let s = wf.status.unwrap();
    assert_eq!(s.state, WorkflowState::Success, "{:?}", s.reason);
    let reported = s.tasks[0].actions[0]
        .execution_stop
        .expect("the report's time");
    let log = std::fs::read_to_string(dir.path().join("kexec.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].contains(" -l ") && lines[1].ends_with(" -e"),
        "load, then execute: {log}"
    );
    let executed: f64 = lines[1].split_whitespace().next().unwrap().parse().unwrap();
    let reported = reported.as_millisecond() as f64 / 1000.0;
    assert!(
        executed >= reported,
        "kexec -e ran at {executed}, before the success report was stored at {reported}"
    );
}
