#!/usr/bin/env bash
# The two QEMU guests of the ipvs Molecule scenario (one per director).
#
#   guests.sh up STATE_DIR     boot both guests (in parallel), wait for ssh
#   guests.sh down STATE_DIR   stop both guests by their PID files
#
# Topology: each guest has eth0 = user-mode net (restrict=on, only
# hostfwd 127.0.0.1:SSH -> :22), eth1 = "front" link, eth2 = "back" link.
# A link is a QEMU stream netdev over a unix socket in STATE_DIR (d1 listens,
# d2 connects): a private L2 segment between the two guests, nothing else on
# it. A stream, not UDP sockets on 127.0.0.1: when a guest stalls under TCG
# the other's frames wait in the socket (back-pressure) instead of being
# dropped by the host's UDP receive buffer (measured: 10155 host
# RcvbufErrors over earlier runs, bursts of 90 lost datagrams in a drill).
# STATE_DIR receives per guest a directory (d1, d2) with boot.sh's state,
# plus id_ed25519 (a copy of the image key), known_hosts, ports and
# timings.  Each QEMU has a watchdog (boot.sh --timeout) that kills it by
# PID whatever happens to this script or to Molecule.
# Env: DD_IPVS_PORT_BASE (22460): ssh ports BASE+1, BASE+2.
#      DD_IPVS_GUEST_TIMEOUT (2400 s): the watchdog.
#      DD_IPVS_GUEST_MEM (1024 MB per guest), DD_IPVS_GUEST_SMP (2 vCPUs per
#      guest; >1 makes boot.sh use multi-threaded TCG).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
boot="$here/guest/boot.sh"
cmd="${1:-}" state="${2:-}"
if [ -z "$cmd" ] || [ -z "$state" ]; then sed -n "2,20p" "$0" >&2; exit 2; fi
base="${DD_IPVS_PORT_BASE:-22460}"
wd="${DD_IPVS_GUEST_TIMEOUT:-2400}"
mem="${DD_IPVS_GUEST_MEM:-1024}"
smp="${DD_IPVS_GUEST_SMP:-2}"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

down() {
  local g
  for g in d1 d2; do
    [ -f "$state/$g/qemu.pid" ] && "$boot" --stop "$state/$g/qemu.pid"
  done
  return 0
}

case "$cmd" in
  down) down; exit 0 ;;
  up) ;;
  *) echo "guests.sh: unknown command $cmd" >&2; exit 2 ;;
esac

mkdir -p "$state"
state="$(cd "$state" && pwd)"
down   # a previous run's guests, if any (only ours: boot.sh checks -name)
t0=$(now)
image="$("$here/guest/build-image.sh" | tail -n1)"
echo "image_s=$(since "$t0")" > "$state/timings"
echo "image_dir=$image" >> "$state/timings"

link() {  # link ID NIC_MAC on|off (server: listens on STATE_DIR/ID.sock)
  printf -- '--qemu-arg\n-netdev\n--qemu-arg\nstream,id=%s,server=%s,addr.type=unix,addr.path=%s\n--qemu-arg\n-device\n--qemu-arg\nvirtio-net-pci,netdev=%s,mac=%s\n' \
    "$1" "$3" "$state/$1.sock" "$1" "$2"
}
start() {  # start NAME SSH_PORT ARGS...
  local g="$1" port="$2"; shift 2
  mkdir -p "$state/$g"
  "$boot" --image-dir "$image" --ssh "$port" --state-dir "$state/$g" --mem "$mem" --smp "$smp" \
    --timeout "$wd" --ready-timeout 300 "$@" > "$state/$g/env" 2> "$state/$g/boot.log"
}
mapfile -t a1 < <(link front 52:54:00:dd:01:01 on; link back 52:54:00:dd:01:02 on)
mapfile -t a2 < <(link front 52:54:00:dd:02:01 off; link back 52:54:00:dd:02:02 off)
rm -f "$state/front.sock" "$state/back.sock"
t1=$(now)
start d1 $((base + 1)) "${a1[@]}" & p1=$!
# d2 connects at start (QEMU 7.2 has no reconnect): once d1's QEMU listens
for _ in $(seq 300); do
  [ -S "$state/front.sock" ] && [ -S "$state/back.sock" ] && break
  kill -0 "$p1" 2>/dev/null || break
  sleep 0.1
done
start d2 $((base + 2)) "${a2[@]}" & p2=$!
rc=0
wait "$p1" || rc=$?
wait "$p2" || rc=$?
echo "boot_s=$(since "$t1")" >> "$state/timings"
cat "$state/d1/boot.log" "$state/d2/boot.log" >&2
if [ "$rc" != 0 ]; then
  echo "guests.sh: a guest did not come up (rc=$rc); stopping both" >&2
  down; exit 1
fi
install -m 0600 "$image/id_ed25519" "$state/id_ed25519"
cat "$state/d1/known_hosts" "$state/d2/known_hosts" > "$state/known_hosts"
printf 'd1=%s\nd2=%s\n' $((base + 1)) $((base + 2)) > "$state/ports"
# Guest-side tools and network set-up over ONE ssh connection per guest (no
# Python, no Ansible module: under TCG each module run costs 5-15 s). The
# traffic generator and the echo are the project's own (udpgen.py of the
# module udp_spread, the lab echo of roles/lab_realserver).
t2=$(now)
top="$(cd "$here/../.." && pwd)"
setup() {  # setup NAME
  tar -cf - -C "$here/files" netsetup.sh probe.sh reload.sh startup.sh healthdrill.sh job.sh \
      -C "$top/plugins/module_utils" udpgen.py -C "$top/roles/lab_realserver/files" datagram-echo |
    ssh -F "$state/$1/ssh_config" ddguest \
      "mkdir -p /opt/ddipvs && tar -C /opt/ddipvs --no-same-owner -xf - && bash /opt/ddipvs/netsetup.sh $1" \
      > "$state/$1/setup.log" 2>&1
}
setup d1 & p1=$!
setup d2 & p2=$!
wait "$p1" || rc=$?
wait "$p2" || rc=$?
echo "setup_s=$(since "$t2")" >> "$state/timings"
if [ "$rc" != 0 ]; then
  cat "$state/d1/setup.log" "$state/d2/setup.log" >&2
  echo "guests.sh: guest set-up failed (rc=$rc); stopping both" >&2
  down; exit 1
fi
cat "$state/timings"
