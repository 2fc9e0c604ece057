# -*- coding: utf-8 -*-
# Copyright (c) datagram.director developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The audit of a director's flow tables, shared by the modules udp_flow_info
and udp_flow_flush: read the IPVS connection table and conntrack, keep the
entries of the services' protocols (and zones), find the stuck entries and
summarise them (the definitions are in flowtable.py).

Runs in a module: reads files and runs ``conntrack`` through an AnsibleModule.
"""

from __future__ import annotations

import errno

from ansible_collections.datagram.director.plugins.module_utils.flowtable import (
    ServiceError,
    find_stuck,
    normalize_services,
    parse_conntrack,
    parse_ipvs_conn,
    summarize,
)

# The options both modules take, with the same meaning (the documentation is
# the doc fragment datagram.director.flow_tables).
ARGUMENT_SPEC = dict(
    services=dict(type='list', elements='dict', required=True),
    data_plane=dict(type='str', choices=['ipvs', 'nftables'], default='ipvs'),
    tables=dict(type='list', elements='str', choices=['ipvs', 'conntrack'], default=['ipvs', 'conntrack']),
    conntrack_path=dict(type='path'),
    ipvs_conn_path=dict(type='path', default='/proc/net/ip_vs_conn'),
    top_clients=dict(type='int', default=5),
)


def read_ipvs(module, path, notes, errors):
    """Parsed entries of ``path`` (/proc/net/ip_vs_conn); a missing file means
    IPVS is not loaded: no entries, and a note."""
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
    """Parsed UDP entries of ``conntrack -L`` (all zones)."""
    base = [path, '-L', '-p', 'udp']
    rc, out, err = module.run_command(base + ['-o', 'extended'])
    if rc != 0 and ('Bad parameter' in err or 'invalid option' in err or 'unrecognized option' in err):
        notes.append('%s does not support "-o extended"; read its default output.' % path)
        rc, out, err = module.run_command(base)
    if rc != 0:
        module.fail_json(msg='%s -L -p udp failed (rc=%d): %s' % (path, rc, err.strip()), rc=rc, stdout=out, stderr=err)
    return parse_conntrack(out, source='conntrack -L -p udp', errors=errors)


def conntrack_bin(module, params):
    return params['conntrack_path'] or module.get_bin_path('conntrack', required=True)


def services_of(module, params):
    """The validated services (flowtable.normalize_services); fails the module
    on invalid services or options."""
    try:
        services = normalize_services(params['services'])
    except ServiceError as exc:
        module.fail_json(msg='Invalid services: %s' % exc)
    if params['top_clients'] < 0:
        module.fail_json(msg='top_clients must not be negative')
    return services


def collect(module, params, services=None):
    """Read the tables named in ``params['tables']`` and judge them.

    ``params`` holds the options of ARGUMENT_SPEC, and optionally ``zones``
    (keep only these conntrack zones; empty or absent: all). Returns the
    result udp_flow_info returns: ``data_plane``, ``entries``, ``stuck``,
    ``summary``, ``counts`` (ipvs, conntrack, stuck, parse_errors), ``notes``
    and ``parse_errors``. Unparsable lines become warnings.
    """
    if services is None:
        services = services_of(module, params)
    notes = []
    errors = []
    ipvs_entries = []
    conntrack_entries = []
    if 'ipvs' in params['tables']:
        ipvs_entries = read_ipvs(module, params['ipvs_conn_path'], notes, errors)
    if 'conntrack' in params['tables']:
        conntrack_entries = read_conntrack(module, conntrack_bin(module, params), notes, errors)
        zones = set(params.get('zones') or [])
        if zones:
            conntrack_entries = [e for e in conntrack_entries if e['zone'] in zones]

    protocols = set(s['protocol'] for s in services)
    ipvs_entries = [e for e in ipvs_entries if e['protocol'] in protocols]
    conntrack_entries = [e for e in conntrack_entries if e['protocol'] in protocols]
    entries = ipvs_entries + conntrack_entries

    stuck = find_stuck(entries, services, params['data_plane'])
    for error in errors:
        module.warn('Skipped an unparsable line: %s' % error)
    return dict(
        data_plane=params['data_plane'],
        entries=entries,
        stuck=stuck,
        summary=summarize(stuck, services, params['top_clients']),
        counts=dict(ipvs=len(ipvs_entries), conntrack=len(conntrack_entries), stuck=len(stuck),
                    parse_errors=len(errors)),
        notes=notes,
        parse_errors=errors,
    )
