#!/usr/bin/env bash
# DHCP load benchmark: ISC perfdhcp (relayed, from its own namespace) against our
# boot-server, ISC Kea and dnsmasq, in the same run, on the same namespaces, each
# with the same 10,000 reserved machines. Writes its table into BENCHMARKS.md.
#
#   sudo benches/dhcp_perf.sh            (RATES="2000 5000 20000" SECS=10 to change)
#
# Needs: perfdhcp (kea-admin), kea-dhcp4-server, dnsmasq-base, iproute2; builds
# the boot-server example in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=${RATES:-"2000 5000 20000"}; SECS=${SECS:-10}; N=${N:-10000}
S=tkbps$$; C=tkbpc$$; W=$(mktemp -d)
cleanup() {
  for ns in $S $C; do ip netns pids $ns 2>/dev/null | xargs -r kill -9 2>/dev/null || true; ip netns del $ns 2>/dev/null || true; done
  rm -rf "$W" /etc/netns/$S /etc/netns/$C
}
trap cleanup EXIT
cargo build -q --release --example boot-server
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

run_perf() { # label rate
  local out; out=$(ip netns exec $C timeout $((SECS+30)) perfdhcp -4 -l 10.78.0.2 -b mac=02:00:00:00:00:00 -R "$N" -r "$2" -p "$SECS" 10.78.0.1 2>&1 || true)
  local sent recv avg max
  sent=$(echo "$out" | awk '/sent packets/{print $3}' | sed -n 2p)
  recv=$(echo "$out" | awk '/received packets/{print $3}' | sed -n 2p)
  avg=$(echo "$out" | awk '/avg delay/{print $3}' | sed -n 2p)
  max=$(echo "$out" | awk '/max delay/{print $3}' | sed -n 2p)
  local rate; rate=$(python3 -c "print(round(${recv:-0}/$SECS))")
  local drop; drop=$(python3 -c "s=${sent:-0}; r=${recv:-0}; print('%.0f%%' % (100*(s-r)/s if s else 0))")
  echo "| $1 | $2 | ${sent:-0} | ${recv:-0} | $rate | $drop | ${avg:-?} | ${max:-?} |" | tee -a "$W/rows"
}

start_tinker() { ip netns exec $S env RUST_LOG=warn target/release/examples/boot-server --interface tkbpa$$ --address 10.78.0.1 --hardware "$W/hw" --http-port 8088 --tftp-port 6969 > "$W/tinker.log" 2>&1 & sleep 2; }
start_kea() { mkdir -p /run/kea; ip netns exec $S kea-dhcp4 -c "$W/kea.json" > "$W/kea.out" 2>&1 & sleep 2; }
start_dnsmasq() { ip netns exec $S dnsmasq --no-daemon --conf-file=/dev/null --port=0 --interface=tkbpa$$ --bind-interfaces --dhcp-range=10.78.0.0,static,255.255.0.0,1h --dhcp-hostsfile="$W/dnsmasq.hosts" --no-ping --dhcp-leasefile="$W/dm.leases" > "$W/dm.out" 2>&1 & sleep 2; }
stop_all() { ip netns pids $S | xargs -r kill 2>/dev/null || true; sleep 1; ip netns pids $S | xargs -r kill -9 2>/dev/null || true; }

: > "$W/rows"
for rate in $RATES; do
  start_tinker; run_perf "tinker boot-server (release)" "$rate"; stop_all
  start_kea; run_perf "peer: ISC Kea $(kea-dhcp4 -v 2>/dev/null | head -1) (memfile, host reservations)" "$rate"; stop_all
  start_dnsmasq; run_perf "peer: dnsmasq $(dnsmasq --version | head -1 | awk '{print $3}') (--no-ping, dhcp-hostsfile)" "$rate"; stop_all
done

table="| server | offered/s | sent | 4-way exchanges done | exchanges/s | dropped | avg ms | max ms |
|---|---:|---:|---:|---:|---:|---:|---:|
$(cat "$W/rows")"
section="<!-- dhcp_perf:begin -->
Command: \`sudo benches/dhcp_perf.sh\` (run $(date -u +%F); $(nproc) cores; perfdhcp relayed from its own namespace over a veth pair, $SECS s per run, $N reserved machines, MACs 02:00:00:00:00:00 onward; \"sent\"/\"done\" are REQUEST/ACK pairs, the second half of DORA).

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

