# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Data-plane benchmark: director CPU per datagram, path by path, as a ratio
to plain IP routing through the same namespaces (``make bench``).

Every path gets its own replica of the topology (topology.py), all up at
once.  ONE sender thread (ddbench.c, pinned to CPU 0) rotates batches over
the replicas, so every path is measured in the same seconds, and adds its own
CPU clock around each sendmmsg to that path (with veth the director's
softirq runs inside the send).  The receivers (pinned to CPU 1) count per
named real server.  A no-director baseline with the same receiver pattern is
subtracted, so a ratio is the director's part alone:
(path - its baseline) / (routing - spread baseline), per run.

    python3 benchmarks/bench.py            (root) full run: table, RESULTS.md, ratios.png
    python3 benchmarks/bench.py --quick    every path measured, nothing lost, no files written
    python3 benchmarks/bench.py --no-scale without the 16/256-service paths
    python3 benchmarks/bench.py --from-json FILE   tables and chart again from a --json dump
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# pylint: disable=wrong-import-position,import-error
import chart  # noqa: E402
import paths as registry_mod  # noqa: E402
import report  # noqa: E402
import stats  # noqa: E402
import topology as topo  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SENDER_CPU = 0
RECEIVER_CPU = 1


def parse_args(argv):
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="one short round; assert every path measured, nothing lost")
    ap.add_argument("--no-scale", dest="scale", action="store_false",
                    help="leave out the 16 and 256 services paths")
    ap.add_argument("--from-json", default="", help="no measuring: tables and chart from a --json dump")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count", type=int, default=20000, help="datagrams per path per run")
    ap.add_argument("--rate", type=int, default=40000, help="datagrams/s over all paths (paced)")
    ap.add_argument("--sizes", default="64,512")
    ap.add_argument("--ports", default="1,64")
    ap.add_argument("--only", default="", help="comma-separated path names (baselines and route always run)")
    ap.add_argument("--out", default=HERE, help="where RESULTS.md, ratios.png and results.json (raw samples) go")
    ap.add_argument("--json", default="", help="also write the raw samples here")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.count = 1, min(args.count, 2000)
    if args.rounds < 1 or args.count < 32 or args.rate < 1000:
        ap.error("--rounds >= 1, --count >= 32, --rate >= 1000")
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.ports = [int(p) for p in args.ports.split(",")]
    if any(s < 28 or s > 1400 for s in args.sizes) or any(p < 1 or p > 64 for p in args.ports):
        ap.error("sizes 28-1400 bytes (no fragments), ports 1-64")
    return args


def preflight():
    """What the bench needs, checked before any namespace is made."""
    missing = [t for t in ("cc", "ip", "nft", "iptables", "ethtool", "taskset", "pgrep")
               if subprocess.run(["sh", "-c", "command -v " + t], capture_output=True, check=False).returncode]
    if os.geteuid() != 0:
        missing.append("root (network namespaces)")
    if (os.cpu_count() or 1) < 2:
        missing.append("2 CPUs (sender and receivers pinned apart)")
    if missing:
        sys.exit("bench: missing: %s" % ", ".join(missing))


def build(workdir):
    """Compile the sender/receiver with the system C compiler."""
    exe = os.path.join(workdir, "ddbench")
    topo.sh("cc", "-O2", "-Wall", "-o", exe, os.path.join(HERE, "ddbench.c"))
    return exe


class Receiver:
    """The receiver process: every real-server socket of every replica."""

    def __init__(self, exe, workdir, replicas):
        cfg = os.path.join(workdir, "recv.conf")
        with open(cfg, "w", encoding="utf-8") as out:
            for path, ns in replicas.items():
                for rs, rsns in ns["rs"].items():
                    out.write("sock %s.%s %s %s %d\n" % (path, rs, topo.ns_path(rsns), topo.REAL_SERVERS[rs], topo.PORT))
        self.proc = subprocess.Popen(["taskset", "-c", str(RECEIVER_CPU), exe, "recv", cfg],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError("receiver did not start: %r" % line)

    def counts(self):
        """{path: {rs: datagrams so far}}."""
        self.proc.send_signal(signal.SIGUSR1)
        found = {}
        for line in iter(self.proc.stdout.readline, ""):
            if line.strip() == "end":
                return found
            words = line.split()
            path, rs = words[1].rsplit(".", 1)
            found.setdefault(path, {})[rs] = int(words[3])
        raise RuntimeError("receiver ended")

    def stop(self):
        """Stop the receiver (our own child, by its PID)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def peer_cpu_ns(path):
    """CPU (ns) used so far by a path's userspace peer, all its threads."""
    if not path.peer:
        return 0
    total = 0
    for pid in path.peer():
        task_dir = "/proc/%d/task" % pid
        for tid in os.listdir(task_dir):
            with open(os.path.join(task_dir, tid, "schedstat"), encoding="ascii") as sst:
                total += int(sst.read().split()[0])
    return total


def send(exe, workdir, todo, size, ports, count, rate, echo=False, batch=32):
    """One sender run over ``todo`` [(path, destinations)]; {path: sample}."""
    cfg = os.path.join(workdir, "send.conf")
    with open(cfg, "w", encoding="utf-8") as out:
        out.write("size %d\nbatch %d\ncount %d\nrate %d\nseconds 120\necho %d\n" % (size, batch, count, rate, int(echo)))
        for path, netns, dsts in todo:
            out.write("path %s %s %d %s %s\n" % (path.name, topo.ns_path(netns), ports, path.pattern, " ".join(dsts)))
    res = subprocess.run(["taskset", "-c", str(SENDER_CPU), exe, "send", cfg],
                         capture_output=True, text=True, check=False, timeout=180)
    if res.returncode:
        raise RuntimeError("sender: rc %d: %s" % (res.returncode, res.stderr.strip()))
    samples = {}
    for line in res.stdout.splitlines():
        words = line.split()
        if words[0] == "path":
            samples[words[1]] = dict((words[i], int(words[i + 1])) for i in range(2, len(words), 2))
    return samples


def destinations(path, echo=False):
    """Where the client of ``path`` sends."""
    if path.target == "rs":
        return ["%s:%d" % (a, topo.PORT) for a in topo.REAL_SERVERS.values()]
    if path.director:
        return ["%s:%d" % (topo.VIP, path.echo_port if echo else topo.PORT)]
    raise ValueError(path.name)


def measured_run(ctx, size, ports, count, rate):
    """One interleaved run of every path: {path: sample with received}."""
    peers0 = dict((p.name, peer_cpu_ns(p)) for p in ctx["paths"])
    before = ctx["receiver"].counts()
    samples = send(ctx["exe"], ctx["workdir"], ctx["todo"], size, ports, count, rate)
    time.sleep(0.3)
    after = ctx["receiver"].counts()
    for p in ctx["paths"]:
        sample = samples[p.name]
        sample["extra_ns"] = peer_cpu_ns(p) - peers0[p.name]
        sample["received"] = dict((rs, after[p.name][rs] - before[p.name][rs]) for rs in topo.REAL_SERVERS)
    return samples


def reply_check(ctx, count=3000):
    """3000 datagrams from one port per director path, echoed by every real
    server: {path: {"received": per rs, "replies_dst": n, "replies_other": n}}."""
    todo = [(p, ns, destinations(p, echo=True)) for p, ns, dsts in ctx["todo"] if p.director]
    before = ctx["receiver"].counts()
    samples = send(ctx["exe"], ctx["workdir"], todo, 64, 1, count, 20000, echo=True, batch=30)
    time.sleep(0.3)
    after = ctx["receiver"].counts()
    for name, sample in samples.items():
        sample["received"] = dict((rs, after[name][rs] - before[name][rs]) for rs in topo.REAL_SERVERS)
    return samples


def setup(paths, workdir):
    """Every replica, its director configured; returns the run context."""
    topo.destroy_all()
    todo, replicas = [], {}
    for index, path in enumerate(paths):
        ns = topo.create(index, director=path.director)
        replicas[path.name] = ns
        if path.setup:
            path.setup(ns["director"], workdir)
        todo.append((path, ns["client"], destinations(path)))
    return {"paths": paths, "todo": todo, "replicas": replicas, "workdir": workdir}


def teardown(ctx, paths):
    """Stop what we started, delete our namespaces."""
    if ctx.get("receiver"):
        ctx["receiver"].stop()
    for path in paths:
        if path.stop:
            path.stop()
    topo.destroy_all()


def run(args, paths, workdir):
    """Set up, check replies, measure; returns the collected data."""
    ctx = setup(paths, workdir)
    try:
        ctx["exe"] = build(workdir)
        ctx["receiver"] = Receiver(ctx["exe"], workdir, ctx["replicas"])
        # warm-up: neighbour entries, caches, nginx's first sessions
        send(ctx["exe"], workdir, ctx["todo"], 64, 1, 320, 10000)
        replies = reply_check(ctx)
        runs = []
        for rnd in range(args.rounds):
            for size in args.sizes:
                for ports in args.ports:
                    samples = measured_run(ctx, size, ports, args.count, args.rate)
                    runs.append({"round": rnd, "size": size, "ports": ports, "samples": samples})
                    line = ", ".join("%s %.0f ns" % (n, stats.per_datagram_ns(s)) for n, s in samples.items())
                    print("round %d, %d bytes, %d port(s): %s" % (rnd + 1, size, ports, line), flush=True)
        csum = dict((p.name, sum(topo.csum_errors(ns) for ns in ctx["replicas"][p.name]["rs"].values()))
                    for p in paths)
    finally:
        teardown(ctx, paths)
    return {"runs": runs, "replies": replies, "csum_errors": csum}


def machine():
    """What the figures were measured on."""
    model_name = "unknown CPU"
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="utf-8") as meminfo:
        mem_kb = int(meminfo.readline().split()[1])
    nft = subprocess.run(["nft", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {"cpu": model_name, "cpus": os.cpu_count(), "mem_gb": round(mem_kb / 1048576.0),
            "kernel": platform.release(), "nft": nft,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def main(argv=None):
    """Entry point."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    paths = registry_mod.registry(scale=args.scale, nginx_cpu=RECEIVER_CPU)
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as dump:
            data = json.load(dump)
        paths = [p for p in paths if p.name in data["runs"][0]["samples"]]
    else:
        preflight()
        if args.only:
            keep = set(args.only.split(",")) | {"direct_spread", "direct_flow", "route"}
            paths = [p for p in paths if p.name in keep]
        data = run(args, paths, tempfile.mkdtemp(prefix="ddbench."))
        data["machine"] = machine()
        data["args"] = {"rounds": args.rounds, "count": args.count, "rate": args.rate,
                        "sizes": args.sizes, "ports": args.ports, "scale": args.scale}
    table = report.table(paths, data)
    print("\n" + table)
    side_by_side = report.paired(paths, data)
    if side_by_side:
        print("\n" + side_by_side)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=1)
    found = stats.problems([r["samples"] for r in data["runs"]], [p.name for p in paths])
    found += ["%s: %d UDP checksum errors at its real servers" % (n, c) for n, c in data["csum_errors"].items() if c]
    if found:
        print("bench: FAILED:\n  " + "\n  ".join(found), file=sys.stderr)
        return 1
    print("bench: every path measured (%d), nothing lost" % len(paths))
    if not args.quick:
        os.makedirs(args.out, exist_ok=True)
        if not args.from_json:
            with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as out:
                json.dump(data, out, indent=1)
        report.write(os.path.join(args.out, "RESULTS.md"), paths, data, table)
        chart.write(os.path.join(args.out, "ratios.png"), report.chart_rows(paths, data))
        print("bench: wrote %s and %s" % (os.path.join(args.out, "RESULTS.md"), os.path.join(args.out, "ratios.png")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
