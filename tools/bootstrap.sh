#!/usr/bin/env bash
# Install what the lab (and, with `test`, the tests) need, idempotently:
# Debian packages, a venv (.venv) on the distribution's own python3, the
# containers.podman collection (from the `ansible` wheel: no Galaxy here) and
# this checkout linked as datagram.director.
#   tools/bootstrap.sh lab          what `make lab` needs
#   tools/bootstrap.sh test         that plus the test tools and real peers
#   tools/bootstrap.sh --list SET   print the Debian packages of SET (lab|test)
# Safe to re-run: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

# Every package is named: --no-install-recommends would otherwise let apt pick
# a provider (podman's container-network-stack is satisfied by
# containernetworking-plugins, not netavark, which containers.conf names).
LAB_PACKAGES=(
  podman netavark runc            # roles/lab/files/containers.conf: network_backend, runtime
  debootstrap                     # the lab image (roles/lab/files/build-image.sh)
  nftables iptables conntrack iproute2 ethtool
  python3 python3-venv            # the controller venv
  make git rsync ca-certificates
)
TEST_PACKAGES=(
  qemu-system-x86 e2fsprogs openssh-client zstd   # molecule/ipvs guests
  keepalived                      # `keepalived -t` on rendered configs
  dnsmasq-base freeradius sip-tester dnsutils socat shellcheck  # real peers and tools
  gcc libc6-dev nginx libnginx-mod-stream  # make bench: its C sender (compiled at bench time), nginx stream as a measured peer
  nginx-common                    # carries nginx.service: named so the bootstrap leaves it disabled
  procps                          # pgrep (benchmarks/bench.py); not in a minimal Debian
  softflowd nfdump                # flow exporter and collector (tests/integration/test_flow_templates.py)
)
# chrony (NTP peer of the health tests) is unpacked into .cache/peers, not
# installed: installing it would remove the host's systemd-timesyncd.
PRIVATE_PACKAGES=(chrony)

set_name=${1:-test}
[ "$set_name" = --list ] && { list_only=1; set_name=${2:-test}; } || list_only=0
case $set_name in
  lab) packages=("${LAB_PACKAGES[@]}") ;;
  test) packages=("${LAB_PACKAGES[@]}" "${TEST_PACKAGES[@]}") ;;
  *) echo "usage: $0 [lab|test] | --list lab|test" >&2; exit 2 ;;
esac
if [ "$list_only" = 1 ]; then printf '%s\n' "${packages[@]}"; exit 0; fi

# Wait for another apt run (unattended-upgrades, a second make) instead of failing.
apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -qq "$@"; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
apt_updated=0
apt_update_once() { [ "$apt_updated" = 1 ] || { apt_get update; apt_updated=1; }; }

install_packages() {
  local missing=() p
  for p in "$@"; do installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -gt 0 ] || return 0
  echo "bootstrap: apt-get install ${missing[*]}"
  apt_update_once
  # Test peers are tools, not services of this host: policy-rc.d keeps their
  # maintainer scripts from starting them, and their units stay disabled.
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; own_policy=1
    # removed on any exit, an interrupted one too: left behind it would keep
    # every later package's service from starting
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt_get install --no-install-recommends "${missing[@]}" >/dev/null
  [ "$own_policy" = 0 ] || { rm -f "$policy"; trap - EXIT; }
  for p in "${missing[@]}"; do
    case " ${TEST_PACKAGES[*]} " in *" $p "*) disable_units "$p" ;; esac
  done
}
# Disable (never stop: policy-rc.d kept them from starting) the units a test
# package brought.
disable_units() {
  local unit
  for unit in $(dpkg -L "$1" 2>/dev/null | grep -E '^(/usr)?/lib/systemd/system/[^/@]+\.service$' | xargs -r -n1 basename); do
    systemctl disable --quiet "$unit" 2>/dev/null || true
    echo "bootstrap: $unit installed for the tests, left disabled"
  done
}
unpack_private() {
  local p dest=$top/.cache/peers
  for p in "$@"; do
    [ -f "$dest/.$p" ] && continue
    apt_update_once
    local tmp; tmp=$(mktemp -d)
    (cd "$tmp" && apt-get -o APT::Sandbox::User=root download -qq "$p")
    mkdir -p "$dest"
    dpkg-deb -x "$tmp"/"$p"_*.deb "$dest"
    rm -rf "$tmp"
    touch "$dest/.$p"
    echo "bootstrap: $p unpacked into .cache/peers (not installed)"
  done
}

install_packages "${packages[@]}"
[ "$set_name" = lab ] || unpack_private "${PRIVATE_PACKAGES[@]}"

# The controller runs on the distribution's python3 (3.11 on Debian 12, 3.13
# on Debian 13): ansible-core 2.19 supports both (requirements.txt).
py=/usr/bin/python3
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "bootstrap: $py is older than 3.11; ansible-core 2.19 needs >= 3.11" >&2; exit 1; }
stamp=.venv/.requirements.sha256
want=$( { sha256sum requirements.txt; "$py" --version; } | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: venv with $("$py" --version)"
  rm -rf .venv
  "$py" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.txt
  echo "$want" > "$stamp"
fi

# containers.podman (the podman connection and the Molecule driver) ships in
# the `ansible` community package wheel; 12.x is the release for ansible-core 2.19.
coll=.collections/ansible_collections
if [ ! -f "$coll/containers/podman/MANIFEST.json" ]; then
  echo "bootstrap: containers.podman from the ansible wheel"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  .venv/bin/pip download -q --no-deps -d "$tmp" 'ansible==12.3.0'
  mkdir -p .collections
  .venv/bin/python - "$tmp"/ansible-*.whl .collections <<'PY'
import sys, zipfile
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    members = [m for m in z.namelist() if m.startswith("ansible_collections/containers/podman/")]
    z.extractall(dest, members)
print("extracted %d files" % len(members))
PY
fi
# This checkout is the collection datagram.director.
mkdir -p "$coll/datagram"
ln -sfn "$top" "$coll/datagram/director"
echo "bootstrap: ready ($set_name: .venv, $coll)"
