#!/usr/bin/env bash
# Health drill on the ipvs data plane, verify (f). Runs as root in director2's
# guest, where the real servers are namespaces: a stream from ONE client port
# through the VIP; rs2's echo service (the process netsetup.sh started) is
# stopped, later started again. Only the health program on the master
# (ipvsadm -e -w 0 / back) can take rs2 out of the schedule, so the datagrams
# lost after the stop show its detection time.
#   bash healthdrill.sh RATE BEFORE OUT AFTER
# Each step waits for datagrams, not for the clock (under TCG either guest may
# run seconds late): nft counters on the guest's "back" bridge count, per
# real server, the client's datagrams forwarded to it by the director (rs2's
# also while its echo is down); one nft call reads all three (a process
# start costs tens of ms under TCG, and the poll must not slow the guest). rs2 is stopped once BEFORE datagrams
# have been forwarded; it is out once OUT_RUN more went to rs1 and rs3 and
# none to rs2 (at most OUT_LIMIT s: when the health program never acts, the
# drill goes on and the checks see the loss); it is started again OUT
# datagrams later; the stream ends AFTER datagrams after rs2 got one again
# (SIGTERM to udpgen.py, the generator; RATE x 60 s only bound it).
# Prints one JSON object: stop, restart and listen times (epoch s: the echo
# was started at restart and bound its port at listen), the forwarded
# count at each step ("*_seq", the client's sequence number: one port, one
# director, nothing lost before the real servers) and the generator's result.
set -euo pipefail
rate=$1 before=$2 out_window=$3 after=$4
OUT_RUN=30 OUT_LIMIT=30 BACK_LIMIT=60
client=198.51.100.100 table=ddipvs_drill
out=$(mktemp /run/ddipvs-drill.XXXXXX)
# as netsetup.sh starts it (the same arguments: pgrep below finds it by them)
echo_cmd=(ip netns exec rs2 setsid python3 /opt/ddipvs/datagram-echo --name rs2 --rcvbuf 4194304 7000)
echo_log=/var/log/ddipvs-echo-rs2.log

counters_add() {
  nft -f - <<NFT
table bridge $table {
  counter rs1 {
  }
  counter rs2 {
  }
  counter rs3 {
  }
  map rs {
    type ipv4_addr : counter
    elements = { 203.0.113.21 : "rs1", 203.0.113.22 : "rs2", 203.0.113.23 : "rs3" }
  }
  chain forward {
    type filter hook forward priority -450; policy accept;
    ip saddr $client udp dport 7000 counter name ip daddr map @rs
  }
  chain output {
    type filter hook output priority -450; policy accept;
    ip saddr $client udp dport 7000 counter name ip daddr map @rs
  }
}
NFT
}
counters_del() { nft delete table bridge "$table" 2>/dev/null || true; }
# counts: "RS1 RS2 RS3", the datagrams forwarded to each
counts() {
  nft list counters table bridge "$table" |
    awk '$1 == "counter" { n = $2 } $1 == "packets" { c[n] = $2 } END { print c["rs1"] + 0, c["rs2"] + 0, c["rs3"] + 0 }'
}
rx() {  # rx rs2
  local a b c
  read -r a b c < <(counts)
  case $1 in rs1) echo "$a" ;; rs2) echo "$b" ;; rs3) echo "$c" ;; esac
}
total() {
  local a b c
  read -r a b c < <(counts)
  echo $((a + b + c))
}

# until_total N LIMIT: wait until N datagrams were forwarded (at most LIMIT s)
until_total() {
  local _
  for _ in $(seq $(($2 * 10))); do
    [ "$(total)" -ge "$1" ] && return 0
    sleep 0.1
  done
  echo "healthdrill: $1 datagrams not forwarded in $2 s ($(total))" >&2
  return 1
}

# until_rs2_out: rs2's counter still while OUT_RUN datagrams went elsewhere
until_rs2_out() {
  local end=$((SECONDS + OUT_LIMIT)) a b c last=-1 from=0
  while [ "$SECONDS" -lt "$end" ]; do
    read -r a b c < <(counts)
    if [ "$b" != "$last" ]; then last=$b from=$((a + b + c))
    elif [ $((a + b + c - from)) -ge "$OUT_RUN" ]; then return 0; fi
    sleep 0.1
  done
  return 1
}

# listened: the epoch at which rs2's restarted echo bound its port (its own
# "listening EPOCH" line; at most 60 s), else null
listened() {
  local _ t
  for _ in $(seq 600); do
    t=$(awk '$1 == "listening" { print $2; exit }' "$echo_log")
    [ -n "$t" ] && { echo "$t"; return 0; }
    sleep 0.1
  done
  echo null
}

# until_rs2_back FROM: rs2's counter above FROM (at most BACK_LIMIT s)
until_rs2_back() {
  local _
  for _ in $(seq $((BACK_LIMIT * 10))); do
    [ "$(rx rs2)" -gt "$1" ] && return 0
    sleep 0.1
  done
  return 1
}

counters_del
counters_add
lg=
trap 'rm -f "$out"; counters_del; [ -z "$lg" ] || kill -TERM "$lg" 2>/dev/null || true' EXIT
ip netns exec client python3 /opt/ddipvs/udpgen.py 198.51.100.10 7000 --source-port 44000 --rate "$rate" \
  --count $((rate * 60)) --trace > "$out" &
lg=$!

pid=$(pgrep -f '^python3 /opt/ddipvs/datagram-echo --name rs2 --rcvbuf 4194304 7000$' | head -1)
[ -n "$pid" ] || { echo "healthdrill: rs2's echo is not running" >&2; exit 1; }
until_total "$before" 60
# the time is taken before the kill: a fork for `date` after it may come late
stop_epoch=$EPOCHREALTIME
kill "$pid"
stop_seq=$(total)

out_seq=null
if until_rs2_out; then out_seq=$(total); fi
until_total "$(($(total) + out_window))" 60
restart_seq=$(total) rs2_at_restart=$(rx rs2)
restart_epoch=$EPOCHREALTIME
: > "$echo_log"   # emptied first: listened must not read the last start's line
"${echo_cmd[@]}" >> "$echo_log" 2>&1 < /dev/null &
listen_epoch=$(listened)

back_seq=null
if until_rs2_back "$rs2_at_restart"; then
  back_seq=$(total)
  until_total "$((back_seq + after))" 60
fi
# the generator may have ended at its own bound already (a slow run): not an error here
kill -TERM "$lg" 2>/dev/null || true
wait "$lg" || true
lg=
printf '{"stop_epoch": %s, "restart_epoch": %s, "listen_epoch": %s, "stop_seq": %s, "out_seq": %s, "restart_seq": %s, "back_seq": %s, "windows": [%s, %s, %s], "stream": %s}\n' \
  "$stop_epoch" "$restart_epoch" "$listen_epoch" "$stop_seq" "$out_seq" "$restart_seq" "$back_seq" "$before" "$out_window" "$after" "$(cat "$out")"
