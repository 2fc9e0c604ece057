# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: health_drill
short_description: Detection, loss and recovery of a health drill from samples of a real server's counter
version_added: 0.2.0
author: datagram.director developers (!UNKNOWN)
description:
  - Reads a time series of one real server's forwarding counter (on the nftables data plane the named
    counter C(fwd_<service>_<index>)), sampled on the master director while that real server's service
    was stopped at O(stop) and started again at O(start), and returns what a health drill judges.
  - C(detection_s) is the time from the stop to the last sample in which the counter still grew before the
    start (the last datagram still sent to the dead server); C(lost_to_dead_server) is how much the counter
    grew from the stop to the start; C(recovery_s) is the time from the start to the first sample in which
    it grew again.
  - A figure that the samples cannot show is V(null) and named in C(missing), so a drill can fail on it
    instead of reading a missing observation as a perfect one.
positional: stop, start
options:
  _input:
    description:
      - The samples, oldest first, each C(TIME COUNT) (a line of text, seconds since the epoch and the
        counter value) or a two-item list.
    type: list
    elements: raw
    required: true
  stop:
    description: When the real server's service was stopped, in seconds since the epoch (the clock of the samples).
    type: float
    required: true
  start:
    description: When it was started again, on the same clock; later than O(stop).
    type: float
    required: true
"""

EXAMPLES = r"""
- name: Judge a health drill
  ansible.builtin.set_fact:
    drill: "{{ sampler.stdout_lines | datagram.director.health_drill(1764538800.10, 1764538806.12) }}"

- name: Every figure was observed
  ansible.builtin.assert:
    that: drill.missing == []
"""

RETURN = r"""
_value:
  description: The figures of the drill.
  type: dict
  contains:
    at_stop:
      description: The counter in the last sample at or before O(stop), or V(null) when no sample was that early.
      type: int
    at_start:
      description: The counter in the last sample at or before O(start), or V(null).
      type: int
    detection_s:
      description: Seconds from O(stop) to the last sample before O(start) in which the counter grew, or V(null)
        when it never grew after the stop.
      type: float
    lost_to_dead_server:
      description: How much the counter grew from O(stop) to O(start) (datagrams sent to the dead server),
        or V(null).
      type: int
    recovery_s:
      description: Seconds from O(start) to the first sample in which the counter grew again, or V(null).
      type: float
    missing:
      description: The names of the figures above that are V(null); empty when the samples show every one.
      type: list
      elements: str
"""

from ansible.errors import AnsibleFilterError

FIGURES = ("at_stop", "at_start", "detection_s", "lost_to_dead_server", "recovery_s")


def _samples(raw):
    """[(time, count)] from lines "TIME COUNT" or pairs."""
    out = []
    for item in raw:
        try:
            fields = item.split() if isinstance(item, str) else list(item)
            out.append((float(fields[0]), int(fields[1])))
        except (IndexError, TypeError, ValueError):
            raise AnsibleFilterError("health_drill: a sample must be 'TIME COUNT', got %r" % (item,))
    return out


def _growth(samples):
    """(time, count) of each sample in which the counter grew since the one before."""
    return [(t, n) for (_t0, n0), (t, n) in zip(samples, samples[1:]) if n > n0]


def _last_at_or_before(samples, when):
    counts = [n for t, n in samples if t <= when]
    return counts[-1] if counts else None


def _difference(a, b):
    return None if a is None or b is None else a - b


def health_drill(samples, stop, start):
    samples = _samples(samples)
    stop, start = float(stop), float(start)
    if start <= stop:
        raise AnsibleFilterError("health_drill: start (%s) must be later than stop (%s)" % (start, stop))
    growth = _growth(samples)
    while_dead = [t for t, _n in growth if stop < t <= start]
    after_start = [t for t, _n in growth if t > start]
    at_stop, at_start = _last_at_or_before(samples, stop), _last_at_or_before(samples, start)
    result = {
        "at_stop": at_stop,
        "at_start": at_start,
        "detection_s": round(while_dead[-1] - stop, 3) if while_dead else None,
        "lost_to_dead_server": _difference(at_start, at_stop),
        "recovery_s": round(after_start[0] - start, 3) if after_start else None,
    }
    result["missing"] = [name for name in FIGURES if result[name] is None]
    return result


class FilterModule(object):
    def filters(self):
        return {"health_drill": health_drill}
