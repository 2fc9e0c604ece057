# -*- coding: utf-8 -*-
# Copyright (c) datagram.director developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What the udp_flow_flush module does about stuck entries, decided without
I/O (the module runs the commands).

conntrack: every stuck entry is deleted by its original tuple, reply source
and zone, so no other flow is touched.

IPVS has no per-entry delete. With ``net.ipv4.vs.expire_nodest_conn=1`` an
entry whose real server is gone is dropped at its next datagram, and that
datagram is scheduled again (per packet, on a one-packet-scheduling service).
So each real server holding stuck entries is taken out of its service
(``ipvsadm -d``) until its entries are gone and added back with the method
and weight it had: one real server at a time, never more than one out of the
pool. Measured on a real kernel (molecule/ipvs): entries gone in 0.4-0.9 s,
0 datagrams lost.

Refused, before anything changes: a service that is not in one-packet
scheduling (every datagram would create the entry again), expire_nodest_conn
other than 1 (the entries would stay), and a real server to take out while no
other real server of its service has a weight above 0 (its datagrams would have
nowhere to go).
"""

from __future__ import annotations

import ipaddress
import re

from ansible_collections.datagram.director.plugins.module_utils.flowtable import TABLE_CONNTRACK, TABLE_IPVS, address_sort_key
from ansible_collections.datagram.director.plugins.module_utils.ipvsadm import endpoint

EXPIRE_NODEST_CONN = '/proc/sys/net/ipv4/vs/expire_nodest_conn'
# conntrack-tools on stderr: "conntrack v1.4.7 (conntrack-tools): 1 flow entries have been deleted."
_DELETED = re.compile(r'(\d+) flow entries have been deleted')

STATUS_DELETED = 'deleted'
STATUS_ALREADY_GONE = 'already_gone'
STATUS_WOULD_DELETE = 'would_delete'
STATUS_CYCLED = 'cycled'
STATUS_WOULD_CYCLE = 'would_cycle'
STATUS_ABSENT = 'absent'
STATUS_KEPT = 'kept'


class FlushRefused(ValueError):
    """Flushing the IPVS entries would not work or would lose datagrams."""

    def __init__(self, problems):
        self.problems = list(problems)
        super(FlushRefused, self).__init__(
            'Refusing to flush stuck IPVS entries; nothing was changed. ' + ' '.join(self.problems))


# ---------------------------------------------------------------------------
# conntrack
# ---------------------------------------------------------------------------

def conntrack_delete_argv(entry, conntrack='conntrack'):
    """``conntrack --delete`` of exactly this entry (a parsed conntrack entry)."""
    return [conntrack, '--delete', '--family', entry['family'], '--proto', entry['protocol'],
            '--orig-src', entry['client'], '--orig-dst', entry['vip'],
            '--sport', str(entry['client_port']), '--dport', str(entry['vip_port']),
            '--reply-src', entry['real_server'], '--zone', str(entry.get('zone') or 0)]


def conntrack_deletions(stuck, conntrack='conntrack'):
    """One deletion per stuck conntrack entry, in the audit's order: the
    entry's original tuple, reply source and zone, and the argv."""
    deletions = []
    seen = set()
    for record in stuck:
        if record['table'] != TABLE_CONNTRACK:
            continue
        entry = record['entry']
        argv = conntrack_delete_argv(entry, conntrack)
        if tuple(argv) in seen:
            continue
        seen.add(tuple(argv))
        deletions.append({
            'service': record['service'],
            'reason': record['reason'],
            'family': entry['family'],
            'client': entry['client'],
            'client_port': entry['client_port'],
            'vip': entry['vip'],
            'vip_port': entry['vip_port'],
            'reply_src': entry['real_server'],
            'zone': entry.get('zone') or 0,
            'argv': argv,
        })
    return deletions


def deletion_status(rc, out, err):
    """STATUS_DELETED, STATUS_ALREADY_GONE ("0 flow entries have been
    deleted": it expired since the audit, which is the wanted outcome too),
    or None when conntrack failed."""
    found = _DELETED.search('%s\n%s' % (err, out))
    if found and int(found.group(1)) == 0:
        return STATUS_ALREADY_GONE
    if rc == 0:
        return STATUS_DELETED
    return None


# ---------------------------------------------------------------------------
# IPVS
# ---------------------------------------------------------------------------

def _problem_service(name, service_endpoint, saved_service):
    if saved_service is None:
        return ('Service %s (%s) is not in IPVS (ipvsadm -S -n): no real server can be taken out of it; '
                'its entries expire after the UDP timeout of IPVS without traffic.' % (name, service_endpoint))
    if not saved_service['ops']:
        return ('Service %s (%s) is not in one-packet scheduling (ipvsadm -S -n shows no -o): the next datagram '
                'would create each flushed entry again. Apply the ipvs role (keepalived "ops") first.'
                % (name, service_endpoint))
    return None


def real_server_now(saved, step):
    """The step's real server in ``saved`` (ipvsadm.parse_save; None if it is
    not in the service), and whether another real server of the service has
    a weight above 0 (so that removing this one leaves somewhere to go)."""
    servers = (saved.get((step['protocol'], step['virtual_service'])) or {}).get('real_servers', {})
    others = any(rs['weight'] > 0 for name, rs in servers.items() if name != step['real_server'])
    return servers.get(step['real_server']), others


def ipvs_cycles(stuck, services, saved, expire_nodest_conn):
    """The real servers to take out of their service and add back, in order.

    ``stuck``: records of flowtable.find_stuck; ``services``: the services in
    the order to work in (dicts with ``name``); ``saved``: ipvsadm.parse_save()
    of ``ipvsadm -S -n``; ``expire_nodest_conn``: the text of EXPIRE_NODEST_CONN
    (None when it could not be read).

    One step per (service, real server) with stuck IPVS entries, by service
    order, then real server address and port: ``service``, ``protocol``,
    ``virtual_service`` and ``real_server`` (endpoints), ``address`` and
    ``port`` (of the real server), ``vip`` and ``vip_port``,
    ``entries_before``, ``status`` (``would_cycle``, or ``absent`` when the
    real server is not in the service: nothing to take out, its entries go at
    their next datagram), and ``method``, ``weight``, ``options`` as saved
    (None when absent). Raises FlushRefused naming every problem.
    """
    order = dict((service['name'], index) for index, service in enumerate(services))
    steps = {}
    for record in stuck:
        if record['table'] != TABLE_IPVS:
            continue
        entry = record['entry']
        key = (record['service'], entry['real_server'], entry['real_server_port'])
        if key not in steps:
            steps[key] = {
                'service': record['service'],
                'protocol': entry['protocol'],
                'vip': record['vip'],
                'vip_port': record['port'],
                'virtual_service': endpoint(record['vip'], record['port']),
                'real_server': endpoint(entry['real_server'], entry['real_server_port']),
                'address': entry['real_server'],
                'port': entry['real_server_port'],
                'entries_before': 0,
            }
        steps[key]['entries_before'] += 1
    if not steps:
        return []
    problems = []
    value = None if expire_nodest_conn is None else expire_nodest_conn.strip()
    if value != '1':
        problems.append('net.ipv4.vs.expire_nodest_conn is %s (%s), not 1: the entries of a removed real server '
                        'would not be dropped. Apply the ipvs role (or sysctl -w net.ipv4.vs.expire_nodest_conn=1) '
                        'first.' % ('unreadable' if value is None else repr(value), EXPIRE_NODEST_CONN))

    def sort_key(step):
        return (order.get(step['service'], len(order)), step['service'], address_sort_key(step['address']), step['port'])

    ordered = sorted(steps.values(), key=sort_key)
    judged = set()
    for step in ordered:
        saved_service = saved.get((step['protocol'], step['virtual_service']))
        if step['service'] not in judged:
            judged.add(step['service'])
            problem = _problem_service(step['service'], step['virtual_service'], saved_service)
            if problem:
                problems.append(problem)
        saved_rs, others = real_server_now(saved, step)
        step.update(status=STATUS_WOULD_CYCLE if saved_rs else STATUS_ABSENT,
                    method=saved_rs['method'] if saved_rs else None,
                    weight=saved_rs['weight'] if saved_rs else None,
                    options=list(saved_rs['options']) if saved_rs else None)
        if saved_rs and not others:
            problems.append('No real server of service %s (%s) but %s has a weight above 0: taking it out would '
                            'leave its datagrams nowhere to go.'
                            % (step['service'], step['virtual_service'], step['real_server']))
    if problems:
        raise FlushRefused(problems)
    return ordered


def count_entries(entries, step):
    """How many parsed IPVS entries of the step's service still go to its real server."""
    address = str(ipaddress.ip_address(step['address']))
    vip = str(ipaddress.ip_address(step['vip']))
    return sum(1 for e in entries
               if e['protocol'] == step['protocol'] and e['vip'] == vip and e['vip_port'] == step['vip_port']
               and e['real_server'] == address and e['real_server_port'] == step['port'])


def wait_until_gone(count, max_wait, sleep, clock, start=None, interval=0.05):
    """Call ``count()`` every ``interval`` seconds until it returns 0, the
    last time ``max_wait`` seconds after ``start`` (a ``clock()`` reading;
    default: now).
    Returns the seconds from ``start`` until it did (rounded to 0.01), or None
    if entries remained."""
    if start is None:
        start = clock()
    while True:
        if count() == 0:
            return round(clock() - start, 2)
        remaining = max_wait - (clock() - start)
        if remaining < 1e-6:
            return None
        sleep(min(interval, remaining))
