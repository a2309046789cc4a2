//! Kernel modules: which go into the image, in which order they load, and which
//! firmware files they name.
//!
//! Debian's kernel package ships the modules without `modules.dep` (depmod
//! writes it when the package is installed), so the dependencies come from
//! each module's own `.modinfo` section (`depends=`), its firmware from
//! `firmware=` (what `modinfo -F firmware` prints). Everything here is pure:
//! the caller reads the `.ko` files and hands their `.modinfo` bytes in.

use crate::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};

/// A module's name as the kernel knows it: `nvme-core.ko` is `nvme_core`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a path under `lib/modules/<version>/`
/// (`kernel/drivers/nvme/host/nvme-core.ko.xz` is `nvme_core`).
pub fn name_of(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file
        .strip_suffix(".ko")
        .or_else(|| file.strip_suffix(".ko.xz"))
        .or_else(|| file.strip_suffix(".ko.zst"))
        .or_else(|| file.strip_suffix(".ko.gz"))?;
    Some(normalize(stem))
}

/// What a module's `.modinfo` section says about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    /// The modules it needs loaded first (normalized names).
    pub depends: Vec<String>,
    /// The firmware files it may request, relative to `/lib/firmware`.
    pub firmware: Vec<String>,
    /// Its device aliases (`pci:v00008086d...`).
    pub aliases: Vec<String>,
}

/// Parses a `.modinfo` section: `key=value` strings separated by NULs.
pub fn parse_modinfo(section: &[u8]) -> ModInfo {
    let mut info = ModInfo::default();
    for field in section.split(|b| *b == 0) {
        let field = String::from_utf8_lossy(field);
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        match key {
            "depends" => info
                .depends
                .extend(value.split(',').filter(|d| !d.is_empty()).map(normalize)),
            "firmware" if !value.is_empty() => info.firmware.push(value.to_string()),
            "alias" if !value.is_empty() => info.aliases.push(value.to_string()),
            _ => {}
        }
    }
    info
}

/// The kernel's modules by name, and what it has built in.
#[derive(Debug, Clone, Default)]
pub struct ModuleIndex {
    paths: BTreeMap<String, String>,
    builtin: BTreeSet<String>,
}

impl ModuleIndex {
    /// From the module paths (relative to `lib/modules/<version>/`) and the
    /// text of `modules.builtin`.
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a str>, builtin: &str) -> Self {
        ModuleIndex {
            paths: paths
                .into_iter()
                .filter_map(|p| Some((name_of(p)?, p.to_string())))
                .collect(),
            builtin: builtin.lines().filter_map(name_of).collect(),
        }
    }

    /// The path of a module.
    pub fn path(&self, name: &str) -> Option<&str> {
        self.paths.get(&normalize(name)).map(String::as_str)
    }

    /// Whether the kernel has it built in.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }
}

/// The modules chosen for the image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Every module to load, each after the modules it depends on.
    pub load_order: Vec<String>,
    /// Wanted modules the kernel has built in (nothing to load).
    pub builtin: Vec<String>,
    /// Wanted modules this kernel has neither as a module nor built in.
    pub not_found: Vec<String>,
    /// What each chosen module's `.modinfo` said.
    pub info: BTreeMap<String, ModInfo>,
}

impl Selection {
    /// Every firmware file the chosen modules name, each once, sorted.
    pub fn firmware(&self) -> BTreeSet<String> {
        self.info
            .values()
            .flat_map(|i| i.firmware.iter().cloned())
            .collect()
    }
}

/// Chooses the wanted modules and their dependencies; `modinfo` reads a
/// module's `.modinfo` given its path. A dependency the kernel does not have is
/// an error (the module could not load); a wanted module it does not have is
/// listed in [`Selection::not_found`].
pub fn resolve(
    wanted: &[&str],
    index: &ModuleIndex,
    mut modinfo: impl FnMut(&str) -> Result<ModInfo>,
) -> Result<Selection> {
    let mut sel = Selection::default();
    let mut done: BTreeSet<String> = BTreeSet::new();
    // Depth-first, dependencies first: an explicit stack of (module, expanded).
    for w in wanted {
        let w = normalize(w);
        if index.path(&w).is_none() {
            if index.is_builtin(&w) {
                sel.builtin.push(w);
            } else {
                sel.not_found.push(w);
            }
            continue;
        }
        let mut stack = vec![(w, false)];
        let mut on_path: BTreeSet<String> = BTreeSet::new();
        while let Some((m, expanded)) = stack.pop() {
            if done.contains(&m) {
                continue;
            }
            if expanded {
                on_path.remove(&m);
                done.insert(m.clone());
                sel.load_order.push(m);
                continue;
            }
            if !on_path.insert(m.clone()) {
                // A cycle: modules cannot have one (the kernel refuses), so the
                // data is bad; load it where it stands rather than loop.
                continue;
            }
            let path = index.path(&m).expect("only indexed modules are pushed");
            let info = modinfo(path)?;
            stack.push((m.clone(), true));
            for d in info.depends.iter().rev() {
                if done.contains(d) || index.is_builtin(d) {
                    continue;
                }
                if index.path(d).is_none() {
                    return Err(Error::MissingDependency {
                        module: m.clone(),
                        dependency: d.clone(),
                    });
                }
                stack.push((d.clone(), false));
            }
            sel.info.insert(m, info);
        }
    }
    Ok(sel)
}

/// `modules.dep` for the chosen modules, as depmod writes it: each module's
/// path, then every module it needs, the one to load first last.
pub fn modules_dep(sel: &Selection, index: &ModuleIndex) -> String {
    let position: BTreeMap<&str, usize> = sel
        .load_order
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let mut lines = Vec::new();
    for m in &sel.load_order {
        // The transitive dependencies, in reverse load order.
        let mut all: BTreeSet<&str> = BTreeSet::new();
        let mut todo: Vec<&str> = vec![m];
        while let Some(x) = todo.pop() {
            for d in sel.info.get(x).map(|i| i.depends.as_slice()).unwrap_or(&[]) {
                if position.contains_key(d.as_str()) && all.insert(d) {
                    todo.push(d);
                }
            }
        }
        let mut deps: Vec<&str> = all.into_iter().collect();
        deps.sort_by_key(|d| std::cmp::Reverse(position[d]));
        let path = |n: &str| index.path(n).unwrap_or(n).to_string();
        let deps: Vec<String> = deps.into_iter().map(path).collect();
        lines.push(
            format!("{}: {}", path(m), deps.join(" "))
                .trim_end()
                .to_string(),
        );
    }
    lines.sort();
    lines.join("\n") + "\n"
}

/// `modules.alias` for the chosen modules (so the kernel's requests, such as
/// `crypto-crc32c`, reach the right module through modprobe).
pub fn modules_alias(sel: &Selection) -> String {
    let mut lines: Vec<String> = sel
        .info
        .iter()
        .flat_map(|(m, i)| i.aliases.iter().map(move |a| format!("alias {a} {m}")))
        .collect();
    lines.sort();
    lines.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> ModuleIndex {
        ModuleIndex::new(
            [
                "kernel/drivers/nvme/host/nvme.ko",
                "kernel/drivers/nvme/host/nvme-core.ko",
                "kernel/drivers/ata/ahci.ko",
                "kernel/drivers/ata/libahci.ko",
                "kernel/drivers/ata/libata.ko.xz",
                "kernel/drivers/net/ethernet/realtek/r8169.ko",
                "kernel/drivers/net/phy/libphy.ko",
                "kernel/drivers/net/mdio/mdio_devres.ko",
            ],
            "kernel/drivers/scsi/scsi_common.ko\nkernel/lib/crc32.ko\n",
        )
    }

    fn info(path: &str) -> Result<ModInfo> {
        let raw: &[u8] = match name_of(path).unwrap().as_str() {
            "nvme" => b"license=GPL\0depends=nvme-core\0alias=pci:v*d*sv*sd*bc01sc08i02*\0",
            "nvme_core" => b"depends=\0",
            "ahci" => b"depends=libahci,libata\0",
            "libahci" => b"depends=libata,scsi_common\0",
            "libata" => b"depends=scsi_common\0",
            "r8169" => b"depends=libphy,mdio_devres\0firmware=rtl_nic/rtl8168h-2.fw\0firmware=rtl_nic/rtl8125b-2.fw\0",
            "libphy" => b"depends=\0",
            "mdio_devres" => b"depends=libphy\0",
            other => panic!("unexpected {other}"),
        };
        Ok(parse_modinfo(raw))
    }

    #[test]
    fn dependencies_load_first_and_builtins_are_skipped() {
        let sel = resolve(
            &["ahci", "nvme", "r8169", "crc32", "no_such"],
            &index(),
            info,
        )
        .unwrap();
        assert_eq!(
            sel.load_order,
            [
                "libata",
                "libahci",
                "ahci",
                "nvme_core",
                "nvme",
                "libphy",
                "mdio_devres",
                "r8169"
            ]
        );
        assert_eq!(sel.builtin, ["crc32"]);
        assert_eq!(sel.not_found, ["no_such"]);
        assert_eq!(
            sel.firmware().into_iter().collect::<Vec<_>>(),
            ["rtl_nic/rtl8125b-2.fw", "rtl_nic/rtl8168h-2.fw"]
        );
    }

    #[test]
    fn modules_dep_lists_what_to_load_first_last() {
        let idx = index();
        let sel = resolve(&["ahci"], &idx, info).unwrap();
        let dep = modules_dep(&sel, &idx);
        assert!(
            dep.contains("kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko kernel/drivers/ata/libata.ko.xz\n"),
            "{dep}"
        );
        assert!(dep.contains("kernel/drivers/ata/libata.ko.xz\n"), "{dep}");
        assert_eq!(
            modules_alias(&resolve(&["nvme"], &idx, info).unwrap()),
            "alias pci:v*d*sv*sd*bc01sc08i02* nvme\n"
        );
    }

    #[test]
    fn a_dependency_the_kernel_lacks_is_an_error() {
        let idx = ModuleIndex::new(["kernel/a.ko"], "");
        let e = resolve(&["a"], &idx, |_| Ok(parse_modinfo(b"depends=b\0"))).unwrap_err();
        assert!(
            matches!(e, Error::MissingDependency { ref dependency, .. } if dependency == "b"),
            "{e}"
        );
    }
}
