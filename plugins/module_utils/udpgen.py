# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one UDP traffic generator of datagram.director.

The module udp_spread, playbooks/verify.yml and every test harness send with
it; run it as a script on any python3 (standard library only, no Ansible):

    python3 udpgen.py VIP PORT [--count N] [--rate R | --interval S] [--window W]
                      [--source-port P] [--ports N] [--no-reply] [--abort-after S]
                      [--timeout S] [--max-seconds S] [--pidfile F] [--trace]

Each source port has a socket connected to VIP:port, as a real client (or
`dig`) uses, which receives only replies whose source is VIP:port, and an
unconnected socket on the same port (SO_REUSEPORT) that catches every other
reply, so a reply from a real server's own address is counted
(``stray_*``) instead of silently dropped. A datagram carries a run id and
its sequence number; real servers answer ``b"<name> " + request`` (the lab
echo, roles/lab_realserver/files/datagram-echo), which tells which real
server handled each datagram.

Sending is paced (``rate``) or windowed (at most ``window`` unanswered
datagrams in flight: replies clock the sending). With ``expect_reply=False``
(one-way services: NetFlow, syslog) it sends exactly ``count`` at ``rate``
and never waits for or gives up on replies. Every run is bounded in count
and time (``max_seconds``); a datagram ``STOP`` to any source port or
SIGTERM (script use) ends it early, which lets a test end the stream when it
has seen what it waits for.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time

PAD = b"datagram.director"
# A datagram with exactly this payload, to any source port, ends the run.
STOP = b"ddipvs-stop"
# --trace: a run of this many seconds of one port's datagrams answered by one
# real server means the port is pinned (a connection entry), per packet runs
# stay around one or two datagrams; lost runs this long are listed; a real
# server silent this long has a gap.
LONG_RUN_SECONDS = 5
LOSS_RUN = 10
GAP_SECONDS = 0.5
# After the last datagram: collect replies until this many seconds pass
# quietly (``timeout``), at most DRAIN_SECONDS.
DRAIN_SECONDS = 10.0


def _endpoint(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


class _Port(object):
    """One source port: a connected socket and a catch-all beside it."""

    def __init__(self, vip, port, source_port, rcvbuf):
        family = socket.AF_INET6 if ":" in vip else socket.AF_INET
        any_addr = "::" if family == socket.AF_INET6 else "0.0.0.0"
        self.stray = socket.socket(family, socket.SOCK_DGRAM)
        self.stray.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.stray.bind((any_addr, source_port))
        self.port = self.stray.getsockname()[1]
        self.conn = socket.socket(family, socket.SOCK_DGRAM)
        self.conn.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.conn.bind((any_addr, self.port))
        self.conn.connect((vip, port))
        for sock in (self.stray, self.conn):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)

    def close(self):
        self.conn.close()
        self.stray.close()


class Run(object):
    """The bookkeeping of one run: what was sent when, what came back from where."""

    def __init__(self, vip, port, count, ports, expect_reply):
        self.vip, self.port, self.requested = vip, port, count
        self.ports = ports
        self.expect_reply = expect_reply
        self.run_id = os.urandom(4)
        self.sent_at = []
        self.got = {}         # seq -> real server name (replies from VIP:port)
        self.stray = {}       # seq -> real server name (replies from any other source)
        self.stray_sources = {}
        self.duplicates = self.refused = self.send_errors = 0
        self.stopped_by = None
        self.stopped_at = None
        self.aborted = None
        self.rate = 0.0
        self.seconds = 0.0
        self.last_rx = None
        self.start = time.monotonic()
        self.start_epoch = time.time()

    def stop(self, why):
        if self.stopped_by is None:
            self.stopped_by, self.stopped_at = why, time.monotonic()

    def ended_on_purpose(self):
        """Ended by STOP or SIGTERM (not by max_seconds, an abort or the count)."""
        return self.stopped_by is not None and self.stopped_by != "max_seconds"

    def take(self, data, peer, from_vip):
        """Book one received datagram."""
        if data == STOP:
            self.stop("datagram from %s" % peer[0])
            return
        if not from_vip:
            src = _endpoint(peer[0], peer[1])
            self.stray_sources[src] = self.stray_sources.get(src, 0) + 1
        name, sep, rest = data.partition(b" ")
        if not sep or len(rest) < 12 or rest[:4] != self.run_id:
            return
        seq = struct.unpack("!Q", rest[4:12])[0]
        book = self.got if from_vip else self.stray
        if seq in book or seq >= len(self.sent_at):
            self.duplicates += seq in book
            return
        book[seq] = name.decode("utf-8", "replace")
        self.last_rx = time.monotonic()


def _drain(sel, run, wait):
    for key, _events in sel.select(timeout=wait):
        sock, from_vip = key.data
        while True:
            try:
                data, peer = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:
                run.refused += 1  # ICMP port unreachable reached the connected socket
                continue
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                raise
            run.take(data, peer if not from_vip else (run.vip, run.port), from_vip)


def _send(sock, payload, run):
    """Send one datagram; a pending ICMP error is reported by the send that
    follows it and the datagram then not sent: send once more."""
    for attempt in range(2):
        try:
            sock.send(payload)
            return
        except ConnectionRefusedError:
            run.refused += 1
        except BlockingIOError:
            # the socket's send buffer is full: wait for room, bounded
            select_w = selectors.DefaultSelector()
            select_w.register(sock, selectors.EVENT_WRITE)
            select_w.select(timeout=1.0)
            select_w.close()
        if attempt:
            run.send_errors += 1


def _in_flight(run, oldest, seq, timeout, now):
    """Advance past answered or timed-out datagrams; count the rest in flight."""
    while oldest < seq and (oldest in run.got or oldest in run.stray or run.sent_at[oldest] < now - timeout):
        oldest += 1
    return oldest, sum(1 for s in range(oldest, seq) if s not in run.got and s not in run.stray)


def generate(vip, port, count, rate=0.0, window=32, timeout=1.0, source_port=0, ports=1,
             expect_reply=True, abort_after=None, max_seconds=120.0, rcvbuf=4 << 20, stop_on_sigterm=False):
    """Send ``count`` datagrams to vip:port, round robin over ``ports`` source
    ports from ``source_port`` (0: one ephemeral port); return the Run.

    rate: datagrams per second (paced); 0 sends as replies allow, at most
    ``window`` unanswered in flight (a datagram unanswered for ``timeout`` s
    no longer counts). expect_reply=False needs a rate and never waits for
    replies. abort_after: give up when nothing at all has answered this many
    seconds after the first datagram (None: never; a stream that starts
    before its service may wait). max_seconds bounds the sending.
    """
    if count < 1 or window < 1 or ports < 1:
        raise ValueError("count, window and ports must be at least 1")
    if not expect_reply and rate <= 0:
        raise ValueError("a run that expects no reply needs a rate: nothing else paces it")
    if ports > 1 and not source_port:
        raise ValueError("several source ports need a first source port")
    socks = [_Port(vip, port, source_port + i if source_port else 0, rcvbuf) for i in range(ports)]
    run = Run(vip, port, count, [s.port for s in socks], expect_reply)
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s.conn, selectors.EVENT_READ, (s.conn, True))
        sel.register(s.stray, selectors.EVENT_READ, (s.stray, False))
    run.rate = rate
    if stop_on_sigterm:
        signal.signal(signal.SIGTERM, lambda *_args: run.stop("SIGTERM"))
    try:
        _loop(run, sel, socks, rate, window, timeout, abort_after, max_seconds)
        _collect(run, sel, timeout)
    finally:
        sel.close()
        for s in socks:
            s.close()
    run.seconds = time.monotonic() - run.start
    return run


def _loop(run, sel, socks, rate, window, timeout, abort_after, max_seconds):
    deadline = run.start + max_seconds
    oldest = 0
    seq = 0
    while seq < run.requested and run.stopped_by is None:
        now = time.monotonic()
        if now >= deadline:
            run.stop("max_seconds")
            break
        if abort_after is not None and run.sent_at and not run.got and not run.stray \
                and now - run.sent_at[0] > abort_after:
            run.aborted = "no reply within %.1f s of the first datagram" % abort_after
            break
        if rate > 0:
            due = run.start + seq / rate
            if now < due:
                _drain(sel, run, min(due - now, 0.002))
                continue
        else:
            oldest, flying = _in_flight(run, oldest, seq, timeout, now)
            if flying >= window:
                _drain(sel, run, 0.01)
                continue
        _send(socks[seq % len(socks)].conn, run.run_id + struct.pack("!Q", seq) + PAD, run)
        run.sent_at.append(time.monotonic())
        seq += 1
        _drain(sel, run, 0)


def _collect(run, sel, timeout):
    """The last replies: until all are in, or ``timeout`` passes quietly."""
    ended = time.monotonic()
    sent = len(run.sent_at)
    while len(run.got) + len(run.stray) < sent and time.monotonic() - ended < DRAIN_SECONDS \
            and time.monotonic() - max(run.last_rx or 0, run.sent_at[-1] if run.sent_at else 0) < timeout:
        _drain(sel, run, 0.01)


def _longest_gap(run):
    """The longest stretch of send time without an answered datagram: the
    takeover time a client sees during a failover."""
    sent = len(run.sent_at)
    edges = [-1] + sorted(run.got) + [sent]
    gap, between = 0.0, None
    for a, b in zip(edges, edges[1:]):
        if b - a > 1:
            t0 = run.sent_at[a] if a >= 0 else run.start
            t1 = run.sent_at[b] if b < sent else run.sent_at[-1]
            if t1 - t0 > gap:
                gap, between = t1 - t0, [a, b]
    return round(gap, 4), between


def _count(names):
    out = {}
    for name in names:
        out[name] = out.get(name, 0) + 1
    return dict(sorted(out.items()))


def summary(run):
    """The result of a run (udp_spread's return values)."""
    sent = len(run.sent_at)
    gap, between = _longest_gap(run)
    answered = sorted(run.got)
    return {
        "vip": run.vip, "port": run.port, "source_port": run.ports[0], "source_ports": run.ports,
        "expect_reply": run.expect_reply, "requested": run.requested, "sent": sent,
        "received": len(run.got),
        # a run ended on purpose (STOP, SIGTERM) owes nothing after it
        "lost": (sent if run.ended_on_purpose() else run.requested) - len(run.got),
        "aborted": run.aborted,
        "stopped_by": run.stopped_by,
        "stopped_at_s": None if run.stopped_at is None else round(run.stopped_at - run.start, 3),
        "per_server": _count(run.got.values()),
        "reply_sources": dict([(_endpoint(run.vip, run.port), len(run.got))] + sorted(run.stray_sources.items())),
        "stray_replies": sum(run.stray_sources.values()),
        "stray_per_server": _count(run.stray.values()),
        "duplicates": run.duplicates, "refused": run.refused, "send_errors": run.send_errors,
        "start_epoch": round(run.start_epoch, 3),
        "seconds": round(run.seconds, 3),
        "longest_gap_seconds": gap, "longest_gap_between": between,
        "first_answered_seq": answered[0] if answered else None,
        "order": [run.got[s] for s in answered[:30]],
    }


def run(vip, port, count, interval=0.0, window=32, timeout=1.0, source_port=0, max_seconds=120.0,
        expect_reply=True, rate=0.0):
    """udp_spread's run: one source port; with replies expected it gives up
    when nothing answers within ``timeout`` of the first datagram (a dead
    service), without (a one-way service) it sends exactly ``count``."""
    if interval > 0:
        rate = 1.0 / interval
    return summary(generate(vip, port, count, rate=rate, window=window, timeout=timeout, source_port=source_port,
                            expect_reply=expect_reply, abort_after=timeout if expect_reply else None,
                            max_seconds=max_seconds))


def _runs_per_port(run, sent, long_run):
    """Per source port: replies per real server, the longest run of replies
    from one real server, the run at the end; the long runs (pinned ports);
    the runs of >= LOSS_RUN lost datagrams."""
    per_port, runs, long_runs, loss, loss_runs = {}, {}, [], {}, []
    for seq in range(sent):
        name, port = run.got.get(seq), str(run.ports[seq % len(run.ports)])
        if name is None:
            loss.setdefault(port, [seq, 0])[1] += 1
            continue
        if port in loss:
            first, n = loss.pop(port)
            if n >= LOSS_RUN:
                loss_runs.append({"port": int(port), "first_seq": first,
                                  "at_s": round(run.sent_at[first] - run.start, 2), "datagrams": n})
        item = per_port.setdefault(port, {"per_server": {}, "longest_run": 0, "tail_run": None})
        item["per_server"][name] = item["per_server"].get(name, 0) + 1
        cur = runs.get(port)
        if cur and cur[0] == name:
            cur[1] += 1
        else:
            if cur and cur[1] >= long_run:
                long_runs.append({"port": int(port), "real_server": cur[0], "first_seq": cur[2], "datagrams": cur[1]})
            cur = runs[port] = [name, 1, seq]
        item["longest_run"] = max(item["longest_run"], cur[1])
    for port, cur in runs.items():
        per_port[port]["tail_run"] = {"real_server": cur[0], "datagrams": cur[1]}
        if cur[1] >= long_run:
            long_runs.append({"port": int(port), "real_server": cur[0], "first_seq": cur[2], "datagrams": cur[1]})
    return per_port, sorted(long_runs, key=lambda r: (r["port"], r["first_seq"])), loss_runs


def _timeline(run, sent):
    """Per second of send time: answered per real server and "lost"; the
    send times of the lost datagrams; per real server its gaps of more than
    GAP_SECONDS between answered datagrams (a real server out of the pool)."""
    timeline, lost_at, gaps, prev = {}, [], {}, {}
    for seq in range(sent):
        at = run.sent_at[seq] - run.start
        bucket = timeline.setdefault(str(int(at)), {})
        name = run.got.get(seq)
        if name is None:
            bucket["lost"] = bucket.get("lost", 0) + 1
            lost_at.append(round(at, 3))
            continue
        bucket[name] = bucket.get(name, 0) + 1
        if name in prev and run.sent_at[seq] - run.sent_at[prev[name]] > GAP_SECONDS:
            gaps.setdefault(name, []).append({"last_before_s": round(run.sent_at[prev[name]] - run.start, 3),
                                              "first_after_s": round(at, 3)})
        prev[name] = seq
    return timeline, lost_at, gaps


def trace(run):
    """Per-datagram figures for tests that cut windows by sequence number.

    "trace" has one character per datagram sent, by sequence number: the
    real server's character in "trace_keys", or "." for no reply from
    VIP:port. A director's counter counts the same datagrams in the same
    order, so a test slices the trace at the counter values of its events.
    """
    sent = len(run.sent_at)
    long_run = max(20, int(LONG_RUN_SECONDS * (run.rate or 1000) / len(run.ports)))
    per_port, long_runs, loss_runs = _runs_per_port(run, sent, long_run)
    timeline, lost_at, gaps = _timeline(run, sent)
    keys = dict((n, chr(65 + i)) for i, n in enumerate(sorted(set(run.got.values()))))
    last = {}
    for seq in sorted(run.got):
        last[run.got[seq]] = seq
    answered = sorted(run.got)
    return {
        "rate": run.rate,
        "first_answered_at_s": round(run.sent_at[answered[0]] - run.start, 3) if answered else None,
        "per_port": per_port, "timeline": timeline,
        "last_seq_by_server": last,
        "answered_after_last_by_server": dict((n, sum(1 for s in run.got if s > q)) for n, q in last.items()),
        "long_run_threshold": long_run, "long_runs": long_runs,
        "pinned_datagrams": sum(r["datagrams"] for r in long_runs),
        "loss_runs": loss_runs[:100], "lost_at_s": lost_at[:2000], "gaps_by_server": gaps,
        "trace": "".join(keys.get(run.got.get(seq), ".") for seq in range(sent)),
        "trace_keys": keys,
    }


def _arguments(argv):
    parser = argparse.ArgumentParser(
        prog="udpgen.py", description="Send datagrams to VIP:PORT and count who answers, and from where. "
        "Prints one JSON object.")
    parser.add_argument("vip")
    parser.add_argument("port", type=int)
    parser.add_argument("--count", type=int, default=3000, help="datagrams to send (default 3000)")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, default=0.0, help="datagrams per second (default: as replies allow)")
    pace.add_argument("--interval", type=float, default=0.0, help="seconds between datagrams")
    parser.add_argument("--window", type=int, default=32, help="unanswered datagrams in flight without --rate")
    parser.add_argument("--timeout", type=float, default=1.0,
                        help="seconds after which a datagram is unanswered; quiet time at the end")
    parser.add_argument("--source-port", type=int, default=0, help="the first source port (0: ephemeral)")
    parser.add_argument("--ports", type=int, default=1, help="source ports, round robin from --source-port")
    parser.add_argument("--no-reply", action="store_true",
                        help="a one-way service: send exactly --count at --rate, never wait for replies")
    parser.add_argument("--abort-after", type=float, default=None,
                        help="give up when nothing answered this many seconds after the first datagram")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="bound of the sending (default: count / rate + 10 s, or 120 s)")
    parser.add_argument("--rcvbuf", type=int, default=4 << 20, help="receive buffer per socket (bytes)")
    parser.add_argument("--pidfile", help="write the PID here while running (SIGTERM ends the run)")
    parser.add_argument("--trace", action="store_true", help="add the per-datagram figures (see trace())")
    args = parser.parse_args(argv)
    if args.interval > 0:
        args.rate = 1.0 / args.interval
    if args.max_seconds is None:
        args.max_seconds = args.count / args.rate + 10 if args.rate > 0 else 120.0
    if not 1 <= args.port <= 65535 or not 0 <= args.source_port <= 65535 - args.ports + 1:
        parser.error("port must be 1-65535, source ports 0-65535")
    return args


def main(argv=None):
    args = _arguments(sys.argv[1:] if argv is None else argv)
    if args.pidfile:
        with open(args.pidfile, "w", encoding="ascii") as fh:
            fh.write("%d\n" % os.getpid())
    try:
        run = generate(args.vip, args.port, args.count, rate=args.rate, window=args.window, timeout=args.timeout,
                       source_port=args.source_port, ports=args.ports, expect_reply=not args.no_reply,
                       abort_after=args.abort_after, max_seconds=args.max_seconds, rcvbuf=args.rcvbuf,
                       stop_on_sigterm=True)
    except (ValueError, OSError) as exc:
        sys.stderr.write("udpgen.py: %s\n" % exc)
        return 2
    finally:
        if args.pidfile and os.path.exists(args.pidfile):
            os.unlink(args.pidfile)
    result = summary(run)
    if args.trace:
        result.update(trace(run))
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
