//! `DockerRuntime`: an action as a container, the way tink-worker runs it:
//! privileged, the host's `/dev` and the action's volumes bound in, the host's
//! network (and PID namespace when the action asks), output streamed line by line,
//! the exit code mapped to success or failure, the time limit enforced here (the
//! Docker API's own timeouts do not bound a wait), and the container removed in
//! every case. A container past its time limit or cancelled is stopped as
//! `docker stop` does (SIGTERM, a grace on our clock, SIGKILL) before removal,
//! and a [`CleanupReport`] says so.
//!
//! Where the engine refuses `--privileged` (a host whose capability bounding set
//! lacks one the engine wants to grant, as on some CI machines), it falls back to
//! the equivalent explicit set (all capabilities but `SYS_RESOURCE`, seccomp and
//! AppArmor unconfined, every device allowed) and says so in the log.

use crate::cleanup::{CleanupReport, DEFAULT_GRACE, StopReason, record, stopped};
use crate::process::{Lines, remember};
use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::{StreamExt, TryStreamExt};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tinker_core::clock::{SharedClock, SystemClock};
use tinker_core::runtime::{
    ActionOutcome, ActionRuntime, ActionSpec, CancelToken, OutputSink, Stream,
};
use tinker_core::{Error, Result};

/// Runs actions in containers on a Docker engine.
#[derive(Debug)]
pub struct DockerRuntime {
    docker: Docker,
    extra_binds: Vec<String>,
    privileged_refused: AtomicBool,
    seq: AtomicU64,
    clock: SharedClock,
    grace: Duration,
}

impl DockerRuntime {
    /// Connects to the local engine (`DOCKER_HOST` or the default socket) and agrees
    /// on an API version with it.
    pub async fn connect() -> Result<Self> {
        let unreachable = |e: bollard::errors::Error| Error::Unreachable {
            target: "docker engine".into(),
            reason: e.to_string(),
        };
        let docker = Docker::connect_with_local_defaults()
            .map_err(unreachable)?
            .negotiate_version()
            .await
            .map_err(unreachable)?;
        docker.ping().await.map_err(unreachable)?;
        Ok(DockerRuntime {
            docker,
            extra_binds: vec!["/dev:/dev".into()],
            privileged_refused: AtomicBool::new(false),
            seq: AtomicU64::new(0),
            clock: SystemClock::shared(),
            grace: DEFAULT_GRACE,
        })
    }

    /// Binds every action gets besides its own volumes (default `/dev:/dev`; add
    /// the worker's shared volume here).
    pub fn with_binds(mut self, binds: Vec<String>) -> Self {
        self.extra_binds = binds;
        self
    }

    /// Measures time limits and the stop grace on `clock` instead of the
    /// system clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Gives a stopped container `grace` between SIGTERM and SIGKILL (default
    /// [`DEFAULT_GRACE`]).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    async fn ensure_image(&self, image: &str, out: &dyn OutputSink) -> Result<()> {
        if self.docker.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        let (repo, tag) = match image.rfind(':') {
            Some(i) if !image[i..].contains('/') => (&image[..i], &image[i + 1..]),
            _ => (image, "latest"),
        };
        out.line(Stream::Stdout, &format!("pulling {image}"));
        let opts = CreateImageOptionsBuilder::new()
            .from_image(repo)
            .tag(tag)
            .build();
        self.docker
            .create_image(Some(opts), None, None)
            .try_collect::<Vec<_>>()
            .await
            .map(|_| ())
            .map_err(|e| Error::Remote {
                target: "docker engine".into(),
                reason: format!(
                    "image {image} is not on this machine and could not be pulled: {e}"
                ),
            })
    }

    fn host_config(&self, spec: &ActionSpec, privileged: bool) -> HostConfig {
        // The action's own volumes win over the defaults for the same container
        // path (Tinkerbell templates name /dev:/dev themselves; Docker refuses a
        // duplicate mount point).
        let target = |b: &String| b.split(':').nth(1).unwrap_or_default().to_string();
        let own: Vec<String> = spec.volumes.iter().map(target).collect();
        let mut binds: Vec<String> = self
            .extra_binds
            .iter()
            .filter(|b| !own.contains(&target(b)))
            .cloned()
            .collect();
        for v in &spec.volumes {
            if !binds.iter().any(|b| target(b) == target(v)) {
                binds.push(v.clone());
            }
        }
        let mut hc = HostConfig {
            binds: Some(binds),
            network_mode: Some("host".into()),
            pid_mode: spec.pid.clone().filter(|p| !p.is_empty()),
            ..Default::default()
        };
        if privileged {
            hc.privileged = Some(true);
        } else {
            hc.cap_add = Some(vec!["ALL".into()]);
            hc.cap_drop = Some(vec!["SYS_RESOURCE".into()]);
            hc.security_opt = Some(vec![
                "seccomp=unconfined".into(),
                "apparmor=unconfined".into(),
            ]);
            hc.device_cgroup_rules = Some(vec!["b *:* rwm".into(), "c *:* rwm".into()]);
        }
        hc
    }

    /// Creates and starts the action's container; the guard that removes it
    /// is armed as soon as it exists, before it starts: its process may act
    /// (and the run be dropped) before the engine's answer to the start.
    async fn create_and_start(&self, spec: &ActionSpec, name: &str) -> Result<ContainerGuard> {
        let mut privileged = !self.privileged_refused.load(Ordering::Relaxed);
        loop {
            let body = ContainerCreateBody {
                image: Some(spec.image.clone()),
                cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
                env: Some(
                    spec.environment
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect(),
                ),
                host_config: Some(self.host_config(spec, privileged)),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            };
            let id = self
                .docker
                .create_container(
                    Some(CreateContainerOptionsBuilder::new().name(name).build()),
                    body,
                )
                .await
                .map_err(|e| Error::Remote {
                    target: "docker engine".into(),
                    reason: format!("cannot create the container: {e}"),
                })?
                .id;
            let mut guard = ContainerGuard {
                docker: self.docker.clone(),
                id: Some(id.clone()),
            };
            match self.docker.start_container(&id, None).await {
                Ok(()) => return Ok(guard),
                Err(e) => {
                    if self.remove(&id).await {
                        guard.id = None;
                    }
                    let text = e.to_string();
                    if privileged
                        && (text.contains("unable to apply caps")
                            || text.contains("operation not permitted"))
                    {
                        tracing::warn!(error = %text, "the Docker engine refuses --privileged here; using the explicit capability set instead");
                        self.privileged_refused.store(true, Ordering::Relaxed);
                        privileged = false;
                        continue;
                    }
                    return Err(Error::Remote {
                        target: "docker engine".into(),
                        reason: format!("cannot start the container: {text}"),
                    });
                }
            }
        }
    }

    /// Removes a container (forcibly: whatever is left of it); says whether
    /// it is gone.
    async fn remove(&self, id: &str) -> bool {
        let opts = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(container = id, error = %e, "could not remove an action container");
                false
            }
        }
    }

    /// Follows the container to its end, or to the moment it must stop (its
    /// time limit, or cancellation), which is returned instead.
    async fn supervise(
        &self,
        id: &str,
        spec: &ActionSpec,
        out: &dyn OutputSink,
        cancel: &CancelToken,
    ) -> std::result::Result<ActionOutcome, StopReason> {
        let logs = self.docker.logs(
            id,
            Some(
                LogsOptionsBuilder::new()
                    .follow(true)
                    .stdout(true)
                    .stderr(true)
                    .build(),
            ),
        );
        let wait = async {
            match self.docker.wait_container(id, None).next().await {
                Some(Ok(r)) => Ok(r.status_code),
                // A non-zero exit comes back as an error carrying the code.
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                    Ok(code)
                }
                Some(Err(e)) => Err(e.to_string()),
                None => Err("the engine ended the wait without a status".into()),
            }
        };
        let limit = async {
            match spec.timeout {
                Some(t) => self.clock.sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let both = async { tokio::join!(wait, pump(logs, out)) };
        tokio::select! {
            (code, last) = both => Ok(match code {
                Ok(0) => ActionOutcome::Success,
                Ok(code) => ActionOutcome::Failed { exit_code: i32::try_from(code).ok(), message: last.join("\n") },
                Err(e) => ActionOutcome::Failed { exit_code: None, message: e },
            }),
            () = limit => Err(StopReason::Timeout),
            () = cancel.cancelled() => Err(StopReason::Cancelled),
        }
    }

    /// Stops a container as `docker stop` does, with the grace on our clock:
    /// SIGTERM to its processes, up to the grace for it to end, then SIGKILL.
    async fn stop(&self, id: &str, report: &Mutex<CleanupReport>) {
        let signal = |s: &str| KillContainerOptionsBuilder::new().signal(s).build();
        if let Err(e) = self.docker.kill_container(id, Some(signal("TERM"))).await {
            // Already ended: nothing to stop.
            tracing::debug!(container = id, error = %e, "SIGTERM to a container");
        }
        let ended = async {
            let _ = self.docker.wait_container(id, None).next().await;
        };
        let in_grace = tokio::select! {
            () = ended => true,
            () = self.clock.sleep(self.grace) => false,
        };
        if !in_grace {
            let _ = self.docker.kill_container(id, Some(signal("KILL"))).await;
        }
        record(report, |r| {
            r.containers_stopped.push(id.to_string());
            if !in_grace {
                r.containers_killed.push(id.to_string());
            }
        });
    }
}

/// Removes a container when dropped before it was removed in order (the run's
/// future was dropped): on the runtime, in the background.
struct ContainerGuard {
    docker: Docker,
    id: Option<String>,
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let docker = self.docker.clone();
        tracing::warn!(container = %id, "removing the container of an abandoned action");
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let opts = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
                if let Err(e) = docker.remove_container(&id, Some(opts)).await {
                    tracing::warn!(container = %id, error = %e, "could not remove an action container");
                }
            });
        }
    }
}

/// Splits a container's log stream into lines per stream and forwards them;
/// returns the last few lines (a failure's message).
async fn pump(
    logs: impl futures_util::Stream<Item = std::result::Result<LogOutput, bollard::errors::Error>>,
    out: &dyn OutputSink,
) -> Vec<String> {
    let mut logs = std::pin::pin!(logs);
    let (mut so, mut se) = (Lines::default(), Lines::default());
    let mut last: Vec<String> = Vec::new();
    let mut emit = |stream: Stream, line: String| {
        out.line(stream, &line);
        remember(&mut last, line);
    };
    while let Some(Ok(chunk)) = logs.next().await {
        let (lines, message, stream) = match chunk {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                (&mut so, message, Stream::Stdout)
            }
            LogOutput::StdErr { message } => (&mut se, message, Stream::Stderr),
            LogOutput::StdIn { .. } => continue,
        };
        lines.push(&message, |l| emit(stream, l));
    }
    so.finish(|l| emit(Stream::Stdout, l));
    se.finish(|l| emit(Stream::Stderr, l));
    last
}

#[async_trait]
impl ActionRuntime for DockerRuntime {
    async fn run(
        &self,
        spec: &ActionSpec,
        out: &dyn OutputSink,
        cancel: &CancelToken,
    ) -> Result<ActionOutcome> {
        // The engine's refusals are the action's failure, with the reason.
        if let Err(e) = self.ensure_image(&spec.image, out).await {
            return Ok(ActionOutcome::Failed {
                exit_code: None,
                message: e.to_string(),
            });
        }
        let safe: String = format!("{}-{}", spec.workflow, spec.name)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let name = format!(
            "tinker-{safe}-{}-{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        // Removed in every case: success, failure, timeout, cancellation, and
        // (by the guard) this future being dropped, even while it starts.
        let mut guard = match self.create_and_start(spec, &name).await {
            Ok(guard) => guard,
            Err(e) => {
                return Ok(ActionOutcome::Failed {
                    exit_code: None,
                    message: e.to_string(),
                });
            }
        };
        let id = guard.id.clone().unwrap_or_default();
        let report = Mutex::new(CleanupReport::new(self.grace));
        let ended = self.supervise(&id, spec, out, cancel).await;
        if ended.is_err() {
            self.stop(&id, &report).await;
        }
        if self.remove(&id).await {
            record(&report, |r| r.containers_removed.push(id.clone()));
        } else {
            record(&report, |r| {
                r.failures
                    .push(format!("container {id} could not be removed"))
            });
        }
        guard.id = None;
        Ok(match ended {
            Ok(outcome) => outcome,
            Err(why) => {
                let report = report.into_inner().unwrap_or_else(|p| p.into_inner());
                stopped(spec, out, why, &report)
            }
        })
    }
}
