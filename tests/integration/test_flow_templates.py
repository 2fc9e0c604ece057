# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""NetFlow v9 and IPFIX through the nftables data plane, with real exporter
and collectors: softflowd exports the flows of a capture file the test
writes to the VIP; nfcapd runs on each of four real servers and on a mirror
receiver; nfdump counts what each decoded.

Network namespaces: an exporter, a director holding the ruleset the
nftables role renders (flow_templates on or off, a mirror or none), four
real servers and a mirror on the director's backend bridge. Next to each
collector an AF_PACKET observer (this file) records every datagram that
arrives, so each collector is judged against what it received: data records
counted with the templates of the whole export, the exporter's source
address, template packets.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import uuid

import pytest

from ansible_collections.datagram.director.plugins.module_utils.model import build_plan

from ..unit.plugins.module_utils.test_model import load_model
from ..unit.roles.test_templates import render

VIP, PORT, EXPORTER = "198.51.100.10", 2055, "198.51.100.100"
# Four real servers: softflowd sends templates every 16th packet, a multiple
# of the round robin's cycle, so without copies they all reach one collector.
RS = ("203.0.113.21", "203.0.113.22", "203.0.113.23", "203.0.113.24")
POOL = ["rs%d" % (i + 1) for i in range(len(RS))]
MIRROR = "203.0.113.30"
FLOWS = 3000
VERSION = {"netflow_v9": 9, "ipfix": 10}
TOOLS = ("ip", "nft", "ethtool", "softflowd", "nfcapd", "nfdump")

# Records every IPv4/UDP datagram to PORT arriving on "back" (before the IP
# stack): source address and UDP payload, one JSON line each, until SIGTERM.
OBSERVER = r"""
import json, signal, socket, struct, sys
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
# 4 MB (the default ~208 KB holds fewer frames than the mirror's burst of
# 120 if this process is off its CPU for a moment)
s.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE (root)
s.bind(("back", 0))
out = open(sys.argv[1], "w", buffering=1)
print("ready", flush=True)
while True:
    frame, addr = s.recvfrom(65535)
    if addr[2] == socket.PACKET_OUTGOING:
        continue
    ip = frame[14:]
    ihl = (ip[0] & 15) * 4
    if ip[9] != 17 or struct.unpack("!H", ip[ihl + 2:ihl + 4])[0] != %d:
        continue
    out.write(json.dumps([socket.inet_ntoa(ip[12:16]), ip[ihl + 8:].hex()]) + "\n")
""" % PORT


def sh(*argv, **kw):
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, **kw)


def write_pcap(path, flows):
    """One UDP datagram per flow (distinct source address and port), 100 per second."""
    def frame(i):
        payload = b"flow%06d" % i
        udp = struct.pack("!HHHH", 1024 + i, 53, 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         bytes([10, 1, i // 250, i % 250 + 1]), bytes([10, 2, 0, 1]))
        words = struct.unpack("!10H", ip)
        total = sum(words)
        total = (total >> 16) + (total & 0xffff)
        ip = ip[:10] + struct.pack("!H", ~(total + (total >> 16)) & 0xffff) + ip[12:]
        return b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00" + ip + udp
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
        for i in range(flows):
            data = frame(i)
            f.write(struct.pack("<IIII", 1700000000 + i // 100, (i % 100) * 10000, len(data), len(data)) + data)


def sets(payload):
    """(set id, body) of a NetFlow v9 or IPFIX packet, in order."""
    version = struct.unpack("!H", payload[:2])[0]
    off, out = 20 if version == 9 else 16, []
    while off + 4 <= len(payload):
        sid, length = struct.unpack("!HH", payload[off:off + 4])
        if length < 4:
            break
        out.append((sid, payload[off + 4:off + length]))
        off += length
    return version, out


def templates(payloads):
    """Record length of every template id, True for options templates (RFC 3954, RFC 7011)."""
    found = {}
    for payload in payloads:
        version, items = sets(payload)
        for sid, body in items:
            if sid not in (0, 1, 2, 3):
                continue
            off = 0
            while off + 4 <= len(body):
                tid, count = struct.unpack("!HH", body[off:off + 4])
                if tid < 256:
                    break
                off += 4
                if sid == 1:  # v9 options: scope and option lengths in bytes
                    scope, opts = struct.unpack("!HH", body[off - 2:off + 2])
                    off += 2
                    count = (scope + opts) // 4
                elif sid == 3:
                    off += 2  # scope field count
                length = 0
                for _n in range(count):
                    ftype, flen = struct.unpack("!HH", body[off:off + 4])
                    off += 8 if version == 10 and ftype & 0x8000 else 4
                    length += flen
                found[tid] = (length, sid in (1, 3))
    return found


def count(datagrams, tmpl):
    """Data records (options data left out), template packets, exporter addresses."""
    records, template_packets, sources = 0, 0, collections.Counter()
    for source, payload in datagrams:
        sources[source] += 1
        items = sets(payload)[1]
        template_packets += bool(items) and items[0][0] in (0, 1, 2, 3)
        for sid, body in items:
            if sid >= 256 and not tmpl[sid][1]:
                records += len(body) // tmpl[sid][0]
    return {"records": records, "template_packets": template_packets, "datagrams": len(datagrams),
            "sources": dict(sources)}


@pytest.fixture
def topology(tmp_path):
    if os.geteuid() != 0 or not all(shutil.which(t) for t in TOOLS):
        pytest.skip("needs root, %s" % ", ".join(TOOLS))
    tag = uuid.uuid4().hex[:6]
    ns = dict((n, "ddf%s-%s" % (tag, n)) for n in ["exp", "dir", "mir"] + POOL)
    try:
        for name in ns.values():
            sh("ip", "netns", "add", name)
            sh("ip", "-n", name, "link", "set", "lo", "up")

        def link(a, a_if, b, b_if):
            sh("ip", "link", "add", "tmp" + tag, "type", "veth", "peer", "name", "tmq" + tag)
            for n, tmp, i in ((a, "tmp", a_if), (b, "tmq", b_if)):
                sh("ip", "link", "set", tmp + tag, "netns", n)
                sh("ip", "-n", n, "link", "set", tmp + tag, "name", i)
                sh("ip", "-n", n, "link", "set", i, "up")
                sh("ip", "netns", "exec", n, "ethtool", "-K", i, "tx", "off")

        link(ns["exp"], "front", ns["dir"], "front")
        sh("ip", "-n", ns["dir"], "link", "add", "back", "type", "bridge")
        sh("ip", "-n", ns["dir"], "link", "set", "back", "up")
        hosts = [("rs%d" % (i + 1), a) for i, a in enumerate(RS)] + [("mir", MIRROR)]
        for i, (name, address) in enumerate(hosts):
            link(ns[name], "back", ns["dir"], "port%d" % i)
            sh("ip", "-n", ns["dir"], "link", "set", "port%d" % i, "master", "back")
            sh("ip", "-n", ns[name], "addr", "add", address + "/24", "dev", "back")
        for n, i, a in (("exp", "front", EXPORTER + "/24"), ("dir", "front", "198.51.100.11/24"),
                        ("dir", "front", VIP + "/24"), ("dir", "back", "203.0.113.11/24")):
            sh("ip", "-n", ns[n], "addr", "add", a, "dev", i)
        write_pcap(str(tmp_path / "flows.pcap"), FLOWS)
        yield ns, tmp_path
    finally:
        for name in ns.values():
            subprocess.run(["ip", "netns", "del", name], check=False)


def ruleset(flow_templates, mirrors):
    model = load_model("lab")
    model["data_plane"] = "nftables"
    model["services"] = [{"name": "netflow", "vip": VIP, "port": PORT, "flow_templates": flow_templates,
                          "mirrors": [{"address": MIRROR}] if mirrors else [],
                          "real_servers": [{"address": a} for a in RS]}]
    return render("nftables", "dataplane.nft.j2", build_plan(model), "nftables", "dd-director1")


def wait_bound(netns, address, limit=20.0):
    """Until nfcapd listens on ADDRESS:PORT in NETNS (the first packet carries templates)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if sh("ip", "netns", "exec", netns, "ss", "-Hlun", "sport = :%d" % PORT).stdout.strip():
            return
        time.sleep(0.05)
    raise AssertionError("nfcapd did not bind %s:%d in %s s" % (address, PORT, limit))


def export(ns, tmp, protocol, flow_templates, mirrors):
    """softflowd through the director; per receiver what arrived and what nfcapd decoded."""
    sh("ip", "netns", "exec", ns["dir"], "nft", "-f", "-", input=ruleset(flow_templates, mirrors))
    receivers = [("rs%d" % (i + 1), a) for i, a in enumerate(RS)] + [("mir", MIRROR)]
    procs = {}
    try:
        for name, address in receivers:
            os.makedirs(str(tmp / name))
            procs[name + "-obs"] = subprocess.Popen(
                ["ip", "netns", "exec", ns[name], sys.executable, "-c", OBSERVER, str(tmp / (name + ".jsonl"))],
                stdout=subprocess.PIPE, text=True)
            procs[name] = subprocess.Popen(
                ["ip", "netns", "exec", ns[name], "nfcapd", "-b", address, "-p", str(PORT), "-t", "3600",
                 "-w", str(tmp / name)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        for name, _a in receivers:
            assert procs[name + "-obs"].stdout.readline().strip() == "ready"
        for name, address in receivers:
            wait_bound(ns[name], address)
        out = sh("ip", "netns", "exec", ns["exp"], "softflowd", "-d", "-r", str(tmp / "flows.pcap"), "-m", "100",
                 "-v", str(VERSION[protocol]), "-n", "%s:%d" % (VIP, PORT), timeout=60).stdout
        time.sleep(1)
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
    exported = re.search(r"Flows exported: (\d+) \((\d+) records\) in (\d+) packets", out)
    seen = {}
    for name, _a in receivers:
        with open(str(tmp / (name + ".jsonl"))) as f:
            seen[name] = [(src, bytes.fromhex(hexed)) for src, hexed in (json.loads(line) for line in f)]
    tmpl = templates(p for datagrams in seen.values() for _s, p in datagrams)
    result = {"exported": {"records": int(exported.group(2)), "packets": int(exported.group(3))}}
    for name, _a in receivers:
        result[name] = dict(count(seen[name], tmpl), decoded=decoded(tmp / name),
                            collector_sources=collector_sources(tmp / name))
    listing = sh("ip", "netns", "exec", ns["dir"], "nft", "list", "counters", "table", "netdev", "datagram_director").stdout
    result["counters"] = dict((m.group(1), int(m.group(2))) for m in re.finditer(r"counter (\S+) \{[^}]*?packets (\d+)", listing))
    print("%s flow_templates=%s mirrors=%s: %s" % (protocol, flow_templates, mirrors, json.dumps(result)))
    return result


def decoded(directory):
    """Flows nfcapd decoded and stored (nfdump's statistics of its files)."""
    if not any(n.startswith("nfcapd.2") for n in os.listdir(str(directory))):
        return 0
    stat = sh("nfdump", "-R", str(directory), "-I").stdout
    return int(re.search(r"^Flows: (\d+)$", stat, re.M).group(1))


def collector_sources(directory):
    """The exporter addresses nfdump shows for the stored flows."""
    if not any(n.startswith("nfcapd.2") for n in os.listdir(str(directory))):
        return {}
    lines = sh("nfdump", "-R", str(directory), "-q", "-o", "fmt:%ra").stdout.split()
    return dict(collections.Counter(a for a in lines if re.match(r"^[0-9.]+$", a)))  # not "No matching flows"


@pytest.mark.parametrize("protocol", ["netflow_v9", "ipfix"])
def test_every_collector_decodes_every_record(topology, protocol):
    ns, tmp = topology
    res = export(ns, tmp, protocol, protocol, True)
    total = res["exported"]["records"]
    assert total == FLOWS
    templates_sent = res["mir"]["template_packets"]
    assert templates_sent >= 2
    for name in POOL:
        got = res[name]
        # every record a collector received, it decoded, from the exporter's address
        assert got["decoded"] == got["records"] > 0, name
        assert got["sources"] == {EXPORTER: got["datagrams"]}
        assert got["collector_sources"] == {EXPORTER: got["decoded"]}
        assert got["template_packets"] == templates_sent, name
    # data packets still spread per packet over the pool
    data = [res[n]["datagrams"] - templates_sent for n in POOL]
    assert max(data) - min(data) <= 1 and sum(data) == res["exported"]["packets"] - templates_sent
    assert res["counters"]["templates_netflow"] == templates_sent
    # the mirror: every datagram, every record decoded
    assert res["mir"]["datagrams"] == res["exported"]["packets"] == res["counters"]["mirror_netflow_0"]
    assert res["mir"]["records"] == res["mir"]["decoded"] == total
    assert res["mir"]["sources"] == {EXPORTER: res["mir"]["datagrams"]}
    # records in template packets reach every collector: counted once per extra copy
    in_templates = sum(res[n]["records"] for n in POOL) - total
    print("%s: %d template packets, %d data records duplicated to the other collectors"
          % (protocol, templates_sent, in_templates))


@pytest.mark.parametrize("protocol", ["netflow_v9", "ipfix"])
def test_without_template_copies_records_are_lost(topology, protocol):
    """The negative control: the same export with flow_templates none and no mirror."""
    ns, tmp = topology
    res = export(ns, tmp, protocol, "none", False)
    received = sum(res[n]["records"] for n in POOL)
    lost = dict((n, res[n]["records"] - res[n]["decoded"]) for n in POOL)
    print("%s off: received %d, undecodable per collector %s" % (protocol, received, lost))
    assert received == res["exported"]["records"] == FLOWS
    # Per named real server: the round robin gives the 1st, 17th, 33rd ...
    # datagram (softflowd's template packets) to the first real server of the
    # inventory, which decodes all it gets; the others decode nothing.
    first = POOL[0]
    assert dict((n, res[n]["template_packets"] > 0) for n in POOL) == dict((n, n == first) for n in POOL)
    assert dict((n, lost[n]) for n in POOL) == dict((n, 0 if n == first else res[n]["records"]) for n in POOL)
    assert all(res[n]["records"] > 0 for n in POOL)
    assert res["mir"]["datagrams"] == 0
