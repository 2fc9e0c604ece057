# shellcheck shell=bash
# Sourced by startup.sh and reload.sh (guest side, director1): an nftables
# counter of the datagrams that reach this director for VIP:port, in a table
# of its own (prerouting, priority -450: before notrack, conntrack and IPVS),
# so a test can start its action only once the client's stream is arriving.
probe_table=ddipvs_probe

probe_reset() {  # probe_reset VIP PORT
  nft delete table inet "$probe_table" 2>/dev/null || true
  nft -f - <<NFT
table inet $probe_table {
  counter stream {
  }
  chain pre {
    type filter hook prerouting priority -450; policy accept;
    ip daddr $1 udp dport $2 counter name "stream"
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

# Wait (at most LIMIT seconds) until at least MIN datagrams have arrived.
wait_stream() {  # wait_stream MIN LIMIT
  local _
  for _ in $(seq $(($2 * 20))); do
    [ "$(probe_packets)" -ge "$1" ] && return 0
    sleep 0.05
  done
  echo "no stream seen in $2 s (counter $(probe_packets))" >&2
  return 1
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
