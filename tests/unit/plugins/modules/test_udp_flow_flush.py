# -*- coding: utf-8 -*-
# Copyright (c) datagram.director developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""udp_flow_flush against a fake director: conntrack and ipvsadm answer from
the real captures and change them as the kernel would."""

from __future__ import annotations

import json
import os
from unittest import mock

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

from ansible_collections.datagram.director.plugins.module_utils import flowflush as ff
from ansible_collections.datagram.director.plugins.module_utils import flowtable as ft
from ansible_collections.datagram.director.plugins.module_utils import ipvsadm
from ansible_collections.datagram.director.plugins.modules import udp_flow_flush

from ..flowtable_data import SERVICES
from ..module_utils.test_flowtable import CAPTURES
from .test_udp_flow_info import ModuleExit, _exit_json, _fail_json, fixture

# The flowtable_data services and the service of the real IPVS captures.
FLUSH_SERVICES = SERVICES + [{'name': 'stream', 'vip': '198.51.100.10', 'port': 7000,
                              'real_servers': [{'address': '203.0.113.%d' % n} for n in (21, 22, 23)]}]
SAVE = """\
-A -u 198.51.100.10:7000 -s rr -o
-a -u 198.51.100.10:7000 -r 203.0.113.21:7000 -m -w 1
-a -u 198.51.100.10:7000 -r 203.0.113.22:7000 -m -w 2
-a -u 198.51.100.10:7000 -r 203.0.113.23:7000 -m -w 0
"""
IPVSADM = '/usr/sbin/ipvsadm'
CONNTRACK = '/usr/sbin/conntrack'


class FakeDirector:
    """Stands in for AnsibleModule.run_command. conntrack -L lists a captured
    table and --delete removes the matching entries; ipvsadm -S -n prints
    ``save``, -d removes the real server and (as expire_nodest_conn=1 does at
    their next datagram) its rows of the IPVS connection file, -a adds it."""

    def __init__(self, tmp_path, conntrack='conntrack_extended.txt', save=SAVE, expire='1\n'):
        self.conntrack_lines = [line for line in fixture(conntrack).splitlines() if line.strip()]
        self.ipvs_path = str(tmp_path / 'ip_vs_conn')
        with open(os.path.join(CAPTURES, 'ip_vs_conn_legacy_qemu.txt')) as handle:
            self.write_ipvs(handle.read().splitlines())
        self.expire_path = str(tmp_path / 'expire_nodest_conn')
        with open(self.expire_path, 'w') as handle:
            handle.write(expire)
        self.save = save.splitlines()
        self.calls = []
        self.out = set()
        self.most_out = 0
        self.drop_on_delete = True
        self.delete_rc = 0
        self.add_failures = 0
        self.keepalived_readds = None   # weight keepalived re-adds a real server with after a failed -a
        self.expire_after_listing = ()  # client ports whose conntrack entries expire right after -L
        self.delete_error = None
        self.after_first_save = None

    def write_ipvs(self, lines):
        with open(self.ipvs_path, 'w') as handle:
            handle.write('\n'.join(lines) + '\n')

    def __call__(self, args, **kwargs):
        args = [str(a) for a in args]
        self.calls.append(args)
        if os.path.basename(args[0]) == 'conntrack':
            return self.conntrack(args)
        return self.ipvsadm(args)

    def conntrack(self, args):
        if '-L' in args:
            out = '\n'.join(self.conntrack_lines) + '\n'
            self.conntrack_lines = [line for line in self.conntrack_lines
                                    if ft.parse_conntrack_line(line)['client_port'] not in self.expire_after_listing]
            return 0, out, 'conntrack v1.4.7 (conntrack-tools): %d flow entries have been shown.\n' % out.count('\n')
        if self.delete_error:
            return 1, '', self.delete_error
        want = dict(zip(args[2::2], args[3::2]))
        keep = []
        for line in self.conntrack_lines:
            e = ft.parse_conntrack_line(line)
            if [e['family'], e['protocol'], e['client'], e['vip'], str(e['client_port']), str(e['vip_port']),
                    e['real_server'], str(e['zone'])] != [want[k] for k in (
                    '--family', '--proto', '--orig-src', '--orig-dst', '--sport', '--dport', '--reply-src', '--zone')]:
                keep.append(line)
        deleted = len(self.conntrack_lines) - len(keep)
        self.conntrack_lines = keep
        return (0 if deleted else 1), '', 'conntrack v1.4.7 (conntrack-tools): %d flow entries have been deleted.\n' % deleted

    def ipvsadm(self, args):
        if args[1:] == ['-S', '-n']:
            out = '\n'.join(self.save) + '\n'
            if self.after_first_save:
                self.after_first_save(self)
                self.after_first_save = None
            return 0, out, ''
        service, real_server = args[3], args[5]
        line = '-a %s %s -r %s ' % (args[2], service, real_server)
        if args[1] == '-d':
            if self.delete_rc:
                return self.delete_rc, '', 'Memory allocation problem\n'
            self.save = [s for s in self.save if not s.startswith(line)]
            self.out.add(real_server)
            self.most_out = max(self.most_out, len(self.out))
            if self.drop_on_delete:
                self.drop_rows(service, real_server)
            return 0, '', ''
        assert args[1] == '-a'
        if self.add_failures:
            self.add_failures -= 1
            if self.keepalived_readds is not None:
                self.save.append(line + '-m -w %d' % self.keepalived_readds)
                self.out.discard(real_server)
            return 255, '', 'Memory allocation problem\n'
        self.save.append(' '.join(args[1:]))
        self.out.discard(real_server)
        return 0, '', ''

    def drop_rows(self, service, real_server):
        with open(self.ipvs_path) as handle:
            lines = handle.read().splitlines()
        keep = [lines[0]]
        for row in lines[1:]:
            e = ft.parse_ipvs_conn_line(row)
            if (ipvsadm.endpoint(e['vip'], e['vip_port']), ipvsadm.endpoint(e['real_server'], e['real_server_port'])) \
                    != (service, real_server):
                keep.append(row)
        self.write_ipvs(keep)

    def ipvsadm_calls(self):
        return [c[1:] for c in self.calls if c[0] == IPVSADM]


def run(tmp_path, args=None, fake=None):
    fake = fake or FakeDirector(tmp_path)
    base = {'services': FLUSH_SERVICES, 'conntrack_path': CONNTRACK, 'ipvs_conn_path': fake.ipvs_path}
    base.update(args or {})
    with patch_module_args(base):
        with mock.patch.multiple(basic.AnsibleModule, exit_json=_exit_json, fail_json=_fail_json, run_command=fake,
                                 get_bin_path=lambda self, name, required=False, opt_dirs=None: '/usr/sbin/' + name):
            with mock.patch.object(ff, 'EXPIRE_NODEST_CONN', fake.expire_path):
                with pytest.raises(ModuleExit) as exc:
                    udp_flow_flush.main()
    return exc.value, fake


def cycle(real_server, weight, method='-m'):
    return [['-S', '-n'], ['-d', '-u', '198.51.100.10:7000', '-r', real_server],
            ['-a', '-u', '198.51.100.10:7000', '-r', real_server, method, '-w', str(weight)]]


def test_flushes_conntrack_and_ipvs_one_real_server_at_a_time(tmp_path):
    result, fake = run(tmp_path)
    assert not result.failed, result.result
    res = result.result
    assert res['changed'] is True
    assert res['before']['counts'] == {'ipvs': 5, 'conntrack': 15, 'stuck': 10, 'parse_errors': 0}
    assert res['after']['counts'] == {'ipvs': 0, 'conntrack': 10, 'stuck': 0, 'parse_errors': 0}
    assert sorted(res['before']) == ['counts', 'notes', 'parse_errors', 'stuck', 'summary']
    assert sorted((d['service'], d['client_port'], d['reason'], d['status']) for d in res['deleted']) == [
        ('echo', 40001, 'nat_pinned', 'deleted'), ('echo', 40002, 'nat_pinned', 'deleted'),
        ('echo', 40003, 'nat_pinned', 'deleted'), ('echo6', 40004, 'nat_pinned', 'deleted'),
        ('echo6', 40005, 'nat_pinned', 'deleted')]
    assert res['deleted'][0]['command'].startswith(CONNTRACK + ' --delete --family ')
    removals = res['ipvs_removals']
    assert [(r['real_server'], r['entries_before'], r['weight_restored'], r['method'], r['status']) for r in removals] == [
        ('203.0.113.21:7000', 1, 1, 'masq', 'cycled'), ('203.0.113.22:7000', 2, 2, 'masq', 'cycled'),
        ('203.0.113.23:7000', 2, 0, 'masq', 'cycled')]
    assert all(0 <= r['gone_after_s'] <= r['out_of_pool_s'] < 1 for r in removals)
    assert removals[0]['commands'] == [IPVSADM + ' -d -u 198.51.100.10:7000 -r 203.0.113.21:7000',
                                       IPVSADM + ' -a -u 198.51.100.10:7000 -r 203.0.113.21:7000 -m -w 1']
    # Planned (and refusable) before any change, then conntrack, then one real server after the other.
    assert fake.ipvsadm_calls() == [['-S', '-n']] + cycle('203.0.113.21:7000', 1) + cycle('203.0.113.22:7000', 2) \
        + cycle('203.0.113.23:7000', 0)
    first_change = min(i for i, c in enumerate(fake.calls) if '--delete' in c or '-d' in c)
    assert fake.calls[first_change - 1] == [IPVSADM, '-S', '-n']
    assert fake.most_out == 1 and fake.out == set()
    assert sorted(fake.save) == sorted(SAVE.splitlines())
    json.dumps(res)


def test_the_weight_of_the_moment_is_restored(tmp_path):
    """The health program changed a weight after the plan: the real server
    comes back with the weight it had when it was taken out."""
    fake = FakeDirector(tmp_path, conntrack='conntrack_empty.txt')

    def health_program(fake):
        fake.save = [line.replace('203.0.113.22:7000 -m -w 2', '203.0.113.22:7000 -m -w 3') for line in fake.save]
    fake.after_first_save = health_program
    result, fake = run(tmp_path, fake=fake)
    assert [r['weight_restored'] for r in result.result['ipvs_removals']] == [1, 3, 0]
    assert ['-a', '-u', '198.51.100.10:7000', '-r', '203.0.113.22:7000', '-m', '-w', '3'] in fake.ipvsadm_calls()


def test_check_mode_changes_nothing(tmp_path):
    result, fake = run(tmp_path, {'_ansible_check_mode': True})
    res = result.result
    assert not result.failed and res['changed'] is True
    assert not [c for c in fake.calls if '--delete' in c or '-d' in c or '-a' in c]
    assert {d['status'] for d in res['deleted']} == {'would_delete'} and len(res['deleted']) == 5
    assert [(r['real_server'], r['status'], r['weight_restored'], r['gone_after_s']) for r in res['ipvs_removals']] == [
        ('203.0.113.21:7000', 'would_cycle', 1, None), ('203.0.113.22:7000', 'would_cycle', 2, None),
        ('203.0.113.23:7000', 'would_cycle', 0, None)]
    assert res['ipvs_removals'][2]['commands'][1] == IPVSADM + ' -a -u 198.51.100.10:7000 -r 203.0.113.23:7000 -m -w 0'
    assert res['after'] == res['before']


@pytest.mark.parametrize('save, expire, check_mode, message', [
    (SAVE.replace(' -s rr -o', ' -s rr'), '1\n', False, 'Service stream (198.51.100.10:7000) is not in one-packet'),
    (SAVE, '0\n', False, "net.ipv4.vs.expire_nodest_conn is '0'"),
    (SAVE, '0\n', True, "net.ipv4.vs.expire_nodest_conn is '0'"),
])
def test_refuses_before_changing_anything(tmp_path, save, expire, check_mode, message):
    result, fake = run(tmp_path, {'_ansible_check_mode': check_mode}, FakeDirector(tmp_path, save=save, expire=expire))
    assert result.failed
    res = result.result
    assert res['msg'].startswith('Refusing to flush stuck IPVS entries; nothing was changed. ')
    assert message in res['msg'] and len(res['problems']) == 1
    assert res['before']['counts']['stuck'] == 10 and res['deleted'] == [] and res['ipvs_removals'] == []
    assert fake.ipvsadm_calls() == [['-S', '-n']]
    assert not [c for c in fake.calls if '--delete' in c]


def test_an_expired_conntrack_entry_is_fine(tmp_path):
    fake = FakeDirector(tmp_path)
    fake.expire_after_listing = (40001,)
    result, fake = run(tmp_path, {'tables': ['conntrack']}, fake)
    res = result.result
    assert not result.failed and res['changed'] is True
    assert [d['status'] for d in res['deleted'] if d['client_port'] == 40001] == ['already_gone']
    assert [d['status'] for d in res['deleted']].count('deleted') == 4
    assert res['after']['counts']['stuck'] == 0
    assert fake.ipvsadm_calls() == [] and res['ipvs_removals'] == []


def test_a_failed_conntrack_delete_fails(tmp_path):
    fake = FakeDirector(tmp_path)
    fake.delete_error = 'conntrack v1.4.7 (conntrack-tools): Operation failed: Operation not permitted\n'
    result, fake = run(tmp_path, {}, fake)
    assert result.failed
    assert result.result['msg'].startswith(CONNTRACK + ' --delete --family ')
    assert result.result['msg'].endswith('failed (rc=1): %s' % fake.delete_error.strip())
    assert fake.ipvsadm_calls() == [['-S', '-n']]


def test_add_back_is_tried_again(tmp_path):
    fake = FakeDirector(tmp_path, conntrack='conntrack_empty.txt')
    fake.add_failures = 1
    result, fake = run(tmp_path, fake=fake)
    assert not result.failed
    assert [r['status'] for r in result.result['ipvs_removals']] == ['cycled'] * 3
    delete = ['-d', '-u', '198.51.100.10:7000', '-r', '203.0.113.21:7000']
    add = ['-a', '-u', '198.51.100.10:7000', '-r', '203.0.113.21:7000', '-m', '-w', '1']
    assert fake.ipvsadm_calls()[:6] == [['-S', '-n'], ['-S', '-n'], delete, add, ['-S', '-n'], add]
    assert fake.out == set()


def test_add_back_accepts_a_real_server_keepalived_put_back(tmp_path):
    fake = FakeDirector(tmp_path, conntrack='conntrack_empty.txt')
    fake.add_failures = 1
    fake.keepalived_readds = 4
    result, fake = run(tmp_path, fake=fake)
    assert [r['weight_restored'] for r in result.result['ipvs_removals']] == [4, 2, 0]


def test_a_real_server_that_cannot_be_added_back_fails_loudly(tmp_path):
    fake = FakeDirector(tmp_path, conntrack='conntrack_empty.txt')
    fake.add_failures = 2
    result, fake = run(tmp_path, fake=fake)
    assert result.failed
    res = result.result
    assert res['msg'] == (
        '203.0.113.21:7000 of service stream (198.51.100.10:7000) is OUT OF THE POOL: adding it back failed twice '
        '(rc=255: Memory allocation problem; rc=255: Memory allocation problem). Add it back now: '
        '/usr/sbin/ipvsadm -a -u 198.51.100.10:7000 -r 203.0.113.21:7000 -m -w 1')
    assert res['real_server'] == '203.0.113.21:7000'
    assert res['command'] == IPVSADM + ' -a -u 198.51.100.10:7000 -r 203.0.113.21:7000 -m -w 1'
    assert res['ipvs_removals'] == [] and res['before']['counts']['stuck'] == 5
    # Tried twice, looked whether it was back after each failure.
    assert fake.ipvsadm_calls()[2:] == [['-d', '-u', '198.51.100.10:7000', '-r', '203.0.113.21:7000'],
                                        res['command'].split()[1:], ['-S', '-n'], res['command'].split()[1:],
                                        ['-S', '-n']]
    # Nothing else was taken out.
    assert [c for c in fake.ipvsadm_calls() if c[0] == '-d'] == [['-d', '-u', '198.51.100.10:7000', '-r',
                                                                  '203.0.113.21:7000']]


def test_a_failed_remove_fails(tmp_path):
    fake = FakeDirector(tmp_path, conntrack='conntrack_empty.txt')
    fake.delete_rc = 2
    result, fake = run(tmp_path, fake=fake)
    assert result.failed
    assert result.result['msg'] == (IPVSADM + ' -d -u 198.51.100.10:7000 -r 203.0.113.21:7000 failed (rc=2): '
                                    'Memory allocation problem; 203.0.113.21:7000 is still in the pool.')
    assert [c[0] for c in fake.ipvsadm_calls()] == ['-S', '-S', '-d']


def test_entries_that_stay_are_reported(tmp_path):
    """An idle client's entry is only dropped at its next datagram: after
    max_wait the real server comes back anyway, and the audit says so."""
    fake = FakeDirector(tmp_path, conntrack='conntrack_empty.txt')
    fake.drop_on_delete = False
    result, fake = run(tmp_path, {'max_wait': 0.1}, fake)
    res = result.result
    assert not result.failed and res['changed'] is True
    assert [(r['gone_after_s'], r['status']) for r in res['ipvs_removals']] == [(None, 'cycled')] * 3
    assert all(r['out_of_pool_s'] >= 0.1 for r in res['ipvs_removals'])
    assert res['after']['counts']['stuck'] == 5
    assert fake.out == set()


def test_a_real_server_missing_from_ipvs_is_left_alone(tmp_path):
    save = SAVE.replace('-a -u 198.51.100.10:7000 -r 203.0.113.23:7000 -m -w 0\n', '')
    result, fake = run(tmp_path, {}, FakeDirector(tmp_path, conntrack='conntrack_empty.txt', save=save))
    res = result.result
    assert [(r['real_server'], r['status'], r['commands']) for r in res['ipvs_removals']][2] == (
        '203.0.113.23:7000', 'absent', [])
    assert not [c for c in fake.ipvsadm_calls() if '203.0.113.23:7000' in c]
    assert res['after']['counts']['stuck'] == 2


def test_nothing_stuck_changes_nothing(tmp_path):
    fake = FakeDirector(tmp_path, conntrack='conntrack_empty.txt')
    fake.write_ipvs([ft.IPVS_CONN_HEADER])
    with mock.patch.object(basic.AnsibleModule, 'get_bin_path') as get_bin_path:
        with patch_module_args({'services': FLUSH_SERVICES, 'conntrack_path': CONNTRACK,
                                'ipvs_conn_path': fake.ipvs_path}):
            with mock.patch.multiple(basic.AnsibleModule, exit_json=_exit_json, fail_json=_fail_json, run_command=fake):
                with pytest.raises(ModuleExit) as exc:
                    udp_flow_flush.main()
    res = exc.value.result
    assert res['changed'] is False and res['deleted'] == [] and res['ipvs_removals'] == []
    assert res['before']['counts']['stuck'] == 0 and res['after']['counts']['stuck'] == 0
    get_bin_path.assert_not_called()
    assert fake.ipvsadm_calls() == []


def test_invalid_arguments(tmp_path):
    result, _fake = run(tmp_path, {'max_wait': -1})
    assert result.failed and result.result['msg'] == 'max_wait must not be negative'
    result, _fake = run(tmp_path, {'services': [{'name': 'x', 'vip': '198.51.100.10', 'port': 0}]})
    assert result.failed and result.result['msg'].startswith('Invalid services: service x: port')


def test_the_last_real_server_with_weight_stays(tmp_path):
    """The health program set the others' weights to 0 after the plan: the
    real server is not taken out, its entries stay, the others are flushed."""
    fake = FakeDirector(tmp_path, conntrack='conntrack_empty.txt')

    def health_program(fake):
        fake.save = [line.replace('-w 2', '-w 0') for line in fake.save]
    fake.after_first_save = health_program
    result, fake = run(tmp_path, fake=fake)
    res = result.result
    assert not result.failed and res['changed'] is True
    assert [(r['real_server'], r['status'], r['commands']) for r in res['ipvs_removals']] == [
        ('203.0.113.21:7000', 'kept', []), ('203.0.113.22:7000', 'cycled', [
            IPVSADM + ' -d -u 198.51.100.10:7000 -r 203.0.113.22:7000',
            IPVSADM + ' -a -u 198.51.100.10:7000 -r 203.0.113.22:7000 -m -w 0']),
        ('203.0.113.23:7000', 'cycled', [
            IPVSADM + ' -d -u 198.51.100.10:7000 -r 203.0.113.23:7000',
            IPVSADM + ' -a -u 198.51.100.10:7000 -r 203.0.113.23:7000 -m -w 0'])]
    assert res['after']['counts']['stuck'] == 1
    assert not [c for c in fake.ipvsadm_calls() if '203.0.113.21:7000' in c]


def test_an_unreadable_table_while_out_of_the_pool_only_waits(tmp_path):
    """The IPVS table cannot be read while a real server is out: wait until
    max_wait, add it back, never fail with the real server out."""
    fake = FakeDirector(tmp_path, conntrack='conntrack_empty.txt')
    real_delete = fake.ipvsadm

    def ipvsadm(args):
        result = real_delete(args)
        if args[1] == '-d':
            os.rename(fake.ipvs_path, fake.ipvs_path + '.hidden')
            os.mkdir(fake.ipvs_path)  # reading it fails with EISDIR
        elif args[1] == '-a':
            os.rmdir(fake.ipvs_path)
            os.rename(fake.ipvs_path + '.hidden', fake.ipvs_path)
        return result
    fake.ipvsadm = ipvsadm
    result, fake = run(tmp_path, {'max_wait': 0.1}, fake)
    assert not result.failed, result.result
    assert [(r['status'], r['gone_after_s']) for r in result.result['ipvs_removals']] == [('cycled', None)] * 3
    assert fake.out == set()


def test_ipvsadm_save_failing_while_out_of_the_pool_still_says_out_of_the_pool(tmp_path):
    fake = FakeDirector(tmp_path, conntrack='conntrack_empty.txt')
    fake.add_failures = 2
    real = fake.ipvsadm

    def ipvsadm(args):
        if args[1] == '-S' and fake.out:
            return 2, '', 'Can\'t initialize ipvs\n'
        return real(args)
    fake.ipvsadm = ipvsadm
    result, fake = run(tmp_path, fake=fake)
    assert result.failed and 'is OUT OF THE POOL' in result.result['msg']
