# shellcheck shell=bash source-path=SCRIPTDIR
# (e) A real-server weight change, then a real-server removal, each by editing
# the role's keepalived fragment and `systemctl reload keepalived`, while the
# client streams (run on the master director).
#   bash reload.sh run OUTDIR       wait for the stream (nft counter,
#                                   probe.sh), then: +4 s weight
#                                   203.0.113.21 1 -> 2, +12 s remove
#                                   203.0.113.23, +20 s done
#   bash reload.sh restore OUTDIR   the saved fragment back, reload, health on
# The health program, which sets the weights of health.json again within its
# reconcile interval (5 s), is stopped by `run` and started by `restore`.
# The last line of stdout of `run` is a JSON object of event times (seconds
# after the stream was seen), the nft counter at each event (datagrams of the
# stream that had reached this director: its sequence number, independent of
# the two guests' clocks) and the real-server lines ipvsadm showed.
set -euo pipefail
cmd="$1" out="$2"
vip=198.51.100.10 port=7000
frag=/etc/keepalived/conf.d/virtual_servers.conf
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=probe.sh
. "$here/probe.sh"

if [ "$cmd" = restore ]; then
  cp "$out/virtual_servers.conf.orig" "$frag"
  keepalived --config-test >/dev/null
  systemctl reload keepalived
  for _ in $(seq 100); do
    [ "$(ipvsadm -Ln | grep -c -- '-> 203\.0\.113\.2[123]:7000')" = 3 ] && break
    sleep 0.1
  done
  systemctl start datagram-director-health
  ipvsadm -Ln
  exit 0
fi
[ "$cmd" = run ] || { echo "reload.sh: run|restore OUTDIR" >&2; exit 2; }

rm -rf "$out"; mkdir -p "$out"
probe_reset "$vip" "$port"   # before the stream: the counter is the stream's sequence number
cp "$frag" "$out/virtual_servers.conf.orig"
systemctl stop datagram-director-health
wait_stream 20 90
t0=$(date +%s.%N)
rs_lines() { ipvsadm -Ln | awk '$1 == "->" && $2 ~ /^203\.0\.113\./ { printf "%s w%s; ", $2, $4 }'; }
until_at() { while awk -v a="$t0" -v b="$(date +%s.%N)" -v t="$1" 'BEGIN { exit !(b - a < t) }'; do sleep 0.05; done; }

# edit_fragment REGEX REPLACEMENT WHAT: one re.sub (DOTALL) on the fragment; exactly one match
edit_fragment() {
  python3 - "$frag" "$1" "$2" "$3" <<'PY'
import re, sys
path, pattern, repl, what = sys.argv[1:5]
with open(path, encoding="utf-8") as fh:
    text = fh.read()
text, n = re.subn(pattern, repl, text, flags=re.S)
assert n == 1, what + " not found"
with open(path, "w", encoding="utf-8") as fh:
    fh.write(text)
PY
}

until_at 4
edit_fragment '(real_server 203\.0\.113\.21 7000 \{\s*weight )1\b' '\g<1>2' "weight of 203.0.113.21"
keepalived --config-test >/dev/null
weight_s="$(since "$t0")" weight_seq="$(probe_packets)"
systemctl reload keepalived
for _ in $(seq 100); do ipvsadm -Ln | grep -Eq '203\.0\.113\.21:7000 +Masq +2 ' && break; sleep 0.05; done
weight_visible_s="$(since "$t0")" weight_visible_seq="$(probe_packets)"
after_weight="$(rs_lines)"

until_at 12
edit_fragment '\n\s*real_server 203\.0\.113\.23 7000 \{.*?\n    \}\n' '\n' "real_server 203.0.113.23"
keepalived --config-test >/dev/null
removal_s="$(since "$t0")" removal_seq="$(probe_packets)"
systemctl reload keepalived
for _ in $(seq 100); do ipvsadm -Ln | grep -q '203\.0\.113\.23:7000' || break; sleep 0.05; done
removal_visible_s="$(since "$t0")" removal_visible_seq="$(probe_packets)"
after_removal="$(rs_lines)"
until_at 20
seen="$(probe_packets)"
probe_drop
printf '{"weight_change_s": %s, "weight_visible_s": %s, "removal_s": %s, "removal_visible_s": %s, "done_s": %s, "weight_change_seq": %s, "weight_visible_seq": %s, "removal_seq": %s, "removal_visible_seq": %s, "datagrams_seen": %s, "after_weight": "%s", "after_removal": "%s"}\n' \
  "$weight_s" "$weight_visible_s" "$removal_s" "$removal_visible_s" "$(since "$t0")" \
  "$weight_seq" "$weight_visible_seq" "$removal_seq" "$removal_visible_seq" "$seen" "$after_weight" "$after_removal"
