//! The README's first command: the simulated rack provisions every machine, and a
//! second run over the same data directory does it again.

use std::process::Command;

#[test]
fn the_simulated_rack_provisions_every_machine_twice() {
    let exe = std::env::current_exe().unwrap();
    let homelab = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/homelab");
    assert!(homelab.exists(), "cargo test builds the homelab example");
    let data = tempfile::tempdir().unwrap();
    for (run, n) in [(1, "4"), (2, "3")] {
        let out = Command::new(&homelab)
            .args(["--machines", n, "--data"])
            .arg(data.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "run {run}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("provisioned {n}/{n} machines")),
            "run {run}: {stdout}"
        );
        assert!(
            stdout.contains("i-node01"),
            "the installed OS read its metadata: {stdout}"
        );
    }
    // Each machine's disk holds the image.
    let disk = std::fs::metadata(data.path().join("disks/node01.img")).unwrap();
    assert_eq!(disk.len(), 8 * 1024 * 1024);
}
