# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Send datagrams from ONE source port and see who answers, and from where.

The client side of every verification: a connected UDP socket, as a real
client (or `dig`) uses, receives only replies whose source is VIP:port. A second,
unconnected socket on the same port (SO_REUSEPORT) catches every other reply,
so a reply from a real server's own address is counted instead of silently
dropped. Real servers answer ``b"<name> " + request`` (the lab echo), which
tells which real server handled each datagram.

Standard library only: it runs on any client host's python3.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import struct
import time

PAD = b"datagram.director"


def _sockets(vip, port, source_port):
    family = socket.AF_INET6 if ":" in vip else socket.AF_INET
    bind_addr = "::" if family == socket.AF_INET6 else "0.0.0.0"
    stray = socket.socket(family, socket.SOCK_DGRAM)
    stray.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    stray.bind((bind_addr, source_port))
    conn = socket.socket(family, socket.SOCK_DGRAM)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    conn.bind((bind_addr, stray.getsockname()[1]))
    conn.connect((vip, port))
    for sock in (stray, conn):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setblocking(False)
    return conn, stray


def _parse(data, run_id):
    """Return (real server name, sequence number) from an echo reply, or None."""
    name, sep, rest = data.partition(b" ")
    if not sep or len(rest) < 12 or rest[:4] != run_id:
        return None
    return name.decode("utf-8", "replace"), struct.unpack("!Q", rest[4:12])[0]


def run(vip, port, count, interval=0.0, window=32, timeout=1.0, source_port=0, max_seconds=120.0):
    """Send ``count`` datagrams to vip:port; return what came back.

    interval: seconds between sends (a paced stream, for failover) or 0 for a
    burst with at most ``window`` datagrams outstanding. The run stops after
    ``max_seconds`` whatever happens (every load loop is bounded).
    """
    conn, stray = _sockets(vip, port, source_port)
    run_id = os.urandom(4)
    sel = selectors.DefaultSelector()
    sel.register(conn, selectors.EVENT_READ, "conn")
    sel.register(stray, selectors.EVENT_READ, "stray")
    sent_at = []
    got = {}  # seq -> (name, received at)
    stray_sources = {}
    per_server = {}
    refused = 0
    duplicates = 0
    start = time.monotonic()
    deadline = start + max_seconds
    last_rx = start

    def drain():
        nonlocal refused, duplicates, last_rx
        for key, _ev in sel.select(timeout=0):
            while True:
                try:
                    data, peer = key.fileobj.recvfrom(65535)
                except BlockingIOError:
                    break
                except ConnectionRefusedError:
                    refused += 1  # ICMP port unreachable reached the connected socket
                    continue
                except OSError as exc:
                    if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                        break
                    raise
                if key.data == "stray":
                    src = "[%s]:%d" % peer[:2] if ":" in peer[0] else "%s:%d" % peer[:2]
                    stray_sources[src] = stray_sources.get(src, 0) + 1
                    continue
                parsed = _parse(data, run_id)
                if parsed is None:
                    continue
                name, seq = parsed
                if seq in got:
                    duplicates += 1
                    continue
                last_rx = time.monotonic()
                got[seq] = (name, last_rx)
                per_server[name] = per_server.get(name, 0) + 1

    seq = 0
    oldest = 0
    aborted = None
    while seq < count and time.monotonic() < deadline:
        # A dead service answers nothing: stop after `timeout` instead of
        # waiting out every window.
        if not got and sent_at and seq >= min(window, count) and time.monotonic() - sent_at[0] > timeout:
            aborted = "no reply within %.1f s of the first datagram" % timeout
            break
        if interval:
            due = start + seq * interval
            while time.monotonic() < due:
                sel.select(timeout=max(0.0, min(due - time.monotonic(), 0.005)))
                drain()
        else:
            # Keep at most `window` datagrams in flight; one unanswered for
            # `timeout` counts as lost and no longer holds the window.
            while True:
                now = time.monotonic()
                while oldest < seq and (oldest in got or sent_at[oldest] < now - timeout):
                    oldest += 1
                in_flight = sum(1 for s in range(oldest, seq) if s not in got)
                if in_flight < window or now >= deadline:
                    break
                sel.select(timeout=0.01)
                drain()
        payload = run_id + struct.pack("!Q", seq) + PAD
        try:
            conn.send(payload)
        except ConnectionRefusedError:
            refused += 1
            try:
                conn.send(payload)
            except OSError:
                pass
        sent_at.append(time.monotonic())
        seq += 1
        drain()
    # Wait for the last replies: until all are in or `timeout` passes quietly.
    while len(got) < seq and time.monotonic() - max(last_rx, sent_at[-1] if sent_at else start) < timeout \
            and time.monotonic() < deadline + timeout:
        sel.select(timeout=0.01)
        drain()
    local_port = conn.getsockname()[1]
    conn.close()
    stray.close()

    # The longest stretch without answered datagrams: the takeover time seen by a client.
    answered = sorted(got)
    gap = 0.0
    gap_between = None
    edges = [-1] + answered + [seq]
    for a, b in zip(edges, edges[1:]):
        if b - a > 1:
            t0 = sent_at[a] if a >= 0 else start
            t1 = sent_at[b] if b < seq else sent_at[-1]
            if t1 - t0 > gap:
                gap = t1 - t0
                gap_between = [a, b]
    return {
        "vip": vip, "port": port, "source_port": local_port,
        "requested": count, "sent": seq, "received": len(got), "lost": count - len(got), "aborted": aborted,
        "per_server": dict(sorted(per_server.items())),
        "reply_sources": dict([("[%s]:%d" % (vip, port) if ":" in vip else "%s:%d" % (vip, port), len(got))]
                              + sorted(stray_sources.items())),
        "stray_replies": sum(stray_sources.values()),
        "duplicates": duplicates, "refused": refused,
        "seconds": round(time.monotonic() - start, 3),
        "longest_gap_seconds": round(gap, 4), "longest_gap_between": gap_between,
        "order": [got[s][0] for s in answered[:30]],
    }


def expected_counts(sequence, sent):
    """Exact per-packet round robin: how many of ``sent`` datagrams each slot owner gets.

    Returns {real server index: count} for the indices in ``sequence``.
    """
    counts = {}
    if not sequence:
        return counts
    full, rest = divmod(sent, len(sequence))
    for pos, idx in enumerate(sequence):
        counts[idx] = counts.get(idx, 0) + full + (1 if pos < rest else 0)
    return counts


def check_spread(per_server, sequence, sent, tolerance=1):
    """Compare observed replies per real server with a per-packet round robin.

    Replies carry real-server names, not indices, so the sorted counts are
    compared (each within ``tolerance``): a per-flow balancer sends everything
    to one server and fails this at once.
    """
    expected = sorted(expected_counts(sequence, sent).values())
    observed = sorted(per_server.values())
    ok = len(expected) == len(observed) and all(abs(a - b) <= tolerance for a, b in zip(expected, observed))
    return {"ok": ok, "expected": expected, "observed": observed}
