# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reply source rewriting beside IPVS ops, on the real netfilter of this kernel.

Network namespaces: a client, a director, three real servers running the lab
echo. IPVS is not in this kernel, so the director's forward path is emulated
the way one-packet scheduling behaves: a stateless per-packet rewrite of the
destination with notrack (no connection, no de-NAT of replies). The reply path
is the ruleset the nftables role renders for the ipvs data plane, with each
reply_rewrite method, next to naive SNAT as the negative control. A connected
client socket counts what really arrives; checksum offload is off, so a wrong
checksum would show as UdpInCsumErrors.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from ansible_collections.datagram.director.plugins.module_utils.model import build_plan

from ..conftest import COLLECTIONS_ROOT
from ..unit.plugins.module_utils.test_model import REPO, load_model
from ..unit.roles.test_templates import render

COUNT = 3000
VIP = "198.51.100.10"
OPS_EMULATION = """
table ip ops_emulation {
    chain prerouting {
        type filter hook prerouting priority -350; policy accept;
        ip daddr %s udp dport 7000 notrack ip daddr set numgen inc mod 3 map { 0 : 203.0.113.21, 1 : 203.0.113.22, 2 : 203.0.113.23 }
    }
}
""" % VIP


def sh(*argv, **kw):
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, **kw)


def skip_without_tools():
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "nft", "ethtool", "unshare")):
        pytest.skip("needs root, iproute2, nftables, ethtool and unshare for network namespaces")


@contextlib.contextmanager
def lab_namespaces(prefix, ops_emulation):
    """A client, a director (frontend "front", backend bridge "back") and
    three real servers running the lab echo on port 7000, in namespaces named
    ``<prefix><tag>-<role>``; with ``ops_emulation`` the director rewrites
    datagrams to VIP:7000 like IPVS one-packet scheduling."""
    tag = uuid.uuid4().hex[:6]
    ns = dict((n, "%s%s-%s" % (prefix, tag, n)) for n in ("client", "dir", "rs1", "rs2", "rs3"))
    procs = []
    try:
        for name in ns.values():
            sh("ip", "netns", "add", name)

        def link(a, a_if, b, b_if):
            sh("ip", "link", "add", "tmp" + tag, "type", "veth", "peer", "name", "tmq" + tag)
            sh("ip", "link", "set", "tmp" + tag, "netns", a)
            sh("ip", "link", "set", "tmq" + tag, "netns", b)
            sh("ip", "-n", a, "link", "set", "tmp" + tag, "name", a_if)
            sh("ip", "-n", b, "link", "set", "tmq" + tag, "name", b_if)
            for n, i in ((a, a_if), (b, b_if)):
                sh("ip", "-n", n, "link", "set", i, "up")
                sh("ip", "netns", "exec", n, "ethtool", "-K", i, "tx", "off")

        link(ns["client"], "front", ns["dir"], "front")
        sh("ip", "-n", ns["dir"], "link", "add", "back", "type", "bridge")
        sh("ip", "-n", ns["dir"], "link", "set", "back", "up")
        for i in (1, 2, 3):
            link(ns["rs%d" % i], "back", ns["dir"], "port%d" % i)
            sh("ip", "-n", ns["dir"], "link", "set", "port%d" % i, "master", "back")
        addr = [("client", "front", "198.51.100.100/24"), ("dir", "front", "198.51.100.11/24"),
                ("dir", "front", VIP + "/24"), ("dir", "back", "203.0.113.11/24"),
                ("dir", "back", "203.0.113.10/24")]
        addr += [("rs%d" % i, "back", "203.0.113.2%d/24" % i) for i in (1, 2, 3)]
        for n, i, a in addr:
            sh("ip", "-n", ns[n], "addr", "add", a, "dev", i)
        for n in ns.values():
            sh("ip", "-n", n, "link", "set", "lo", "up")
        for i in (1, 2, 3):
            sh("ip", "-n", ns["rs%d" % i], "route", "add", "default", "via", "203.0.113.10")
        sh("ip", "netns", "exec", ns["dir"], "sysctl", "-qw", "net.ipv4.ip_forward=1")
        if ops_emulation:
            # One-packet scheduling, emulated: every datagram to VIP:7000 gets the
            # next real server, no conntrack entry, and replies are not de-NATed.
            sh("ip", "netns", "exec", ns["dir"], "nft", "-f", "-", input=OPS_EMULATION)
        echo = os.path.join(REPO, "roles", "lab_realserver", "files", "datagram-echo")
        for i in (1, 2, 3):
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns["rs%d" % i], "unshare", "--uts", "sh", "-c",
                 "hostname rs%d && exec %s %s 7000" % (i, sys.executable, echo)]))
        time.sleep(0.5)
        yield ns
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        for name in ns.values():
            subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def topology():
    skip_without_tools()
    with lab_namespaces("ddr", ops_emulation=True) as ns:
        yield ns


def run_client(ns, window=32):
    code = ("import json, sys; sys.path.insert(0, %r); "
            "from ansible_collections.datagram.director.plugins.module_utils import udpgen; "
            "print(json.dumps(udpgen.run(%r, 7000, %d, window=%d, timeout=0.5)))"
            % (COLLECTIONS_ROOT, VIP, COUNT, window))
    res = sh("ip", "netns", "exec", ns["client"], sys.executable, "-c", code, timeout=120)
    return json.loads(res.stdout)


def csum_errors(ns):
    out = sh("ip", "netns", "exec", ns["client"], "cat", "/proc/net/snmp").stdout.splitlines()
    udp = [line.split() for line in out if line.startswith("Udp:")]
    return int(dict(zip(udp[0][1:], udp[1][1:]))["InCsumErrors"])


def ruleset(method):
    model = load_model("lab")
    model["services"] = [dict(model["services"][0], reply_rewrite=method)]
    plan = build_plan(model)
    return render("nftables", "dataplane.nft.j2", plan, "ipvs", "dd-director1")


@pytest.mark.parametrize("method", ["stateless", "conntrack_zones"])
def test_replies_come_from_the_vip(topology, method):
    sh("ip", "netns", "exec", topology["dir"], "nft", "-f", "-", input=ruleset(method))
    result = run_client(topology)
    print("%s: %s" % (method, {k: result[k] for k in ("sent", "received", "per_server", "reply_sources")}))
    assert result["received"] == COUNT
    assert result["reply_sources"] == {"%s:7000" % VIP: COUNT}
    assert sorted(result["per_server"].values()) == [1000, 1000, 1000]
    assert csum_errors(topology) == 0


def test_naive_snat_loses_replies(topology):
    """The negative control: one SNAT rule without zones clashes in conntrack."""
    sh("ip", "netns", "exec", topology["dir"], "nft", "-f", "-", input="""
table ip naive {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr 203.0.113.0/24 udp sport 7000 snat to %s:7000
    }
}
""" % VIP)
    # Two of three replies are lost: a wide window keeps the run short.
    result = run_client(topology, window=600)
    print("naive SNAT: %s" % {k: result[k] for k in ("sent", "received", "per_server", "reply_sources")})
    assert result["received"] < COUNT * 0.5
