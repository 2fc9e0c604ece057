# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: spread_check
short_description: Check observed replies per real server against a per-packet round robin
version_added: 0.1.0
author: datagram.director developers (!UNKNOWN)
description:
  - Compares the replies per real server that M(datagram.director.udp_spread) counted with
    the counts an exact per-packet (weighted) round robin gives for the service's sequence.
  - The sorted counts are compared, each within O(tolerance).
positional: sequence, sent
options:
  _input:
    description: Replies per real server name, RV(datagram.director.udp_spread#module:per_server).
    type: dict
    required: true
  sequence:
    description: The service's round-robin order of real-server indices (the plan's C(sequence)).
    type: list
    elements: int
    required: true
  sent:
    description: Datagrams sent.
    type: int
    required: true
  tolerance:
    description: Allowed difference per real server.
    type: int
    default: 1
"""

EXAMPLES = r"""
- name: Check a spread
  ansible.builtin.assert:
    that: (run.per_server | datagram.director.spread_check([0, 1, 2], run.sent)).ok
"""

RETURN = r"""
_value:
  description: C(ok), and the sorted C(expected) and C(observed) counts.
  type: dict
"""

from ansible_collections.datagram.director.plugins.module_utils.spread import check_spread


def spread_check(per_server, sequence, sent, tolerance=1):
    return check_spread(dict(per_server), [int(i) for i in sequence], int(sent), int(tolerance))


class FilterModule(object):
    def filters(self):
        return {"spread_check": spread_check}
