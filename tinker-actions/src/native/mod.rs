//! The native runtime: Tinkerbell's hub actions built in, honouring their
//! environment contracts, selected by image name through a table the caller can
//! extend (`quay.io/tinkerbell/actions/image2disk:latest` → [`Builtin::Image2Disk`]).

mod image2disk;

use crate::process;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tinker_core::runtime::{
    ActionOutcome, ActionRuntime, ActionSpec, CancelToken, OutputSink, Stream,
};
use tinker_core::{Error, Result};
use tokio::process::Command;

/// A built-in action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Runs the built-in actions.
#[derive(Debug, Clone)]
pub struct NativeRuntime {
    table: BTreeMap<String, Builtin>,
    work_dir: PathBuf,
    kexec: PathBuf,
    reboot: PathBuf,
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
        for (name, b) in [
            ("image2disk", Builtin::Image2Disk),
            ("writefile", Builtin::WriteFile),
            ("cexec", Builtin::Cexec),
            ("kexec", Builtin::Kexec),
            ("reboot", Builtin::Reboot),
            ("exec", Builtin::Exec),
        ] {
            for prefix in [
                "",
                "quay.io/tinkerbell/actions/",
                "quay.io/tinkerbell-actions/",
                "ghcr.io/tinkerbell/actions/",
                "tinker/",
            ] {
                table.insert(format!("{prefix}{name}"), b);
            }
        }
        NativeRuntime {
            table,
            work_dir: std::env::temp_dir(),
            kexec: "kexec".into(),
            reboot: "reboot".into(),
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

    /// The built-in an image name stands for.
    pub fn builtin(&self, image: &str) -> Option<Builtin> {
        self.table.get(strip_tag(image)).copied()
    }

    /// What the agent must do after reporting this action's success.
    pub fn final_step(&self, spec: &ActionSpec) -> Option<FinalStep> {
        match self.builtin(&spec.image)? {
            Builtin::Kexec => Some(FinalStep::KexecExecute(self.kexec.clone())),
            Builtin::Reboot => Some(FinalStep::Reboot(self.reboot.clone())),
            _ => None,
        }
    }

    async fn dispatch(
        &self,
        b: Builtin,
        spec: &ActionSpec,
        out: &dyn OutputSink,
        cancel: &CancelToken,
    ) -> Result<ActionOutcome> {
        let env = &spec.environment;
        match b {
            Builtin::Image2Disk => image2disk::run(env, out, cancel).await,
            Builtin::WriteFile => self.writefile(env, out).await,
            Builtin::Cexec => self.cexec(spec, out, cancel).await,
            Builtin::Kexec => self.kexec_load(env, out).await,
            Builtin::Reboot => {
                out.line(
                    Stream::Stdout,
                    "reboot: the machine reboots once this success is reported",
                );
                Ok(ActionOutcome::Success)
            }
            Builtin::Exec => exec(spec, out, cancel).await,
        }
    }

    async fn mounted<T>(
        &self,
        dev: &str,
        fs: &str,
        f: impl AsyncFnOnce(&Path) -> Result<T>,
    ) -> Result<T> {
        let dir = tempdir_in(&self.work_dir)?;
        process::helper("mount", &["-t", fs, dev, &dir.to_string_lossy()]).await?;
        let result = f(&dir).await;
        let unmounted = process::helper("umount", &[&dir.to_string_lossy()]).await;
        let _ = std::fs::remove_dir(&dir);
        let value = result?;
        unmounted?;
        Ok(value)
    }

    async fn writefile(
        &self,
        env: &BTreeMap<String, String>,
        out: &dyn OutputSink,
    ) -> Result<ActionOutcome> {
        let dev = need(env, "DEST_DISK")?;
        let fs = need(env, "FS_TYPE")?;
        let path = need(env, "DEST_PATH")?;
        if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
            return Ok(failed(format!(
                "DEST_PATH {path:?} must be absolute and must not contain '..'"
            )));
        }
        let contents = env.get("CONTENTS").cloned().unwrap_or_default();
        let mode = octal(env, "MODE", 0o644)?;
        let dirmode = octal(env, "DIRMODE", 0o755)?;
        let uid = number(env, "UID", 0)?;
        let gid = number(env, "GID", 0)?;
        let owned = !matches!(fs, "vfat" | "fat" | "msdos" | "exfat");
        if matches!(fs, "vfat" | "fat" | "msdos") {
            // FAT keeps no owner or mode, and mtools writes it without a mount:
            // no kernel FAT driver needed (in-memory OS kernels often lack it).
            return fat_write(dev, path, contents.as_bytes(), out).await;
        }
        self.mounted(dev, fs, async |root: &Path| {
            use std::os::unix::fs::{PermissionsExt, chown};
            let target = root.join(path.trim_start_matches('/'));
            let mut dir = root.to_path_buf();
            if let Some(parent) = Path::new(path.trim_start_matches('/')).parent() {
                for c in parent.components() {
                    dir.push(c);
                    if !dir.exists() {
                        std::fs::create_dir(&dir).map_err(|e| io(&dir, e))?;
                        if owned {
                            std::fs::set_permissions(
                                &dir,
                                std::fs::Permissions::from_mode(dirmode),
                            )
                            .map_err(|e| io(&dir, e))?;
                            chown(&dir, Some(uid), Some(gid)).map_err(|e| io(&dir, e))?;
                        }
                    }
                }
            }
            std::fs::write(&target, contents.as_bytes()).map_err(|e| io(&target, e))?;
            if owned {
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| io(&target, e))?;
                chown(&target, Some(uid), Some(gid)).map_err(|e| io(&target, e))?;
            }
            Ok(())
        })
        .await?;
        let note = if owned {
            format!(" mode {mode:o} owner {uid}:{gid}")
        } else {
            format!(" ({fs} keeps no owner or mode)")
        };
        out.line(
            Stream::Stdout,
            &format!(
                "writefile: wrote {} bytes to {path} on {dev}{note}",
                contents.len()
            ),
        );
        Ok(ActionOutcome::Success)
    }

    async fn cexec(
        &self,
        spec: &ActionSpec,
        out: &dyn OutputSink,
        cancel: &CancelToken,
    ) -> Result<ActionOutcome> {
        let env = &spec.environment;
        let dev = need(env, "BLOCK_DEVICE")?;
        let fs = need(env, "FS_TYPE")?;
        let cmd_line = need(env, "CMD_LINE")?;
        let chroot = env.get("CHROOT").is_some_and(|v| v == "y" || v == "true");
        let interpreter: Vec<String> = env
            .get("DEFAULT_INTERPRETER")
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
        let timeout = spec.timeout;
        self.mounted(dev, fs, async |root: &Path| {
            let mut binds = Vec::new();
            if chroot {
                for d in ["dev", "proc", "sys"] {
                    let target = root.join(d);
                    let _ = std::fs::create_dir_all(&target);
                    process::helper(
                        "mount",
                        &["--bind", &format!("/{d}"), &target.to_string_lossy()],
                    )
                    .await?;
                    binds.push(target);
                }
            }
            let mut cmd = if chroot {
                let mut c = Command::new("chroot");
                c.arg(root).args(&interpreter);
                c
            } else {
                let mut c = Command::new(&interpreter[0]);
                c.args(&interpreter[1..]).current_dir(root);
                c
            };
            cmd.arg(cmd_line);
            let outcome = process::run(cmd, "cexec", out, timeout, cancel).await;
            for b in binds.iter().rev() {
                let _ = process::helper("umount", &["-l", &b.to_string_lossy()]).await;
            }
            outcome
        })
        .await
    }

    async fn kexec_load(
        &self,
        env: &BTreeMap<String, String>,
        out: &dyn OutputSink,
    ) -> Result<ActionOutcome> {
        let dev = need(env, "BLOCK_DEVICE")?;
        let fs = need(env, "FS_TYPE")?;
        let kernel = need(env, "KERNEL_PATH")?;
        let initrd = env.get("INITRD_PATH").cloned();
        let cmd_line = env.get("CMD_LINE").cloned().unwrap_or_default();
        self.mounted(dev, fs, async |root: &Path| {
            let k = root
                .join(kernel.trim_start_matches('/'))
                .to_string_lossy()
                .to_string();
            let mut args = vec!["-l".to_string(), k, format!("--command-line={cmd_line}")];
            if let Some(i) = &initrd {
                args.push(format!(
                    "--initrd={}",
                    root.join(i.trim_start_matches('/')).display()
                ));
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            process::helper(&self.kexec.to_string_lossy(), &refs).await
        })
        .await?;
        out.line(
            Stream::Stdout,
            &format!("kexec: loaded {kernel} from {dev}; it starts once this success is reported"),
        );
        Ok(ActionOutcome::Success)
    }
}

/// Writes a file into a FAT filesystem with mtools.
async fn fat_write(
    dev: &str,
    path: &str,
    contents: &[u8],
    out: &dyn OutputSink,
) -> Result<ActionOutcome> {
    let image = dev.to_string();
    let mut dir = String::new();
    if let Some(parent) = Path::new(path).parent() {
        for c in parent.components().skip(1) {
            dir.push('/');
            dir.push_str(&c.as_os_str().to_string_lossy());
            // An existing directory is fine; any other failure shows at mcopy.
            let _ = process::helper("mmd", &["-i", &image, &format!("::{dir}")]).await;
        }
    }
    let tmp = std::env::temp_dir().join(format!("tinker-writefile-{}", std::process::id()));
    std::fs::write(&tmp, contents).map_err(|e| io(&tmp, e))?;
    let copied = process::helper(
        "mcopy",
        &[
            "-o",
            "-i",
            &image,
            &tmp.to_string_lossy(),
            &format!("::{path}"),
        ],
    )
    .await;
    let _ = std::fs::remove_file(&tmp);
    copied?;
    out.line(Stream::Stdout, &format!("writefile: wrote {} bytes to {path} on {dev} (FAT, by mtools; FAT keeps no owner or mode)", contents.len()));
    Ok(ActionOutcome::Success)
}

/// `exec`: the action's command on this machine, with its environment; volumes
/// are bind-mounted in a private mount namespace, as a container would see them.
async fn exec(
    spec: &ActionSpec,
    out: &dyn OutputSink,
    cancel: &CancelToken,
) -> Result<ActionOutcome> {
    let Some((program, args)) = spec.command.split_first() else {
        return Ok(failed("exec needs a command".into()));
    };
    let mut cmd = if spec.volumes.is_empty() {
        let mut c = Command::new(program);
        c.args(args);
        c
    } else {
        let mut script = String::from("set -e\n");
        for v in &spec.volumes {
            let mut parts = v.splitn(3, ':');
            let (host, inside, opts) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            if host.is_empty() || inside.is_empty() {
                return Ok(failed(format!("volume {v:?} is not host:path[:ro]")));
            }
            script.push_str(&format!(
                "mkdir -p '{inside}'\nmount --bind '{host}' '{inside}'\n"
            ));
            if opts.split(',').any(|o| o == "ro") {
                script.push_str(&format!("mount -o remount,bind,ro '{inside}'\n"));
            }
        }
        script.push_str("exec \"$@\"\n");
        let mut c = Command::new("unshare");
        c.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "exec",
        ])
        .arg(program)
        .args(args);
        c
    };
    cmd.envs(&spec.environment);
    process::run(cmd, &format!("exec {program}"), out, spec.timeout, cancel).await
}

fn strip_tag(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => &image[..i],
        _ => image,
    }
}

fn need<'a>(env: &'a BTreeMap<String, String>, key: &str) -> Result<&'a str> {
    env.get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::Unsupported {
            target: "native action".into(),
            operation: format!("running without {key} (required by this action's contract)"),
        })
}

fn octal(env: &BTreeMap<String, String>, key: &str, default: u32) -> Result<u32> {
    match env.get(key) {
        None => Ok(default),
        Some(v) => u32::from_str_radix(v.trim().trim_start_matches("0o"), 8).map_err(|_| {
            Error::Unsupported {
                target: "native action".into(),
                operation: format!("{key}={v:?} (expected an octal mode such as 0644)"),
            }
        }),
    }
}

fn number(env: &BTreeMap<String, String>, key: &str, default: u32) -> Result<u32> {
    match env.get(key) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| Error::Unsupported {
            target: "native action".into(),
            operation: format!("{key}={v:?} (expected a number)"),
        }),
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

fn tempdir_in(dir: &Path) -> Result<PathBuf> {
    // A minimal image may lack /tmp.
    let _ = std::fs::create_dir_all(dir);
    for i in 0..1000u32 {
        let p = dir.join(format!("tinker-mnt-{}-{i}", std::process::id()));
        if std::fs::create_dir(&p).is_ok() {
            return Ok(p);
        }
    }
    Err(Error::Remote {
        target: dir.display().to_string(),
        reason: "cannot make a mount point".into(),
    })
}

#[async_trait]
impl ActionRuntime for NativeRuntime {
    async fn run(
        &self,
        spec: &ActionSpec,
        output: &dyn OutputSink,
        cancel: &CancelToken,
    ) -> Result<ActionOutcome> {
        let Some(b) = self.builtin(&spec.image) else {
            return Err(Error::Unsupported {
                target: "native runtime".into(),
                operation: format!("image {:?} (no built-in by that name)", spec.image),
            });
        };
        let work = self.dispatch(b, spec, output, cancel);
        let limit = async {
            match spec.timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending::<()>().await,
            }
        };
        // The process-based built-ins enforce time and cancellation themselves;
        // this bounds the in-process ones (image2disk, writefile) too.
        tokio::select! {
            r = work => match r {
                Ok(o) => Ok(o),
                // A contract violation is the action's failure, not the runtime's.
                Err(e @ (Error::Unsupported { .. } | Error::Remote { .. })) => Ok(failed(e.to_string())),
                Err(e) => Err(e),
            },
            _ = limit => Ok(ActionOutcome::Timeout { message: format!("stopped after {} s", spec.timeout.unwrap_or(Duration::ZERO).as_secs()) }),
            _ = cancel.cancelled() => Ok(failed("cancelled".into())),
        }
    }
}
