//! Helpers shared by the root package's integration tests.

#![allow(dead_code)]

use std::process::Command;

/// Whether a missing real component must fail the test: the one rule, from
/// `tinker_core::testing`.
pub use tinker::core::testing::require_real;

/// Runs a shell command that must succeed; its trimmed stdout.
pub fn sh(cmd: &str) -> String {
    let o = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
