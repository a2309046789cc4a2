#!/usr/bin/env bash
# TFTP boot-storm benchmark: 50, 200 and 1,000 tftp-hpa clients at once fetch
# ipxe.efi (default block size, as PXE ROMs do) from our boot-server and from
# tftpd-hpa, in the same run, between two namespaces. Writes BENCHMARKS.md.
# Besides the wall time (which mostly measures the client processes sharing
# the cores) it reports each server's own CPU time over the storm, user and
# system apart: each server runs in a cpuacct cgroup of its own, which counts
# every process in it, exited ones included (tftpd-hpa forks a child per
# transfer and ignores SIGCHLD, so its children's time never reaches its own
# /proc/PID/stat).
# Each count runs on two kinds of link. "send": a veth pair as it comes,
# whose receiving end runs inside the sender's send system call, so the
# clients' receive path (queueing on their sockets, waking them) is charged to
# the server. "napi": the clients' end receives in a NAPI kernel thread of its
# own (GRO on, threaded NAPI), nearer to a wire, where the clients' machine
# pays for its own receive; the sender still pays to wake that thread when
# it sleeps. The thread's CPU is reported in a column of its own, and beside
# it the server's and the thread's together.
# The clients share one address (tftp-hpa cannot pick its source address), like
# machines behind NAT, so the boot-server's per-address transfer limit is
# raised to the client count; every other limit keeps its default.
#
#   sudo benches/tftp_clients.sh          (COUNTS="50 200 1000" to change;
#                                          PERF=FILE to profile ours at the last
#                                          storm of the last link;
#                                          SERVER_BIN=FILE to measure a boot-server
#                                          built elsewhere, an A/B's other side;
#                                          NO_WRITE=1 to leave BENCHMARKS.md be;
#                                          SERVER_WRAP="taskset -c 0" to start ours
#                                          under a wrapper command;
#                                          LINKS="napi" or "send" for one kind
#                                          of link only)
set -euo pipefail
cd "$(dirname "$0")/.."
COUNTS=${COUNTS:-"50 200 1000"}
LINKS=${LINKS:-"send napi"}
for tool in tftp in.tftpd ethtool; do
  command -v $tool >/dev/null || { echo "benches/tftp_clients.sh needs $tool: apt-get install tftp-hpa tftpd-hpa ethtool" >&2; exit 1; }
done
S=tkbts$$; C=tkbtc$$; W=$(mktemp -d)
CG=/sys/fs/cgroup/cpuacct/tkbt$$
cleanup() {
  for ns in $S $C; do ip netns pids $ns 2>/dev/null | xargs -r kill -9 2>/dev/null || true; ip netns del $ns 2>/dev/null || true; done
  sleep 0.5; rmdir "$CG"/* "$CG" 2>/dev/null || true
  rm -rf "$W" /etc/netns/$S /etc/netns/$C
}
trap cleanup EXIT
if [ -z "${SERVER_BIN:-}" ]; then
  cargo build -q --release --example boot-server
  SERVER_BIN="${CARGO_TARGET_DIR:-target}/release/examples/boot-server"
fi
# Our own copy: the target directory may be shared with other builds.
SERVER="$W/boot-server"; cp "$SERVER_BIN" "$SERVER"
TICK=$(getconf CLK_TCK)
mkdir -p "$CG/tinker" "$CG/tftpd" "$CG/clients"
# CPU seconds of everything that ran in cgroup $1: "user system".
cpu() { awk -v t="$TICK" '/^user/ { u = $2 } /^system/ { s = $2 } END { printf "%.2f %.2f", u / t, s / t }' "$CG/$1/cpuacct.stat"; }
# Runs a command in the namespace $S, inside cgroup $1.
in_cgroup() { local g=$1; shift; bash -c 'echo $$ > "$0/cgroup.procs"; exec "$@"' "$CG/$g" ip netns exec $S "$@"; }
ip netns add $S; ip netns add $C
mkdir -p /etc/netns/$S /etc/netns/$C; : > /etc/netns/$S/resolv.conf; : > /etc/netns/$C/resolv.conf
ip link add tkbta$$ type veth peer name tkbtb$$
ip link set tkbta$$ netns $S; ip link set tkbtb$$ netns $C
ip -n $S addr add 10.79.0.1/24 dev tkbta$$; ip -n $C addr add 10.79.0.2/24 dev tkbtb$$
for ns in $S $C; do ip -n $ns link set lo up; done
ip -n $S link set tkbta$$ up; ip -n $C link set tkbtb$$ up
# The kind of link ("send" or "napi", see above) for the storms that follow.
# UDP from a sender with segmentation offload takes the receiver's NAPI only
# with UDP GRO forwarding on (veth_skb_is_eligible_for_gro).
set_link() {
  if [ "$1" = napi ]; then
    ip netns exec $C ethtool -K tkbtb$$ gro on rx-udp-gro-forwarding on >/dev/null
    ip netns exec $C sh -c "echo 1 > /sys/class/net/tkbtb$$/threaded"
  else # a veth without GRO has no NAPI to thread
    ip netns exec $C sh -c "echo 0 > /sys/class/net/tkbtb$$/threaded" 2>/dev/null || true
    ip netns exec $C ethtool -K tkbtb$$ gro off rx-udp-gro-forwarding off >/dev/null
  fi
}
# CPU seconds of the clients' NAPI threads (none on a "send" link).
napi_cpu() {
  # By /proc/PID/comm, which holds a kernel thread's whole name (pgrep's
  # patterns see 15 characters).
  { grep -lx "napi/tkbtb$$-[0-9]*" /proc/[0-9]*/comm 2>/dev/null || true; } | sed 's|/comm$|/stat|' | xargs -r cat |
    awk -v t="$TICK" '{ s += $14 + $15 } END { printf "%.2f", s / t }'
}
mkdir -p "$W/root" "$W/hw" "$W/out"
cp -L /usr/lib/ipxe/ipxe.efi /usr/lib/ipxe/undionly.kpxe "$W/root/"
size=$(stat -c %s "$W/root/ipxe.efi")
: > "$W/hw/none.yaml"

# Packets the server's side of the link has sent.
tx_packets() { cat /sys/class/net/tkbta$$/statistics/tx_packets 2>/dev/null || ip netns exec $S cat /sys/class/net/tkbta$$/statistics/tx_packets; }
storm() { # label count cgroup link
  rm -f "$W"/out/*
  local start end ok before after pkts_before pkts cbefore cafter nbefore nafter
  before=$(cpu "$3"); pkts_before=$(tx_packets)
  start=$(date +%s.%N)
  cbefore=$(cpu clients); nbefore=$(napi_cpu)
  bash -c 'echo $$ > "$0/cgroup.procs"; exec "$@"' "$CG/clients" ip netns exec $C bash -c "for i in \$(seq 1 $2); do (cd $W/out && timeout 300 tftp 10.79.0.1 -m binary -c get ipxe.efi f\$i >/dev/null 2>&1) & done; wait"
  end=$(date +%s.%N)
  sleep 1 # the listener reaps its last children
  cafter=$(cpu clients); nafter=$(napi_cpu)
  after=$(cpu "$3"); pkts=$(( $(tx_packets) - pkts_before ))
  ok=$(find "$W/out" -type f -size "${size}c" | wc -l)
  # The row's figures, each CPU delta taken once: "user system" pairs.
  python3 - "$1" "$4" "$2" "$start" "$end" "$ok" "$pkts" "$before" "$after" "$cbefore" "$cafter" "$nbefore" "$nafter" <<'PY' | tee -a "$W/rows"
import sys
label, link, n, start, end, ok, pkts = sys.argv[1:8]
n, ok, pkts = int(n), int(ok), int(pkts)
pair = lambda s: [float(x) for x in s.split()]
(bu, bs), (au, as_), (cbu, cbs), (cau, cas) = map(pair, sys.argv[8:12])
u, s = au - bu, as_ - bs
per = lambda cpu: cpu * 1000 / n
server, clients = per(u + s), per(cau - cbu + cas - cbs)
napi = per(float(sys.argv[13]) - float(sys.argv[12]))
print(f"| {label} | {link} | {n} | {float(end) - float(start):.1f} | {ok} | {n - ok} | {u:.2f} | {s:.2f} "
      f"| **{server:.2f}** | {pkts // n} | {clients:.2f} | {napi:.2f} | {server + napi:.2f} |")
PY
}
: > "$W/rows"
for link in $LINKS; do
set_link "$link"
for n in $COUNTS; do
  in_cgroup tinker ${SERVER_WRAP:-} env RUST_LOG=warn "$SERVER" --interface tkbta$$ --address 10.79.0.1 --hardware "$W/hw" --tftp-root "$W/root" --http-port 8089 --dhcp-port 6767 --tftp-transfers-per-address "$n" > "$W/tinker.log" 2>&1 & sleep 1.5
  # PERF=FILE records our server's profile (perf record -g) over the largest storm.
  if [ -n "${PERF:-}" ] && [ "$n" = "${COUNTS##* }" ] && [ "$link" = "${LINKS##* }" ]; then perf record -q -g -o "$PERF" -p "$(head -1 "$CG/tinker/cgroup.procs")" 2>/dev/null & perf=$!; fi
  storm "tinker boot-server (release)" "$n" tinker "$link"
  if [ -n "${perf:-}" ]; then kill -INT $perf; wait $perf || true; perf=; fi
  ip netns pids $S | xargs -r kill; sleep 1
  in_cgroup tftpd in.tftpd -L -s "$W/root" -a 10.79.0.1:69 > "$W/tftpd.log" 2>&1 & sleep 1
  storm "peer: tftpd-hpa $(in.tftpd -V 2>&1 | head -1 | awk '{print $2}' | tr -d ,)" "$n" tftpd "$link"
  ip netns pids $S | xargs -r kill; sleep 1
done
done
table="| server | link | clients at once | seconds until all done | complete | failed | server CPU user s | server CPU system s | server CPU s per 1,000 transfers | packets sent per transfer | clients' CPU s per 1,000 transfers | link's NAPI thread CPU s per 1,000 transfers | server and NAPI thread CPU s per 1,000 transfers |
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
$(cat "$W/rows")"
section="<!-- tftp_clients:begin -->
Command: \`sudo benches/tftp_clients.sh\` (run $(date -u +%F); $(nproc) cores; tftp-hpa clients, 512-byte blocks, ipxe.efi of $size bytes, between two namespaces; the clients share the machine's cores with the server, and one address, so our per-address transfer limit is raised to the client count, the other limits at their defaults; server CPU from a cpuacct cgroup per server over the storm, tftpd-hpa's per-transfer children included; the clients' CPU from a cgroup of their own; packets counted on the server's end of the link, so retransmissions would show; link "send": the clients' receive path runs in the server's send, "napi": in a NAPI thread of the clients' end, as across a wire).

$table
<!-- tftp_clients:end -->"
[ -n "${NO_WRITE:-}" ] && exit 0
python3 - "$section" <<'PY'
import sys, re
section = sys.argv[1]
text = open("BENCHMARKS.md").read()
if "<!-- tftp_clients:begin -->" in text:
    text = re.sub(r"<!-- tftp_clients:begin -->.*?<!-- tftp_clients:end -->", lambda m: section, text, flags=re.S)
else:
    text += "\n## TFTP: simultaneous iPXE downloads against tftpd-hpa\n\n" + section + "\n"
open("BENCHMARKS.md", "w").write(text)
PY
