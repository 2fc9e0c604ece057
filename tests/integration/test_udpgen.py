# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one traffic generator (plugins/module_utils/udpgen.py) and the one echo
(roles/lab_realserver/files/datagram-echo), run as scripts the way the test
harnesses run them: python3 with no site-packages (-I -S: no Ansible), in a
network namespace of the test's own with the VIP on its loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from ..unit.plugins.module_utils.test_model import REPO

GEN = os.path.join(REPO, "plugins", "module_utils", "udpgen.py")
ECHO = os.path.join(REPO, "roles", "lab_realserver", "files", "datagram-echo")
VIP, VIP6, OTHER = "198.51.100.10", "2001:db8:51::10", "198.51.100.11"


def sh(*argv, **kw):
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, **kw)


@pytest.fixture
def netns():
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "nft")):
        pytest.skip("needs root, iproute2 and nftables for a network namespace")
    name = "ddg" + uuid.uuid4().hex[:8]
    procs = []
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        for addr in (VIP + "/32", OTHER + "/32", VIP6 + "/128"):
            sh("ip", "-n", name, "addr", "add", addr, "dev", "lo")

        def start(*argv):
            proc = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-I", "-S"] + list(argv),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(proc)
            return proc
        yield name, start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
            proc.communicate(timeout=10)
        subprocess.run(["ip", "netns", "del", name], check=False)


def echo(start, *args):
    """Start the echo; return it once it printed "listening EPOCH"."""
    proc = start(ECHO, *args)
    line = proc.stdout.readline().split()
    assert line[0] == "listening" and abs(float(line[1]) - time.time()) < 30, line
    return proc


def gen(ns, *args, timeout=60):
    res = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-I", "-S", GEN] + list(args),
                         capture_output=True, text=True, timeout=timeout, check=False)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_echo_names_itself_on_every_port_ipv4_and_ipv6(netns):
    ns, start = netns
    echo(start, "--name", "rs7", "7000", "7001")
    for vip, port in ((VIP, "7000"), (VIP6, "7001"), (VIP6, "7000")):
        out = gen(ns, vip, port, "--count", "600")
        print(vip, port, {k: out[k] for k in ("sent", "received", "per_server", "reply_sources")})
        assert (out["requested"], out["sent"], out["received"], out["lost"]) == (600, 600, 600, 0)
        assert out["per_server"] == {"rs7": 600}
        assert out["reply_sources"] == {("[%s]:%s" if ":" in vip else "%s:%s") % (vip, port): 600}


def test_paced_stream_from_several_ports_with_trace(netns):
    ns, start = netns
    echo(start, "--name", "rs1")
    t0 = time.monotonic()
    out = gen(ns, VIP, "7000", "--count", "400", "--rate", "400", "--source-port", "41000", "--ports", "4",
              "--trace")
    took = time.monotonic() - t0
    assert out["source_ports"] == [41000, 41001, 41002, 41003]
    assert out["received"] == 400 and out["trace"] == "A" * 400
    assert sorted(item["per_server"]["rs1"] for item in out["per_port"].values()) == [100] * 4
    assert took >= 0.95, "400 at 400/s must take about a second, took %.2f s" % took


def test_no_reply_mode_sends_the_whole_count_and_abort_is_its_negative_control(netns):
    ns, _start = netns
    # nothing listens on 9995: a one-way service as the client sees it
    one_way = gen(ns, VIP, "9995", "--count", "1000", "--rate", "1000", "--no-reply")
    print("no reply:", {k: one_way[k] for k in ("requested", "sent", "received", "aborted", "seconds")})
    assert (one_way["requested"], one_way["sent"], one_way["send_errors"]) == (1000, 1000, 0)
    assert one_way["aborted"] is None and one_way["seconds"] >= 0.95
    expecting = gen(ns, VIP, "9995", "--count", "1000", "--abort-after", "0.5")
    print("expecting replies:", {k: expecting[k] for k in ("requested", "sent", "aborted")})
    assert expecting["aborted"] and expecting["sent"] < 100


def test_stop_datagram_sigterm_and_pidfile(netns, tmp_path):
    ns, start = netns
    echo(start, "--name", "rs1")
    pidfile = str(tmp_path / "gen.pid")
    proc = start(GEN, VIP, "7000", "--count", "100000", "--rate", "500", "--source-port", "42000",
                 "--ports", "2", "--pidfile", pidfile)
    for _attempt in range(100):
        if os.path.exists(pidfile):
            break
        time.sleep(0.05)
    time.sleep(0.5)
    sh("ip", "netns", "exec", ns, sys.executable, "-c",
       "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((%r, 0)); "
       "s.sendto(b'ddipvs-stop', (%r, 42001))" % (OTHER, VIP))
    out = json.loads(proc.communicate(timeout=30)[0])
    assert out["stopped_by"] == "datagram from %s" % OTHER
    assert 0 < out["sent"] < 100000 and out["lost"] == 0 and not os.path.exists(pidfile)

    proc = start(GEN, VIP, "7000", "--count", "100000", "--rate", "500", "--pidfile", pidfile)
    for _attempt in range(100):
        if os.path.exists(pidfile):
            break
        time.sleep(0.05)
    with open(pidfile, encoding="ascii") as f:
        os.kill(int(f.read()), signal.SIGTERM)
    out = json.loads(proc.communicate(timeout=30)[0])
    assert out["stopped_by"] == "SIGTERM" and out["sent"] < 100000


def test_replies_from_another_source_are_caught_and_named(netns):
    """Replies that are not from VIP:port (a missing reply rewrite): the
    connected socket never sees them, the catch-all counts them per name."""
    ns, start = netns
    echo(start, "--name", "rs2", "7000")
    # requests to VIP:7002 go to OTHER:7000 without conntrack, so the echo
    # answers from port 7000 (not VIP:7002), as a real server behind IPVS ops
    # without the reply rewrite
    sh("ip", "netns", "exec", ns, "nft", "-f", "-", input="""
table ip ddg {
    chain out {
        type filter hook output priority raw; policy accept;
        ip daddr %s udp dport 7002 notrack ip daddr set %s udp dport set 7000
    }
}
""" % (VIP, OTHER))
    out = gen(ns, VIP, "7002", "--count", "300")
    print({k: out[k] for k in ("received", "per_server", "reply_sources", "stray_per_server")})
    assert out["received"] == 0 and out["per_server"] == {}
    assert out["stray_per_server"] == {"rs2": 300}
    assert out["reply_sources"] == {"%s:7002" % VIP: 0, "%s:7000" % VIP: 300}
