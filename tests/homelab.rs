//! The README's first command: the simulated rack provisions every machine, and a
//! second run over the same data directory does it again.

#[path = "support/common.rs"]
mod common;
#[path = "support/netlab.rs"]
mod netlab;

use std::process::Command;

/// A homelab process that is killed however the test ends, so a failed
/// assertion leaves nothing running (holding ports, files or locks).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
    let mut child = Running(
        Command::new(&homelab)
            .args(["--machines", "3", "--hold", "60", "--data"])
            .arg(data.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut url = None;
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
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
    assert!(!url.contains("token"), "no token in the printed URL: {url}");
    let token = std::fs::read_to_string(data.path().join("operator-token"))
        .expect("the operator token is written to <data>/operator-token")
        .trim()
        .to_string();
    let base = url.split("/status").next().unwrap().to_string();
    let curl = |args: &[&str]| {
        let o = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    // Without the token, nothing; with it in the URL (where history and logs
    // keep it), nothing either; as a header, the data.
    let api = format!("{base}/api/v1/workflows");
    assert_eq!(curl(&[&api]), "401");
    assert_eq!(curl(&[&format!("{api}?token={token}")]), "401");
    assert_eq!(
        curl(&["-H", &format!("Authorization: Bearer {token}"), &api]),
        "200"
    );
    // The browser signs in once on the page's form: a page of its own posts the
    // token the way an operator's browser would, and the status page then
    // loads its data with the session cookie alone.
    let page_dir = tempfile::tempdir().unwrap();
    let login = page_dir.path().join("login.html");
    std::fs::write(
        &login,
        format!(
            "<!doctype html><form method=post action=\"{base}/login\"><input name=token value=\"{token}\"></form><script>document.forms[0].submit()</script>"
        ),
    )
    .unwrap();
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
                "--allow-file-access-from-files",
                "--virtual-time-budget=8000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--dump-dom")
            .arg(format!("file://{}", login.display()))
            .output()
            .unwrap();
        let printed = !o.stdout.is_empty();
        out = Some(o);
        if printed {
            break;
        }
    }
    let out = out.unwrap();
    drop(child);
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
    let (http, dhcp, tftp, hegel, grpc) = (
        port(false),
        port(true),
        port(true),
        port(false),
        port(false),
    );
    // The in-memory OS must be there before anything is served (its contents
    // do not matter here).
    std::fs::create_dir_all(dir.path().join("assets")).unwrap();
    for f in ["vmlinuz", "initramfs"] {
        std::fs::write(dir.path().join("assets").join(f), f).unwrap();
    }
    std::fs::write(
        dir.path().join("homelab.yaml"),
        format!("interface: lo\naddress: 127.0.0.1\nobjects: ./objects\nassets: ./assets\ndata: ./data\nhttp_port: {http}\ndhcp_port: {dhcp}\ntftp_port: {tftp}\nhegel_port: {hegel}\nsyslog_port: 0\ngrpc_port: {grpc}\n"),
    )
    .unwrap();
    let mut child = Running(
        Command::new(&homelab)
            .arg("--config")
            .arg(dir.path().join("homelab.yaml"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
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
    assert!(!url.contains("token"), "no token in the printed URL: {url}");
    let token_file = dir.path().join("data/operator-token");
    let token = std::fs::read_to_string(&token_file)
        .expect("the operator token is written to <data>/operator-token")
        .trim()
        .to_string();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the token file is the operator's alone");
        let mode = std::fs::metadata(dir.path().join("data/worker-secret"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "and so is the secret");
    }
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
    // `hegel_port`: the metadata service there too, for the machine itself.
    let o = Command::new("curl")
        .args(["-s", "--interface", "127.88.0.1"])
        .arg(format!(
            "http://127.0.0.1:{hegel}/2009-04-04/meta-data/instance-id"
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "nuc1");
    // `grpc_port` moves tink-agent's gRPC service.
    std::net::TcpStream::connect(("127.0.0.1", grpc)).expect("gRPC listens on grpc_port");
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
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "exit {status:?}: {rest:?}");
    assert!(rest.iter().any(|l| l == "stopped"), "{rest:?}");
}

#[test]
fn config_mode_without_the_in_memory_os_says_the_command_that_builds_it() {
    let homelab = netlab::example("homelab");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("objects")).unwrap();
    std::fs::create_dir_all(dir.path().join("assets")).unwrap();
    // Only the kernel: the initramfs is missing.
    std::fs::write(dir.path().join("assets/vmlinuz"), "k").unwrap();
    std::fs::write(
        dir.path().join("homelab.yaml"),
        "interface: lo\naddress: 127.0.0.1\nobjects: ./objects\nassets: ./assets\ndata: ./data\n",
    )
    .unwrap();
    let o = Command::new(&homelab)
        .arg("--config")
        .arg(dir.path().join("homelab.yaml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "it must not serve: {err}");
    let assets = dir.path().join("assets");
    assert!(
        err.contains(&format!(
            "cargo run --release --example osie -- build --arch x86_64 --out {}",
            assets.display()
        )) && err.contains("initramfs missing")
            && err.contains("osie: build"),
        "{err}"
    );
    // Nothing was bound or served: no store was even opened.
    assert!(!dir.path().join("data/tinker.redb").exists());

    // No assets directory at all: the same advice.
    std::fs::write(
        dir.path().join("homelab.yaml"),
        "interface: lo\naddress: 127.0.0.1\nobjects: ./objects\ndata: ./data\n",
    )
    .unwrap();
    let o = Command::new(&homelab)
        .arg("--config")
        .arg(dir.path().join("homelab.yaml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("--example osie -- build --arch x86_64 --out assets"),
        "{err}"
    );
}
