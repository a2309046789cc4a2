//! Real PXE firmware: a QEMU VM (software emulation) PXE-boots through our DHCP and
//! TFTP into iPXE, fetches its script over HTTP, boots a Debian kernel and a
//! busybox initramfs, and prints its metadata `instance-id` from our metadata
//! service on the serial console, which the test reads. BIOS and UEFI, and BIOS in
//! proxyDHCP mode beside dnsmasq.

#[path = "support/netlab.rs"]
mod netlab;

use netlab::{Lab, example, have, test_os};
use std::time::Duration;

const VM_MAC: &str = "52:54:00:ab:cd:01";
const VETH_MAC: &str = "52:54:00:00:00:fe";
const HTTP: u16 = 8080;

fn start(lab: &mut Lab, extra: &[&str]) {
    let dir = lab.dir.path().join("hardware");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("vm.yaml"),
        format!(
            "apiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\nmetadata: {{name: vm1}}\nspec:\n  metadata: {{instance: {{id: i-vm1-0042, hostname: vm1}}}}\n  interfaces:\n    - dhcp: {{mac: \"{VM_MAC}\", hostname: vm1, lease_time: 600, ip: {{address: {}.10, netmask: 255.255.255.0}}}}\n      netboot: {{allowPXE: true}}\n",
            lab.subnet
        ),
    )
    .unwrap();
    let os = test_os();
    let mut args: Vec<String> = vec![
        "--interface".into(),
        lab.srv_if.clone(),
        "--address".into(),
        lab.server_ip.clone(),
        "--hardware".into(),
        dir.display().to_string(),
        "--http-port".into(),
        HTTP.to_string(),
        "--assets".into(),
        os.display().to_string(),
        "--kernel-args".into(),
        "console=ttyS0,115200".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    lab.spawn_server(&example("boot-server"), &args, "server.log");
    lab.wait_http(HTTP);
}

fn check(lab: &Lab, serial: &str, what: &str) {
    assert!(
        serial.contains(&format!("TINKER-PXE-BOOTED ip={}.10", lab.subnet)),
        "{what}: no boot marker with the reserved address.\nserial tail:\n{}\nserver log:\n{}",
        &serial[serial.len().saturating_sub(3000)..],
        lab.log("server.log")
    );
    assert!(
        serial.contains("TINKER-METADATA instance-id=i-vm1-0042"),
        "{what}: metadata not fetched:\n{}",
        &serial[serial.len().saturating_sub(2000)..]
    );
    assert!(
        serial.contains(&format!("worker_id={VM_MAC}")),
        "{what}: the kernel line lacks the machine's identity"
    );
}

#[test]
fn bios_pxe_boots_through_our_dhcp_tftp_ipxe_and_metadata() {
    if !have(&["ip", "qemu-system-x86_64", "curl", "apt-get", "dpkg"]) {
        return;
    }
    let mut lab = Lab::new(VETH_MAC);
    start(&mut lab, &[]);
    let serial = lab.boot_vm(VM_MAC, "bios", "TINKER-PXE-DONE", Duration::from_secs(240));
    check(&lab, &serial, "BIOS");
    // QEMU's BIOS NIC ROM is itself iPXE (package ipxe-qemu): it says so in its
    // user class and gets its script at once, as Tinkerbell's smee would answer.
    assert!(serial.contains("auto.ipxe"), "the script URL came by DHCP");
    assert!(lab.metric("tinker_http_ipxe_scripts_total", HTTP) >= 1);
}

#[test]
fn uefi_pxe_boots_too() {
    if !have(&["ip", "qemu-system-x86_64", "curl", "apt-get", "dpkg"]) {
        return;
    }
    if !std::path::Path::new("/usr/share/OVMF/OVMF_CODE.fd").exists() {
        assert!(!netlab::require_real(), "OVMF is required (package ovmf)");
        eprintln!("skipped: no OVMF");
        return;
    }
    let mut lab = Lab::new(VETH_MAC);
    start(&mut lab, &[]);
    let serial = lab.boot_vm(VM_MAC, "uefi", "TINKER-PXE-DONE", Duration::from_secs(300));
    check(&lab, &serial, "UEFI");
    // Under OVMF the NIC's boot ROM may be QEMU's EFI iPXE (asks as iPXE, gets its
    // script at once) or the firmware's own PXE client (gets ipxe.efi over TFTP
    // first); both must end in the in-memory OS, which `check` saw.
    assert!(lab.metric("tinker_http_ipxe_scripts_total", HTTP) >= 1);
}

#[test]
fn proxy_dhcp_beside_dnsmasq_gives_the_boot_file_only() {
    if !have(&[
        "ip",
        "qemu-system-x86_64",
        "curl",
        "dnsmasq",
        "apt-get",
        "dpkg",
    ]) {
        return;
    }
    let mut lab = Lab::new(VETH_MAC);
    // The segment's own DHCP server (a home router, say): addresses, no PXE. It
    // pins the VM's address, as a router's static lease would.
    let d = lab.dir.path().display().to_string();
    let dnsmasq = format!(
        "dnsmasq --no-daemon --conf-file=/dev/null --port=0 --interface={} --bind-interfaces --dhcp-range={s}.100,{s}.150,255.255.255.0,1h --dhcp-host={VM_MAC},{s}.10 --no-ping --dhcp-leasefile={d}/dnsmasq.leases --pid-file={d}/dnsmasq.pid --log-dhcp",
        lab.srv_if,
        s = lab.subnet
    );
    let args: Vec<String> = vec!["-c".into(), dnsmasq];
    lab.spawn_server(std::path::Path::new("/bin/sh"), &args, "dnsmasq.log");
    std::thread::sleep(Duration::from_millis(500));
    start(&mut lab, &["--proxy"]);
    let serial = lab.boot_vm(VM_MAC, "bios", "TINKER-PXE-DONE", Duration::from_secs(240));
    check(&lab, &serial, "proxyDHCP");
    let dns_log = lab.log("dnsmasq.log");
    assert!(
        dns_log.contains("DHCPACK(") && dns_log.contains(&format!("{}.10", lab.subnet)),
        "dnsmasq gave the address:\n{dns_log}"
    );
    assert!(
        lab.metric("tinker_dhcp_offers_total", HTTP) >= 1,
        "we answered as proxyDHCP"
    );
    assert_eq!(
        lab.metric("tinker_dhcp_acks_total", HTTP),
        0,
        "we handed out no address"
    );
}
