//! HookOS's side of Smee, on a real iPXE boot: a QEMU VM (software emulation)
//! PXE-boots through our DHCP into QEMU's iPXE, which fetches its script at
//! Smee's path (`/ipxe/script/<mac>/auto.ipxe`, named by DHCP because the
//! control plane boots HookOS by default), and boots a stand-in for HookOS under
//! HookOS's file names (`vmlinuz-x86_64`, `initramfs-x86_64`; HookOS itself
//! cannot be downloaded here). The stand-in prints `/proc/cmdline`, which the
//! test checks holds every parameter hook-bootkit reads, in Smee's order, and
//! sends a syslog line, which must land in the machine's timeline.

#[path = "support/netlab.rs"]
mod netlab;

use netlab::{Lab, built_by_script, example, have, test_os};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const VM_MAC: &str = "52:54:00:ab:cd:03";
const VETH_MAC: &str = "52:54:00:00:00:fc";
const HTTP: u16 = 8080;
const IMAGE: &str = "quay.io/tinkerbell/tink-agent:test";

/// The stand-in HookOS (cached under `target/`).
fn hookos_standin() -> PathBuf {
    built_by_script(
        "build-hookos-standin.sh",
        "tinker-hookos-standin",
        &[&test_os()],
    )
}

#[test]
fn ipxe_boots_hookos_from_smees_path_with_hook_bootkits_kernel_line() {
    if !have(&[
        "ip",
        "qemu-system-x86_64",
        "curl",
        "apt-get",
        "dpkg",
        "cpio",
    ]) {
        return;
    }
    let assets = hookos_standin();
    let mut lab = Lab::new(VETH_MAC);
    let dir = lab.dir.path().to_path_buf();
    let objects = dir.join("objects");
    std::fs::create_dir_all(&objects).unwrap();
    // A Hardware as a Tinkerbell user has it: no Tinker annotation; the
    // control plane's configuration chooses HookOS. Its own kernel
    // parameters come last.
    std::fs::write(
        objects.join("vm.yaml"),
        format!(
            r#"apiVersion: tinkerbell.org/v1alpha1
kind: Hardware
metadata: {{name: vm1, namespace: default}}
spec:
  agentID: agent-vm1
  metadata: {{facility: {{facility_code: lab1}}, instance: {{id: i-vm1, hostname: vm1}}}}
  interfaces:
    - dhcp: {{mac: "{VM_MAC}", hostname: vm1, lease_time: 600, arch: x86_64, ip: {{address: {s}.10, netmask: 255.255.255.0}}}}
      netboot:
        allowPXE: true
        allowWorkflow: true
        osie: {{kernelParams: ["machine_param=mine", "console=ttyS0,115200"]}}
"#,
            s = lab.subnet
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("homelab.yaml"),
        format!(
            "interface: {}\naddress: {}\nproxy_dhcp: false\nobjects: ./objects\nassets: {}\ndata: ./data\nhttp_port: {HTTP}\nhookos:\n  default: true\n  tink_worker_image: {IMAGE}\n  extra_args: [global_param=all]\n",
            lab.srv_if,
            lab.server_ip,
            assets.display()
        ),
    )
    .unwrap();
    lab.spawn_server(
        &example("homelab"),
        &[
            "--config".into(),
            dir.join("homelab.yaml").display().to_string(),
        ],
        "server.log",
    );
    lab.wait_http(HTTP);
    let serial = lab.boot_vm(
        VM_MAC,
        "bios",
        "HOOKOS-STANDIN-DONE",
        Duration::from_secs(300),
    );
    let tail = || {
        format!(
            "serial tail:\n{}\nserver log tail:\n{}",
            &serial[serial.len().saturating_sub(3000)..],
            {
                let log = lab.log("server.log");
                log[log.len().saturating_sub(3000)..].to_string()
            }
        )
    };
    // iPXE was sent to Smee's path, and said so on the console.
    let encoded = VM_MAC.replace(':', "%3A");
    assert!(
        serial.contains(&format!("/ipxe/script/{VM_MAC}/auto.ipxe"))
            || serial.contains(&format!("/ipxe/script/{encoded}/auto.ipxe")),
        "iPXE did not fetch Smee's path.\n{}",
        tail()
    );
    let cmdline = serial
        .lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix("HOOKOS-CMDLINE "))
        .unwrap_or_else(|| panic!("the stand-in did not print its kernel line.\n{}", tail()))
        .to_string();
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    let server = &lab.server_ip;
    let expected = [
        "facility=lab1".to_string(),
        format!("syslog_host={server}"),
        format!("grpc_authority={server}:42113"),
        "tinkerbell_tls=false".into(),
        "tinkerbell_insecure_tls=false".into(),
        "worker_id=agent-vm1".into(),
        format!("hw_addr={VM_MAC}"),
        "modules=loop,squashfs,sd-mod,usb-storage".into(),
        "intel_iommu=on".into(),
        "iommu=pt".into(),
        // iPXE expanded ${initrd} to HookOS's file name.
        "initrd=initramfs-x86_64".into(),
        "console=tty0".into(),
        "console=ttyS1,115200".into(),
        format!("tink_worker_image={IMAGE}"),
        "global_param=all".into(),
        "machine_param=mine".into(),
        "console=ttyS0,115200".into(),
    ];
    // Each, in Smee's order (the kernel may add words of its own, such as
    // BOOT_IMAGE, so these are looked up, not compared whole).
    let mut at = 0;
    for want in &expected {
        let i = words
            .iter()
            .position(|w| w == want)
            .unwrap_or_else(|| panic!("{want} is not on the kernel line {cmdline:?}"));
        assert!(i >= at, "{want} out of order in {cmdline:?}");
        at = i;
    }
    assert!(
        serial.contains(&format!("HOOKOS-STANDIN ip={}.10", lab.subnet)),
        "the stand-in did not get its reserved address.\n{}",
        tail()
    );
    // Its syslog line came from its address and is in its timeline,
    // unauthenticated.
    let token_file = dir.join("data/operator-token");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = lab.server_sh(&format!(
            "curl -s --max-time 5 -H \"Authorization: Bearer $(cat {})\" http://{server}:{HTTP}/api/v1/events/default%2Fvm1?limit=200",
            token_file.display()
        ));
        let events: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let line = events.as_array().into_iter().flatten().find(|e| {
            e["source"] == "syslog"
                && e["event"]["line"]
                    .as_str()
                    .is_some_and(|l| l.contains("stand-in booted"))
        });
        if let Some(line) = line {
            assert_eq!(line["event"]["kind"], "syslogLine");
            assert_eq!(line["event"]["from"], format!("{}.10", lab.subnet));
            assert_eq!(line["event"]["app"], "hook-bootkit");
            assert!(
                line["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("unauthenticated")),
                "{line}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stand-in's syslog line is not in the timeline: {events}\n{}",
            tail()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
