//! Wake-on-LAN on a real network: three namespaces this test creates (a
//! provisioning host with two interfaces, a machine on its provisioning link,
//! another on its other link), joined by veth pairs made inside them, torn down
//! on drop. The machine's listener, bound to the broadcast address on port 9,
//! receives the magic packet for its MAC; the other link hears nothing of it.
//! Skips without root or `ip` (fails instead under `TINKER_REQUIRE_REAL=1`).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;
use tinker_bmc::{WolEndpoint, magic_packet};
use tinker_core::testing::require_real;
use tinker_core::{Error, MacAddr, PowerAction, PowerController};

/// A hang guard for a listener, should nothing ever come: never a threshold
/// the test's result depends on.
const HANG_GUARD: Duration = Duration::from_secs(30);

fn ip(args: &str) -> bool {
    Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .is_ok_and(|s| s.success())
}

fn must(args: &str) {
    assert!(ip(args), "ip {args} failed");
}

fn usable() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let have_ip = Command::new("ip").arg("-V").output().is_ok();
    if root && have_ip {
        return true;
    }
    assert!(
        !require_real(),
        "root and ip are required (TINKER_REQUIRE_REAL=1)"
    );
    eprintln!("skipped: needs root and ip");
    false
}

/// The namespaces, removed (with their veths) on drop, with their resolv.conf.
struct Lab {
    names: Vec<String>,
}

impl Lab {
    fn new() -> Lab {
        // Unique per process and per lab: tests run side by side.
        static LABS: AtomicU32 = AtomicU32::new(0);
        let id = std::process::id();
        let lab = LABS.fetch_add(1, Ordering::Relaxed);
        let names: Vec<String> = ["h", "m", "o"]
            .iter()
            .map(|s| format!("twol{id}-{lab}{s}"))
            .collect();
        let lab = Lab {
            names: names.clone(),
        };
        for n in &names {
            must(&format!("netns add {n}"));
            // Its own resolver configuration, so nothing in it reads the host's.
            let dir = format!("/etc/netns/{n}");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(format!("{dir}/resolv.conf"), "").unwrap();
            must(&format!("-n {n} link set lo up"));
        }
        let (h, m, o) = (&names[0], &names[1], &names[2]);
        // Made inside the namespaces: nothing appears on the host's network.
        must(&format!(
            "link add prov0 netns {h} type veth peer name eth0 netns {m}"
        ));
        must(&format!(
            "link add other0 netns {h} type veth peer name eth0 netns {o}"
        ));
        for (ns, dev, addr) in [
            (h, "prov0", "10.79.1.1/24"),
            (m, "eth0", "10.79.1.2/24"),
            (h, "other0", "10.79.2.1/24"),
            (o, "eth0", "10.79.2.2/24"),
        ] {
            must(&format!("-n {ns} addr add {addr} dev {dev}"));
            must(&format!("-n {ns} link set {dev} up"));
        }
        // As on a real host, the default route is not the provisioning link:
        // a broadcast not bound to it would leave the other way.
        must(&format!(
            "-n {h} route add default via 10.79.2.2 dev other0"
        ));
        lab
    }

    /// Runs `f` on a thread inside namespace `i` (a socket made there stays
    /// there).
    fn in_ns<T: Send + 'static>(
        &self,
        i: usize,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.names[i]);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            // setns: changes only this thread's network namespace.
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in &self.names {
            ip(&format!("netns del {n}"));
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{n}"));
        }
    }
}

/// A listener on `bind` in namespace `i`: reads `count` datagrams (with their
/// source), after saying on `ready` that it is bound.
fn listen(
    lab: &Lab,
    i: usize,
    bind: SocketAddrV4,
    count: usize,
) -> std::thread::JoinHandle<Vec<(Vec<u8>, std::net::SocketAddr)>> {
    let (ready, bound) = mpsc::channel();
    let handle = lab.in_ns(i, move || {
        let socket = UdpSocket::bind(bind).unwrap();
        socket.set_read_timeout(Some(HANG_GUARD)).unwrap();
        ready.send(()).unwrap();
        (0..count)
            .map(|_| {
                let mut buf = [0u8; 1500];
                let (n, from) = socket.recv_from(&mut buf).expect("a datagram");
                (buf[..n].to_vec(), from)
            })
            .collect()
    });
    bound.recv().expect("listener bound");
    handle
}

#[test]
fn the_machine_hears_the_magic_packet_by_broadcast_and_only_on_the_provisioning_link() {
    if !usable() {
        return;
    }
    let lab = Lab::new();
    let mac: MacAddr = "52:54:00:aa:bb:01".parse().unwrap();
    // Bound to the broadcast address: only a broadcast reaches it.
    let machine = listen(&lab, 1, SocketAddrV4::new(Ipv4Addr::BROADCAST, 9), 3);
    let other = listen(&lab, 2, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 9), 1);

    let sent = lab.in_ns(0, move || {
        let wol = WolEndpoint::new(mac, "prov0").controller();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let on = rt.block_on(wol.power(PowerAction::On));
        let off = rt.block_on(wol.power(PowerAction::Off));
        let reset = rt.block_on(wol.power(PowerAction::Reset));
        // Then a marker to the other link, unicast: had a magic packet left
        // that way, it would arrive before it.
        let s = UdpSocket::bind("10.79.2.1:0").unwrap();
        s.send_to(b"marker", "10.79.2.2:9").unwrap();
        (on, off, reset)
    });
    let (on, off, reset) = sent.join().unwrap();
    on.expect("power on");
    for err in [off.unwrap_err(), reset.unwrap_err()] {
        assert!(matches!(err, Error::NotCapable { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("Wake-on-LAN can only power a machine on"),
            "{err}"
        );
    }

    let got = machine.join().unwrap();
    assert_eq!(got.len(), 3, "sent three times");
    for (bytes, from) in got {
        assert_eq!(bytes, magic_packet(mac));
        assert_eq!(from.ip(), Ipv4Addr::new(10, 79, 1, 1));
    }
    let heard = other.join().unwrap();
    assert_eq!(
        heard[0].0, b"marker",
        "a magic packet left on the other link"
    );
}

#[test]
fn a_missing_interface_is_an_error_not_a_packet_elsewhere() {
    if !usable() {
        return;
    }
    let lab = Lab::new();
    let mac: MacAddr = "52:54:00:aa:bb:02".parse().unwrap();
    let err = lab
        .in_ns(0, move || {
            let wol = WolEndpoint::new(mac, "nosuch0").controller();
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(wol.power(PowerAction::On))
        })
        .join()
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
}
