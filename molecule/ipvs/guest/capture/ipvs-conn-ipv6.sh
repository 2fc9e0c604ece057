#!/bin/sh
# Runs inside the guest as /mnt/host/run (cwd = the 9p share): real IPv6
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
  ip netns exec rs$i python3 -c '
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", 7000))
while True:
    d, a = s.recvfrom(2048)
    s.sendto(d, a)
' &
done
sleep 1
ipvsadm -A -u '[2001:db8:51::10]:7000' -s rr
ipvsadm -a -u '[2001:db8:51::10]:7000' -r '[2001:db8:113::21]:7000' -m -w 1
ipvsadm -a -u '[2001:db8:51::10]:7000' -r '[2001:db8:113::22]:7000' -m -w 1
ip netns exec cli python3 -c '
import socket
answered = 0
for port in (40000, 40001, 40002):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind(("::", port))
    s.settimeout(2)
    for _ in range(3):
        s.sendto(b"capture", ("2001:db8:51::10", 7000))
        try:
            s.recvfrom(2048)
            answered += 1
        except OSError:
            pass
print("answered", answered, "of 9")
'
cat /proc/net/ip_vs_conn > ip_vs_conn_ipv6_qemu.txt
cat /proc/net/ip_vs_conn_sync > ip_vs_conn_sync_ipv6_qemu.txt
ipvsadm -Sn > ipvsadm_save_ipv6_qemu.txt
uname -r
cat ip_vs_conn_ipv6_qemu.txt
