# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: spread_weights
short_description: Expected weight per real server of one inventory service, drains applied
version_added: 0.2.0
author: datagram.director developers (!UNKNOWN)
description:
  - Builds the O(datagram.director.spread_check#filter:weights) of the spread judgment
    from the INVENTORY (one C(director_services)
    item), never from the plan, so the plan's round-robin order is judged, not trusted.
  - A real server's weight is its C(weight) (default 1). Under the C(rr) scheduler (the
    default) every weight > 0 counts as 1, as the README defines C(rr). A real server that
    the health program reports drained counts 0.
  - A real server is labelled C(names[address]) when O(names) has its address (the host
    name the lab echo answers), else C(address:port) (C([v6]:port)); real servers that
    share a label add their weights.
positional: health_status, names
options:
  _input:
    description: One item of C(director_services) (C(name), C(port), C(scheduler), C(real_servers)).
    type: dict
    required: true
  health_status:
    description:
      - The health program's state, C(datagram-director-health --status --json) on the VRRP
        master, for its C(drained) flags. Null or omitted - nothing is drained.
    type: dict
  names:
    description: "Real-server address to label, for example C({'203.0.113.21': 'dd-rs1'})."
    type: dict
notes:
  - The logic lives in C(plugins/module_utils/spread.py) (C(expected_weights)).
"""

EXAMPLES = r"""
- name: Weights 2:1:1:1 by host name, with the drains of the master director
  ansible.builtin.set_fact:
    __weights: "{{ director_services[0] | datagram.director.spread_weights(__status.stdout | from_json, __names) }}"

- name: Weights by address:port
  ansible.builtin.debug:
    msg: "{{ {'name': 'nf', 'port': 2055, 'scheduler': 'wrr', 'real_servers': [{'address': '203.0.113.21', 'weight': 2}]}
             | datagram.director.spread_weights }}"
  # {'203.0.113.21:2055': 2}
"""

RETURN = r"""
_value:
  description: Weight per real-server label.
  type: dict
  sample: {"dd-rs1": 2, "dd-rs2": 1, "dd-rs3": 0}
"""


from ansible_collections.datagram.director.plugins.module_utils import spread


def spread_weights(service, health_status=None, names=None):
    return spread.expected_weights(dict(service), health_status or None, dict(names or {}))


class FilterModule(object):
    def filters(self):
        return {"spread_weights": spread_weights}
