#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) datagram.director developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: udp_flow_info
short_description: Find stuck UDP flow entries on a director
version_added: 0.1.0
description:
  - Reads the IPVS connection table (C(/proc/net/ip_vs_conn)) and the conntrack table (C(conntrack -L -p udp))
    of a director and reports the UDP entries that stop per-packet load balancing of the given services.
  - An entry is B(stuck) when a later datagram from the same client port would not be balanced per packet because of
    it. For an IPVS one-packet-scheduling (C(ops)) service, any IPVS UDP entry for VIP:port is stuck (OPS never hashes
    entries). A conntrack entry for VIP:port whose reply source is a real server is a flow pinned by DNAT and is
    stuck. A reply entry SNATed to VIP:port in conntrack zone 0 is stuck. On the stateless V(nftables) data plane,
    any conntrack entry of the service's traffic is stuck. Reply entries in the per-real-server conntrack zones
    (zone not 0) belong to correct reply handling and are not stuck.
  - The module changes nothing. Use the P(datagram.director.stuck_udp#callback) callback to print a recap.
author:
  - datagram.director developers (!UNKNOWN)
attributes:
  check_mode:
    support: full
    description: The module never changes anything; it runs the same in check mode.
  diff_mode:
    support: none
    description: The module never changes anything.
extends_documentation_fragment:
  - datagram.director.flow_tables
options:
  zones:
    description:
      - Conntrack zones to keep. C(conntrack -L) lists the entries of all zones; an empty list keeps all of them.
    type: list
    elements: int
    default: []
  return_entries:
    description:
      - Return every parsed UDP entry in RV(entries). Set to V(false) on directors with large tables.
    type: bool
    default: true
notes:
  - Reading the conntrack table needs root (C(CAP_NET_ADMIN)).
  - Lines that cannot be parsed are skipped, reported in RV(parse_errors) and as warnings.
seealso:
  - plugin: datagram.director.stuck_udp
    plugin_type: callback
  - module: datagram.director.udp_flow_flush
"""

EXAMPLES = r"""
- name: Look for stuck UDP entries
  datagram.director.udp_flow_info:
    data_plane: ipvs
    services:
      - name: echo
        vip: 198.51.100.10
        port: 7
        real_servers:
          - address: 203.0.113.21
          - address: 203.0.113.22
  register: flows

- name: Fail when a client is pinned to one real server
  ansible.builtin.assert:
    that: flows.counts.stuck == 0
    fail_msg: "{{ flows.summary }}"

- name: Check an IPv6 service on the nftables data plane, zone-based reply SNAT, only conntrack
  datagram.director.udp_flow_info:
    data_plane: nftables
    tables: [conntrack]
    return_entries: false
    services:
      - name: dns6
        vip: 2001:db8:1::12
        port: 53
        reply_rewrite: conntrack_zones
        real_servers:
          - address: 2001:db8:2::21
          - address: 2001:db8:2::22
"""

RETURN = r"""
entries:
  description:
    - Every parsed UDP entry of the tables read (empty if O(return_entries=false)).
    - For IPVS entries C(real_server) is the destination and C(reply_dst) the client; for conntrack entries C(client)
      and C(vip) are the original tuple's source and destination, C(real_server) and C(reply_dst) the reply tuple's.
  returned: success
  type: list
  elements: dict
  sample:
    - table: conntrack
      family: ipv4
      protocol: udp
      client: 198.51.100.2
      client_port: 40001
      vip: 198.51.100.10
      vip_port: 7
      real_server: 203.0.113.21
      real_server_port: 7
      reply_dst: 198.51.100.2
      reply_dst_port: 40001
      state: ASSURED
      expires: 119
      zone: 0
      mark: 0
      use: 1
      flags: [ASSURED]
      origin: null
      pe_name: null
      pe_data: null
      counters: null
      extra: {}
      line: 4
stuck:
  description:
    - One record per stuck entry. C(real_server) is the real server the client port is pinned to (null if none).
    - C(reason) is one of V(ipvs_entry), V(nat_pinned), V(reply_nat_pinned), V(tracked_on_stateless_plane).
  returned: success
  type: list
  elements: dict
  sample:
    - service: echo
      vip: 198.51.100.10
      port: 7
      reason: nat_pinned
      role: request
      table: conntrack
      family: ipv4
      client: 198.51.100.2
      client_port: 40001
      real_server: 203.0.113.21
      real_server_port: 7
      zone: 0
      state: ASSURED
      expires: 119
      entry: {}
summary:
  description:
    - Per service name, the number of stuck entries and the clients with the most stuck flows.
  returned: success
  type: dict
  sample:
    echo:
      vip: 198.51.100.10
      port: 7
      stuck: 2
      by_reason: {nat_pinned: 2}
      by_table: {conntrack: 2}
      by_real_server: {"203.0.113.21:7": 1, "203.0.113.22:7": 1}
      clients: 1
      top_clients:
        - client: 198.51.100.2
          flows: 2
          pinned_to: ["203.0.113.21:7", "203.0.113.22:7"]
          max_expires: 119
counts:
  description: Numbers of UDP entries read per table, of stuck entries, and of unparsable lines.
  returned: success
  type: dict
  sample: {ipvs: 0, conntrack: 15, stuck: 8, parse_errors: 0}
notes:
  description: Remarks about the tables, for example that IPVS is not loaded.
  returned: success
  type: list
  elements: str
  sample: ["IPVS is not loaded: /proc/net/ip_vs_conn does not exist; the ipvs table is empty."]
parse_errors:
  description: Lines that could not be parsed, each with its source and line number.
  returned: success
  type: list
  elements: str
  sample: []
data_plane:
  description: The data plane the entries were judged for.
  returned: success
  type: str
  sample: ipvs
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.datagram.director.plugins.module_utils.flowaudit import ARGUMENT_SPEC, collect


def main():
    module = AnsibleModule(
        argument_spec=dict(
            ARGUMENT_SPEC,
            zones=dict(type='list', elements='int', default=[]),
            return_entries=dict(type='bool', default=True),
        ),
        supports_check_mode=True,
    )
    result = collect(module, module.params)
    if not module.params['return_entries']:
        result['entries'] = []
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()
