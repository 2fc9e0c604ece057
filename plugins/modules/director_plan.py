#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: director_plan
short_description: Validate the director inventory and derive the configuration plan
version_added: 0.1.0
description:
  - Reads the C(director_*) variables of the running host and the per-host variables
    (C(director_vrrp_priority), C(director_frontend_address), C(director_backend_address))
    of both directors, checks the whole model and returns the derived plan that the
    roles render (VRRP instances with unicast peers, services with their per-packet
    round-robin order, conntrack zones per real server).
  - Runs on the controller only (action plugin), so an invalid inventory fails before
    any host is touched. Every problem is listed with the variable, the bad value and
    what is expected.
author:
  - datagram.director developers (!UNKNOWN)
attributes:
  check_mode:
    support: full
    description: Nothing is changed in any mode.
  diff_mode:
    support: none
    description: Nothing is changed, so there is nothing to diff.
  action:
    support: full
    description: The logic runs on the controller.
options:
  directors:
    description:
      - Inventory host names of the director pair. Exactly two.
      - Defaults to the members of the C(directors) group.
    type: list
    elements: str
notes:
  - The checks live in C(plugins/module_utils/model.py); the unit tests call them directly.
"""

EXAMPLES = r"""
- name: Validate the inventory before any change
  datagram.director.director_plan:
  register: __director_plan_result

- name: Validate an explicit pair
  datagram.director.director_plan:
    directors: [lb1, lb2]
"""

RETURN = r"""
plan:
  description: The derived plan, the interface between the roles (each role reads its part).
  returned: success
  type: dict
  contains:
    data_plane:
      description: C(auto), C(ipvs) or C(nftables), as configured (the preflight role resolves C(auto)).
      type: str
      sample: auto
    vrrp:
      description: VRRP settings of the pair - C(version), C(advert_int), C(preempt), C(preempt_delay), C(sync_group)
        and C(notify).
      type: dict
    frontend:
      description: The client-facing side - C(interface), C(vips), C(gateways) per family (C(ipv4), C(ipv6)) and the
        C(networks) of the VIPs.
      type: dict
    backend:
      description: The real-server side - C(interface), C(gateway_vips) (the real servers' default gateway) and the
        C(networks) of those VIPs.
      type: dict
    directors:
      description: Per director, its peer, priority, own addresses and VRRP instances with unicast source and peer.
      type: dict
    director_addresses:
      description: Every address of the directors themselves (never a VIP or a real server).
      type: list
      elements: str
    services:
      description:
        - The normalised services; C(sequence) is the per-packet order of real-server indices.
        - C(flow_templates), C(template_match) and C(mirrors) are null or empty when off.
      type: list
      elements: dict
    families:
      description: IP versions the services use (C(4), C(6)).
      type: list
      elements: int
      sample: [4, 6]
    copies:
      description:
        - The receivers of copies on the nftables data plane (real servers of services with C(flow_templates), mirrors), each once.
        - Keys C(family), C(address), C(port), C(interface) (the director's interface the copy leaves by).
      type: list
      elements: dict
    zones:
      description: Conntrack zone per real-server address (the conntrack_zones reply rewrite).
      type: dict
"""

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec=dict(directors=dict(type="list", elements="str")),
                           supports_check_mode=True)
    module.fail_json(msg="datagram.director.director_plan runs on the controller as an action plugin")


if __name__ == "__main__":
    main()
