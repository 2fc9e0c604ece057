# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The drill's sampler, run on each director (python3 FILE VIPS TABLE SERVICE SECONDS STEP OUT).

Every STEP seconds, until the file OUT.stop exists and for SECONDS seconds
at most, it appends to OUT one line
"TIME MASK FORWARDED": the time (the directors share the host's clock in the
lab), bit i set when this director holds the i-th of the comma-separated VIPS,
and the sum of the per-real-server counters fwd_SERVICE_<i> of the nftables
table netdev TABLE (-1 when unreadable: no ruleset). Each line is flushed, so
a director killed mid-drill leaves its samples up to the kill; "# end" marks
a finished run. Reads only; bounded in time.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time


def forwarded(table, pattern):
    """The service's forwarded datagrams by this director's own counters, or -1."""
    run = subprocess.run(["nft", "--json", "list", "counters", "table", "netdev", table],
                         capture_output=True, text=True, check=False)
    if run.returncode != 0:
        return -1
    items = json.loads(run.stdout).get("nftables", [])
    return sum(item["counter"]["packets"] for item in items
               if "counter" in item and pattern.match(item["counter"]["name"]))


def addresses():
    """Every address of this host, by one netlink dump (RTM_GETADDR): no process per sample."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        # nlmsghdr (RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP) + ifaddrmsg (any family)
        sock.send(struct.pack("=IHHII", 24, 22, 0x301, 1, 0) + struct.pack("=BBBBI", 0, 0, 0, 0, 0))
        found = set()
        while True:
            data, offset = sock.recv(65536), 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind in (2, 3) or length < 16:  # NLMSG_ERROR, NLMSG_DONE: no more parts
                    return found
                if kind == 20:  # RTM_NEWADDR
                    found.update(_attributes(data[offset + 16:offset + length]))
                offset += (length + 3) & ~3
    finally:
        sock.close()


def _attributes(message):
    """The IFA_ADDRESS and IFA_LOCAL of one RTM_NEWADDR (after its nlmsghdr)."""
    family = {2: socket.AF_INET, 10: socket.AF_INET6}.get(message[0])
    out, offset = set(), 8  # ifaddrmsg
    while family and offset + 4 <= len(message):
        length, kind = struct.unpack_from("=HH", message, offset)
        if length < 4:
            break
        if kind in (1, 2):
            out.add(ipaddress.ip_address(socket.inet_ntop(family, message[offset + 4:offset + length])))
        offset += (length + 3) & ~3
    return out


def held(vips):
    """Bit mask of the VIPs this director holds now."""
    have = addresses()
    return sum(1 << i for i, vip in enumerate(vips) if vip in have)


def main(argv):
    vips = [ipaddress.ip_address(vip) for vip in argv[1].split(",")]
    table, service = argv[2], argv[3]
    seconds, step, path = float(argv[4]), float(argv[5]), argv[6]
    pattern = re.compile("^fwd_%s_[0-9]+$" % re.escape(service))
    end, stop = time.time() + seconds, path + ".stop"
    if os.path.exists(stop):
        os.remove(stop)
    with open(path, "w", buffering=1, encoding="ascii") as out:
        while time.time() < end and not os.path.exists(stop):
            now = time.time()
            out.write("%.4f %d %d\n" % (now, held(vips), forwarded(table, pattern)))
            time.sleep(max(0.0, step - (time.time() - now)))
        out.write("# end\n")


if __name__ == "__main__":
    main(sys.argv)
