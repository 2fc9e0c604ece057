#!/usr/bin/env bash
# Boot the cached IPVS test guest (see build-image.sh) under QEMU.
#
# Run mode (test script, then power off):
#   boot.sh --run SCRIPT [--share DIR] [--log FILE] [--timeout S] [options]
#     SCRIPT is copied to DIR/run (DIR = 9p share "ddshare", mounted on
#     /mnt/host in the guest; default: a new temp dir, kept and printed).
#     The guest's PID 1 runs ./run in /mnt/host, writes DIR/out.log and
#     DIR/rc, and powers off.  Exit code = the script's exit code.
# Long-running mode (sshd for Ansible, systemd as PID 1 by default):
#   boot.sh --ssh PORT [--state-dir DIR] [--init systemd|minimal] [options]
#     Port forward 127.0.0.1:PORT -> guest :22 (user-mode net, restrict=on:
#     no route from the guest to anywhere).  Returns once ssh works and
#     prints shell-style lines: DD_GUEST_PID, DD_GUEST_PIDFILE, DD_GUEST_PORT,
#     DD_GUEST_KEY, DD_GUEST_SSH_CONFIG, DD_GUEST_LOG.  QEMU keeps running
#     (daemonized) until powered off, --stop, or --timeout (watchdog).
#   boot.sh --stop PIDFILE   stop exactly that QEMU (checked by its -name).
# Options:
#   --image-dir DIR   image (default: build-image.sh output, built if missing)
#   --timeout S       hard limit; QEMU is killed by PID (run 900, ssh 7200)
#   --ready-timeout S ssh mode: wait for sshd (default 600)
#   --log FILE        serial console log (default SHARE/console.log or
#                     STATE/console.log)
#   --pidfile FILE    QEMU's PID (default SHARE/qemu.pid or STATE/qemu.pid)
#   --kernel vmlinux|bzImage   (default vmlinux: PVH entry, no decompression)
#   --mem MB (1024)  --smp N (1)  --verbose (kernel messages on the console)
#   --qemu-arg ARG    extra QEMU argument, repeatable (e.g. socket netdevs
#                     bound to 127.0.0.1 that link two guests)
# Env: DD_GUEST_ACCEL=auto|tcg|kvm (auto: KVM only if /dev/kvm exists and a
#   probe boot succeeds; the probe result is cached per host kernel),
#   QEMU (default qemu-system-x86_64).
# Exit codes: run mode: the guest script's code; 124 timeout (QEMU killed);
#   125 guest stopped without a result; 1 QEMU/setup failure; 2 usage.
#   ssh mode: 0 ready; 124 not ready in time (QEMU killed); 1 failure.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
qemu="${QEMU:-qemu-system-x86_64}"
mode="" script="" share="" state="" log="" pidfile="" port="" image=""
timeout="" ready_timeout=600 kernel=vmlinux mem=1024 smp=1 verbose=0 init=systemd
extra=()

usage() { sed -n '2,38p' "$0" >&2; exit 2; }

stop_pid() {  # stop_pid PID NAME: TERM, then KILL, only if it is our QEMU
  local pid="$1" name="$2"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 0
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "-name $name" || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
}

while [ $# -gt 0 ]; do
  case "$1" in
    --run) mode=run; script="$2"; shift ;;
    --ssh) mode=ssh; port="$2"; shift ;;
    --stop) mode=stop; pidfile="$2"; shift ;;
    --share) share="$2"; shift ;;
    --state-dir) state="$2"; shift ;;
    --init) init="$2"; shift ;;
    --image-dir) image="$2"; shift ;;
    --timeout) timeout="$2"; shift ;;
    --ready-timeout) ready_timeout="$2"; shift ;;
    --log) log="$2"; shift ;;
    --pidfile) pidfile="$2"; shift ;;
    --kernel) kernel="$2"; shift ;;
    --mem) mem="$2"; shift ;;
    --smp) smp="$2"; shift ;;
    --verbose) verbose=1 ;;
    --qemu-arg) extra+=("$2"); shift ;;
    -h|--help) usage ;;
    *) echo "boot.sh: unknown argument $1" >&2; usage ;;
  esac
  shift
done
[ -n "$mode" ] || usage

if [ "$mode" = stop ]; then
  pid="$(cat "$pidfile" 2>/dev/null)"
  name="$(cat "$pidfile.name" 2>/dev/null)"
  wd="$(cat "$pidfile.watchdog" 2>/dev/null)"
  [ -n "$wd" ] && kill "$wd" 2>/dev/null
  [ -n "$name" ] && stop_pid "$pid" "$name"
  exit 0
fi

if [ -z "$image" ]; then
  image="$("$here/build-image.sh" | tail -n1)" || { echo "boot.sh: image build failed" >&2; exit 1; }
fi
[ -f "$image/manifest" ] || { echo "boot.sh: no image in $image" >&2; exit 1; }
case "$kernel" in vmlinux|bzImage) ;; *) usage ;; esac

name="dd-guest-$$-$RANDOM"
append="console=ttyS0 root=/dev/vda rw rootfstype=ext4 panic=-1 net.ifnames=0 mitigations=off random.trust_cpu=on"
[ "$verbose" = 1 ] || append="$append quiet loglevel=3"
common=(-name "$name" -nodefaults -no-user-config -display none -no-reboot
        -m "$mem" -smp "$smp"
        -kernel "$image/$kernel" -initrd "$image/initrd.img"
        -drive "file=$image/disk.img,format=raw,if=virtio,snapshot=on,cache=unsafe")

pick_accel() {
  case "${DD_GUEST_ACCEL:-auto}" in
    tcg) echo tcg; return ;;
    kvm) echo kvm; return ;;
  esac
  if [ ! -c /dev/kvm ] || [ ! -w /dev/kvm ]; then echo tcg; return; fi
  local cache
  cache="$image/../kvm-probe.$(uname -r)"
  if [ ! -f "$cache" ]; then
    # probe: boot this image under KVM with a no-op script, 30 s limit
    local d; d="$(mktemp -d)"
    printf '#!/bin/sh\necho kvm-probe-ok\n' > "$d/probe"; chmod +x "$d/probe"
    if DD_GUEST_ACCEL=kvm "$0" --image-dir "$image" --run "$d/probe" --share "$d/s" \
         --timeout 30 >/dev/null 2>&1 && grep -q kvm-probe-ok "$d/s/out.log" 2>/dev/null; then
      echo kvm > "$cache"
    else
      echo tcg > "$cache"
    fi
    rm -rf "$d"
  fi
  cat "$cache"
}
accel="$(pick_accel)"
if [ "$accel" = kvm ]; then
  common+=(-accel kvm -cpu host)
else
  common+=(-accel "tcg,thread=$([ "$smp" -gt 1 ] && echo multi || echo single)")
fi

t_start=$(date +%s.%N)
now() { date +%s.%N; }
secs_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

if [ "$mode" = run ]; then
  [ -f "$script" ] || { echo "boot.sh: no script $script" >&2; exit 2; }
  timeout="${timeout:-900}"
  [ -n "$share" ] || share="$(mktemp -d /tmp/dd-guest-run.XXXXXX)"
  mkdir -p "$share"; rm -f "$share/rc" "$share/out.log"
  install -m 0755 "$script" "$share/run"
  log="${log:-$share/console.log}"; pidfile="${pidfile:-$share/qemu.pid}"
  : > "$log"; echo "$name" > "$pidfile.name"
  "$qemu" "${common[@]}" -pidfile "$pidfile" -serial "file:$log" -nic none "${extra[@]}" \
    -virtfs "local,path=$share,mount_tag=ddshare,security_model=none,id=ddshare" \
    -append "$append init=/usr/local/sbin/dd-guest-init dd.mode=run" \
    2> "$share/qemu.stderr" &
  pid=$!
  echo "$pid" > "$pidfile"
  trap 'stop_pid "$pid" "$name"; exit 130' INT TERM
  t_init="" hwm=0 status=""
  while kill -0 "$pid" 2>/dev/null; do
    if [ -z "$t_init" ] && grep -q 'dd-guest-init: start' "$log" 2>/dev/null; then
      t_init="$(secs_since "$t_start")"
    fi
    h=$(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status" 2>/dev/null); [ -n "$h" ] && hwm=$h
    if awk -v a="$t_start" -v b="$(now)" -v t="$timeout" 'BEGIN { exit !(b - a > t) }'; then
      echo "boot.sh: timeout after ${timeout}s, killing QEMU $pid" >&2
      stop_pid "$pid" "$name"; status=124; break
    fi
    sleep 0.25
  done
  wait "$pid" 2>/dev/null; qrc=$?
  trap - INT TERM
  ginit="$(sed -n 's/.*dd-guest-init: start uptime=\([0-9.]*\).*/\1/p' "$log" | head -n1)"
  echo "boot.sh: accel=$accel kernel=$kernel wall=$(secs_since "$t_start")s init_reached=${t_init:-?}s guest_uptime_at_init=${ginit:-?}s qemu_rc=$qrc qemu_peak_rss=$((hwm / 1024))MB share=$share log=$log" >&2
  [ -n "$status" ] && exit "$status"
  [ -f "$share/rc" ] || { echo "boot.sh: guest stopped without a result (see $log, $share/qemu.stderr)" >&2; exit 125; }
  exit "$(cat "$share/rc")"
fi

# ---- ssh mode -------------------------------------------------------------
[[ "$port" =~ ^[0-9]+$ ]] || usage
timeout="${timeout:-7200}"
[ -n "$state" ] || state="$(mktemp -d /tmp/dd-guest-ssh.XXXXXX)"
mkdir -p "$state"
log="${log:-$state/console.log}"; pidfile="${pidfile:-$state/qemu.pid}"
: > "$log"; rm -f "$pidfile"; echo "$name" > "$pidfile.name"
case "$init" in
  systemd) initarg="init=/lib/systemd/systemd systemd.show_status=0" ;;
  minimal) initarg="init=/usr/local/sbin/dd-guest-init dd.mode=ssh" ;;
  *) usage ;;
esac
sed "s/PORT/$port/" "$image/known_hosts.template" > "$state/known_hosts"
cat > "$state/ssh_config" <<CFG
Host ddguest 127.0.0.1
  HostName 127.0.0.1
  Port $port
  User root
  IdentityFile $image/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $state/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 10
CFG
if ! "$qemu" "${common[@]}" -daemonize -pidfile "$pidfile" -serial "file:$log" \
    -netdev "user,id=n0,restrict=on,net=10.0.2.0/24,hostfwd=tcp:127.0.0.1:$port-:22" \
    -device virtio-net-pci,netdev=n0 "${extra[@]}" \
    -append "$append $initarg" 2> "$state/qemu.stderr"; then
  echo "boot.sh: QEMU failed: $(cat "$state/qemu.stderr")" >&2; exit 1
fi
pid="$(cat "$pidfile")"
# host-side hard timeout: a detached watchdog kills exactly this QEMU
# shellcheck disable=SC2016  # expanded by the inner bash, from its arguments
setsid bash -c '
  sleep "$1"
  if tr "\0" " " < /proc/$2/cmdline 2>/dev/null | grep -q -- "-name $3"; then
    kill -TERM "$2"; sleep 3; kill -KILL "$2" 2>/dev/null
  fi' dd-guest-watchdog "$timeout" "$pid" "$name" </dev/null >/dev/null 2>&1 &
echo $! > "$pidfile.watchdog"
until ssh -F "$state/ssh_config" ddguest true 2>/dev/null; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "boot.sh: QEMU exited before sshd came up (see $log)" >&2; exit 1
  fi
  if awk -v a="$t_start" -v b="$(now)" -v t="$ready_timeout" 'BEGIN { exit !(b - a > t) }'; then
    echo "boot.sh: sshd not ready in ${ready_timeout}s, killing QEMU $pid" >&2
    kill "$(cat "$pidfile.watchdog")" 2>/dev/null; stop_pid "$pid" "$name"; exit 124
  fi
  sleep 1
done
rss=$(awk '/^VmRSS/ { print int($2 / 1024) }' "/proc/$pid/status")
echo "boot.sh: accel=$accel kernel=$kernel init=$init ssh ready after $(secs_since "$t_start")s qemu_rss=${rss}MB" >&2
cat <<OUT
DD_GUEST_PID=$pid
DD_GUEST_PIDFILE=$pidfile
DD_GUEST_PORT=$port
DD_GUEST_KEY=$image/id_ed25519
DD_GUEST_SSH_CONFIG=$state/ssh_config
DD_GUEST_LOG=$log
OUT
