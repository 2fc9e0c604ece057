#!/bin/sh
# shellcheck disable=SC2015,SC2016,SC2086  # `check && ok || bad`: ok only prints; awk programs; fixed words
# Runs inside the guest as /mnt/host/run (cwd = the 9p share, which holds
# udpgen.py and datagram-echo: the project's generator and echo).
# Director = guest root netns; client netns "cli"; real servers rs1..rs3.
#   cli0 198.51.100.2/24  <->  d-cli 198.51.100.1/24 (VIP, on the veth)
#   rsN eth0 203.0.113.1N/24 <-> bridge br-rs 203.0.113.1/24 in the director
# Scenarios (one VIP port each, RS port 5353, one client port each):
#   A ipvsadm --ops rr NAT     B ipvsadm rr NAT without ops (contrast)
#   C A + stateless nft postrouting "ip saddr set VIP" on RS replies
#   D keepalived virtual_server { lvs_sched rr; lvs_method NAT; protocol UDP; ops }
set -u
cd /mnt/host || exit 2
PY=/usr/bin/python3
VIP=198.51.100.1
N=300
fail=0
ok()  { echo "CHECK OK   $*"; }
bad() { echo "CHECK FAIL $*"; fail=1; }
section() { echo; echo "===== $* ====="; }
t0=$(cut -d' ' -f1 /proc/uptime)

section "versions"
uname -r; ipvsadm --version 2>&1 | head -n1; keepalived --version 2>&1 | head -n1
modprobe ip_vs && modprobe ip_vs_rr && ok "modprobe ip_vs" || bad "modprobe ip_vs"
head -n1 /proc/net/ip_vs 2>/dev/null

section "topology"
sysctl -qw net.ipv4.ip_forward=1
ip netns add cli
ip link add d-cli type veth peer name cli0 netns cli
ip addr add $VIP/24 dev d-cli; ip link set d-cli up
ip -n cli addr add 198.51.100.2/24 dev cli0
ip -n cli link set lo up; ip -n cli link set cli0 up
ip -n cli route add default via $VIP
ethtool -K d-cli tx off >/dev/null; ip netns exec cli ethtool -K cli0 tx off >/dev/null
ip link add br-rs type bridge; ip addr add 203.0.113.1/24 dev br-rs; ip link set br-rs up
for i in 1 2 3; do
  ip netns add rs$i
  ip link add d-rs$i type veth peer name eth0 netns rs$i
  ip link set d-rs$i master br-rs up
  ethtool -K d-rs$i tx off >/dev/null
  ip -n rs$i addr add 203.0.113.1$i/24 dev eth0
  ip -n rs$i link set lo up; ip -n rs$i link set eth0 up
  ip netns exec rs$i ethtool -K eth0 tx off >/dev/null
  ip -n rs$i route add default via 203.0.113.1
  ip netns exec rs$i $PY ./datagram-echo --name rs$i 5353 > /tmp/rs$i.log 2>&1 &
done
for i in 1 2 3; do
  n=0; while ! grep -q '^listening' /tmp/rs$i.log 2>/dev/null && [ $n -lt 300 ]; do sleep 0.1; n=$((n+1)); done
done
ip -br addr; ip netns exec cli busybox ping -c1 -W2 203.0.113.11 >/dev/null 2>&1 && ok "routing cli -> rs1" || bad "routing cli -> rs1"

rs_counts() {  # rs_counts TAG -> "rs1=.. rs2=.. rs3=.. " replies per real server, from any source
  $PY -c 'import json, sys
d = json.load(open(sys.argv[1]))
c = dict(d["stray_per_server"])
for k, v in d["per_server"].items():
    c[k] = c.get(k, 0) + v
print("".join("rs%d=%d " % (i, c.get("rs%d" % i, 0)) for i in (1, 2, 3)), end="")' "result-$1.json"
}
from_vip() {  # from_vip TAG -> replies whose source was VIP:port (the connected socket's)
  $PY -c 'import json, sys; print(json.load(open(sys.argv[1]))["received"])' "result-$1.json"
}
conn_udp() {  # UDP rows in /proc/net/ip_vs_conn for VIP port $1 (ipvsadm -Lnc: $5 = virtual)
  ipvsadm -Lnc | awk -v v="$VIP:$1" '$1 == "UDP" && $5 == v { n++ } END { print n + 0 }'
}
run_client() {  # TAG PORT SPORT: N datagrams from one port, a connected socket + a catch-all
  ip netns exec cli $PY ./udpgen.py $VIP "$2" --count $N --source-port "$3" | tee "result-$1.json"
}
add_rs() { for i in 1 2 3; do ipvsadm -a -u $VIP:$1 -r 203.0.113.1$i:5353 -m -w 1; done; }

section "A: ipvsadm -A -u $VIP:5353 -s rr --ops (NAT, 3 RS)"
ipvsadm -A -u $VIP:5353 -s rr --ops && add_rs 5353
ipvsadm -Ln
run_client A 5353 40001
c=$(rs_counts A); echo "A per-real-server: $c"
[ "$c" = "rs1=100 rs2=100 rs3=100 " ] && ok "A spread 100/100/100" || bad "A spread: $c"
echo "A ipvsadm -Lnc:"; ipvsadm -Lnc
n=$(conn_udp 5353); echo "A UDP entries for :5353 in /proc/net/ip_vs_conn: $n"
[ "$n" = 0 ] && ok "A no UDP entries in ip_vs_conn" || bad "A $n UDP entries"
echo "A /proc/net/ip_vs_conn:"; cat /proc/net/ip_vs_conn

section "B: same without --ops (contrast)"
ipvsadm -A -u $VIP:5354 -s rr && add_rs 5354
run_client B 5354 40002
c=$(rs_counts B); echo "B per-real-server: $c"
echo "B ipvsadm -Lnc:"; ipvsadm -Lnc
n=$(conn_udp 5354); echo "B UDP entries for :5354: $n"
[ "$n" -ge 1 ] && ok "B non-OPS creates an entry" || bad "B no entry"

section "C: --ops + nft postrouting 'ip saddr set $VIP' for RS replies"
ipvsadm -A -u $VIP:5355 -s rr --ops && add_rs 5355
nft -f - <<NFT
table ip ddsmoke {
  chain raw_pre {
    type filter hook prerouting priority raw; policy accept;
    ip saddr 203.0.113.0/24 udp sport 5353 ip daddr 198.51.100.2 notrack
  }
  chain post {
    type filter hook postrouting priority srcnat; policy accept;
    oifname "d-cli" ip saddr 203.0.113.0/24 udp sport 5353 udp dport 40003 ip saddr set $VIP udp sport set 5355
  }
}
NFT
run_client C 5355 40003
c=$(rs_counts C); echo "C per-real-server: $c"
nft delete table ip ddsmoke
[ "$(from_vip C)" = "$N" ] && [ "$c" = "rs1=100 rs2=100 rs3=100 " ] \
  && ok "C connected socket got every reply from the VIP" || bad "C connected socket: $(from_vip C) from the VIP"
ip netns exec cli awk '/^Udp:/ { if (h) { print "C client Udp: InDatagrams=" $3 " InErrors=" $4 " InCsumErrors=" $NF } else { h=1 } }' /proc/net/snmp

section "D: keepalived virtual_server with ops"
cat > /tmp/keepalived.conf <<KA
global_defs {
  router_id dd-smoke
}
virtual_server $VIP 5356 {
  delay_loop 5
  lvs_sched rr
  lvs_method NAT
  protocol UDP
  ops
  real_server 203.0.113.11 5353 {
    weight 1
  }
  real_server 203.0.113.12 5353 {
    weight 1
  }
  real_server 203.0.113.13 5353 {
    weight 1
  }
}
KA
cat /tmp/keepalived.conf
keepalived -t -f /tmp/keepalived.conf; echo "keepalived -t rc=$?"
keepalived --dont-fork --log-console --check -f /tmp/keepalived.conf -p /run/ka.pid -c /run/ka-check.pid > /tmp/keepalived.log 2>&1 &
kapid=$!
n=0; while ! ipvsadm -Ln -u $VIP:5356 2>/dev/null | grep -q 203.0.113.13 && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
echo "D ipvsadm -Ln (after $n x 0.1 s):"; ipvsadm -Ln
ipvsadm -Ln -u $VIP:5356 | grep -q ' ops' && ok "D keepalived service has ops" || bad "D no ops flag"
run_client D 5356 40004
c=$(rs_counts D); echo "D per-real-server: $c"
[ "$c" = "rs1=100 rs2=100 rs3=100 " ] && ok "D spread 100/100/100" || bad "D spread: $c"
n=$(conn_udp 5356); echo "D UDP entries for :5356: $n"
[ "$n" = 0 ] && ok "D no UDP entries in ip_vs_conn" || bad "D $n UDP entries"
kill $kapid; wait $kapid 2>/dev/null
echo "D keepalived log:"; cat /tmp/keepalived.log
echo "D after keepalived stopped, ipvsadm -Ln:"; ipvsadm -Ln

section "stats"
sleep 2; ipvsadm -Ln --stats
cp /tmp/rs*.log . 2>/dev/null
for i in 1 2 3; do for p in $(ip netns pids rs$i); do kill "$p" 2>/dev/null; done; done
echo
echo "guest test time: $(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { print b - a }') s (guest uptime $(cut -d' ' -f1 /proc/uptime) s)"
[ "$fail" = 0 ] && echo "SMOKE RESULT: PASS" || echo "SMOKE RESULT: FAIL"
exit $fail
