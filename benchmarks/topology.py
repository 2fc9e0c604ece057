# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Network namespaces of the data-plane benchmark: one replica per path.

A director replica: client ns -> director ns (eth0 frontend, eth1 backend)
-> bridge ns -> three real-server ns.  A baseline replica: the client on the
real servers' bridge, no director.  Every replica uses the same addresses
(each lives in its own namespaces), so every director gets the same ruleset.
All addresses are documentation/benchmark ranges; nothing routes out.
"""

from __future__ import annotations

import os
import subprocess

PREFIX = "ddb"
CLIENT = "198.51.100.100"
DIRECTOR_FRONT = "198.51.100.3"
VIP = "198.51.100.10"
DIRECTOR_BACK = "203.0.113.3"
GATEWAY_VIP = "203.0.113.1"
DIRECT_CLIENT = "203.0.113.100"
PORT = 7000
# the named real servers of every replica: name -> address
REAL_SERVERS = {"rs1": "203.0.113.21", "rs2": "203.0.113.22", "rs3": "203.0.113.23"}


def sh(*args, check=True, netns=None, stdin=None):
    """Run a command (inside ``netns`` when given); raise with its stderr."""
    cmd = (["ip", "netns", "exec", netns] if netns else []) + list(args)
    res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if check and res.returncode:
        raise RuntimeError("%s: rc %d: %s" % (" ".join(cmd), res.returncode, res.stderr.strip()))
    return res.stdout


def ns_path(name):
    """The bind-mounted namespace file ``ip netns add`` made."""
    return "/run/netns/" + name


def names(index):
    """Namespace names of replica ``index``."""
    base = "%s%d" % (PREFIX, index)
    return {"client": base + "c", "director": base + "d", "bridge": base + "b",
            "rs": dict((rs, "%sr%s" % (base, rs[2:])) for rs in REAL_SERVERS)}


def _veth(ns_a, name_a, ns_b, name_b):
    sh("ip", "link", "add", name_a, "netns", ns_a, "type", "veth", "peer", "name", name_b, "netns", ns_b)
    # no checksum offload: a rewrite that breaks a checksum shows up as loss
    for ns, name in ((ns_a, name_a), (ns_b, name_b)):
        sh("ethtool", "-K", name, "tx", "off", netns=ns)


def _addr(ns, dev, *cidrs):
    for cidr in cidrs:
        sh("ip", "addr", "add", cidr, "dev", dev, netns=ns)
    sh("ip", "link", "set", dev, "up", netns=ns)


def create(index, director=True):
    """Build replica ``index``; returns its namespace names."""
    n = names(index)
    all_ns = [n["client"], n["bridge"]] + list(n["rs"].values()) + ([n["director"]] if director else [])
    for ns in all_ns:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "set", "lo", "up", netns=ns)
    sh("ip", "link", "add", "br0", "type", "bridge", netns=n["bridge"])
    sh("ip", "link", "set", "br0", "up", netns=n["bridge"])
    for rs, ns in n["rs"].items():
        _veth(ns, "eth0", n["bridge"], rs)
        sh("ip", "link", "set", rs, "master", "br0", "up", netns=n["bridge"])
        _addr(ns, "eth0", REAL_SERVERS[rs] + "/24")
        sh("ip", "route", "add", "default", "via", GATEWAY_VIP, netns=ns)
    if director:
        d = n["director"]
        _veth(n["client"], "eth0", d, "eth0")
        _veth(d, "eth1", n["bridge"], "dir")
        sh("ip", "link", "set", "dir", "master", "br0", "up", netns=n["bridge"])
        _addr(n["client"], "eth0", CLIENT + "/24")
        sh("ip", "route", "add", "default", "via", DIRECTOR_FRONT, netns=n["client"])
        _addr(d, "eth0", DIRECTOR_FRONT + "/24", VIP + "/24")
        _addr(d, "eth1", DIRECTOR_BACK + "/24", GATEWAY_VIP + "/24")
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=d)
    else:
        _veth(n["client"], "eth0", n["bridge"], "client")
        sh("ip", "link", "set", "client", "master", "br0", "up", netns=n["bridge"])
        _addr(n["client"], "eth0", DIRECT_CLIENT + "/24")
    return n


def destroy_all():
    """Delete every namespace of the benchmark (by its prefix only)."""
    for line in sh("ip", "netns", "list").splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX) and name[len(PREFIX):len(PREFIX) + 1].isdigit():
            sh("ip", "netns", "del", name, check=False)


def csum_errors(ns):
    """UdpInCsumErrors of namespace ``ns`` (rewritten checksums that broke)."""
    lines = [line.split() for line in sh("cat", "/proc/net/snmp", netns=ns).splitlines() if line.startswith("Udp:")]
    return int(dict(zip(lines[0], lines[1]))["InCsumErrors"])


def exists(name):
    """Whether namespace ``name`` exists."""
    return os.path.exists(ns_path(name))
