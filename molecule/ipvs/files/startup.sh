# shellcheck shell=bash source-path=SCRIPTDIR
# keepalived's IPVS side starting from nothing while datagrams already arrive
# (run on the master director: bash startup.sh MODE SECONDS OUTDIR).
# Every window is a number of datagrams of the stream seen at this director
# (probe.sh's counter), not seconds of the clock: under TCG a guest may run
# seconds late, and a window measured in seconds may then hold no traffic.
#   MODE ours    the role's configuration (/etc/keepalived/keepalived.conf,
#                virtual_server with `ops`)
#   MODE legacy  the same virtual servers WITHOUT `ops`, plus the old
#                quorum_up "ipvsadm -E -u VIP:PORT -s SCHED --ops" workaround;
#                then, on the stuck entries it leaves: (1) a 2 s UDP timeout
#                (ipvsadm --set) for 5 s and SHORT_TIMEOUT_DATAGRAMS under
#                traffic, whichever ends later, the negative control;
#                (2) it writes OUTDIR/flush_ready, the caller runs
#                playbooks/flush_stuck.yml (real-server remove and re-add with
#                net.ipv4.vs.expire_nodest_conn=1), and this script times how
#                long the entries take to go and checks that they stay gone
#                for AFTER_FLUSH datagrams of the stream.
# The caller has stopped keepalived on both directors and starts the client's
# stream; keepalived is started only once the stream is seen arriving (nft
# counter, probe.sh), so the stream provably overlaps the start. The VIPs are
# held statically (keepalived runs with --check: its IPVS process only).
# /proc/net/ip_vs_conn is sampled every 20 ms from when the stream was seen
# (t0; all times are seconds after t0) until, ours: AFTER_CAPTURE datagrams
# after the capture; legacy: AFTER_FLUSH datagrams after the flush. SECONDS
# only bounds the poll. OUTDIR gets poll.json, ip_vs_conn_stuck.txt
# (+ ip_vs_conn_sync_stuck.txt) taken AFTER_OPS datagrams after `ops` is set,
# ip_vs_conn.txt at the end, ipvsadm*.txt, keepalived.log, events; the last
# line of stdout is a JSON summary (*_seq: the counter at an event). At the
# end (or on an error) the client is told to stop its stream
# (probe_stop_stream). Everything started here is stopped here, by PID;
# keepalived is bounded by `timeout`.
set -euo pipefail
mode="$1" seconds="$2" out="$3"
vip=198.51.100.10 port=7000 gw=203.0.113.10
frag=/etc/keepalived/conf.d/virtual_servers.conf
# Windows in datagrams (the (c) stream runs at 1000/s, the (d) stream at 500/s
# from 5 ports: 200 and 100 per port per 1000 datagrams).
AFTER_OPS=1000                 # `ops` set -> capture (an entry needs one datagram)
AFTER_CAPTURE=2000             # ours: capture -> end of the poll
SHORT_TIMEOUT_DATAGRAMS=2500   # legacy: 5 s at 500/s under the 2 s UDP timeout
AFTER_FLUSH=1500               # legacy: table empty -> end (3 s at 500/s)
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=probe.sh
. "$here/probe.sh"
rm -rf "$out"; mkdir -p "$out"
case "$mode" in
  ours) conf=/etc/keepalived/keepalived.conf ;;
  legacy)
    conf="$out/keepalived-legacy.conf"
    sched="$(awk '$1 == "lvs_sched" { print $2; exit }' "$frag")"
    {
      printf 'global_defs {\n    enable_script_security\n    script_user root\n}\n'
      sed -e '/^[[:space:]]*ops[[:space:]]*$/d' \
          -e "s|^\([[:space:]]*\)lvs_method NAT|&\n\1quorum_up \"/usr/sbin/ipvsadm -E -u $vip:$port -s $sched --ops\"|" "$frag"
    } > "$conf"
    grep -q 'quorum_up' "$conf" && ! grep -Eq '^[[:space:]]*ops[[:space:]]*$' "$conf"
    ;;
  *) echo "startup.sh: MODE ours|legacy" >&2; exit 2 ;;
esac
keepalived --config-test --use-file "$conf"
systemctl is-active --quiet keepalived && { echo "startup.sh: keepalived still runs" >&2; exit 1; }
ipvsadm -C
ip addr replace "$vip/24" dev front
ip addr replace "$gw/24" dev back
ipvsadm -Ln > "$out/ipvsadm-before.txt"
probe_reset "$vip" "$port"
trap 'probe_stop_stream; probe_drop' EXIT

viphex="$(hexip "$vip")" porthex="$(printf '%04X' "$port")"
entries() {  # UDP entries for VIP:port in /proc/net/ip_vs_conn
  awk -v v="$viphex" -v p="$porthex" \
    'NR > 1 && $1 == "UDP" && $4 == v && $5 == p { n++ } END { print n + 0 }' /proc/net/ip_vs_conn
}
ev() { echo "$1=$(since "$t0")" >> "$out/events"; }

# stream first: wait for 100 datagrams (0.1 s at 1000/s), at most 90 s
wait_stream 100 90
t0=$(date +%s.%N)
seen_at_start="$(probe_packets)"
python3 - "$viphex" "$porthex" "$seconds" "$out/poll.json" "$t0" "$out/stop" <<'PY' &
import json, os, sys, time
viphex, porthex, seconds, out, stopfile = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[6]
samples, peak, changes, last, first_seen = 0, 0, [], None, None
start = time.monotonic() - (time.time() - float(sys.argv[5]))  # times relative to t0
while time.monotonic() - start < seconds and not os.path.exists(stopfile):
    with open("/proc/net/ip_vs_conn", encoding="ascii") as fh:
        n = sum(1 for line in fh.read().splitlines()[1:]
                if line.startswith("UDP") and line.split()[3:5] == [viphex, porthex])
    samples += 1
    now = round(time.monotonic() - start, 2)
    if n and first_seen is None:
        first_seen = now
    if n != last:
        changes.append([now, n])
        last = n
    peak = max(peak, n)
    time.sleep(0.02)
with open(out, "w", encoding="ascii") as fh:
    json.dump({"samples": samples, "peak_vip_udp_entries": peak, "first_seen_s": first_seen,
               "changes": changes[:200]}, fh)
PY
poller=$!
ev keepalived_start
timeout "$((${seconds%.*} + 10))" keepalived --dont-fork --check --log-console --log-detail \
  --use-file "$conf" --pid "$out/ka.pid" --checkers_pid "$out/ka-check.pid" \
  > "$out/keepalived.log" 2>&1 &
ka=$!
ops_s=null ops_seq=null
for _ in $(seq 1200); do   # at most 60 s: a bound, `ops` is the event
  if ipvsadm -Ln | grep -Eq "^UDP +$vip:$port +[a-z]+ +ops"; then
    ops_s="$(since "$t0")" ops_seq="$(probe_packets)"
    break
  fi
  sleep 0.05
done
ev "ops_set"
[ "$ops_seq" != null ] || { echo "startup.sh: ops never set" >&2; exit 1; }
wait_stream "$((ops_seq + AFTER_OPS))" 60
capture_seq="$(probe_packets)"
cp /proc/net/ip_vs_conn "$out/ip_vs_conn_stuck.txt"
[ -r /proc/net/ip_vs_conn_sync ] && cp /proc/net/ip_vs_conn_sync "$out/ip_vs_conn_sync_stuck.txt"
ipvsadm -Ln > "$out/ipvsadm.txt"
stuck_entries="$(entries)"
ev captured

flush='{}'
if [ "$mode" = legacy ]; then
  # (1) a short UDP timeout while the stream goes on
  read -r _tcp _fin udp_old < <(ipvsadm -L --timeout | awk '/Timeout/ { print $(NF-2), $(NF-1), $NF }')
  ipvsadm --set 0 0 2
  ev short_timeout_set
  short_from="$(probe_packets)"
  sleep 5
  wait_stream "$((short_from + SHORT_TIMEOUT_DATAGRAMS))" 60
  short_datagrams=$(($(probe_packets) - short_from))
  after_timeout="$(entries)"
  ipvsadm --set 0 0 "$udp_old"
  ev short_timeout_restored
  # (2) the caller's flush_stuck.yml; wait for the table to empty (at most 60 s)
  expire_nodest="$(sysctl -n net.ipv4.vs.expire_nodest_conn)"
  ev flush_ready
  ready_s="$(since "$t0")"
  touch "$out/flush_ready"
  flushed=null started=null flushed_seq=0 started_seq=null
  for _ in $(seq 1800); do
    n="$(entries)"
    if [ "$started" = null ] && [ "$n" -lt "$stuck_entries" ]; then started="$(since "$t0")" started_seq="$(probe_packets)"; fi
    if [ "$n" = 0 ]; then flushed="$(since "$t0")" flushed_seq="$(probe_packets)"; break; fi
    sleep 0.05
  done
  ev flushed
  # the stream goes on: with `ops` in force no entry may come back
  wait_stream "$((flushed_seq + AFTER_FLUSH))" 60
  watched=$(($(probe_packets) - flushed_seq))
  flush="{\"udp_timeout_before\": $udp_old, \"short_timeout_s\": 2, \"entries_before\": $stuck_entries, \"entries_after_5s_short_timeout\": $after_timeout, \"datagrams_under_short_timeout\": $short_datagrams, \"expire_nodest_conn\": $expire_nodest, \"flush_ready_s\": $ready_s, \"flush_started_s\": $started, \"entries_gone_at_s\": $flushed, \"flush_started_seq\": $started_seq, \"entries_gone_seq\": $flushed_seq, \"entries_after_flush\": $(entries), \"datagrams_after_flush\": $watched}"
else
  wait_stream "$((capture_seq + AFTER_CAPTURE))" 60
fi
touch "$out/stop"   # the poll ends here, not at its time bound

wait "$poller" || true
ev poll_end
cp /proc/net/ip_vs_conn "$out/ip_vs_conn.txt"
ipvsadm -Ln --stats > "$out/ipvsadm-stats.txt"
kill -TERM "$ka" 2>/dev/null || true
wait "$ka" || true
final_entries="$(entries)"
ipvsadm -C
seen="$(probe_packets)"
printf '{"mode": "%s", "ops_set_after_s": %s, "ops_seq": %s, "capture_seq": %s, "entries_at_capture": %s, "entries_at_end": %s, "datagrams_seen": %s, "datagrams_before_start": %s, "flush": %s, "poll": %s, "events": "%s"}\n' \
  "$mode" "$ops_s" "$ops_seq" "$capture_seq" "$stuck_entries" "$final_entries" "$seen" "$seen_at_start" "$flush" "$(cat "$out/poll.json")" "$(tr '\n' ' ' < "$out/events")"
