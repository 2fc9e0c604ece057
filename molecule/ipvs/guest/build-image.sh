#!/usr/bin/env bash
# Build (or reuse) the IPVS test guest image for datagram.director.
#
# Usage: build-image.sh [--print-dir] [--force]
#   Prints the image directory on stdout (last line) and exits 0.
#   --force rebuilds even when a cached image exists.
# Env:
#   XDG_CACHE_HOME        cache root (default ~/.cache)
#   DD_GUEST_SUITE        Debian suite (default bookworm)
#   DD_GUEST_MIRROR       mirror URL (default: read from the host's
#                         /etc/apt/sources.list.d/debian.sources at run time)
# Exit codes: 0 ok, 1 build failed, 2 usage / missing tool, 3 not root.
#
# Result: ${XDG_CACHE_HOME:-$HOME/.cache}/datagram-director/guest/<sha256>/
#   vmlinux       uncompressed ELF kernel (PVH entry for qemu -kernel)
#   bzImage       the stock Debian kernel (fallback)
#   initrd.img    tiny busybox initrd (virtio_pci, virtio_blk, ext4)
#   disk.img      ext4 root file system image (use with snapshot=on)
#   id_ed25519    ssh key authorised for root in the guest (+ .pub)
#   known_hosts.template  guest host key, "[127.0.0.1]:PORT" placeholder
#   manifest      kernel version, sizes, build time
# <sha256> is the hash of the recipe files (this script + lib/*).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
suite="${DD_GUEST_SUITE:-bookworm}"
force=0
for a in "$@"; do
  case "$a" in
    --force) force=1 ;;
    --print-dir) ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown argument: $a" >&2; exit 2 ;;
  esac
done

[ "$(id -u)" = 0 ] || { echo "build-image.sh: must run as root (debootstrap)" >&2; exit 3; }
for t in debootstrap mkfs.ext4 ssh-keygen sha256sum /usr/bin/python3; do
  command -v "$t" >/dev/null || { echo "build-image.sh: missing $t" >&2; exit 2; }
done

recipe_hash() {
  (cd "$here" && for f in build-image.sh lib/*; do
     printf '%s\0' "$f"; cat "$f"; done; printf 'suite=%s' "$suite") | sha256sum | cut -c1-64
}

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/datagram-director/guest"
hash="$(recipe_hash)"
out="$cache_root/$hash"
if [ -f "$out/manifest" ] && [ "$force" = 0 ]; then
  echo "$out"
  exit 0
fi

mirror="${DD_GUEST_MIRROR:-}"
if [ -z "$mirror" ]; then
  # First URIs: of a deb822 stanza whose Suites: carries the plain suite name.
  mirror="$(awk -v s="$suite" '
    /^[[:space:]]*$/ { if (u != "" && ok) { print u; exit } u=""; ok=0; next }
    /^URIs:/   { u=$2 }
    /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) ok=1 }
    END        { if (u != "" && ok) print u }' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)"
fi
[ -n "$mirror" ] || { echo "build-image.sh: no mirror found (set DD_GUEST_MIRROR)" >&2; exit 2; }

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9
if [ -f "$out/manifest" ] && [ "$force" = 0 ]; then echo "$out"; exit 0; fi

tmp="$(mktemp -d "$cache_root/.build-$hash.XXXXXX")"
cleanup() {
  # only our own temp dir; nothing is mounted in it (no chroot mounts used
  # except the ones below, which are undone here too)
  for m in "$tmp/rootfs/proc" "$tmp/rootfs/sys" "$tmp/rootfs/dev/pts" "$tmp/rootfs/dev"; do
    if mountpoint -q "$m" 2>/dev/null; then umount -l "$m" || true; fi
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 143' TERM INT   # so that a stopped build removes its temp dir too
log="$tmp/build.log"
t0=$(date +%s)
echo "build-image.sh: building $out (mirror from host sources), log $log" >&2

pkgs=(
  linux-image-amd64 kmod udev
  ipvsadm keepalived iproute2 nftables iptables conntrack
  python3 python3-apt busybox-static procps ethtool
  openssh-server systemd systemd-sysv dbus
)
rootfs="$tmp/rootfs"
if ! debootstrap --variant=minbase --components=main \
      --include="$(IFS=,; echo "${pkgs[*]}")" \
      "$suite" "$rootfs" "$mirror" >"$log" 2>&1; then
  echo "build-image.sh: debootstrap failed, tail of log:" >&2
  tail -n 30 "$log" >&2
  exit 1
fi
t1=$(date +%s)

# --- configure the root file system (no daemons started: policy-rc.d) ----
kver="$(find "$rootfs/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n1)"
install -m 0755 "$here/lib/guest-init" "$rootfs/usr/local/sbin/dd-guest-init"
echo ddguest > "$rootfs/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 ddguest\n' > "$rootfs/etc/hosts"
printf '/dev/vda / ext4 rw,relatime 0 1\n' > "$rootfs/etc/fstab"
: > "$rootfs/etc/machine-id"
chroot "$rootfs" passwd -l root >/dev/null
# systemd mode: static address on the slirp NIC, sshd, no waiting for online
mkdir -p "$rootfs/etc/systemd/network"
printf '[Match]\nName=eth0\n\n[Network]\nAddress=10.0.2.15/24\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n' \
  > "$rootfs/etc/systemd/network/10-eth0.network"
chroot "$rootfs" systemctl enable systemd-networkd.service >/dev/null 2>&1
chroot "$rootfs" systemctl enable ssh.service >/dev/null 2>&1 || true
# keepalived stays enabled, as the Debian package leaves it: with no
# keepalived.conf its unit does not start (ConditionFileNotEmpty)
chroot "$rootfs" systemctl mask systemd-networkd-wait-online.service apt-daily.timer \
  apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer >/dev/null 2>&1 || true
printf 'UseDNS no\nPasswordAuthentication no\nPermitRootLogin prohibit-password\n' \
  > "$rootfs/etc/ssh/sshd_config.d/dd-guest.conf"
# ssh: a key made for this image only
ssh-keygen -q -t ed25519 -N '' -C dd-guest -f "$tmp/id_ed25519"
install -d -m 0700 "$rootfs/root/.ssh"
install -m 0600 "$tmp/id_ed25519.pub" "$rootfs/root/.ssh/authorized_keys"
[ -f "$rootfs/etc/ssh/ssh_host_ed25519_key.pub" ] || chroot "$rootfs" ssh-keygen -A
echo "[127.0.0.1]:PORT $(cut -d' ' -f1,2 "$rootfs/etc/ssh/ssh_host_ed25519_key.pub")" \
  > "$tmp/known_hosts.template"
# Ansible runs each task's module from a fresh zip that Python compiles anew:
# a bytecode cache for those payloads halves a module run under TCG
# (lib/dd_ansiballz_cache.py says how; the code run stays what was sent)
install -m 0644 "$here/lib/dd_ansiballz_cache.py" "$rootfs/usr/lib/python3/dist-packages/dd_ansiballz_cache.py"
echo 'import dd_ansiballz_cache' > "$rootfs/usr/lib/python3/dist-packages/dd_ansiballz_cache.pth"
install -d -m 0700 "$rootfs/var/cache/dd-ansiballz-pyc"
# modules the run-mode test and sshd mode need without udev
printf 'ip_vs\nip_vs_rr\n' > "$rootfs/etc/modules-load.d/dd-ipvs.conf"
# trim: docs, man pages, locales, apt caches
rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
       "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*_Packages
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'C.*' -exec rm -rf {} + 2>/dev/null || true

# --- kernel: bzImage + vmlinux (ELF, PVH entry) ---------------------------
cp "$rootfs/boot/vmlinuz-$kver" "$tmp/bzImage"
/usr/bin/python3 "$here/lib/kimage.py" vmlinux "$tmp/bzImage" "$tmp/vmlinux"

# --- tiny initrd ------------------------------------------------------------
ird="$tmp/initrd"
mkdir -p "$ird/bin" "$ird/lib/modules"
cp "$rootfs/bin/busybox" "$ird/bin/busybox"
# the initrd has no /bin/sh: busybox is the interpreter (the file in lib/ has
# no shebang of its own)
{ echo '#!/bin/busybox sh'; cat "$here/lib/initrd-init"; } > "$ird/init"
chmod 0755 "$ird/init"
: > "$ird/modules.order"
for m in virtio_pci virtio_blk ext4; do
  chroot "$rootfs" /sbin/modprobe -S "$kver" --show-depends "$m"
done | awk '$1 == "insmod" { print $2 }' | awk '!seen[$0]++' |
  while read -r m; do
    b="$(basename "$m")"
    case "$b" in
      *.ko)    cp "$rootfs$m" "$ird/lib/modules/$b" ;;
      *.ko.xz) xz -dc "$rootfs$m" > "$ird/lib/modules/${b%.xz}"; b="${b%.xz}" ;;
      *.ko.zst) zstd -qdc "$rootfs$m" > "$ird/lib/modules/${b%.zst}"; b="${b%.zst}" ;;
    esac
    echo "/lib/modules/$b" >> "$ird/modules.order"
  done
/usr/bin/python3 "$here/lib/kimage.py" cpio "$ird" "$tmp/initrd.img"
initrd_mods="$(xargs -n1 basename < "$ird/modules.order" | tr '\n' ' ')"
rm -rf "$ird"
t2=$(date +%s)

# --- disk image from the directory, no loop mount ---------------------------
used_mb=$(du -sm "$rootfs" | cut -f1)
size_mb=$(( used_mb + used_mb / 2 + 256 ))
mkfs.ext4 -q -F -L ddroot -E root_owner=0:0 -d "$rootfs" "$tmp/disk.img" "${size_mb}M" >>"$log" 2>&1
t3=$(date +%s)
rm -rf "$rootfs"

cat > "$tmp/manifest" <<MANIFEST
hash=$hash
suite=$suite
kernel=$kver
rootfs_used_mb=$used_mb
disk_size_mb=$size_mb
disk_alloc_mb=$(du -m "$tmp/disk.img" | cut -f1)
vmlinux_bytes=$(stat -c %s "$tmp/vmlinux")
initrd_bytes=$(stat -c %s "$tmp/initrd.img")
initrd_modules="$initrd_mods"
debootstrap_s=$((t1 - t0))
kernel_initrd_s=$((t2 - t1))
mkfs_s=$((t3 - t2))
total_s=$((t3 - t0))
built=$(date -u +%FT%TZ)
MANIFEST
[ -d "$out" ] && mv "$out" "$out.old.$$"
mv "$tmp" "$out"
trap - EXIT
rm -rf "$out.old.$$"
chmod 0600 "$out/id_ed25519"
echo "build-image.sh: done in $((t3 - t0)) s" >&2
echo "$out"
