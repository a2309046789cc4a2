//! The boot services against real clients, in network namespaces the test makes:
//! ISC dhclient, busybox udhcpc and dhcpcd get their reservations and renew them;
//! unknown MACs get nothing; tftp-hpa and curl fetch the iPXE binaries
//! byte-identical and a `../` path is refused; proxyDHCP answers beside dnsmasq.

#[path = "support/netlab.rs"]
mod netlab;

use netlab::{Lab, client_hook, example, have};

const MAC: &str = "52:54:00:ab:cd:01";
const HTTP: u16 = 8080;

fn hardware(lab: &Lab, allow_pxe: bool) -> std::path::PathBuf {
    let dir = lab.dir.path().join("hardware");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("m1.yaml"),
        format!(
            "apiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\nmetadata: {{name: m1}}\nspec:\n  metadata: {{instance: {{id: i-m1-0001, hostname: m1}}}}\n  userData: \"#cloud-config\\nhostname: m1\\n\"\n  interfaces:\n    - dhcp: {{mac: \"{MAC}\", hostname: m1, lease_time: 600, ip: {{address: {}.10, netmask: 255.255.255.0, gateway: {}}}}}\n      netboot: {{allowPXE: {allow_pxe}}}\n",
            lab.subnet, lab.server_ip
        ),
    )
    .unwrap();
    dir
}

fn start(lab: &mut Lab, extra: &[&str]) {
    let hw = hardware(lab, true);
    let mut args: Vec<String> = [
        "--interface",
        &lab.srv_if,
        "--address",
        &lab.server_ip,
        "--hardware",
        hw.to_str().unwrap(),
        "--http-port",
        &HTTP.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    lab.spawn_server(&example("boot-server"), &args, "server.log");
    lab.wait_http(HTTP);
}

fn leased(lab: &Lab) -> bool {
    lab.client_addresses()
        .contains(&format!("{}.10/24", lab.subnet))
}

#[test]
fn real_dhcp_clients_get_and_renew_their_reservation() {
    if !have(&["ip", "dhclient", "udhcpc", "dhcpcd", "curl"]) {
        return;
    }
    let mut lab = Lab::new(MAC);
    start(&mut lab, &[]);
    let hook = client_hook(lab.dir.path());
    let d = lab.dir.path().display().to_string();
    let ifc = lab.cli_if.clone();
    let resolv_before = std::fs::read("/etc/resolv.conf").ok();

    // ISC dhclient: DORA, then a renewal of the lease it holds.
    let dhclient = format!(
        "timeout 30 dhclient -1 -v -sf {} -lf {d}/dhclient.leases -pf {d}/dhclient.pid {ifc}",
        hook.display()
    );
    let out = lab.client_sh(&dhclient);
    assert!(
        leased(&lab),
        "dhclient got no lease: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.log("server.log")
    );
    let acks = lab.metric("tinker_dhcp_acks_total", HTTP);
    let out = lab.client_sh(&format!("{dhclient} 2>&1"));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("DHCPACK"),
        "renewal: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(lab.metric("tinker_dhcp_acks_total", HTTP) > acks);
    lab.client_sh(&format!(
        "dhclient -r -sf {} -lf {d}/dhclient.leases -pf {d}/dhclient.pid {ifc}",
        hook.display()
    ));
    assert!(
        lab.metric("tinker_dhcp_releases_total", HTTP) >= 1,
        "the RELEASE reached the server"
    );
    lab.flush_client();

    // busybox udhcpc: a lease, then a request for the same address (what it sends to renew).
    let out = lab.client_sh(&format!(
        "timeout 30 udhcpc -i {ifc} -n -q -t 5 -T 1 -s {}",
        hook.display()
    ));
    assert!(
        leased(&lab),
        "udhcpc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lab.client_sh(&format!(
        "timeout 30 udhcpc -i {ifc} -n -q -t 5 -T 1 -r {}.10 -s {} 2>&1",
        lab.subnet,
        hook.display()
    ));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("lease of {}.10 obtained", lab.subnet)),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    lab.flush_client();

    // dhcpcd, hooks that touch /etc off; then `-n` makes it renew.
    let dhcpcd = format!(
        "timeout 40 dhcpcd -1 -4 -B -t 20 --nohook resolv.conf --nohook hostname --nohook ntp.conf --nohook timesyncd.conf {ifc}"
    );
    let out = lab.client_sh(&format!("{dhcpcd} 2>&1"));
    assert!(
        leased(&lab),
        "dhcpcd: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    lab.client_sh(&format!("dhcpcd -k {ifc}"));
    lab.flush_client();
    assert_eq!(
        std::fs::read("/etc/resolv.conf").ok(),
        resolv_before,
        "a client touched the machine's resolv.conf"
    );

    // An unknown MAC gets nothing, and the server counts it.
    lab.client_sh(&format!("ip link set {ifc} address 52:54:00:ee:ee:ee"));
    let unknown = lab.metric("tinker_dhcp_unknown_mac_total", HTTP);
    lab.client_sh(&format!(
        "timeout 20 udhcpc -i {ifc} -n -q -t 3 -T 1 -s {}",
        hook.display()
    ));
    assert!(
        lab.client_addresses().is_empty(),
        "an unknown MAC got an address"
    );
    assert!(lab.metric("tinker_dhcp_unknown_mac_total", HTTP) > unknown);
}

#[test]
fn tftp_clients_fetch_ipxe_byte_identical_and_cannot_leave_the_root() {
    if !have(&["ip", "tftp", "curl"]) {
        return;
    }
    let mut lab = Lab::new(MAC);
    // A served directory with the iPXE binaries (read through the symlink on
    // purpose, at start-up) and a secret beside it that must stay out of reach.
    let root = lab.dir.path().join("tftproot");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    let efi = std::fs::read("/usr/lib/ipxe/ipxe.efi").expect("Debian's ipxe package");
    let kpxe = std::fs::read("/usr/lib/ipxe/undionly.kpxe").expect("Debian's ipxe package");
    std::fs::write(root.join("ipxe.efi"), &efi).unwrap();
    std::fs::write(root.join("undionly.kpxe"), &kpxe).unwrap();
    std::fs::write(lab.dir.path().join("secret"), b"do not serve").unwrap();
    std::os::unix::fs::symlink(lab.dir.path().join("secret"), root.join("sub/link")).unwrap();
    let r = root.display().to_string();
    start(&mut lab, &["--tftp-root", &r]);
    lab.client_sh(&format!(
        "ip addr add {}.10/24 dev {}",
        lab.subnet, lab.cli_if
    ));
    let d = lab.dir.path().display().to_string();
    let ip = lab.server_ip.clone();
    let same = |file: &str, want: &[u8], what: &str| {
        let got = std::fs::read(format!("{d}/{file}")).unwrap_or_default();
        assert!(
            got == want,
            "{what}: got {} bytes, want {} identical bytes",
            got.len(),
            want.len()
        );
    };
    lab.client_sh(&format!(
        "cd {d} && tftp {ip} -m binary -c get undionly.kpxe got-kpxe"
    ));
    same("got-kpxe", &kpxe, "tftp-hpa, 512-byte blocks");
    // (tftp-hpa reads `host:file` in a colon, so the MAC is written with dashes.)
    lab.client_sh(&format!(
        "cd {d} && tftp {ip} -m binary -c get 52-54-00-ab-cd-01/ipxe.efi got-efi"
    ));
    same("got-efi", &efi, "a per-MAC path, as smee serves");
    for blksize in ["1468", "8192"] {
        lab.client_sh(&format!("curl -s --max-time 30 --tftp-blksize {blksize} tftp://{ip}/ipxe.efi -o {d}/got-curl-{blksize}"));
        same(
            &format!("got-curl-{blksize}"),
            &efi,
            &format!("curl with blksize {blksize}"),
        );
    }
    for path in ["../secret", "sub/link", "/etc/passwd", "sub/../../secret"] {
        let out = lab.client_sh(&format!("cd {d} && rm -f stolen && tftp {ip} -m binary -c get {path} stolen 2>&1; cat stolen 2>/dev/null"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("do not serve"), "{path} leaked: {text}");
        assert!(text.contains("Error code"), "{path}: {text}");
    }
    let refused = lab.metric("tinker_tftp_refused_total", HTTP);
    assert!(
        refused >= 2,
        "traversal attempts are counted ({refused}):\n{}",
        lab.log("server.log")
    );
    assert!(lab.metric("tinker_tftp_completed_total", HTTP) >= 4);
}

#[test]
fn metadata_and_scripts_over_http_from_the_machine_itself() {
    if !have(&["ip", "curl"]) {
        return;
    }
    let mut lab = Lab::new(MAC);
    start(&mut lab, &[]);
    // Not yet its address: nothing.
    lab.client_sh(&format!(
        "ip addr add {}.99/24 dev {}",
        lab.subnet, lab.cli_if
    ));
    assert!(
        lab.http_get("/2009-04-04/meta-data/instance-id", HTTP)
            .contains("no machine")
    );
    lab.flush_client();
    lab.client_sh(&format!(
        "ip addr add {}.10/24 dev {}",
        lab.subnet, lab.cli_if
    ));
    assert_eq!(
        lab.http_get("/2009-04-04/meta-data/instance-id", HTTP),
        "i-m1-0001"
    );
    assert_eq!(
        lab.http_get("/2009-04-04/meta-data/local-ipv4", HTTP),
        format!("{}.10", lab.subnet)
    );
    assert!(
        lab.http_get("/2009-04-04/user-data", HTTP)
            .starts_with("#cloud-config")
    );
    // What rootio reads: the machine's storage layout, nothing else.
    assert!(
        lab.http_get("/metadata", HTTP)
            .starts_with(r#"{"metadata":{"instance":{"storage":"#)
    );
    let script = lab.http_get("/auto.ipxe", HTTP);
    assert!(
        script.starts_with("#!ipxe") && script.contains(&format!("worker_id={MAC}")),
        "{script}"
    );
    // A spoofed header from an untrusted peer changes nothing.
    let out = lab.client_sh(&format!(
        "curl -s -H 'X-Forwarded-For: 10.0.0.1' http://{}:{HTTP}/2009-04-04/meta-data/instance-id",
        lab.server_ip
    ));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "i-m1-0001");
}
