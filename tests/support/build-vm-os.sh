#!/usr/bin/env bash
# Builds what the end-to-end VM test boots, from Debian packages, without
# mounting anything and without root:
#   vmlinuz        Debian's kernel (linux-image-amd64), the installed OS's
#   disk.img.gz    a disk laid out as a real OS image is: GPT (sfdisk on a file),
#                  partition 1 an EFI system partition (FAT, written with mtools)
#                  holding GRUB at the removable-media path /EFI/BOOT/BOOTX64.EFI,
#                  so UEFI boots it with no boot entry; partition 2 an ext4 root
#                  (mkfs.ext4 -d) holding the installed OS: /boot/vmlinuz, an
#                  initramfs (/boot/initrd.img) that mounts that root and switches
#                  to it, and a busybox userland whose /sbin/init takes an address
#                  by DHCP, prints its instance-id and user-data from the metadata
#                  service at the DHCP server's address and every file under
#                  /etc/tinker (where the test's `writefile` writes)
#   disk.env       the disk's layout (partition numbers, offsets, the root's UUID),
#                  for the test to check the disk the VM wrote
# GRUB rather than systemd-boot: systemd-boot reads its kernel only from the ESP
# (or an XBOOTLDR partition, FAT too, without an EFI ext4 driver), GRUB reads it
# from the ext4 root as a real installation does.
# The in-memory OS the VM netboots is the one we ship (`osie build`), not built
# here.
# Usage: build-vm-os.sh OUTDIR
# Cached: the downloads are kept; the images are rebuilt when this script changes.
set -euo pipefail
out=$1
script=$(realpath "$0")
mkdir -p "$out/cache"; cd "$out"
# Scratch space, removed however the script ends.
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

stamp=$(sha256sum "$script" | cut -c1-16)
if [ "$(cat stamp 2>/dev/null)" != "$stamp" ]; then
  rm -f osie.img disk.img.gz disk.env stamp
fi

# --- Debian packages ----------------------------------------------------------
if [ ! -d cache/kroot ] || [ ! -x cache/bb/bin/busybox ]; then
  rm -rf cache/kroot cache/bb
  work=$tmp/debs; mkdir -p "$work"
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  (cd "$work" && apt-get download "$pkg" busybox-static >/dev/null)
  dpkg -x "$work/$pkg"_*.deb cache/kroot
  dpkg -x "$work"/busybox-static_*.deb cache/bb
fi
bb=$PWD/cache/bb/bin/busybox
K=$(ls cache/kroot/lib/modules | head -1)
kmod=cache/kroot/lib/modules/$K
# The package leaves modules.dep to the installing machine's depmod.
[ -f "$kmod/modules.dep" ] || "$bb" depmod -b cache/kroot "$K"
cp cache/kroot/boot/vmlinuz-"$K" vmlinuz

# The modules every image here needs, by name: the NIC (e1000), the disk
# (virtio, AHCI/SATA) and ext4 with the checksum ext4 and jbd2 ask the crypto
# layer for (a soft dependency, which modprobe does not follow).
MODULES="e1000 virtio_pci virtio_blk ahci sd_mod crc32c_generic ext4"

# A root with busybox and $MODULES with their dependencies, with modules.dep
# (busybox depmod) so modprobe loads them in order.
base_root() {
  local r=$1 m f
  mkdir -p "$r"/{bin,sbin,proc,sys,dev,etc,tmp,run,lib/modules/"$K"}
  cp "$bb" "$r/bin/busybox"
  for m in $MODULES; do
    # modules.dep: "kernel/x/m.ko: kernel/dep1.ko kernel/dep2.ko"
    for f in $(awk -v m="/$m.ko" 'index($1, m ":") { sub(":", "", $1); print }' "$kmod/modules.dep"); do
      mkdir -p "$r/lib/modules/$K/$(dirname "$f")"
      cp "$kmod/$f" "$r/lib/modules/$K/$f"
    done
  done
  cp "$kmod"/modules.{order,builtin} "$r/lib/modules/$K/" 2>/dev/null || true
  "$bb" depmod -b "$r" "$K"
}

LOAD_MODULES="for m in $MODULES; do modprobe \$m; done"

# Takes an address by DHCP on eth0: the address inside the guest only, and the
# server's address in /tmp/server (where the metadata service is).
dhcp_hook() {
  cat > "$1/bin/dhcp-hook" <<'S'
#!/bin/sh
[ "$1" = bound ] || [ "$1" = renew ] || exit 0
ip addr add "$ip/${mask:-24}" dev "$interface"
echo "$ip" > /tmp/ip; echo "$serverid" > /tmp/server
S
  chmod +x "$1/bin/dhcp-hook"
}
DHCP='ip link set lo up; ip link set eth0 up
udhcpc -i eth0 -s /bin/dhcp-hook -n -q -t 20 >/dev/null 2>&1
'

pack() { (cd "$1" && find . | LC_ALL=C sort | "$bb" cpio -o -H newc 2>/dev/null | gzip -1 -n) > "$2"; }

# --- The installed OS on a GPT disk -----------------------------------------------
if [ ! -f disk.img.gz ]; then
  # Fixed identifiers: the same script gives the same layout, and GRUB and the
  # initramfs find the root by its filesystem UUID.
  ROOT_UUID=7e1c3a52-5d1b-4c1e-9a4f-0000000000a2
  MiB=2048                       # sectors of 512 bytes
  ESP_START=$MiB ESP_SIZE=$((16 * MiB))
  ROOT_START=$((ESP_START + ESP_SIZE)) ROOT_SIZE=$((40 * MiB))
  DISK_SIZE=$((ROOT_START + ROOT_SIZE + MiB))   # room for the backup GPT
  w=$tmp/disk; mkdir -p "$w"

  # The initramfs: the disk and ext4 modules, then the root named on the kernel
  # line is mounted and becomes /.
  base_root "$w/initrd"
  mkdir -p "$w/initrd/newroot"
  cat > "$w/initrd/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
$LOAD_MODULES
root=; for w in \$(cat /proc/cmdline); do case "\$w" in root=*) root=\${w#root=};; esac; done
dev=; for i in \$(seq 100); do dev=\$(findfs "\$root" 2>/dev/null) && break; sleep 0.1; done
if [ -n "\$dev" ] && mount -t ext4 "\$dev" /newroot; then
  umount /proc /sys; mount --move /dev /newroot/dev
  exec switch_root /newroot /sbin/init
fi
echo "TINKER-INSTALLED-OS-NO-ROOT \$root (found: '\$dev')"; exec sh
INIT
  chmod +x "$w/initrd/init"

  # The root filesystem: kernel and initramfs in /boot, busybox, and the init
  # that reads the metadata.
  root=$w/root
  mkdir -p "$root"/{boot,bin,sbin,proc,sys,dev,etc,tmp,run,newroot}
  cp vmlinuz "$root/boot/vmlinuz"
  pack "$w/initrd" "$root/boot/initrd.img"
  cp "$bb" "$root/bin/busybox"
  dhcp_hook "$root"
  echo installed > "$root/etc/hostname"
  cat > "$root/sbin/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys
$DHCP
port=8080
for w in \$(cat /proc/cmdline); do case "\$w" in tinker_metadata_port=*) port=\${w#*=};; esac; done
s="http://\$(cat /tmp/server 2>/dev/null):\$port"
efi=no; [ -d /sys/firmware/efi ] && efi=yes
echo "TINKER-INSTALLED-OS-BOOTED ip=\$(cat /tmp/ip 2>/dev/null) efi=\$efi root=\$(awk '\$2 == "/" && \$3 != "rootfs" {print \$1 "," \$3}' /proc/mounts) cmdline=\$(cat /proc/cmdline)"
find /etc/tinker -type f 2>/dev/null | sort | while read -r f; do
  echo "TINKER-FILE \$f mode=\$(stat -c %a "\$f") owner=\$(stat -c %u:%g "\$f") dir-mode=\$(stat -c %a "\${f%/*}")"
  echo "TINKER-FILE-BEGIN"; cat "\$f"; echo; echo "TINKER-FILE-END"
done
echo "TINKER-INSTANCE-ID \$(wget -q -O - "\$s/2009-04-04/meta-data/instance-id")"
echo "TINKER-USER-DATA-BEGIN"
wget -q -O - "\$s/2009-04-04/user-data"
echo
echo "TINKER-USER-DATA-END"
exec sleep 2147483647
INIT
  chmod +x "$root/sbin/init"
  mkfs.ext4 -q -F -L tinker-root -U "$ROOT_UUID" -E root_owner=0:0 -d "$root" \
    "$w/root.img" $((ROOT_SIZE / 2))k >/dev/null

  # The ESP: GRUB as one EFI program with its modules and grub.cfg inside
  # (grub-mkstandalone), at the path firmware boots from removable media;
  # efi_gop gives the kernel the firmware's framebuffer, as distributions do.
  cat > "$w/grub.cfg" <<CFG
set timeout=0
search --no-floppy --fs-uuid --set=root $ROOT_UUID
linux /boot/vmlinuz root=UUID=$ROOT_UUID console=ttyS0,115200 tinker_installed=1 tinker_metadata_port=8080
initrd /boot/initrd.img
boot
CFG
  grub-mkstandalone -O x86_64-efi -o "$w/BOOTX64.EFI" --locales= --fonts= --themes= \
    --install-modules="linux normal search search_fs_uuid part_gpt ext2 efi_gop configfile echo boot" \
    --modules="part_gpt ext2 search_fs_uuid efi_gop" "boot/grub/grub.cfg=$w/grub.cfg"
  truncate -s $((ESP_SIZE * 512)) "$w/esp.img"
  mformat -i "$w/esp.img" -T "$ESP_SIZE" -N 7e1c0001 -v ESP ::
  mmd -i "$w/esp.img" ::/EFI ::/EFI/BOOT
  mcopy -i "$w/esp.img" "$w/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI

  # The disk: the partition table, then each filesystem at its partition.
  rm -f disk.img
  truncate -s $((DISK_SIZE * 512)) disk.img
  sfdisk -q --no-reread --no-tell-kernel disk.img <<LAYOUT
label: gpt
label-id: 7E1C3A52-5D1B-4C1E-9A4F-0000000000D0
start=$ESP_START, size=$ESP_SIZE, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=7E1C3A52-5D1B-4C1E-9A4F-0000000000D1, name="EFI system partition"
start=$ROOT_START, size=$ROOT_SIZE, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=7E1C3A52-5D1B-4C1E-9A4F-0000000000D2, name="root"
LAYOUT
  dd if="$w/esp.img" of=disk.img bs=512 seek="$ESP_START" conv=notrunc status=none
  dd if="$w/root.img" of=disk.img bs=512 seek="$ROOT_START" conv=notrunc status=none
  cat > disk.env <<ENV
ESP_PART=1
ESP_START=$ESP_START
ESP_SIZE=$ESP_SIZE
ROOT_PART=2
ROOT_START=$ROOT_START
ROOT_SIZE=$ROOT_SIZE
ROOT_UUID=$ROOT_UUID
ENV
  gzip -1 -n -f disk.img
fi
echo "$stamp" > stamp
ls -la "$out"
