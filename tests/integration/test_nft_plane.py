# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The nftables data plane as the role renders it, loaded unchanged into a
director namespace: per-packet spread over the named real servers, replies
from VIP:port, and fragments to a VIP refused and counted while fragments to
any other address pass."""

from __future__ import annotations

import json
import sys
import time

import pytest

from ansible_collections.datagram.director.plugins.module_utils.model import build_plan

from ..unit.roles.test_templates import render
from ..conftest import COLLECTIONS_ROOT
from .test_reply_rewrite import COUNT, VIP, csum_errors, lab_namespaces, sh, skip_without_tools

TABLE = "datagram_director"
REAL_SERVERS = {"rs1": "203.0.113.21", "rs2": "203.0.113.22", "rs3": "203.0.113.23"}
VIP6 = "2001:db8:51::10"
REAL_SERVERS6 = {"rs1": "2001:db8:113::21", "rs2": "2001:db8:113::22", "rs3": "2001:db8:113::23"}


def plan():
    """echo (VIP:7000, the three echoing real servers) first, then a second
    service on the same VIP: both in the dispatch map, the VIP's fragments
    counted under echo; echo6 the same over IPv6 but from port 7002 of the
    VIP to port 7000 of the real servers: its port is rewritten both ways,
    echo's is not."""
    def service(name, vip, port, addresses, rs_port=None):
        return {"name": name, "vip": vip, "port": port,
                "real_servers": [{"address": a, "port": rs_port or port} for a in addresses.values()]}
    return build_plan({
        "data_plane": "nftables", "frontend_interface": "front", "backend_interface": "back",
        "frontend_vrid": 61, "backend_vrid": 62,
        "frontend_vips": [VIP + "/24", VIP6 + "/64"],
        "backend_gateway_vips": ["203.0.113.10/24", "2001:db8:113::10/64"],
        "directors": {"dd1": {"vrrp_priority": 150, "frontend_address": "198.51.100.11",
                              "backend_address": "203.0.113.11"},
                      "dd2": {"vrrp_priority": 100, "frontend_address": "198.51.100.12",
                              "backend_address": "203.0.113.12"}},
        "services": [service("echo", VIP, 7000, REAL_SERVERS), service("spare", VIP, 7001, REAL_SERVERS),
                     service("echo6", VIP6, 7002, REAL_SERVERS6, 7000)],
    })


def add_ipv6(ns):
    """IPv6 beside the fixture's IPv4: the lab's addresses, no DAD wait;
    the bridge floods multicast (neighbour solicitations) to every port."""
    sh("ip", "-n", ns["dir"], "link", "set", "back", "type", "bridge", "mcast_snooping", "0")
    addr = [("client", "front", "2001:db8:51::100/64"), ("dir", "front", "2001:db8:51::11/64"),
            ("dir", "front", VIP6 + "/64"), ("dir", "back", "2001:db8:113::10/64")]
    addr += [(rs, "back", a + "/64") for rs, a in REAL_SERVERS6.items()]
    for n, i, a in addr:
        sh("ip", "-n", ns[n], "addr", "add", a, "dev", i, "nodad")
    for rs in REAL_SERVERS6:
        sh("ip", "-n", ns[rs], "-6", "route", "add", "default", "via", "2001:db8:113::10")
    wait_link_local(ns)


def wait_link_local(ns, bound=10.0):
    """Until no link-local address is tentative (DAD, about 1-2 s on fresh
    links): a director's links are long up. While they are tentative the
    neighbour entries `fwd ip6` creates stay INCOMPLETE for seconds and the
    first datagrams are lost; measured, the first datagrams of a director
    that never sent one of its own reach the real servers once DAD is done."""
    deadline = time.monotonic() + bound
    while any("tentative" in sh("ip", "-n", n, "-6", "addr").stdout for n in ns.values()):
        assert time.monotonic() < deadline, "link-local DAD not done in %.0f s" % bound
        time.sleep(0.1)


def load(ns, ruleset):
    sh("ip", "netns", "exec", ns["dir"], "nft", "-f", "-", input=ruleset)


def counters(ns):
    """{name: packets} of the data plane's named counters."""
    out = sh("ip", "netns", "exec", ns["dir"], "nft", "-j", "list", "counters", "table", "netdev", TABLE).stdout
    return dict((item["counter"]["name"], item["counter"]["packets"])
                for item in json.loads(out)["nftables"] if "counter" in item)


def send_big(ns, address, size=3000):
    """One datagram of ``size`` bytes from the client, fragmented on the way
    out (MTU 1500, no path-MTU discovery)."""
    if ":" in address:
        family, level, option = "AF_INET6", "IPPROTO_IPV6", 23  # IPV6_MTU_DISCOVER
    else:
        family, level, option = "AF_INET", "IPPROTO_IP", 10  # IP_MTU_DISCOVER
    code = ("import socket; s = socket.socket(socket.%s, socket.SOCK_DGRAM); "
            "s.setsockopt(socket.%s, %d, 0); "  # 0: PMTUDISC_DONT
            "s.sendto(b'x' * %d, (%r, 7000))" % (family, level, option, size, address))
    sh("ip", "netns", "exec", ns["client"], sys.executable, "-c", code)


def run_client(ns, vip, port=7000):
    code = ("import json, sys; sys.path.insert(0, %r); "
            "from ansible_collections.datagram.director.plugins.module_utils import udpgen; "
            "print(json.dumps(udpgen.run(%r, %d, %d, window=32, timeout=0.5)))"
            % (COLLECTIONS_ROOT, vip, port, COUNT))
    return json.loads(sh("ip", "netns", "exec", ns["client"], sys.executable, "-c", code, timeout=120).stdout)


def reassembled(ns, rs):
    """IPv4 and IPv6 datagrams the real server reassembled from fragments."""
    snmp = sh("ip", "netns", "exec", ns[rs], "cat", "/proc/net/snmp").stdout.splitlines()
    ip = [line.split() for line in snmp if line.startswith("Ip:")]
    snmp6 = dict(line.split() for line in sh("ip", "netns", "exec", ns[rs], "cat", "/proc/net/snmp6").stdout.splitlines())
    return int(dict(zip(ip[0][1:], ip[1][1:]))["ReasmOKs"]) + int(snmp6["Ip6ReasmOKs"])


@pytest.fixture
def plane():
    skip_without_tools()
    with lab_namespaces("ddn", ops_emulation=False) as ns:
        add_ipv6(ns)
        load(ns, render("nftables", "dataplane.nft.j2", plan(), "nftables", "dd1"))
        yield ns


@pytest.mark.parametrize("vip, port, name", [(VIP, 7000, "echo"), (VIP6, 7002, "echo6")])
def test_spread_and_replies_from_the_vip(plane, vip, port, name):
    result = run_client(plane, vip, port)
    print({k: result[k] for k in ("sent", "received", "per_server", "reply_sources")})
    assert result["per_server"] == {"rs1": COUNT // 3, "rs2": COUNT // 3, "rs3": COUNT // 3}
    assert result["reply_sources"] == {("[%s]:%d" if ":" in vip else "%s:%d") % (vip, port): COUNT}
    seen = counters(plane)
    # the counters the health program reads, per named real server
    assert [seen["fwd_%s_%d" % (name, i)] for i in range(3)] == [COUNT // 3] * 3
    assert [seen["reply_%s_%d" % (name, i)] for i in range(3)] == [COUNT // 3] * 3
    assert csum_errors(plane) == 0


@pytest.mark.parametrize("vip, name", [(VIP, "echo"), (VIP6, "echo6")])
def test_fragments_to_a_vip_are_refused_and_counted(plane, vip, name):
    """3000 bytes = 3 fragments at MTU 1500: all dropped, counted under the
    VIP's first service; no real server gets any part."""
    send_big(plane, vip)
    seen = counters(plane)
    print(seen)
    frags = dict((k, v) for k, v in seen.items() if k.startswith("fragments_"))
    expected = dict((k, 0) for k in ("fragments_echo", "fragments_spare", "fragments_echo6"))
    expected["fragments_" + name] = 3
    assert frags == expected
    assert sum(v for k, v in seen.items() if k.startswith("fwd_")) == 0
    assert [reassembled(plane, rs) for rs in REAL_SERVERS] == [0, 0, 0]


def test_fragments_to_other_addresses_pass(plane):
    """A fragmented datagram routed through the director to a real server's
    own address is reassembled there, and no fragment counter moves."""
    sh("ip", "-n", plane["client"], "route", "add", "203.0.113.0/24", "via", "198.51.100.11")
    send_big(plane, REAL_SERVERS["rs2"])
    assert [reassembled(plane, rs) for rs in REAL_SERVERS] == [0, 1, 0]
    assert sum(v for k, v in counters(plane).items() if k.startswith("fragments_")) == 0
