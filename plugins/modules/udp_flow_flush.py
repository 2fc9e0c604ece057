#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) datagram.director developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: udp_flow_flush
short_description: Remove stuck UDP flow entries from a director
version_added: 0.1.0
description:
  - Audits the flow tables like M(datagram.director.udp_flow_info), removes exactly the stuck entries it finds, and
    audits again. One module run does the whole flush.
  - conntrack - each stuck entry is deleted by its original tuple (family, protocol, source, destination, ports), its
    reply source and its zone (C(conntrack --delete)), so no other flow is touched. An entry that is already gone
    (C(0 flow entries have been deleted)) is fine, it expired since the audit.
  - IPVS has no per-entry delete. With C(net.ipv4.vs.expire_nodest_conn=1), an entry whose real server is gone is
    dropped at its next datagram, and that datagram is scheduled again. So each real server that holds stuck entries
    is taken out of its service (C(ipvsadm -d)) until the IPVS table holds no entry of the service for it (polled
    every 50 ms, at most O(max_wait) seconds), then added back (C(ipvsadm -a)) with the forwarding method and the
    weight C(ipvsadm -S -n) showed just before (the health program may have changed the weight). One real server at
    a time; never more than one is out of the pool. Measured on a real kernel - entries gone after 0.4 to 0.9 s,
    no datagram lost.
  - Before anything changes, the module refuses when a service with stuck IPVS entries is not in one-packet
    scheduling in C(ipvsadm -S -n) (every datagram would create the entry again) or is not in IPVS at all, when
    C(/proc/sys/net/ipv4/vs/expire_nodest_conn) is not C(1) (the entries of a removed real server would stay), and
    when no other real server of the service of a real server to take out has a weight above 0 (its datagrams would
    have nowhere to go).
  - If a real server cannot be added back, the module tries again, then fails naming the real server and the command
    that adds it back.
author:
  - datagram.director developers (!UNKNOWN)
attributes:
  check_mode:
    support: full
    description: Audits, makes the same refusal checks and returns what it would delete and which real servers it would
      take out and add back, without changing anything.
  diff_mode:
    support: none
    description: The results list every deleted entry and every real server taken out and added back.
extends_documentation_fragment:
  - datagram.director.flow_tables
options:
  max_wait:
    description:
      - Seconds to wait, per real server taken out of its service, for its IPVS entries to go.
      - The real server is added back after that time even if entries remain (an idle client's entry is only
        dropped at its next datagram); RV(after) then still lists them.
    type: float
    default: 5
notes:
  - Needs root (C(CAP_NET_ADMIN)) for conntrack and ipvsadm.
  - C(ipvsadm) is only needed, and looked up in E(PATH), when there are stuck IPVS entries.
seealso:
  - module: datagram.director.udp_flow_info
  - plugin: datagram.director.stuck_udp
    plugin_type: callback
"""

EXAMPLES = r"""
- name: Remove the stuck UDP entries of the services
  datagram.director.udp_flow_flush:
    data_plane: ipvs
    services:
      - name: echo
        vip: 198.51.100.10
        port: 7000
        real_servers:
          - address: 203.0.113.21
          - address: 203.0.113.22
          - address: 203.0.113.23
  register: flush

- name: Fail unless every stuck entry is gone
  ansible.builtin.assert:
    that: flush.after.counts.stuck == 0
    fail_msg: "{{ flush.after.summary }}"
  when: not ansible_check_mode

- name: Only the conntrack entries, with the plan of the preflight role
  datagram.director.udp_flow_flush:
    services: "{{ __director_plan.services }}"
    data_plane: "{{ __director_data_plane }}"
    tables: [conntrack]
"""

RETURN = r"""
before:
  description:
    - The audit before the flush - C(counts) (C(ipvs), C(conntrack), C(stuck), C(parse_errors)), C(stuck), C(summary),
      C(notes) and C(parse_errors), as M(datagram.director.udp_flow_info) returns them.
  returned: success, and when the module refuses
  type: dict
  sample:
    counts: {ipvs: 5, conntrack: 0, stuck: 5, parse_errors: 0}
    stuck:
      - service: echo
        vip: 198.51.100.10
        port: 7000
        reason: ipvs_entry
        role: request
        table: ipvs
        family: ipv4
        client: 198.51.100.100
        client_port: 42000
        real_server: 203.0.113.21
        real_server_port: 7000
        zone: null
        state: UDP
        expires: 299
        entry: {}
    summary:
      echo:
        vip: 198.51.100.10
        port: 7000
        stuck: 5
        by_reason: {ipvs_entry: 5}
        by_table: {ipvs: 5}
        by_real_server: {"203.0.113.21:7000": 1, "203.0.113.22:7000": 2, "203.0.113.23:7000": 2}
        clients: 1
        top_clients:
          - client: 198.51.100.100
            flows: 5
            pinned_to: ["203.0.113.21:7000", "203.0.113.22:7000", "203.0.113.23:7000"]
            max_expires: 299
    notes: []
    parse_errors: []
after:
  description:
    - The audit after the flush, with the same keys as RV(before).
    - In check mode nothing was changed, so it is RV(before).
  returned: success
  type: dict
  sample:
    counts: {ipvs: 0, conntrack: 0, stuck: 0, parse_errors: 0}
    stuck: []
    summary: {}
    notes: []
    parse_errors: []
deleted:
  description:
    - One item per stuck conntrack entry - the entry's original tuple (C(family), C(client), C(client_port), C(vip),
      C(vip_port)), C(reply_src), C(zone), the C(service) and C(reason) it was stuck for, the C(command) run and its
      C(status).
    - C(status) is V(deleted), V(already_gone) (it expired since the audit) or, in check mode, V(would_delete).
  returned: success
  type: list
  elements: dict
  sample:
    - service: echo
      reason: nat_pinned
      family: ipv4
      client: 198.51.100.100
      client_port: 41001
      vip: 198.51.100.10
      vip_port: 7000
      reply_src: 203.0.113.21
      zone: 0
      status: deleted
      command: >-
        /usr/sbin/conntrack --delete --family ipv4 --proto udp --orig-src 198.51.100.100 --orig-dst 198.51.100.10
        --sport 41001 --dport 7000 --reply-src 203.0.113.21 --zone 0
ipvs_removals:
  description:
    - One item per real server with stuck IPVS entries, in the order they were handled - C(service),
      C(protocol), C(virtual_service) and C(real_server) (C(ADDRESS:PORT), C([ADDRESS]:PORT) for IPv6), C(method)
      (V(masq), V(gatewaying) or V(ipip)), C(entries_before), C(gone_after_s) (seconds from C(ipvsadm -d) until the
      real server had no entry of the service; null if entries remained after O(max_wait)), C(out_of_pool_s)
      (seconds from C(ipvsadm -d) until it was added back), C(weight_restored) (the weight it was added back with),
      C(commands) and C(status).
    - C(status) is V(cycled) (taken out and added back), V(would_cycle) (check mode), V(absent) (the real server is
      not in the IPVS service, so there is nothing to take out; with C(expire_nodest_conn=1) its entries go at their
      next datagram) or V(kept) (not taken out because, when its turn came, no other real server of the service had a
      weight above 0, for example after the health program took them out; its entries stay).
    - When the real server was back in the service before the module added it (for example by a keepalived reload),
      C(weight_restored) is the weight it has there.
  returned: success
  type: list
  elements: dict
  sample:
    - service: echo
      protocol: udp
      virtual_service: 198.51.100.10:7000
      real_server: 203.0.113.22:7000
      method: masq
      entries_before: 2
      gone_after_s: 0.41
      out_of_pool_s: 0.47
      weight_restored: 1
      status: cycled
      commands:
        - /usr/sbin/ipvsadm -d -u 198.51.100.10:7000 -r 203.0.113.22:7000
        - /usr/sbin/ipvsadm -a -u 198.51.100.10:7000 -r 203.0.113.22:7000 -m -w 1
data_plane:
  description: The data plane the entries were judged for.
  returned: success
  type: str
  sample: ipvs
problems:
  description: Why the module refused to flush the IPVS entries (nothing was changed).
  returned: when the module refuses
  type: list
  elements: str
  sample:
    - >-
      Service echo (198.51.100.10:7000) is not in one-packet scheduling (ipvsadm -S -n shows no -o): the next datagram
      would create each flushed entry again. Apply the ipvs role (keepalived "ops") first.
"""

import shlex
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.datagram.director.plugins.module_utils import flowflush as ff
from ansible_collections.datagram.director.plugins.module_utils import ipvsadm
from ansible_collections.datagram.director.plugins.module_utils.flowaudit import (
    ARGUMENT_SPEC,
    collect,
    conntrack_bin,
    services_of,
)
from ansible_collections.datagram.director.plugins.module_utils.flowtable import parse_ipvs_conn

# Seconds between two tries to add a real server back.
READD_RETRY_DELAY = 0.2


def command_text(argv):
    return ' '.join(shlex.quote(str(arg)) for arg in argv)


class Flush:
    def __init__(self, module, services):
        self.module = module
        self.params = module.params
        self.services = services
        self.before = None
        self.deleted = []
        self.removals = []
        self.ipvsadm = None

    def audit(self):
        result = collect(self.module, self.params, self.services)
        return dict((key, result[key]) for key in ('counts', 'stuck', 'summary', 'notes', 'parse_errors'))

    def fail(self, msg, **kwargs):
        self.module.fail_json(msg=msg, before=self.before, deleted=self.deleted, ipvs_removals=self.removals,
                              data_plane=self.params['data_plane'], **kwargs)

    def saved(self, strict=True):
        """``ipvsadm -S -n``, parsed; when it fails, the module fails, or with
        ``strict=False`` (a real server is out of the pool) it is empty."""
        argv = [self.ipvsadm, '-S', '-n']
        rc, out, err = self.module.run_command(argv)
        if rc != 0:
            if not strict:
                return {}
            self.fail('%s failed (rc=%d): %s' % (command_text(argv), rc, err.strip()))
        return ipvsadm.parse_save(out, errors=[])

    def plan_ipvs(self):
        if not any(record['table'] == 'ipvs' for record in self.before['stuck']):
            return []
        self.ipvsadm = self.module.get_bin_path('ipvsadm', required=True)
        try:
            with open(ff.EXPIRE_NODEST_CONN) as handle:
                expire_nodest_conn = handle.read()
        except (IOError, OSError):
            expire_nodest_conn = None
        try:
            return ff.ipvs_cycles(self.before['stuck'], self.services, self.saved(), expire_nodest_conn)
        except ff.FlushRefused as exc:
            self.fail(str(exc), problems=exc.problems)

    def commands(self, step, real_server):
        args = (step['protocol'], step['virtual_service'], step['real_server'])
        return (ipvsadm.delete_argv(*args, ipvsadm=self.ipvsadm),
                ipvsadm.add_argv(*(args + (real_server['method'], real_server['weight'], real_server['options'])),
                                 ipvsadm=self.ipvsadm))

    def removal(self, step, status, real_server=None, commands=(), gone=None, out_of_pool=None):
        return {
            'service': step['service'],
            'protocol': step['protocol'],
            'virtual_service': step['virtual_service'],
            'real_server': step['real_server'],
            'method': real_server['method'] if real_server else None,
            'entries_before': step['entries_before'],
            'gone_after_s': gone,
            'out_of_pool_s': out_of_pool,
            'weight_restored': real_server['weight'] if real_server else None,
            'commands': [command_text(argv) for argv in commands],
            'status': status,
        }

    def delete_conntrack(self, deletion):
        argv = deletion['argv']
        record = dict((k, v) for k, v in deletion.items() if k != 'argv')
        record['command'] = command_text(argv)
        if self.module.check_mode:
            record['status'] = ff.STATUS_WOULD_DELETE
        else:
            rc, out, err = self.module.run_command(argv)
            record['status'] = ff.deletion_status(rc, out, err)
            if record['status'] is None:
                self.fail('%s failed (rc=%d): %s' % (record['command'], rc, err.strip()))
        self.deleted.append(record)

    def cycle(self, step):
        """Take one real server out of its service until its entries are gone, and add it back."""
        if step['status'] == ff.STATUS_ABSENT:
            self.removals.append(self.removal(step, ff.STATUS_ABSENT))
            return
        if self.module.check_mode:
            self.removals.append(self.removal(step, ff.STATUS_WOULD_CYCLE, step, self.commands(step, step)))
            return
        real_server, others = ff.real_server_now(self.saved(), step)
        if real_server is None:  # gone since the plan: nothing to take out
            self.removals.append(self.removal(step, ff.STATUS_ABSENT))
            return
        if not others:  # the health program took the others out since the plan
            self.removals.append(self.removal(step, ff.STATUS_KEPT))
            return
        delete, add = self.commands(step, real_server)
        start = time.monotonic()
        rc, _out, err = self.module.run_command(delete)
        if rc != 0:
            self.fail('%s failed (rc=%d): %s; %s is still in the pool.'
                      % (command_text(delete), rc, err.strip(), step['real_server']))
        try:
            gone = ff.wait_until_gone(lambda: self.remaining(step), self.params['max_wait'], time.sleep,
                                      time.monotonic, start)
        finally:  # whatever happens, the real server goes back into the pool
            real_server = self.add_back(step, real_server, add)
        self.removals.append(self.removal(step, ff.STATUS_CYCLED, real_server, (delete, add), gone,
                                          round(time.monotonic() - start, 2)))

    def remaining(self, step):
        """The step's entries in the IPVS table; None (keep waiting) when it
        cannot be read: the real server is out of the pool, so never fail here."""
        try:
            with open(self.params['ipvs_conn_path']) as handle:
                text = handle.read()
        except (IOError, OSError):
            return None
        return ff.count_entries(parse_ipvs_conn(text, errors=[]), step)

    def add_back(self, step, real_server, add):
        """Run ``add``; on failure accept the real server if it is back in the
        service (a keepalived reload re-adds it), else try once more."""
        errors = []
        for attempt in (1, 2):
            rc, _out, err = self.module.run_command(add)
            if rc == 0:
                return real_server
            errors.append('rc=%d: %s' % (rc, err.strip()))
            back = ff.real_server_now(self.saved(strict=False), step)[0]
            if back is not None:
                return back
            if attempt == 1:
                time.sleep(READD_RETRY_DELAY)
        self.fail('%s of service %s (%s) is OUT OF THE POOL: adding it back failed twice (%s). Add it back now: %s'
                  % (step['real_server'], step['service'], step['virtual_service'], '; '.join(errors),
                     command_text(add)),
                  real_server=step['real_server'], command=command_text(add))
        return None  # not reached: fail_json exits


def main():
    module = AnsibleModule(
        argument_spec=dict(
            ARGUMENT_SPEC,
            max_wait=dict(type='float', default=5.0),
        ),
        supports_check_mode=True,
    )
    if module.params['max_wait'] < 0:
        module.fail_json(msg='max_wait must not be negative')
    flush = Flush(module, services_of(module, module.params))
    flush.before = flush.audit()
    deletions = []
    if any(record['table'] == 'conntrack' for record in flush.before['stuck']):
        deletions = ff.conntrack_deletions(flush.before['stuck'], conntrack_bin(module, module.params))
    steps = flush.plan_ipvs()

    for deletion in deletions:
        flush.delete_conntrack(deletion)
    for step in steps:
        flush.cycle(step)

    if module.check_mode:
        after = flush.before
        changed = bool(flush.deleted) or any(r['status'] == ff.STATUS_WOULD_CYCLE for r in flush.removals)
    else:
        after = flush.audit()
        changed = (any(d['status'] == ff.STATUS_DELETED for d in flush.deleted)
                   or any(r['status'] == ff.STATUS_CYCLED for r in flush.removals))
    module.exit_json(changed=changed, data_plane=module.params['data_plane'], before=flush.before, after=after,
                     deleted=flush.deleted, ipvs_removals=flush.removals)


if __name__ == '__main__':
    main()
