//! The whole lifecycle on a real (emulated) machine, under a real BMC.
//!
//! In namespaces the test creates: the control plane (`homelab --config`: store,
//! engine, DHCP, TFTP, HTTP, worker API, metadata) on the server side; on the
//! machine side OpenIPMI's `ipmi_sim`, whose chassis program starts and stops a
//! QEMU VM with a blank disk, booting from the network or the disk according to
//! the boot device the BMC was last told, under UEFI (OVMF). The test only writes
//! YAML: a Workflow appears, the engine sets PXE boot and powers the VM on over
//! IPMI, the VM PXE-boots into the in-memory OS with our worker, which streams a
//! disk image laid out as a real OS image is (GPT; an EFI system partition with
//! GRUB at the removable-media path; an ext4 root holding the kernel, its
//! initramfs and the installed OS) onto its disk and writes a file into the ext4
//! root (`writefile`); the engine turns netboot off, sets the disk as boot device
//! and power-cycles over IPMI; the firmware boots GRUB from the disk with no boot
//! entry, GRUB the kernel from the ext4 root, and the installed OS prints the
//! file and its instance-id and user-data from our metadata service. The test
//! reads the serial console, the BMC's call log, the disk and the store (through
//! the operator API), and prints where the time went (`TINKER_BENCH_WRITE=1`
//! also writes it to BENCHMARKS.md).

#[path = "support/netlab.rs"]
mod netlab;

#[path = "../benches/support/mod.rs"]
mod bench_support;

use netlab::{Lab, built_by_script, example, have, shipped_osie};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const VM_MAC: &str = "52:54:00:ab:cd:02";
const VETH_MAC: &str = "52:54:00:00:00:fd";
const HTTP: u16 = 8080;
const BMC_USER: &str = "admin";
const BMC_PASSWORD: &str = "vm-Bmc-Pa55word";
const USER_DATA: &str = "#cloud-config\nhostname: vm1\nruncmd: [echo provisioned-by-tinker]";

/// Where the file `writefile` writes into the installed OS's ext4 root, and what.
const WRITTEN_PATH: &str = "/etc/tinker/provisioned";
const WRITTEN: &str = "written into ext4 by the writefile action";
/// UEFI firmware for QEMU (Debian's `ovmf`): code read-only, variables per VM.
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";

/// Builds (cached under `target/`) the installed OS's kernel and the GPT disk
/// image with its layout (`disk.env`).
fn vm_os() -> PathBuf {
    built_by_script("build-vm-os.sh", "tinker-vm-gpt", &[])
}

/// The in-memory OS the VM netboots into: its kernel, its initramfs, and what it
/// prints on the console once the worker starts. The one place to change to boot
/// another in-memory OS.
struct InMemoryOs {
    kernel: PathBuf,
    initrd: PathBuf,
    booted: &'static str,
}

fn in_memory_os() -> InMemoryOs {
    // The in-memory OS we ship, built into the directory tests/osie.rs
    // uses, so the two share one build and the download cache.
    let (out, _) = shipped_osie("tinker-osie-x86_64");
    InMemoryOs {
        kernel: out.join("vmlinuz"),
        initrd: out.join("initramfs"),
        booted: "tinker-osie: starting worker",
    }
}

/// The disk image's layout, as the build script wrote it to `disk.env`.
struct DiskLayout {
    /// First sector (of 512 bytes) and length in sectors of the ext4 root.
    root_start: u64,
    root_size: u64,
    root_part: u32,
}

fn disk_layout(built: &Path) -> DiskLayout {
    let text = std::fs::read_to_string(built.join("disk.env")).unwrap();
    let get = |k: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} in disk.env: {text}"))
            .parse()
            .unwrap()
    };
    DiskLayout {
        root_start: get("ROOT_START"),
        root_size: get("ROOT_SIZE"),
        root_part: get("ROOT_PART") as u32,
    }
}

/// ipmi_sim's chassis program (`chassis_control "PROGRAM 0x20"`): called as
/// `0x20 get power boot` or `0x20 set power 1|0`, `set boot pxe|default`, `set
/// reset 1`. Power is the VM's process; the boot device is a file, read when the
/// VM is started, and given to the firmware as the devices' boot order (OVMF
/// follows `bootindex`, not `-boot`). The UEFI variables live beside the disk, as
/// a machine's NVRAM does, across power cycles.
fn chassis_program(dir: &Path, tap: &str) -> String {
    let d = dir.display();
    format!(
        r#"#!/bin/sh
d={d}
echo "$(date +%s.%N) $*" >> $d/bmc-calls.log
running() {{ [ -f $d/qemu.pid ] && kill -0 "$(cat $d/qemu.pid)" 2>/dev/null; }}
stop() {{ if running; then kill "$(cat $d/qemu.pid)"; while running; do sleep 0.05; done; fi; }}
start() {{
  dev=c nic=,bootindex=2 disk=,bootindex=1
  [ "$(cat $d/boot 2>/dev/null)" = pxe ] && dev=n nic=,bootindex=1 disk=,bootindex=2
  echo "=== $(date +%s.%N) power on, boot $dev ===" >> $d/serial.log
  qemu-system-x86_64 -machine accel=tcg -cpu max -m 512 -display none -monitor none \
    -drive if=pflash,format=raw,readonly=on,file={OVMF_CODE} -drive if=pflash,format=raw,file=$d/OVMF_VARS.fd \
    -netdev tap,id=n0,ifname={tap},script=no,downscript=no -device e1000,netdev=n0,mac={VM_MAC}$nic \
    -drive file=$d/vm-disk.img,format=raw,if=none,id=d0 -device virtio-blk-pci,drive=d0$disk \
    -chardev file,id=s0,path=$d/serial.log,append=on -serial chardev:s0 \
    -boot $dev -daemonize -pidfile $d/qemu.pid 2>> $d/qemu.err
}}
op=$2; shift 2
if [ "$op" = get ]; then
  for p in "$@"; do
    case $p in
      power) if running; then echo power:1; else echo power:0; fi;;
      boot) echo "boot:$(cat $d/boot 2>/dev/null || echo default)";;
    esac
  done
  exit 0
fi
case $1 in
  boot) echo "$2" > $d/boot;;
  power) if [ "$2" = 1 ]; then running || start; else stop; fi;;
  reset) if running; then stop; start; fi;;
esac
"#
    )
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// What the test saw, and when (seconds after the workflow was written).
#[derive(Default)]
struct Timeline {
    marks: BTreeMap<&'static str, f64>,
}

impl Timeline {
    fn mark(&mut self, what: &'static str, at: f64) {
        self.marks.entry(what).or_insert(at);
    }
    fn at(&self, what: &str) -> f64 {
        *self
            .marks
            .get(what)
            .unwrap_or_else(|| panic!("no time for {what}: {:?}", self.marks))
    }
}

#[test]
fn a_vm_is_provisioned_end_to_end_under_ipmi_sim() {
    if !have(&[
        "ip",
        "qemu-system-x86_64",
        "ipmi_sim",
        "ipmitool",
        "curl",
        "apt-get",
        "dpkg",
        "sfdisk",
        "mformat",
        "mcopy",
        "mkfs.ext4",
        "debugfs",
        "e2fsck",
        "grub-mkstandalone",
        "strip",
    ]) {
        return;
    }
    assert!(
        Path::new(OVMF_CODE).exists() && Path::new(OVMF_VARS).exists(),
        "UEFI firmware {OVMF_CODE}: install Debian's ovmf"
    );
    let built = vm_os();
    let osie = in_memory_os();
    let layout = disk_layout(&built);
    let mut lab = Lab::new(VETH_MAC);
    let dir = lab.dir.path().to_path_buf();
    let s = lab.subnet.clone();
    let bmc_ip = format!("{s}.3");

    // The machine's side: a bridge joining the segment and the VM's tap; the BMC
    // listens on the bridge.
    let short = &lab.client_ns[..lab.client_ns.len().min(11)];
    let (br, tap) = (format!("{short}br"), format!("{short}tp"));
    let ns = lab.client_ns.clone();
    for cmd in [
        format!("ip -n {ns} link add {br} type bridge"),
        format!("ip -n {ns} tuntap add dev {tap} mode tap"),
        format!("ip -n {ns} link set {} master {br}", lab.cli_if),
        format!("ip -n {ns} link set {tap} master {br}"),
        format!("ip -n {ns} link set {br} up"),
        format!("ip -n {ns} link set {tap} up"),
        format!("ip -n {ns} addr add {bmc_ip}/24 dev {br}"),
    ] {
        let o = Command::new("sh").args(["-c", &cmd]).output().unwrap();
        assert!(o.status.success(), "{cmd}: {o:?}");
    }
    // A blank disk larger than the image, as a real one is; NVRAM as shipped.
    Command::new("truncate")
        .args(["-s", "64M"])
        .arg(dir.join("vm-disk.img"))
        .status()
        .unwrap();
    std::fs::copy(OVMF_VARS, dir.join("OVMF_VARS.fd")).unwrap();
    // What the control plane serves: the in-memory OS and the disk image.
    let assets = dir.join("assets");
    std::fs::create_dir_all(&assets).unwrap();
    for (from, to) in [
        (&osie.kernel, "vmlinuz"),
        (&osie.initrd, "initrd"),
        (&built.join("disk.img.gz"), "disk.img.gz"),
    ] {
        std::fs::copy(from, assets.join(to)).unwrap();
    }

    // The BMC.
    let program = dir.join("chassis.sh");
    write(&program, &chassis_program(&dir, &tap));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    write(
        &dir.join("lan.conf"),
        &format!(
            r#"name "vm1-bmc"
set_working_mc 0x20
  startlan 1
    addr {bmc_ip} 623
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcd02
  endlan
  chassis_control "{} 0x20"
  user 2 true  "{BMC_USER}" "{BMC_PASSWORD}" admin  10 none md2 md5 straight
"#,
            program.display()
        ),
    );
    write(
        &dir.join("sim.emu"),
        "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n",
    );
    std::fs::create_dir_all(dir.join("bmc-state")).unwrap();
    let d = dir.display().to_string();
    lab.spawn_client(
        Path::new("/bin/sh"),
        &[
            "-c".into(),
            format!("cd {d} && exec ipmi_sim -c lan.conf -f sim.emu -s bmc-state -n"),
        ],
        "ipmi_sim.log",
    );

    // The control plane's configuration and objects (the workflow comes later).
    let objects = dir.join("objects");
    let data = dir.join("data");
    std::fs::create_dir_all(&objects).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let secret = "vm-provision-test-secret";
    std::fs::write(data.join("worker-secret"), secret).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("worker-secret"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    let operator = tinker::boot::credentials::operator_token(&tinker::core::Secret::new(secret));
    let operator = operator.expose();
    write(
        &dir.join("homelab.yaml"),
        &format!(
            "interface: {}\naddress: {}\nproxy_dhcp: false\nobjects: ./objects\nassets: {}\ndata: ./data\nhttp_port: {HTTP}\nkernel: vmlinuz\ninitrd: initrd\nkernel_args: [\"console=ttyS0,115200\"]\nbmc_user: {BMC_USER}\n",
            lab.srv_if,
            lab.server_ip,
            assets.display()
        ),
    );
    write(
        &objects.join("vm1.yaml"),
        &format!(
            r#"apiVersion: tinkerbell.org/v1alpha1
kind: Hardware
metadata: {{name: vm1, namespace: default}}
spec:
  bmcRef: {{apiGroup: bmc.tinkerbell.org, kind: Machine, name: vm1-bmc}}
  disks: [{{device: /dev/vda}}]
  metadata: {{instance: {{id: i-vm1-0042, hostname: vm1}}}}
  userData: {user_data:?}
  interfaces:
    - dhcp: {{mac: "{VM_MAC}", hostname: vm1, lease_time: 600, arch: x86_64, ip: {{address: {s}.10, netmask: 255.255.255.0}}}}
      netboot: {{allowPXE: false, allowWorkflow: true}}
---
apiVersion: bmc.tinkerbell.org/v1alpha1
kind: Machine
metadata: {{name: vm1-bmc, namespace: default}}
spec:
  connection:
    host: {bmc_ip}
    port: 623
    authSecretRef: {{name: vm1-bmc-creds, namespace: default}}
    insecureTLS: false
---
apiVersion: tinkerbell.org/v1alpha1
kind: Template
metadata: {{name: vm-install, namespace: default}}
spec:
  data: |
    version: "0.1"
    name: vm-install
    global_timeout: 1800
    tasks:
      - name: os-installation
        worker: "{{{{.device_1}}}}"
        volumes: ["/dev:/dev"]
        actions:
          - name: stream-image
            image: quay.io/tinkerbell/actions/image2disk:latest
            timeout: 900
            environment:
              DEST_DISK: {{{{ index .Hardware.Disks 0 }}}}
              IMG_URL: "http://{}:{HTTP}/assets/disk.img.gz"
              COMPRESSED: true
          - name: write-file
            image: quay.io/tinkerbell/actions/writefile:latest
            timeout: 120
            environment:
              DEST_DISK: {{{{ formatPartition ( index .Hardware.Disks 0 ) {root_part} }}}}
              FS_TYPE: ext4
              DEST_PATH: {WRITTEN_PATH}
              CONTENTS: {WRITTEN}
              UID: "1000"
              GID: "1000"
              MODE: "0600"
              DIRMODE: "0750"
"#,
            lab.server_ip,
            user_data = USER_DATA,
            root_part = layout.root_part,
        ),
    );
    lab.spawn_server(
        Path::new("/usr/bin/env"),
        &[
            // The Machine's own secret, read without the shared fallback.
            format!("TINKER_BMC_PASSWORD_DEFAULT_VM1_BMC_CREDS={BMC_PASSWORD}"),
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
    // The BMC answers, and the VM is off.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !lab
        .client_sh(&format!(
            "ipmitool -I lanplus -C 3 -H {bmc_ip} -U {BMC_USER} -P {BMC_PASSWORD} chassis power status"
        ))
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "ipmi_sim did not answer: {}",
            lab.log("ipmi_sim.log")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The hardware is loaded before the workflow arrives.
    let deadline = Instant::now() + Duration::from_secs(30);
    while api("/api/v1/hardware").as_array().is_none_or(Vec::is_empty) {
        assert!(
            Instant::now() < deadline,
            "hardware not loaded: {}",
            lab.log("server.log")
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Now the workflow: from here on, only the control plane acts.
    let t0 = Instant::now();
    let t0_wall = jiff::Timestamp::now();
    write(
        &objects.join("workflow.yaml"),
        &format!(
            "apiVersion: tinkerbell.org/v1alpha1\nkind: Workflow\nmetadata: {{name: vm1-install, namespace: default}}\nspec:\n  templateRef: vm-install\n  hardwareRef: vm1\n  hardwareMap: {{device_1: \"{VM_MAC}\"}}\n"
        ),
    );
    let mut timeline = Timeline::default();
    let mut events: BTreeMap<u64, serde_json::Value> = BTreeMap::new();
    let serial_path = dir.join("serial.log");
    let serial =
        || String::from_utf8_lossy(&std::fs::read(&serial_path).unwrap_or_default()).to_string();
    let markers: [(&str, &'static str); 7] = [
        ("power on, boot n", "VM powered on (PXE)"),
        (osie.booted, "in-memory OS up, worker started"),
        ("power on, boot c", "VM powered on (disk)"),
        ("TINKER-INSTALLED-OS-BOOTED", "installed OS booted"),
        ("TINKER-FILE-END", "installed OS printed the written file"),
        (
            "TINKER-INSTANCE-ID i-vm1-0042",
            "installed OS read its instance-id",
        ),
        ("TINKER-USER-DATA-END", "installed OS read its user-data"),
    ];
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut workflow = serde_json::Value::Null;
    loop {
        let now = t0.elapsed().as_secs_f64();
        let text = serial();
        for (needle, what) in markers {
            if text.contains(needle) {
                timeline.mark(what, now);
            }
        }
        if let Some(list) = api("/api/v1/events/default%2Fvm1").as_array() {
            for e in list {
                events.insert(e["seq"].as_u64().unwrap_or(0), e.clone());
            }
        }
        if let Some(wf) = api("/api/v1/workflows")
            .as_array()
            .and_then(|l| l.first().cloned())
        {
            workflow = wf;
        }
        let state = workflow["value"]["status"]["state"].as_str().unwrap_or("");
        assert!(
            !matches!(state, "FAILED" | "TIMEOUT"),
            "the workflow ended {state}: {workflow:#}\nserial tail:\n{}\nserver log:\n{}",
            tail(&text, 4000),
            tail(&lab.log("server.log"), 4000)
        );
        if text.contains("TINKER-USER-DATA-END") && state == "SUCCESS" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not provisioned in time; workflow {workflow:#}\nBMC calls:\n{}\nserial tail:\n{}\nserver log:\n{}",
            lab.log("bmc-calls.log"),
            tail(&text, 6000),
            tail(&lab.log("server.log"), 6000)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = serial();

    // The installed OS came up under UEFI from its ext4 root, the kernel loaded by
    // GRUB (which names it BOOT_IMAGE) from the disk's ESP, and printed what the
    // metadata service holds for it, and only it.
    assert!(
        text.contains(&format!(
            "TINKER-INSTALLED-OS-BOOTED ip={s}.10 efi=yes root=/dev/vda{},ext4 ",
            layout.root_part
        )),
        "the installed OS has its reserved address, booted by UEFI, on its ext4 root:\n{}",
        tail(&text, 3000)
    );
    assert!(
        text.contains("cmdline=BOOT_IMAGE=/boot/vmlinuz root=UUID=")
            && text.contains("tinker_installed=1"),
        "GRUB booted the disk's kernel line:\n{}",
        tail(&text, 3000)
    );
    // The file writefile wrote, as the installed OS reads it from its root.
    let dir_of = WRITTEN_PATH.rsplit_once('/').unwrap().0;
    assert!(
        text.contains(&format!(
            "TINKER-FILE {WRITTEN_PATH} mode=600 owner=1000:1000 dir-mode=750"
        )),
        "the installed OS sees the written file ({dir_of} made by the action):\n{}",
        tail(&text, 3000)
    );
    let written = text
        .split("TINKER-FILE-BEGIN")
        .nth(1)
        .and_then(|t| t.split("TINKER-FILE-END").next())
        .unwrap_or_default()
        .replace('\r', "");
    assert_eq!(written.trim(), WRITTEN, "the written file's contents");
    let user_data = text
        .split("TINKER-USER-DATA-BEGIN")
        .nth(1)
        .and_then(|t| t.split("TINKER-USER-DATA-END").next())
        .unwrap_or_default()
        .replace('\r', "");
    assert_eq!(user_data.trim(), USER_DATA, "user-data as stored");

    // The first boot went through PXE into the in-memory OS, where the worker ran
    // the action; the second booted the disk.
    let first = text.find("power on, boot n").expect("a PXE boot");
    let second = text.find("power on, boot c").expect("a disk boot");
    assert!(first < second);
    let pxe_part = &text[first..second];
    assert!(
        pxe_part.contains(osie.booted) && pxe_part.contains(&format!("worker_id={VM_MAC}")),
        "the in-memory OS came by PXE with its identity:\n{}",
        tail(pxe_part, 3000)
    );
    assert!(
        pxe_part.contains("stream-image") && pxe_part.contains("write-file"),
        "the worker's console shows the actions:\n{}",
        tail(pxe_part, 3000)
    );
    assert!(!text[second..].contains(osie.booted), "no second netboot");

    // The BMC was driven by the engine: PXE boot, power on; then disk, cycle.
    let calls = lab.log("bmc-calls.log");
    let sets: Vec<&str> = calls
        .lines()
        .filter_map(|l| l.split_once(" 0x20 set ").map(|(_, c)| c))
        .collect();
    let pos = |c: &str, from: usize| {
        sets[from..]
            .iter()
            .position(|x| *x == c)
            .map(|p| p + from)
            .unwrap_or_else(|| panic!("no `set {c}` after call {from} in {sets:?}"))
    };
    let pxe = pos("boot pxe", 0);
    let on = pos("power 1", pxe);
    let disk = pos("boot default", on);
    let off = pos("power 0", disk);
    pos("power 1", off);

    // The disk holds the image: the partition table and the ESP byte for byte
    // (nothing wrote there); the ext4 root is consistent and holds the file with
    // the owner and mode the action set, read by e2fsprogs from the disk itself.
    let mut image = Vec::new();
    gunzip(&built.join("disk.img.gz"), &mut image);
    let mut disk = Vec::new();
    std::fs::File::open(dir.join("vm-disk.img"))
        .unwrap()
        .read_to_end(&mut disk)
        .unwrap();
    let root =
        (layout.root_start * 512) as usize..((layout.root_start + layout.root_size) * 512) as usize;
    assert!(
        disk[..root.start] == image[..root.start],
        "the VM's disk holds the image's partition table and ESP"
    );
    assert!(
        disk[root.end..image.len()] == image[root.end..],
        "the VM's disk holds the image's backup partition table"
    );
    let root_fs = dir.join("root.ext4");
    std::fs::write(&root_fs, &disk[root]).unwrap();
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&root_fs)
        .output()
        .unwrap();
    assert!(fsck.status.success(), "the ext4 root is clean: {fsck:?}");
    let debugfs = |req: &str| {
        let o = Command::new("debugfs")
            .args(["-R", req])
            .arg(&root_fs)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    assert_eq!(debugfs(&format!("cat {WRITTEN_PATH}")), WRITTEN);
    let stat = debugfs(&format!("stat {WRITTEN_PATH}"));
    assert!(
        stat.contains("Mode:  0600")
            && stat.contains("User:  1000")
            && stat.contains("Group:  1000"),
        "{stat}"
    );

    // The store's view: the workflow and its action succeeded, and the engine
    // took every step after it.
    let status = &workflow["value"]["status"];
    let actions: Vec<&serde_json::Value> = status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["actions"].as_array().unwrap())
        .collect();
    assert_eq!(actions.len(), 2);
    assert!(
        actions.iter().all(|a| a["state"] == "SUCCESS"),
        "{status:#}"
    );
    // The engine's last step (the reboot) is recorded before the disk boots;
    // wait for the event to be read.
    let messages = || {
        events
            .values()
            .map(|e| {
                (
                    e["source"].as_str().unwrap_or("").to_string(),
                    e["message"].as_str().unwrap_or("").to_string(),
                    e["at"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    let engine_steps: Vec<String> = messages()
        .into_iter()
        .filter(|(src, m, _)| src == "engine" && m.ends_with(": done"))
        .map(|(_, m, _)| m.rsplit(": ").nth(1).unwrap_or("").to_string())
        .collect();
    assert_eq!(
        engine_steps,
        [
            "EnableNetboot",
            "SetPxeBoot",
            "PowerCycle",
            "DisableNetboot",
            "SetDiskBoot",
            "Reboot"
        ],
        "the engine's steps, in order: {:#?}",
        messages()
    );

    // Where the time went: the store's events (their own clock) and the test's
    // own observations of the console.
    let since = |at: &str| -> f64 {
        at.parse::<jiff::Timestamp>()
            .map(|t| t.duration_since(t0_wall).as_secs_f64())
            .unwrap_or(f64::NAN)
    };
    for (src, m, at) in messages() {
        let t = since(&at);
        let step = m.rsplit(": ").nth(1).unwrap_or("");
        match (src.as_str(), step) {
            ("engine", "EnableNetboot") => timeline.mark("engine: netboot on", t),
            ("engine", "SetPxeBoot") => timeline.mark("engine: PXE boot set over IPMI", t),
            ("engine", "PowerCycle") => timeline.mark("engine: powered on over IPMI", t),
            ("engine", "DisableNetboot") => timeline.mark("engine: netboot off", t),
            ("engine", "SetDiskBoot") => timeline.mark("engine: disk boot set over IPMI", t),
            ("engine", "Reboot") => timeline.mark("engine: power cycle over IPMI", t),
            _ => {}
        }
        if src == "dhcp" && t >= 0.0 {
            timeline.mark("first DHCP request answered", t);
        }
    }
    for (action, (claimed, done)) in actions.iter().zip([
        (
            "worker claimed its first action (image2disk)",
            "worker reported image2disk done",
        ),
        ("worker claimed writefile", "worker reported writefile done"),
    ]) {
        if let Some(at) = action["executionStart"].as_str() {
            timeline.mark(claimed, since(at));
        }
        if let Some(at) = action["executionStop"].as_str() {
            timeline.mark(done, since(at));
        }
    }
    let mut rows: Vec<(&str, f64)> = timeline.marks.iter().map(|(k, v)| (*k, *v)).collect();
    rows.sort_by(|a, b| a.1.total_cmp(&b.1));
    let total = timeline.at("installed OS read its user-data");
    let osie = timeline.at("in-memory OS up, worker started");
    let pxe_on = timeline.at("VM powered on (PXE)");
    let disk_on = timeline.at("VM powered on (disk)");
    let claim = timeline.at("worker claimed its first action (image2disk)");
    let mut body = format!(
        "`sudo TINKER_BENCH_WRITE=1 cargo test --test vm_provision -- --nocapture` (QEMU in software emulation, `-machine accel=tcg`, 2 cores; UEFI (OVMF); a GPT disk image: ESP with GRUB, ext4 root; one run)\n\nFrom writing the Workflow to the installed OS printing its user-data: **{total:.1} s**. From power-on to the worker's first claim **{:.1} s**, to the installed OS's metadata read **{:.1} s**.\n\n| seconds after the Workflow was written | what |\n|---:|---|\n",
        claim - pxe_on,
        total - pxe_on
    );
    for (what, t) in &rows {
        body.push_str(&format!("| {t:.1} | {what} |\n"));
    }
    body.push_str(&format!(
        "\nPhases: control plane to power-on {pxe_on:.1} s; firmware, PXE, iPXE, kernel and in-memory OS {:.1} s; the worker's actions and the engine's netboot-off, disk-boot and power cycle {:.1} s; firmware, GRUB and installed OS to its metadata {:.1} s.\n\n",
        osie - pxe_on,
        disk_on - osie,
        total - disk_on
    ));
    println!("{body}");
    if std::env::var("TINKER_BENCH_WRITE").is_ok_and(|v| v == "1") {
        bench_support::write_section(
            "vm_provision",
            "A QEMU VM provisioned end to end under ipmi_sim",
            &body,
        );
    }
}

fn tail(s: &str, n: usize) -> &str {
    let mut i = s.len().saturating_sub(n);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// gunzip with the system's gzip (the root package has no gzip crate).
fn gunzip(path: &Path, out: &mut Vec<u8>) {
    let o = Command::new("gzip")
        .arg("-dc")
        .arg(path)
        .output()
        .expect("gzip");
    assert!(o.status.success());
    *out = o.stdout;
}
