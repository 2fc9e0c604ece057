#!/bin/sh
# Runs inside the guest as /mnt/host/run (cwd = the 9p share, which must
# hold udpgen.py and datagram-echo, the project's generator and echo): real IPv6
# rows of /proc/net/ip_vs_conn and ip_vs_conn_sync for the unit tests'
# fixtures. A service WITHOUT ops (so that entries are hashed), NAT to two
# real servers in namespaces, three client ports sending three datagrams
# each; the tables are copied to the share while the entries live.
#   client netns cli 2001:db8:51::100 <-> d-cli 2001:db8:51::1, VIP 2001:db8:51::10
#   rs1/rs2 2001:db8:113::21/22 on bridge br-rs 2001:db8:113::1
set -eu
cd /mnt/host
modprobe ip_vs
modprobe ip_vs_rr
sysctl -qw net.ipv6.conf.all.forwarding=1
ip netns add cli
ip link add d-cli type veth peer name cli0 netns cli
ip addr add 2001:db8:51::1/64 dev d-cli nodad
ip addr add 2001:db8:51::10/64 dev d-cli nodad
ip link set d-cli up
ip -n cli link set lo up
ip -n cli addr add 2001:db8:51::100/64 dev cli0 nodad
ip -n cli link set cli0 up
ip -n cli -6 route add default via 2001:db8:51::1
ip link add br-rs type bridge
ip addr add 2001:db8:113::1/64 dev br-rs nodad
ip link set br-rs up
for i in 1 2; do
  ip netns add rs$i
  ip link add d-rs$i type veth peer name eth0 netns rs$i
  ip link set d-rs$i master br-rs up
  ip -n rs$i link set lo up
  ip -n rs$i addr add 2001:db8:113::2$i/64 dev eth0 nodad
  ip -n rs$i link set eth0 up
  ip -n rs$i -6 route add default via 2001:db8:113::1
  ip netns exec rs$i python3 ./datagram-echo --name rs$i 7000 > /tmp/echo-rs$i.log 2>&1 &
done
for i in 1 2; do
  n=0; while ! grep -q '^listening' /tmp/echo-rs$i.log && [ $n -lt 300 ]; do sleep 0.1; n=$((n + 1)); done
done
ipvsadm -A -u '[2001:db8:51::10]:7000' -s rr
ipvsadm -a -u '[2001:db8:51::10]:7000' -r '[2001:db8:113::21]:7000' -m -w 1
ipvsadm -a -u '[2001:db8:51::10]:7000' -r '[2001:db8:113::22]:7000' -m -w 1
# 9 datagrams, one at a time, round robin over the client ports 40000-40002
ip netns exec cli python3 ./udpgen.py 2001:db8:51::10 7000 --count 9 --window 1 --timeout 2 \
  --source-port 40000 --ports 3 > udpgen_ipv6.json
python3 -c 'import json; d = json.load(open("udpgen_ipv6.json")); print("answered", d["received"], "of", d["sent"])'
cat /proc/net/ip_vs_conn > ip_vs_conn_ipv6_qemu.txt
cat /proc/net/ip_vs_conn_sync > ip_vs_conn_sync_ipv6_qemu.txt
ipvsadm -Sn > ipvsadm_save_ipv6_qemu.txt
uname -r
cat ip_vs_conn_ipv6_qemu.txt
