//! Paths inside a mounted image, resolved as if the image's root were `/`: `..`
//! stops at the root and an absolute symlink (Debian's `/var/run -> /run`) points
//! into the image, never out to the in-memory OS the agent runs in. The kernel
//! does the resolution (`openat2` with `RESOLVE_IN_ROOT`, Linux 5.6 and later),
//! so a symlink swapped in mid-way cannot escape either.

use rustix::fs::{Mode, OFlags, ResolveFlags, openat2};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use tinker_core::{Error, Result};

/// An image's root, open, to resolve paths under.
pub(super) struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    /// Opens the mount point `path` as a root.
    pub(super) fn open(path: &Path) -> Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| failure(path, e))?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Opens `relative` (a path inside the image, without a leading `/`) with
    /// `flags`, resolving every component inside the image.
    pub(super) fn open_at(
        &self,
        relative: &Path,
        flags: OFlags,
        mode: Mode,
    ) -> rustix::io::Result<OwnedFd> {
        let rel: &Path = if relative.as_os_str().is_empty() {
            Path::new(".")
        } else {
            relative
        };
        openat2(
            self.fd.as_fd(),
            rel,
            flags | OFlags::CLOEXEC,
            mode,
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// Where `relative` really is on this machine (under the mount point),
    /// resolved inside the image; it must exist.
    pub(super) fn real_path(&self, relative: &Path) -> Result<PathBuf> {
        let fd = self
            .open_at(relative, OFlags::PATH, Mode::empty())
            .map_err(|e| failure(&self.path.join(relative), e))?;
        let real = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ))
        .map_err(|e| Error::Remote {
            target: self.path.join(relative).display().to_string(),
            reason: e.to_string(),
        })?;
        // Belt and braces: the kernel kept it inside; say so if it ever did not.
        let root = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        if !real.starts_with(&root) {
            return Err(Error::Unsupported {
                target: "native action".into(),
                operation: format!("{} resolves outside the image", relative.display()),
            });
        }
        Ok(real)
    }

    /// The mount point.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

/// Checks that `key`'s value is an absolute path without `..`, and returns it
/// relative to the image's root.
pub(super) fn inside<'a>(key: &str, value: &'a str) -> Result<&'a Path> {
    let p = Path::new(value);
    let ok = p.is_absolute() && !p.components().any(|c| c == Component::ParentDir);
    if !ok {
        return Err(Error::Unsupported {
            target: "native action".into(),
            operation: format!("{key}={value:?} (must be an absolute path without '..')"),
        });
    }
    Ok(p.strip_prefix("/").unwrap_or(p))
}

/// An error of a resolution, with the path; a kernel without `openat2` says so.
pub(super) fn failure(path: &Path, e: rustix::io::Errno) -> Error {
    let reason = if e == rustix::io::Errno::NOSYS {
        "this kernel lacks openat2 (Linux 5.6 or later is needed to write inside an image safely)"
            .to_string()
    } else if e == rustix::io::Errno::XDEV {
        "a path that leaves the image through a symlink".to_string()
    } else {
        std::io::Error::from(e).to_string()
    };
    Error::Remote {
        target: path.display().to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_symlinks_and_dotdot_stay_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("run")).unwrap();
        std::fs::create_dir(root.path().join("var")).unwrap();
        std::os::unix::fs::symlink("/run", root.path().join("var/run")).unwrap();
        // An absolute link to a host path, and one that climbs with `..`.
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../../tmp", root.path().join("climb")).unwrap();
        let r = Root::open(root.path()).unwrap();
        let real = r.real_path(Path::new("var/run")).unwrap();
        assert_eq!(
            real,
            std::fs::canonicalize(root.path().join("run")).unwrap()
        );
        // The host file is not found through the link: the link means the
        // image's own path of that name.
        assert!(r.real_path(Path::new("abs")).is_err());
        let climbed = r.real_path(Path::new("climb"));
        assert!(climbed.is_err(), "{climbed:?}");
        assert!(inside("KERNEL_PATH", "/boot/../../etc/shadow").is_err());
        assert!(inside("KERNEL_PATH", "boot/vmlinuz").is_err());
        assert_eq!(
            inside("KERNEL_PATH", "/boot/vmlinuz").unwrap(),
            Path::new("boot/vmlinuz")
        );
    }
}
