//! Building the in-memory OS from the command line: shared by `osie build` and
//! `homelab --config` with `osie: build`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use tinker_osie::Arch;
use tinker_osie::build::{BuildOptions, Builder, Written, check_rust_target};

/// The one command that builds the in-memory OS into `out`.
pub fn command(out: &Path) -> String {
    format!(
        "cargo run --release --example osie -- build --arch x86_64 --out {}",
        out.display()
    )
}

/// Where downloads and unpacked packages are kept between builds:
/// `TINKER_OSIE_CACHE`, else `~/.cache/tinker-osie`.
pub fn default_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("TINKER_OSIE_CACHE") {
        return PathBuf::from(dir);
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("tinker-osie")
}

/// The worker binary for `arch`: built with cargo, in the profile this program
/// was built in, for the architecture's Rust target.
fn build_worker(arch: Arch) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // <target>/<profile>/examples/osie
    let examples = exe.parent().ok_or("no examples directory")?;
    let profile_dir = examples.parent().ok_or("no profile directory")?;
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let target_dir = profile_dir.parent().ok_or("no target directory")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.args(["build", "--example", "worker", "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir);
    if release {
        c.arg("--release");
    }
    let native = cfg!(target_arch = "x86_64") && arch == Arch::X86_64
        || cfg!(target_arch = "aarch64") && arch == Arch::Aarch64;
    let built = if native {
        examples.join("worker")
    } else {
        c.args(["--target", arch.rust_target()]);
        target_dir
            .join(arch.rust_target())
            .join(profile_dir.file_name().unwrap_or_default())
            .join("examples/worker")
    };
    eprintln!("building the worker: {c:?}");
    let status = c.status().map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the worker failed ({status})"));
    }
    Ok(built)
}

/// Builds the image for `arch` into `out`; `worker` is a worker binary built
/// already (else it is built here). Progress goes to stderr.
pub fn build(
    arch: Arch,
    out: &Path,
    cache: &Path,
    worker: Option<&Path>,
    refresh: bool,
) -> Result<Written, String> {
    let mut opts = BuildOptions::new(arch, out.to_path_buf(), cache.to_path_buf());
    opts.refresh = refresh;
    if let Some(epoch) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        opts.mtime = epoch;
    }
    let mut builder = Builder::new(opts);
    eprintln!(
        "tinker-osie: assembling the {arch} image from Debian packages (cache {})",
        cache.display()
    );
    let mut image = builder.assemble().map_err(|e| e.to_string())?;
    eprintln!(
        "tinker-osie: kernel {}, {} modules, {} firmware files ({} missing), {} files",
        image.kernel_release,
        image.modules.load_order.len(),
        image.firmware.len(),
        image.firmware_missing.len(),
        image.tree.len()
    );
    let worker = match worker {
        Some(w) => w.to_path_buf(),
        None => {
            // Checked after the rest is assembled, so a machine without the
            // target still learns whether the kernel and userland are right.
            check_rust_target(arch).map_err(|e| e.to_string())?;
            build_worker(arch)?
        }
    };
    image.add_worker(&worker).map_err(|e| e.to_string())?;
    let written = builder.write(&image).map_err(|e| e.to_string())?;
    Ok(written)
}
