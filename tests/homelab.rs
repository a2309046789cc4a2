//! The README's first command: the simulated rack provisions every machine, and a
//! second run over the same data directory does it again.

#[path = "support/common.rs"]
mod common;
#[path = "support/netlab.rs"]
mod netlab;

use std::process::Command;

#[test]
fn the_simulated_rack_provisions_every_machine_twice() {
    let homelab = netlab::example("homelab");
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
            !common::require_real(),
            "chromium is required (TINKER_REQUIRE_REAL=1)"
        );
        eprintln!("skipped: no chromium");
        return;
    };
    let homelab = netlab::example("homelab");
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(&homelab)
        .args(["--machines", "3", "--hold", "60", "--data"])
        .arg(data.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut url = None;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(u) = line.strip_prefix("status page: ") {
            url = u.split_whitespace().next().map(str::to_string);
        }
        if line.starts_with("provisioned") {
            break;
        }
    }
    // Keep reading: the homelab prints more while it holds, and a closed pipe would
    // end it (println! panics on EPIPE) before the browser gets to the page.
    std::thread::spawn(move || lines.for_each(drop));
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
    // A headless browser that dies while starting (it happens on a loaded machine)
    // prints nothing at all; that is not what this test checks, so it gets two more
    // tries. A page that loads without the data still fails below.
    let mut out = None;
    for _ in 0..3 {
        let profile = tempfile::tempdir().unwrap();
        let o = Command::new(chromium)
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
        let printed = !o.stdout.is_empty();
        out = Some(o);
        if printed {
            break;
        }
    }
    let out = out.unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("3 workflows, 3 machines"),
        "the page loaded its data:\n{dom}\nchromium said:\n{}",
        String::from_utf8_lossy(&out.stderr)
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

#[test]
fn config_mode_serves_picks_up_new_files_and_stops_cleanly() {
    use std::io::{BufRead, BufReader};
    if !std::path::Path::new("/usr/lib/ipxe/undionly.kpxe").exists() {
        assert!(!common::require_real(), "Debian's ipxe package is required");
        return;
    }
    if !common::is_root() {
        assert!(
            !common::require_real(),
            "root is required to bind DHCP to an interface (TINKER_REQUIRE_REAL=1)"
        );
        eprintln!("skipped: binding DHCP to an interface needs root");
        return;
    }
    let homelab = netlab::example("homelab");
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    std::fs::create_dir_all(&objects).unwrap();
    std::fs::write(objects.join("a.yaml"), "apiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\nmetadata: {name: nuc1}\nspec: {interfaces: [{dhcp: {mac: \"02:00:00:00:aa:01\", ip: {address: 127.88.0.1, netmask: 255.0.0.0}}, netboot: {allowPXE: true}}]}\n").unwrap();
    let port = |udp: bool| {
        if udp {
            std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        } else {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        }
    };
    let (http, dhcp, tftp) = (port(false), port(true), port(true));
    std::fs::write(
        dir.path().join("homelab.yaml"),
        format!("interface: lo\naddress: 127.0.0.1\nobjects: ./objects\ndata: ./data\nhttp_port: {http}\ndhcp_port: {dhcp}\ntftp_port: {tftp}\n"),
    )
    .unwrap();
    let mut child = Command::new(&homelab)
        .arg("--config")
        .arg(dir.path().join("homelab.yaml"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(u) = line.strip_prefix("status page: ") {
            url = u.split_whitespace().next().map(str::to_string);
        }
        if line.starts_with("serving") {
            break;
        }
    }
    let url = url.expect("the status page is printed");
    let token = url.split("token=").nth(1).unwrap().to_string();
    let api = |what: &str| {
        let o = Command::new("curl")
            .args([
                "-s",
                "-H",
                &format!("Authorization: Bearer {token}"),
                &format!("http://127.0.0.1:{http}/api/v1/{what}"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    assert!(api("hardware").contains("nuc1"), "loaded at start");
    // A new file is picked up.
    std::fs::write(objects.join("b.yaml"), "apiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\nmetadata: {name: nuc2}\nspec: {interfaces: [{dhcp: {mac: \"02:00:00:00:aa:02\", ip: {address: 127.88.0.2, netmask: 255.0.0.0}}}]}\n").unwrap();
    let mut seen = false;
    for _ in 0..50 {
        if api("hardware").contains("nuc2") {
            seen = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(seen, "the new file was not picked up");
    // SIGTERM: a clean stop.
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status:?}: {rest:?}");
    assert!(rest.iter().any(|l| l == "stopped"), "{rest:?}");
}
