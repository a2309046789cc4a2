//! The native runtime: Tinkerbell's hub actions built in, honouring their
//! environment contracts, selected by image name through a table the caller can
//! extend (`quay.io/tinkerbell/actions/image2disk:latest` → [`Builtin::Image2Disk`]).
//!
//! Each action is one file here and one [`Entry`] in [`ACTIONS`]: adding an
//! action means adding a file, a [`Builtin`] variant and a line in that table.

mod cexec;
mod env;
mod exec;
mod image2disk;
mod inroot;
mod kexec;
mod mount;
mod reboot;
mod writefile;

use crate::cleanup::{CleanupReport, DEFAULT_GRACE, StopReason, stopped};
use crate::process::{self, Supervision};
use async_trait::async_trait;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tinker_core::clock::{SharedClock, SystemClock};
use tinker_core::runtime::{ActionOutcome, ActionRuntime, ActionSpec, CancelToken, OutputSink};
use tinker_core::{Error, Result};

/// A built-in action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Builtin {
    /// Stream an image to a disk (`IMG_URL`, `DEST_DISK`, `COMPRESSED`, optional `CHECKSUM=sha256:HEX`).
    Image2Disk,
    /// Write a file into a partition (`DEST_DISK`, `FS_TYPE`, `DEST_PATH`, `CONTENTS`, `UID`, `GID`, `MODE`, `DIRMODE`).
    WriteFile,
    /// Run a command in a partition, chrooted (`BLOCK_DEVICE`, `FS_TYPE`, `CHROOT`, `CMD_LINE`, `DEFAULT_INTERPRETER`).
    Cexec,
    /// Load the installed kernel; the jump happens after the report (`BLOCK_DEVICE`, `FS_TYPE`, `KERNEL_PATH`, `INITRD_PATH`, `CMD_LINE`).
    Kexec,
    /// Reboot, after the report.
    Reboot,
    /// Run the action's command on the machine itself (volumes bind-mounted in a
    /// private mount namespace).
    Exec,
}

/// What the worker agent does after it has reported an action's success.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FinalStep {
    /// `kexec -e` (with this `kexec` program): jump into the loaded kernel.
    KexecExecute(PathBuf),
    /// `reboot -f` (with this program).
    Reboot(PathBuf),
}

impl FinalStep {
    /// Takes the step. On success on a real machine it does not return.
    pub async fn take(&self) -> Result<()> {
        match self {
            FinalStep::KexecExecute(p) => process::helper(&p.to_string_lossy(), &["-e"]).await,
            FinalStep::Reboot(p) => process::helper(&p.to_string_lossy(), &["-f"]).await,
        }
    }
}

/// What a running built-in sees: its spec, where its output goes, its stop
/// signal, where it says what it cleaned, and the runtime's settings (work dir,
/// programs, clock, grace).
struct Ctx<'a> {
    spec: &'a ActionSpec,
    out: &'a dyn OutputSink,
    /// Fires when the action must stop (cancelled, or past its time limit): the
    /// built-in stops its processes and releases its mounts, then returns.
    stop: CancelToken,
    cleanup: Mutex<CleanupReport>,
    runtime: &'a NativeRuntime,
}

impl Ctx<'_> {
    /// How the built-in's processes are stopped.
    fn supervision(&self) -> Supervision<'_> {
        Supervision {
            stop: &self.stop,
            grace: self.runtime.grace,
            clock: self.runtime.clock.as_ref(),
            cleanup: &self.cleanup,
        }
    }
}

/// How long past the grace a stopping built-in may take to release what it
/// holds (unmount, reap) before the runtime drops it and its guards clean up.
const RELEASE_MARGIN: Duration = Duration::from_secs(10);

/// One built-in in the registration table.
struct Entry {
    /// Which built-in it is.
    builtin: Builtin,
    /// Its image name without registry prefix or tag (`image2disk`).
    name: &'static str,
    /// Runs it.
    start: for<'a> fn(&'a Ctx<'a>) -> BoxFuture<'a, Result<ActionOutcome>>,
    /// What the agent does after its success is reported.
    final_step: fn(&NativeRuntime) -> Option<FinalStep>,
}

/// For the built-ins that leave the machine as it is.
fn no_final_step(_: &NativeRuntime) -> Option<FinalStep> {
    None
}

/// The registration table: every built-in, once.
const ACTIONS: &[Entry] = &[
    image2disk::ENTRY,
    writefile::ENTRY,
    cexec::ENTRY,
    kexec::ENTRY,
    reboot::ENTRY,
    exec::ENTRY,
];

/// The registries the hub actions are published under; each built-in is known
/// by its bare name and under each of these.
const PREFIXES: &[&str] = &[
    "",
    "quay.io/tinkerbell/actions/",
    "quay.io/tinkerbell-actions/",
    "ghcr.io/tinkerbell/actions/",
    "tinker/",
];

/// The table's entry for a built-in (every variant has one: the test
/// `every_builtin_is_registered_once` checks it).
fn entry(b: Builtin) -> Option<&'static Entry> {
    ACTIONS.iter().find(|e| e.builtin == b)
}

/// Runs the built-in actions.
#[derive(Debug, Clone)]
pub struct NativeRuntime {
    table: BTreeMap<String, Builtin>,
    work_dir: PathBuf,
    kexec: PathBuf,
    reboot: PathBuf,
    clock: SharedClock,
    grace: Duration,
    image_files: Option<PathBuf>,
}

impl Default for NativeRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl NativeRuntime {
    /// A runtime that knows the Tinkerbell hub images by name.
    pub fn new() -> Self {
        let mut table = BTreeMap::new();
        for e in ACTIONS {
            for prefix in PREFIXES {
                table.insert(format!("{prefix}{}", e.name), e.builtin);
            }
        }
        NativeRuntime {
            table,
            work_dir: std::env::temp_dir(),
            kexec: "kexec".into(),
            reboot: "reboot".into(),
            clock: SystemClock::shared(),
            grace: DEFAULT_GRACE,
            image_files: None,
        }
    }

    /// Maps another image name (without tag) to a built-in.
    pub fn map(mut self, image: &str, builtin: Builtin) -> Self {
        self.table.insert(strip_tag(image).to_string(), builtin);
        self
    }

    /// Where partitions are mounted while an action works on them.
    pub fn with_work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = dir.into();
        self
    }

    /// Uses these programs for `kexec` and `reboot` (tests use stubs that record
    /// what they were asked).
    pub fn with_programs(mut self, kexec: impl Into<PathBuf>, reboot: impl Into<PathBuf>) -> Self {
        self.kexec = kexec.into();
        self.reboot = reboot.into();
        self
    }

    /// Reads time (time limits, progress rates) from `clock` instead of the
    /// system clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Gives a stopped action's processes `grace` (on the runtime's clock)
    /// between SIGTERM and SIGKILL (default [`DEFAULT_GRACE`]).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Lets `image2disk` write to a regular file under `dir` (a simulated
    /// machine's disk, a benchmark's output) as well as to block devices. Without
    /// it a `DEST_DISK` that is not a block device is refused, so a typo never
    /// fills the in-memory OS with a file in `/dev`.
    pub fn with_image_files_under(mut self, dir: impl Into<PathBuf>) -> Self {
        self.image_files = Some(dir.into());
        self
    }

    /// The built-in an image name stands for.
    pub fn builtin(&self, image: &str) -> Option<Builtin> {
        self.table.get(strip_tag(image)).copied()
    }

    /// What the agent must do after reporting this action's success.
    pub fn final_step(&self, spec: &ActionSpec) -> Option<FinalStep> {
        (entry(self.builtin(&spec.image)?)?.final_step)(self)
    }
}

fn strip_tag(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => &image[..i],
        _ => image,
    }
}

fn failed(message: String) -> ActionOutcome {
    ActionOutcome::Failed {
        exit_code: None,
        message,
    }
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Remote {
        target: path.display().to_string(),
        reason: e.to_string(),
    }
}

#[async_trait]
impl ActionRuntime for NativeRuntime {
    async fn run(
        &self,
        spec: &ActionSpec,
        output: &dyn OutputSink,
        cancel: &CancelToken,
    ) -> Result<ActionOutcome> {
        let Some(e) = self.builtin(&spec.image).and_then(entry) else {
            return Err(Error::Unsupported {
                target: "native runtime".into(),
                operation: format!("image {:?} (no built-in by that name)", spec.image),
            });
        };
        let cx = Ctx {
            spec,
            out: output,
            stop: CancelToken::new(),
            cleanup: Mutex::new(CleanupReport::new(self.grace)),
            runtime: self,
        };
        // A panic in a built-in fails its action, not the agent; the guards
        // (mounts, process groups) clean up as it unwinds.
        let mut work = Box::pin(AssertUnwindSafe((e.start)(&cx)).catch_unwind());
        let limit = async {
            match spec.timeout {
                Some(t) => self.clock.sleep(t).await,
                None => std::future::pending::<()>().await,
            }
        };
        let why = tokio::select! {
            r = &mut work => return settle(e.name, r),
            () = limit => StopReason::Timeout,
            () = cancel.cancelled() => StopReason::Cancelled,
        };
        // Stopping is a protocol, not a dropped future: the built-in hears the
        // stop, signals its processes, waits the grace, kills what is left and
        // unmounts; only one that does not finish in time is dropped (its
        // guards then kill and unmount).
        cx.stop.cancel();
        tokio::select! {
            _ = &mut work => {}
            () = self.clock.sleep(self.grace + RELEASE_MARGIN) => {
                tracing::warn!(action = %spec.name, "a stopped built-in did not finish in time; dropping it");
            }
        }
        drop(work);
        let report = cx.cleanup.into_inner().unwrap_or_else(|p| p.into_inner());
        Ok(stopped(spec, output, why, &report))
    }
}

/// The outcome of a built-in that ended by itself.
fn settle(name: &str, r: std::thread::Result<Result<ActionOutcome>>) -> Result<ActionOutcome> {
    match r {
        Ok(Ok(o)) => Ok(o),
        // A contract violation is the action's failure, not the runtime's.
        Ok(Err(e @ (Error::Unsupported { .. } | Error::Remote { .. }))) => {
            Ok(failed(e.to_string()))
        }
        Ok(Err(e)) => Err(e),
        Err(panic) => {
            let what = tinker_core::panic_message(panic.as_ref());
            tracing::error!(action = name, panic = %what, "a built-in action panicked");
            Ok(failed(format!(
                "the {name} action failed unexpectedly (panic: {what})"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_is_registered_once() {
        let all = [
            Builtin::Image2Disk,
            Builtin::WriteFile,
            Builtin::Cexec,
            Builtin::Kexec,
            Builtin::Reboot,
            Builtin::Exec,
        ];
        for b in all {
            assert_eq!(
                ACTIONS.iter().filter(|e| e.builtin == b).count(),
                1,
                "{b:?}"
            );
        }
        assert_eq!(ACTIONS.len(), all.len());
    }

    #[test]
    fn images_name_builtins_with_any_prefix_and_tag() {
        let rt = NativeRuntime::new().map("example.com/acme/flash:v2", Builtin::Image2Disk);
        assert_eq!(
            rt.builtin("quay.io/tinkerbell/actions/writefile:latest"),
            Some(Builtin::WriteFile)
        );
        assert_eq!(rt.builtin("cexec@sha256:abcd"), Some(Builtin::Cexec));
        assert_eq!(
            rt.builtin("example.com/acme/flash:v3"),
            Some(Builtin::Image2Disk)
        );
        assert_eq!(rt.builtin("localhost:5000/other"), None);
    }

    #[test]
    fn only_kexec_and_reboot_leave_a_final_step() {
        let rt = NativeRuntime::new().with_programs("/k", "/r");
        let spec = |image: &str| ActionSpec {
            workflow: "default/wf".into(),
            name: image.into(),
            image: image.into(),
            command: vec![],
            environment: Default::default(),
            volumes: vec![],
            pid: None,
            timeout: None,
        };
        assert_eq!(
            rt.final_step(&spec("kexec")),
            Some(FinalStep::KexecExecute("/k".into()))
        );
        assert_eq!(
            rt.final_step(&spec("reboot")),
            Some(FinalStep::Reboot("/r".into()))
        );
        assert_eq!(rt.final_step(&spec("writefile")), None);
        assert_eq!(rt.final_step(&spec("busybox")), None);
    }
}
