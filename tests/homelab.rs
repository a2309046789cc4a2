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

#[test]
fn the_status_page_shows_the_run_in_headless_chromium() {
    use std::io::{BufRead, BufReader};
    let chromium = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(chromium) = chromium else {
        assert!(
            !std::env::var("TINKER_REQUIRE_REAL").is_ok_and(|v| v == "1"),
            "chromium is required (TINKER_REQUIRE_REAL=1)"
        );
        eprintln!("skipped: no chromium");
        return;
    };
    let exe = std::env::current_exe().unwrap();
    let homelab = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/homelab");
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(&homelab)
        .args(["--machines", "3", "--hold", "60", "--data"])
        .arg(data.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut url = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(u) = line.strip_prefix("status page: ") {
            url = u.split_whitespace().next().map(str::to_string);
        }
        if line.starts_with("provisioned") {
            break;
        }
    }
    let url = url.expect("the status page's address is printed");
    // Without the token, nothing.
    let base = url.split("/status").next().unwrap();
    let denied = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{base}/api/v1/workflows"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&denied.stdout), "401");
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", &url])
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("3 workflows, 3 machines"),
        "the page loaded its data:\n{dom}"
    );
    for want in [
        "node01",
        "node03",
        "stream-image: SUCCESS",
        "check-disk: SUCCESS",
        "engine: workflow default/node01",
        "Reboot: done",
    ] {
        assert!(dom.contains(want), "the page shows {want:?}:\n{dom}");
    }
}
