#!/bin/sh
# Runs inside the guest as /mnt/host/run (cwd = the 9p share, which must
# hold udpgen.py and datagram-echo, the project's generator and echo): real
# `ipvsadm -L -n --stats --exact` readings before and after one-way streams,
# for the unit tests of the counters reader (spread.ipvs_service_packets).
#   client netns cli 198.51.100.100, 2001:db8:51::100 <-> d-cli (director,
#     VIPs 198.51.100.10 and 2001:db8:51::10)
#   rs1..rs3 203.0.113.21-23, 2001:db8:113::21-23 on bridge br-rs, each
#     running datagram-echo --name rsN 7000
# Services (NAT, ops), the "inventory" the tests take their expectations from:
#   198.51.100.10:7000 wrr  rs1 weight 2, rs2 1, rs3 1   <- 1200 datagrams
#   [2001:db8:51::10]:7000 rr  rs1, rs2                 <- 300 datagrams
#   198.51.100.10:7001 rr   rs3 (no traffic: the reader must not mix it in)
# Files: ipvsadm_stats_before_qemu.txt, ipvsadm_stats_after_qemu.txt (both
# --exact), ipvsadm_stats_rounded_qemu.txt (without --exact),
# udpgen_v4_qemu.json, udpgen_v6_qemu.json (the generator's results),
# ipvsadm_stats_version_qemu.txt.
set -eu
cd /mnt/host
modprobe ip_vs
modprobe ip_vs_rr
modprobe ip_vs_wrr
sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
ip netns add cli
ip link add d-cli type veth peer name cli0 netns cli
ip addr add 198.51.100.1/24 dev d-cli
ip addr add 198.51.100.10/24 dev d-cli
ip addr add 2001:db8:51::1/64 dev d-cli nodad
ip addr add 2001:db8:51::10/64 dev d-cli nodad
ip link set d-cli up
ip -n cli link set lo up
ip -n cli addr add 198.51.100.100/24 dev cli0
ip -n cli addr add 2001:db8:51::100/64 dev cli0 nodad
ip -n cli link set cli0 up
ip -n cli route add default via 198.51.100.1
ip -n cli -6 route add default via 2001:db8:51::1
ip link add br-rs type bridge
ip addr add 203.0.113.1/24 dev br-rs
ip addr add 2001:db8:113::1/64 dev br-rs nodad
ip link set br-rs up
for i in 1 2 3; do
  ip netns add rs$i
  ip link add d-rs$i type veth peer name eth0 netns rs$i
  ip link set d-rs$i master br-rs up
  ip -n rs$i link set lo up
  ip -n rs$i addr add 203.0.113.2$i/24 dev eth0
  ip -n rs$i addr add 2001:db8:113::2$i/64 dev eth0 nodad
  ip -n rs$i link set eth0 up
  ip -n rs$i route add default via 203.0.113.1
  ip -n rs$i -6 route add default via 2001:db8:113::1
  ip netns exec rs$i python3 ./datagram-echo --name rs$i 7000 > /tmp/echo-rs$i.log 2>&1 &
done
for i in 1 2 3; do
  n=0; while ! grep -q '^listening' /tmp/echo-rs$i.log && [ $n -lt 300 ]; do sleep 0.1; n=$((n + 1)); done
done
ipvsadm -A -u 198.51.100.10:7000 -s wrr --ops
ipvsadm -a -u 198.51.100.10:7000 -r 203.0.113.21:7000 -m -w 2
ipvsadm -a -u 198.51.100.10:7000 -r 203.0.113.22:7000 -m -w 1
ipvsadm -a -u 198.51.100.10:7000 -r 203.0.113.23:7000 -m -w 1
ipvsadm -A -u '[2001:db8:51::10]:7000' -s rr --ops
ipvsadm -a -u '[2001:db8:51::10]:7000' -r '[2001:db8:113::21]:7000' -m -w 1
ipvsadm -a -u '[2001:db8:51::10]:7000' -r '[2001:db8:113::22]:7000' -m -w 1
ipvsadm -A -u 198.51.100.10:7001 -s rr --ops
ipvsadm -a -u 198.51.100.10:7001 -r 203.0.113.23:7000 -m -w 1

# the estimator sums the per-CPU counters every 2 s: a reading is final
# once two readings 2.5 s apart agree
settled() {
  last=$(ipvsadm -L -n --stats --exact)
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    sleep 2.5
    now=$(ipvsadm -L -n --stats --exact)
    [ "$now" != "$last" ] || break
    last=$now
  done
  printf '%s\n' "$last"
}
settled > ipvsadm_stats_before_qemu.txt
ip netns exec cli python3 ./udpgen.py 198.51.100.10 7000 --count 1200 --rate 400 --no-reply \
  --source-port 40000 > udpgen_v4_qemu.json
ip netns exec cli python3 ./udpgen.py 2001:db8:51::10 7000 --count 300 --rate 300 --no-reply \
  --source-port 40001 > udpgen_v6_qemu.json
settled > ipvsadm_stats_after_qemu.txt
ipvsadm -L -n --stats > ipvsadm_stats_rounded_qemu.txt
{ ipvsadm --version; uname -r; } > ipvsadm_stats_version_qemu.txt 2>&1
for i in 1 2 3; do for p in $(ip netns pids rs$i); do kill "$p" 2>/dev/null || true; done; done
cat ipvsadm_stats_before_qemu.txt ipvsadm_stats_after_qemu.txt udpgen_v4_qemu.json
