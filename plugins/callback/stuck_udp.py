# -*- coding: utf-8 -*-
# Copyright (c) datagram.director developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: stuck_udp
type: aggregate
short_description: Recap of stuck UDP flow entries per director
version_added: 0.1.0
description:
  - Collects the results of M(datagram.director.udp_flow_info) tasks (called by their full or short name) and, at the
    end of the playbook, prints a C(STUCK UDP RECAP) section with one block per director.
  - A M(datagram.director.udp_flow_flush) task counts with the audit it makes after flushing
    (its RV(datagram.director.udp_flow_flush#module:after) result),
    so the recap of C(flush_stuck.yml) shows what is left.
  - Each block lists, per service, the number of stuck entries and the clients with the most stuck flows together
    with the real server each client is pinned to.
  - When a director runs several M(datagram.director.udp_flow_info) tasks, the latest result of each service counts.
  - Optionally writes the same data as a JSON report.
  - Works next to any stdout callback; it must be enabled.
author:
  - datagram.director developers (!UNKNOWN)
requirements:
  - Enable the callback in C(ansible.cfg) (C(callbacks_enabled = datagram.director.stuck_udp) in C([defaults]))
    or with E(ANSIBLE_CALLBACKS_ENABLED).
options:
  report_path:
    description:
      - Write a JSON report of all directors to this file at the end of the playbook.
      - No report is written when unset.
    type: path
    env:
      - name: ANSIBLE_CALLBACK_STUCK_UDP_REPORT_PATH
    ini:
      - section: callback_stuck_udp
        key: report_path
  top_clients:
    description:
      - How many pinned clients to list per service.
    type: int
    default: 5
    env:
      - name: ANSIBLE_CALLBACK_STUCK_UDP_TOP_CLIENTS
    ini:
      - section: callback_stuck_udp
        key: top_clients
seealso:
  - module: datagram.director.udp_flow_info
  - module: datagram.director.udp_flow_flush
"""

EXAMPLES = r"""
# ansible.cfg:
#   [defaults]
#   callbacks_enabled = datagram.director.stuck_udp
#
#   [callback_stuck_udp]
#   top_clients = 3
#   report_path = /tmp/stuck-udp.json
#
# or: ANSIBLE_CALLBACKS_ENABLED=datagram.director.stuck_udp ansible-playbook check.yml
#
# Output at the end of the playbook:
#
# STUCK UDP RECAP ***************************************************************
# director1 (data plane ipvs): 3 stuck UDP entries
#   echo 198.51.100.10:7: 3 stuck (nat_pinned: 3)
#     198.51.100.2: 2 flows pinned to 203.0.113.21:7, 203.0.113.22:7
#     198.51.100.3: 1 flow pinned to 203.0.113.21:7
# director2 (data plane ipvs): no stuck UDP entries
"""

import json

from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.callback import CallbackBase

from ansible_collections.datagram.director.plugins.module_utils.flowtable import format_endpoint, summarize

MODULE_NAMES = frozenset((
    'datagram.director.udp_flow_info',
    'udp_flow_info',
))
# Their result holds the audits before and after the flush; the recap shows "after".
FLUSH_MODULE_NAMES = frozenset((
    'datagram.director.udp_flow_flush',
    'udp_flow_flush',
))


class CallbackModule(CallbackBase):
    """Print a recap of stuck UDP entries found by datagram.director.udp_flow_info."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'datagram.director.stuck_udp'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display=None):
        super(CallbackModule, self).__init__(display=display)
        # director -> {'data_plane': str, 'services': {name: {'service': dict, 'stuck': [records]}}}
        self.directors = {}

    # -- collecting -------------------------------------------------------

    @staticmethod
    def _task(result):
        task = getattr(result, 'task', None)
        return task if task is not None else getattr(result, '_task', None)

    @staticmethod
    def _result(result):
        data = getattr(result, 'result', None)
        return data if data is not None else getattr(result, '_result', {})

    @staticmethod
    def _host(result):
        host = getattr(result, 'host', None)
        return host if host is not None else getattr(result, '_host', None)

    @staticmethod
    def _is(task, names):
        if task is None:
            return False
        if getattr(task, 'action', None) in names:
            return True
        # Only sampled in v2_runner_on_ok (no loop) / v2_runner_item_on_ok, where it is resolved.
        return getattr(task, 'resolved_action', None) in names

    def _audit(self, task, data):
        """The udp_flow_info-shaped result of a collected task, else None."""
        if self._is(task, MODULE_NAMES):
            return data
        if self._is(task, FLUSH_MODULE_NAMES) and isinstance(data, dict) and isinstance(data.get('after'), dict):
            if data.get('failed') or data.get('skipped'):
                return None
            return dict(data['after'], data_plane=data.get('data_plane'))
        return None

    def _director(self, result):
        task = self._task(result)
        host = self._host(result)
        name = host.get_name() if host is not None else 'localhost'
        delegate_to = getattr(task, 'delegate_to', None)
        if delegate_to and delegate_to != name:
            return to_text(delegate_to)
        return to_text(name)

    def _collect(self, result, data):
        if not isinstance(data, dict) or data.get('failed') or data.get('skipped'):
            return
        if not isinstance(data.get('stuck'), list) or not isinstance(data.get('summary'), dict):
            return
        director = self.directors.setdefault(self._director(result), {'data_plane': None, 'services': {}})
        director['data_plane'] = data.get('data_plane') or director['data_plane']
        records = {}
        for record in data['stuck']:
            if isinstance(record, dict):
                records.setdefault(record.get('service'), []).append(record)
        for name, item in data['summary'].items():
            service = {'name': name, 'vip': item.get('vip'), 'port': item.get('port')}
            director['services'][name] = {'service': service, 'stuck': records.get(name, [])}

    def v2_runner_on_ok(self, result):
        data = self._result(result)
        if isinstance(data, dict) and isinstance(data.get('results'), list):
            return  # a loop: the items arrive through v2_runner_item_on_ok
        audit = self._audit(self._task(result), data)
        if audit is not None:
            self._collect(result, audit)

    def v2_runner_item_on_ok(self, result):
        audit = self._audit(self._task(result), self._result(result))
        if audit is not None:
            self._collect(result, audit)

    # -- reporting --------------------------------------------------------

    def _top_clients(self):
        try:
            return max(0, int(self.get_option('top_clients')))
        except (KeyError, TypeError, ValueError):
            return 5

    def build_report(self):
        """Return the report as a dict: director -> data plane, stuck count, per-service summary."""
        top = self._top_clients()
        report = {}
        for director in sorted(self.directors):
            data = self.directors[director]
            services = [item['service'] for item in data['services'].values()]
            stuck = [record for item in data['services'].values() for record in item['stuck']]
            report[director] = {
                'data_plane': data['data_plane'],
                'stuck': len(stuck),
                'services': summarize(stuck, services, top),
                'entries': [dict((k, v) for k, v in record.items() if k != 'entry') for record in stuck],
            }
        return report

    @staticmethod
    def format_report(report):
        """Return the recap lines (without the banner) for a report from build_report()."""
        lines = []
        for director, data in report.items():
            head = '%s (data plane %s): ' % (director, data.get('data_plane') or 'unknown')
            count = data.get('stuck', 0)
            if not count:
                lines.append(head + 'no stuck UDP entries')
                continue
            lines.append(head + '%d stuck UDP %s' % (count, 'entry' if count == 1 else 'entries'))
            for name, item in data['services'].items():
                where = format_endpoint(item.get('vip'), item.get('port'))
                if not item['stuck']:
                    lines.append('  %s %s: no stuck entries' % (name, where))
                    continue
                reasons = ', '.join('%s: %d' % kv for kv in item['by_reason'].items())
                lines.append('  %s %s: %d stuck (%s)' % (name, where, item['stuck'], reasons))
                for client in item['top_clients']:
                    flows = '%d flow%s' % (client['flows'], '' if client['flows'] == 1 else 's')
                    if client['pinned_to']:
                        lines.append('    %s: %s pinned to %s' % (client['client'], flows, ', '.join(client['pinned_to'])))
                    else:
                        lines.append('    %s: %s tracked, pinned to no real server' % (client['client'], flows))
                more = item['clients'] - len(item['top_clients'])
                if more > 0:
                    lines.append('    ... and %d more client%s' % (more, '' if more == 1 else 's'))
        return lines

    def v2_playbook_on_stats(self, stats):
        if not self.directors:
            return
        report = self.build_report()
        self._display.banner('STUCK UDP RECAP')
        for line in self.format_report(report):
            self._display.display(line)
        self._display.display('')
        path = self.get_option('report_path')
        if path:
            try:
                with open(path, 'w') as handle:
                    json.dump({'directors': report}, handle, indent=2, sort_keys=True)
                    handle.write('\n')
            except (IOError, OSError) as exc:
                self._display.warning('stuck_udp: cannot write the report to %s: %s' % (path, to_text(exc)))
