# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: spread_counters
short_description: Datagrams per real server between two readings of a director's counters
version_added: 0.2.0
author: datagram.director developers (!UNKNOWN)
description:
  - The second source of observed counts for
    P(datagram.director.spread_check#filter), for protocols whose replies do not name the
    real server (DNS, one-way NetFlow) - what the director itself forwarded to each real
    server of a service between two readings taken before and after a bounded stream.
  - "nftables data plane: the named counters C(fwd_<service>_<index>) of
    C(roles/nftables/templates/dataplane.nft.j2), read with
    C(nft --json list counters table netdev datagram_director)."
  - "ipvs data plane: the C(InPkts) column of C(ipvsadm -L -n --stats --exact) (without
    C(--exact) large numbers are rounded and the reading is refused)."
  - Fails when a counter is missing or went back (the ruleset was reloaded during the run).
positional: before, service, data_plane, table
options:
  _input:
    description: The reading after the stream (the command's stdout).
    type: str
    required: true
  before:
    description: The reading before the stream.
    type: str
    required: true
  service:
    description: One item of C(director_services); its C(real_servers) order gives the counter indexes.
    type: dict
    required: true
  data_plane:
    description: The resolved data plane (the C(data_plane) of the health program's state).
    type: str
    required: true
    choices: [nftables, ipvs]
  table:
    description: The nftables table (the nftables role's C(nftables_table)).
    type: str
    default: datagram_director
notes:
  - The logic lives in C(plugins/module_utils/spread.py) (C(nft_service_packets),
    C(ipvs_service_packets), C(counter_delta)).
"""

EXAMPLES = r"""
- name: Judge a one-way service from the master director's counters
  ansible.builtin.assert:
    that: __check.ok
    fail_msg: "{{ __check.failures }}"
  vars:
    __svc: "{{ director_services[0] }}"
    __counts: "{{ __after.stdout | datagram.director.spread_counters(__before.stdout, __svc, 'nftables') }}"
    __check: "{{ __counts | datagram.director.spread_check(__svc | datagram.director.spread_weights, run.sent) }}"
"""

RETURN = r"""
_value:
  description: Datagrams per real-server C(address:port) (C([v6]:port)).
  type: dict
  sample: {"203.0.113.21:2055": 1200, "203.0.113.22:2055": 600}
"""


from ansible.errors import AnsibleFilterError

from ansible_collections.datagram.director.plugins.module_utils import spread


def spread_counters(after, before, service, data_plane, table="datagram_director"):
    try:
        if data_plane == "nftables":
            read = [spread.nft_service_packets(text, dict(service), table) for text in (before, after)]
        elif data_plane == "ipvs":
            read = [spread.ipvs_service_packets(text, dict(service)) for text in (before, after)]
        else:
            raise ValueError("data_plane must be nftables or ipvs, got %r" % (data_plane,))
        return spread.counter_delta(read[0], read[1])
    except (ValueError, KeyError) as exc:
        raise AnsibleFilterError("spread_counters: %s" % exc)


class FilterModule(object):
    def filters(self):
        return {"spread_counters": spread_counters}
