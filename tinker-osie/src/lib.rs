//! Tinker's in-memory OS builder: a Debian kernel, the drivers and firmware
//! real servers and NUCs need, a static userland with the tools the native
//! actions call, and the worker agent, in one reproducible initramfs.
//!
//! This is what a machine boots into before it is provisioned (Tinkerbell's
//! HookOS plays the same part). Everything comes from Debian's packages,
//! fetched with `apt-get download` through a private apt configuration (its own
//! sources list, package lists and cache, so the machine's own apt setup is
//! never touched) and unpacked without installing, so no root is needed.
//!
//! The decisions are pure functions over plain data, tested without a network:
//! which packages ([`plan`]), which modules in which order and which firmware
//! ([`modules`]), which shared libraries ([`elf`]), what the init does
//! ([`init`]), and the archive's exact bytes ([`cpio`]). [`apt`] and [`build`]
//! are the edges that run apt and read and write files.
//!
//! ```no_run
//! use tinker_osie::{Arch, build::{BuildOptions, Builder}};
//! let opts = BuildOptions::new(Arch::X86_64, "out".into(), "cache".into());
//! let mut b = Builder::new(opts);
//! let mut image = b.assemble()?;
//! image.add_worker(std::path::Path::new("target/release/examples/worker"))?;
//! let written = b.write(&image)?;
//! println!("{} bytes, sha256 {}", written.initramfs_size, written.initramfs_sha256);
//! # Ok::<(), tinker_osie::Error>(())
//! ```

pub mod apt;
pub mod build;
pub mod cpio;
pub mod elf;
pub mod init;
pub mod modules;
pub mod plan;
pub mod tree;

use std::path::PathBuf;

/// A machine architecture the image is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    /// 64-bit x86 (Debian `amd64`).
    X86_64,
    /// 64-bit Arm (Debian `arm64`).
    Aarch64,
}

impl Arch {
    /// Debian's name for it (`APT::Architecture`).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The Rust target the worker is built for.
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
            Arch::Aarch64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// The ELF `e_machine` of its binaries.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => object::elf::EM_X86_64.0,
            Arch::Aarch64 => object::elf::EM_AARCH64.0,
        }
    }

    /// Debian's multiarch directory name (`lib/<triplet>`).
    pub fn triplet(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-linux-gnu",
            Arch::Aarch64 => "aarch64-linux-gnu",
        }
    }

    /// The name the command line and the manifest use.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            other => Err(Error::UnknownArch(other.to_string())),
        }
    }
}

/// What went wrong while building the image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An architecture name that is neither x86_64 nor aarch64.
    #[error("unknown architecture {0:?}: use x86_64 or aarch64")]
    UnknownArch(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A program the build runs failed (or is missing).
    #[error("{program} failed: {detail}")]
    Command {
        /// The command, as run.
        program: String,
        /// Its exit status and the end of its error output.
        detail: String,
    },
    /// apt knows no package of this name for the architecture.
    #[error("no Debian package {package} for {arch} in the private package lists")]
    NoPackage {
        /// The package.
        package: String,
        /// The architecture.
        arch: Arch,
    },
    /// A file the image needs is not in the package that should hold it.
    #[error("{what} not found in {package}")]
    NotInPackage {
        /// The file.
        what: String,
        /// The package.
        package: String,
    },
    /// An ELF file could not be parsed.
    #[error("{path}: not a usable ELF file: {detail}")]
    Elf {
        /// The file.
        path: String,
        /// What the parser said.
        detail: String,
    },
    /// A binary is for another machine than the image.
    #[error("{path} is for ELF machine {found}, the image is for {arch} (machine {expected})")]
    WrongMachine {
        /// The file.
        path: String,
        /// Its `e_machine`.
        found: u16,
        /// The image's `e_machine`.
        expected: u16,
        /// The image's architecture.
        arch: Arch,
    },
    /// A binary needs a shared library no unpacked package holds.
    #[error("{binary} needs {soname}, which none of the unpacked library packages holds")]
    MissingLibrary {
        /// The binary.
        binary: String,
        /// The library it names.
        soname: String,
    },
    /// A module names a dependency that is neither a module nor built in.
    #[error(
        "module {module} depends on {dependency}, which the kernel neither has as a module nor built in"
    )]
    MissingDependency {
        /// The module.
        module: String,
        /// The dependency it names.
        dependency: String,
    },
    /// The worker cannot be built for this architecture on this machine.
    #[error(
        "the worker for {arch} needs Rust's {target} target, which this toolchain lacks ({detail}); \
         the kernel, modules and userland were assembled and checked. Add it where the toolchain \
         can be fetched: `rustup target add {target}`, plus a cross linker (Debian: \
         `apt-get install gcc-aarch64-linux-gnu`, then \
         CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc), build \
         `cargo build --release --example worker --target {target}` and pass it with --worker"
    )]
    MissingRustTarget {
        /// The image's architecture.
        arch: Arch,
        /// The Rust target.
        target: &'static str,
        /// What the check found.
        detail: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
