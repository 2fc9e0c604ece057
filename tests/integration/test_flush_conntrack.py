# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""udp_flow_flush deletes exactly the stuck conntrack entries, on the real
netfilter of this kernel.

Network namespaces: a client (198.51.100.100), a director (VIP
198.51.100.10, backend 203.0.113.10) and a real server (203.0.113.21). A
stateful DNAT in the director (the mistake a stuck entry comes from) pins the
client ports 41001-41003 to the real server, 41003 in conntrack zone 5. Two
entries must survive: 41004 -> VIP:7000, tracked but not NATed (not stuck on
the ipvs data plane), and 41001 -> VIP:7001, another port. The module runs
as a play would run it: ``ansible`` ad hoc, with an interpreter that enters
the director's namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from ansible_collections.datagram.director.plugins.module_utils import flowflush as ff
from ansible_collections.datagram.director.plugins.module_utils import flowtable as ft

from ..conftest import COLLECTIONS_ROOT, ansible_tool
from ..unit.plugins.module_utils.test_model import REPO

VIP = "198.51.100.10"
CLIENT = "198.51.100.100"
RS = "203.0.113.21"
SERVICES = [{"name": "echo", "vip": VIP, "port": 7000,
             "real_servers": [{"address": RS}, {"address": "203.0.113.22"}]}]
PINNED = [41001, 41002, 41003]
# (client port, VIP port): pinned, then the two that must survive.
SENDS = [(p, 7000) for p in PINNED] + [(41004, 7000), (41001, 7001)]


def sh(*argv, **kw):
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, **kw)


@pytest.fixture
def director(tmp_path):
    tools = ("ip", "nft", "conntrack")
    if os.geteuid() != 0 or not all(shutil.which(t) for t in tools):
        pytest.skip("needs root, iproute2, nftables and conntrack for network namespaces")
    ansible = ansible_tool("ansible")
    if not ansible:
        pytest.skip("needs ansible (tools/bootstrap.sh)")
    tag = uuid.uuid4().hex[:6]
    ns = dict((n, "ddf%s-%s" % (tag, n)) for n in ("client", "dir", "rs"))
    try:
        for name in ns.values():
            sh("ip", "netns", "add", name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
        for a, b, a_addr, b_addr in ((ns["client"], ns["dir"], CLIENT, VIP), (ns["rs"], ns["dir"], RS, "203.0.113.10")):
            sh("ip", "link", "add", "tmp" + tag, "type", "veth", "peer", "name", "tmq" + tag)
            sh("ip", "link", "set", "tmp" + tag, "netns", a)
            sh("ip", "link", "set", "tmq" + tag, "netns", b)
            ifname = "front" if a == ns["client"] else "back"
            for n, i, addr in ((a, "tmp" + tag, a_addr), (b, "tmq" + tag, b_addr)):
                sh("ip", "-n", n, "link", "set", i, "name", ifname)
                sh("ip", "-n", n, "addr", "add", addr + "/24", "dev", ifname)
                sh("ip", "-n", n, "link", "set", ifname, "up")
        sh("ip", "netns", "exec", ns["dir"], "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # Longer than the test, whatever the host's default.
        sh("ip", "netns", "exec", ns["dir"], "sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=300")
        sh("ip", "netns", "exec", ns["dir"], "nft", "-f", "-", input="""
table ip dd_drill_pin {
    chain raw {
        type filter hook prerouting priority raw; policy accept;
        udp sport 41003 ct zone set 5
    }
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr %s udp dport 7000 udp sport 41001-41003 dnat to %s:7000
    }
}
""" % (VIP, RS))
        # one datagram per (client port, VIP port), one-way: the project's generator
        gen = os.path.join(REPO, "plugins", "module_utils", "udpgen.py")
        for sport, dport in SENDS:
            sent = json.loads(sh("ip", "netns", "exec", ns["client"], sys.executable, gen, VIP, str(dport),
                                 "--count", "1", "--rate", "100", "--no-reply", "--timeout", "0.1",
                                 "--source-port", str(sport)).stdout)
            assert sent["sent"] == 1, sent
        interpreter = tmp_path / "python-in-director"
        interpreter.write_text('#!/bin/sh\nexec ip netns exec %s %s "$@"\n' % (ns["dir"], sys.executable))
        interpreter.chmod(0o755)
        yield {"ns": ns, "ansible": ansible, "interpreter": str(interpreter)}
    finally:
        for name in ns.values():
            subprocess.run(["ip", "netns", "del", name], check=False)


def table(director):
    out = sh("ip", "netns", "exec", director["ns"]["dir"], "conntrack", "-L", "-p", "udp", "-o", "extended").stdout
    return sorted((e["client_port"], e["vip_port"], e["real_server"], e["zone"]) for e in ft.parse_conntrack(out))


def flush(director, *options):
    args = json.dumps({"services": SERVICES, "data_plane": "ipvs"})
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_ROOT, ANSIBLE_LOAD_CALLBACK_PLUGINS="0")
    res = subprocess.run([director["ansible"], "localhost", "-i", "localhost,", "-c", "local",
                          "-e", "ansible_python_interpreter=" + director["interpreter"],
                          "-m", "datagram.director.udp_flow_flush", "-a", args] + list(options),
                         capture_output=True, text=True, env=env, cwd=REPO, check=False, timeout=120)
    # "localhost | CHANGED => {...}"
    head, sep, body = res.stdout.partition(" => ")
    assert sep and res.returncode == 0, res.stdout + res.stderr
    return json.loads(body)


def test_flush_deletes_exactly_the_pinned_entries(director):
    pinned = [(41001, 7000, RS, 0), (41002, 7000, RS, 0), (41003, 7000, RS, 5)]
    survivors = [(41001, 7001, VIP, 0), (41004, 7000, VIP, 0)]
    assert table(director) == sorted(pinned + survivors)

    checked = flush(director, "--check")
    assert checked["changed"] is True
    assert checked["before"]["counts"]["stuck"] == 3
    assert sorted((d["client_port"], d["zone"], d["status"]) for d in checked["deleted"]) == [
        (41001, 0, "would_delete"), (41002, 0, "would_delete"), (41003, 5, "would_delete")]
    assert checked["ipvs_removals"] == []
    assert table(director) == sorted(pinned + survivors)

    done = flush(director)
    assert done["changed"] is True
    assert sorted((d["client_port"], d["reply_src"], d["zone"], d["status"]) for d in done["deleted"]) == [
        (41001, RS, 0, "deleted"), (41002, RS, 0, "deleted"), (41003, RS, 5, "deleted")]
    assert done["after"]["counts"]["stuck"] == 0 and done["after"]["counts"]["conntrack"] == 2
    assert table(director) == survivors

    again = flush(director)
    assert again["changed"] is False and again["deleted"] == []

    # What conntrack says about an entry that is already gone.
    argv = ["ip", "netns", "exec", director["ns"]["dir"]] + [
        d for d in done["deleted"] if d["client_port"] == 41003][0]["command"].split()
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert res.returncode == 1
    assert ff.deletion_status(res.returncode, res.stdout, res.stderr) == ff.STATUS_ALREADY_GONE
