//! Both runtimes pass the one `ActionRuntime` conformance suite: the native one on
//! this machine, the Docker one against a real engine with an image made locally by
//! `docker import` (no registry is reachable).
//!
//! And both stop an action as a protocol: SIGTERM (the action's trap runs), a
//! grace, SIGKILL for what ignored it, the whole process group gone, the
//! container removed, also when the control plane answers 409 to a heartbeat
//! and when the future running the action is dropped.

use async_trait::async_trait;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
#[cfg(feature = "docker")]
use tinker_actions::DockerRuntime;
use tinker_actions::NativeRuntime;
use tinker_actions::agent::{
    Agent, AgentConfig, HeartbeatAnswer, Reply, ReportAnswer, Request, Transport,
};
use tinker_core::runtime::{ActionOutcome, ActionRuntime, ActionSpec, CancelToken, CollectOutput};
use tinker_core::testing::runtime::run_all;
use tinker_core::worker_api::{NextActionResponse, WorkerAction};

#[cfg(feature = "docker")]
const IMAGE: &str = "tinker-test/busybox:1";

#[cfg(feature = "docker")]
use tinker_core::testing::require_real;

#[cfg(feature = "docker")]
/// The engine, and the local busybox image (made once from Debian's busybox-static).
async fn docker() -> Option<DockerRuntime> {
    let rt = match DockerRuntime::connect().await {
        Ok(rt) => rt,
        Err(e) => {
            assert!(
                !require_real(),
                "a Docker engine is required (TINKER_REQUIRE_REAL=1): {e}"
            );
            eprintln!("skipped: no Docker engine: {e}");
            return None;
        }
    };
    let have = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        let script = format!(
            "set -e; d=$(mktemp -d); cd $d; apt-get download busybox-static >/dev/null; dpkg -x busybox-static_*.deb x; \
             mkdir -p root/bin root/tmp; cp x/bin/busybox root/bin/; for a in sh echo cat sleep touch ls mkdir test; do ln -s busybox root/bin/$a; done; \
             tar -C root -c . | docker import - {IMAGE} >/dev/null; rm -rf $d"
        );
        let o = Command::new("sh").args(["-c", &script]).output().unwrap();
        assert!(
            o.status.success(),
            "docker import failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Some(rt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_runtime_conforms() {
    run_all(Arc::new(NativeRuntime::new()), "tinker/exec").await;
}

#[cfg(feature = "docker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_runtime_conforms() {
    let Some(rt) = docker().await else { return };
    run_all(Arc::new(rt), IMAGE).await;
    // Every container was removed, whatever its end.
    let left = Command::new("docker")
        .args(["ps", "-a", "-q", "--filter", "name=tinker-conformance"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "containers left behind"
    );
}

#[cfg(feature = "docker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_pulled_fails_the_action_with_a_reason() {
    let Some(rt) = docker().await else { return };
    let spec = ActionSpec {
        workflow: "default/wf".into(),
        name: "missing".into(),
        image: "registry.invalid/tinker/does-not-exist:1".into(),
        command: vec![],
        environment: Default::default(),
        volumes: vec![],
        pid: None,
        timeout: None,
    };
    match rt
        .run(&spec, &CollectOutput::default(), &CancelToken::new())
        .await
        .unwrap()
    {
        ActionOutcome::Failed { message, .. } => {
            assert!(message.contains("could not be pulled"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

fn sh_spec(image: &str, name: &str, script: &str) -> ActionSpec {
    ActionSpec {
        workflow: "default/wf".into(),
        name: name.into(),
        image: image.into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        environment: Default::default(),
        volumes: vec![],
        pid: None,
        timeout: None,
    }
}

/// The live (not zombie) members of process group `pgid`, read from `/proc`.
fn group_members(pgid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let f: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
            (f.get(2)?.parse::<u32>().ok()? == pgid && f[0] != "Z").then_some(pid)
        })
        .collect()
}

/// Waits (a bounded number of short polls) until `path` holds a line.
async fn wait_for_file(path: &std::path::Path) -> String {
    for _ in 0..600 {
        if let Ok(s) = std::fs::read_to_string(path)
            && s.ends_with('\n')
        {
            return s.trim().to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", path.display());
}

/// A shell whose leader cleans up on SIGTERM, with one child that ignores
/// SIGTERM and one that does not: `$dir/pgid` names the group once all run.
fn stubborn_script(dir: &std::path::Path) -> String {
    let d = dir.display();
    format!(
        "trap 'echo cleaned-up > {d}/termed; exit 0' TERM; \
         (trap '' TERM; exec sleep 1000) & sleep 1000 & \
         echo $$ > {d}/pgid; wait; wait"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_native_action_gets_sigterm_then_its_whole_group_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(NativeRuntime::new().with_grace(Duration::from_secs(1)));
    let cancel = CancelToken::new();
    let task = {
        let (rt, cancel) = (rt.clone(), cancel.clone());
        let spec = sh_spec("exec", "stubborn", &stubborn_script(dir.path()));
        tokio::spawn(async move { rt.run(&spec, &CollectOutput::default(), &cancel).await })
    };
    let pgid: u32 = wait_for_file(&dir.path().join("pgid"))
        .await
        .parse()
        .unwrap();
    assert_eq!(
        group_members(pgid).len(),
        3,
        "the leader and its two children run"
    );
    cancel.cancel();
    let r = task.await.unwrap().unwrap();
    // The leader had its chance to clean up (SIGTERM first, not SIGKILL)...
    assert_eq!(
        std::fs::read_to_string(dir.path().join("termed"))
            .unwrap()
            .trim(),
        "cleaned-up"
    );
    // ...the child that ignored SIGTERM was killed after the grace, and nothing
    // of the group is left.
    assert_eq!(group_members(pgid), Vec::<u32>::new());
    match r {
        ActionOutcome::Failed {
            exit_code: None,
            message,
        } => {
            assert!(message.starts_with("cancelled; cleanup:"), "{message}");
            assert!(
                message.contains(&format!("process group {pgid} got SIGTERM, outlived the 1 s grace and was killed (SIGKILL)")),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_native_action_and_its_children_are_stopped_and_what_it_left_after_success_too()
{
    let dir = tempfile::tempdir().unwrap();
    let rt = NativeRuntime::new().with_grace(Duration::from_secs(1));
    let mut spec = sh_spec("exec", "slow", &stubborn_script(dir.path()));
    spec.timeout = Some(Duration::from_secs(1));
    let r = rt
        .run(&spec, &CollectOutput::default(), &CancelToken::new())
        .await
        .unwrap();
    let pgid: u32 = wait_for_file(&dir.path().join("pgid"))
        .await
        .parse()
        .unwrap();
    assert!(
        matches!(&r, ActionOutcome::Timeout { message } if message.contains("SIGKILL")),
        "{r:?}"
    );
    assert_eq!(group_members(pgid), Vec::<u32>::new());
    // An action that succeeds but leaves a process behind (that would go on
    // writing the disk) has it stopped before its success is reported.
    let left = dir.path().join("left");
    let spec = sh_spec(
        "exec",
        "leaves",
        &format!(
            "sleep 1000 > /dev/null 2>&1 & echo $! > {}; echo done",
            left.display()
        ),
    );
    let out = CollectOutput::default();
    let r = rt.run(&spec, &out, &CancelToken::new()).await.unwrap();
    assert_eq!(r, ActionOutcome::Success);
    let pid = wait_for_file(&left).await;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z "), "{stat}");
    let lines = out.0.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|(_, l)| l.contains("stopping the processes it left running")),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_native_action_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let rt = NativeRuntime::new();
    let spec = sh_spec("exec", "dropped", &stubborn_script(dir.path()));
    let out = CollectOutput::default();
    let cancel = CancelToken::new();
    let run = rt.run(&spec, &out, &cancel);
    let pgid_file = dir.path().join("pgid");
    // Run it until the group is up, then drop the future, as a caller that
    // gives up would.
    let pgid: u32 = tokio::select! {
        _ = run => panic!("it ended by itself"),
        p = wait_for_file(&pgid_file) => p.parse().unwrap(),
    };
    for _ in 0..100 {
        if group_members(pgid).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(group_members(pgid), Vec::<u32>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_volumes_are_paths_not_shell_text() {
    if !unshare_works() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A host path holding quotes and a command substitution.
    let host = dir.path().join("it's $(touch pwned) `touch pwned2`");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("note"), "from the odd path\n").unwrap();
    let mut spec = sh_spec("exec", "odd-volume", "cat /tinker-odd/note");
    spec.volumes = vec![format!("{}:/tinker-odd:ro", host.display())];
    let out = CollectOutput::default();
    let r = NativeRuntime::new()
        .run(&spec, &out, &CancelToken::new())
        .await
        .unwrap();
    assert_eq!(r, ActionOutcome::Success, "{:?}", out.0.lock().unwrap());
    assert_eq!(out.0.lock().unwrap()[0].1, "from the odd path");
    assert!(!std::path::Path::new("pwned").exists() && !std::path::Path::new("pwned2").exists());
    assert!(!dir.path().join("pwned").exists());
}

/// Whether this process may make a mount namespace (root, or a test runner
/// that allows it); CI (`TINKER_REQUIRE_REAL=1`) must.
fn unshare_works() -> bool {
    let ok = Command::new("unshare")
        .args(["--mount", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !tinker_core::testing::require_real(),
            "unshare --mount is required"
        );
        eprintln!("skipped: cannot make a mount namespace");
    }
    ok
}

/// A control plane that hands out one action and answers its heartbeat with
/// 409 (the action is no longer this worker's); it keeps the report.
#[derive(Debug)]
struct TakesItBack {
    action: WorkerAction,
    handed: Mutex<bool>,
    report: Mutex<Option<ActionOutcome>>,
}

#[async_trait]
impl Transport for TakesItBack {
    async fn send(&self, _replica: &str, request: &Request) -> tinker_core::Result<Reply> {
        Ok(match request {
            Request::NextAction(_) => {
                let mut handed = self.handed.lock().unwrap();
                if *handed {
                    Reply::NextAction(NextActionResponse::Wait {
                        retry_after_seconds: 1,
                        reason: "nothing".into(),
                    })
                } else {
                    *handed = true;
                    Reply::NextAction(NextActionResponse::Action(self.action.clone()))
                }
            }
            Request::Heartbeat(_) => Reply::Heartbeat(HeartbeatAnswer::Stop),
            Request::Report(r) => {
                *self.report.lock().unwrap() = Some(r.outcome.clone());
                Reply::Report(ReportAnswer::Refused {
                    reason: "409 Conflict".into(),
                })
            }
            _ => Reply::Logs,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_409_to_the_heartbeat_stops_the_native_action_and_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let plane = Arc::new(TakesItBack {
        action: WorkerAction {
            workflow_id: "default/wf".into(),
            task_name: "t".into(),
            action_index: 0,
            attempt: 1,
            name: "stubborn".into(),
            image: "exec".into(),
            timeout_seconds: None,
            command: vec!["sh".into(), "-c".into(), stubborn_script(dir.path())],
            environment: Default::default(),
            volumes: vec![],
            pid: None,
            heartbeat_seconds: 1,
        },
        handed: Mutex::new(false),
        report: Mutex::new(None),
    });
    let native = NativeRuntime::new().with_grace(Duration::from_secs(1));
    let agent = Agent::new(
        AgentConfig::new("mem://cp", "w1", "t").with_max_actions(1),
        Arc::new(native),
        None,
    )
    .with_transport(plane.clone());
    agent.run(std::future::pending()).await.unwrap();
    let pgid: u32 = wait_for_file(&dir.path().join("pgid"))
        .await
        .parse()
        .unwrap();
    assert_eq!(group_members(pgid), Vec::<u32>::new());
    assert!(dir.path().join("termed").exists(), "SIGTERM came first");
    let report = plane.report.lock().unwrap().clone().unwrap();
    assert!(
        matches!(&report, ActionOutcome::Failed { message, .. }
            if message.starts_with("stopped by the control plane; cancelled; cleanup: process group")),
        "{report:?}"
    );
}

#[cfg(feature = "docker")]
fn containers_named(name: &str) -> String {
    let o = Command::new("docker")
        .args(["ps", "-a", "-q", "--filter", &format!("name={name}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[cfg(feature = "docker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_container_gets_sigterm_then_is_killed_and_removed() {
    let Some(rt) = docker().await else { return };
    let rt = Arc::new(rt.with_grace(Duration::from_secs(2)));
    let dir = tempfile::tempdir().unwrap();
    // PID 1 of the container cleans up on SIGTERM.
    let mut polite = sh_spec(
        IMAGE,
        "polite-stop",
        "trap 'echo cleaned-up > /data/termed; exit 0' TERM; echo up > /data/up; sleep 1000 & wait",
    );
    polite.volumes = vec![format!("{}:/data", dir.path().display())];
    let cancel = CancelToken::new();
    let task = {
        let (rt, cancel, spec) = (rt.clone(), cancel.clone(), polite.clone());
        tokio::spawn(async move { rt.run(&spec, &CollectOutput::default(), &cancel).await })
    };
    wait_for_file(&dir.path().join("up")).await;
    cancel.cancel();
    let r = task.await.unwrap().unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("termed"))
            .unwrap()
            .trim(),
        "cleaned-up",
        "SIGTERM came first"
    );
    assert!(
        matches!(&r, ActionOutcome::Failed { message, .. }
            if message.contains("ended on SIGTERM") && message.contains("removed")),
        "{r:?}"
    );
    assert_eq!(containers_named("polite-stop"), "", "container left behind");

    // PID 1 ignores SIGTERM: killed after the grace, and removed.
    let mut stubborn = sh_spec(
        IMAGE,
        "stubborn-stop",
        "trap '' TERM; echo up > /data/up2; while true; do sleep 1; done",
    );
    stubborn.volumes = polite.volumes.clone();
    stubborn.timeout = Some(Duration::from_secs(3));
    let task = {
        let (rt, spec) = (rt.clone(), stubborn);
        tokio::spawn(async move {
            rt.run(&spec, &CollectOutput::default(), &CancelToken::new())
                .await
        })
    };
    let r = task.await.unwrap().unwrap();
    assert!(
        matches!(&r, ActionOutcome::Timeout { message }
            if message.contains("outlived the 2 s grace and was killed (SIGKILL)") && message.contains("removed")),
        "{r:?}"
    );
    assert_eq!(
        containers_named("stubborn-stop"),
        "",
        "container left behind"
    );
}

#[cfg(feature = "docker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_container_action_is_removed() {
    let Some(rt) = docker().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut spec = sh_spec(IMAGE, "dropped-run", "echo up > /data/up; sleep 1000");
    spec.volumes = vec![format!("{}:/data", dir.path().display())];
    let out = CollectOutput::default();
    let cancel = CancelToken::new();
    let up = dir.path().join("up");
    tokio::select! {
        _ = rt.run(&spec, &out, &cancel) => panic!("it ended by itself"),
        _ = wait_for_file(&up) => {}
    }
    // The run's future is gone; its guard removes the container in the background.
    for _ in 0..200 {
        if containers_named("dropped-run").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(containers_named("dropped-run"), "", "container left behind");
}
