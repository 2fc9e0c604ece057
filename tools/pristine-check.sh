#!/usr/bin/env bash
# Prove the bootstrap on a pristine machine: install its Debian package list
# into a fresh Debian bookworm minbase root (nothing else added), then check
# that every helper the project's configs and scripts call resolves there, and
# that the venv step works with that root's own python3.
#
#   tools/pristine-check.sh [--packages-from CMD] [--keep]
#     --packages-from CMD   command that prints the package list
#                           (default: tools/bootstrap.sh --list test);
#                           a negative control passes a shorter list
#     --skip-venv           only the package check
#
# The minbase root (debootstrap, about 1-2 min) is cached under .cache/pristine;
# each run unpacks a copy, so every run starts from the same pristine root.
# Runs as root; its mounts live in a private mount namespace (unshare -m).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
suite=bookworm
list_cmd="tools/bootstrap.sh --list test"
skip_venv=0
while [ $# -gt 0 ]; do
  case $1 in
    --packages-from) list_cmd=$2; shift ;;
    --skip-venv) skip_venv=1 ;;
    *) echo "usage: $0 [--packages-from CMD] [--skip-venv]" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "pristine-check: needs root (debootstrap, chroot)" >&2; exit 2; }

# What the project calls, by the file that calls it (independent of the list).
# containers.conf names two helpers podman must find:
conf=roles/lab/files/containers.conf
backend=$(sed -n 's/^network_backend *= *"\(.*\)"/\1/p' "$conf")
runtime=$(sed -n 's/^runtime *= *"\(.*\)"/\1/p' "$conf")
COMMANDS=(
  podman "$runtime"                                   # roles/lab, molecule/default
  debootstrap chroot tar                              # roles/lab/files/build-image.sh
  nft iptables conntrack ip ethtool                   # data plane tests (tests/integration)
  qemu-system-x86_64 mkfs.ext4 ssh ssh-keygen zstd    # molecule/ipvs/guest
  keepalived                                          # tests/unit/roles/test_templates.py
  dnsmasq freeradius sipp dig socat shellcheck        # tests/integration/test_health_servers.py
  make git rsync sha256sum flock unshare setsid        # Makefile, tools/*.sh
  cc nginx taskset pgrep                              # benchmarks/bench.py (make bench)
  softflowd nfcapd nfdump                             # tests/integration/test_flow_templates.py
)
# podman 4.3 looks for its network helpers here (helper_binaries_dir).
HELPER_DIRS=(/usr/local/libexec/podman /usr/local/lib/podman /usr/libexec/podman /usr/lib/podman)

mirror=$(awk -v s="$suite" '
  /^[[:space:]]*$/ { if (u != "" && ok) { print u; exit } u=""; ok=0; next }
  /^URIs:/   { u=$2 }
  /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) ok=1 }
  END        { if (u != "" && ok) print u }' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
mirror=${DD_DEBIAN_MIRROR:-${mirror:-http://deb.debian.org/debian}}

cache=$top/.cache/pristine
base=$cache/$suite-minbase.tar
mkdir -p "$cache"
if [ ! -f "$base" ]; then
  echo "pristine-check: debootstrap --variant=minbase $suite ($mirror)"
  stage=$(mktemp -d "$cache/.debootstrap.XXXXXX")
  debootstrap --variant=minbase "$suite" "$stage/root" "$mirror" > "$cache/debootstrap.log" 2>&1 \
    || { tail -n 20 "$cache/debootstrap.log" >&2; rm -rf "$stage"; exit 1; }
  tar -C "$stage/root" -cf "$base.tmp" . && mv "$base.tmp" "$base"
  rm -rf "$stage"
fi

work=$(mktemp -d "$cache/.run.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir "$root"
tar -C "$root" -xf "$base"
mapfile -t packages < <(bash -c "$list_cmd")
echo "pristine-check: ${#packages[@]} packages into a pristine $suite root"

# The machine's network settings (name resolution, the CA bundle its TLS
# path needs) are copied in; nothing else of the host is.
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$work/host-ca.crt"
cp "$work/host-ca.crt" "$root/root/host-ca.crt"
cp requirements.txt "$root/root/requirements.txt"
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

inner=$(cat <<'EOS'
set -euo pipefail
root=$1 skip_venv=$2; shift 2
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
export DEBIAN_FRONTEND=noninteractive
chroot "$root" apt-get -qq update
chroot "$root" apt-get -y -qq install --no-install-recommends "$@" > "$root/root/apt.log" 2>&1 \
  || { tail -n 30 "$root/root/apt.log" >&2; exit 1; }
if [ "$skip_venv" = 0 ]; then
  chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    PIP_CERT=/root/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 sh -ec '
      python3 -m venv /root/venv
      /root/venv/bin/pip install -q -r /root/requirements.txt
      /root/venv/bin/ansible --version | head -n 1
      /root/venv/bin/python --version' > "$root/root/venv.log" 2>&1 \
    || { tail -n 30 "$root/root/venv.log" >&2; exit 1; }
  cat "$root/root/venv.log"
fi
EOS
)
unshare --mount --propagation private bash -c "$inner" inner "$root" "$skip_venv" "${packages[@]}"

missing=()
for c in "${COMMANDS[@]}"; do
  # shellcheck disable=SC2016  # $1 is expanded by the chroot's sh
  chroot "$root" /usr/bin/env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    sh -c 'command -v "$1"' sh "$c" >/dev/null || missing+=("$c")
done
found=""
for d in "${HELPER_DIRS[@]}"; do [ -x "$root$d/$backend" ] && found=$d/$backend; done
[ -n "$found" ] || missing+=("$backend (containers.conf network_backend, in ${HELPER_DIRS[*]})")
if [ ${#missing[@]} -gt 0 ]; then
  printf 'pristine-check: FAILED: not found in the pristine root after the bootstrap packages: %s\n' "${missing[*]}" >&2
  exit 1
fi
echo "pristine-check: ok: ${#COMMANDS[@]} commands and $backend ($found) resolve in a pristine $suite root"
