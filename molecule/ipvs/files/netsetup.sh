# shellcheck shell=bash
# Guest-side network set-up of the ipvs scenario (run as: bash netsetup.sh ROLE).
# ROLE d1: director1.  ROLE d2: director2, plus the lab on the same segments:
# network namespaces "client" (front) and rs1..rs3 (back), attached to the
# bridges, real servers answering "<name> <payload>" (datagram-echo, the lab
# echo) with their default route via the backend gateway VIP.
# Both: bridges "front" and "back" (the director interfaces of the
# inventory) with the QEMU link NICs (found by MAC) as ports.
# Addresses: front 198.51.100.0/24, back 203.0.113.0/24 (see inventory).
set -euo pipefail
role="$1"
echo "ddipvs-$role" > /etc/hostname
hostname "ddipvs-$role"
nic_by_mac() {
  local f
  for f in /sys/class/net/*/address; do
    if [ "$(cat "$f")" = "$1" ]; then basename "$(dirname "$f")"; return 0; fi
  done
  echo "netsetup: no NIC with MAC $1" >&2; return 1
}
n=${role#d}
declare -A addr=([front1]=198.51.100.11 [front2]=198.51.100.12 [back1]=203.0.113.11 [back2]=203.0.113.12)
for br in front back; do
  case $br in front) i=1 ;; back) i=2 ;; esac
  nic="$(nic_by_mac "52:54:00:dd:0$n:0$i")"
  ip link show "$br" >/dev/null 2>&1 || ip link add "$br" type bridge forward_delay 0 stp_state 0
  ip link set "$br" address "52:54:00:dd:0$n:1$i"
  ip link set "$nic" master "$br" up
  ip addr replace "${addr[$br$n]}/24" dev "$br"
  ip link set "$br" up
done
[ "$role" = d2 ] || exit 0

ns_add() {  # ns_add NS BRIDGE ADDRESS MAC
  local ns="$1" br="$2" a="$3" mac="$4"
  ip netns add "$ns" 2>/dev/null || true
  ip link show "v-$ns" >/dev/null 2>&1 || ip link add "v-$ns" type veth peer name eth0 netns "$ns"
  ip link set "v-$ns" master "$br" up
  ip -n "$ns" link set eth0 address "$mac"
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 up
  ip -n "$ns" addr replace "$a/24" dev eth0
}
ns_add client front 198.51.100.100 52:54:00:dd:aa:64
# The client's Python for Ansible (ansible_python_interpreter of ipvs-client).
printf '#!/bin/sh\nexec /usr/sbin/ip netns exec client /usr/bin/python3 "$@"\n' > /opt/ddipvs/python-client
chmod 0755 /opt/ddipvs/python-client
# Room for 4 MB socket buffers (the generator asks for them, the echoes get
# them below): under TCG a process of this guest can be off its CPU for a
# second or more, and the default 208 KB would then overflow.
sysctl -qw net.core.rmem_max=8388608
for i in 1 2 3; do
  ns_add "rs$i" back "203.0.113.2$i" "52:54:00:dd:bb:2$i"
  ip -n "rs$i" route replace default via 203.0.113.10
  if ! ip netns exec "rs$i" ss -Hlun 'sport = :7000' | grep -q .; then
    ip netns exec "rs$i" setsid python3 /opt/ddipvs/datagram-echo --name "rs$i" --rcvbuf 4194304 7000 \
      > "/var/log/ddipvs-echo-rs$i.log" 2>&1 < /dev/null &
  fi
done
for i in 1 2 3; do
  for _ in $(seq 50); do
    ip netns exec "rs$i" ss -Hlun 'sport = :7000' | grep -q . && break
    sleep 0.1
  done
done
echo "netsetup: d2 lab ready"
