# -*- coding: utf-8 -*-
# Copyright (c) datagram.director developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import ipaddress
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.datagram.director.plugins.module_utils import flowtable as ft

FIXTURES = os.path.join(os.path.dirname(__file__), '..', '..', 'fixtures', 'flowtable')
# Real tables of a QEMU guest's kernel with IPVS (molecule/ipvs), kept there.
# Real tables of the QEMU guests (molecule/ipvs case d), copied from a run's
# report/captures; the tests pin their content, so they are fixtures, not live output.
CAPTURES = FIXTURES


def fixture(name, directory=FIXTURES):
    with open(os.path.join(directory, name)) as handle:
        return handle.read()


RS4 = [{'address': '203.0.113.21'}, {'address': '203.0.113.22'}]
RS6 = [{'address': '2001:db8:2::21'}, {'address': '2001:db8:2::22'}]

# The services of the scenarios in capture.sh.
SERVICES = [
    {'name': 'echo', 'vip': '198.51.100.10', 'port': 7, 'protocol': 'udp', 'real_servers': RS4,
     'reply_rewrite': 'stateless'},
    {'name': 'echo6', 'vip': '2001:db8:1::10', 'port': 7, 'real_servers': RS6},
    {'name': 'discard', 'vip': '198.51.100.10', 'port': 9, 'real_servers': RS4},
    {'name': 'dns', 'vip': '198.51.100.12', 'port': 53, 'real_servers': RS4, 'reply_rewrite': 'conntrack_zones'},
    {'name': 'dns6', 'vip': '2001:db8:1::12', 'port': 53, 'real_servers': RS6},
    {'name': 'stream', 'vip': '198.51.100.13', 'port': 5000, 'real_servers': RS4},
]

# Stuck conntrack entries in the captured tables: (service, reason, client, client_port, pinned real server)
STUCK_CONNTRACK_ANY_PLANE = {
    ('echo', 'nat_pinned', '198.51.100.2', 40001, '203.0.113.21'),
    ('echo', 'nat_pinned', '198.51.100.2', 40002, '203.0.113.22'),
    ('echo', 'nat_pinned', '198.51.100.3', 40003, '203.0.113.21'),
    ('echo6', 'nat_pinned', '2001:db8:1::2', 40004, '2001:db8:2::21'),
    ('echo6', 'nat_pinned', '2001:db8:1::2', 40005, '2001:db8:2::22'),
    ('discard', 'nat_pinned', '198.51.100.2', 40009, '203.0.113.22'),
    ('dns6', 'reply_nat_pinned', '2001:db8:1::2', 40055, '2001:db8:2::21'),
    ('dns6', 'reply_nat_pinned', '2001:db8:1::2', 40056, '2001:db8:2::21'),
}
STUCK_CONNTRACK_NFTABLES_ONLY = [
    ('stream', 'tracked_on_stateless_plane', '198.51.100.2', 45000, None),
    ('stream', 'tracked_on_stateless_plane', '198.51.100.2', 45000, None),
    ('stream', 'tracked_on_stateless_plane', '198.51.100.2', 45000, None),
]


def keys(stuck):
    return sorted((r['service'], r['reason'], r['client'], r['client_port'], r['real_server']) for r in stuck)


def flow_key(entry):
    return (entry['protocol'], entry['client'], entry['client_port'], entry['vip'], entry['vip_port'],
            entry['real_server'], entry['real_server_port'], entry['reply_dst'], entry['reply_dst_port'],
            entry['zone'], entry['mark'], entry['use'], tuple(entry['flags']))


# ---------------------------------------------------------------------------
# conntrack parsing, real captures
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('name', ['conntrack_default.txt', 'conntrack_extended.txt', 'conntrack_acct_extended.txt'])
def test_conntrack_captures_parse(name):
    entries = ft.parse_conntrack(fixture(name))
    assert len(entries) == 15
    assert all(e['table'] == 'conntrack' and e['protocol'] == 'udp' for e in entries)
    assert sorted(e['family'] for e in entries).count('ipv6') == 4
    assert {e['zone'] for e in entries} == {0, 1, 2}


def test_default_and_extended_show_the_same_flows():
    default = sorted(flow_key(e) for e in ft.parse_conntrack(fixture('conntrack_default.txt')))
    extended = sorted(flow_key(e) for e in ft.parse_conntrack(fixture('conntrack_extended.txt')))
    assert default == extended
    assert len(default) == 15


def test_conntrack_entry_fields_assured_ipv4():
    entries = ft.parse_conntrack(fixture('conntrack_extended.txt'))
    entry = [e for e in entries if e['client_port'] == 40001][0]
    assert entry == dict(entry, table='conntrack', family='ipv4', protocol='udp', client='198.51.100.2',
                         client_port=40001, vip='198.51.100.10', vip_port=7, real_server='203.0.113.21',
                         real_server_port=7, reply_dst='198.51.100.2', reply_dst_port=40001, state='ASSURED',
                         expires=119, zone=0, mark=0, use=1, flags=['ASSURED'], counters=None)


def test_conntrack_entry_fields_zone_mark_unreplied():
    entries = ft.parse_conntrack(fixture('conntrack_default.txt'))
    entry = [e for e in entries if e['client_port'] == 53 and e['vip_port'] == 40054 and e['zone'] == 2][0]
    assert entry['family'] == 'ipv4'
    assert entry['client'] == '203.0.113.22'
    assert entry['real_server'] == '198.51.100.3'
    assert entry['reply_dst'] == '198.51.100.12'
    assert entry['reply_dst_port'] == 53
    assert entry['mark'] == 42
    assert entry['flags'] == ['UNREPLIED']
    assert entry['state'] == 'UNREPLIED'


def test_conntrack_ipv6_entries():
    entries = ft.parse_conntrack(fixture('conntrack_extended.txt'))
    six = [e for e in entries if e['family'] == 'ipv6']
    assert {e['vip'] for e in six} == {'2001:db8:1::10', '2001:db8:1::2'}
    assert all(ipaddress.ip_address(e['client']).version == 6 for e in six)


def test_conntrack_counters_with_accounting():
    entries = ft.parse_conntrack(fixture('conntrack_acct_extended.txt'))
    entry = [e for e in entries if e['client_port'] == 40004][0]
    assert entry['counters'] == {'orig_packets': 3, 'orig_bytes': 156, 'reply_packets': 3, 'reply_bytes': 156}
    assert entry['real_server'] == '2001:db8:2::21'
    assert entry['flags'] == ['ASSURED']


def test_conntrack_zone_filtered_capture():
    entries = ft.parse_conntrack(fixture('conntrack_zone1.txt'))
    assert [e['zone'] for e in entries] == [1, 1]


def test_conntrack_empty_and_notice_line():
    assert ft.parse_conntrack(fixture('conntrack_empty.txt')) == []
    assert ft.parse_conntrack(fixture('conntrack_empty.stderr')) == []
    assert ft.parse_conntrack('') == []


def test_conntrack_other_protocols_and_fields():
    text = '\n'.join([
        'ipv4     2 tcp      6 431999 ESTABLISHED src=198.51.100.2 dst=198.51.100.10 sport=5555 dport=80 '
        'src=203.0.113.21 dst=198.51.100.2 sport=80 dport=5555 [ASSURED] [OFFLOAD] mark=0 zone=3 use=2 id=3735928559',
        'icmp     1 29 src=198.51.100.2 dst=198.51.100.10 type=8 code=0 id=77 src=198.51.100.10 '
        'dst=198.51.100.2 type=0 code=0 id=77 mark=0 use=1',
        'udp      17 10 src=2001:db8:1::2 dst=2001:db8:1::10 sport=1 dport=7 src=2001:db8:2::21 '
        'dst=2001:db8:1::2 sport=7 dport=1 mark=0 secctx=system_u:object_r:unlabeled_t:s0 zone-orig=4 use=1',
    ])
    tcp, icmp, udp = ft.parse_conntrack(text)
    assert (tcp['protocol'], tcp['state'], tcp['zone'], tcp['use']) == ('tcp', 'ESTABLISHED', 3, 2)
    assert tcp['flags'] == ['ASSURED', 'OFFLOAD']
    assert tcp['extra'] == {'id': '3735928559'}
    assert (icmp['protocol'], icmp['client_port'], icmp['family']) == ('icmp', None, 'ipv4')
    assert udp['state'] == 'REPLIED'
    assert udp['extra'] == {'secctx': 'system_u:object_r:unlabeled_t:s0', 'zone-orig': '4'}


GARBAGE = [
    ('hello big wide world', 'expected "PROTOCOL NUMBER"'),
    ('udp 17 30 src=198.51.100.2 dst=198.51.100.10 sport=1 dport=7', 'found 1'),
    ('udp 17 30 src=198.51.100.2 dst=198.51.100.10 sport=1 dport=7 oops '
     'src=203.0.113.21 dst=198.51.100.2 sport=7 dport=1', "unexpected field 'oops'"),
    ('udp 17 30 src=198.51.100.300 dst=198.51.100.10 sport=1 dport=7 '
     'src=203.0.113.21 dst=198.51.100.2 sport=7 dport=1', 'original tuple'),
    ('udp 17 30 src=198.51.100.2 dst=198.51.100.10 sport=1 dport=70000 '
     'src=203.0.113.21 dst=198.51.100.2 sport=7 dport=1', 'out of range'),
    ('udp 17 30 src=198.51.100.2 dst=198.51.100.10 sport=1 dport=7 '
     'src=203.0.113.21 dst=198.51.100.2 sport=7 dport=1 zone=x', "zone='x'"),
    ('ipv6 10 udp 17 30 src=198.51.100.2 dst=198.51.100.10 sport=1 dport=7 '
     'src=203.0.113.21 dst=198.51.100.2 sport=7 dport=1', 'layer 3 name'),
    ('udp 17 30 src=198.51.100.2 dst=2001:db8::1 sport=1 dport=7 '
     'src=203.0.113.21 dst=198.51.100.2 sport=7 dport=1', 'mixes IPv4 and IPv6'),
    ('udp 17 30 src=1.2.3.4 dst=1.2.3.4 sport=1 dport=7 src=1.2.3.4 dst=1.2.3.4 sport=1 dport=7 '
     'src=1.2.3.4 dst=1.2.3.4', 'more than two'),
    ('udp 17 30 dst=1.2.3.4 sport=1 dport=7 src=1.2.3.4 dst=1.2.3.4 sport=1 dport=7', 'found 1'),
    ('udp', 'too few fields'),
    ('udp 17 30 ESTAB#LISHED src=1.2.3.4', 'unexpected field'),
]


@pytest.mark.parametrize('line,message', GARBAGE)
def test_conntrack_garbage_raises_naming_the_line(line, message):
    text = fixture('conntrack_default.txt').splitlines()[0] + '\n' + line + '\n'
    with pytest.raises(ft.FlowTableParseError) as exc:
        ft.parse_conntrack(text, source='conntrack -L')
    assert exc.value.line_number == 2
    assert exc.value.line == line
    assert message in str(exc.value)
    assert str(exc.value).startswith('conntrack -L line 2: ')
    assert repr(line) in str(exc.value)


def test_conntrack_garbage_collected_when_lenient():
    good = fixture('conntrack_extended.txt').splitlines()
    text = '\n'.join([good[0], 'garbage here', good[1], '\x00\x01'])
    errors = []
    entries = ft.parse_conntrack(text, errors=errors)
    assert len(entries) == 2
    assert len(errors) == 2
    assert errors[0].startswith('conntrack line 2: ')
    assert 'line 4' in errors[1]


# ---------------------------------------------------------------------------
# /proc/net/ip_vs_conn parsing (format of ip_vs_conn_seq_show)
# ---------------------------------------------------------------------------

def test_ipvs_conn_fixture():
    entries = ft.parse_ipvs_conn(fixture('ip_vs_conn.txt'))
    assert len(entries) == 8
    first = entries[0]
    assert first == dict(first, table='ipvs', family='ipv4', protocol='udp', client='198.51.100.2',
                         client_port=40001, vip='198.51.100.10', vip_port=7, real_server='203.0.113.21',
                         real_server_port=7, reply_dst='198.51.100.2', reply_dst_port=40001, state='UDP',
                         expires=287, zone=None, origin=None, pe_name=None, pe_data=None, line=2)
    tcp = entries[3]
    assert (tcp['protocol'], tcp['state'], tcp['vip_port']) == ('tcp', 'ESTABLISHED', 80)
    six = entries[4]
    assert (six['family'], six['client'], six['vip'], six['real_server']) == (
        'ipv6', '2001:db8:1::2', '2001:db8:1::10', '2001:db8:2::21')
    sip = entries[6]
    assert (sip['pe_name'], sip['pe_data'], sip['expires']) == ('sip', '8f3a2c71@198.51.100.2', 179)
    tunnel = entries[7]
    assert (tunnel['family'], tunnel['real_server'], tunnel['extra']) == (
        'ipv4', '2001:db8:2::23', {'dest_family': 'ipv6'})


def test_ipvs_conn_sync_fixture():
    entries = ft.parse_ipvs_conn(fixture('ip_vs_conn_sync.txt'), source='/proc/net/ip_vs_conn_sync')
    assert [e['origin'] for e in entries] == ['LOCAL', 'SYNC', 'LOCAL', 'LOCAL', 'SYNC', 'LOCAL']
    plain = ft.parse_ipvs_conn(fixture('ip_vs_conn.txt'))[:6]
    for a, b in zip(entries, plain):
        assert flow_key(a) == flow_key(b)
        assert a['expires'] == b['expires']


def test_ipvs_sync_row_without_header_is_recognised():
    row = fixture('ip_vs_conn_sync.txt').splitlines()[2]
    (entry,) = ft.parse_ipvs_conn(row)
    assert (entry['origin'], entry['expires']) == ('SYNC', 103)


def test_ipvs_empty_table():
    assert ft.parse_ipvs_conn(fixture('ip_vs_conn_empty.txt')) == []
    assert ft.parse_ipvs_conn('') == []


# The service of the captures: keepalived started under a stream from five
# client ports with the legacy quorum_up "ipvsadm -E ... --ops"; the tables
# 2 s after it set ops (molecule/ipvs/files/startup.sh, mode legacy).
ECHO_7000 = [{'name': 'echo', 'vip': '198.51.100.10', 'port': 7000,
              'real_servers': [{'address': '203.0.113.%d' % n} for n in (21, 22, 23)]}]


@pytest.mark.parametrize('name, origin', [('ip_vs_conn_legacy_qemu.txt', None), ('ip_vs_conn_sync_legacy_qemu.txt', 'LOCAL')])
def test_real_ipvs_captures(name, origin):
    entries = ft.parse_ipvs_conn(fixture(name, CAPTURES))
    assert len(entries) == 5
    # C6336464 A410-A414 -> C633640A 1B58: 198.51.100.100:42000-42004 -> 198.51.100.10:7000
    assert {(e['family'], e['protocol'], e['client'], e['vip'], e['vip_port'], e['real_server_port'], e['state'],
             e['origin']) for e in entries} == {
        ('ipv4', 'udp', '198.51.100.100', '198.51.100.10', 7000, 7000, 'UDP', origin)}
    assert sorted(e['client_port'] for e in entries) == [42000, 42001, 42002, 42003, 42004]
    assert {e['expires'] for e in entries} <= {299, 300}
    stuck = ft.find_stuck(entries, ECHO_7000, 'ipvs')
    assert len(stuck) == 5
    assert {(r['service'], r['reason'], r['table']) for r in stuck} == {('echo', 'ipvs_entry', 'ipvs')}
    summary = ft.summarize(stuck, ECHO_7000)['echo']
    assert summary['by_real_server'] == {'203.0.113.21:7000': 1, '203.0.113.22:7000': 2, '203.0.113.23:7000': 2}
    assert summary['top_clients'][0]['pinned_to'] == ['203.0.113.21:7000', '203.0.113.22:7000', '203.0.113.23:7000']


def test_real_ipvs_captures_show_the_same_flows():
    plain = ft.parse_ipvs_conn(fixture('ip_vs_conn_legacy_qemu.txt', CAPTURES))
    sync = ft.parse_ipvs_conn(fixture('ip_vs_conn_sync_legacy_qemu.txt', CAPTURES))
    assert [flow_key(e) for e in plain] == [flow_key(e) for e in sync]


ECHO6_7000 = [{'name': 'echo6', 'vip': '2001:db8:51::10', 'port': 7000,
               'real_servers': [{'address': '2001:db8:113::21'}, {'address': '2001:db8:113::22'}]}]


@pytest.mark.parametrize('name, origin', [('ip_vs_conn_ipv6_qemu.txt', None), ('ip_vs_conn_sync_ipv6_qemu.txt', 'LOCAL')])
def test_real_ipv6_ipvs_captures(name, origin):
    """A service without ops in the QEMU guest, three client ports
    (molecule/ipvs/guest/capture/ipvs-conn-ipv6.sh)."""
    entries = ft.parse_ipvs_conn(fixture(name, CAPTURES))
    assert [(e['family'], e['client'], e['client_port'], e['vip'], e['vip_port'], e['real_server'],
             e['real_server_port'], e['origin']) for e in entries] == [
        ('ipv6', '2001:db8:51::100', 40000, '2001:db8:51::10', 7000, '2001:db8:113::22', 7000, origin),
        ('ipv6', '2001:db8:51::100', 40001, '2001:db8:51::10', 7000, '2001:db8:113::21', 7000, origin),
        ('ipv6', '2001:db8:51::100', 40002, '2001:db8:51::10', 7000, '2001:db8:113::22', 7000, origin)]
    stuck = ft.find_stuck(entries, ECHO6_7000, 'ipvs')
    assert ft.summarize(stuck, ECHO6_7000)['echo6']['by_real_server'] == {
        '[2001:db8:113::21]:7000': 1, '[2001:db8:113::22]:7000': 2}


IPVS_GARBAGE = [
    ('UDP C6336402 9C41 C633640A 0007 CB007115 0007 UDP', 'at least 9 fields'),
    ('UDP C63364 9C41 C633640A 0007 CB007115 0007 UDP 10', 'not 8 hex digits'),
    ('UDP C6336402 9C4 C633640A 0007 CB007115 0007 UDP 10', 'not 4 hex digits'),
    ('UDP C633640Z 9C41 C633640A 0007 CB007115 0007 UDP 10', 'C633640Z'),
    ('UDP C6336402 9C41 C633640A 0007 CB007115 0007 UDP soon', 'not a number of seconds'),
    ('UDP C6336402 9C41 2001:0db8:0000:0000:0000:0000:0000:0001 0007 CB007115 0007 UDP 10', 'different families'),
    ('just some text', 'at least 9 fields'),
]


@pytest.mark.parametrize('line,message', IPVS_GARBAGE)
def test_ipvs_garbage_raises_naming_the_line(line, message):
    text = fixture('ip_vs_conn.txt') + line + '\n'
    with pytest.raises(ft.FlowTableParseError) as exc:
        ft.parse_ipvs_conn(text)
    assert exc.value.line_number == 10
    assert message in str(exc.value)
    assert str(exc.value).startswith('/proc/net/ip_vs_conn line 10: ')


def test_ipvs_bad_header_and_sync_field_count():
    errors = []
    entries = ft.parse_ipvs_conn('Pro Foo Bar\nUDP C6336402 9C41 C633640A 0007 CB007115 0007 UDP 10\n', errors=errors)
    assert len(entries) == 1
    assert errors == ["/proc/net/ip_vs_conn line 1: unknown IPVS header: 'Pro Foo Bar'"]
    sync = ft.IPVS_CONN_SYNC_HEADER + '\nUDP C6336402 9C41 C633640A 0007 CB007115 0007 UDP LOCAL 10 extra\n'
    with pytest.raises(ft.FlowTableParseError, match='expected 10 fields'):
        ft.parse_ipvs_conn(sync)
    with pytest.raises(ft.FlowTableParseError, match='neither LOCAL nor SYNC'):
        ft.parse_ipvs_conn(ft.IPVS_CONN_SYNC_HEADER + '\nUDP C6336402 9C41 C633640A 0007 CB007115 0007 UDP REMOTE 10\n')


# Property: rows printed with the kernel's seq_printf formats parse back.
ADDR4 = st.integers(min_value=1, max_value=2 ** 32 - 1).map(ipaddress.IPv4Address)
ADDR6 = st.integers(min_value=1, max_value=2 ** 128 - 1).map(ipaddress.IPv6Address)
PORT = st.integers(min_value=0, max_value=65535)


def _pi6(addr):
    """%pI6: eight colon-separated groups of four lower-case hex digits."""
    packed = addr.packed
    return ':'.join('%02x%02x' % (packed[i], packed[i + 1]) for i in range(0, 16, 2))


def _kaddr(addr):
    return '%08X' % int(addr) if addr.version == 4 else _pi6(addr)


@settings(max_examples=200, deadline=None, database=None)
@given(family=st.sampled_from([4, 6]), data=st.data(), cport=PORT, vport=PORT, dport=PORT,
       expires=st.integers(min_value=0, max_value=10 ** 9), sync=st.booleans(), origin=st.sampled_from(ft.IPVS_ORIGINS))
def test_ipvs_kernel_format_round_trip(family, data, cport, vport, dport, expires, sync, origin):
    strategy = ADDR4 if family == 4 else ADDR6
    caddr, vaddr = data.draw(strategy), data.draw(strategy)
    daddr = data.draw(st.one_of(ADDR4, ADDR6))
    head = '%-3s %s %04X %s %04X %s %04X %-11s' % (
        'UDP', _kaddr(caddr), cport, _kaddr(vaddr), vport, _kaddr(daddr), dport, 'UDP')
    if sync:
        text = ft.IPVS_CONN_SYNC_HEADER + '\n' + head + ' %-6s %7lu\n' % (origin, expires)
    else:
        text = ft.IPVS_CONN_HEADER + '\n' + head + ' %7lu\n' % expires
    (entry,) = ft.parse_ipvs_conn(text)
    assert ipaddress.ip_address(entry['client']) == caddr
    assert ipaddress.ip_address(entry['vip']) == vaddr
    assert ipaddress.ip_address(entry['real_server']) == daddr
    assert (entry['client_port'], entry['vip_port'], entry['real_server_port']) == (cport, vport, dport)
    assert entry['expires'] == expires
    assert entry['origin'] == (origin if sync else None)


@settings(max_examples=200, deadline=None, database=None)
@given(family=st.sampled_from([4, 6]), data=st.data(), ports=st.lists(PORT, min_size=4, max_size=4),
       zone=st.integers(min_value=0, max_value=65535), mark=st.integers(min_value=0, max_value=2 ** 32 - 1),
       extended=st.booleans(), unreplied=st.booleans())
def test_conntrack_format_round_trip(family, data, ports, zone, mark, extended, unreplied):
    strategy = ADDR4 if family == 4 else ADDR6
    addrs = [data.draw(strategy) for _index in range(4)]
    line = '%s%-8s %u %u src=%s dst=%s sport=%u dport=%u %ssrc=%s dst=%s sport=%u dport=%u %smark=%u %suse=1' % (
        ('ipv%d     %d ' % (family, 2 if family == 4 else 10)) if extended else '', 'udp', 17, 30,
        addrs[0], addrs[1], ports[0], ports[1], '[UNREPLIED] ' if unreplied else '',
        addrs[2], addrs[3], ports[2], ports[3], '' if unreplied else '[ASSURED] ', mark,
        'zone=%u ' % zone if zone else '')
    (entry,) = ft.parse_conntrack(line)
    assert [ipaddress.ip_address(entry[k]) for k in ('client', 'vip', 'real_server', 'reply_dst')] == addrs
    assert [entry[k] for k in ('client_port', 'vip_port', 'real_server_port', 'reply_dst_port')] == ports
    assert (entry['zone'], entry['mark'], entry['family']) == (zone, mark, 'ipv%d' % family)
    assert entry['state'] == ('UNREPLIED' if unreplied else 'ASSURED')


# ---------------------------------------------------------------------------
# The definition of stuck
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('name', ['conntrack_default.txt', 'conntrack_extended.txt', 'conntrack_acct_extended.txt'])
def test_find_stuck_conntrack_ipvs_plane(name):
    stuck = ft.find_stuck(ft.parse_conntrack(fixture(name)), SERVICES, 'ipvs')
    assert keys(stuck) == sorted(STUCK_CONNTRACK_ANY_PLANE)


@pytest.mark.parametrize('name', ['conntrack_default.txt', 'conntrack_extended.txt'])
def test_find_stuck_conntrack_nftables_plane(name):
    stuck = ft.find_stuck(ft.parse_conntrack(fixture(name)), SERVICES, 'nftables')
    assert keys(stuck) == sorted(list(STUCK_CONNTRACK_ANY_PLANE) + STUCK_CONNTRACK_NFTABLES_ONLY)
    roles = sorted(r['role'] for r in stuck if r['service'] == 'stream')
    assert roles == ['reply', 'reply', 'request']


def test_zone_reply_entries_are_not_stuck_but_related():
    entries = ft.parse_conntrack(fixture('conntrack_extended.txt'))
    services = ft.normalize_services(SERVICES)
    zoned = [e for e in entries if e['zone']]
    assert len(zoned) == 4
    for plane in ft.DATA_PLANES:
        for entry in zoned:
            service, role, reason = ft.classify_entry(entry, services, plane)
            assert (service['name'], role, reason) == ('dns', 'reply', None)
    assert ft.count_related(entries, SERVICES, 'ipvs') == {
        'echo': 3, 'echo6': 2, 'discard': 1, 'dns': 4, 'dns6': 2, 'stream': 3}


def test_find_stuck_ipvs_table():
    entries = ft.parse_ipvs_conn(fixture('ip_vs_conn.txt'))
    stuck = ft.find_stuck(entries, SERVICES, 'ipvs')
    assert keys(stuck) == sorted([
        ('echo', 'ipvs_entry', '198.51.100.2', 40001, '203.0.113.21'),
        ('echo', 'ipvs_entry', '198.51.100.2', 40002, '203.0.113.22'),
        ('echo', 'ipvs_entry', '198.51.100.3', 40003, '203.0.113.21'),
        ('echo', 'ipvs_entry', '198.51.100.3', 40006, '2001:db8:2::23'),
        ('echo6', 'ipvs_entry', '2001:db8:1::2', 40004, '2001:db8:2::21'),
        ('echo6', 'ipvs_entry', '2001:db8:1::2', 40005, '2001:db8:2::22'),
    ])
    # TCP rows and services that are not listed are ignored.
    assert all(r['table'] == 'ipvs' and r['entry']['protocol'] == 'udp' for r in stuck)
    assert ft.find_stuck(entries, SERVICES, 'nftables') == stuck


def test_unnatted_request_entry_depends_on_plane():
    line = ('udp 17 30 src=198.51.100.2 dst=198.51.100.10 sport=1234 dport=7 '
            'src=198.51.100.10 dst=198.51.100.2 sport=7 dport=1234 mark=0 use=1')
    entries = ft.parse_conntrack(line)
    assert ft.find_stuck(entries, SERVICES, 'ipvs') == []
    (record,) = ft.find_stuck(entries, SERVICES, 'nftables')
    assert (record['reason'], record['real_server'], record['real_server_port']) == (
        'tracked_on_stateless_plane', None, None)


def test_nat_to_a_removed_real_server_is_still_pinned():
    line = ('udp 17 30 src=198.51.100.2 dst=198.51.100.10 sport=1234 dport=7 '
            'src=203.0.113.99 dst=198.51.100.2 sport=7 dport=1234 [ASSURED] mark=0 use=1')
    (record,) = ft.find_stuck(ft.parse_conntrack(line), SERVICES, 'ipvs')
    assert (record['reason'], record['real_server']) == ('nat_pinned', '203.0.113.99')


def test_addresses_compare_normalised():
    services = [{'name': 'v6', 'vip': '2001:DB8:1:0:0::10', 'port': 7,
                 'real_servers': [{'address': '2001:0db8:0002::0021', 'port': 7}]}]
    entries = ft.parse_conntrack(fixture('conntrack_extended.txt'))
    stuck = ft.find_stuck(entries, services, 'ipvs')
    assert sorted(r['client_port'] for r in stuck) == [40004, 40005]
    ipvs = ft.parse_ipvs_conn(fixture('ip_vs_conn.txt'))
    assert len(ft.find_stuck(ipvs, services, 'ipvs')) == 2


def test_unrelated_entries_are_ignored():
    line = ('udp 17 30 src=198.51.100.99 dst=198.51.100.98 sport=1 dport=2 '
            'src=198.51.100.98 dst=198.51.100.99 sport=2 dport=1 mark=0 use=1')
    for plane in ft.DATA_PLANES:
        assert ft.find_stuck(ft.parse_conntrack(line), SERVICES, plane) == []


def test_invalid_data_plane_and_services():
    with pytest.raises(ValueError, match='data_plane'):
        ft.find_stuck(ft.parse_conntrack(fixture('conntrack_default.txt')), SERVICES, 'lvs')
    bad = [
        ([{'vip': '198.51.100.10', 'port': 7}], 'has no name'),
        (['echo'], 'not a dict'),
        ([{'name': 'a', 'vip': 'nope', 'port': 7}], 'not an IP address'),
        ([{'name': 'a', 'vip': '198.51.100.10', 'port': 0}], 'between 1 and 65535'),
        ([{'name': 'a', 'vip': '198.51.100.10', 'port': 'x'}], 'port number'),
        ([{'name': 'a', 'vip': '198.51.100.10', 'port': True}], 'port number'),
        ([{'name': 'a', 'vip': '198.51.100.10', 'port': 7}, {'name': 'a', 'vip': '198.51.100.11', 'port': 7}],
         'used twice'),
        ([{'name': 'a', 'vip': '198.51.100.10', 'port': 7, 'reply_rewrite': 'magic'}], 'reply_rewrite'),
        ([{'name': 'a', 'vip': '198.51.100.10', 'port': 7, 'real_servers': ['x']}], 'not a dict'),
        ([{'name': 'a', 'vip': '198.51.100.10', 'port': 7, 'real_servers': [{'address': 'x'}]}], 'not an IP'),
    ]
    for services, message in bad:
        with pytest.raises(ft.ServiceError, match=message):
            ft.normalize_services(services)


def test_real_server_port_defaults_to_service_port():
    (service,) = ft.normalize_services([{'name': 'a', 'vip': '2001:db8:1::0010', 'port': 7,
                                         'real_servers': [{'address': '2001:db8:2::21', 'weight': 3},
                                                          {'address': '2001:db8:2::22', 'port': 1007}]}])
    assert service['vip'] == '2001:db8:1::10'
    assert [(rs['address'], rs['port'], rs.get('weight')) for rs in service['real_servers']] == [
        ('2001:db8:2::21', 7, 3), ('2001:db8:2::22', 1007, None)]


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------

def test_summarize_top_clients():
    entries = ft.parse_conntrack(fixture('conntrack_extended.txt')) + ft.parse_ipvs_conn(fixture('ip_vs_conn.txt'))
    stuck = ft.find_stuck(entries, SERVICES, 'ipvs')
    summary = ft.summarize(stuck, SERVICES, top_n=1)
    assert list(summary) == ['echo', 'echo6', 'discard', 'dns', 'dns6', 'stream']
    echo = summary['echo']
    assert echo['stuck'] == 7
    assert echo['by_reason'] == {'ipvs_entry': 4, 'nat_pinned': 3}
    assert echo['by_table'] == {'conntrack': 3, 'ipvs': 4}
    assert echo['by_real_server'] == {'203.0.113.21:7': 4, '203.0.113.22:7': 2, '[2001:db8:2::23]:7': 1}
    assert echo['clients'] == 2
    assert echo['top_clients'] == [{'client': '198.51.100.2', 'flows': 4,
                                    'pinned_to': ['203.0.113.21:7', '203.0.113.22:7'], 'max_expires': 287}]
    assert summary['dns'] == {'vip': '198.51.100.12', 'port': 53, 'stuck': 0, 'by_reason': {}, 'by_table': {},
                              'by_real_server': {}, 'clients': 0, 'top_clients': []}
    assert summary['dns6']['top_clients'] == [{'client': '2001:db8:1::2', 'flows': 2,
                                               'pinned_to': ['[2001:db8:2::21]:53'], 'max_expires': 29}]


def test_summarize_ordering_and_limits():
    def rec(client, port, rs, expires):
        return {'service': 's', 'vip': '198.51.100.10', 'port': 7, 'reason': 'nat_pinned', 'table': 'conntrack',
                'client': client, 'client_port': port, 'real_server': rs, 'real_server_port': 7 if rs else None,
                'expires': expires}
    stuck = [rec('198.51.100.9', 1, '203.0.113.21', 5), rec('198.51.100.10', 2, '203.0.113.21', 50),
             rec('198.51.100.8', 3, None, 5), rec('198.51.100.10', 4, '203.0.113.22', 1)]
    summary = ft.summarize(stuck, top_n=10)
    assert [c['client'] for c in summary['s']['top_clients']] == ['198.51.100.10', '198.51.100.8', '198.51.100.9']
    assert summary['s']['top_clients'][1]['pinned_to'] == []
    assert ft.summarize(stuck, top_n=0)['s']['top_clients'] == []
    assert ft.summarize([], [{'name': 'x', 'vip': '198.51.100.1', 'port': 1}])['x']['stuck'] == 0


def test_format_endpoint():
    assert ft.format_endpoint('198.51.100.10', 7) == '198.51.100.10:7'
    assert ft.format_endpoint('2001:db8::1', 7) == '[2001:db8::1]:7'
    assert ft.format_endpoint('2001:db8::1', None) == '2001:db8::1'
    assert ft.format_endpoint(None, 7) == '-'
