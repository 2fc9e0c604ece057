#!/usr/bin/env bash
# Install everything the lab and the tests need, idempotently: Debian packages,
# a Python >= 3.12 venv (.venv), the containers.podman collection (from the
# `ansible` wheel: no Galaxy here) and this checkout as datagram.director.
# Safe to re-run: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

APT_PACKAGES=(podman runc keepalived nftables iptables conntrack debootstrap ethtool
              iproute2 dnsutils socat make rsync git shellcheck
              dnsmasq-base freeradius chrony sip-tester
              qemu-system-x86 openssh-client e2fsprogs)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ansible-core 2.21 needs Python >= 3.12 on the controller; Debian 12 ships
# 3.11, so take a 3.12/3.13 from PATH or pyenv.
pick_python() {
  local c
  for c in python3.12 python3.13 "$HOME"/.pyenv/versions/3.12*/bin/python3 "$HOME"/.pyenv/versions/3.13*/bin/python3; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  return 1
}
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  py=$(pick_python) || { echo "bootstrap: need Python >= 3.12 (python3.12 on PATH or pyenv)" >&2; exit 1; }
  echo "bootstrap: venv with $py"
  "$py" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.txt
  echo "$want" > "$stamp"
fi

# containers.podman (the podman connection and the Molecule driver) ships in
# the `ansible` community package wheel.
coll=.collections/ansible_collections
if [ ! -f "$coll/containers/podman/MANIFEST.json" ]; then
  echo "bootstrap: containers.podman from the ansible wheel"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  .venv/bin/pip download -q --no-deps -d "$tmp" 'ansible==14.5.0'
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
echo "bootstrap: ready (.venv, $coll)"
