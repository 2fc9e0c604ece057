#!/usr/bin/env bash
# Build the datagram.director lab image: Debian bookworm (debootstrap minbase)
# with systemd as PID 1, keepalived, ipvsadm, nftables, iptables, conntrack and
# the tools the tests use, imported into rootful podman storage.
#
# usage: build-image.sh IMAGE_TAG        (e.g. localhost/datagram-director-lab:dev)
#
# Idempotent: does nothing when `podman image exists IMAGE_TAG`.
# No registry is needed. The Debian mirror is read from the host's apt sources
# (/etc/apt/sources.list.d/*.sources, then /etc/apt/sources.list); set
# DD_DEBIAN_MIRROR to override it. Runs as root (debootstrap, chroot, podman).
#
# Podman settings: if CONTAINERS_CONF / CONTAINERS_STORAGE_CONF are unset, the
# containers.conf / storage.conf next to this script are used.
set -euo pipefail

SUITE=${DD_DEBIAN_SUITE:-bookworm}
PACKAGES=(
  systemd systemd-sysv dbus
  python3 python3-apt
  iproute2 nftables iptables conntrack
  keepalived ipvsadm
  procps ethtool iputils-ping dnsutils tcpdump
)

die() { echo "build-image: $*" >&2; exit 1; }

if [ $# -ne 1 ] || [ -z "$1" ]; then die "usage: $0 IMAGE_TAG"; fi
TAG=$1
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot, rootful podman)"

here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${CONTAINERS_CONF:-}" ] && [ -f "$here/containers.conf" ]; then
  export CONTAINERS_CONF="$here/containers.conf"
fi
if [ -z "${CONTAINERS_STORAGE_CONF:-}" ] && [ -f "$here/storage.conf" ]; then
  export CONTAINERS_STORAGE_CONF="$here/storage.conf"
fi

for cmd in podman debootstrap tar chroot; do
  command -v "$cmd" >/dev/null || die "$cmd not found"
done

if podman image exists "$TAG"; then
  echo "build-image: $TAG already exists, nothing to do"
  exit 0
fi

# --- Debian mirror from the host's apt configuration ------------------------
# First URI of a deb822 stanza (Types: deb) whose Suites lists "$SUITE" itself
# (not $SUITE-security / -updates); else a one-line "deb URI $SUITE ..." entry.
find_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    awk -v suite="$SUITE" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uri != "" && !found) {
          print uri; found = 1
        }
        types = ""; suites = ""; uri = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      tolower($1) == "types:"  { $1 = ""; types = $0 }
      tolower($1) == "suites:" { $1 = ""; suites = $0 }
      tolower($1) == "uris:"   { uri = $2 }
      END { flush() }
    ' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    awk -v suite="$SUITE" '
      $1 == "deb" {
        i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i + 1) == suite) print $i
      }' "$f"
  done
}

MIRROR=${DD_DEBIAN_MIRROR:-$(find_mirror | head -n 1)}
[ -n "$MIRROR" ] || die "no Debian '$SUITE' mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list; set DD_DEBIAN_MIRROR=http://..."

# --- work dir, always cleaned up ---------------------------------------------
start=$(date +%s)
work=$(mktemp -d /var/tmp/dd-lab-image.XXXXXX)
cleanup() {
  # never leave bind mounts behind before removing the tree
  local m
  for m in proc sys dev/pts dev; do
    if mountpoint -q "$work/rootfs/$m" 2>/dev/null; then umount -l "$work/rootfs/$m" || true; fi
  done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

root=$work/rootfs
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
kr_opt=()
[ -r "$keyring" ] && kr_opt=(--keyring="$keyring")

echo "build-image: debootstrap $SUITE (minbase) into $root"
include=$(IFS=,; echo "${PACKAGES[*]}")
# debootstrap installs a policy-rc.d (exit 101) and a dummy start-stop-daemon
# while it configures packages: no daemon (keepalived!) starts in the chroot.
debootstrap --variant=minbase "${kr_opt[@]}" --include="$include" \
  "$SUITE" "$root" "$MIRROR" > "$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }

# --- make it a container image -------------------------------------------
# The Ansible roles enable keepalived; the image must not start it at boot.
chroot "$root" systemctl disable keepalived.service >/dev/null 2>&1 || true
rm -f "$root"/etc/systemd/system/multi-user.target.wants/keepalived.service
# Timers that want the network or real disks, and consoles a container lacks.
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
            e2scrub_reap.service fstrim.timer getty@tty1.service \
            systemd-remount-fs.service; do
  chroot "$root" systemctl disable "$unit" >/dev/null 2>&1 || true
  chroot "$root" systemctl mask "$unit" >/dev/null 2>&1 || true
done

# systemd creates a fresh machine-id on first boot of each container.
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# podman provides these per container; do not carry the build host's.
rm -f "$root/etc/hostname" "$root/etc/resolv.conf"
: > "$root/etc/hostname"
# Package lists and caches are not needed: python3-apt still sees every
# installed package through /var/lib/dpkg/status, so `apt state=present` of an
# installed package works offline.
chroot "$root" apt-get clean >/dev/null 2>&1 || true
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
       "$root"/var/cache/debconf/*-old "$root"/var/log/*.log \
       "$root"/usr/share/man/* "$root"/usr/share/info/*
mkdir -p "$root/var/lib/apt/lists/partial"
[ ! -e "$root/usr/sbin/policy-rc.d" ] || die "policy-rc.d left in image"

echo "build-image: importing into podman as $TAG"
tar --numeric-owner --xattrs --xattrs-include='*' -C "$root" -c . \
  | podman import --quiet \
      --change 'CMD ["/sbin/init"]' \
      --change 'STOPSIGNAL SIGRTMIN+3' \
      --change 'ENV container=podman' \
      --message "datagram.director lab image ($SUITE minbase)" \
      - "$TAG" >/dev/null

end=$(date +%s)
size=$(podman image inspect --format '{{.Size}}' "$TAG")
echo "build-image: built $TAG in $((end - start)) s, $((size / 1000000)) MB"
