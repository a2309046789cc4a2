#!/usr/bin/env bash
# Builds a stand-in for HookOS (which cannot be downloaded here) under HookOS's
# file names, vmlinuz-x86_64 and initramfs-x86_64: the PXE tests' Debian kernel,
# and their busybox initramfs with another init, which takes its address by
# DHCP, prints its kernel command line (what hook-bootkit would read) on the
# console, sends a line to the syslog_host of that line (through busybox
# syslogd, over UDP 514), and powers off.
# Usage: build-hookos-standin.sh OUTDIR TEST_OS_DIR   (idempotent)
set -euo pipefail
out=$1; os=$2; mkdir -p "$out"; cd "$out"
# The stamp names this script's version: a changed init rebuilds.
stamp=standin-v2
[ -f "$stamp" ] && [ -f vmlinuz-x86_64 ] && [ -f initramfs-x86_64 ] && exit 0
rm -f standin-v*
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir "$work/root"; cd "$work/root"
zcat "$os/initrd.img" | cpio -idm 2>/dev/null
cat > init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
# Smee's console=ttyS1 comes before any later console=ttyS0, and Linux's 8250
# driver is the console of one port only, the first named: write to the VM's
# serial port directly.
exec >/dev/ttyS0 2>&1
for m in /lib/modules/*.ko*; do insmod "$m"; done
ip link set eth0 up
cat > /tmp/udhcpc.sh <<'S'
#!/bin/sh
[ "$1" = bound ] || [ "$1" = renew ] || exit 0
ip addr add "$ip/${mask:-24}" dev "$interface"; echo "$ip" > /tmp/ip
S
chmod +x /tmp/udhcpc.sh
udhcpc -i eth0 -s /tmp/udhcpc.sh -n -q -t 10 >/dev/null 2>&1
echo "HOOKOS-STANDIN ip=$(cat /tmp/ip 2>/dev/null)"
echo "HOOKOS-CMDLINE $(cat /proc/cmdline)"
for w in $(cat /proc/cmdline); do case "$w" in syslog_host=*) h=${w#syslog_host=};; esac; done
if [ -n "$h" ]; then
  syslogd -R "$h:514"; sleep 1
  logger -t hook-bootkit "stand-in booted, starting tink-agent"
  sleep 2
fi
echo HOOKOS-STANDIN-DONE
poweroff -f
INIT
chmod +x init
find . | ./bin/busybox cpio -o -H newc 2>/dev/null | gzip -1 > "$work/initramfs"
cp "$os/vmlinuz" "$out/vmlinuz-x86_64"
cp "$work/initramfs" "$out/initramfs-x86_64"
touch "$out/$stamp"
ls -la "$out"
