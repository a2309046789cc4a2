//! The image's `/init` and its DHCP hook, as text.
//!
//! The init mounts what Linux needs, loads the modules in the order computed
//! at build time, brings up every NIC with DHCP (the hook writes the lease
//! inside the image only), reads the control plane's address and the
//! machine's identity from the kernel command line, and runs the worker with
//! its log on the console. If anything stops it, the reason is printed and a
//! shell stays on the console.

/// Where the image keeps its own files.
pub const ETC: &str = "etc/tinker-osie";

/// The list of modules to load, one absolute path a line, dependencies first.
pub const MODULE_LIST: &str = "etc/tinker-osie/modules";

/// The DHCP hook `udhcpc` runs.
pub const DHCP_HOOK: &str = "etc/tinker-osie/dhcp-hook";

/// The line the console shows when the worker starts (followed by
/// `worker_id=<id> server=<url>`).
pub const STARTING: &str = "tinker-osie: starting worker";

/// The `/init` script. `worker` is the worker's absolute path.
pub fn init_script(worker: &str) -> String {
    format!(
        r#"#!/bin/sh
# Tinker's in-memory OS (built by tinker-osie): see /etc/tinker-osie/manifest.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
# Real tools (e2fsprogs, util-linux...) are in place already; busybox fills in
# the rest and never replaces them.
/bin/busybox --install -s
mkdir -p /proc /sys /run /tmp /dev/pts /run/tinker-osie
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run && mkdir -p /run/tinker-osie
echo "tinker-osie: up, kernel $(uname -r)"

rescue() {{
  echo "tinker-osie: $*"
  echo "tinker-osie: a shell is on the console; the log above says what happened"
  while true; do setsid cttyhack sh; sleep 1; done
}}

# Drivers, each after what it needs (computed when the image was built).
loaded=0
while read -r m; do
  if insmod "$m" 2>/dev/null; then loaded=$((loaded + 1)); fi
done < /{MODULE_LIST}
echo "tinker-osie: $loaded modules loaded"

server=; id=
for w in $(cat /proc/cmdline); do
  case "$w" in
    tinker_server=*) server=${{w#*=}} ;;
    worker_id=*) id=${{w#*=}} ;;
    hostname=*) hostname "${{w#*=}}" ;;
  esac
done
[ -n "$server" ] || rescue "no tinker_server= on the kernel command line"
[ -n "$id" ] || rescue "no worker_id= on the kernel command line"

# Every NIC, with DHCP; udhcpc keeps each lease renewed.
ip link set lo up
n=0
while [ $n -lt 20 ] && [ -z "$(ls /sys/class/net | grep -v '^lo$')" ]; do sleep 0.5; n=$((n + 1)); done
for d in /sys/class/net/*; do
  i=${{d##*/}}
  [ "$i" = lo ] && continue
  ip link set "$i" up
  udhcpc -f -S -i "$i" -s /{DHCP_HOOK} -t 6 -T 3 -A 5 >/dev/null 2>&1 &
done
# Up to two minutes: a switch port with spanning tree forwards after 30 s or more.
n=0
while [ $n -lt 240 ] && ! ls /run/tinker-osie/lease.* >/dev/null 2>&1; do sleep 0.5; n=$((n + 1)); done
ls /run/tinker-osie/lease.* >/dev/null 2>&1 || rescue "no DHCP answer on any NIC ($(ls /sys/class/net | tr '\n' ' '))"
cat /run/tinker-osie/lease.*

echo "{STARTING} worker_id=$id server=$server"
{worker} --no-docker
rescue "the worker stopped (exit status $?)"
"#
    )
}

/// The `udhcpc` hook: the address, route and resolver inside the image only,
/// and one `lease.<nic>` line for the init to wait on and print.
pub fn dhcp_hook() -> &'static str {
    r#"#!/bin/sh
case "$1" in
  deconfig) ip -4 addr flush dev "$interface" 2>/dev/null; ip link set "$interface" up ;;
  bound|renew)
    ip addr replace "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    [ -n "$dns" ] && for s in $dns; do echo "nameserver $s"; done > /etc/resolv.conf
    echo "tinker-osie: $interface has $ip/${mask:-24} from $serverid" > "/run/tinker-osie/lease.$interface"
    ;;
esac
exit 0
"#
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_prints_the_identity_and_never_the_token() {
        let s = init_script("/usr/bin/tinker-worker");
        assert!(s.contains("echo \"tinker-osie: starting worker worker_id=$id server=$server\""));
        assert!(s.contains("/usr/bin/tinker-worker --no-docker\n"));
        assert!(
            !s.contains("tinker_token"),
            "the worker reads its token itself; the init never prints it"
        );
        assert!(s.contains("setsid cttyhack sh"));
    }

    #[test]
    fn the_scripts_parse_as_shell() {
        for (name, text) in [
            ("init", init_script("/w")),
            ("hook", dhcp_hook().to_string()),
        ] {
            let Ok(o) = std::process::Command::new("sh")
                .args(["-n", "-c", &text])
                .output()
            else {
                return;
            };
            assert!(
                o.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}
