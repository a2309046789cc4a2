//! Helpers shared by the root package's integration tests.

#![allow(dead_code)]

use std::process::Command;

/// Whether a missing real component must fail the test (`TINKER_REQUIRE_REAL=1`, CI).
pub fn require_real() -> bool {
    std::env::var("TINKER_REQUIRE_REAL").is_ok_and(|v| v == "1")
}

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
