#!/usr/bin/env bash
# IPVS one-packet-scheduling smoke test in the QEMU guest.
# Usage: smoke.sh [RESULT_DIR]   (default: a new /tmp/dd-guest-smoke.XXXXXX)
# Builds/reuses the image, boots it in run mode with smoke/guest-test.sh,
# prints the guest's output (also in RESULT_DIR/out.log, serial console in
# RESULT_DIR/console.log, client results in RESULT_DIR/result-*.json). The
# client and the real servers run the project's generator and echo.
# Env: as boot.sh (DD_GUEST_ACCEL, XDG_CACHE_HOME); DD_GUEST_TIMEOUT (600).
# Exit: 0 all checks passed, 1 a check failed, 124 timeout, 125 no result,
#       other: build/boot failure.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
res="${1:-$(mktemp -d /tmp/dd-guest-smoke.XXXXXX)}"
mkdir -p "$res"
image="$("$here/build-image.sh" | tail -n1)"
top="$(cd "$here/../../.." && pwd)"
cp "$top/plugins/module_utils/udpgen.py" "$top/roles/lab_realserver/files/datagram-echo" "$res/"
t0=$(date +%s.%N)
set +e
"$here/boot.sh" --image-dir "$image" --run "$here/smoke/guest-test.sh" --share "$res" \
  --timeout "${DD_GUEST_TIMEOUT:-600}"
rc=$?
set -e
cat "$res/out.log" 2>/dev/null || true
echo "smoke.sh: rc=$rc wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s results in $res" >&2
exit "$rc"
