//! Checks Tinkerbell YAML files: `cargo run --example validate -- FILE...`
//!
//! Any mix of Hardware, Template, Workflow and Rufio Machine documents; a file may hold several
//! (`---`) or a list. Prints `ok FILE` for a valid file, else each finding as
//! `FILE: OBJECT: FIELD: REASON`, and exits 1 if any file is refused.
//! Workflows are rendered against the templates and hardware given in the same
//! run, so a template variable with no value is caught before it reaches a machine.
//! A template on its own is rendered against a placeholder Hardware that has
//! whatever its lists are indexed for (`{{ index .Hardware.Disks 1 }}` is valid),
//! within the renderer's limits, so a template bomb is a finding, not a crash.

use std::process::ExitCode;
use tinker::core::validate::{FileVerdict, files};

/// Checks Tinkerbell YAML files; workflows are rendered against the templates and
/// hardware given in the same run.
#[derive(Debug, clap::Parser)]
#[command(version)]
struct Args {
    /// The YAML files.
    #[arg(required = true)]
    files: Vec<String>,
}

fn main() -> ExitCode {
    let names = <Args as clap::Parser>::parse().files;
    let mut inputs = Vec::new();
    let mut bad = 0;
    for name in names {
        match std::fs::read_to_string(&name) {
            Ok(text) => inputs.push((name, text)),
            Err(e) => {
                println!("{name}: cannot read: {e}");
                bad += 1;
            }
        }
    }
    // Validation is bounded and does not panic; should a bug make it, the
    // operator still gets exit code 1 and a reason, not a crash.
    let verdicts = match std::panic::catch_unwind(|| files(&inputs)) {
        Ok(v) => v,
        Err(_) => {
            println!("validation failed with an internal error (a bug): please report it");
            return ExitCode::FAILURE;
        }
    };
    for (file, verdict) in verdicts {
        match verdict {
            FileVerdict::Ok => println!("ok {file}"),
            FileVerdict::Unreadable(e) => {
                bad += 1;
                println!("{e}");
            }
            FileVerdict::Invalid(findings) => {
                bad += 1;
                for f in findings {
                    println!("{f}");
                }
            }
        }
    }
    if bad > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
