//! Builds Tinker's in-memory OS, the system machines boot into to be
//! provisioned:
//!
//! ```text
//! cargo run --release --example osie -- build --arch x86_64 --out DIR
//! ```
//!
//! writes `vmlinuz`, `initramfs` and `manifest` into `DIR` from Debian 12's
//! packages (a private apt configuration under the cache directory; no root
//! needed) and the worker agent, built here. The same inputs give the same
//! bytes; the size and SHA-256 are printed at the end. See the `tinker-osie`
//! crate for what goes in.

#[path = "osie/build.rs"]
mod osie_build;

use std::path::PathBuf;
use std::process::ExitCode;

/// Tinker's in-memory OS builder.
#[derive(Debug, clap::Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Build `vmlinuz`, `initramfs` and `manifest` into a directory.
    Build {
        /// The machines' architecture: x86_64 or aarch64.
        #[arg(long, default_value = "x86_64")]
        arch: tinker_osie::Arch,
        /// The output directory (the homelab's assets directory, say).
        #[arg(long)]
        out: PathBuf,
        /// Where package lists, downloads and unpacked packages are kept
        /// (default: $TINKER_OSIE_CACHE, else ~/.cache/tinker-osie).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// A worker binary built already (default: build it with cargo).
        #[arg(long)]
        worker: Option<PathBuf>,
        /// Fetch the package lists again (newer Debian packages).
        #[arg(long)]
        refresh: bool,
    },
}

fn main() -> ExitCode {
    let Args { command } = clap::Parser::parse();
    let Cmd::Build {
        arch,
        out,
        cache,
        worker,
        refresh,
    } = command;
    let cache = cache.unwrap_or_else(osie_build::default_cache);
    match osie_build::build(arch, &out, &cache, worker.as_deref(), refresh) {
        Ok(w) => {
            println!("{}", w.vmlinuz.display());
            println!(
                "{}  {} bytes ({:.1} MiB){}",
                w.initramfs.display(),
                w.initramfs_size,
                w.initramfs_size as f64 / (1024.0 * 1024.0),
                if w.reused { ", unchanged" } else { "" }
            );
            println!("sha256 {}", w.initramfs_sha256);
            println!("manifest {}", w.manifest.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tinker-osie: {e}");
            ExitCode::FAILURE
        }
    }
}
