#!/usr/bin/env bash
# Builds the in-memory OS the PXE tests boot: Debian's kernel (linux-image-amd64),
# its e1000 module, and a busybox-static initramfs that takes an address by DHCP,
# prints a marker, fetches its instance-id from the metadata service named on the
# kernel command line (tinker_server=URL), prints it, and powers off.
# Usage: build-test-os.sh OUTDIR   (idempotent: reuses what is there)
set -euo pipefail
out=$1; mkdir -p "$out"; cd "$out"
[ -f vmlinuz ] && [ -f initrd.img ] && exit 0
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cd "$work"
pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
apt-get download "$pkg" busybox-static >/dev/null
dpkg -x "$pkg"_*.deb kroot
dpkg -x busybox-static_*.deb bb
K=$(ls kroot/lib/modules | head -1)
mkdir -p initrd/{bin,sbin,proc,sys,dev,etc,tmp,lib/modules}
cp bb/bin/busybox initrd/bin/busybox
find kroot/lib/modules/"$K" -name 'e1000.ko*' -exec cp {} initrd/lib/modules/ \;
cat > initrd/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in /lib/modules/*.ko*; do insmod "$m"; done
ip link set eth0 up
cat > /tmp/udhcpc.sh <<'S'
#!/bin/sh
[ "$1" = bound ] || [ "$1" = renew ] || exit 0
ip addr add "$ip/${mask:-24}" dev "$interface"; echo "$ip" > /tmp/ip
S
chmod +x /tmp/udhcpc.sh
udhcpc -i eth0 -s /tmp/udhcpc.sh -n -q -t 10 >/dev/null 2>&1
echo "TINKER-PXE-BOOTED ip=$(cat /tmp/ip 2>/dev/null) cmdline=$(cat /proc/cmdline)"
for w in $(cat /proc/cmdline); do case "$w" in tinker_server=*) s=${w#tinker_server=};; esac; done
echo "TINKER-METADATA instance-id=$(wget -q -O - "$s/2009-04-04/meta-data/instance-id")"
echo TINKER-PXE-DONE
poweroff -f
INIT
chmod +x initrd/init
(cd initrd && find . | "$work/bb/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1) > initrd.img
cp kroot/boot/vmlinuz-"$K" "$out/vmlinuz"
cp initrd.img "$out/initrd.img"
ls -la "$out"
