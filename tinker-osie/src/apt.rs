//! A private apt: its own configuration, sources list, package lists and
//! download directory under the cache, so the build needs no root, fetches
//! arm64 lists on an amd64 machine, and leaves the machine's apt untouched.
//!
//! `APT_CONFIG` points apt at our configuration file, which apt reads before
//! anything else and which names every directory, so neither
//! `/etc/apt/apt.conf.d` nor `/etc/apt/sources.list*` is read.

use crate::plan::{PackageInfo, parse_show, sources_list};
use crate::{Arch, Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's archive keyring (package `debian-archive-keyring`).
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// One architecture's private apt under `<cache>/apt-<debian arch>`.
#[derive(Debug, Clone)]
pub struct Apt {
    root: PathBuf,
    arch: Arch,
}

/// The private `apt.conf`: every directory under `root`, the architecture,
/// and nothing from `/etc/apt`.
pub fn config_text(root: &Path, arch: Arch) -> String {
    let r = root.display();
    format!(
        r#"APT::Architecture "{a}";
APT::Architectures {{ "{a}"; }};
APT::Get::List-Cleanup "false";
{sandbox}Acquire::Languages "none";
Acquire::Retries "3";
Dir "{r}/";
Dir::Etc "{r}/etc/";
Dir::Etc::main "{r}/etc/apt.conf";
Dir::Etc::Parts "{r}/etc/apt.conf.d/";
Dir::Etc::SourceList "{r}/etc/sources.list";
Dir::Etc::SourceParts "{r}/etc/sources.list.d/";
Dir::Etc::Preferences "{r}/etc/preferences";
Dir::Etc::PreferencesParts "{r}/etc/preferences.d/";
Dir::Etc::Trusted "{r}/etc/trusted.gpg";
Dir::Etc::TrustedParts "{r}/etc/trusted.gpg.d/";
Dir::State "{r}/state/";
Dir::State::Lists "{r}/state/lists/";
Dir::State::status "{r}/state/status";
Dir::Cache "{r}/cache/";
Dir::Cache::archives "{r}/cache/archives/";
Dir::Log "{r}/log/";
Debug::NoLocking "true";
"#,
        a = arch.debian(),
        // apt's sandbox user (_apt) cannot write a root-owned cache; without
        // root, apt drops no privileges and needs no setting.
        sandbox = if is_root() {
            "APT::Sandbox::User \"root\";\n"
        } else {
            ""
        },
    )
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Runs a command; its stdout, or an error with its status and stderr's end.
pub(crate) fn run(cmd: &mut Command) -> Result<Vec<u8>> {
    let program = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| Error::Command {
        program: program.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: String = err
            .chars()
            .rev()
            .take(1500)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(Error::Command {
            program,
            detail: format!("{}: {}", out.status, tail.trim()),
        });
    }
    Ok(out.stdout)
}

impl Apt {
    /// The private apt for `arch` under `cache`.
    pub fn new(cache: &Path, arch: Arch) -> Self {
        Apt {
            root: cache.join(format!("apt-{}", arch.debian())),
            arch,
        }
    }

    /// Where downloaded packages are kept.
    pub fn debs(&self) -> PathBuf {
        self.root.join("debs")
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("APT_CONFIG", self.root.join("etc/apt.conf"))
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive");
        c
    }

    /// Writes the configuration and fetches the package lists, unless they are
    /// there and `refresh` is false (so a rebuild uses the same lists, and
    /// gives the same image).
    pub fn prepare(&self, refresh: bool) -> Result<()> {
        for d in [
            "etc/apt.conf.d",
            "etc/sources.list.d",
            "etc/preferences.d",
            "etc/trusted.gpg.d",
            "state/lists/partial",
            "cache/archives/partial",
            "log",
            "debs",
        ] {
            let p = self.root.join(d);
            std::fs::create_dir_all(&p).map_err(Error::io(&p))?;
        }
        let write = |name: &str, text: &str| {
            let p = self.root.join(name);
            std::fs::write(&p, text).map_err(Error::io(&p))
        };
        write("etc/apt.conf", &config_text(&self.root, self.arch))?;
        write("etc/sources.list", &sources_list(KEYRING))?;
        let status = self.root.join("state/status");
        if !status.exists() {
            write("state/status", "")?;
        }
        let stamp = self.root.join("state/updated");
        if refresh || !stamp.exists() {
            run(self.command("apt-get").args(["-q", "update"]))?;
            write("state/updated", "")?;
        }
        Ok(())
    }

    /// What the lists say about these packages (their candidate versions).
    pub fn show(&self, packages: &[String]) -> Result<BTreeMap<String, PackageInfo>> {
        let out = run(self
            .command("apt-cache")
            .args(["show", "--no-all-versions"])
            .args(packages))?;
        let found = parse_show(&String::from_utf8_lossy(&out));
        if let Some(p) = packages.iter().find(|p| !found.contains_key(*p)) {
            return Err(Error::NoPackage {
                package: p.clone(),
                arch: self.arch,
            });
        }
        Ok(found)
    }

    /// The `.deb` files of these packages, downloaded once and kept.
    pub fn download(&self, packages: &[&PackageInfo]) -> Result<Vec<PathBuf>> {
        let dir = self.debs();
        let missing: Vec<String> = packages
            .iter()
            .filter(|p| !dir.join(p.deb_file_name()).exists())
            .map(|p| format!("{}={}", p.name, p.version))
            .collect();
        if !missing.is_empty() {
            run(self
                .command("apt-get")
                .current_dir(&dir)
                .args(["-q", "download"])
                .args(&missing))?;
        }
        packages
            .iter()
            .map(|p| {
                let f = dir.join(p.deb_file_name());
                if f.exists() {
                    Ok(f)
                } else {
                    Err(Error::NotInPackage {
                        what: f.display().to_string(),
                        package: format!("apt-get download {}", p.name),
                    })
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_names_only_private_directories() {
        let text = config_text(Path::new("/c/apt-arm64"), Arch::Aarch64);
        assert!(text.contains("APT::Architecture \"arm64\";"));
        for line in text.lines().filter(|l| l.starts_with("Dir")) {
            assert!(line.contains("\"/c/apt-arm64/"), "{line}");
        }
        assert!(!text.contains("\"/etc/apt"), "{text}");
    }
}
