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
options:
  services:
    description:
      - The load-balanced services to check, as the director plan holds them
        (C(__director_plan.services) after the datagram.director.preflight role).
      - Each needs C(name), C(vip), C(port) and C(real_servers) (each with C(address) and
        optionally C(port), defaulting to the service port); C(protocol) (only C(udp)) and
        C(reply_rewrite) (C(stateless) or C(conntrack_zones)) are optional. Other keys of the
        plan (scheduler, weights, sequence, zones, health checks) are ignored, so the plan can
        be passed as it is. Invalid services fail the module with a message naming the service.
    type: list
    elements: dict
    required: true
  data_plane:
    description:
      - V(ipvs) for IPVS with one-packet scheduling, V(nftables) for the stateless nftables data plane.
    type: str
    choices: [ipvs, nftables]
    default: ipvs
  tables:
    description:
      - Which tables to read.
    type: list
    elements: str
    choices: [ipvs, conntrack]
    default: [ipvs, conntrack]
  conntrack_path:
    description:
      - Path of the C(conntrack) program. By default it is searched in E(PATH) and the sbin directories.
      - The module runs C(conntrack -L -p udp -o extended), and C(conntrack -L -p udp) if the C(-o extended) output
        format is refused.
    type: path
  ipvs_conn_path:
    description:
      - File to read the IPVS connection table from. IPv4 and IPv6 entries share this file.
      - A missing file means that IPVS is not loaded; the IPVS table is then empty and RV(notes) says so.
      - C(/proc/net/ip_vs_conn_sync), which has an C(Origin) column, can be read too.
    type: path
    default: /proc/net/ip_vs_conn
  zones:
    description:
      - Conntrack zones to keep. C(conntrack -L) lists the entries of all zones; an empty list keeps all of them.
    type: list
    elements: int
    default: []
  top_clients:
    description:
      - How many clients RV(summary) lists per service.
    type: int
    default: 5
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

import errno

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.datagram.director.plugins.module_utils.flowtable import (
    ServiceError,
    find_stuck,
    normalize_services,
    parse_conntrack,
    parse_ipvs_conn,
    summarize,
)


def read_ipvs(module, path, notes, errors):
    try:
        with open(path) as handle:
            text = handle.read()
    except (IOError, OSError) as exc:
        if exc.errno == errno.ENOENT:
            notes.append('IPVS is not loaded: %s does not exist; the ipvs table is empty.' % path)
            return []
        module.fail_json(msg='Cannot read %s: %s' % (path, exc))
    return parse_ipvs_conn(text, source=path, errors=errors)


def read_conntrack(module, path, notes, errors):
    base = [path, '-L', '-p', 'udp']
    rc, out, err = module.run_command(base + ['-o', 'extended'])
    if rc != 0 and ('Bad parameter' in err or 'invalid option' in err or 'unrecognized option' in err):
        notes.append('%s does not support "-o extended"; read its default output.' % path)
        rc, out, err = module.run_command(base)
    if rc != 0:
        module.fail_json(msg='%s -L -p udp failed (rc=%d): %s' % (path, rc, err.strip()), rc=rc, stdout=out, stderr=err)
    return parse_conntrack(out, source='conntrack -L -p udp', errors=errors)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            services=dict(type='list', elements='dict', required=True),
            data_plane=dict(type='str', choices=['ipvs', 'nftables'], default='ipvs'),
            tables=dict(type='list', elements='str', choices=['ipvs', 'conntrack'], default=['ipvs', 'conntrack']),
            conntrack_path=dict(type='path'),
            ipvs_conn_path=dict(type='path', default='/proc/net/ip_vs_conn'),
            zones=dict(type='list', elements='int', default=[]),
            top_clients=dict(type='int', default=5),
            return_entries=dict(type='bool', default=True),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        services = normalize_services(params['services'])
    except ServiceError as exc:
        module.fail_json(msg='Invalid services: %s' % exc)
    if params['top_clients'] < 0:
        module.fail_json(msg='top_clients must not be negative')

    notes = []
    errors = []
    ipvs_entries = []
    conntrack_entries = []
    if 'ipvs' in params['tables']:
        ipvs_entries = read_ipvs(module, params['ipvs_conn_path'], notes, errors)
    if 'conntrack' in params['tables']:
        path = params['conntrack_path'] or module.get_bin_path('conntrack', required=True)
        conntrack_entries = read_conntrack(module, path, notes, errors)
        if params['zones']:
            zones = set(params['zones'])
            conntrack_entries = [e for e in conntrack_entries if e['zone'] in zones]

    protocols = set(s['protocol'] for s in services)
    ipvs_entries = [e for e in ipvs_entries if e['protocol'] in protocols]
    conntrack_entries = [e for e in conntrack_entries if e['protocol'] in protocols]
    entries = ipvs_entries + conntrack_entries

    stuck = find_stuck(entries, services, params['data_plane'])
    summary = summarize(stuck, services, params['top_clients'])
    for error in errors:
        module.warn('Skipped an unparsable line: %s' % error)

    module.exit_json(
        changed=False,
        data_plane=params['data_plane'],
        entries=entries if params['return_entries'] else [],
        stuck=stuck,
        summary=summary,
        counts=dict(ipvs=len(ipvs_entries), conntrack=len(conntrack_entries), stuck=len(stuck),
                    parse_errors=len(errors)),
        notes=notes,
        parse_errors=errors,
    )


if __name__ == '__main__':
    main()
