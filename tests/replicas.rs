//! Three control-plane replicas (processes of `examples/control-plane.rs`) over one
//! PostgreSQL. Workers are spread across them and fail over; one replica is
//! killed with SIGKILL while actions run. Every workflow still finishes, every
//! action runs exactly once, and the engine's BMC steps are recorded once per
//! workflow.

#[path = "support/netlab.rs"]
mod netlab;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tinker::actions::NativeRuntime;
use tinker::actions::agent::{Agent, AgentConfig, HttpTransport};
use tinker::core::model::{Hardware, Template, Workflow};
use tinker::core::runtime::{ActionOutcome, ActionRuntime, ActionSpec, CancelToken, OutputSink};
use tinker::core::{MacAddr, Precondition, WorkflowStore, WorkflowStoreExt};
use tinker::store::PostgresStore;
use tinker::store::testing::TempPostgres;

const MACHINES: u8 = 24;
const ACTIONS: usize = 4;

const TEMPLATE: &str = r#"version: "0.1"
name: four-steps
global_timeout: 600
tasks:
  - name: install
    worker: "{{.device_1}}"
    actions:
      - {name: wipe, image: tinker/test, timeout: 60}
      - {name: stream-image, image: tinker/test, timeout: 60}
      - {name: write-config, image: tinker/test, timeout: 60}
      - {name: finish, image: tinker/test, timeout: 60}
"#;

/// Records every action it runs, and takes a while at it.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<(String, String)>>);

#[async_trait::async_trait]
impl ActionRuntime for Recorder {
    async fn run(
        &self,
        spec: &ActionSpec,
        _out: &dyn OutputSink,
        _cancel: &CancelToken,
    ) -> tinker::core::Result<ActionOutcome> {
        self.0
            .lock()
            .unwrap()
            .push((spec.workflow.clone(), spec.name.clone()));
        tokio::time::sleep(Duration::from_millis(400)).await;
        Ok(ActionOutcome::Success)
    }
}

struct Replica {
    child: Child,
    http: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_replica(name: &str, url: &str, secret: &std::path::Path) -> Replica {
    let mut child = Command::new(netlab::example("control-plane"))
        .args(["--store", url, "--replica", name, "--address", "127.0.0.1"])
        .args(["--dhcp-port", "0", "--tftp-port", "0", "--http-port", "0"])
        // Two replicas on one address: Hegel's fixed port off.
        .args(["--hegel-port", "0"])
        .args(["--syslog-port", "0"])
        .args(["--grpc-port", "0"])
        .args(["--mock-bmcs", "--lease", "3", "--secret-file"])
        .arg(secret)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the control-plane example");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let http = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .unwrap_or_else(|| panic!("replica {name} did not start: {line:?}"))
        .to_string();
    Replica {
        child,
        http: format!("http://{http}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_run_loses_nothing_and_repeats_nothing() {
    let Some(pg) = TempPostgres::start() else {
        return;
    };
    let store: Arc<dyn WorkflowStore> = Arc::new(PostgresStore::connect(&pg.url).await.unwrap());
    store
        .put(
            Template::new("four-steps", TEMPLATE).into(),
            Precondition::Any,
        )
        .await
        .unwrap();
    let macs: Vec<MacAddr> = (0..MACHINES)
        .map(|i| MacAddr([0x02, 0, 0, 0x5e, 0, i + 1]))
        .collect();
    for (i, mac) in macs.iter().enumerate() {
        let name = format!("node{i:02}");
        let hw = Hardware::new(
            &name,
            *mac,
            // Loopback addresses of their own, as real machines have theirs:
            // a worker's token is taken only from its machine's address.
            format!("127.88.0.{}", 10 + i).parse().unwrap(),
            "255.255.255.0",
        );
        store.put(hw.into(), Precondition::Any).await.unwrap();
        store
            .put(
                Workflow::new(&format!("{name}-install"), "four-steps", &name, *mac).into(),
                Precondition::Any,
            )
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let secret_path = dir.path().join("secret");
    let secret = b"replicas-share-this-secret".to_vec();
    std::fs::write(&secret_path, &secret).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut replicas: Vec<Option<Replica>> = (0..3)
        .map(|k| Some(start_replica(&format!("cp{k}"), &pg.url, &secret_path)))
        .collect();
    let urls: Vec<String> = replicas
        .iter()
        .map(|r| r.as_ref().unwrap().http.clone())
        .collect();

    // Workers, spread across the replicas: each starts at a different one and
    // knows the others.
    let recorder = Arc::new(Recorder::default());
    let mut agents = Vec::new();
    for (i, mac) in macs.iter().enumerate() {
        let servers: Vec<String> = (0..3).map(|k| urls[(i + k) % 3].clone()).collect();
        let hw = store.hardware_by_mac(*mac).await.unwrap().unwrap().value;
        let token = tinker::boot::credentials::worker_token(
            &tinker::boot::credentials::secret_from_bytes(&secret),
            &mac.to_string(),
            hw.netboot_since(),
        );
        let agent = Agent::new(
            AgentConfig::new(servers.join(","), mac.to_string(), token.clone())
                .with_max_backoff(Duration::from_millis(500))
                .with_max_actions(ACTIONS),
            recorder.clone(),
            Some(NativeRuntime::new()),
        )
        .with_transport(Arc::new(
            HttpTransport::new(token).with_local_address(hw.ipv4s()[0].into()),
        ));
        agents.push(tokio::spawn(async move {
            agent.run(std::future::pending()).await
        }));
    }

    // Kill the first replica once about a third of the actions have run.
    let total = MACHINES as usize * ACTIONS;
    let deadline = Instant::now() + Duration::from_secs(120);
    while recorder.0.lock().unwrap().len() < total / 3 {
        assert!(Instant::now() < deadline, "the workers made no progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut killed = replicas[0].take().unwrap();
    killed.child.kill().unwrap(); // SIGKILL
    killed.child.wait().unwrap();
    let ran_before_kill = recorder.0.lock().unwrap().len();

    for a in agents {
        let summary = tokio::time::timeout(Duration::from_secs(180), a)
            .await
            .expect("a worker did not finish")
            .unwrap()
            .expect("the agent failed");
        assert_eq!(summary.ran.len(), ACTIONS);
    }

    // Every action ran exactly once.
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for k in recorder.0.lock().unwrap().iter() {
        *counts.entry(k.clone()).or_default() += 1;
    }
    assert_eq!(counts.len(), total, "every action ran");
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "ran more than once: {twice:?}");
    assert!(
        ran_before_kill < total,
        "the replica was killed mid-run ({ran_before_kill}/{total} done)"
    );

    // The surviving replicas finish every workflow's machine steps (taking over
    // the dead replica's leases when they run out).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let wfs = store.workflows().await.unwrap();
        let finished = wfs
            .iter()
            .filter(|w| {
                let s = w.value.status.as_ref().unwrap();
                s.state.to_string() == "SUCCESS"
                    && s.machine.phase == tinker::core::model::MachinePhase::Rebooted
            })
            .count();
        if finished == MACHINES as usize {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{finished}/{MACHINES} workflows finished: {:#?}",
            wfs.iter()
                .map(|w| (&w.value.metadata.name, &w.value.status))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Each BMC step was done once per workflow, by whichever replica held its lease.
    for i in 0..MACHINES {
        let events = store
            .events(&format!("default/node{i:02}"), 200)
            .await
            .unwrap();
        use tinker::core::model::MachineStep;
        use tinker::core::store::{EventKind, EventSource};
        for step in [
            MachineStep::SetPxeBoot,
            MachineStep::PowerCycle,
            MachineStep::SetDiskBoot,
            MachineStep::Reboot,
        ] {
            let n = events
                .iter()
                .filter(|e| {
                    e.source == EventSource::Engine && e.kind == EventKind::StepDone { step }
                })
                .count();
            assert_eq!(n, 1, "node{i:02}: {step} recorded {n} times: {events:#?}");
        }
    }
    drop(replicas);
}
