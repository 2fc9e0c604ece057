# -*- coding: utf-8 -*-
# Copyright (c) datagram.director developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from ansible_collections.datagram.director.plugins.callback.stuck_udp import CallbackModule
from ansible_collections.datagram.director.plugins.module_utils import flowtable as ft

from ..flowtable_data import FIXTURES, SERVICES

EXPECTED_RECAP = textwrap.dedent("""\
    director1 (data plane ipvs): 11 stuck UDP entries
      echo 198.51.100.10:7: 7 stuck (ipvs_entry: 4, nat_pinned: 3)
        198.51.100.2: 4 flows pinned to 203.0.113.21:7, 203.0.113.22:7
        198.51.100.3: 3 flows pinned to 203.0.113.21:7, [2001:db8:2::23]:7
      echo6 [2001:db8:1::10]:7: 4 stuck (ipvs_entry: 2, nat_pinned: 2)
        2001:db8:1::2: 4 flows pinned to [2001:db8:2::21]:7, [2001:db8:2::22]:7
      dns 198.51.100.12:53: no stuck entries
    director2 (data plane ipvs): no stuck UDP entries
    """)


def fixture(name):
    with open(os.path.join(FIXTURES, name)) as handle:
        return handle.read()


def module_result(ipvs='ip_vs_conn.txt', conntrack='conntrack_extended.txt', data_plane='ipvs', top=5):
    """What datagram.director.udp_flow_info returns for these fixture files."""
    entries = [e for e in ft.parse_ipvs_conn(fixture(ipvs)) + ft.parse_conntrack(fixture(conntrack))
               if e['protocol'] == 'udp']
    stuck = ft.find_stuck(entries, SERVICES, data_plane)
    return {'changed': False, 'data_plane': data_plane, 'entries': entries, 'stuck': stuck,
            'summary': ft.summarize(stuck, SERVICES, top), 'counts': {}, 'notes': [], 'parse_errors': []}


class FakeHost:
    def __init__(self, name):
        self.name = name

    def get_name(self):
        return self.name


class FakeTask:
    def __init__(self, action, resolved_action=None, delegate_to=None):
        self.action = action
        self.resolved_action = resolved_action or action
        self.delegate_to = delegate_to


class FakeResult:
    """The parts of ansible.executor.task_result.CallbackTaskResult the callback uses."""

    def __init__(self, host, task, result):
        self.host = FakeHost(host)
        self.task = task
        self.result = result


class LegacyResult:
    """Pre-2.19 TaskResult shape (_host, _task, _result)."""

    def __init__(self, host, task, result):
        self._host = FakeHost(host)
        self._task = task
        self._result = result


class FakeDisplay:
    def __init__(self):
        self.lines = []
        self.banners = []
        self.warnings = []
        self.verbosity = 0

    def display(self, msg, **kwargs):
        self.lines.append(msg)

    def banner(self, msg, **kwargs):
        self.banners.append(msg)
        self.lines.append('BANNER %s' % msg)

    def warning(self, msg, **kwargs):
        self.warnings.append(msg)


def make_callback(top_clients=5, report_path=None):
    display = FakeDisplay()
    callback = CallbackModule(display=display)
    # Options normally come from ansible.cfg / env through set_options(); see
    # test_real_playbook_run for that path.
    callback._plugin_options = {'top_clients': top_clients, 'report_path': report_path}
    return callback, display


def test_recap_text_matches_expected_output():
    callback, display = make_callback()
    flow_info = FakeTask('datagram.director.udp_flow_info')
    callback.v2_runner_on_ok(FakeResult('director1', flow_info, module_result()))
    callback.v2_runner_on_ok(FakeResult('director2', flow_info,
                                        module_result('ip_vs_conn_empty.txt', 'conntrack_empty.txt')))
    callback.v2_playbook_on_stats(None)
    assert display.banners == ['STUCK UDP RECAP']
    assert display.lines[0] == 'BANNER STUCK UDP RECAP'
    assert '\n'.join(display.lines[1:]) == EXPECTED_RECAP
    assert display.warnings == []


def test_short_name_legacy_result_and_top_clients(tmp_path):
    report = tmp_path / 'report.json'
    callback, display = make_callback(top_clients=1, report_path=str(report))
    callback.v2_runner_on_ok(LegacyResult('director1', FakeTask('udp_flow_info'), module_result()))
    callback.v2_playbook_on_stats(None)
    assert display.lines[1:5] == [
        'director1 (data plane ipvs): 11 stuck UDP entries',
        '  echo 198.51.100.10:7: 7 stuck (ipvs_entry: 4, nat_pinned: 3)',
        '    198.51.100.2: 4 flows pinned to 203.0.113.21:7, 203.0.113.22:7',
        '    ... and 1 more client',
    ]
    data = json.loads(report.read_text())
    director = data['directors']['director1']
    assert director['stuck'] == 11
    assert director['services']['echo']['clients'] == 2
    assert len(director['services']['echo']['top_clients']) == 1
    assert len(director['entries']) == 11
    assert all('entry' not in record for record in director['entries'])


def test_ignores_other_tasks_failures_and_loops():
    callback, display = make_callback()
    callback.v2_runner_on_ok(FakeResult('director1', FakeTask('ansible.builtin.debug'), module_result()))
    failed = dict(module_result(), failed=True)
    callback.v2_runner_on_ok(FakeResult('director1', FakeTask('udp_flow_info'), failed))
    callback.v2_runner_on_ok(FakeResult('director1', FakeTask('udp_flow_info'), {'msg': 'no stuck key'}))
    # A loop's final result carries "results"; only the items count.
    loop = {'results': [module_result()], 'changed': False}
    callback.v2_runner_on_ok(FakeResult('director1', FakeTask('udp_flow_info'), loop))
    callback.v2_playbook_on_stats(None)
    assert display.lines == []


def test_loop_items_resolved_action_and_delegation():
    callback, display = make_callback()
    # Called by a short name resolved through the "collections" keyword.
    task = FakeTask('flow_check', resolved_action='datagram.director.udp_flow_info', delegate_to='director9')
    callback.v2_runner_item_on_ok(FakeResult('localhost', task, module_result('ip_vs_conn_empty.txt')))
    last = module_result('ip_vs_conn_empty.txt', 'conntrack_empty.txt', data_plane='nftables')
    callback.v2_runner_item_on_ok(FakeResult('localhost', task, last))
    callback.v2_playbook_on_stats(None)
    # The latest result of each service wins.
    assert display.lines[1:] == ['director9 (data plane nftables): no stuck UDP entries', '']


def test_flush_counts_with_its_audit_after_the_flush():
    callback, display = make_callback()
    flush = FakeTask('datagram.director.udp_flow_flush')
    before = module_result()
    after = module_result('ip_vs_conn_empty.txt', 'conntrack_empty.txt')
    result = {'changed': True, 'data_plane': 'ipvs', 'deleted': [], 'ipvs_removals': [],
              'before': dict((k, before[k]) for k in ('counts', 'stuck', 'summary', 'notes', 'parse_errors')),
              'after': dict((k, after[k]) for k in ('counts', 'stuck', 'summary', 'notes', 'parse_errors'))}
    callback.v2_runner_on_ok(FakeResult('director1', flush, result))
    # A failed flush says nothing about what is left.
    callback.v2_runner_on_ok(FakeResult('director2', flush, dict(result, failed=True)))
    callback.v2_playbook_on_stats(None)
    assert display.lines[1:] == ['director1 (data plane ipvs): no stuck UDP entries', '']
    # ... and with stuck entries left, they are what the recap shows.
    callback, display = make_callback()
    callback.v2_runner_on_ok(FakeResult('director1', FakeTask('udp_flow_flush'), dict(result, after=result['before'])))
    report = callback.build_report()
    assert report['director1']['stuck'] == len(before['stuck']) > 0


def test_nftables_plane_tracked_entries_are_pinned_to_no_real_server():
    callback, display = make_callback()
    services = [{'name': 'stream', 'vip': '198.51.100.13', 'port': 5000,
                 'real_servers': [{'address': '203.0.113.21'}, {'address': '203.0.113.22'}]}]
    entries = ft.parse_conntrack(fixture('conntrack_default.txt'))
    stuck = ft.find_stuck(entries, services, 'nftables')
    result = {'data_plane': 'nftables', 'stuck': stuck, 'summary': ft.summarize(stuck, services)}
    callback.v2_runner_on_ok(FakeResult('d1', FakeTask('udp_flow_info'), result))
    callback.v2_playbook_on_stats(None)
    assert display.lines[1:] == [
        'd1 (data plane nftables): 3 stuck UDP entries',
        '  stream 198.51.100.13:5000: 3 stuck (tracked_on_stateless_plane: 3)',
        '    198.51.100.2: 3 flows tracked, pinned to no real server',
        '',
    ]


def test_unwritable_report_warns(tmp_path):
    callback, display = make_callback(report_path=str(tmp_path / 'missing' / 'report.json'))
    callback.v2_runner_on_ok(FakeResult('d1', FakeTask('udp_flow_info'), module_result()))
    callback.v2_playbook_on_stats(None)
    assert len(display.warnings) == 1
    assert 'cannot write the report' in display.warnings[0]


# ---------------------------------------------------------------------------
# A real ansible-playbook run against localhost
# ---------------------------------------------------------------------------

PLAYBOOK = """\
- name: Check the directors
  hosts: directors
  gather_facts: false
  collections:
    - datagram.director
  tasks:
    - name: Read the flow tables (FQCN)
      datagram.director.udp_flow_info:
        conntrack_path: {fake_conntrack}
        ipvs_conn_path: "{{{{ ipvs_file }}}}"
        services: "{{{{ services }}}}"
      register: flows

    - name: Read them again by the short name, in a loop
      udp_flow_info:
        conntrack_path: {fake_conntrack}
        ipvs_conn_path: "{{{{ ipvs_file }}}}"
        services: ["{{{{ item }}}}"]
      loop: "{{{{ services }}}}"
      loop_control:
        label: "{{{{ item.name }}}}"
"""


@pytest.mark.skipif(shutil.which('ansible-playbook', path=os.path.dirname(sys.executable)) is None,
                    reason='ansible-playbook is not installed next to this python')
def test_real_playbook_run(tmp_path, collections_path):
    fake = tmp_path / 'conntrack'
    fake.write_text('#!/bin/sh\n# fake conntrack for the test: print a captured table\ncat "%s"\n'
                    % os.path.join(FIXTURES, 'conntrack_extended.txt'))
    fake.chmod(0o755)
    (tmp_path / 'playbook.yml').write_text(PLAYBOOK.format(fake_conntrack=fake))
    inventory = {
        'directors': {
            'vars': {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable,
                     'services': SERVICES},
            'hosts': {
                'director1': {'ipvs_file': os.path.join(FIXTURES, 'ip_vs_conn.txt')},
                'director2': {'ipvs_file': os.path.join(tmp_path, 'no-ipvs-here')},
            },
        },
    }
    (tmp_path / 'inventory.json').write_text(json.dumps(inventory))
    (tmp_path / 'ansible.cfg').write_text('[defaults]\ncallbacks_enabled = datagram.director.stuck_udp\n'
                                          '[callback_stuck_udp]\ntop_clients = 1\n')
    report = tmp_path / 'report.json'
    env = dict(os.environ, ANSIBLE_CONFIG=str(tmp_path / 'ansible.cfg'), ANSIBLE_COLLECTIONS_PATH=collections_path,
               ANSIBLE_CALLBACK_STUCK_UDP_REPORT_PATH=str(report), ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0',
               ANSIBLE_LOCAL_TEMP=str(tmp_path / 'tmp'), ANSIBLE_HOME=str(tmp_path / 'home'), COLUMNS='80')
    env.pop('ANSIBLE_CALLBACKS_ENABLED', None)
    env.pop('ANSIBLE_STDOUT_CALLBACK', None)
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'),
                           '-i', str(tmp_path / 'inventory.json'), str(tmp_path / 'playbook.yml')],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    # The default stdout callback still runs.
    assert 'PLAY RECAP' in out
    recap = out[out.index('STUCK UDP RECAP'):].splitlines()[1:]
    assert '\n'.join(recap).strip() == textwrap.dedent("""\
        director1 (data plane ipvs): 11 stuck UDP entries
          echo 198.51.100.10:7: 7 stuck (ipvs_entry: 4, nat_pinned: 3)
            198.51.100.2: 4 flows pinned to 203.0.113.21:7, 203.0.113.22:7
            ... and 1 more client
          echo6 [2001:db8:1::10]:7: 4 stuck (ipvs_entry: 2, nat_pinned: 2)
            2001:db8:1::2: 4 flows pinned to [2001:db8:2::21]:7, [2001:db8:2::22]:7
          dns 198.51.100.12:53: no stuck entries
        director2 (data plane ipvs): 5 stuck UDP entries
          echo 198.51.100.10:7: 3 stuck (nat_pinned: 3)
            198.51.100.2: 2 flows pinned to 203.0.113.21:7, 203.0.113.22:7
            ... and 1 more client
          echo6 [2001:db8:1::10]:7: 2 stuck (nat_pinned: 2)
            2001:db8:1::2: 2 flows pinned to [2001:db8:2::21]:7, [2001:db8:2::22]:7
          dns 198.51.100.12:53: no stuck entries""")
    data = json.loads(report.read_text())
    assert sorted(data['directors']) == ['director1', 'director2']
    assert data['directors']['director2']['stuck'] == 5


@pytest.mark.skipif(shutil.which('ansible-doc', path=os.path.dirname(sys.executable)) is None,
                    reason='ansible-doc is not installed next to this python')
def test_ansible_doc_shows_the_options(collections_path):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path, ANSIBLE_NOCOLOR='1')
    ansible_doc = os.path.join(os.path.dirname(sys.executable), 'ansible-doc')
    proc = subprocess.run([ansible_doc, '-t', 'callback', 'datagram.director.stuck_udp'], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    for text in ('report_path', 'top_clients', 'ANSIBLE_CALLBACK_STUCK_UDP_REPORT_PATH',
                 'ANSIBLE_CALLBACK_STUCK_UDP_TOP_CLIENTS', 'callback_stuck_udp'):
        assert text in proc.stdout
    proc = subprocess.run([ansible_doc, 'datagram.director.udp_flow_info'], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert 'ipvs_conn_path' in proc.stdout
