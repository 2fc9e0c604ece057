# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The spread judgment (judge_spread, filter spread_check): the datagrams
each NAMED real server got against what the inventory's weights and the
current drains give it, from the echo's names (what udpgen.py, the traffic
generator, counted) or from the directors' per-real-server counters (nft
named counters, ipvsadm --stats).
"""

from __future__ import annotations

import ipaddress
import json
import re
from fractions import Fraction
from functools import reduce
from math import gcd

from ansible_collections.datagram.director.plugins.module_utils.ipvsadm import endpoint, split_endpoint

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
                 max_lost=0, slack=0, requested=None, aborted=None):
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
    one of weight > 0 absent from ``observed``. A run that sent fewer than
    ``requested`` datagrams or was ``aborted`` (the generator's reason) fails
    too: its few datagrams would prove nothing.

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
    if aborted:
        failures.append("the run stopped early: %s" % aborted)
    if requested is not None and sent != int(requested):
        failures.append("%d of %d requested datagrams were sent" % (sent, int(requested)))
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
