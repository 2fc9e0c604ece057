# shellcheck shell=bash source-path=SCRIPTDIR
# (e) A real-server weight change, then a real-server removal, each by editing
# the role's keepalived fragment and `systemctl reload keepalived`, while the
# client streams (run on the master director).
#   bash reload.sh run OUTDIR BEFORE BETWEEN AFTER
#       Every event waits for datagrams of the stream, not for the clock (under
#       TCG either guest may run seconds late): the nft counter of probe.sh
#       (the stream's sequence number at this director) must have advanced by
#       BEFORE datagrams since the stream began to change the weight of
#       203.0.113.21 1 -> 2, by BETWEEN since the new weight showed in ipvsadm
#       to remove 203.0.113.23, and by AFTER since the removal showed to be
#       done; then it tells the client to stop (probe_stop_stream), also when
#       it fails. Each window thus holds its datagrams however slow the run.
#   bash reload.sh restore OUTDIR   the saved fragment back, reload, health on
# The health program, which sets the weights of health.json again within its
# reconcile interval (5 s), is stopped by `run` and started by `restore`.
# The last line of stdout of `run` is a JSON object of the counter at each
# event (*_seq: the first datagram of the stream that arrived after it) with
# the seconds since the stream was seen (*_s, for the record) and the
# real-server lines ipvsadm showed.
set -euo pipefail
cmd="$1" out="$2"
vip=198.51.100.10 port=7000
frag=/etc/keepalived/conf.d/virtual_servers.conf
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=probe.sh
. "$here/probe.sh"

# wait_for WHAT CMD...: until CMD succeeds; 60 s only bound it (a reload that
# never shows is an error, not a shorter window)
wait_for() {
  local what="$1" _
  shift
  for _ in $(seq 1200); do "$@" && return 0; sleep 0.05; done
  echo "reload.sh: $what not seen in 60 s" >&2
  return 1
}
weight_shown() { ipvsadm -Ln | grep -Eq '203\.0\.113\.21:7000 +Masq +2 '; }
removal_shown() { ! ipvsadm -Ln | grep -q '203\.0\.113\.23:7000'; }
restored() { [ "$(ipvsadm -Ln | grep -c -- '-> 203\.0\.113\.2[123]:7000')" = 3 ]; }

if [ "$cmd" = restore ]; then
  cp "$out/virtual_servers.conf.orig" "$frag"
  keepalived --config-test >/dev/null
  systemctl reload keepalived
  wait_for "the three real servers" restored
  systemctl start datagram-director-health
  ipvsadm -Ln
  exit 0
fi
if [ "$cmd" != run ] || [ $# != 5 ]; then echo "reload.sh: run OUTDIR BEFORE BETWEEN AFTER | restore OUTDIR" >&2; exit 2; fi
before="$3" between="$4" after="$5"

rm -rf "$out"; mkdir -p "$out"
probe_reset "$vip" "$port"   # before the stream: the counter is the stream's sequence number
trap 'probe_stop_stream; probe_drop' EXIT
cp "$frag" "$out/virtual_servers.conf.orig"
systemctl stop datagram-director-health
wait_stream 1 120
t0=$(date +%s.%N)
rs_lines() { ipvsadm -Ln | awk '$1 == "->" && $2 ~ /^203\.0\.113\./ { printf "%s w%s; ", $2, $4 }'; }

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

wait_stream "$before" 120
edit_fragment '(real_server 203\.0\.113\.21 7000 \{\s*weight )1\b' '\g<1>2' "weight of 203.0.113.21"
keepalived --config-test >/dev/null
weight_s="$(since "$t0")" weight_seq="$(probe_packets)"
systemctl reload keepalived
wait_for "weight 2 of 203.0.113.21" weight_shown
weight_visible_s="$(since "$t0")" weight_visible_seq="$(probe_packets)"
after_weight="$(rs_lines)"

wait_stream "$((weight_visible_seq + between))" 120
edit_fragment '\n\s*real_server 203\.0\.113\.23 7000 \{.*?\n    \}\n' '\n' "real_server 203.0.113.23"
keepalived --config-test >/dev/null
removal_s="$(since "$t0")" removal_seq="$(probe_packets)"
systemctl reload keepalived
wait_for "removal of 203.0.113.23" removal_shown
removal_visible_s="$(since "$t0")" removal_visible_seq="$(probe_packets)"
after_removal="$(rs_lines)"

wait_stream "$((removal_visible_seq + after))" 120
done_s="$(since "$t0")" done_seq="$(probe_packets)"
printf '{"weight_change_s": %s, "weight_visible_s": %s, "removal_s": %s, "removal_visible_s": %s, "done_s": %s, "weight_change_seq": %s, "weight_visible_seq": %s, "removal_seq": %s, "removal_visible_seq": %s, "done_seq": %s, "windows": [%s, %s, %s], "after_weight": "%s", "after_removal": "%s"}\n' \
  "$weight_s" "$weight_visible_s" "$removal_s" "$removal_visible_s" "$done_s" \
  "$weight_seq" "$weight_visible_seq" "$removal_seq" "$removal_visible_seq" "$done_seq" \
  "$before" "$between" "$after" "$after_weight" "$after_removal"
