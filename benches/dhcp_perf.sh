#!/usr/bin/env bash
# DHCP load benchmark: ISC perfdhcp (relayed, from its own namespace) against our
# boot-server, ISC Kea and dnsmasq, in the same run, on the same namespaces, each
# with the same 10,000 reserved machines. Writes its table into BENCHMARKS.md.
#
#   sudo benches/dhcp_perf.sh            (RATES="5000 15000" SECS=10 to change)
#
# Besides perfdhcp's counts, each server's own CPU time over the run is read from
# /proc/PID/stat (utime and stime, apart) and divided by the exchanges it
# completed: perfdhcp needs one of this machine's two cores, so the rate alone
# cannot show a server much faster than it; CPU per exchange can.
#
# perfdhcp sends everything through one relay, so ours runs with its per-relay
# limit raised to 100,000/s (--dhcp-relay-rate): the default, 20,000/s, is set
# for a real rack, not for one relay carrying the whole load.
#
# Needs: perfdhcp (kea-admin), kea-dhcp4-server, dnsmasq-base, iproute2; builds
# the boot-server example in release mode (BIN=path runs that binary instead;
# PERF=file records ours with `perf record -g` into file; PEERS="kea" skips dnsmasq;
# NO_WRITE=1 prints the table without writing BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=${RATES:-"5000 15000"}; SECS=${SECS:-10}; N=${N:-10000}; PEERS=${PEERS:-"kea dnsmasq"}
S=tkbps$$; C=tkbpc$$; W=$(mktemp -d)
cleanup() {
  for ns in $S $C; do ip netns pids $ns 2>/dev/null | xargs -r kill -9 2>/dev/null || true; ip netns del $ns 2>/dev/null || true; done
  rm -rf "$W" /etc/netns/$S /etc/netns/$C
}
trap cleanup EXIT
if [ -z "${BIN:-}" ]; then
  cargo build -q --release --example boot-server
  BIN=target/release/examples/boot-server
fi
TCK=$(getconf CLK_TCK)
ip netns add $S; ip netns add $C
mkdir -p /etc/netns/$S /etc/netns/$C; : > /etc/netns/$S/resolv.conf; : > /etc/netns/$C/resolv.conf
ip link add tkbpa$$ type veth peer name tkbpb$$
ip link set tkbpa$$ netns $S; ip link set tkbpb$$ netns $C
ip -n $S addr add 10.78.0.1/16 dev tkbpa$$; ip -n $C addr add 10.78.0.2/16 dev tkbpb$$
for ns in $S $C; do ip -n $ns link set lo up; done
ip -n $S link set tkbpa$$ up; ip -n $C link set tkbpb$$ up

# The same N machines for every server: perfdhcp's MACs are 02:00:00:XX:XX:XX
# counted up from its base, each reserved one address.
python3 - "$W" "$N" <<'PY'
import sys, json, os
w, n = sys.argv[1], int(sys.argv[2])
os.makedirs(f"{w}/hw")
hw, kea, dm = [], [], []
for i in range(n):
    mac = "02:00:00:%02x:%02x:%02x" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)
    ip = "10.78.%d.%d" % (1 + i // 250, 1 + i % 250)
    hw.append(f"- apiVersion: tinkerbell.org/v1alpha1\n  kind: Hardware\n  metadata: {{name: m{i}}}\n  spec:\n    interfaces:\n      - dhcp: {{mac: \"{mac}\", lease_time: 3600, ip: {{address: {ip}, netmask: 255.255.0.0, gateway: 10.78.0.1}}}}\n        netboot: {{allowPXE: true}}\n")
    kea.append({"hw-address": mac, "ip-address": ip})
    dm.append(f"{mac},{ip}")
open(f"{w}/hw/all.yaml", "w").write("".join(hw))
json.dump({"Dhcp4": {"interfaces-config": {"interfaces": ["*"], "dhcp-socket-type": "udp"},
  "lease-database": {"type": "memfile", "persist": False},
  "valid-lifetime": 3600, "host-reservation-identifiers": ["hw-address"],
  "subnet4": [{"id": 1, "subnet": "10.78.0.0/16", "reservations": kea, "option-data": [{"name": "routers", "data": "10.78.0.1"}]}],
  "loggers": [{"name": "kea-dhcp4", "severity": "ERROR", "output_options": [{"output": f"{w}/kea.log"}]}]}}, open(f"{w}/kea.json", "w"))
open(f"{w}/dnsmasq.hosts", "w").write("\n".join(dm) + "\n")
PY

# utime and stime of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat;
# the command name in field 2 may hold spaces, so count from its closing paren).
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12, $13}'; }

# Datagrams the kernel dropped because a UDP socket's receive buffer was full, in a
# namespace: which side lost what perfdhcp counts as dropped (the server's socket,
# or perfdhcp's own when it has no core to read on).
rcvbuf_errors() { ip netns exec "$1" awk '/^Udp:/ { if (seen) { for (i = 1; i <= NF; i++) if (h[i] == "RcvbufErrors") print $i; exit } split($0, h); seen = 1 }' /proc/net/snmp; }

run_perf() { # label rate pid
  local before after out s0 c0 s1 c1; before=$(cpu_ticks "$3"); s0=$(rcvbuf_errors $S); c0=$(rcvbuf_errors $C)
  out=$(ip netns exec $C timeout $((SECS+30)) perfdhcp -4 -l 10.78.0.2 -b mac=02:00:00:00:00:00 -R "$N" -r "$2" -p "$SECS" 10.78.0.1 2>&1 || true)
  after=$(cpu_ticks "$3"); s1=$(rcvbuf_errors $S); c1=$(rcvbuf_errors $C)
  local sent recv avg max
  sent=$(echo "$out" | awk '/sent packets/{print $3}' | sed -n 2p)
  recv=$(echo "$out" | awk '/received packets/{print $3}' | sed -n 2p)
  avg=$(echo "$out" | awk '/avg delay/{print $3}' | sed -n 2p)
  max=$(echo "$out" | awk '/max delay/{print $3}' | sed -n 2p)
  python3 - "$1" "$2" "${sent:-0}" "${recv:-0}" "$SECS" "$before" "$after" "$TCK" "${avg:-?}" "${max:-?}" $((s1 - s0)) $((c1 - c0)) <<'PY' | tee -a "$W/rows"
import sys
label, rate, sent, recv, secs, before, after, tck, avg, mx, srv_drops, cli_drops = sys.argv[1:]
sent, recv, secs, tck = int(sent), int(recv), int(secs), int(tck)
u0, s0 = map(int, before.split()); u1, s1 = map(int, after.split())
us = lambda ticks: 1e6 * ticks / tck / recv if recv else float("nan")
drop = 100 * (sent - recv) / sent if sent else 0
print(f"| {label} | {rate} | {sent} | {recv} | {round(recv / secs)} | {drop:.1f}% "
      f"| {us(u1 - u0):.1f} | {us(s1 - s0):.1f} | {us(u1 - u0 + s1 - s0):.1f} | {avg} | {mx} "
      f"| {srv_drops} / {cli_drops} |")
PY
}

# Each start_* leaves the server's PID in $PID (`ip netns exec` and `env` exec, so
# $! is the server itself).
start_tinker() { ip netns exec $S env RUST_LOG=warn "$BIN" --interface tkbpa$$ --address 10.78.0.1 --hardware "$W/hw" --http-port 8088 --tftp-port 6969 --dhcp-relay-rate 100000 > "$W/tinker.log" 2>&1 & PID=$!; sleep 2
  if [ -n "${PERF:-}" ]; then perf record -g -o "$PERF" -p $PID > "$W/perf.out" 2>&1 & PERF_PID=$!; sleep 1; fi; }
stop_perf() { if [ -n "${PERF_PID:-}" ]; then kill -INT $PERF_PID; wait $PERF_PID || true; PERF_PID=; fi; }
start_kea() { mkdir -p /run/kea; ip netns exec $S kea-dhcp4 -c "$W/kea.json" > "$W/kea.out" 2>&1 & PID=$!; sleep 2; }
start_dnsmasq() { ip netns exec $S dnsmasq --no-daemon --conf-file=/dev/null --port=0 --interface=tkbpa$$ --bind-interfaces --dhcp-range=10.78.0.0,static,255.255.0.0,1h --dhcp-hostsfile="$W/dnsmasq.hosts" --no-ping --dhcp-leasefile="$W/dm.leases" > "$W/dm.out" 2>&1 & PID=$!; sleep 2; }
stop_all() { ip netns pids $S | xargs -r kill 2>/dev/null || true; sleep 1; ip netns pids $S | xargs -r kill -9 2>/dev/null || true; }

: > "$W/rows"
for rate in $RATES; do
  start_tinker; run_perf "tinker boot-server (release)" "$rate" $PID; stop_perf
  grep -o 'tinker_dhcp_[a-z_]*total [0-9]*' <(ip netns exec $S curl -s http://10.78.0.1:8088/metrics) | grep -v ' 0$' | sed "s/^/  $rate\/s: /" >> "$W/metrics" || true
  stop_all
  case " $PEERS " in *" kea "*) start_kea; run_perf "peer: ISC Kea $(kea-dhcp4 -v 2>/dev/null | head -1) (memfile, host reservations)" "$rate" $PID; stop_all;; esac
  case " $PEERS " in *" dnsmasq "*) start_dnsmasq; run_perf "peer: dnsmasq $(dnsmasq --version | head -1 | awk '{print $3}') (--no-ping, dhcp-hostsfile)" "$rate" $PID; stop_all;; esac
done

echo "our counters (non-zero):"; cat "$W/metrics" 2>/dev/null || true
table="| server | offered/s | sent | 4-way exchanges done | exchanges/s | dropped | user µs / exchange | system µs / exchange | CPU µs / exchange | avg ms | max ms | kernel drops: server / perfdhcp |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|
$(cat "$W/rows")"
echo "$table"
[ -n "${NO_WRITE:-}" ] && exit 0
section="<!-- dhcp_perf:begin -->
Command: \`sudo benches/dhcp_perf.sh\` (run $(date -u +%F); $(nproc) cores; perfdhcp relayed from its own namespace over a veth pair, $SECS s per run, $N reserved machines, MACs 02:00:00:00:00:00 onward; \"sent\"/\"done\" are REQUEST/ACK pairs, the second half of DORA; CPU is the server process's own utime and stime from /proc/PID/stat over the run, divided by the exchanges done; kernel drops are datagrams lost to a full UDP receive buffer, \`RcvbufErrors\` of /proc/net/snmp in the server's namespace and in perfdhcp's, over the run).

$table
<!-- dhcp_perf:end -->"
python3 - "$section" <<'PY'
import sys, re
section = sys.argv[1]
text = open("BENCHMARKS.md").read()
if "<!-- dhcp_perf:begin -->" in text:
    text = re.sub(r"<!-- dhcp_perf:begin -->.*?<!-- dhcp_perf:end -->", lambda m: section, text, flags=re.S)
else:
    text += "\n## DHCP: DORA exchanges against ISC Kea and dnsmasq\n\n" + section + "\n"
open("BENCHMARKS.md", "w").write(text)
PY

