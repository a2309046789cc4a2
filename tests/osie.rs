//! The in-memory OS as a product: `osie build` makes the same bytes twice, and
//! the image it makes boots in QEMU (software emulation) under SeaBIOS and
//! OVMF, with a virtio and an e1000 NIC, through our DHCP, TFTP, iPXE and
//! HTTP (`homelab --config` serving the built `vmlinuz` and `initramfs`), into
//! the worker, which claims its first action and runs the real tools of the
//! image in it. The arm64 image is assembled and checked without a worker
//! (no aarch64 Rust target here), and the build says what is missing.
//!
//! `sudo TINKER_BENCH_WRITE=1 cargo test --test osie -- --nocapture --test-threads 1`
//! also writes the boot timings to BENCHMARKS.md.

#[path = "support/netlab.rs"]
mod netlab;

#[path = "../benches/support/mod.rs"]
mod bench_support;

use netlab::{Lab, example, have, require_real, shipped_osie, target_dir};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const VM_MAC: &str = "52:54:00:ab:cd:05";
const VETH_MAC: &str = "52:54:00:00:00:f5";
const HTTP: u16 = 8080;
/// Printed by the action once the image's own tools have run.
const TOOLS_OK: &str = "TINKER-OSIE-TOOLS-OK";

/// Whether the build's tools are here (and, under CI, that they must be).
fn can_build() -> bool {
    let missing: Vec<&str> = ["apt-get", "apt-cache", "dpkg-deb", "strip"]
        .into_iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(!require_real(), "the image build needs {missing:?}");
    eprintln!("skipped: missing {missing:?}");
    false
}

/// The image, built once per test run and shared by the tests.
fn image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE
        .get_or_init(|| shipped_osie("tinker-osie-x86_64").0)
        .clone()
}

/// The files in a built initramfs (`zstd -dc | cpio -t`).
fn listing(initramfs: &Path) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zstd -dc {} | cpio -t --quiet",
            initramfs.display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn building_twice_gives_identical_bytes() {
    if !can_build() {
        return;
    }
    let first = image();
    let before = std::fs::read(first.join("initramfs")).unwrap();
    // Again into the same directory: from the cache, the archive is unchanged.
    let (_, again) = shipped_osie("tinker-osie-x86_64");
    assert!(again.contains(", unchanged"), "{again}");
    // And into a fresh directory: assembled again, byte for byte the same.
    let fresh = target_dir().join("tinker-osie-x86_64-fresh");
    let _ = std::fs::remove_dir_all(&fresh);
    let (fresh, printed) = shipped_osie("tinker-osie-x86_64-fresh");
    assert!(!printed.contains(", unchanged"), "{printed}");
    for f in ["initramfs", "vmlinuz", "manifest"] {
        assert!(
            std::fs::read(first.join(f)).unwrap() == std::fs::read(fresh.join(f)).unwrap(),
            "{f} differs between two builds"
        );
    }
    assert_eq!(before, std::fs::read(first.join("initramfs")).unwrap());
    let _ = std::fs::remove_dir_all(&fresh);

    // What it holds: every wanted driver, the named firmware, the tools and
    // their libraries from Debian's packages, the worker, and no more than
    // the size we aim for.
    let manifest = std::fs::read_to_string(first.join("manifest")).unwrap();
    assert!(!manifest.contains("module-not-found"), "{manifest}");
    // Every driver the plan names (the issue's disks and NICs among them).
    for m in tinker_osie::plan::MODULES {
        assert!(
            manifest.contains(&format!("\nmodule {m} wanted\n")),
            "{m} in {manifest}"
        );
    }
    assert!(manifest.contains("\nfirmware intel/ice/ddp/ice.pkg firmware-misc-nonfree\n"));
    assert!(manifest.contains("\nfirmware rtl_nic/rtl8168h-2.fw firmware-realtek\n"));
    assert!(manifest.contains("\npackage libc6=2.36-"), "{manifest}");
    let size = std::fs::metadata(first.join("initramfs")).unwrap().len();
    assert!(size < 150 << 20, "{size} bytes");
    let files = listing(&first.join("initramfs"));
    for f in [
        "init",
        "bin/busybox",
        "usr/bin/tinker-worker",
        "lib64/ld-linux-x86-64.so.2",
        "lib/x86_64-linux-gnu/libgcc_s.so.1",
        "sbin/mke2fs",
        "sbin/sfdisk",
        "sbin/sgdisk",
        "sbin/kexec",
        "lib/firmware/rtl_nic/rtl8168h-2.fw",
        "dev/console",
    ] {
        assert!(files.lines().any(|l| l == f), "{f} not in the image");
    }
    // Only the named firmware: one package's worth would be thousands of files.
    let firmware = files
        .lines()
        .filter(|l| l.starts_with("lib/firmware/"))
        .count();
    assert!(firmware < 40, "{firmware} firmware entries");
    println!(
        "initramfs: {size} bytes ({:.1} MiB)",
        size as f64 / 1048576.0
    );
}

/// One boot at a time: four TCG VMs on two cores would measure nothing.
static VM: Mutex<()> = Mutex::new(());

struct Boot {
    firmware: &'static str,
    nic: &'static str,
    /// Seconds after power-on: worker started, action claimed, tools ran.
    started: f64,
    claimed: f64,
}

fn boot(firmware: &'static str, nic: &'static str) -> Option<Boot> {
    if !can_build() || !have(&["ip", "qemu-system-x86_64", "curl", "zstd", "cpio"]) {
        return None;
    }
    if firmware == "uefi" && !Path::new("/usr/share/OVMF/OVMF_CODE.fd").exists() {
        assert!(!require_real(), "OVMF is required (package ovmf)");
        eprintln!("skipped: no OVMF");
        return None;
    }
    let os = image();
    let _one = VM.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::new(VETH_MAC);
    let dir = lab.dir.path().to_path_buf();
    let s = lab.subnet.clone();
    let objects = dir.join("objects");
    let data = dir.join("data");
    std::fs::create_dir_all(&objects).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let secret = "osie-boot-test-secret";
    std::fs::write(data.join("worker-secret"), secret).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        data.join("worker-secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let operator = tinker::boot::credentials::operator_token(&tinker::core::Secret::new(secret));
    let operator = operator.expose().to_string();
    std::fs::write(
        dir.join("homelab.yaml"),
        format!(
            "interface: {}\naddress: {}\nproxy_dhcp: false\nobjects: ./objects\nassets: {}\ndata: ./data\nhttp_port: {HTTP}\nkernel: vmlinuz\ninitrd: initramfs\nkernel_args: [\"console=ttyS0,115200\"]\n",
            lab.srv_if,
            lab.server_ip,
            os.display()
        ),
    )
    .unwrap();
    // The action runs the image's own tools on files in /tmp: partitioning,
    // both file systems, kexec, block-device tools; any missing library fails it.
    let check = format!(
        "set -e; cd /tmp; truncate -s 16M d.img; echo 'label: gpt' | sfdisk -q d.img; sgdisk -p d.img >/dev/null; \
         mkfs.ext4 -q -F e.img 4096; e2fsck -fn e.img >/dev/null; blkid e.img >/dev/null; \
         mkfs.vfat -C f.img 1024 >/dev/null; fsck.vfat -n f.img >/dev/null; kexec --version >/dev/null; \
         partx --version >/dev/null; wipefs --version >/dev/null; echo {TOOLS_OK} $(uname -m)"
    );
    std::fs::write(
        objects.join("vm.yaml"),
        format!(
            r#"apiVersion: tinkerbell.org/v1alpha1
kind: Hardware
metadata: {{name: vm1, namespace: default}}
spec:
  metadata: {{instance: {{id: i-vm1-0005, hostname: vm1}}}}
  interfaces:
    - dhcp: {{mac: "{VM_MAC}", hostname: vm1, lease_time: 600, arch: x86_64, ip: {{address: {s}.10, netmask: 255.255.255.0}}}}
      netboot: {{allowPXE: true, allowWorkflow: true}}
---
apiVersion: tinkerbell.org/v1alpha1
kind: Template
metadata: {{name: osie-check, namespace: default}}
spec:
  data: |
    version: "0.1"
    name: osie-check
    global_timeout: 600
    tasks:
      - name: check
        worker: "{{{{.device_1}}}}"
        actions:
          - name: osie-tools
            image: exec
            timeout: 300
            command: ["sh", "-c", {check:?}]
---
apiVersion: tinkerbell.org/v1alpha1
kind: Workflow
metadata: {{name: vm1-check, namespace: default}}
spec:
  templateRef: osie-check
  hardwareRef: vm1
  hardwareMap: {{device_1: "{VM_MAC}"}}
"#
        ),
    )
    .unwrap();
    lab.spawn_server(
        Path::new("/usr/bin/env"),
        &[
            "RUST_LOG=info".into(),
            example("homelab").display().to_string(),
            "--config".into(),
            dir.join("homelab.yaml").display().to_string(),
        ],
        "server.log",
    );
    lab.wait_http(HTTP);
    let api = |path: &str| -> serde_json::Value {
        let out = lab.server_sh(&format!(
            "curl -s --max-time 5 -H 'Authorization: Bearer {operator}' http://{}:{HTTP}{path}",
            lab.server_ip
        ));
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while api("/api/v1/workflows")
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(
            Instant::now() < deadline,
            "workflow not loaded: {}",
            lab.log("server.log")
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let started = format!("tinker-osie: starting worker worker_id={VM_MAC} server=http://");
    let claimed = "action 0 \"osie-tools\"";
    let (serial, at) = lab.boot_vm_with(
        VM_MAC,
        firmware,
        nic,
        // The worker asks for more once its report is in: the VM stays up
        // until then, and the console shows the wait.
        &[&started, claimed, TOOLS_OK, "tinker: no action yet: "],
        Duration::from_secs(420),
    );
    let tail = |n: usize| {
        let mut i = serial.len().saturating_sub(n);
        while !serial.is_char_boundary(i) {
            i += 1;
        }
        serial[i..].to_string()
    };
    let what = format!("{firmware} + {nic}");
    assert!(
        at[0].is_some(),
        "{what}: the worker did not start.\nserial:\n{}\nserver log:\n{}",
        tail(6000),
        lab.log("server.log")
    );
    assert!(
        serial.contains(&format!("has {s}.10/24 from {}", lab.server_ip)),
        "{what}: the reserved address by DHCP:\n{}",
        tail(4000)
    );
    assert!(
        at[1].is_some() && at[2].is_some() && at[3].is_some(),
        "{what}: the worker did not claim and run its action.\nserial:\n{}\nserver log:\n{}",
        tail(6000),
        lab.log("server.log")
    );
    assert!(
        serial.contains(&format!("{TOOLS_OK} x86_64")),
        "{what}: {}",
        tail(3000)
    );
    // The store saw the claim, from this machine's worker.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let wf = api("/api/v1/workflows");
        let state = wf[0]["value"]["status"]["tasks"][0]["actions"][0]["state"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if state == "SUCCESS" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the store does not show the action done: {wf:#}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let b = Boot {
        firmware,
        nic,
        started: at[0].unwrap(),
        claimed: at[1].unwrap(),
    };
    println!(
        "{what}: power-on to worker started {:.1} s, to first claim {:.1} s",
        b.started, b.claimed
    );
    Some(b)
}

/// Adds one boot's times to BENCHMARKS.md (with `TINKER_BENCH_WRITE=1`): the
/// rows of every combination measured so far are kept in `target/` and the
/// section is written from all of them.
fn record(b: &Boot) {
    if !std::env::var("TINKER_BENCH_WRITE").is_ok_and(|v| v == "1") {
        return;
    }
    let rows_file = target_dir().join("tinker-osie-boots.json");
    let mut rows: std::collections::BTreeMap<String, (f64, f64)> = std::fs::read(&rows_file)
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_default();
    rows.insert(
        format!("{} | {}", b.firmware, b.nic),
        (b.started, b.claimed),
    );
    std::fs::write(&rows_file, serde_json::to_vec(&rows).unwrap()).unwrap();
    let size = std::fs::metadata(image().join("initramfs")).unwrap().len();
    let mut body = format!(
        "`sudo TINKER_BENCH_WRITE=1 cargo test --test osie -- --nocapture --test-threads 1` (QEMU in software emulation, `-machine accel=tcg`, 2 cores; one run each; from `qemu-system-x86_64` starting to the console line; the image built by `cargo run --release --example osie -- build`, here with the test build's worker: initramfs {:.1} MiB, zstd)\n\n| firmware | NIC | worker started (s) | first action claimed (s) |\n|---|---|---:|---:|\n",
        size as f64 / 1048576.0
    );
    for (k, (started, claimed)) in &rows {
        body.push_str(&format!("| {k} | {started:.1} | {claimed:.1} |\n"));
    }
    body.push('\n');
    bench_support::write_section(
        "osie_boot",
        "The in-memory OS: size and power-on to the first claim",
        &body,
    );
}

#[test]
fn boots_under_seabios_with_virtio_net_and_claims_an_action() {
    if let Some(b) = boot("bios", "virtio-net-pci") {
        record(&b);
    }
}

#[test]
fn boots_under_seabios_with_e1000_and_claims_an_action() {
    if let Some(b) = boot("bios", "e1000") {
        record(&b);
    }
}

#[test]
fn boots_under_ovmf_with_virtio_net_and_claims_an_action() {
    if let Some(b) = boot("uefi", "virtio-net-pci") {
        record(&b);
    }
}

#[test]
fn boots_under_ovmf_with_e1000_and_claims_an_action() {
    if let Some(b) = boot("uefi", "e1000") {
        record(&b);
    }
}

/// The arm64 image: assembled from arm64 packages and checked (busybox, the
/// tools and their libraries are aarch64 ELF, the kernel and the drivers are
/// there); the worker cannot be built here, and the build says so.
#[test]
fn aarch64_assembles_and_names_the_missing_rust_target() {
    use tinker_osie::build::{BuildOptions, Builder, check_rust_target};
    use tinker_osie::tree::Node;
    use tinker_osie::{Arch, elf};
    if !can_build() {
        return;
    }
    let out = target_dir().join("tinker-osie-aarch64");
    let mut b = Builder::new(BuildOptions::new(
        Arch::Aarch64,
        out.clone(),
        target_dir().join("tinker-osie-cache"),
    ));
    let image = b.assemble().expect("the arm64 image assembles");
    assert!(
        image.kernel_release.ends_with("-arm64"),
        "{}",
        image.kernel_release
    );
    // Debian's arm64 vmlinuz is a gzip-compressed Image.
    assert!(image.kernel.starts_with(&[0x1f, 0x8b]) || image.kernel[0x38..0x3c] == *b"ARM\x64");
    let machine = |path: &str| match image.tree.get(path) {
        Some(Node::File { data, .. }) => elf::inspect(path, data).unwrap().machine,
        other => panic!("{path}: {other:?}"),
    };
    for p in [
        "bin/busybox",
        "sbin/mke2fs",
        "sbin/sfdisk",
        "lib/aarch64-linux-gnu/libc.so.6",
        "lib/ld-linux-aarch64.so.1",
    ] {
        assert_eq!(machine(p), object_em_aarch64(), "{p}");
    }
    for m in [
        "nvme",
        "ahci",
        "virtio_net",
        "virtio_blk",
        "igb",
        "r8169",
        "mlx5_core",
    ] {
        assert!(
            image.modules.load_order.iter().any(|x| x == m)
                || image.modules.builtin.iter().any(|x| x == m),
            "{m}: {:?}",
            image.modules
        );
    }
    let ko = image
        .tree
        .iter()
        .filter(|(p, _)| p.ends_with(".ko"))
        .find_map(|(p, n)| match n {
            Node::File { data, .. } => Some((p.to_string(), data.clone())),
            _ => None,
        })
        .expect("modules in the image");
    assert_eq!(
        elf::inspect(&ko.0, &ko.1).unwrap().machine,
        object_em_aarch64()
    );
    // No aarch64 Rust target on this machine: the error names it and the fix.
    match check_rust_target(Arch::Aarch64) {
        Ok(()) => eprintln!("this toolchain has the aarch64 target; nothing to refuse"),
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains("aarch64-unknown-linux-gnu") && text.contains("rustup target add"),
                "{text}"
            );
            // And the command line stops with it, after assembling.
            let o = Command::new(example("osie"))
                .args(["build", "--arch", "aarch64", "--out"])
                .arg(&out)
                .arg("--cache")
                .arg(target_dir().join("tinker-osie-cache"))
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success());
            assert!(
                err.contains("tinker-osie: kernel 6.1")
                    && err.contains("rustup target add aarch64-unknown-linux-gnu"),
                "{err}"
            );
            assert!(!out.join("initramfs").exists(), "no image without a worker");
        }
    }
}

fn object_em_aarch64() -> u16 {
    // EM_AARCH64, from the ELF specification.
    183
}

/// `osie: build`: the homelab builds the in-memory OS into its empty assets
/// before serving, the same bytes `osie build` makes from the same inputs.
#[test]
fn homelab_builds_the_in_memory_os_before_serving_when_told() {
    use std::io::{BufRead, BufReader};
    if !can_build() || !have(&["ip"]) {
        return;
    }
    let built = image();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("objects")).unwrap();
    let port = || {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let tcp = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    std::fs::write(
        dir.path().join("homelab.yaml"),
        format!(
            "interface: lo\naddress: 127.0.0.1\nobjects: ./objects\nassets: ./assets\ndata: ./data\nosie: build\nhttp_port: {}\ndhcp_port: {}\ntftp_port: {}\nhegel_port: 0\nsyslog_port: 0\ngrpc_port: 0\n",
            tcp(),
            port(),
            port()
        ),
    )
    .unwrap();
    let mut child = Command::new(example("homelab"))
        .arg("--config")
        .arg(dir.path().join("homelab.yaml"))
        .env("TINKER_OSIE_CACHE", target_dir().join("tinker-osie-cache"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let serving = line.starts_with("serving");
        lines.push(line);
        if serving {
            break;
        }
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let all = lines.join("\n");
    assert!(
        all.contains("building it (osie: build)") && all.contains("no in-memory OS in"),
        "{all}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("serving"),
        "{all}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["vmlinuz", "initramfs"] {
        assert!(
            std::fs::read(dir.path().join("assets").join(f)).unwrap()
                == std::fs::read(built.join(f)).unwrap(),
            "{f}: the homelab built other bytes than `osie build`"
        );
    }
}
