//! Mounting a partition for the time an action works on it, and unmounting it
//! whatever the action's result.

use crate::process;
use std::path::{Path, PathBuf};
use tinker_core::{Error, Result};

/// Mounts `dev` (filesystem `fs`) on a fresh directory under `work_dir`, runs `f`
/// on it, unmounts it and removes the directory. The action's error wins over an
/// unmount error.
pub(super) async fn mounted<T>(
    work_dir: &Path,
    dev: &str,
    fs: &str,
    f: impl AsyncFnOnce(&Path) -> Result<T>,
) -> Result<T> {
    let dir = tempdir_in(work_dir)?;
    process::helper("mount", &["-t", fs, dev, &dir.to_string_lossy()]).await?;
    let result = f(&dir).await;
    let unmounted = process::helper("umount", &[&dir.to_string_lossy()]).await;
    let _ = std::fs::remove_dir(&dir);
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
