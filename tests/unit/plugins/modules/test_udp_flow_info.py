# -*- coding: utf-8 -*-
# Copyright (c) datagram.director developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import os
from unittest import mock

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

from ansible_collections.datagram.director.plugins.modules import udp_flow_info

from ..flowtable_data import FIXTURES, SERVICES


def fixture_path(name):
    return os.path.join(FIXTURES, name)


def fixture(name):
    with open(fixture_path(name)) as handle:
        return handle.read()


class ModuleExit(Exception):
    def __init__(self, result, failed):
        super(ModuleExit, self).__init__(result)
        self.result = result
        self.failed = failed


def _exit_json(self, **kwargs):
    raise ModuleExit(kwargs, False)


def _fail_json(self, **kwargs):
    raise ModuleExit(kwargs, True)


class FakeConntrack:
    """Stands in for AnsibleModule.run_command; answers from fixture files."""

    def __init__(self, extended='conntrack_extended.txt', default='conntrack_default.txt', refuse_extended=False,
                 rc=0, stderr=None):
        self.extended = extended
        self.default = default
        self.refuse_extended = refuse_extended
        self.rc = rc
        self.stderr = stderr
        self.calls = []

    def __call__(self, args, **kwargs):
        self.calls.append(list(args))
        if self.rc:
            return self.rc, '', self.stderr
        if '-o' in args:
            if self.refuse_extended:
                return 2, '', "conntrack v1.4.7 (conntrack-tools): Bad parameter `extended'\n"
            return 0, fixture(self.extended), fixture('conntrack_extended.stderr')
        return 0, fixture(self.default), fixture('conntrack_default.stderr')


def run(args, fake=None):
    fake = fake or FakeConntrack()
    base = {'services': SERVICES, 'conntrack_path': '/usr/sbin/conntrack',
            'ipvs_conn_path': fixture_path('ip_vs_conn.txt')}
    base.update(args)
    with patch_module_args(base):
        with mock.patch.multiple(basic.AnsibleModule, exit_json=_exit_json, fail_json=_fail_json,
                                 run_command=fake):
            with pytest.raises(ModuleExit) as exc:
                udp_flow_info.main()
    return exc.value, fake


def test_reads_both_tables():
    result, fake = run({})
    assert not result.failed
    res = result.result
    assert res['changed'] is False
    assert fake.calls == [['/usr/sbin/conntrack', '-L', '-p', 'udp', '-o', 'extended']]
    assert res['counts'] == {'ipvs': 7, 'conntrack': 15, 'stuck': 11, 'parse_errors': 0}
    assert res['notes'] == [] and res['parse_errors'] == []
    assert res['summary']['echo']['stuck'] == 7
    assert res['summary']['echo6']['stuck'] == 4
    assert res['summary']['dns']['stuck'] == 0
    assert len(res['entries']) == 22
    assert {e['protocol'] for e in res['entries']} == {'udp'}
    assert res['data_plane'] == 'ipvs'
    json.dumps(res)


def test_check_mode_is_the_same():
    normal, _fake = run({})
    checked, _fake = run({'_ansible_check_mode': True})
    assert checked.result == normal.result


def test_missing_ipvs_file_means_not_loaded(tmp_path):
    missing = str(tmp_path / 'ip_vs_conn')
    result, _fake = run({'ipvs_conn_path': missing})
    res = result.result
    assert res['counts']['ipvs'] == 0
    assert res['notes'] == ['IPVS is not loaded: %s does not exist; the ipvs table is empty.' % missing]
    assert res['counts']['stuck'] == 5


def test_unreadable_ipvs_file_fails(tmp_path):
    result, _fake = run({'ipvs_conn_path': str(tmp_path)})
    assert result.failed
    assert result.result['msg'].startswith('Cannot read %s' % tmp_path)


def test_falls_back_to_default_output():
    result, fake = run({}, FakeConntrack(refuse_extended=True))
    assert fake.calls == [['/usr/sbin/conntrack', '-L', '-p', 'udp', '-o', 'extended'],
                          ['/usr/sbin/conntrack', '-L', '-p', 'udp']]
    assert result.result['counts']['conntrack'] == 15
    assert 'does not support "-o extended"' in result.result['notes'][0]


def test_conntrack_failure():
    result, _fake = run({}, FakeConntrack(rc=1, stderr='conntrack v1.4.7 (conntrack-tools): Operation failed: '
                                                       'Operation not permitted\n'))
    assert result.failed
    assert 'Operation not permitted' in result.result['msg']
    assert result.result['rc'] == 1


def test_nftables_plane_only_conntrack_and_zone_filter():
    result, fake = run({'data_plane': 'nftables', 'tables': ['conntrack'], 'zones': [1, 2],
                        'return_entries': False})
    res = result.result
    assert res['counts'] == {'ipvs': 0, 'conntrack': 4, 'stuck': 0, 'parse_errors': 0}
    assert res['entries'] == []
    result, fake = run({'data_plane': 'nftables', 'tables': ['conntrack'], 'zones': [0]})
    assert result.result['counts']['conntrack'] == 11


def test_only_ipvs_table_does_not_run_conntrack():
    result, fake = run({'tables': ['ipvs'], 'ipvs_conn_path': fixture_path('ip_vs_conn_empty.txt')})
    assert fake.calls == []
    assert result.result['counts'] == {'ipvs': 0, 'conntrack': 0, 'stuck': 0, 'parse_errors': 0}


def test_garbage_lines_are_reported(tmp_path):
    bad = tmp_path / 'ip_vs_conn'
    bad.write_text(fixture('ip_vs_conn.txt') + 'UDP not an entry\n')
    with mock.patch.object(basic.AnsibleModule, 'warn') as warn:
        result, _fake = run({'ipvs_conn_path': str(bad)})
    res = result.result
    assert res['counts']['parse_errors'] == 1
    assert res['parse_errors'] == ["%s line 10: expected at least 9 fields in an IPVS connection row, got 4: "
                                   "'UDP not an entry'" % bad]
    warn.assert_called_once_with('Skipped an unparsable line: ' + res['parse_errors'][0])
    assert res['counts']['ipvs'] == 7


def test_top_clients_and_invalid_arguments():
    result, _fake = run({'top_clients': 1})
    assert len(result.result['summary']['echo']['top_clients']) == 1
    result, _fake = run({'top_clients': -1})
    assert result.failed and 'top_clients' in result.result['msg']
    result, _fake = run({'services': [{'name': 'x', 'vip': 'not-an-ip', 'port': 7}]})
    assert result.failed and result.result['msg'] == "Invalid services: service x: vip 'not-an-ip' is not an IP address"


def test_conntrack_found_in_path():
    with mock.patch.object(basic.AnsibleModule, 'get_bin_path', return_value='/sbin/conntrack') as gbp:
        result, fake = run({'conntrack_path': None})
    gbp.assert_called_once_with('conntrack', required=True)
    assert fake.calls[0][0] == '/sbin/conntrack'
    assert not result.failed
