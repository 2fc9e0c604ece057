# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure arithmetic of the data-plane benchmark (no I/O, unit-tested).

A sample is one path in one sender run (one case, one round):
``{"sent": N, "cpu_ns": sender thread CPU, "extra_ns": CPU of a userspace
peer, "received": {real server: count}}``.  Every ratio is computed inside
one run, where all paths shared the same seconds.
"""

from __future__ import annotations

import re


def per_datagram_ns(sample):
    """CPU per datagram (ns): the sending thread's own clock plus a peer's."""
    if not sample["sent"]:
        raise ValueError("no datagram sent")
    return (sample["cpu_ns"] + sample.get("extra_ns", 0)) / sample["sent"]


def director_ratio(path_ns, path_base_ns, route_ns, route_base_ns):
    """The director's part of a path as a ratio to plain routing's part.

    Each path's own no-director baseline (same receiver pattern) is
    subtracted first: spreading a batch over several receivers costs the
    sender more than the whole routing does.
    """
    routing = route_ns - route_base_ns
    if routing <= 0:
        raise ValueError("plain routing cost nothing over its baseline (%.1f ns): no reference" % routing)
    return (path_ns - path_base_ns) / routing


def lost(sample):
    """Datagrams sent on a path and received by none of its real servers."""
    return sample["sent"] - sum(sample["received"].values())


def median(values):
    """The median of a non-empty list."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("median of nothing")
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2.0


def summary(values):
    """(median, min, max) of a non-empty list."""
    return median(values), min(values), max(values)


def per_packet(received, sent, tolerance=0.02):
    """True when every named real server got its equal share of one port's
    datagrams (within ``tolerance`` of the sent count), False otherwise."""
    if not received or not sent:
        return False
    share = float(sent) / len(received)
    return all(abs(count - share) <= tolerance * sent for count in received.values())


def problems(results, paths):
    """What the quick mode asserts: every path measured in every run and
    nothing lost.  ``results``: list of runs, each ``{path: sample}``."""
    found = []
    if not results:
        found.append("no run")
    for index, run in enumerate(results):
        for name in paths:
            sample = run.get(name)
            if sample is None or not sample["sent"]:
                found.append("run %d: %s not measured" % (index, name))
            elif lost(sample):
                found.append("run %d: %s lost %d of %d" % (index, name, lost(sample), sample["sent"]))
    return found


_COUNTER_DECL = re.compile(r"^    counter \S+ \{\n(?:        .*\n)*?    \}\n", re.M)
_FRAGMENT_RULE = re.compile(r"^.*(?:frag-off|exthdr frag).*\n", re.M)
# a named counter, or one picked from an anonymous map (the fragment rule's)
_NAMED_COUNTER = re.compile(r' counter name (?:"[^"]*"|\S+ \S+ map \{[^}]*\})')


def without_counters(text):
    """A ruleset without its named counters (declarations and references)."""
    return _NAMED_COUNTER.sub("", _COUNTER_DECL.sub("", text))


def without_fragment_rules(text):
    """A ruleset without the rules that match fragments."""
    return _FRAGMENT_RULE.sub("", text)


def with_same_port_rewrite(text, port):
    """The shipped ruleset of one service on ``port`` as it was before a port
    was rewritten only when it changes: every real server's chain sets the
    (unchanged) port too."""
    return text.replace(' counter name "fwd_', ' udp dport set %d counter name "fwd_' % port)


def lean_ruleset(text):
    """The shipped ruleset without its named counters and fragment rules
    (the same dispatch, rewrite and fwd otherwise)."""
    return without_counters(without_fragment_rules(text))


def fmt_range(values, digits=2):
    """'median (min-max)' of a list of ratios."""
    mid, low, high = summary(values)
    return "%.*f (%.*f-%.*f)" % (digits, mid, digits, low, digits, high)
