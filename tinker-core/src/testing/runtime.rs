//! The `ActionRuntime` conformance suite: written once, run by the native and the
//! Docker runtimes. `image` names an image (or built-in) that runs `command`
//! through a POSIX shell with `sh` on its path.

use crate::runtime::{
    ActionOutcome, ActionRuntime, ActionSpec, CancelToken, CollectOutput, Stream,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn spec(image: &str, name: &str, script: &str) -> ActionSpec {
    ActionSpec {
        workflow: "conformance/wf".into(),
        name: name.into(),
        image: image.into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        environment: BTreeMap::new(),
        volumes: vec![],
        pid: None,
        timeout: Some(Duration::from_secs(60)),
    }
}

fn lines(out: &CollectOutput) -> Vec<(Stream, String)> {
    out.0.lock().map(|v| v.clone()).unwrap_or_default()
}

/// Runs every check.
pub async fn run_all(runtime: Arc<dyn ActionRuntime>, image: &str) {
    success_and_output(runtime.as_ref(), image).await;
    non_zero_exit(runtime.as_ref(), image).await;
    environment_and_volumes(runtime.as_ref(), image).await;
    timeout_stops_the_action(runtime.as_ref(), image).await;
    cancellation_stops_the_action(runtime, image).await;
}

/// Exit 0 is success; stdout and stderr lines arrive, in order, on their streams.
pub async fn success_and_output(rt: &dyn ActionRuntime, image: &str) {
    let out = CollectOutput::default();
    let r = rt
        .run(
            &spec(image, "ok", "echo one; echo two >&2; echo three"),
            &out,
            &CancelToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(r, ActionOutcome::Success);
    let l = lines(&out);
    let stdout: Vec<&str> = l
        .iter()
        .filter(|(s, _)| *s == Stream::Stdout)
        .map(|(_, t)| t.as_str())
        .collect();
    assert_eq!(stdout, ["one", "three"]);
    assert!(l.contains(&(Stream::Stderr, "two".into())), "{l:?}");
}

/// A non-zero exit is a failure with its code and the last output.
pub async fn non_zero_exit(rt: &dyn ActionRuntime, image: &str) {
    let out = CollectOutput::default();
    let r = rt
        .run(
            &spec(image, "fails", "echo no disk >&2; exit 3"),
            &out,
            &CancelToken::new(),
        )
        .await
        .unwrap();
    match r {
        ActionOutcome::Failed { exit_code, message } => {
            assert_eq!(exit_code, Some(3));
            assert!(message.contains("no disk"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

/// The action sees its environment and its volumes (read-only where asked).
pub async fn environment_and_volumes(rt: &dyn ActionRuntime, image: &str) {
    let dir = std::env::temp_dir().join(format!(
        "tinker-conformance-{}-{}",
        std::process::id(),
        image.replace(['/', ':'], "_")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("note"), "from the host\n").unwrap();
    let mut s = spec(
        image,
        "env",
        "echo \"$GREETING $MODE\"; cat /tinker-data/note; touch /tinker-data/x 2>/dev/null && echo writable || echo read-only",
    );
    s.environment.insert("GREETING".into(), "hello".into());
    s.environment.insert("MODE".into(), "0600".into());
    s.volumes.push(format!("{}:/tinker-data:ro", dir.display()));
    let out = CollectOutput::default();
    let r = rt.run(&s, &out, &CancelToken::new()).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(r, ActionOutcome::Success, "{:?}", lines(&out));
    let text: Vec<String> = lines(&out).into_iter().map(|(_, t)| t).collect();
    assert_eq!(text, ["hello 0600", "from the host", "read-only"]);
}

/// An action past its time limit is stopped and reported as a timeout, promptly.
pub async fn timeout_stops_the_action(rt: &dyn ActionRuntime, image: &str) {
    let mut s = spec(image, "hangs", "echo started; sleep 120");
    s.timeout = Some(Duration::from_secs(2));
    let start = Instant::now();
    let r = rt
        .run(&s, &CollectOutput::default(), &CancelToken::new())
        .await
        .unwrap();
    assert!(matches!(r, ActionOutcome::Timeout { .. }), "{r:?}");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "stopped only after {:?}",
        start.elapsed()
    );
}

/// Cancelling stops a running action.
pub async fn cancellation_stops_the_action(rt: Arc<dyn ActionRuntime>, image: &str) {
    let cancel = CancelToken::new();
    let (c2, image) = (cancel.clone(), image.to_string());
    let task = tokio::spawn(async move {
        rt.run(
            &spec(&image, "cancelled", "sleep 120"),
            &CollectOutput::default(),
            &c2,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let start = Instant::now();
    cancel.cancel();
    let r = task.await.unwrap().unwrap();
    assert!(
        matches!(&r, ActionOutcome::Failed { message, .. } if message.contains("cancel")),
        "{r:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(30));
}
