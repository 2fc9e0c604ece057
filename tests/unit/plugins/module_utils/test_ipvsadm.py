# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ipvsadm -S -n parsing and the argv of ipvsadm -e/-d/-a."""

from __future__ import annotations

import ipaddress
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.datagram.director.plugins.module_utils import ipvsadm

# What ipvsadm 1.31 prints (print_service_entry() with FMT_RULE): a TCP
# service in direct routing, the UDP services of a director (one-packet
# scheduling, NAT, a quiesced real server), a persistent wrr service without
# ops with an ipip and a gatewaying real server, IPv6, and the services the
# parser skips (firewall mark, SCTP).
SAVE = """\
-A -t 198.51.100.10:80 -s wlc
-a -t 198.51.100.10:80 -r 203.0.113.21:80 -g -w 1
-A -u 198.51.100.10:7000 -s rr -o
-a -u 198.51.100.10:7000 -r 203.0.113.21:7000 -m -w 1
-a -u 198.51.100.10:7000 -r 203.0.113.22:7000 -m -w 1
-a -u 198.51.100.10:7000 -r 203.0.113.23:7000 -m -w 0
-A -u 198.51.100.12:53 -s wrr -p 300
-a -u 198.51.100.12:53 -r 203.0.113.31:53 -i -w 2 --tun-type ipip
-a -u 198.51.100.12:53 -r 203.0.113.32:53 -g -w 1
-A -u [2001:db8:51::10]:7000 -s wrr -o
-a -u [2001:db8:51::10]:7000 -r [2001:db8:113::21]:7000 -m -w 2
-a -u [2001:db8:51::10]:7000 -r [2001:db8:113::22]:7000 -m -w 0
-A -f 1 -s rr
-a -f 1 -r 203.0.113.21:0 -g -w 1
-A --sctp-service 198.51.100.10:2905 -s rr
-a --sctp-service 198.51.100.10:2905 -r 203.0.113.21:2905 -m -w 1
"""


def test_parse_save_services():
    saved = ipvsadm.parse_save(SAVE)
    assert list(saved) == [('tcp', '198.51.100.10:80'), ('udp', '198.51.100.10:7000'), ('udp', '198.51.100.12:53'),
                           ('udp', '[2001:db8:51::10]:7000')]
    echo = saved[('udp', '198.51.100.10:7000')]
    assert {k: v for k, v in echo.items() if k != 'real_servers'} == {
        'protocol': 'udp', 'endpoint': '198.51.100.10:7000', 'address': '198.51.100.10', 'port': 7000,
        'scheduler': 'rr', 'ops': True, 'persistence': None, 'options': []}
    assert list(echo['real_servers']) == ['203.0.113.21:7000', '203.0.113.22:7000', '203.0.113.23:7000']
    assert echo['real_servers']['203.0.113.23:7000'] == {
        'endpoint': '203.0.113.23:7000', 'address': '203.0.113.23', 'port': 7000, 'method': 'masq', 'weight': 0,
        'options': []}


def test_parse_save_methods_persistence_and_ipv6():
    saved = ipvsadm.parse_save(SAVE)
    dns = saved[('udp', '198.51.100.12:53')]
    assert (dns['scheduler'], dns['ops'], dns['persistence']) == ('wrr', False, 300)
    ipip = dns['real_servers']['203.0.113.31:53']
    assert (ipip['method'], ipip['weight'], ipip['options']) == ('ipip', 2, ['--tun-type', 'ipip'])
    assert dns['real_servers']['203.0.113.32:53']['method'] == 'gatewaying'
    assert saved[('tcp', '198.51.100.10:80')]['real_servers']['203.0.113.21:80']['method'] == 'gatewaying'
    six = saved[('udp', '[2001:db8:51::10]:7000')]
    assert (six['address'], six['port'], six['ops']) == ('2001:db8:51::10', 7000, True)
    assert {ep: rs['weight'] for ep, rs in six['real_servers'].items()} == {
        '[2001:db8:113::21]:7000': 2, '[2001:db8:113::22]:7000': 0}
    assert six['real_servers']['[2001:db8:113::22]:7000']['address'] == '2001:db8:113::22'


def test_parse_save_real_ipv6_capture():
    """ipvsadm 1.31 in the QEMU guest (molecule/ipvs/guest/capture/ipvs-conn-ipv6.sh)."""
    path = os.path.join(os.path.dirname(__file__), '..', '..', 'fixtures', 'flowtable', 'ipvsadm_save_ipv6_qemu.txt')
    with open(path) as handle:
        saved = ipvsadm.parse_save(handle.read())
    assert list(saved) == [('udp', '[2001:db8:51::10]:7000')]
    six = saved[('udp', '[2001:db8:51::10]:7000')]
    assert (six['address'], six['port'], six['scheduler'], six['ops']) == ('2001:db8:51::10', 7000, 'rr', False)
    assert {ep: (rs['method'], rs['weight']) for ep, rs in six['real_servers'].items()} == {
        '[2001:db8:113::21]:7000': ('masq', 1), '[2001:db8:113::22]:7000': ('masq', 1)}


def test_parse_save_other_spellings():
    # ipvsadm 1.26 printed "ops" without a dash; long options as ipvsadm -R takes them.
    saved = ipvsadm.parse_save("-A -u 198.51.100.10:7000 -s rr ops\n"
                               "--add-service --udp-service 198.51.100.10:7001 --scheduler wrr --ops -b flag-1\n"
                               "--add-server --udp-service 198.51.100.10:7001 --real-server 203.0.113.21:7001 "
                               "--masquerading --weight 3\n"
                               "-A -u [2001:DB8:51:0::10]:53 -s rr\n\n# comment\n")
    assert saved[('udp', '198.51.100.10:7000')]['ops'] is True
    other = saved[('udp', '198.51.100.10:7001')]
    assert (other['scheduler'], other['ops'], other['options']) == ('wrr', True, ['-b', 'flag-1'])
    assert other['real_servers']['203.0.113.21:7001']['weight'] == 3
    assert ('udp', '[2001:db8:51::10]:53') in saved


def test_empty_save():
    assert ipvsadm.parse_save('') == {}


@pytest.mark.parametrize('line, message', [
    ('-A -u 198.51.100.10 -s rr', 'is not ADDRESS:PORT'),
    ('-A -u 2001:db8::10:7000 -s rr', 'must be in brackets'),
    ('-A -u [2001:db8::10:7000 -s rr', 'is not [ADDRESS]:PORT'),
    ('-A -u 198.51.100.300:7000 -s rr', 'does not appear to be an IPv4 or IPv6 address'),
    ('-A -u 198.51.100.10:7000', 'has no scheduler'),
    ('-A -u 198.51.100.10:7000 -s', '-s has no value'),
    ('-A 198.51.100.10:7000 -s rr', 'no service'),
    ('-a -u 198.51.100.99:7000 -r 203.0.113.21:7000 -m -w 1', 'not added before'),
    ('-a -u 198.51.100.10:7000 -r 203.0.113.21:7000 -m', 'lacks its forwarding method'),
    ('-a -u 198.51.100.10:7000 -r 203.0.113.21:7000 -w 1', 'lacks its forwarding method'),
    ('-a -u 198.51.100.10:7000 -r 203.0.113.21:7000 -m -w one', "-w 'one' is not a number"),
    ('-a -u 198.51.100.10:7000 -m -w 1', 'no real server'),
])
def test_garbage_raises_naming_the_line(line, message):
    text = '-A -u 198.51.100.10:7000 -s rr -o\n' + line + '\n'
    with pytest.raises(ipvsadm.IpvsadmParseError) as exc:
        ipvsadm.parse_save(text)
    assert str(exc.value).startswith('ipvsadm -S -n line 2: ')
    assert message in str(exc.value) and repr(line) in str(exc.value)


def test_garbage_collected_when_lenient():
    errors = []
    saved = ipvsadm.parse_save(SAVE + '-a -u 198.51.100.10:7000 -r 203.0.113.24:7000 -m -w x\n', errors=errors)
    assert len(errors) == 1 and 'line 17' in errors[0]
    assert len(saved[('udp', '198.51.100.10:7000')]['real_servers']) == 3


def test_endpoint_and_split():
    assert ipvsadm.endpoint('198.51.100.10', 7000) == '198.51.100.10:7000'
    assert ipvsadm.endpoint('2001:DB8:0::10', '53') == '[2001:db8::10]:53'
    assert ipvsadm.endpoint('[2001:db8::10]', 53) == '[2001:db8::10]:53'
    assert ipvsadm.endpoint('director.example', 53) == 'director.example:53'
    assert ipvsadm.split_endpoint('[2001:db8::10]:53') == ('2001:db8::10', 53)
    assert ipvsadm.split_endpoint('198.51.100.10:7000') == ('198.51.100.10', 7000)
    with pytest.raises(ValueError):
        ipvsadm.split_endpoint('198.51.100.10:port')


def test_argv_builders():
    assert ipvsadm.edit_argv('udp', '198.51.100.10:7000', '203.0.113.22:7000', 'masq', 0) == [
        'ipvsadm', '-e', '-u', '198.51.100.10:7000', '-r', '203.0.113.22:7000', '-m', '-w', '0']
    assert ipvsadm.delete_argv('udp', '[2001:db8:51::10]:7000', '[2001:db8:113::21]:7000', ipvsadm='/sbin/ipvsadm') == [
        '/sbin/ipvsadm', '-d', '-u', '[2001:db8:51::10]:7000', '-r', '[2001:db8:113::21]:7000']
    assert ipvsadm.add_argv('tcp', '198.51.100.10:80', '203.0.113.21:80', 'gatewaying', 3) == [
        'ipvsadm', '-a', '-t', '198.51.100.10:80', '-r', '203.0.113.21:80', '-g', '-w', '3']
    with pytest.raises(ValueError, match='method'):
        ipvsadm.add_argv('udp', '198.51.100.10:7000', '203.0.113.21:7000', 'nat', 1)
    with pytest.raises(ValueError, match='protocol'):
        ipvsadm.delete_argv('sctp', '198.51.100.10:2905', '203.0.113.21:2905')


def test_add_argv_gives_back_the_saved_line():
    """ipvsadm -a with what parse_save read reproduces every saved real server."""
    saved = ipvsadm.parse_save(SAVE)
    lines = [line.split() for line in SAVE.splitlines() if line.startswith('-a -') and line.split()[1] in ('-u', '-t')]
    rebuilt = [ipvsadm.add_argv(proto, name, rs['endpoint'], rs['method'], rs['weight'], rs['options'])[1:]
               for (proto, name), service in saved.items() for rs in service['real_servers'].values()]
    assert rebuilt == lines


addresses = st.one_of(st.integers(0, 2 ** 32 - 1).map(ipaddress.IPv4Address),
                      st.integers(0, 2 ** 128 - 1).map(ipaddress.IPv6Address))


@given(vip=addresses, port=st.integers(1, 65535), protocol=st.sampled_from(['udp', 'tcp']), ops=st.booleans(),
       servers=st.lists(st.tuples(st.integers(1, 65535), st.sampled_from(sorted(ipvsadm.METHODS)),
                                  st.integers(0, 65535)), min_size=1, max_size=4, unique_by=lambda s: s[0]))
def test_round_trip(vip, port, protocol, ops, servers):
    name = ipvsadm.endpoint(vip, port)
    switch = ipvsadm.PROTOCOLS[protocol]
    lines = ['-A %s %s -s rr%s' % (switch, name, ' -o' if ops else '')]
    lines += ['-a %s %s -r %s %s -w %d' % (switch, name, ipvsadm.endpoint(vip, rs_port), ipvsadm.METHODS[method], weight)
              for rs_port, method, weight in servers]
    saved = ipvsadm.parse_save('\n'.join(lines))
    assert list(saved) == [(protocol, name)]
    service = saved[(protocol, name)]
    assert (service['protocol'], service['address'], service['port'], service['ops']) == (protocol, str(vip), port, ops)
    assert [(rs['port'], rs['method'], rs['weight']) for rs in service['real_servers'].values()] == servers
