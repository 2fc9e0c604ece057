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

import pytest

from ansible_collections.datagram.director.plugins.module_utils.model import build_plan

from ..unit.roles.test_templates import render
from .test_reply_rewrite import COUNT, VIP, csum_errors, lab_namespaces, run_client, sh, skip_without_tools

TABLE = "datagram_director"
REAL_SERVERS = {"rs1": "203.0.113.21", "rs2": "203.0.113.22", "rs3": "203.0.113.23"}


def plan():
    """echo (VIP:7000, the three echoing real servers) first, then a second
    service on the same VIP: both in the dispatch map, the VIP's fragments
    counted under echo."""
    def service(name, port):
        return {"name": name, "vip": VIP, "port": port,
                "real_servers": [{"address": a, "port": port} for a in REAL_SERVERS.values()]}
    return build_plan({
        "data_plane": "nftables", "frontend_interface": "front", "backend_interface": "back",
        "frontend_vrid": 61, "backend_vrid": 62,
        "frontend_vips": [VIP + "/24"], "backend_gateway_vips": ["203.0.113.10/24"],
        "directors": {"dd1": {"vrrp_priority": 150, "frontend_address": "198.51.100.11",
                              "backend_address": "203.0.113.11"},
                      "dd2": {"vrrp_priority": 100, "frontend_address": "198.51.100.12",
                              "backend_address": "203.0.113.12"}},
        "services": [service("echo", 7000), service("spare", 7001)],
    })


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
    code = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "s.setsockopt(socket.IPPROTO_IP, 10, 0); "  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT
            "s.sendto(b'x' * %d, (%r, 7000))" % (size, address))
    sh("ip", "netns", "exec", ns["client"], sys.executable, "-c", code)


def reassembled(ns, rs):
    """IP datagrams the real server reassembled from fragments."""
    lines = sh("ip", "netns", "exec", ns[rs], "cat", "/proc/net/snmp").stdout.splitlines()
    ip = [line.split() for line in lines if line.startswith("Ip:")]
    return int(dict(zip(ip[0][1:], ip[1][1:]))["ReasmOKs"])


@pytest.fixture
def plane():
    skip_without_tools()
    with lab_namespaces("ddn", ops_emulation=False) as ns:
        load(ns, render("nftables", "dataplane.nft.j2", plan(), "nftables", "dd1"))
        yield ns


def test_spread_and_replies_from_the_vip(plane):
    result = run_client(plane)
    print({k: result[k] for k in ("sent", "received", "per_server", "reply_sources")})
    assert result["per_server"] == {"rs1": COUNT // 3, "rs2": COUNT // 3, "rs3": COUNT // 3}
    assert result["reply_sources"] == {"%s:7000" % VIP: COUNT}
    seen = counters(plane)
    # the counters the health program reads, per named real server
    assert [seen["fwd_echo_%d" % i] for i in range(3)] == [COUNT // 3] * 3
    assert [seen["reply_echo_%d" % i] for i in range(3)] == [COUNT // 3] * 3
    assert csum_errors(plane) == 0


def test_fragments_to_a_vip_are_refused_and_counted(plane):
    """3000 bytes = 3 fragments at MTU 1500: all dropped, counted under the
    VIP's first service; no real server gets any part."""
    send_big(plane, VIP)
    seen = counters(plane)
    print(seen)
    assert (seen["fragments_echo"], seen["fragments_spare"]) == (3, 0)
    assert sum(seen["fwd_echo_%d" % i] + seen["fwd_spare_%d" % i] for i in range(3)) == 0
    assert [reassembled(plane, rs) for rs in REAL_SERVERS] == [0, 0, 0]


def test_fragments_to_other_addresses_pass(plane):
    """A fragmented datagram routed through the director to a real server's
    own address is reassembled there, and no fragment counter moves."""
    sh("ip", "-n", plane["client"], "route", "add", "203.0.113.0/24", "via", "198.51.100.11")
    send_big(plane, REAL_SERVERS["rs2"])
    assert [reassembled(plane, rs) for rs in REAL_SERVERS] == [0, 1, 0]
    seen = counters(plane)
    assert (seen["fragments_echo"], seen["fragments_spare"]) == (0, 0)
