# shellcheck shell=bash
# Background jobs for verify.yml, driven over `raw` (no Python module run: under
# TCG each costs 3-5 s, a raw ssh command a fraction of a second).
#   bash job.sh start NAME SECONDS CMD...  CMD in its own session, bounded by
#                                          `timeout SECONDS`; returns at once
#   bash job.sh wait NAME SECONDS          wait at most SECONDS for it to end,
#                                          print its stdout (stderr to stderr),
#                                          exit with its exit code
# State in /run/ddipvs/jobs/NAME.{pid,out,err,rc}.
set -euo pipefail
dir=/run/ddipvs/jobs
cmd="$1" name="$2" secs="$3"
shift 3
f="$dir/$name"
case "$cmd" in
  start)
    mkdir -p "$dir"
    rm -f "$f".*
    # shellcheck disable=SC2016  # expanded by the inner bash
    setsid bash -c 'timeout "$1" "${@:3}" > "$2.out" 2> "$2.err" < /dev/null; echo $? > "$2.rc.tmp"; mv "$2.rc.tmp" "$2.rc"' \
      job "$secs" "$f" "$@" < /dev/null > /dev/null 2>&1 &
    echo $! > "$f.pid"
    ;;
  wait)
    for _ in $(seq $((secs * 10))); do
      [ -f "$f.rc" ] && break
      sleep 0.1
    done
    [ -f "$f.rc" ] || { echo "job.sh: $name still runs after $secs s" >&2; exit 124; }
    cat "$f.out"
    cat "$f.err" >&2
    exit "$(cat "$f.rc")"
    ;;
  *) echo "job.sh start NAME SECONDS CMD... | wait NAME SECONDS" >&2; exit 2 ;;
esac
