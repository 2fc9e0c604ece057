# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: spread_check
short_description: Judge a per-packet spread real server by real server against the inventory's weights
version_added: 0.1.0
author: datagram.director developers (!UNKNOWN)
description:
  - Compares the datagrams each NAMED real server got (the echo names that
    M(datagram.director.udp_spread) counted, or the directors' per-real-server counters)
    with what the inventory's weights give it. The expectation is computed from the weights
    alone (O(sent) x weight / sum of weights), never from the plan's round-robin sequence.
  - "Each server must hold between the fewest and the most slots that O(sent) consecutive
    slots of a round-robin cycle can give it: with the weights reduced by their gcd to w per
    cycle of S, a run of k x S + r datagrams gives k x w + max(0, r - (S - w)) to
    k x w + min(w, r). 3000 datagrams at 1:1:1 or 2:1:1:1 must spread exactly
    (1000/1000/1000, 1200/600/600/600)."
  - Every datagram not answered (or not counted) lowers each lower bound by one; O(slack)
    widens both bounds for traffic the run did not send.
  - Fails for a server not in O(weights), a server of weight > 0 missing from the input, a
    server of weight 0 (drained) that got traffic, more than O(max_lost) datagrams lost,
    any reply whose source is not O(vip):O(port), and a run that was O(aborted) or sent
    fewer than O(requested) datagrams.
  - Its companions build the inputs - P(datagram.director.spread_weights#filter) the
    O(weights) from the inventory, P(datagram.director.spread_counters#filter) the datagrams
    per real server from the directors' counters.
positional: weights, sent
options:
  _input:
    description:
      - Datagrams per real-server label, for example
        RV(datagram.director.udp_spread#module:per_server) or the output of C(spread_counters).
    type: dict
    required: true
  weights:
    description:
      - Expected weight per real-server label, from the inventory (C(spread_weights)).
    type: dict
    required: true
  sent:
    description: Datagrams sent.
    type: int
    required: true
  received:
    description: Datagrams answered or counted; default the sum of the input.
    type: int
  reply_sources:
    description:
      - Replies per source C(address:port), RV(datagram.director.udp_spread#module:reply_sources).
        Omit it for a protocol that does not answer.
    type: dict
  vip:
    description: The service address every reply must come from (with O(reply_sources)).
    type: str
  port:
    description: The service port every reply must come from (with O(reply_sources)).
    type: int
  max_lost:
    description: Datagrams that may go unanswered (or uncounted).
    type: int
    default: 0
  slack:
    description: Datagrams per real server that other traffic may add or take.
    type: int
    default: 0
  requested:
    description:
      - Datagrams the run was asked to send, RV(datagram.director.udp_spread#module:requested);
        the judgment fails unless O(sent) equals it (a run that stopped early proves nothing).
    type: int
    version_added: 0.2.0
  aborted:
    description:
      - Why the run stopped early, RV(datagram.director.udp_spread#module:aborted); any
        value fails the judgment.
    type: str
    version_added: 0.2.0
notes:
  - The logic lives in C(plugins/module_utils/spread.py) (C(judge_spread)).
  - The bounds assume that the run's datagrams took consecutive slots of the service's round
    robin, that is no other traffic to the VIP:port during the run (else O(slack)), and one client at a time
    (playbooks/verify.yml sends from the clients in turn).
"""

EXAMPLES = r"""
- name: Judge what the echo answered
  ansible.builtin.assert:
    that: __check.ok
    fail_msg: "{{ __check.failures }}"
  vars:
    __weights: "{{ director_services[0] | datagram.director.spread_weights(__health_status, {'203.0.113.21': 'rs1'}) }}"
    __check: >-
      {{ run.per_server | datagram.director.spread_check(__weights, run.sent, received=run.received,
                                                         reply_sources=run.reply_sources, vip=run.vip, port=run.port) }}

- name: Judge from the directors' counters (a protocol that names nobody)
  ansible.builtin.assert:
    that: __check.ok
  vars:
    __svc: "{{ director_services[0] }}"
    __counts: "{{ __after.stdout | datagram.director.spread_counters(__before.stdout, __svc, 'nftables') }}"
    __check: "{{ __counts | datagram.director.spread_check(__svc | datagram.director.spread_weights, run.sent) }}"
"""

RETURN = r"""
_value:
  description: The judgment.
  type: dict
  contains:
    ok:
      description: True when every check passed.
      type: bool
    sent:
      description: Datagrams sent.
      type: int
    received:
      description: Datagrams answered or counted.
      type: int
    lost:
      description: O(sent) minus RV(_value.received) (never below 0).
      type: int
    cycle:
      description: Slots of one round-robin cycle (the sum of the weights over their gcd).
      type: int
    servers:
      description:
        - Per real-server label C(weight) (null for a server not in the inventory), C(expected)
          (O(sent) x weight / sum), C(observed), C(diff) (observed - expected), C(allowed)
          (C([low, high])) and, when it fails, C(reason).
      type: dict
    failures:
      description: One sentence per failed check, naming the real server.
      type: list
      elements: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.datagram.director.plugins.module_utils import spread


def spread_check(observed, weights, sent, received=None, reply_sources=None, vip=None, port=None,
                 max_lost=0, slack=0, requested=None, aborted=None):
    if reply_sources is not None and (vip is None or port is None):
        raise AnsibleFilterError("spread_check: reply_sources needs vip and port")
    return spread.judge_spread(dict(observed or {}), dict(weights or {}), int(sent),
                               None if received is None else int(received),
                               None if reply_sources is None else dict(reply_sources),
                               vip, None if port is None else int(port), int(max_lost), int(slack),
                               None if requested is None else int(requested), aborted or None)


class FilterModule(object):
    def filters(self):
        return {"spread_check": spread_check}
