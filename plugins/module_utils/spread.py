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

Then the judgment (judge_spread, filter spread_check): the datagrams each
NAMED real server got against what the inventory's weights and the current
drains give it, from the echo's names or from the directors' per-real-server
counters (nft named counters, ipvsadm --stats).

Standard library and ipvsadm.py only: it runs on any client host's python3.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import re
import selectors
import socket
import struct
import time
from fractions import Fraction
from functools import reduce
from math import gcd

from ansible_collections.datagram.director.plugins.module_utils.ipvsadm import endpoint, split_endpoint

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


# --- The judgment: datagrams per NAMED real server -------------------------
#
# The expectation comes from the inventory's weights alone, never from the
# plan's sequence (the code under test): a weight on the wrong real server or
# a wrong round-robin order would otherwise judge itself.


def _address(text):
    """A normalised IP address, or the text itself (a host name)."""
    try:
        return str(ipaddress.ip_address(str(text).strip().strip("[]")))
    except ValueError:
        return str(text).strip()


def _source(text):
    """A reply source as ipvsadm.endpoint() writes it; other text unchanged."""
    try:
        return endpoint(*split_endpoint(text))
    except ValueError:
        return str(text)


def drained_endpoints(health_status, service_name):
    """The endpoints that the health program's state (``datagram-director-health
    --status --json``; None: nothing drained) marks drained in a service."""
    for svc in (health_status or {}).get("services") or []:
        if svc.get("name") == service_name:
            return set(endpoint(rs["address"], rs["port"]) for rs in svc.get("real_servers") or [] if rs.get("drained"))
    return set()


def expected_weights(service, health_status=None, names=None):
    """Weight per real server of one inventory service (a ``director_services``
    item): ``weight`` (default 1); ``rr`` gives 1 to every weight > 0 (README);
    a drained server 0. Labelled ``names[address]`` (the host name the lab echo
    answers) or its endpoint; servers sharing a label add up."""
    names = dict((_address(a), n) for a, n in (names or {}).items())
    drained = drained_endpoints(health_status, service.get("name"))
    weights = {}
    for rs in service.get("real_servers") or []:
        label = endpoint(rs["address"], rs.get("port", service.get("port")))
        weight = int(rs.get("weight", 1))
        if service.get("scheduler", "rr") != "wrr":
            weight = min(weight, 1)
        if label in drained:
            weight = 0
        label = names.get(_address(rs["address"]), label)
        weights[label] = weights.get(label, 0) + weight
    return weights


def slot_bounds(sent, weight, cycle):
    """Fewest and most of ``sent`` CONSECUTIVE round-robin slots that a server
    with ``weight`` slots per ``cycle`` holds, wherever in the cycle the run
    starts and in whatever order the cycle is (smooth or IPVS wrr): whole cycles
    give exactly weight each; the rest of the run adds 0..weight."""
    full, rest = divmod(sent, cycle)
    return full * weight + max(0, rest - (cycle - weight)), full * weight + min(weight, rest)


def _number(value):
    return int(value) if value.denominator == 1 else round(float(value), 2)


def _judge_server(label, weight, seen, sent, cycle, gcd_, total, lost, slack):
    """One server's line of judge_spread(): the figures and, when it fails, why."""
    expected = Fraction(sent * weight, total) if weight else Fraction(0)
    low, high = slot_bounds(sent, weight // gcd_, cycle) if weight else (0, 0)
    low, high = max(0, low - lost - slack), high + slack
    count = seen or 0
    line = {"weight": weight, "expected": _number(expected), "observed": count,
            "diff": _number(count - expected), "allowed": [low, high]}
    if seen is None and weight:
        line["reason"] = "%s (weight %d) is missing: no datagram counted, expected %s" % (
            label, weight, line["expected"])
    elif not weight and count > slack:
        line["reason"] = "%s has weight 0 (drained, or 0 in the inventory) but got %d datagrams" % (label, count)
    elif not low <= count <= high:
        line["reason"] = "%s got %d datagrams, expected %s (weight %d of %d), allowed %d..%d" % (
            label, count, line["expected"], weight, total, low, high)
    return line


def judge_spread(observed, weights, sent, received=None, reply_sources=None, vip=None, port=None,
                 max_lost=0, slack=0):
    """Judge a per-packet spread server by server.

    observed: datagrams counted per real-server label (echo names, or counter
    deltas by endpoint); weights: expected_weights() for the same labels; sent:
    datagrams sent; received: answered (or counted) datagrams, default the sum
    of ``observed``; reply_sources: replies per source address:port, every one
    must be ``vip``:``port`` (None: not checked, a one-way protocol).

    Each server is held to slot_bounds() of ``sent`` with its weight reduced by
    the weights' gcd (3000 at 1:1:1 or 2:1:1:1 must be exact); a lost datagram
    may be anyone's, so each one lowers every lower bound by one. ``slack``
    widens both bounds for traffic the run did not send. At most ``max_lost``
    datagrams may go unanswered; a server outside ``weights`` fails, so does
    one of weight > 0 absent from ``observed``.

    Returns ``{"ok", "sent", "received", "lost", "cycle", "servers": {label:
    {"weight", "expected", "observed", "diff", "allowed", "reason"?}},
    "failures": [reasons]}``.
    """
    observed = dict((str(k), int(v)) for k, v in (observed or {}).items())
    weights = dict((str(k), int(v)) for k, v in (weights or {}).items())
    sent = int(sent)
    received = sum(observed.values()) if received is None else int(received)
    lost = max(0, sent - received)
    total = sum(weights.values())
    gcd_ = reduce(gcd, weights.values(), 0)
    cycle = total // gcd_ if gcd_ else 0
    failures = []
    if sent <= 0:
        failures.append("no datagram was sent")
    if not cycle:
        failures.append("no real server with weight > 0 (every one drained or weight 0)")
    servers = {}
    for label in sorted(set(weights) | set(observed)):
        if label not in weights:
            servers[label] = {"weight": None, "expected": 0, "observed": observed[label], "diff": observed[label],
                              "allowed": [0, 0], "reason": "%s got %d datagrams but is not a real server of the "
                                                           "service in the inventory" % (label, observed[label])}
        elif cycle and sent > 0:
            servers[label] = _judge_server(label, weights[label], observed.get(label), sent, cycle, gcd_, total,
                                           lost, slack)
        if "reason" in servers.get(label, {}):
            failures.append(servers[label]["reason"])
    if lost > max_lost:
        failures.append("%d of %d datagrams were not %s (at most %d may be)" % (
            lost, sent, "counted" if reply_sources is None else "answered", max_lost))
    if sum(observed.values()) > sent + slack:
        failures.append("%d datagrams counted for %d sent: other traffic reached the service during the run" % (
            sum(observed.values()), sent))
    if reply_sources is not None:
        want = endpoint(vip, port)
        stray = dict((src, n) for src, n in reply_sources.items() if int(n) and _source(src) != want)
        if stray:
            failures.append("%d replies not from VIP:port %s: %s" % (sum(stray.values()), want, stray))
    return {"ok": not failures, "sent": sent, "received": received, "lost": lost, "cycle": cycle,
            "servers": servers, "failures": failures}


# --- A second source of observed counts: the directors' own counters -------


def nft_service_packets(listing, service, table="datagram_director"):
    """Packets per real-server endpoint of ``service`` (inventory order) from
    ``nft --json list counters table netdev TABLE``: the data plane's named
    counters ``fwd_<service>_<index>`` (roles/nftables dataplane.nft.j2)."""
    counters = {}
    for item in json.loads(listing).get("nftables", []):
        counter = item.get("counter")
        if counter and counter.get("table") == table:
            counters[counter["name"]] = int(counter["packets"])
    out = {}
    for index, rs in enumerate(service.get("real_servers") or []):
        name = "fwd_%s_%d" % (service["name"], index)
        if name not in counters:
            raise ValueError("no counter %s in netdev table %s" % (name, table))
        out[endpoint(rs["address"], rs.get("port", service.get("port")))] = counters[name]
    return out


def ipvs_service_packets(stats, service):
    """Packets in (InPkts) per real-server endpoint of ``service`` from
    ``ipvsadm -L -n --stats --exact``: a service line ``UDP  VIP:PORT`` and
    its ``  -> RS:PORT CONNS INPKTS OUTPKTS INBYTES OUTBYTES`` lines."""
    want = endpoint(service["vip"], service["port"])
    out, current = {}, None
    for line in stats.splitlines():
        tokens = line.split()
        if len(tokens) != 7 or not all(re.match(r"^[0-9]+[KMGT]?$", t) for t in tokens[2:]):
            continue  # the titles
        if not all(t.isdigit() for t in tokens[2:]):
            raise ValueError("ipvsadm --stats without --exact rounds to K, M, ...: %r" % line)
        if tokens[0] != "->":
            current = tokens[0] == "UDP" and _source(tokens[1]) == want
        elif current:
            out[_source(tokens[1])] = int(tokens[3])
    return out


def counter_delta(before, after):
    """Datagrams per label between two readings; a counter that went back
    (the ruleset was reloaded during the run) makes the reading useless."""
    delta = {}
    for label, value in after.items():
        delta[label] = value - before.get(label, 0)
        if delta[label] < 0:
            raise ValueError("counter of %s went from %d to %d: reset during the run" % (
                label, before[label], value))
    return delta
