//! Mounting a partition for the time an action works on it, and unmounting it on
//! every path out: success, failure, cancellation, a timeout, a panic, or the
//! action's future being dropped. [`Mount`] is a guard: [`Mount::release`]
//! unmounts in order; if it never runs, `Drop` does it.

use crate::cleanup::{CleanupReport, record};
use crate::process;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tinker_core::{Error, Result};

/// A partition mounted on a fresh directory, with the binds made inside it.
pub(super) struct Mount<'a> {
    root: PathBuf,
    /// Bind mounts inside `root`, in the order they were made.
    binds: Vec<PathBuf>,
    mounted: bool,
    cleanup: &'a Mutex<CleanupReport>,
}

impl<'a> Mount<'a> {
    /// Mounts `dev` (filesystem `fs`) on a fresh directory under `work_dir`;
    /// what is unmounted is recorded in `cleanup`.
    pub(super) async fn new(
        work_dir: &Path,
        dev: &str,
        fs: &str,
        cleanup: &'a Mutex<CleanupReport>,
    ) -> Result<Mount<'a>> {
        let root = tempdir_in(work_dir)?;
        if let Err(e) = process::helper("mount", &["-t", fs, dev, &root.to_string_lossy()]).await {
            let _ = std::fs::remove_dir(&root);
            return Err(e);
        }
        Ok(Mount {
            root,
            binds: Vec::new(),
            mounted: true,
            cleanup,
        })
    }

    /// Where the partition is mounted.
    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    /// Binds the host's `host` directory onto `inside` (a directory under the
    /// root, made if missing); it is unmounted before the partition.
    pub(super) async fn bind(&mut self, host: &str, inside: &Path) -> Result<()> {
        let _ = std::fs::create_dir_all(inside);
        process::helper("mount", &["--bind", host, &inside.to_string_lossy()]).await?;
        self.binds.push(inside.to_path_buf());
        Ok(())
    }

    /// Unmounts the binds, then the partition, and removes the directory. An
    /// unmount that fails (busy) is retried lazily, so the mount leaves this
    /// namespace in any case; the error is still returned.
    pub(super) async fn release(mut self) -> Result<()> {
        self.mounted = false;
        let mut first_error = None;
        let targets: Vec<PathBuf> = self
            .binds
            .drain(..)
            .rev()
            .chain([self.root.clone()])
            .collect();
        for t in targets {
            let p = t.to_string_lossy();
            if let Err(e) = process::helper("umount", &[&p]).await {
                let lazy = process::helper("umount", &["-l", &p]).await;
                self.note(&t, lazy.is_ok(), &e);
                first_error.get_or_insert(e);
            } else {
                record(self.cleanup, |r| r.unmounted.push(t.clone()));
            }
        }
        let _ = std::fs::remove_dir(&self.root);
        first_error.map_or(Ok(()), Err)
    }

    fn note(&self, target: &Path, lazily: bool, e: &Error) {
        record(self.cleanup, |r| {
            if lazily {
                r.unmounted.push(target.to_path_buf());
            }
            r.failures.push(format!(
                "umount {}: {e}{}",
                target.display(),
                if lazily { " (detached lazily)" } else { "" }
            ));
        });
    }
}

impl Drop for Mount<'_> {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        // The action's future was dropped or panicked before `release`: unmount
        // here, blocking (this path is the exception; `umount` is quick once the
        // action's processes are gone, and lazy when they are not).
        tracing::warn!(root = %self.root.display(), "unmounting after an action that did not finish");
        let targets: Vec<PathBuf> = self
            .binds
            .drain(..)
            .rev()
            .chain([self.root.clone()])
            .collect();
        for t in targets {
            let ok = |args: &[&std::ffi::OsStr]| {
                std::process::Command::new("umount")
                    .args(args)
                    .output()
                    .is_ok_and(|o| o.status.success())
            };
            if ok(&[t.as_os_str()]) || ok(&["-l".as_ref(), t.as_os_str()]) {
                record(self.cleanup, |r| r.unmounted.push(t.clone()));
            } else {
                record(self.cleanup, |r| {
                    r.failures.push(format!("umount {} failed", t.display()))
                });
            }
        }
        let _ = std::fs::remove_dir(&self.root);
    }
}

/// Mounts `dev` (filesystem `fs`) under `work_dir`, runs `f` on the mount point
/// and unmounts it, whatever `f` did (see [`Mount`]). The action's error wins
/// over an unmount error.
pub(super) async fn mounted<T>(
    work_dir: &Path,
    dev: &str,
    fs: &str,
    cleanup: &Mutex<CleanupReport>,
    f: impl AsyncFnOnce(&Path) -> Result<T>,
) -> Result<T> {
    let mount = Mount::new(work_dir, dev, fs, cleanup).await?;
    let result = f(mount.root()).await;
    let unmounted = mount.release().await;
    let value = result?;
    unmounted?;
    Ok(value)
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
