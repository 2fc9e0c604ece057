#!/usr/bin/env bash
# All tests, in the order that fails fastest: unit, the health benchmark,
# the data-plane benchmark's quick mode,
# the pristine-machine check, lint, sanity, Molecule (podman lab topology),
# then real IPVS in QEMU guests.
#   tools/test.sh [unit|bench|dataplane|pristine|lint|sanity|molecule|ipvs ...]   (default: all)
# Expects `tools/bootstrap.sh test` to have run (make test does it).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
# Test peers unpacked by the bootstrap (chronyd) come after the venv.
export PATH=$top/.venv/bin:$PATH:$top/.cache/peers/usr/sbin:$top/.cache/peers/usr/bin
export ANSIBLE_CONFIG=$top/ansible.cfg
export CONTAINERS_CONF=$top/roles/lab/files/containers.conf
export CONTAINERS_STORAGE_CONF=$top/roles/lab/files/storage.conf
# Nothing outside the checkout: Ansible's, Molecule's and ansible-lint's
# state and caches (and the guest image) stay under it.
export ANSIBLE_HOME=$top/.ansible XDG_CACHE_HOME=$top/.cache
# ssh ControlPersist sockets (the ipvs guests) stay in the checkout too.
export ANSIBLE_SSH_CONTROL_PATH_DIR=$top/.ansible/cp
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(unit bench dataplane pristine lint sanity molecule ipvs)

step() { printf '\n=== %s (%s)\n' "$1" "$(date +%T)"; }

# In a full run the ipvs scenario's guest image (debootstrap, 2-3 min when not
# cached) is built in the background during lint and sanity, which are not
# timing-sensitive; it must be done before Molecule, whose drills measure
# failover and health timings on these 2 cores.
image_pid=""
image_log="${TMPDIR:-/tmp}/datagram-director-image.$$.log"
molecule_log="${TMPDIR:-/tmp}/datagram-director-molecule.$$.log"
tmp=""
# Files this run writes in the home directory (it should write none there).
home_mark=$(mktemp)
# On any exit: our temp dir, and a background image build still running
# (its own process group, stopped as a whole; build-image.sh removes its
# partial build).
cleanup() {
  [ -z "$tmp" ] || rm -rf "$tmp"
  if [ -n "$image_pid" ] && kill -0 "$image_pid" 2>/dev/null; then
    kill -TERM -- "-$image_pid" 2>/dev/null || true
    wait "$image_pid" 2>/dev/null || true
  fi
  rm -f "$image_log" "$molecule_log" "$home_mark"
}
trap cleanup EXIT
image_start() {
  [ -z "$image_pid" ] || return 0
  printf '\n=== guest image for the ipvs scenario: building in the background (%s)\n' "$(date +%T)"
  # shellcheck disable=SC2016  # expanded by the inner bash
  setsid bash -c 't0=$(date +%s); molecule/ipvs/guest/build-image.sh > "$1" 2>&1; rc=$?
    echo "build-image.sh rc=$rc in $(( $(date +%s) - t0 )) s" >> "$1"; exit $rc' image "$image_log" &
  image_pid=$!
}
image_wait() {
  [ -n "$image_pid" ] || return 0
  local rc=0
  wait "$image_pid" || rc=$?
  image_pid=""
  printf '\n=== guest image (%s): %s\n' "$(date +%T)" "$(tail -n1 "$image_log")"
  [ "$rc" = 0 ] || { cat "$image_log" >&2; rm -f "$image_log"; exit "$rc"; }
  rm -f "$image_log"
}
# A Molecule stage's output is kept in a log; when it fails, the failing
# tasks are printed again at the very end, where a CI tail shows them.
molecule_logged() {
  local rc=0
  molecule test -s "$1" 2>&1 | tee "$molecule_log" || rc=$?
  if [ "$rc" != 0 ]; then
    printf '\n=== molecule %s failed (rc %s): the failing tasks\n' "$1" "$rc"
    # each failing task's header and its whole result (Molecule may prefix
    # Ansible's lines with a frame and colours); the last three failures
    sed 's/\x1b\[[0-9;]*m//g' "$molecule_log" | awk '
      /TASK \[/ { task = $0; grab = 0; next }
      /\.\.\.ignoring/ { if (grab) n--; grab = 0; next }
      /(fatal|failed): \[/ { n++; out[n] = task "\n" $0; grab = 1; next }
      /ERROR! / { n++; out[n] = $0; grab = 1; next }
      grab && /((ok|changed|skipping|included): \[|PLAY |RUNNING HANDLER)/ { grab = 0 }
      grab { out[n] = out[n] "\n" $0 }
      END { for (i = (n > 3 ? n - 2 : 1); i <= n; i++) print out[i] "\n" }' || true
  fi
  rm -f "$molecule_log"
  return "$rc"
}
# The Molecule scenarios provision through the built collection, installed
# from its tarball the way a user installs it: the only datagram.director on
# the collections path is the artifact (plus containers.podman for the driver).
# The artifact leaves out the lab and the drills; those alone are copied into
# the installed tree from the checkout (galaxy.yml build_ignore entries under
# roles/, playbooks/, plugins/), so every product file still comes from the
# tarball.
use_installed_collection() {
  [ -z "${ANSIBLE_COLLECTIONS_PATH:-}" ] || return 0
  local dest=$top/.cache/installed
  rm -rf "$dest"
  mkdir -p "$dest/ansible_collections"
  ansible-galaxy collection build --force --output-path "$dest" . >/dev/null
  ansible-galaxy collection install --force --no-deps -p "$dest" "$dest"/datagram-director-*.tar.gz >/dev/null
  ln -s "$top/.collections/ansible_collections/containers" "$dest/ansible_collections/containers"
  add_lab_material "$dest/ansible_collections/datagram/director"
  export ANSIBLE_COLLECTIONS_PATH=$dest
  echo "datagram.director for Molecule: $(ls "$dest"/datagram-director-*.tar.gz) installed in $dest, lab material from the checkout"
}
add_lab_material() {
  python - "$top" "$1" <<'PY'
import os, shutil, sys, yaml
top, installed = sys.argv[1:]
with open(os.path.join(top, "galaxy.yml")) as f:
    ignored = yaml.safe_load(f)["build_ignore"]
for entry in ignored:
    src = os.path.join(top, entry)
    if entry.split("/")[0] not in ("roles", "playbooks", "plugins") or not os.path.exists(src):
        continue
    dst = os.path.join(installed, entry)
    if os.path.isdir(src):
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)
PY
}
want_ipvs=0
for s in "${stages[@]}"; do [ "$s" = ipvs ] && want_ipvs=1; done

for stage in "${stages[@]}"; do
  case $stage in
    unit)
      step "pytest: unit and integration tests"
      # -rs prints every skip's reason; tests/conftest.py fails the run on a
      # skip whose reason is not in tests/skips-allowed.txt (DD_STRICT_SKIPS).
      # The tests run modules with `ansible localhost -c local`, whose
      # remote_tmp would be ~/.ansible/tmp: keep it in the checkout.
      DD_STRICT_SKIPS=1 ANSIBLE_REMOTE_TMP=$top/.ansible/tmp python -m pytest -p no:cacheprovider -rs
      ;;
    bench)
      step "benchmark: health checks of 64 real servers, one event loop vs one process per check"
      python tests/bench/bench_health.py --duration 10 --spawn-duration 4
      ;;
    dataplane)
      # quick mode of `make bench`: every path measured, nothing lost
      step "data-plane bench, quick: every path measured in the same seconds, nothing lost"
      python benchmarks/bench.py --quick
      ;;
    pristine)
      [ "$want_ipvs" = 0 ] || image_start
      step "pristine machine: the bootstrap's packages in a fresh Debian bookworm root"
      tools/pristine-check.sh
      ;;
    lint)
      [ "$want_ipvs" = 0 ] || image_start
      step "ansible-lint (production profile)"
      ansible-lint --profile production
      ;;
    sanity)
      # Tracked files only: what CI's fresh clone has.
      step "ansible-test sanity in ansible_collections/datagram/director"
      tmp=$(mktemp -d)
      dest=$tmp/ansible_collections/datagram/director
      mkdir -p "$dest"
      git ls-files -c -z | rsync -a --ignore-missing-args --from0 --files-from=- ./ "$dest/"
      # ansible-test fetches a pip bootstrap script from a host outside the
      # package registries: give it the offline stand-in in its cache.
      pipver=$(python - <<'PY'
import re, ansible_test, os
src = open(os.path.join(os.path.dirname(ansible_test.__file__), "_internal", "python_requirements.py")).read()
print(re.search(r"pip='([0-9.]+)'", src).group(1).replace(".", "_"))
PY
)
      mkdir -p "$tmp/home/.ansible/test/cache"
      cp tools/ansible-test-get-pip.py "$tmp/home/.ansible/test/cache/get_pip_$pipver.py"
      (cd "$dest" && git init -q && git add -A && git -c user.name=ci -c user.email=ci@invalid commit -qm sanity \
        && HOME=$tmp/home ansible-test sanity --color no --python "$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')" --venv --requirements)
      ;;
    molecule)
      image_wait
      step "molecule test (podman: lab topology, check, idempotence, verify, health, stuck, drift, drill suite)"
      use_installed_collection
      molecule_logged default
      ;;
    ipvs)
      image_wait
      step "molecule test -s ipvs (real IPVS with ops in two QEMU guests)"
      use_installed_collection
      molecule_logged ipvs
      ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done

# Nothing outside the checkout: Ansible, Molecule, podman and the guests keep
# their state under it (ANSIBLE_HOME, XDG_CACHE_HOME, host_vars/localhost.yml).
# CI (a fresh clone, nothing else running) fails on any file written in the
# home directory; elsewhere other programs may write there, so it only warns.
written=$(find "$HOME/.ansible" "$HOME/.cache" "$HOME/.config" -newer "$home_mark" 2>/dev/null | head -n 20 || true)
if [ -n "$written" ]; then
  printf '\n=== written outside the checkout, in %s:\n%s\n' "$HOME" "$written"
  [ -z "${CI:-}" ] || exit 1
fi
