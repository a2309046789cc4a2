//! What goes into the image: the packages, the drivers, the tools, and how
//! apt's answers about them are read. Constants and pure functions only.

use std::collections::BTreeMap;

/// The Debian release the image is built from.
pub const SUITE: &str = "bookworm";

/// The drivers the image loads, by module name: disks (NVMe, AHCI/SATA,
/// virtio, common RAID/HBA), NICs, USB keyboards for the rescue shell, the
/// file systems the native actions mount, and the checksum ext4 asks for.
pub const MODULES: &[&str] = &[
    // Disks.
    "nvme",
    "ahci",
    "sd_mod",
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "megaraid_sas",
    "mpt3sas",
    "smartpqi",
    // eMMC (small machines install there) and USB disks.
    "sdhci_pci",
    "mmc_block",
    "usb_storage",
    "uas",
    // NICs.
    "virtio_net",
    "e1000",
    "e1000e",
    "igb",
    "igc",
    "ixgbe",
    "i40e",
    "ice",
    "bnxt_en",
    "mlx5_core",
    "r8169",
    "tg3",
    "atlantic",
    // USB NICs (a NUC's second port is often one).
    "r8152",
    // A keyboard on the console of a machine whose worker failed.
    "xhci_pci",
    "usbhid",
    "hid_generic",
    // What the native actions mount, and the checksum jbd2 requests.
    "ext4",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
    "crc32c_generic",
];

/// Debian's packages of non-free firmware the drivers above name files from
/// (`ice`: `intel/ice/ddp/ice.pkg`; `r8169`, `r8152`: `rtl_nic/*`; `tg3`:
/// `tigon/*`); only the named files are taken.
pub const FIRMWARE_PACKAGES: &[&str] = &["firmware-misc-nonfree", "firmware-realtek"];

/// The static userland.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";

/// The tools the native actions and a template's shell steps call, by package:
/// partitioning, file systems, kexec, block devices. The names are looked up
/// in the package's `sbin`, `bin`, `usr/sbin` and `usr/bin`.
pub const TOOLS: &[(&str, &[&str])] = &[
    (
        "e2fsprogs",
        &[
            "mke2fs",
            "mkfs.ext2",
            "mkfs.ext3",
            "mkfs.ext4",
            "e2fsck",
            "fsck.ext4",
            "resize2fs",
            "tune2fs",
            "e2label",
        ],
    ),
    (
        "dosfstools",
        &["mkfs.fat", "mkfs.vfat", "fsck.fat", "fsck.vfat", "fatlabel"],
    ),
    ("fdisk", &["sfdisk", "fdisk"]),
    ("gdisk", &["sgdisk", "gdisk"]),
    ("kexec-tools", &["kexec"]),
    (
        "util-linux",
        &[
            "partx",
            "blkid",
            "wipefs",
            "blockdev",
            "blkdiscard",
            "lsblk",
            "findmnt",
            "mkswap",
        ],
    ),
];

/// The libraries the worker itself links (glibc and libgcc_s, of the same
/// release as the tools).
pub const WORKER_LIBRARY_PACKAGES: &[&str] = &["libc6", "libgcc-s1"];

/// Where the worker goes in the image.
pub const WORKER_PATH: &str = "usr/bin/tinker-worker";

/// The kernel metapackage for an architecture (`linux-image-amd64`).
pub fn kernel_metapackage(arch: crate::Arch) -> String {
    format!("linux-image-{}", arch.debian())
}

/// The private sources list: Debian's `main` and `non-free-firmware`, with the
/// release's updates and security fixes, checked with Debian's keyring.
pub fn sources_list(keyring: &str) -> String {
    let mut s = String::new();
    for (url, suite) in [
        ("http://deb.debian.org/debian", SUITE.to_string()),
        ("http://deb.debian.org/debian", format!("{SUITE}-updates")),
        (
            "http://deb.debian.org/debian-security",
            format!("{SUITE}-security"),
        ),
    ] {
        s.push_str(&format!(
            "deb [signed-by={keyring}] {url} {suite} main non-free-firmware\n"
        ));
    }
    s
}

/// One package as `apt-cache show` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageInfo {
    /// `Package:`.
    pub name: String,
    /// `Version:`.
    pub version: String,
    /// `Architecture:` (`amd64`, `all`).
    pub architecture: String,
    /// `Section:` (`libs`, `admin`, `non-free-firmware/kernel`).
    pub section: String,
    /// `Depends:` and `Pre-Depends:`, each group's first alternative, without
    /// versions.
    pub depends: Vec<String>,
}

impl PackageInfo {
    /// The file `apt-get download` writes for it (`:` in the version is `%3a`).
    pub fn deb_file_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.name,
            self.version.replace(':', "%3a"),
            self.architecture
        )
    }
}

/// The package names of a `Depends:` value, each alternative group's first,
/// without version constraints or architecture qualifiers.
pub fn parse_depends(value: &str) -> Vec<String> {
    value
        .split(',')
        .filter_map(|group| {
            let first = group.split('|').next()?.trim();
            let name = first.split([' ', '(']).next()?.trim();
            let name = name.split(':').next()?;
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

/// Reads `apt-cache show --no-all-versions` output: one paragraph per package
/// (the first for each name wins).
pub fn parse_show(text: &str) -> BTreeMap<String, PackageInfo> {
    let mut out = BTreeMap::new();
    for para in text.split("\n\n") {
        let mut p = PackageInfo::default();
        for line in para.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k {
                "Package" => p.name = v.to_string(),
                "Version" => p.version = v.to_string(),
                "Architecture" => p.architecture = v.to_string(),
                "Section" => p.section = v.to_string(),
                "Depends" | "Pre-Depends" => p.depends.extend(parse_depends(v)),
                _ => {}
            }
        }
        if !p.name.is_empty() {
            out.entry(p.name.clone()).or_insert(p);
        }
    }
    out
}

/// The versioned kernel package a metapackage points at
/// (`linux-image-amd64` → `linux-image-6.1.0-57-amd64`).
pub fn kernel_package(meta: &PackageInfo) -> Option<String> {
    meta.depends
        .iter()
        .find(|d| {
            d.starts_with("linux-image-") && d.as_bytes().get(12).is_some_and(u8::is_ascii_digit)
        })
        .cloned()
}

/// Whether a dependency of a tool is a shared-library package, to unpack for
/// the library closure: Debian files those in the `libs` section (`libc6`,
/// `zlib1g`; not `debconf` or `libc-bin`).
pub fn is_library_package(p: &PackageInfo) -> bool {
    p.section == "libs" || p.section.ends_with("/libs")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW: &str = "Package: linux-image-amd64
Source: linux-signed-amd64 (6.1.192+3)
Version: 6.1.192-3
Architecture: amd64
Depends: linux-image-6.1.0-57-amd64 (= 6.1.192-3)

Package: busybox-static
Version: 1:1.35.0-4+deb12u1+b1
Architecture: amd64
Depends: libc6 (>= 2.34), foo | bar:any (>> 1), baz:amd64
Pre-Depends: dpkg

Package: busybox-static
Version: 1:1.30
Architecture: amd64
";

    #[test]
    fn apt_cache_show_is_read_into_packages() {
        let p = parse_show(SHOW);
        assert_eq!(p.len(), 2);
        assert_eq!(
            kernel_package(&p["linux-image-amd64"]).as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        let bb = &p["busybox-static"];
        assert_eq!(
            bb.version, "1:1.35.0-4+deb12u1+b1",
            "the first paragraph wins"
        );
        assert_eq!(bb.depends, ["libc6", "foo", "baz", "dpkg"]);
        assert_eq!(
            bb.deb_file_name(),
            "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb"
        );
    }

    #[test]
    fn the_sources_are_main_and_non_free_firmware_signed() {
        let s = sources_list("/k.gpg");
        assert_eq!(s.lines().count(), 3);
        assert!(s.lines().all(
            |l| l.starts_with("deb [signed-by=/k.gpg] http://deb.debian.org/")
                && l.ends_with(" main non-free-firmware")
        ));
        assert!(s.contains(" bookworm-security "));
    }

    #[test]
    fn library_packages_are_told_from_others() {
        let p = |section: &str| PackageInfo {
            section: section.into(),
            ..Default::default()
        };
        assert!(is_library_package(&p("libs")) && is_library_package(&p("non-free/libs")));
        assert!(!is_library_package(&p("admin")) && !is_library_package(&p("")));
    }
}
