# shellcheck shell=bash
# Sourced by startup.sh and reload.sh (guest side, director1): an nftables
# counter of the datagrams that reach this director for VIP:port, in a table
# of its own (prerouting, priority -450: before notrack, conntrack and IPVS),
# so a test can start its action only once the client's stream is arriving,
# and time its events by the stream itself: the counter is the sequence
# number of the next datagram of udpgen.py's stream (reset before it starts;
# the front link is a QEMU stream netdev, which loses nothing), independent of
# how fast either guest runs under TCG. The table also keeps the stream's
# sources, so probe_stop_stream can tell the client when the test is done.
probe_table=ddipvs_probe

probe_reset() {  # probe_reset VIP PORT
  nft delete table inet "$probe_table" 2>/dev/null || true
  nft -f - <<NFT
table inet $probe_table {
  counter stream {
  }
  set sources {
    type ipv4_addr . inet_service; flags dynamic; size 64;
  }
  chain pre {
    type filter hook prerouting priority -450; policy accept;
    ip daddr $1 udp dport $2 counter name "stream" add @sources { ip saddr . udp sport }
  }
}
NFT
}

probe_packets() {
  nft list counter inet "$probe_table" stream | awk '$1 == "packets" { print $2; exit }'
}

probe_drop() {
  nft delete table inet "$probe_table" 2>/dev/null || true
}

# Wait until at least MIN datagrams have arrived. LIMIT seconds only bound
# the wait (the event is the count): exceeding it is an error.
wait_stream() {  # wait_stream MIN LIMIT
  local _
  for _ in $(seq $(($2 * 20))); do
    [ "$(probe_packets)" -ge "$1" ] && return 0
    sleep 0.05
  done
  echo "the counter did not reach $1 in $2 s (it is at $(probe_packets))" >&2
  return 1
}

# Tell udpgen.py the test is done: its stop payload to every source of the
# stream, three times (a datagram, not a promise; the generator's count and time
# bounds remain). Sent from this director's own address, not the VIP.
probe_stop_stream() {
  local src i
  for i in 1 2 3; do
    while read -r src; do
      printf 'ddipvs-stop' > "/dev/udp/${src% . *}/${src#* . }" 2>/dev/null || true
    done < <(nft list set inet "$probe_table" sources | grep -oE '[0-9]+(\.[0-9]+){3} \. [0-9]+')
    [ "$i" = 3 ] || sleep 0.1
  done
}

# Dotted quad -> the 8 hex digits of /proc/net/ip_vs_conn.
hexip() {
  local a b c d
  IFS=. read -r a b c d <<< "$1"
  printf '%02X%02X%02X%02X' "$a" "$b" "$c" "$d"
}

# Seconds since the epoch value $1, two decimals.
since() {
  awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'
}
