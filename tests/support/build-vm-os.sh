#!/usr/bin/env bash
# Builds what the end-to-end VM test boots, from Debian packages and without
# mounting anything:
#   vmlinuz        Debian's kernel (linux-image-amd64)
#   osie.img       the in-memory OS: busybox-static, the e1000 and virtio-blk modules,
#                  and our worker binary with the shared libraries ldd lists; it takes
#                  an address by DHCP and runs the worker, which reads its control
#                  plane and token from the kernel command line
#   installed.img  the "installed OS": takes an address by DHCP, fetches its
#                  instance-id and user-data from the metadata service at the DHCP
#                  server's address, prints them on the console
#   disk.img.gz    a bootable disk: FAT with syslinux (superfloppy: syslinux's boot
#                  sector at LBA 0), syslinux.cfg, vmlinuz and installed.img
# Usage: build-vm-os.sh OUTDIR WORKER_BINARY
# Cached: the downloads are kept; osie.img is rebuilt when the worker is newer.
set -euo pipefail
out=$1; worker=$(realpath "$2")
mkdir -p "$out/cache"; cd "$out"

# --- Debian packages ----------------------------------------------------------
if [ ! -d cache/kroot ] || [ ! -x cache/bb/bin/busybox ]; then
  rm -rf cache/kroot cache/bb
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  (cd "$work" && apt-get download "$pkg" busybox-static >/dev/null)
  dpkg -x "$work/$pkg"_*.deb cache/kroot
  dpkg -x "$work"/busybox-static_*.deb cache/bb
fi
bb=$PWD/cache/bb/bin/busybox
K=$(ls cache/kroot/lib/modules | head -1)
cp cache/kroot/boot/vmlinuz-"$K" vmlinuz

# A root with busybox and the modules for the NIC and the disk, with modules.dep
# (busybox depmod) so modprobe loads their dependencies in order.
base_root() {
  local r=$1
  mkdir -p "$r"/{bin,sbin,proc,sys,dev,etc,tmp,run,lib/modules/"$K"}
  cp "$bb" "$r/bin/busybox"
  for m in drivers/net/ethernet/intel/e1000 drivers/virtio drivers/block/virtio_blk.ko; do
    mkdir -p "$r/lib/modules/$K/kernel/$(dirname "$m")"
    cp -r "cache/kroot/lib/modules/$K/kernel/$m" "$r/lib/modules/$K/kernel/$(dirname "$m")/"
  done
  cp cache/kroot/lib/modules/"$K"/modules.{order,builtin} "$r/lib/modules/$K/" 2>/dev/null || true
  "$bb" depmod -b "$r" "$K"
  # The DHCP hook: the address inside the guest only, and what the server said.
  cat > "$r/bin/dhcp-hook" <<'S'
#!/bin/sh
[ "$1" = bound ] || [ "$1" = renew ] || exit 0
ip addr add "$ip/${mask:-24}" dev "$interface"
echo "$ip" > /tmp/ip; echo "$serverid" > /tmp/server
S
  chmod +x "$r/bin/dhcp-hook"
}

COMMON_INIT='#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
modprobe e1000; modprobe virtio_pci; modprobe virtio_blk
ip link set lo up; ip link set eth0 up
udhcpc -i eth0 -s /bin/dhcp-hook -n -q -t 20 >/dev/null 2>&1
'

pack() { (cd "$1" && find . | "$bb" cpio -o -H newc 2>/dev/null | gzip -1) > "$2"; }

# --- The in-memory OS with the worker -------------------------------------------
if [ ! -f osie.img ] || [ "$worker" -nt osie.img ]; then
  r=$(mktemp -d)
  base_root "$r"
  strip -o "$r/bin/worker" "$worker"
  # The worker's shared libraries, at the paths the dynamic loader looks for them.
  ldd "$worker" | awk '/=>/{print $3} /^\t\/lib/{print $1}' | while read -r lib; do
    [ -f "$lib" ] || continue
    mkdir -p "$r$(dirname "$lib")"; cp -L "$lib" "$r$lib"
  done
  mkdir -p "$r/lib64"; cp -L /lib64/ld-linux-x86-64.so.2 "$r/lib64/"
  { printf '%s' "$COMMON_INIT"; cat <<'INIT'; } > "$r/init"
echo "TINKER-OSIE-BOOTED ip=$(cat /tmp/ip 2>/dev/null) disks=$(ls /sys/block | tr '\n' ,)"
/bin/worker --no-docker
echo "TINKER-OSIE-WORKER-EXITED $?"
exec sleep 2147483647
INIT
  chmod +x "$r/init"
  pack "$r" osie.img
  rm -rf "$r"
fi

# --- The installed OS and its disk ------------------------------------------------
if [ ! -f disk.img.gz ] || [ ! -f installed.img ]; then
  r=$(mktemp -d)
  base_root "$r"
  { printf '%s' "$COMMON_INIT"; cat <<'INIT'; } > "$r/init"
port=8080
for w in $(cat /proc/cmdline); do case "$w" in tinker_metadata_port=*) port=${w#*=};; esac; done
s="http://$(cat /tmp/server 2>/dev/null):$port"
echo "TINKER-INSTALLED-OS-BOOTED ip=$(cat /tmp/ip 2>/dev/null) cmdline=$(cat /proc/cmdline)"
echo "TINKER-INSTANCE-ID $(wget -q -O - "$s/2009-04-04/meta-data/instance-id")"
echo "TINKER-USER-DATA-BEGIN"
wget -q -O - "$s/2009-04-04/user-data"
echo
echo "TINKER-USER-DATA-END"
exec sleep 2147483647
INIT
  chmod +x "$r/init"
  pack "$r" installed.img
  rm -rf "$r"
  rm -f disk.img
  truncate -s 32M disk.img
  mkfs.vfat -n TINKER disk.img >/dev/null
  syslinux --install disk.img
  cat > syslinux.cfg <<'CFG'
DEFAULT installed
PROMPT 0
TIMEOUT 0
LABEL installed
  KERNEL vmlinuz
  APPEND initrd=installed.img console=ttyS0,115200 tinker_installed=1 tinker_metadata_port=8080
CFG
  mcopy -i disk.img syslinux.cfg vmlinuz installed.img ::/
  gzip -1 -f disk.img
fi
ls -la "$out"
