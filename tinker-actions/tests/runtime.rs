//! Both runtimes pass the one `ActionRuntime` conformance suite: the native one on
//! this machine, the Docker one against a real engine with an image made locally by
//! `docker import` (no registry is reachable).

#[cfg(feature = "docker")]
use std::process::Command;
use std::sync::Arc;
#[cfg(feature = "docker")]
use tinker_actions::DockerRuntime;
use tinker_actions::NativeRuntime;
#[cfg(feature = "docker")]
use tinker_core::runtime::{ActionOutcome, ActionRuntime, ActionSpec, CancelToken, CollectOutput};
use tinker_core::testing::runtime::run_all;

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
