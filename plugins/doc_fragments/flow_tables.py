# -*- coding: utf-8 -*-
# Copyright (c) datagram.director developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # The options of the flow-table audit (module_utils/flowaudit.py), shared by
    # udp_flow_info and udp_flow_flush.
    DOCUMENTATION = r"""
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
      - A missing file means that IPVS is not loaded; the IPVS table is then empty and a note says so.
      - C(/proc/net/ip_vs_conn_sync), which has an C(Origin) column, can be read too.
    type: path
    default: /proc/net/ip_vs_conn
  top_clients:
    description:
      - How many clients the summary of each service lists.
    type: int
    default: 5
"""
