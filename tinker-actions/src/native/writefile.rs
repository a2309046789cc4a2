//! `writefile`: write a file into a partition (`DEST_DISK`, `FS_TYPE`,
//! `DEST_PATH`, `CONTENTS`, `UID`, `GID`, `MODE`, `DIRMODE`), creating its
//! directories. FAT is written with mtools, without a mount.

use super::env::{need, number, octal};
use super::mount::mounted;
use super::{Builtin, Ctx, Entry, failed, io, no_final_step};
use crate::process;
use futures_util::future::BoxFuture;
use std::path::Path;
use tinker_core::Result;
use tinker_core::runtime::{ActionOutcome, OutputSink, Stream};

/// The registration of `writefile`.
pub(super) const ENTRY: Entry = Entry {
    builtin: Builtin::WriteFile,
    name: "writefile",
    start,
    final_step: no_final_step,
};

fn start<'a>(cx: &'a Ctx<'a>) -> BoxFuture<'a, Result<ActionOutcome>> {
    Box::pin(run(cx))
}

/// Owner and modes of what is written (ignored on filesystems without them).
struct Ownership {
    mode: u32,
    dirmode: u32,
    uid: u32,
    gid: u32,
}

async fn run(cx: &Ctx<'_>) -> Result<ActionOutcome> {
    let env = &cx.spec.environment;
    let dev = need(env, "DEST_DISK")?;
    let fs = need(env, "FS_TYPE")?;
    let path = need(env, "DEST_PATH")?;
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return Ok(failed(format!(
            "DEST_PATH {path:?} must be absolute and must not contain '..'"
        )));
    }
    let contents = env.get("CONTENTS").cloned().unwrap_or_default();
    let own = Ownership {
        mode: octal(env, "MODE", 0o644)?,
        dirmode: octal(env, "DIRMODE", 0o755)?,
        uid: number(env, "UID", 0)?,
        gid: number(env, "GID", 0)?,
    };
    if matches!(fs, "vfat" | "fat" | "msdos") {
        // FAT keeps no owner or mode, and mtools writes it without a mount:
        // no kernel FAT driver needed (in-memory OS kernels often lack it).
        return fat_write(dev, path, contents.as_bytes(), cx.out).await;
    }
    let owned = fs != "exfat";
    mounted(&cx.runtime.work_dir, dev, fs, async |root: &Path| {
        write_under(root, path, contents.as_bytes(), owned.then_some(&own))
    })
    .await?;
    let note = if owned {
        format!(" mode {:o} owner {}:{}", own.mode, own.uid, own.gid)
    } else {
        format!(" ({fs} keeps no owner or mode)")
    };
    cx.out.line(
        Stream::Stdout,
        &format!(
            "writefile: wrote {} bytes to {path} on {dev}{note}",
            contents.len()
        ),
    );
    Ok(ActionOutcome::Success)
}

/// Writes `path` (absolute inside the filesystem) under the mount point `root`,
/// making missing directories; sets owner and modes when `own` is given.
fn write_under(root: &Path, path: &str, contents: &[u8], own: Option<&Ownership>) -> Result<()> {
    use std::os::unix::fs::{PermissionsExt, chown};
    let relative = path.trim_start_matches('/');
    let target = root.join(relative);
    let mut dir = root.to_path_buf();
    if let Some(parent) = Path::new(relative).parent() {
        for c in parent.components() {
            dir.push(c);
            if dir.exists() {
                continue;
            }
            std::fs::create_dir(&dir).map_err(|e| io(&dir, e))?;
            if let Some(o) = own {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(o.dirmode))
                    .map_err(|e| io(&dir, e))?;
                chown(&dir, Some(o.uid), Some(o.gid)).map_err(|e| io(&dir, e))?;
            }
        }
    }
    std::fs::write(&target, contents).map_err(|e| io(&target, e))?;
    if let Some(o) = own {
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(o.mode))
            .map_err(|e| io(&target, e))?;
        chown(&target, Some(o.uid), Some(o.gid)).map_err(|e| io(&target, e))?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_under_the_root_making_directories() {
        let root = tempfile::tempdir().unwrap();
        write_under(root.path(), "/etc/deep/hostname", b"sm01", None).unwrap();
        let got = std::fs::read(root.path().join("etc/deep/hostname")).unwrap();
        assert_eq!(got, b"sm01");
    }
}
