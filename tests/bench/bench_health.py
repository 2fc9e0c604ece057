# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark (not a test): CPU cost of health-checking many UDP real servers.

1. The health engine: one process, one selector loop, checks N real servers
   (UDP echo, 8 addresses x N/8 ports in a network namespace) every interval
   for --duration seconds.
2. What keepalived MISC_CHECK would do: spawn ``python3 -c 'probe once'`` per
   server per interval, for the shorter --spawn-duration.
3. Detection and recovery among the same N servers (fall 2, rise 2): one
   server's echo process is stopped (the kernel answers ICMP port
   unreachable), another one is frozen with SIGSTOP (no answer at all: the
   probe times out); both are brought back. Times run from the stop/start to
   the engine's transition, which is when the director program applies the
   new weights (one nft transaction or ipvsadm -e, milliseconds). Targets:
   out within fall x interval + 0.5 s, back within rise x interval + 0.5 s.

Prints CPU in % of one core (getrusage: self for 1, children for 2).  Needs
root (network namespaces) and iproute2.  All traffic stays between two
namespaces made here; both are deleted at the end.

    python3 tests/bench/bench_health.py   (as root) [--duration 30] [--servers 64]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MODULE_UTILS = os.path.join(HERE, "..", "..", "plugins", "module_utils")
sys.path.insert(0, MODULE_UTILS)

import health  # noqa: E402  (the director daemon imports it the same way)

CLONE_NEWNET = 0x40000000
TAG = "dgdb%d" % (os.getpid() % 100000)
CLI, SRV = TAG + "c", TAG + "s"
BASE_PORT = 7000

# The project's one echo, as a plain echo on each "ip:port" of the servers.
ECHO = os.path.join(HERE, "..", "..", "roles", "lab_realserver", "files", "datagram-echo")


def sh(*argv):
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def setns(path_or_fd):
    fd = os.open(path_or_fd, os.O_RDONLY) if isinstance(path_or_fd, str) else path_or_fd
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        if isinstance(path_or_fd, str):
            os.close(fd)


def targets(n):
    addrs = ["198.18.0.%d" % (10 + i) for i in range(8)]
    return [(addrs[i % 8], BASE_PORT + i // 8) for i in range(n)]


def cpu_self():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_children():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def proc_cpu(pid):
    """utime+stime of another process, from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_engine(servers, interval, duration):
    config = {"interval": interval, "timeout": min(0.8, interval * 0.8), "rise": 2, "fall": 3,
              "servers": [{"name": "%s:%d" % t, "host": t[0], "port": t[1], "probe": {"payload": "health"}}
                          for t in servers]}
    changes = []
    engine = health.HealthEngine(config, changes.append)
    try:
        c0, t0 = cpu_self(), time.monotonic()
        engine.run(duration=duration)
        cpu, wall = cpu_self() - c0, time.monotonic() - t0
    finally:
        engine.close()
    states = engine.states.values()
    checks = sum(s.checks for s in states)
    up = sum(1 for s in states if s.up)
    return cpu, wall, checks, up


def bench_spawn(servers, interval, duration, max_procs=64):
    """One short-lived python3 per check, like MISC_CHECK; bounded in count
    (servers x rounds) and time (duration + 10 s grace)."""
    code = ("import sys; sys.path.insert(0, %r); import health; "
            "r = health.probe_once({'host': sys.argv[1], 'port': int(sys.argv[2]), 'payload': 'health', "
            "'timeout': 0.8}); sys.exit(0 if r.ok else 1)") % os.path.abspath(MODULE_UTILS)
    # what keepalived would exec: the system python3, site and all
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    rounds = max(1, int(duration / interval))
    c0, s0, t0 = cpu_children(), cpu_self(), time.monotonic()
    running, started, ok, skipped = [], 0, 0, 0
    hard_end = t0 + duration + 10
    for rnd in range(rounds):
        due = t0 + rnd * interval
        while time.monotonic() < due:
            time.sleep(min(0.01, max(0.0, due - time.monotonic())))
            running, ok = _reap(running, ok)
        for host, port in servers:
            running, ok = _reap(running, ok)
            if len(running) >= max_procs:
                skipped += 1          # the machine cannot keep pace: count, do not pile up
                continue
            running.append(subprocess.Popen([python, "-c", code, host, str(port)]))
            started += 1
    while running and time.monotonic() < hard_end:
        running, ok = _reap(running, ok)
        time.sleep(0.01)
    for p in running:
        p.kill()
        p.wait()
    wall = time.monotonic() - t0
    return cpu_children() - c0, cpu_self() - s0, wall, started, ok, skipped


def echo_process(specs):
    """An echo server for specs ("ip:port") in the servers' namespace; returns once it listens."""
    listen = [arg for spec in specs for arg in ("--listen", spec)]
    proc = subprocess.Popen(["ip", "netns", "exec", SRV, "python3", ECHO, "--no-name", "--rcvbuf", "0"] + listen,
                            stdout=subprocess.PIPE)
    proc.stdout.readline()
    return proc


def bench_detection(servers, interval, victims, fall=2, rise=2, timeout=0.8, bound=30.0):
    """victims: {"stopped": (Popen, spec), "frozen": (Popen, spec)} served by their
    own processes. Returns {kind: (out_s, back_s)}; None where the bound passed."""
    config = {"interval": interval, "timeout": timeout, "rise": rise, "fall": fall,
              "servers": [{"name": "%s:%d" % t, "host": t[0], "port": t[1], "probe": {"payload": "health"}}
                          for t in servers]}
    events = []  # (name, up, monotonic time) of every transition
    engine = health.HealthEngine(config, lambda t: events.append((t.name, t.up, time.monotonic())))

    def first(name, up, after):
        return next((at for n, u, at in events if n == name and u == up and at >= after), None)

    def until(cond):
        end = time.monotonic() + bound
        while not cond() and time.monotonic() < end:
            engine.step(max_wait=0.05)
        return cond()

    names = dict((kind, spec) for kind, (_proc, spec) in victims.items())
    out = {}
    try:
        if not until(lambda: all(s.up for s in engine.states.values())):
            raise RuntimeError("not every server came up within %.0f s" % bound)
        proc, _spec = victims["stopped"]
        proc.terminate()
        proc.wait(timeout=5)
        os.kill(victims["frozen"][0].pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        until(lambda: all(first(n, False, stopped_at) is not None for n in names.values()))
        victims["stopped"] = (echo_process([names["stopped"]]), names["stopped"])
        os.kill(victims["frozen"][0].pid, signal.SIGCONT)
        started_at = time.monotonic()
        until(lambda: all(first(n, True, started_at) is not None for n in names.values()))
        for kind, name in names.items():
            down = first(name, False, stopped_at)
            up = first(name, True, started_at)
            out[kind] = (None if down is None else down - stopped_at, None if up is None else up - started_at)
        others = sorted(set(n for n, up, _at in events if not up and n not in names.values()))
        return out, others
    finally:
        engine.close()


def fmt(seconds):
    return "%.2f" % seconds if seconds is not None else "not within 30 s"


def _reap(running, ok):
    still = []
    for p in running:
        rc = p.poll()
        if rc is None:
            still.append(p)
        elif rc == 0:
            ok += 1
    return still, ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--servers", type=int, default=64)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=30.0, help="engine run, seconds")
    ap.add_argument("--spawn-duration", type=float, default=5.0, help="process-per-check run, seconds")
    ap.add_argument("--skip-detection", action="store_true", help="skip part 3 (detection and recovery)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    servers = targets(args.servers)
    echo = None
    victims = {}
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    created = []
    try:
        for ns in (CLI, SRV):
            sh("ip", "netns", "add", ns)
            created.append(ns)
        sh("ip", "link", "add", "dgdb-c0", "netns", CLI, "type", "veth", "peer", "name", "dgdb-s0", "netns", SRV)
        for ns, dev in ((CLI, "dgdb-c0"), (SRV, "dgdb-s0")):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", CLI, "addr", "add", "198.18.0.1/24", "dev", "dgdb-c0")
        for ip in sorted(set(t[0] for t in servers)):
            sh("ip", "-n", SRV, "addr", "add", ip + "/24", "dev", "dgdb-s0")
        specs = ["%s:%d" % t for t in servers]
        # the first two servers have their own processes: part 3 stops and freezes them
        echo = echo_process(specs[2:])
        victims = {"stopped": (echo_process(specs[:1]), specs[0]), "frozen": (echo_process(specs[1:2]), specs[1])}
        setns("/run/netns/" + CLI)

        print("health engine: %d servers, interval %.3gs, %.0fs ..." % (len(servers), args.interval, args.duration),
              flush=True)
        e0 = proc_cpu(echo.pid)
        cpu, wall, checks, up = bench_engine(servers, args.interval, args.duration)
        echo_cpu = proc_cpu(echo.pid) - e0
        print("process-per-check (MISC_CHECK style): %d servers, %.0fs ..." % (len(servers), args.spawn_duration),
              flush=True)
        ccpu, scpu, swall, started, sok, skipped = bench_spawn(servers, args.interval, args.spawn_duration)

        expected = len(servers) * args.duration / args.interval
        print()
        print("%-44s %14s %14s" % ("", "event loop", "proc/check"))
        print("%-44s %14.1f %14.1f" % ("wall time measured (s)", wall, swall))
        print("%-44s %14d %14d" % ("checks run", checks, started))
        print("%-44s %14s %14d" % ("checks skipped (could not keep pace)", "-", skipped))
        print("%-44s %14s %14d" % ("checks ok", "%d/%d up" % (up, len(servers)), sok))
        print("%-44s %14.3f %14.3f" % ("CPU seconds (checker + children)", cpu, ccpu + scpu))
        per_check = [cpu / max(1, checks) * 1e3, (ccpu + scpu) / max(1, started) * 1e3]
        print("%-44s %14.3f %14.3f" % ("CPU per check (ms)", per_check[0], per_check[1]))
        row = "%-44s %14.2f %14.2f"
        print(row % ("CPU, % of one core (over its wall time)", cpu / wall * 100, (ccpu + scpu) / swall * 100))
        rate = len(servers) / args.interval
        print(row % ("CPU, %% of one core at %d checks/s" % rate, per_check[0] * rate / 10, per_check[1] * rate / 10))
        print()
        if swall > args.spawn_duration * 1.2:
            print("proc/check fell behind: %.0fs of checks took %.1fs of wall time"
                  % (args.spawn_duration, swall))
        print("engine: %.0f of %.0f scheduled checks; echo server used %.2f%% of one core"
              % (checks, expected, echo_cpu / wall * 100))
        if checks == 0 or started == 0:
            # a benchmark asserts nothing about speed, only that it measured
            sys.exit("bench_health: nothing measured (engine %d checks, proc/check %d)" % (checks, started))
        if not args.skip_detection:
            fall = rise = 2
            print()
            print("detection and recovery among %d servers (interval %.3gs, fall %d, rise %d, timeout 0.8 s) ..."
                  % (len(servers), args.interval, fall, rise), flush=True)
            times, others = bench_detection(servers, args.interval, victims, fall, rise)
            print("%-44s %14s %14s" % ("", "out (s)", "back (s)"))
            print("%-44s %14s %14s" % ("target", "%.2f" % (fall * args.interval + 0.5), "%.2f" % (rise * args.interval + 0.5)))
            print("%-44s %14s %14s" % ("stopped (ICMP port unreachable)", fmt(times["stopped"][0]), fmt(times["stopped"][1])))
            print("%-44s %14s %14s" % ("frozen (SIGSTOP: no reply, timeouts)", fmt(times["frozen"][0]), fmt(times["frozen"][1])))
            print("other servers marked down meanwhile: %d" % len(others))
    finally:
        setns(home)
        os.close(home)
        for proc in [echo] + [proc for proc, _spec in victims.values()]:
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)  # a frozen one must be able to die
                proc.terminate()
                proc.wait(timeout=5)
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


if __name__ == "__main__":
    main()
