# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The flush plan: conntrack deletions, which real servers to take out of
their service and in what order, the refusals, and the wait for the entries."""

from __future__ import annotations

import pytest

from ansible_collections.datagram.director.plugins.module_utils import flowflush as ff
from ansible_collections.datagram.director.plugins.module_utils import flowtable as ft
from ansible_collections.datagram.director.plugins.module_utils import ipvsadm

from .test_flowtable import CAPTURES, ECHO_7000, SERVICES, fixture

SAVE = """\
-A -u 198.51.100.10:7000 -s rr -o
-a -u 198.51.100.10:7000 -r 203.0.113.21:7000 -m -w 1
-a -u 198.51.100.10:7000 -r 203.0.113.22:7000 -m -w 2
-a -u 198.51.100.10:7000 -r 203.0.113.23:7000 -m -w 0
"""
NO_OPS = SAVE.replace(' -s rr -o', ' -s rr')


def legacy_stuck():
    return ft.find_stuck(ft.parse_ipvs_conn(fixture('ip_vs_conn_legacy_qemu.txt', CAPTURES)), ECHO_7000, 'ipvs')


def conntrack_stuck():
    return ft.find_stuck(ft.parse_conntrack(fixture('conntrack_extended.txt')), SERVICES, 'ipvs')


# --- conntrack ----------------------------------------------------------------------

def test_conntrack_deletions_from_a_real_capture():
    stuck = conntrack_stuck()
    deletions = ff.conntrack_deletions(stuck + legacy_stuck(), '/usr/sbin/conntrack')
    assert len(deletions) == len(stuck) == 8  # the IPVS records are not conntrack's
    first = [d for d in deletions if d['client_port'] == 40001][0]
    assert first == {
        'service': 'echo', 'reason': 'nat_pinned', 'family': 'ipv4', 'client': '198.51.100.2', 'client_port': 40001,
        'vip': '198.51.100.10', 'vip_port': 7, 'reply_src': '203.0.113.21', 'zone': 0,
        'argv': ['/usr/sbin/conntrack', '--delete', '--family', 'ipv4', '--proto', 'udp',
                 '--orig-src', '198.51.100.2', '--orig-dst', '198.51.100.10', '--sport', '40001', '--dport', '7',
                 '--reply-src', '203.0.113.21', '--zone', '0']}


def test_conntrack_deletion_of_a_reply_entry_uses_its_own_tuple():
    """A reply entry (created by the real server's reply, SNATed to the VIP)
    is deleted by its original tuple: real server -> client."""
    (record,) = [r for r in conntrack_stuck() if r['reason'] == 'reply_nat_pinned' and r['client_port'] == 40055]
    (deletion,) = ff.conntrack_deletions([record])
    assert deletion['argv'][1:] == [
        '--delete', '--family', 'ipv6', '--proto', 'udp', '--orig-src', '2001:db8:2::21', '--orig-dst',
        '2001:db8:1::2', '--sport', '53', '--dport', '40055', '--reply-src', '2001:db8:1::2', '--zone', '0']


def test_conntrack_deletions_keep_the_zone_and_drop_duplicates():
    (record,) = [r for r in conntrack_stuck() if r['client_port'] == 40001]
    zoned = dict(record, entry=dict(record['entry'], zone=7))
    deletions = ff.conntrack_deletions([record, zoned, dict(record)])
    assert [d['argv'][-1] for d in deletions] == ['0', '7']
    assert [d['zone'] for d in deletions] == [0, 7]


@pytest.mark.parametrize('rc, out, err, status', [
    (0, '', 'conntrack v1.4.7 (conntrack-tools): 1 flow entries have been deleted.\n', 'deleted'),
    (1, '', 'conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n', 'already_gone'),
    (0, 'conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.', '', 'already_gone'),
    (0, '', '', 'deleted'),
    (1, '', 'conntrack v1.4.7 (conntrack-tools): Operation failed: Operation not permitted\n', None),
])
def test_deletion_status(rc, out, err, status):
    assert ff.deletion_status(rc, out, err) == status


# --- IPVS: which real servers, in what order ----------------------------------------

def test_cycles_for_the_real_legacy_capture():
    steps = ff.ipvs_cycles(legacy_stuck(), ECHO_7000, ipvsadm.parse_save(SAVE), '1\n')
    assert [(s['real_server'], s['entries_before'], s['status'], s['method'], s['weight']) for s in steps] == [
        ('203.0.113.21:7000', 1, 'would_cycle', 'masq', 1),
        ('203.0.113.22:7000', 2, 'would_cycle', 'masq', 2),
        ('203.0.113.23:7000', 2, 'would_cycle', 'masq', 0),
    ]
    assert steps[0] == dict(steps[0], service='echo', protocol='udp', vip='198.51.100.10', vip_port=7000,
                            virtual_service='198.51.100.10:7000', address='203.0.113.21', port=7000, options=[])


def test_cycles_follow_the_service_order_then_the_address():
    services = [{'name': 'second', 'vip': '198.51.100.11', 'port': 7000, 'real_servers': ECHO_7000[0]['real_servers']}]
    services += ECHO_7000
    other = [dict(r, service='second', vip='198.51.100.11') for r in legacy_stuck()]
    save = SAVE + SAVE.replace('198.51.100.10:', '198.51.100.11:')
    steps = ff.ipvs_cycles(list(reversed(legacy_stuck())) + other, services, ipvsadm.parse_save(save), '1')
    assert [(s['service'], s['real_server']) for s in steps] == [
        ('second', '203.0.113.21:7000'), ('second', '203.0.113.22:7000'), ('second', '203.0.113.23:7000'),
        ('echo', '203.0.113.21:7000'), ('echo', '203.0.113.22:7000'), ('echo', '203.0.113.23:7000')]


def test_a_real_server_missing_from_the_service_is_absent_not_refused():
    save = SAVE.replace('-a -u 198.51.100.10:7000 -r 203.0.113.23:7000 -m -w 0\n', '')
    steps = ff.ipvs_cycles(legacy_stuck(), ECHO_7000, ipvsadm.parse_save(save), '1')
    assert [(s['real_server'], s['status'], s['method'], s['weight']) for s in steps][2] == (
        '203.0.113.23:7000', 'absent', None, None)


def test_no_ipvs_entries_no_checks():
    assert ff.ipvs_cycles(conntrack_stuck(), SERVICES, {}, None) == []


@pytest.mark.parametrize('save, expire, problems', [
    (NO_OPS, '1', ['Service echo (198.51.100.10:7000) is not in one-packet scheduling']),
    (SAVE, '0\n', ["net.ipv4.vs.expire_nodest_conn is '0' (/proc/sys/net/ipv4/vs/expire_nodest_conn), not 1"]),
    (SAVE, None, ['net.ipv4.vs.expire_nodest_conn is unreadable']),
    ('', '1', ['Service echo (198.51.100.10:7000) is not in IPVS (ipvsadm -S -n)']),
    (NO_OPS, '0', ['net.ipv4.vs.expire_nodest_conn is', 'not in one-packet scheduling']),
    (SAVE.replace('-w 2', '-w 0'), '1', ['No real server of service echo (198.51.100.10:7000) but 203.0.113.21:7000 has']),
    (SAVE.replace('-w 1', '-w 0').replace('-w 2', '-w 0'), '1',
     ['but 203.0.113.21:7000 has', 'but 203.0.113.22:7000 has', 'but 203.0.113.23:7000 has']),
])
def test_refusals(save, expire, problems):
    with pytest.raises(ff.FlushRefused) as exc:
        ff.ipvs_cycles(legacy_stuck(), ECHO_7000, ipvsadm.parse_save(save), expire)
    assert len(exc.value.problems) == len(problems)
    for problem, expected in zip(exc.value.problems, problems):
        assert problem.startswith(expected) or expected in problem
    assert str(exc.value).startswith('Refusing to flush stuck IPVS entries; nothing was changed. ')


def test_count_entries():
    entries = ft.parse_ipvs_conn(fixture('ip_vs_conn_legacy_qemu.txt', CAPTURES))
    steps = ff.ipvs_cycles(legacy_stuck(), ECHO_7000, ipvsadm.parse_save(SAVE), '1')
    assert [ff.count_entries(entries, s) for s in steps] == [1, 2, 2]
    assert ff.count_entries(entries, dict(steps[0], vip_port=7001)) == 0
    assert ff.count_entries(entries, dict(steps[0], protocol='tcp')) == 0


class Clock:
    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_wait_until_gone_polls_every_50_ms():
    clock = Clock()
    counts = iter([2, 2, 1, 0])
    start = clock.now - 0.02  # ipvsadm -d ran 20 ms before
    assert ff.wait_until_gone(lambda: next(counts), 5, clock.sleep, clock, start) == 0.17
    assert clock.sleeps == [0.05, 0.05, 0.05]


def test_wait_until_gone_gives_up_after_max_wait():
    clock = Clock()
    assert ff.wait_until_gone(lambda: 3, 1, clock.sleep, clock) is None
    assert len(clock.sleeps) == 20 and clock.now - 100.0 == pytest.approx(1.0)
    assert ff.wait_until_gone(lambda: 0, 0, clock.sleep, clock) == 0
    clock.sleeps = []
    assert ff.wait_until_gone(lambda: 3, 0.12, clock.sleep, clock) is None
    assert clock.sleeps == pytest.approx([0.05, 0.05, 0.02])
