//! The build's edges: the private apt, unpacking, reading the unpacked
//! packages into the image's [`Tree`], and writing `vmlinuz`, `initramfs` and
//! the manifest. The decisions it applies live in [`crate::plan`],
//! [`crate::modules`], [`crate::elf`] and [`crate::init`].
//!
//! Cached under the cache directory: the package lists (fetched again only when
//! asked), every downloaded `.deb`, and every unpacked tree; in the output
//! directory, an `initramfs` whose archive is unchanged is kept as it is.

use crate::apt::{Apt, run};
use crate::modules::{
    ModInfo, ModuleIndex, Selection, modules_alias, modules_dep, parse_modinfo, resolve,
};
use crate::plan::{self, PackageInfo};
use crate::tree::{Node, Tree};
use crate::{Arch, Error, Result, cpio, elf, init};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The timestamp every file of the image carries unless told otherwise
/// (`SOURCE_DATE_EPOCH`): 2023-06-10, Debian 12's release.
pub const DEFAULT_EPOCH: u32 = 1_686_355_200;

/// The zstd level: close to the smallest, and the kernel unpacks it quickly.
pub const DEFAULT_ZSTD_LEVEL: i32 = 15;

/// What to build, where.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The machines' architecture.
    pub arch: Arch,
    /// Where `vmlinuz`, `initramfs` and `manifest` go.
    pub out: PathBuf,
    /// Where the package lists, downloads and unpacked packages are kept.
    pub cache: PathBuf,
    /// Fetch the package lists again (newer packages, a new image).
    pub refresh: bool,
    /// Every file's timestamp in the archive.
    pub mtime: u32,
    /// The zstd compression level.
    pub zstd_level: i32,
}

impl BuildOptions {
    /// The defaults for `arch`, writing to `out`, caching in `cache`.
    pub fn new(arch: Arch, out: PathBuf, cache: PathBuf) -> Self {
        BuildOptions {
            arch,
            out,
            cache,
            refresh: false,
            mtime: DEFAULT_EPOCH,
            zstd_level: DEFAULT_ZSTD_LEVEL,
        }
    }
}

/// The assembled image, before it is written.
#[derive(Debug, Clone)]
pub struct Image {
    /// Its architecture.
    pub arch: Arch,
    /// Its files.
    pub tree: Tree,
    /// The kernel (`vmlinuz`).
    pub kernel: Vec<u8>,
    /// The kernel's release (`6.1.0-57-amd64`).
    pub kernel_release: String,
    /// The modules chosen.
    pub modules: Selection,
    /// The firmware files in the image, with the package each came from.
    pub firmware: BTreeMap<String, String>,
    /// The firmware files the modules name that no package holds.
    pub firmware_missing: Vec<String>,
    /// Every package used, name to version.
    pub packages: BTreeMap<String, String>,
    /// The worker's SHA-256 (after stripping), once added.
    pub worker_sha256: Option<String>,
    /// The unpacked library packages, searched for shared libraries.
    lib_roots: Vec<(String, PathBuf)>,
}

/// What [`Builder::write`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The kernel.
    pub vmlinuz: PathBuf,
    /// The compressed archive.
    pub initramfs: PathBuf,
    /// The manifest.
    pub manifest: PathBuf,
    /// The archive's size in bytes.
    pub initramfs_size: u64,
    /// The archive's SHA-256, hex.
    pub initramfs_sha256: String,
    /// The archive was already there, identical, and was kept.
    pub reused: bool,
}

/// Builds images.
#[derive(Debug)]
pub struct Builder {
    opts: BuildOptions,
    apt: Apt,
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(Error::io(path))
}

/// Follows `rel` inside `root`, symlinks included (absolute targets mean
/// `root`-relative), so a package's links resolve in the package, never on
/// the build machine.
pub fn resolve_in(root: &Path, rel: &str) -> Option<PathBuf> {
    let mut rel = rel.trim_start_matches('/').to_string();
    for _ in 0..16 {
        let p = root.join(&rel);
        let meta = std::fs::symlink_metadata(&p).ok()?;
        if !meta.file_type().is_symlink() {
            return meta.is_file().then_some(p);
        }
        let target = std::fs::read_link(&p).ok()?;
        let target = target.to_string_lossy();
        rel = if let Some(abs) = target.strip_prefix('/') {
            abs.to_string()
        } else {
            let dir = rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            normalize_path(&format!("{dir}/{target}"))?
        };
    }
    None
}

/// `a/b/../c` → `a/c`; `None` if it climbs out of the root.
fn normalize_path(p: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// Unpacks a `.deb` (once) under `<cache>/unpacked/<file name>`.
fn unpack(cache: &Path, deb: &Path) -> Result<PathBuf> {
    let name = deb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dest = cache.join("unpacked").join(name.trim_end_matches(".deb"));
    if dest.is_dir() {
        return Ok(dest);
    }
    // Unpacked beside, then renamed: a build that stops half-way leaves no
    // half tree, and two builds sharing the cache (an `_all` firmware package
    // is both architectures') each unpack to their own place; the first
    // rename wins and the other's copy is dropped.
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let tmp = dest.with_extension(format!(
        "partial-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(Error::io(&tmp))?;
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp))?;
    if let Err(e) = std::fs::rename(&tmp, &dest) {
        let _ = std::fs::remove_dir_all(&tmp);
        if !dest.is_dir() {
            return Err(Error::Io {
                path: dest,
                source: e,
            });
        }
    }
    Ok(dest)
}

/// Every file under `dir`, as paths relative to it, sorted.
fn walk(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let abs = dir.join(&rel);
        for e in std::fs::read_dir(&abs).map_err(Error::io(&abs))? {
            let e = e.map_err(Error::io(&abs))?;
            let r = rel.join(e.file_name());
            let t = e.file_type().map_err(Error::io(e.path()))?;
            if t.is_dir() {
                todo.push(r);
            } else {
                out.push(r.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A module's bytes, decompressed if Debian compressed it (`.ko.xz`), so the
/// image's busybox `insmod` can load it.
fn module_bytes(path: &Path) -> Result<Vec<u8>> {
    let data = read(path)?;
    if path.extension().is_some_and(|e| e == "xz") {
        use std::io::Read;
        let mut out = Vec::new();
        xz2::read::XzDecoder::new(&data[..])
            .read_to_end(&mut out)
            .map_err(Error::io(path))?;
        return Ok(out);
    }
    Ok(data)
}

/// The path a module is stored at in the image (uncompressed).
fn stored(path: &str) -> String {
    path.strip_suffix(".xz").unwrap_or(path).to_string()
}

impl Builder {
    /// A builder with these options.
    pub fn new(opts: BuildOptions) -> Self {
        let apt = Apt::new(&opts.cache, opts.arch);
        Builder { opts, apt }
    }

    /// The options.
    pub fn options(&self) -> &BuildOptions {
        &self.opts
    }

    /// `apt-cache show` for names that may not all exist (virtual packages are
    /// skipped): asked together, then one by one if that fails.
    fn show_lenient(&self, names: &[String]) -> BTreeMap<String, PackageInfo> {
        if names.is_empty() {
            return BTreeMap::new();
        }
        match self.apt.show(names) {
            Ok(m) => m,
            Err(_) => names
                .iter()
                .filter_map(|n| self.apt.show(std::slice::from_ref(n)).ok())
                .flatten()
                .collect(),
        }
    }

    /// Fetches and unpacks the packages and assembles the image without the
    /// worker: kernel, modules, firmware, busybox, tools and their libraries,
    /// the init.
    pub fn assemble(&mut self) -> Result<Image> {
        let arch = self.opts.arch;
        self.apt.prepare(self.opts.refresh)?;
        let meta = plan::kernel_metapackage(arch);
        let meta_info = self.apt.show(std::slice::from_ref(&meta))?;
        let kernel_pkg =
            plan::kernel_package(&meta_info[&meta]).ok_or_else(|| Error::NoPackage {
                package: format!("the kernel {meta} depends on"),
                arch,
            })?;
        let mut wanted: Vec<String> = vec![kernel_pkg.clone(), plan::BUSYBOX_PACKAGE.into()];
        wanted.extend(plan::TOOLS.iter().map(|(p, _)| p.to_string()));
        wanted.extend(plan::FIRMWARE_PACKAGES.iter().map(|p| p.to_string()));
        wanted.extend(plan::WORKER_LIBRARY_PACKAGES.iter().map(|p| p.to_string()));
        let mut infos = self.apt.show(&wanted)?;
        // The tools' library packages, and theirs, until none is new.
        let mut libs: BTreeSet<String> = plan::WORKER_LIBRARY_PACKAGES
            .iter()
            .map(|p| p.to_string())
            .collect();
        let mut frontier: Vec<String> = plan::TOOLS
            .iter()
            .flat_map(|(p, _)| infos[*p].depends.clone())
            .chain(libs.iter().flat_map(|l| infos[l].depends.clone()))
            .collect();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        while !frontier.is_empty() {
            let new: Vec<String> = frontier
                .drain(..)
                .filter(|d| !libs.contains(d) && !seen.contains(d))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            seen.extend(new.iter().cloned());
            for (name, info) in self.show_lenient(&new) {
                if plan::is_library_package(&info) {
                    libs.insert(name.clone());
                    frontier.extend(info.depends.clone());
                    infos.insert(name, info);
                }
            }
        }
        let all: Vec<&PackageInfo> = infos.values().collect();
        let debs = self.apt.download(&all)?;
        let mut roots: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (info, deb) in all.iter().zip(&debs) {
            roots.insert(info.name.clone(), unpack(&self.opts.cache, deb)?);
        }
        let packages: BTreeMap<String, String> = infos
            .iter()
            .map(|(n, i)| (n.clone(), i.version.clone()))
            .collect();

        let mut tree = Tree::new();
        for d in [
            "proc", "sys", "dev", "run", "tmp", "root", "mnt", "etc", "var",
        ] {
            tree.dir(d);
        }
        tree.insert("dev/console", Node::CharDev { major: 5, minor: 1 });
        tree.symlink("var/run", "../run");

        // The kernel and its modules.
        let kroot = &roots[&kernel_pkg];
        let mods = kroot.join("lib/modules");
        let release = std::fs::read_dir(&mods)
            .map_err(Error::io(&mods))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .next()
            .ok_or_else(|| Error::NotInPackage {
                what: "lib/modules/<release>".into(),
                package: kernel_pkg.clone(),
            })?;
        let kernel = read(&kroot.join(format!("boot/vmlinuz-{release}")))?;
        let mdir = mods.join(&release);
        let ko: Vec<String> = walk(&mdir.join("kernel"))?
            .into_iter()
            .filter(|p| crate::modules::name_of(p).is_some())
            .map(|p| format!("kernel/{p}"))
            .collect();
        let builtin = std::fs::read_to_string(mdir.join("modules.builtin")).unwrap_or_default();
        let index = ModuleIndex::new(ko.iter().map(String::as_str), &builtin);
        let mut bytes: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let modules = resolve(plan::MODULES, &index, |path| -> Result<ModInfo> {
            let data = module_bytes(&mdir.join(path))?;
            let info = match elf::section(path, &data, ".modinfo")? {
                Some(s) => parse_modinfo(s),
                None => ModInfo::default(),
            };
            let machine = elf::inspect(path, &data)?.machine;
            check_machine(path, machine, arch)?;
            bytes.insert(stored(path), data);
            Ok(info)
        })?;
        let mbase = format!("lib/modules/{release}");
        let mut load = String::new();
        for m in &modules.load_order {
            let p = stored(index.path(m).expect("resolved modules are indexed"));
            load.push_str(&format!("/{mbase}/{p}\n"));
            tree.file(
                &format!("{mbase}/{p}"),
                bytes.remove(&p).unwrap_or_default(),
                0o644,
            );
        }
        let stored_index = ModuleIndex::new(
            modules
                .load_order
                .iter()
                .filter_map(|m| index.path(m))
                .map(stored)
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str),
            &builtin,
        );
        tree.file(
            &format!("{mbase}/modules.dep"),
            modules_dep(&modules, &stored_index).into_bytes(),
            0o644,
        );
        tree.file(
            &format!("{mbase}/modules.alias"),
            modules_alias(&modules).into_bytes(),
            0o644,
        );
        tree.file(
            &format!("{mbase}/modules.builtin"),
            builtin.into_bytes(),
            0o644,
        );
        for f in ["modules.builtin.modinfo", "modules.order"] {
            if let Ok(d) = std::fs::read(mdir.join(f)) {
                tree.file(&format!("{mbase}/{f}"), d, 0o644);
            }
        }
        tree.file(init::MODULE_LIST, load.into_bytes(), 0o644);

        // Only the firmware the modules name.
        let mut firmware = BTreeMap::new();
        let mut firmware_missing = Vec::new();
        for name in modules.firmware() {
            let found = plan::FIRMWARE_PACKAGES.iter().find_map(|p| {
                resolve_in(&roots[*p], &format!("lib/firmware/{name}")).map(|f| (p.to_string(), f))
            });
            match found {
                Some((pkg, file)) => {
                    tree.file(&format!("lib/firmware/{name}"), read(&file)?, 0o644);
                    firmware.insert(name, pkg);
                }
                None => firmware_missing.push(name),
            }
        }

        // busybox.
        let bb = read(&roots[plan::BUSYBOX_PACKAGE].join("bin/busybox"))?;
        check_machine(
            "bin/busybox",
            elf::inspect("bin/busybox", &bb)?.machine,
            arch,
        )?;
        tree.file("bin/busybox", bb, 0o755);
        tree.symlink("bin/sh", "busybox");

        let lib_roots: Vec<(String, PathBuf)> =
            libs.iter().map(|l| (l.clone(), roots[l].clone())).collect();
        let mut image = Image {
            arch,
            tree,
            kernel,
            kernel_release: release,
            modules,
            firmware,
            firmware_missing,
            packages,
            worker_sha256: None,
            lib_roots,
        };

        // The tools, as their packages lay them out.
        for (pkg, names) in plan::TOOLS {
            let root = &roots[*pkg];
            for name in *names {
                let rel = ["sbin", "bin", "usr/sbin", "usr/bin"]
                    .iter()
                    .map(|d| format!("{d}/{name}"))
                    .find(|r| std::fs::symlink_metadata(root.join(r)).is_ok())
                    .ok_or_else(|| Error::NotInPackage {
                        what: name.to_string(),
                        package: pkg.to_string(),
                    })?;
                let abs = root.join(&rel);
                if let Ok(target) = std::fs::read_link(&abs) {
                    image.tree.symlink(&rel, &target.to_string_lossy());
                    continue;
                }
                let data = read(&abs)?;
                image.add_binary(&rel, data)?;
            }
        }

        image.tree.file(
            "init",
            init::init_script(&format!("/{}", plan::WORKER_PATH)).into_bytes(),
            0o755,
        );
        image.tree.file(
            init::DHCP_HOOK,
            init::dhcp_hook().as_bytes().to_vec(),
            0o755,
        );
        Ok(image)
    }

    /// Writes `vmlinuz`, `initramfs` and `manifest` into the output directory;
    /// an unchanged archive is kept as it is.
    pub fn write(&self, image: &Image) -> Result<Written> {
        let out = &self.opts.out;
        std::fs::create_dir_all(out).map_err(Error::io(out))?;
        let mut tree = image.tree.clone();
        let listing = image.manifest();
        tree.file(
            &format!("{}/manifest", init::ETC),
            listing.clone().into_bytes(),
            0o644,
        );
        let mut archive = Vec::new();
        cpio::write_newc(&tree, self.opts.mtime, &mut archive).map_err(Error::io("initramfs"))?;
        let archive_sha = sha256_hex(&archive);
        let key = format!("archive {archive_sha} zstd-{}", self.opts.zstd_level);
        let (vmlinuz, initramfs, manifest) = (
            out.join("vmlinuz"),
            out.join("initramfs"),
            out.join("manifest"),
        );

        let previous = std::fs::read_to_string(&manifest).unwrap_or_default();
        let kept = previous.lines().any(|l| l == key)
            && previous
                .lines()
                .find_map(|l| l.strip_prefix("initramfs sha256 "))
                .and_then(|l| l.split_whitespace().next())
                .is_some_and(|sha| std::fs::read(&initramfs).is_ok_and(|d| sha256_hex(&d) == sha));
        let compressed = if kept {
            read(&initramfs)?
        } else {
            // Single-threaded zstd at a fixed level: the same archive always
            // compresses to the same bytes.
            zstd::stream::encode_all(&archive[..], self.opts.zstd_level)
                .map_err(Error::io("zstd"))?
        };
        let sha = sha256_hex(&compressed);
        if !kept {
            write_atomic(&initramfs, &compressed)?;
        }
        write_atomic(&vmlinuz, &image.kernel)?;
        let text = format!(
            "{listing}vmlinuz sha256 {} size {}\ninitramfs sha256 {sha} size {} (zstd {}, {} files, {} bytes unpacked)\n{key}\n",
            sha256_hex(&image.kernel),
            image.kernel.len(),
            compressed.len(),
            self.opts.zstd_level,
            tree.len(),
            tree.file_bytes(),
        );
        write_atomic(&manifest, text.as_bytes())?;
        Ok(Written {
            vmlinuz,
            initramfs,
            manifest,
            initramfs_size: compressed.len() as u64,
            initramfs_sha256: sha,
            reused: kept,
        })
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, data).map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io(path))
}

fn check_machine(path: &str, found: u16, arch: Arch) -> Result<()> {
    if found != arch.elf_machine() {
        return Err(Error::WrongMachine {
            path: path.to_string(),
            found,
            expected: arch.elf_machine(),
            arch,
        });
    }
    Ok(())
}

/// The library directories the image's dynamic loader searches, in order.
fn lib_dirs(arch: Arch) -> [String; 4] {
    let t = arch.triplet();
    [
        format!("lib/{t}"),
        format!("usr/lib/{t}"),
        "lib".into(),
        "usr/lib".into(),
    ]
}

impl Image {
    /// Adds an ELF binary at `path` with the shared libraries it needs (and
    /// theirs), taken from the unpacked library packages, and its loader.
    pub fn add_binary(&mut self, path: &str, data: Vec<u8>) -> Result<()> {
        let mut todo: Vec<(String, Vec<u8>)> = vec![(path.to_string(), data)];
        while let Some((p, data)) = todo.pop() {
            let info = elf::inspect(&p, &data)?;
            check_machine(&p, info.machine, self.arch)?;
            self.tree.file(&p, data, 0o755);
            if let Some(interp) = &info.interpreter
                && !self.tree.contains(interp)
            {
                let file = self
                    .lib_roots
                    .iter()
                    .find_map(|(_, r)| resolve_in(r, interp))
                    .ok_or_else(|| Error::MissingLibrary {
                        binary: p.clone(),
                        soname: interp.clone(),
                    })?;
                todo.push((interp.trim_start_matches('/').to_string(), read(&file)?));
            }
            for soname in &info.needed {
                if lib_dirs(self.arch)
                    .iter()
                    .any(|d| self.tree.contains(&format!("{d}/{soname}")))
                    || todo.iter().any(|(t, _)| t.ends_with(&format!("/{soname}")))
                {
                    continue;
                }
                let found = lib_dirs(self.arch).iter().find_map(|d| {
                    let rel = format!("{d}/{soname}");
                    self.lib_roots
                        .iter()
                        .find_map(|(_, r)| resolve_in(r, &rel).map(|f| (rel.clone(), f)))
                });
                let (rel, file) = found.ok_or_else(|| Error::MissingLibrary {
                    binary: p.clone(),
                    soname: soname.clone(),
                })?;
                todo.push((rel, read(&file)?));
            }
        }
        Ok(())
    }

    /// Adds the worker agent (stripped, when a `strip` for its machine is at
    /// hand) with its glibc and libgcc_s from Debian's packages.
    pub fn add_worker(&mut self, path: &Path) -> Result<()> {
        let raw = read(path)?;
        check_machine(
            &path.display().to_string(),
            elf::inspect(&path.display().to_string(), &raw)?.machine,
            self.arch,
        )?;
        let strip = match self.arch {
            Arch::X86_64 => "strip",
            Arch::Aarch64 => "aarch64-linux-gnu-strip",
        };
        let tmp = std::env::temp_dir().join(format!("tinker-osie-worker-{}", std::process::id()));
        let stripped = Command::new(strip)
            .args(["--strip-all", "-o"])
            .arg(&tmp)
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        let data = if stripped { read(&tmp)? } else { raw };
        let _ = std::fs::remove_file(&tmp);
        self.worker_sha256 = Some(sha256_hex(&data));
        self.add_binary(plan::WORKER_PATH, data)
    }

    /// The manifest: packages and versions, the modules in and not found, the
    /// firmware in and missing, the worker. Deterministic; the archive's and
    /// kernel's checksums are added when written.
    pub fn manifest(&self) -> String {
        let mut s = format!(
            "# tinker-osie {} manifest\narch {}\nsuite {}\nkernel {}\n",
            env!("CARGO_PKG_VERSION"),
            self.arch,
            plan::SUITE,
            self.kernel_release
        );
        for (p, v) in &self.packages {
            s.push_str(&format!("package {p}={v}\n"));
        }
        for m in &self.modules.load_order {
            let why = if plan::MODULES.contains(&m.as_str()) {
                "wanted"
            } else {
                "dependency"
            };
            s.push_str(&format!("module {m} {why}\n"));
        }
        for m in &self.modules.builtin {
            s.push_str(&format!("module-builtin {m}\n"));
        }
        for m in &self.modules.not_found {
            s.push_str(&format!("module-not-found {m}\n"));
        }
        for (f, p) in &self.firmware {
            s.push_str(&format!("firmware {f} {p}\n"));
        }
        for f in &self.firmware_missing {
            s.push_str(&format!("firmware-missing {f}\n"));
        }
        match &self.worker_sha256 {
            Some(w) => s.push_str(&format!("worker sha256 {w}\n")),
            None => s.push_str("worker none\n"),
        }
        s
    }
}

/// Whether the Rust toolchain here can build the worker for `arch`: the
/// target's standard library must be installed.
pub fn check_rust_target(arch: Arch) -> Result<()> {
    let target = arch.rust_target();
    let missing = |detail: String| Error::MissingRustTarget {
        arch,
        target,
        detail,
    };
    let out = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", target])
        .output()
        .map_err(|e| missing(format!("rustc: {e}")))?;
    if !out.status.success() {
        return Err(missing(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let has_std = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
        })
        .unwrap_or(false);
    if has_std {
        Ok(())
    } else {
        Err(missing(format!("no standard library in {}", dir.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_inside_the_package_root() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("lib/x86_64-linux-gnu")).unwrap();
        std::fs::create_dir_all(r.join("lib64")).unwrap();
        std::fs::write(r.join("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"), b"ld").unwrap();
        std::os::unix::fs::symlink(
            "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            r.join("lib64/ld-linux-x86-64.so.2"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/lib64/ld-linux-x86-64.so.2", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/passwd", r.join("lib64/out")).unwrap();
        let want = r.join("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
        assert_eq!(
            resolve_in(r, "/lib64/ld-linux-x86-64.so.2"),
            Some(want.clone())
        );
        assert_eq!(
            resolve_in(r, "abs"),
            Some(want),
            "an absolute link means the package's root"
        );
        assert_eq!(
            resolve_in(r, "lib64/out"),
            None,
            "a link never leaves the package"
        );
    }

    #[test]
    fn a_missing_rust_target_names_the_fix() {
        let e = Error::MissingRustTarget {
            arch: Arch::Aarch64,
            target: "aarch64-unknown-linux-gnu",
            detail: "x".into(),
        };
        let t = e.to_string();
        assert!(
            t.contains("rustup target add aarch64-unknown-linux-gnu") && t.contains("linker"),
            "{t}"
        );
    }
}
