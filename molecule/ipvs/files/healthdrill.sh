#!/usr/bin/env bash
# Health drill on the ipvs data plane, verify (f). Runs as root in director2's
# guest, where the real servers are namespaces: a stream from ONE client port
# through the VIP; STOP_AT s in, rs2's echo service is stopped (its process,
# which netsetup.sh started); RESTART_AT s in, it is started again. Only the
# health program on the master (ipvsadm -e -w 0 / back) can take rs2 out of
# the schedule, so the datagrams lost after the stop show its detection time.
#   bash healthdrill.sh RATE SECONDS STOP_AT RESTART_AT
# Prints one JSON object: stop and restart times (epoch s) and loadgen's result.
set -euo pipefail
rate=$1 secs=$2 stop_at=$3 restart_at=$4
out=$(mktemp /run/ddipvs-drill.XXXXXX)
trap 'rm -f "$out"' EXIT
echo_cmd=(ip netns exec rs2 setsid python3 /opt/ddipvs/echo.py rs2 7000)

ip netns exec client python3 /opt/ddipvs/loadgen.py 198.51.100.10 7000 44000 1 "$rate" "$secs" > "$out" &
lg=$!
sleep "$stop_at"
pid=$(pgrep -f '^python3 /opt/ddipvs/echo.py rs2 7000$' | head -1)
[ -n "$pid" ] || { echo "healthdrill: rs2's echo is not running" >&2; kill "$lg"; exit 1; }
kill "$pid"
stop_epoch=$(date +%s.%N)
sleep "$(awk -v a="$restart_at" -v b="$stop_at" 'BEGIN { print a - b }')"
"${echo_cmd[@]}" > /var/log/ddipvs-echo-rs2.log 2>&1 < /dev/null &
restart_epoch=$(date +%s.%N)
wait "$lg"
printf '{"stop_epoch": %s, "restart_epoch": %s, "stream": %s}\n' "$stop_epoch" "$restart_epoch" "$(cat "$out")"
