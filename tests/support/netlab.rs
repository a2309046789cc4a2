//! A two-namespace network lab for tests: a server namespace and a client
//! namespace joined by a veth pair, addresses inside them only, no route out.
//! Everything is torn down on drop, processes first. Tests skip without root or
//! `ip`, and fail instead when `TINKER_REQUIRE_REAL=1`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Whether a missing real component must fail the test: the one rule, from
/// `tinker_core::testing`.
pub use tinker::core::testing::require_real;

/// `false` (with a note) when something the lab needs is missing, unless required.
pub fn have(tools: &[&str]) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let mut missing: Vec<String> = tools
        .iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|t| t.to_string())
        .collect();
    if !root {
        missing.push("root".into());
    }
    if missing.is_empty() {
        return true;
    }
    if require_real() {
        panic!("required for this test (TINKER_REQUIRE_REAL=1): {missing:?}; run .ci/run");
    }
    eprintln!("skipped: missing {missing:?}");
    false
}

fn sh(cmd: &str) -> Output {
    Command::new("sh").args(["-c", cmd]).output().expect("sh")
}

fn must(cmd: &str) {
    let o = sh(cmd);
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The examples directory next to this test binary (cargo builds examples for tests).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is not built (cargo test builds examples)",
        p.display()
    );
    p
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The lab. The server side is `10.77.N.1/24` on `srv_if`; the client side has no
/// address until a DHCP client gets one.
pub struct Lab {
    pub server_ns: String,
    pub client_ns: String,
    pub srv_if: String,
    pub cli_if: String,
    pub server_ip: String,
    pub subnet: String,
    pub dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Lab {
    /// Creates the namespaces and the veth pair; the client interface gets `client_mac`.
    pub fn new(client_mac: &str) -> Lab {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}{}", std::process::id() % 100000, n);
        let lab = Lab {
            server_ns: format!("tks{id}"),
            client_ns: format!("tkc{id}"),
            srv_if: format!("tka{id}"),
            cli_if: format!("tkb{id}"),
            server_ip: format!("10.77.{}.1", 10 + n % 200),
            subnet: format!("10.77.{}", 10 + n % 200),
            dir: tempfile::tempdir().unwrap(),
            children: Vec::new(),
        };
        must(&format!("ip netns add {}", lab.server_ns));
        must(&format!("ip netns add {}", lab.client_ns));
        // Clients run inside the namespace but share /etc: give the namespace its
        // own resolv.conf so no hook can touch the machine's.
        std::fs::create_dir_all(format!("/etc/netns/{}", lab.client_ns)).unwrap();
        std::fs::write(format!("/etc/netns/{}/resolv.conf", lab.client_ns), "").unwrap();
        must(&format!(
            "ip link add {} type veth peer name {}",
            lab.srv_if, lab.cli_if
        ));
        must(&format!(
            "ip link set {} netns {}",
            lab.srv_if, lab.server_ns
        ));
        must(&format!(
            "ip link set {} netns {} address {client_mac}",
            lab.cli_if, lab.client_ns
        ));
        must(&format!(
            "ip -n {} addr add {}/24 dev {}",
            lab.server_ns, lab.server_ip, lab.srv_if
        ));
        for (ns, ifc) in [(&lab.server_ns, &lab.srv_if), (&lab.client_ns, &lab.cli_if)] {
            must(&format!("ip -n {ns} link set {ifc} up"));
            must(&format!("ip -n {ns} link set lo up"));
        }
        lab
    }

    /// Runs a command in the server namespace, in the background, until drop.
    pub fn spawn_server(&mut self, program: &Path, args: &[String], log: &str) {
        let ns = self.server_ns.clone();
        self.spawn_in(&ns, program, args, log);
    }

    /// Runs a command in the client namespace, in the background, until drop.
    pub fn spawn_client(&mut self, program: &Path, args: &[String], log: &str) {
        let ns = self.client_ns.clone();
        self.spawn_in(&ns, program, args, log);
    }

    fn spawn_in(&mut self, ns: &str, program: &Path, args: &[String], log: &str) {
        let log = std::fs::File::create(self.dir.path().join(log)).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    /// Waits until the boot server's HTTP health check answers.
    pub fn wait_http(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self
                .server_sh(&format!(
                    "curl -sf --max-time 1 http://{}:{port}/healthz",
                    self.server_ip
                ))
                .status
                .success()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "the server did not come up on {}:{port}; log:\n{}",
            self.server_ip,
            self.log("server.log")
        );
    }

    /// A file of the lab directory, as text.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Runs a shell command in the client namespace.
    pub fn client_sh(&self, cmd: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.client_ns, "sh", "-c", cmd])
            .output()
            .unwrap()
    }

    /// Runs a shell command in the server namespace.
    pub fn server_sh(&self, cmd: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.server_ns, "sh", "-c", cmd])
            .output()
            .unwrap()
    }

    /// The client's IPv4 addresses.
    pub fn client_addresses(&self) -> String {
        String::from_utf8_lossy(
            &sh(&format!(
                "ip -n {} -4 -o addr show dev {}",
                self.client_ns, self.cli_if
            ))
            .stdout,
        )
        .to_string()
    }

    /// Removes the client's addresses.
    pub fn flush_client(&self) {
        sh(&format!(
            "ip -n {} addr flush dev {}",
            self.client_ns, self.cli_if
        ));
    }

    /// GET a URL of the server from the client namespace.
    pub fn http_get(&self, path: &str, port: u16) -> String {
        let out = self.client_sh(&format!(
            "curl -s --max-time 5 http://{}:{port}{path}",
            self.server_ip
        ));
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Reads a Prometheus counter of the boot server.
    pub fn metric(&self, name: &str, port: u16) -> u64 {
        let text = String::from_utf8_lossy(
            &self
                .server_sh(&format!(
                    "curl -s --max-time 5 http://{}:{port}/metrics",
                    self.server_ip
                ))
                .stdout,
        )
        .to_string();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{name} "))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.server_ns, &self.client_ns] {
            sh(&format!("ip netns pids {ns} | xargs -r kill -9"));
            sh(&format!("ip netns del {ns}"));
        }
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.client_ns));
    }
}

/// A hook script for DHCP clients that only sets the address inside the
/// namespace (no resolv.conf, no hostname).
pub fn client_hook(dir: &Path) -> PathBuf {
    let p = dir.join("hook.sh");
    std::fs::write(
        &p,
        "#!/bin/sh\ncase \"$reason$1\" in\n  BOUND*|RENEW*|REBIND*|REBOOT*) ip addr add \"$new_ip_address/24\" dev \"$interface\" ;;\n  bound*|renew*) ip addr replace \"$ip/${mask:-24}\" dev \"$interface\" ;;\nesac\nexit 0\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Builds (once per machine, cached under `target/`) the kernel and initramfs the
/// PXE tests boot; returns their directory.
pub fn test_os() -> PathBuf {
    built_by_script("build-test-os.sh", "tinker-test-os", &[])
}

/// `target/`, where what the tests build is cached between runs.
pub fn target_dir() -> PathBuf {
    // target/debug/deps/<test> -> target
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// Runs `osie build` for x86_64 (the in-memory OS we ship) with this test
/// build's worker into `target/NAME`, sharing one download cache; returns the
/// directory and what the command printed.
pub fn shipped_osie(name: &str) -> (PathBuf, String) {
    let out = target_dir().join(name);
    let o = Command::new(example("osie"))
        .args(["build", "--arch", "x86_64", "--out"])
        .arg(&out)
        .arg("--cache")
        .arg(target_dir().join("tinker-osie-cache"))
        .arg("--worker")
        .arg(example("worker"))
        .output()
        .expect("osie");
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "osie build failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    (out, stdout)
}

/// Runs `tests/support/SCRIPT OUT ARGS...` with `OUT` = `target/OUT_NAME` (the
/// scripts cache what they build there); returns `OUT`.
pub fn built_by_script(script: &str, out_name: &str, args: &[&Path]) -> PathBuf {
    let out = target_dir().join(out_name);
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(script);
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let o = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .args(args)
        .output()
        .expect("bash");
    assert!(
        o.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

impl Lab {
    /// Boots a QEMU VM (software emulation: KVM aborts on this kind of machine)
    /// from the network on a tap bridged to the client side of the lab, with
    /// `firmware` "bios" or "uefi"; returns the serial console once `marker`
    /// appears, the VM powers off, or `timeout` passes.
    pub fn boot_vm(&self, mac: &str, firmware: &str, marker: &str, timeout: Duration) -> String {
        self.boot_vm_with(mac, firmware, "e1000", &[marker], timeout)
            .0
    }

    /// [`Lab::boot_vm`] with the NIC model `nic` (`e1000`, `virtio-net-pci`),
    /// waiting for `markers` to appear in this order; also returns when each
    /// was first seen on the console, in seconds after QEMU started.
    pub fn boot_vm_with(
        &self,
        mac: &str,
        firmware: &str,
        nic: &str,
        markers: &[&str],
        timeout: Duration,
    ) -> (String, Vec<Option<f64>>) {
        let br = format!("{}br", &self.client_ns[..self.client_ns.len().min(11)]);
        let tap = format!("{}tp", &self.client_ns[..self.client_ns.len().min(11)]);
        let ns = &self.client_ns;
        must(&format!("ip -n {ns} link add {br} type bridge"));
        must(&format!("ip -n {ns} tuntap add dev {tap} mode tap"));
        must(&format!("ip -n {ns} link set {} master {br}", self.cli_if));
        must(&format!("ip -n {ns} link set {tap} master {br}"));
        for dev in [&br, &tap] {
            must(&format!("ip -n {ns} link set {dev} up"));
        }
        let log = self.dir.path().join(format!("vm-{firmware}-{nic}.log"));
        let mut args: Vec<String> = [
            "-machine",
            "accel=tcg",
            "-cpu",
            "max",
            "-m",
            "512",
            "-nographic",
            "-no-reboot",
            "-monitor",
            "none",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if firmware == "uefi" {
            let vars = self.dir.path().join("OVMF_VARS.fd");
            std::fs::copy("/usr/share/OVMF/OVMF_VARS.fd", &vars).expect("OVMF (package ovmf)");
            args.extend([
                "-drive".into(),
                "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd".into(),
                "-drive".into(),
                format!("if=pflash,format=raw,file={}", vars.display()),
            ]);
        }
        args.extend([
            "-netdev".into(),
            format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            "-device".into(),
            format!("{nic},netdev=n0,mac={mac}"),
            "-boot".into(),
            "n".into(),
            "-serial".into(),
            format!("file:{}", log.display()),
        ]);
        let mut vm = Command::new("ip")
            .args(["netns", "exec", ns, "qemu-system-x86_64"])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("qemu.err")).unwrap())
            .spawn()
            .expect("qemu-system-x86_64");
        let started = Instant::now();
        let deadline = started + timeout;
        let mut seen: Vec<Option<f64>> = vec![None; markers.len()];
        loop {
            let text =
                String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).to_string();
            // In order: each marker counts only after the one before it.
            let mut from = 0;
            for (m, at) in markers.iter().zip(seen.iter_mut()) {
                match text[from..].find(m) {
                    Some(i) => {
                        from += i + m.len();
                        at.get_or_insert(started.elapsed().as_secs_f64());
                    }
                    None => break,
                }
            }
            if seen.iter().all(Option::is_some)
                || Instant::now() > deadline
                || vm.try_wait().ok().flatten().is_some()
            {
                let _ = vm.kill();
                let _ = vm.wait();
                return (text, seen);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
