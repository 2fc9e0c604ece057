# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: drill_figures
short_description: Takeover, duplicate VIPs and forwarded datagrams of a failover drill from both directors' samples
version_added: 0.2.0
author: datagram.director developers (!UNKNOWN)
description:
  - Reads the samples that the drill's sampler took on each director (C(playbooks/drills/sampler.py)),
    one line C(TIME MASK FORWARDED) per sample, seconds since the epoch (the directors share one
    clock in the lab), a bit mask of the VIPs the director held (bit i for the i-th VIP) and what
    its data plane had forwarded to the drilled service's real servers so far (the sum of its
    per-real-server counters; V(-1) when unreadable).
  - C(takeover_s) is the time from O(fault) to the first sample in which the new master's
    OWN forwarding counter exceeds its value at the fault (the first datagram it forwarded), so
    its resolution is the sampling step. A counter with no reading before the fault (a director
    that boots after it) counts from 0.
  - A director's state lasts until its next sample, and after its last one for O(stale) seconds
    at most, so a director killed mid-drill (its samples end) holds nothing afterwards.
  - A figure that the samples cannot show is V(null) and named in C(missing).
positional: fault, old, new, vips
options:
  _input:
    description:
      - Per director, its samples oldest first, each a line C(TIME MASK FORWARDED) or a three-item list
        (the lines of the sampler's file; blank lines and lines starting with C(#) are skipped).
    type: dict
    required: true
  fault:
    description: When the fault was made, in seconds since the epoch (the clock of the samples).
    type: float
    required: true
  old:
    description: The director that was master at the fault.
    type: str
    required: true
  new:
    description: The director expected to take over.
    type: str
    required: true
  vips:
    description: How many VIPs the mask covers (all of them held is the mask with O(vips) bits set).
    type: int
    required: true
  stale:
    description: Seconds after a director's last sample during which that sample still holds.
    type: float
    default: 0.5
"""

EXAMPLES = r"""
- name: Judge a takeover
  ansible.builtin.assert:
    that:
      - __fig.missing == []
      - __fig.takeover_s <= 0.5
  vars:
    __fig: >-
      {{ {'d1': __s1.stdout_lines, 'd2': __s2.stdout_lines}
         | datagram.director.drill_figures(1764538800.1, 'd1', 'd2', 4) }}
"""

RETURN = r"""
_value:
  description: The figures of the drill, seconds counted from O(fault).
  type: dict
  contains:
    takeover_s:
      description: To the first sample in which O(new)'s forwarding counter grew after the fault, or V(null).
      type: float
    vip_takeover_s:
      description: To the first sample in which O(new) held every VIP, or V(null).
      type: float
    released_s:
      description: To the first sample in which O(old) held no VIP, or V(null) (its samples ended holding them).
      type: float
    back_s:
      description: To the first sample after its release in which O(old) held every VIP again, or V(null).
      type: float
    duplicate_s:
      description: How long both directors held one VIP or more at once, in the whole sampled time.
      type: float
    duplicate_windows:
      description: The stretches of it, each C([from, to]) in seconds from the fault.
      type: list
      elements: list
    forwarded:
      description: Per director, how much its counter grew over its samples (V(null) when never readable).
      type: dict
    forwarded_after:
      description: Per director, how much its counter grew after O(fault) (from 0 without a reading before it).
      type: dict
    step_s:
      description: The median time between two samples of a director.
      type: float
    samples:
      description: Samples per director.
      type: dict
    holding_all:
      description: Per director, in how many of its samples it held every VIP.
      type: dict
    holding_any:
      description: Per director, in how many of its samples it held one VIP or more.
      type: dict
    missing:
      description: The names of the figures above that are V(null).
      type: list
      elements: str
"""

import bisect

from ansible.errors import AnsibleFilterError

FIGURES = ("takeover_s", "vip_takeover_s", "released_s", "back_s")


def _parse(raw):
    """[(time, mask, forwarded)] from lines or triples, blank lines skipped."""
    out = []
    for item in raw:
        if isinstance(item, str) and (not item.strip() or item.lstrip().startswith("#")):
            continue
        try:
            fields = item.split() if isinstance(item, str) else list(item)
            out.append((float(fields[0]), int(fields[1]), int(fields[2])))
        except (IndexError, TypeError, ValueError):
            raise AnsibleFilterError("drill_figures: a sample must be 'TIME MASK FORWARDED', got %r" % (item,))
    return sorted(out)


def _state(samples, when, stale):
    """The mask in force at `when`: the last sample at or before it, for at most `stale` after the last one."""
    i = bisect.bisect_right([t for t, _m, _f in samples], when) - 1
    if i < 0 or (i == len(samples) - 1 and when >= samples[i][0] + stale):
        return 0
    return samples[i][1]


def _duplicate(series, stale):
    """Seconds and windows in which every director held a VIP that another one held too."""
    times = sorted(set(t for s in series for t, _m, _f in s) | set(s[-1][0] + stale for s in series if s))
    total, windows, current = 0.0, [], None
    for t, nxt in zip(times, times[1:]):
        masks = [_state(s, t, stale) for s in series]
        shared = any(masks[i] & masks[j] for i in range(len(masks)) for j in range(i + 1, len(masks)))
        if shared:
            total += nxt - t
            current = [current[0] if current else t, nxt]
        elif current:
            windows.append(current)
            current = None
    if current:
        windows.append(current)
    return total, windows


def _first(samples, after, test):
    return next((t for t, m, f in samples if t >= after and test(m, f)), None)


def _since(t, fault):
    return None if t is None else round(t - fault, 3)


def _forwarded(samples):
    readable = [f for _t, _m, f in samples if f >= 0]
    return readable[-1] - readable[0] if readable else None


def _forwarded_after(samples, fault):
    """How much the counter grew from the last reading at or before the fault (else 0) to the last one."""
    readable = [(t, f) for t, _m, f in samples if f >= 0]
    before = [f for t, f in readable if t <= fault]
    return readable[-1][1] - (before[-1] if before else 0) if readable else None


def _median_step(samples):
    gaps = sorted(b[0] - a[0] for a, b in zip(samples, samples[1:]))
    return round(gaps[len(gaps) // 2], 3) if gaps else None


def drill_figures(samples, fault, old, new, vips, stale=0.5):
    fault, vips, stale = float(fault), int(vips), float(stale)
    if not isinstance(samples, dict) or old not in samples or new not in samples:
        raise AnsibleFilterError("drill_figures: samples must be a dict with the directors %r and %r" % (old, new))
    series = dict((name, _parse(raw)) for name, raw in samples.items())
    full = (1 << vips) - 1
    before = [f for t, _m, f in series[new] if t <= fault and f >= 0]
    # no reading before the fault: the counter was created after it, from 0
    base = before[-1] if before else 0
    takeover = _first(series[new], fault, lambda m, f: f > base)
    released = _first(series[old], fault, lambda m, f: m == 0)
    back = None if released is None else _first(series[old], released, lambda m, f: m == full)
    duplicate, windows = _duplicate(list(series.values()), stale)
    result = {
        "takeover_s": _since(takeover, fault),
        "vip_takeover_s": _since(_first(series[new], fault, lambda m, f: m == full), fault),
        "released_s": _since(released, fault),
        "back_s": _since(back, fault),
        "duplicate_s": round(duplicate, 3),
        "duplicate_windows": [[_since(a, fault), _since(b, fault)] for a, b in windows],
        "forwarded": dict((name, _forwarded(s)) for name, s in series.items()),
        "forwarded_after": dict((name, _forwarded_after(s, fault)) for name, s in series.items()),
        "step_s": _median_step(series[new]),
        "samples": dict((name, len(s)) for name, s in series.items()),
        "holding_all": dict((name, len([m for _t, m, _f in s if m == full])) for name, s in series.items()),
        "holding_any": dict((name, len([m for _t, m, _f in s if m])) for name, s in series.items()),
    }
    result["missing"] = [name for name in FIGURES if result[name] is None]
    return result


class FilterModule(object):
    def filters(self):
        return {"drill_figures": drill_figures}
