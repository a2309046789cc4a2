//! `writefile`: write a file into a partition (`DEST_DISK`, `FS_TYPE`,
//! `DEST_PATH`, `CONTENTS`, `UID`, `GID`, `MODE`, `DIRMODE`), creating its
//! directories. FAT is written with mtools, without a mount. The path is
//! resolved inside the image: its symlinks cannot send the write out of it.

use super::env::{need, number, octal};
use super::inroot::{Root, failure, inside};
use super::mount::mounted;
use super::{Builtin, Ctx, Entry, failed, io, no_final_step};
use crate::process;
use futures_util::future::BoxFuture;
use std::path::{Path, PathBuf};
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
    if let Err(e) = inside("DEST_PATH", path) {
        return Ok(failed(e.to_string()));
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
    mounted(
        &cx.runtime.work_dir,
        dev,
        fs,
        &cx.cleanup,
        async |root: &Path| write_under(root, path, contents.as_bytes(), owned.then_some(&own)),
    )
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
/// making missing directories; sets owner and modes when `own` is given. Every
/// component is resolved inside the image ([`Root`]): its symlinks, absolute
/// ones included, lead to the image's own files, never out of it.
fn write_under(root: &Path, path: &str, contents: &[u8], own: Option<&Ownership>) -> Result<()> {
    use rustix::fs::{Gid, Mode, OFlags, Uid, fchmod, fchown, mkdirat};
    use std::io::Write;
    let root = Root::open(root)?;
    let relative = inside("DEST_PATH", path)?;
    let err = |p: &Path, e| failure(&root.path().join(p), e);
    let set_owner = |fd: &std::os::fd::OwnedFd, p: &Path, mode: u32, o: &Ownership| {
        fchmod(fd, Mode::from_raw_mode(mode)).map_err(|e| err(p, e))?;
        fchown(fd, Some(Uid::from_raw(o.uid)), Some(Gid::from_raw(o.gid))).map_err(|e| err(p, e))
    };
    let mut dir = PathBuf::new();
    if let Some(parent) = relative.parent() {
        for c in parent.components() {
            let here = dir.join(c);
            match root.open_at(&here, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()) {
                // An existing directory keeps its owner and mode.
                Ok(_) => {}
                Err(rustix::io::Errno::NOENT) => {
                    let parent_fd = root
                        .open_at(&dir, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
                        .map_err(|e| err(&dir, e))?;
                    let mode = own.map_or(0o755, |o| o.dirmode);
                    mkdirat(&parent_fd, c.as_os_str(), Mode::from_raw_mode(mode))
                        .map_err(|e| err(&here, e))?;
                    if let Some(o) = own {
                        let fd = root
                            .open_at(&here, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
                            .map_err(|e| err(&here, e))?;
                        set_owner(&fd, &here, o.dirmode, o)?;
                    }
                }
                Err(e) => return Err(err(&here, e)),
            }
            dir = here;
        }
    }
    let mode = own.map_or(0o644, |o| o.mode);
    let fd = root
        .open_at(
            relative,
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC,
            Mode::from_raw_mode(mode),
        )
        .map_err(|e| err(relative, e))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| io(&root.path().join(relative), e))?;
    if let Some(o) = own {
        set_owner(&file.into(), relative, o.mode, o)?;
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

    #[test]
    fn an_absolute_symlink_in_the_image_leads_into_the_image() {
        // Debian's /var/run -> /run, and a link to a directory of the host.
        let host = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("var")).unwrap();
        std::fs::create_dir_all(root.path().join("run")).unwrap();
        std::os::unix::fs::symlink("/run", root.path().join("var/run")).unwrap();
        std::os::unix::fs::symlink(host.path(), root.path().join("hostdir")).unwrap();
        write_under(root.path(), "/var/run/tinker-marker", b"in", None).unwrap();
        assert_eq!(
            std::fs::read(root.path().join("run/tinker-marker")).unwrap(),
            b"in"
        );
        // The link to the host's directory means the image's own path of that
        // name, which the image lacks: refused, and nothing made on the host.
        let e = write_under(root.path(), "/hostdir/x/f", b"in", None).unwrap_err();
        assert!(e.to_string().contains("hostdir"), "{e}");
        assert!(!host.path().join("x").exists());
    }
}
