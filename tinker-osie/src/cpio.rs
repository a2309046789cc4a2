//! The initramfs archive: the kernel's `newc` cpio format, written so the same
//! tree always gives the same bytes.
//!
//! Hand-written rather than taken from a crate because reproducibility lives in
//! exactly the fields a general writer takes from the file system: every entry
//! gets the fixed `mtime`, owner 0:0, and an inode number counted in path
//! order; the format itself is a 110-byte ASCII header per entry
//! (`Documentation/driver-api/early-userspace/buffer-format.rst`).

use crate::tree::{Node, Tree};
use std::io::Write;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

struct Header<'a> {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    rdev: (u32, u32),
    name: &'a str,
}

fn pad4(out: &mut impl Write, len: usize) -> std::io::Result<()> {
    let pad = (4 - len % 4) % 4;
    out.write_all(&[0u8; 3][..pad])
}

fn header(out: &mut impl Write, h: &Header) -> std::io::Result<()> {
    let namesize = h.name.len() + 1;
    write!(
        out,
        "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
        h.ino, h.mode, 0, 0, h.nlink, h.mtime, h.size, 0, 0, h.rdev.0, h.rdev.1, namesize, 0
    )?;
    out.write_all(h.name.as_bytes())?;
    out.write_all(&[0])?;
    pad4(out, 110 + namesize)
}

/// Writes `tree` as a `newc` archive with every timestamp `mtime`.
///
/// A file over 4 GiB cannot be in a `newc` archive; it is refused.
pub fn write_newc(tree: &Tree, mtime: u32, out: &mut impl Write) -> std::io::Result<()> {
    for (i, (path, node)) in tree.iter().enumerate() {
        let ino = i as u32 + 1;
        let (mode, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match node {
            Node::Dir => (S_IFDIR | 0o755, 2, &[], (0, 0)),
            Node::File { data, mode } => (S_IFREG | (mode & 0o7777), 1, data, (0, 0)),
            Node::Symlink(target) => (S_IFLNK | 0o777, 1, target.as_bytes(), (0, 0)),
            Node::CharDev { major, minor } => (S_IFCHR | 0o600, 1, &[], (*major, *minor)),
        };
        let size = u32::try_from(data.len()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{path}: over 4 GiB, too large for a newc archive"),
            )
        })?;
        header(
            out,
            &Header {
                ino,
                mode,
                nlink,
                mtime,
                size,
                rdev,
                name: path,
            },
        )?;
        out.write_all(data)?;
        pad4(out, data.len())?;
    }
    header(
        out,
        &Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            size: 0,
            rdev: (0, 0),
            name: "TRAILER!!!",
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(order: &[&str]) -> Tree {
        let mut t = Tree::new();
        for p in order {
            match *p {
                "init" => t.file("init", b"#!/bin/sh\n".to_vec(), 0o755),
                "bin/sh" => t.symlink("bin/sh", "busybox"),
                "dev/console" => t.insert("dev/console", Node::CharDev { major: 5, minor: 1 }),
                _ => unreachable!(),
            }
        }
        t
    }

    #[test]
    fn same_tree_same_bytes_whatever_the_insertion_order() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_newc(&sample(&["init", "bin/sh", "dev/console"]), 1, &mut a).unwrap();
        write_newc(&sample(&["dev/console", "bin/sh", "init"]), 1, &mut b).unwrap();
        assert_eq!(a, b);
        // The mtime is in the bytes, so a different one would change them.
        let mut c = Vec::new();
        write_newc(&sample(&["init", "bin/sh", "dev/console"]), 2, &mut c).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn the_archive_reads_back_with_the_system_cpio() {
        let Ok(o) = std::process::Command::new("cpio").arg("--version").output() else {
            eprintln!("skipped: no cpio");
            return;
        };
        assert!(o.status.success());
        let mut bytes = Vec::new();
        write_newc(
            &sample(&["init", "bin/sh", "dev/console"]),
            1_700_000_000,
            &mut bytes,
        )
        .unwrap();
        assert_eq!(bytes.len() % 4, 0, "entries are padded to 4 bytes");
        let mut child = std::process::Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{listing}");
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 5, "{listing}");
        assert!(
            lines[0].starts_with("drwxr-xr-x") && lines[0].ends_with(" bin"),
            "{listing}"
        );
        assert!(
            lines[1].starts_with("lrwxrwxrwx") && lines[1].ends_with("bin/sh -> busybox"),
            "{listing}"
        );
        assert!(
            lines[3].starts_with("crw-------") && lines[3].contains("5,"),
            "{listing}"
        );
        assert!(
            lines[4].starts_with("-rwxr-xr-x")
                && lines[4].contains(" root ")
                && lines[4].ends_with(" init"),
            "{listing}"
        );
    }
}
