# -*- coding: utf-8 -*-
# Copyright (c) datagram.director contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Health checks for UDP real servers: probes, a rise/fall state machine and
one selectors-based event loop that checks many servers from one thread.

Standard library only, valid on Python 3.9+: this file is imported both by the
``datagram.director.udp_probe`` module (as Ansible module_utils) and, installed
next to it, by the director-side health daemon (``import health``).

Every probe ends in a ``ProbeResult(ok, reason, rtt)``.  Reply parsers never
raise on garbage input: they return ``(False, reason)``.
"""

from __future__ import absolute_import, division, print_function

import collections
import errno
import hashlib
import heapq
import hmac
import os
import re
import selectors
import socket
import struct
import time

__metaclass__ = type

ProbeResult = collections.namedtuple("ProbeResult", ["ok", "reason", "rtt"])

# Emitted to run_forever()'s callback on every change of state or effective
# weight.  ``weight`` is what the data plane should use (0 = no traffic).
Transition = collections.namedtuple(
    "Transition",
    ["name", "up", "weight", "drain", "previous_up", "previous_weight", "reason", "rtt"],
)

PROBE_TYPES = ("udp", "dns", "radius", "ntp", "sip", "tcp", "http")

# Default ports; one-way UDP protocols (syslog, NetFlow, StatsD) have no reply
# to check, so their receivers are checked with "tcp" or "http" instead.
DEFAULT_PORTS = {"dns": 53, "radius": 1812, "ntp": 123, "sip": 5060, "http": 80}

MAX_REPLY = 65535

DNS_TYPES = {
    "A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16,
    "AAAA": 28, "SRV": 33, "NAPTR": 35, "DS": 43, "DNSKEY": 48, "ANY": 255,
}
DNS_RCODES = {
    "NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4,
    "REFUSED": 5, "YXDOMAIN": 6, "YXRRSET": 7, "NXRRSET": 8, "NOTAUTH": 9,
    "NOTZONE": 10,
}
_DNS_RCODE_NAMES = dict((v, k) for k, v in DNS_RCODES.items())

RADIUS_ACCESS_ACCEPT = 2
RADIUS_ACCESS_REJECT = 3
RADIUS_ACCOUNTING_RESPONSE = 5
RADIUS_STATUS_SERVER = 12
RADIUS_ATTR_NAS_IDENTIFIER = 32
RADIUS_ATTR_MESSAGE_AUTHENTICATOR = 80

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01


def _errno_reason(err, tcp=False):
    """Map socket errors to reasons an operator can act on."""
    code = getattr(err, "errno", None)
    if code == errno.ECONNREFUSED:
        if tcp:
            return "TCP connection refused (RST): nothing listens on the port"
        return "ICMP port unreachable (connection refused): nothing listens on the port"
    if code == errno.EHOSTUNREACH:
        return "host unreachable (ICMP or no neighbour)"
    if code == errno.ENETUNREACH:
        return "network unreachable (no route)"
    if code == errno.ETIMEDOUT:
        return "timed out"
    return "socket error: %s" % (os.strerror(code) if code else err)


# ---------------------------------------------------------------------------
# Generic UDP
# ---------------------------------------------------------------------------

def check_udp_reply(data, expect=None, expect_hex=None, min_length=None, max_length=None):
    """Judge a reply to a generic UDP probe. ``expect`` is a bytes regex
    (searched), ``expect_hex`` a required prefix (bytes)."""
    if not isinstance(data, (bytes, bytearray)):
        return False, "reply is not bytes"
    n = len(data)
    if min_length is not None and n < min_length:
        return False, "reply too short: %d < %d bytes" % (n, min_length)
    if max_length is not None and n > max_length:
        return False, "reply too long: %d > %d bytes" % (n, max_length)
    if expect_hex is not None and not bytes(data).startswith(expect_hex):
        return False, "reply does not start with expected bytes %s" % _hex(expect_hex, 16)
    if expect is not None and expect.search(bytes(data)) is None:
        return False, "reply does not match %r" % expect.pattern
    return True, "reply of %d bytes" % n


def _hex(data, limit):
    h = bytes(data[:limit]).hex()
    return h + ("..." if len(data) > limit else "")


# ---------------------------------------------------------------------------
# DNS (RFC 1035)
# ---------------------------------------------------------------------------

def dns_type_code(qtype):
    if isinstance(qtype, int):
        code = qtype
    elif str(qtype).isdigit():
        code = int(qtype)
    elif str(qtype).upper() in DNS_TYPES:
        code = DNS_TYPES[str(qtype).upper()]
    else:
        raise ValueError("unknown DNS type %r" % (qtype,))
    if not 0 < code < 65536:
        raise ValueError("DNS type out of range: %r" % (qtype,))
    return code


def dns_rcode_code(rcode):
    if isinstance(rcode, int):
        code = rcode
    elif str(rcode).isdigit():
        code = int(rcode)
    elif str(rcode).upper() in DNS_RCODES:
        code = DNS_RCODES[str(rcode).upper()]
    else:
        raise ValueError("unknown DNS rcode %r" % (rcode,))
    if not 0 <= code < 16:
        raise ValueError("DNS rcode out of range: %r" % (rcode,))
    return code


def encode_dns_name(name):
    name = name.rstrip(".")
    out = bytearray()
    if name:
        for label in name.split("."):
            raw = label.encode("idna") if label else b""
            if not 0 < len(raw) < 64:
                raise ValueError("bad DNS label in %r" % (name,))
            out.append(len(raw))
            out += raw
    out.append(0)
    if len(out) > 255:
        raise ValueError("DNS name too long: %r" % (name,))
    return bytes(out)


def build_dns_query(qid, name, qtype="A"):
    """A standard query with RD set, one question, class IN."""
    header = struct.pack("!HHHHHH", qid & 0xFFFF, 0x0100, 1, 0, 0, 0)
    return header + encode_dns_name(name) + struct.pack("!HH", dns_type_code(qtype), 1)


def _read_dns_name(data, offset):
    """Return (labels-as-lowercase-bytes, next offset) or (None, reason).
    Follows compression pointers with a hop limit so loops cannot hang."""
    labels = []
    end = None
    hops = 0
    total = 0
    while True:
        if offset >= len(data):
            return None, "name runs past end of message"
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                return None, "truncated compression pointer"
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            hops += 1
            if hops > 32:
                return None, "compression pointer loop"
            continue
        if length & 0xC0:
            return None, "bad label type"
        offset += 1
        if length == 0:
            break
        if offset + length > len(data):
            return None, "label runs past end of message"
        labels.append(bytes(data[offset:offset + length]).lower())
        total += length + 1
        if total > 255:
            return None, "name too long"
        offset += length
    return labels, (end if end is not None else offset)


def parse_dns_reply(data, qid, name, qtype="A", expect_rcode="NOERROR", expect_answer=True):
    """Validate a DNS reply against the query we sent."""
    try:
        want_type = dns_type_code(qtype)
        want_rcode = dns_rcode_code(expect_rcode)
        want_labels = _labels_of(name)
    except (ValueError, UnicodeError) as exc:
        return False, "bad probe configuration: %s" % exc
    if len(data) < 12:
        return False, "truncated DNS reply: %d bytes" % len(data)
    rid, flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", bytes(data[:12]))
    if rid != (qid & 0xFFFF):
        return False, "DNS reply ID %d does not match query ID %d" % (rid, qid & 0xFFFF)
    if not flags & 0x8000:
        return False, "DNS message is not a response (QR bit clear)"
    if (flags >> 11) & 0xF != 0:
        return False, "DNS reply has unexpected opcode %d" % ((flags >> 11) & 0xF)
    rcode = flags & 0xF
    if rcode != want_rcode:
        return False, "DNS rcode %s, expected %s" % (
            _DNS_RCODE_NAMES.get(rcode, str(rcode)), _DNS_RCODE_NAMES.get(want_rcode, str(want_rcode)))
    offset = 12
    if qd != 1:
        return False, "DNS reply has %d questions, expected 1" % qd
    labels, offset = _read_dns_name(data, offset)
    if labels is None:
        return False, "malformed DNS question: %s" % offset
    if offset + 4 > len(data):
        return False, "truncated DNS question"
    rtype, rclass = struct.unpack("!HH", bytes(data[offset:offset + 4]))
    offset += 4
    if labels != want_labels or rtype != want_type or rclass != 1:
        return False, "DNS reply is for another question"
    answers = 0
    for _i in range(an):
        labels, offset = _read_dns_name(data, offset)
        if labels is None:
            return False, "malformed DNS answer: %s" % offset
        if offset + 10 > len(data):
            return False, "truncated DNS answer record"
        rdlength = struct.unpack("!H", bytes(data[offset + 8:offset + 10]))[0]
        offset += 10 + rdlength
        if offset > len(data):
            return False, "DNS answer data runs past end of message"
        answers += 1
    if expect_answer and answers < 1:
        if flags & 0x0200:
            return False, "DNS reply truncated (TC) with no answer"
        return False, "DNS reply has no answer"
    return True, "DNS %s, %d answer(s)" % (_DNS_RCODE_NAMES.get(rcode, str(rcode)), answers)


def _labels_of(name):
    raw = encode_dns_name(name)
    labels = []
    i = 0
    while raw[i]:
        labels.append(raw[i + 1:i + 1 + raw[i]].lower())
        i += 1 + raw[i]
    return labels


# ---------------------------------------------------------------------------
# RADIUS Status-Server (RFC 5997) with Message-Authenticator (RFC 3579)
# ---------------------------------------------------------------------------

def _to_bytes(value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return str(value).encode("utf-8")


def build_radius_status_server(ident, authenticator, secret, nas_identifier=None):
    """Status-Server with a Message-Authenticator, as RFC 5997 requires."""
    secret = _to_bytes(secret)
    attrs = b""
    if nas_identifier:
        nas = _to_bytes(nas_identifier)[:253]
        attrs += struct.pack("!BB", RADIUS_ATTR_NAS_IDENTIFIER, len(nas) + 2) + nas
    ma_offset = 20 + len(attrs) + 2
    attrs += struct.pack("!BB", RADIUS_ATTR_MESSAGE_AUTHENTICATOR, 18) + b"\x00" * 16
    length = 20 + len(attrs)
    packet = bytearray(struct.pack("!BBH", RADIUS_STATUS_SERVER, ident & 0xFF, length) + authenticator + attrs)
    packet[ma_offset:ma_offset + 16] = hmac.new(secret, bytes(packet), hashlib.md5).digest()
    return bytes(packet)


def parse_radius_reply(data, ident, request_authenticator, secret):
    """Check a reply to Status-Server: code, identifier, Response Authenticator
    (which proves the server knows the shared secret) and, when present, the
    reply's Message-Authenticator."""
    secret = _to_bytes(secret)
    if len(data) < 20:
        return False, "truncated RADIUS reply: %d bytes" % len(data)
    data = bytes(data)
    code, rid, length = struct.unpack("!BBH", data[:4])
    if length < 20 or length > len(data):
        return False, "RADIUS length field %d does not fit the %d-byte reply" % (length, len(data))
    data = data[:length]  # octets past Length are padding (RFC 2865 3)
    if rid != (ident & 0xFF):
        return False, "RADIUS identifier %d does not match request %d" % (rid, ident & 0xFF)
    expected = hashlib.md5(data[:4] + request_authenticator + data[20:] + secret).digest()
    if not hmac.compare_digest(expected, data[4:20]):
        return False, "RADIUS Response Authenticator mismatch (wrong shared secret?)"
    offset = 20
    while offset < length:
        if offset + 2 > length:
            return False, "truncated RADIUS attribute"
        atype, alen = data[offset], data[offset + 1]
        if alen < 2 or offset + alen > length:
            return False, "malformed RADIUS attribute %d" % atype
        if atype == RADIUS_ATTR_MESSAGE_AUTHENTICATOR:
            if alen != 18:
                return False, "malformed Message-Authenticator"
            zeroed = data[:4] + request_authenticator + data[20:offset + 2] + b"\x00" * 16 + data[offset + 18:]
            mac = hmac.new(secret, zeroed, hashlib.md5).digest()
            if not hmac.compare_digest(mac, data[offset + 2:offset + 18]):
                return False, "RADIUS reply Message-Authenticator mismatch"
        offset += alen
    if code in (RADIUS_ACCESS_ACCEPT, RADIUS_ACCOUNTING_RESPONSE):
        return True, "RADIUS %s" % ("Access-Accept" if code == RADIUS_ACCESS_ACCEPT else "Accounting-Response")
    if code == RADIUS_ACCESS_REJECT:
        return False, "RADIUS Access-Reject to Status-Server"
    return False, "unexpected RADIUS code %d" % code


# ---------------------------------------------------------------------------
# NTP (RFC 5905)
# ---------------------------------------------------------------------------

def build_ntp_request(transmit):
    """Mode 3 (client), version 4.  ``transmit`` (8 bytes) is random rather
    than the local clock, so the reply's origin echo is a nonce (RFC 9109)."""
    return struct.pack("!B", (0 << 6) | (4 << 3) | 3) + b"\x00" * 39 + bytes(transmit)[:8].ljust(8, b"\x00")


def parse_ntp_reply(data, transmit):
    if len(data) < 48:
        return False, "truncated NTP reply: %d bytes" % len(data)
    data = bytes(data)
    first, stratum = data[0], data[1]
    leap, version, mode = first >> 6, (first >> 3) & 7, first & 7
    if mode != 4:
        return False, "NTP reply mode %d, expected 4 (server)" % mode
    if not 1 <= version <= 4:
        return False, "NTP reply version %d unsupported" % version
    if data[24:32] != bytes(transmit)[:8].ljust(8, b"\x00"):
        return False, "NTP origin timestamp does not echo our transmit timestamp"
    if stratum == 0:
        kiss = data[12:16].decode("ascii", "replace")
        return False, "NTP kiss-o'-death %r" % kiss
    if not 1 <= stratum <= 15:
        return False, "NTP stratum %d (unsynchronised)" % stratum
    if leap == 3:
        return False, "NTP server clock not synchronised (leap indicator 3)"
    return True, "NTP stratum %d" % stratum


# ---------------------------------------------------------------------------
# SIP OPTIONS (RFC 3261)
# ---------------------------------------------------------------------------

def _sip_host(addr):
    host = addr[0]
    return "[%s]" % host if ":" in host else host


def build_sip_options(local, remote, call_id, branch, tag, uri=None):
    """OPTIONS over UDP with the headers RFC 3261 makes mandatory."""
    lhost, lport = _sip_host(local), local[1]
    rhost, rport = _sip_host(remote), remote[1]
    uri = uri or "sip:%s:%d" % (rhost, rport)
    lines = [
        "OPTIONS %s SIP/2.0" % uri,
        "Via: SIP/2.0/UDP %s:%d;branch=z9hG4bK%s;rport" % (lhost, lport, branch),
        "Max-Forwards: 70",
        "From: <sip:health@%s>;tag=%s" % (lhost, tag),
        "To: <%s>" % uri,
        "Call-ID: %s" % call_id,
        "CSeq: 1 OPTIONS",
        "Contact: <sip:health@%s:%d>" % (lhost, lport),
        "Accept: application/sdp",
        "User-Agent: datagram-director-health",
        "Content-Length: 0",
        "", "",
    ]
    return "\r\n".join(lines).encode("ascii")


_SIP_STATUS = re.compile(rb"^SIP/2\.0 ([1-6][0-9][0-9])(?: ([^\r\n]*))?\r?\n")
_SIP_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.I | re.M)
_SIP_CSEQ = re.compile(rb"^cseq[ \t]*:[ \t]*([0-9]+)[ \t]+([A-Za-z]+)", re.I | re.M)


def parse_sip_reply(data, call_id):
    """(ok, reason) for a final response, None for a provisional (1xx) one,
    which means: keep waiting."""
    data = bytes(data)
    m = _SIP_STATUS.match(data)
    if m is None:
        return False, "not a SIP response"
    status = int(m.group(1))
    text = (m.group(2) or b"").decode("utf-8", "replace")[:80]
    head = data.split(b"\r\n\r\n", 1)[0]
    cid = _SIP_CALL_ID.search(head)
    if cid is None or cid.group(1) != _to_bytes(call_id):
        return False, "SIP response with foreign or missing Call-ID"
    cseq = _SIP_CSEQ.search(head)
    if cseq is None or cseq.group(2).upper() != b"OPTIONS":
        return False, "SIP response with wrong or missing CSeq"
    if status < 200:
        return None
    # Any final response proves a live SIP stack (a 404 or 405 too).
    return True, "SIP %d %s" % (status, text)


# ---------------------------------------------------------------------------
# HTTP status (for receivers of one-way UDP protocols)
# ---------------------------------------------------------------------------

_HTTP_STATUS = re.compile(rb"^HTTP/[0-9]\.[0-9] ([0-9]{3})(?: ([^\r\n]*))?\r?\n")


def parse_http_status(data, expect_status=None):
    """(ok, reason) once the status line is complete, None before that."""
    data = bytes(data)
    if b"\n" not in data[:8192]:
        if len(data) >= 8192:
            return False, "no HTTP status line in the first 8 KiB"
        return None
    m = _HTTP_STATUS.match(data)
    if m is None:
        return False, "not an HTTP response"
    status = int(m.group(1))
    text = (m.group(2) or b"").decode("latin-1")[:80]
    if expect_status:
        ok = status in expect_status
    else:
        ok = 200 <= status < 400
    return ok, "HTTP %d %s" % (status, text) if ok else "HTTP status %d %s not expected" % (status, text)


# ---------------------------------------------------------------------------
# Probe definitions
# ---------------------------------------------------------------------------

PROBE_OPTION_DEFAULTS = {
    "type": "udp",
    "host": None,
    "port": None,
    "timeout": 1.0,
    "source": None,
    "payload": None,
    "payload_hex": None,
    "expect": None,
    "expect_hex": None,
    "min_length": None,
    "max_length": None,
    # keepalived's DNS_CHECK default: any resolver answers "SOA ." with data.
    "query_name": ".",
    "query_type": "SOA",
    "expect_rcode": "NOERROR",
    "expect_answer": True,
    "secret": None,
    "nas_identifier": "datagram-director-health",
    "sip_uri": None,
    "http_path": "/",
    "http_host": None,
    "expect_status": None,
}


def _unhex(value, what):
    try:
        return bytes.fromhex(re.sub(r"[\s:]", "", value))
    except (TypeError, ValueError):
        raise ValueError("%s is not valid hex: %r" % (what, value))


class Probe:
    """A validated probe configuration.  Address resolution happens here,
    once, so the event loop never blocks on DNS."""

    def __init__(self, spec):
        opts = dict(PROBE_OPTION_DEFAULTS)
        for key, value in spec.items():
            if key not in opts:
                raise ValueError("unknown probe option %r" % key)
            if value is not None:
                opts[key] = value
        self.options = opts
        self.type = str(opts["type"]).lower()
        if self.type not in PROBE_TYPES:
            raise ValueError("unknown probe type %r (one of %s)" % (opts["type"], ", ".join(PROBE_TYPES)))
        if not opts["host"]:
            raise ValueError("probe needs a host")
        port = opts["port"] if opts["port"] is not None else DEFAULT_PORTS.get(self.type)
        if port is None:
            raise ValueError("probe type %s needs a port" % self.type)
        port = int(port)
        if not 0 < port < 65536:
            raise ValueError("port out of range: %r" % port)
        self.timeout = float(opts["timeout"])
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        self.transport = socket.SOCK_STREAM if self.type in ("tcp", "http") else socket.SOCK_DGRAM
        infos = socket.getaddrinfo(opts["host"], port, 0, self.transport)
        self.family, _t, _p, _c, self.address = infos[0]
        self.source = None
        if opts["source"]:
            self.source = socket.getaddrinfo(opts["source"], 0, self.family, self.transport)[0][4]
        self.host, self.port = opts["host"], port

        if self.type == "udp":
            if opts["payload"] is not None and opts["payload_hex"] is not None:
                raise ValueError("payload and payload_hex are mutually exclusive")
            if opts["payload_hex"] is not None:
                self.payload = _unhex(opts["payload_hex"], "payload_hex")
            else:
                self.payload = _to_bytes(opts["payload"] if opts["payload"] is not None else "")
            self.expect = re.compile(_to_bytes(opts["expect"]), re.S) if opts["expect"] is not None else None
            self.expect_hex = _unhex(opts["expect_hex"], "expect_hex") if opts["expect_hex"] is not None else None
            self.min_length = int(opts["min_length"]) if opts["min_length"] is not None else None
            self.max_length = int(opts["max_length"]) if opts["max_length"] is not None else None
        elif self.type == "dns":
            dns_type_code(opts["query_type"])
            dns_rcode_code(opts["expect_rcode"])
            encode_dns_name(str(opts["query_name"]))
        elif self.type == "radius":
            if not opts["secret"]:
                raise ValueError("radius probe needs a secret")
        elif self.type == "http":
            statuses = opts["expect_status"]
            if isinstance(statuses, (int, str)):
                statuses = [statuses]
            self.expect_status = [int(s) for s in statuses] if statuses else None

    @property
    def label(self):
        host = "[%s]" % self.host if ":" in str(self.host) else self.host
        return "%s %s:%d" % (self.type, host, self.port)

    # -- UDP request/reply pairs; ctx carries what the reply must echo --

    def build_request(self, local):
        t = self.type
        o = self.options
        if t == "udp":
            return self.payload, None
        if t == "dns":
            qid = struct.unpack("!H", os.urandom(2))[0]
            return build_dns_query(qid, str(o["query_name"]), o["query_type"]), qid
        if t == "radius":
            ident = os.urandom(1)[0]
            auth = os.urandom(16)
            return build_radius_status_server(ident, auth, o["secret"], o["nas_identifier"]), (ident, auth)
        if t == "ntp":
            xmt = os.urandom(8)
            return build_ntp_request(xmt), xmt
        if t == "sip":
            call_id = "%s@%s" % (os.urandom(8).hex(), local[0])
            return build_sip_options(local, self.address, call_id, os.urandom(6).hex(),
                                     os.urandom(4).hex(), o["sip_uri"]), call_id
        raise ValueError("not a UDP probe: %s" % t)

    def check_reply(self, data, ctx):
        t = self.type
        o = self.options
        if t == "udp":
            return check_udp_reply(data, self.expect, self.expect_hex, self.min_length, self.max_length)
        if t == "dns":
            return parse_dns_reply(data, ctx, str(o["query_name"]), o["query_type"],
                                   o["expect_rcode"], bool(o["expect_answer"]))
        if t == "radius":
            return parse_radius_reply(data, ctx[0], ctx[1], o["secret"])
        if t == "ntp":
            return parse_ntp_reply(data, ctx)
        if t == "sip":
            return parse_sip_reply(data, ctx)
        return False, "no reply check for %s" % t

    def http_request(self):
        host = self.options["http_host"] or (
            "[%s]" % self.host if ":" in str(self.host) else str(self.host))
        return ("GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: datagram-director-health\r\n"
                "Connection: close\r\n\r\n" % (self.options["http_path"], host)).encode("latin-1")


class ProbeTask:
    """One probe in flight on one non-blocking socket.

    The event loop registers ``sock`` for ``events`` and calls ``on_event``;
    a result (not None) ends the task.  ``deadline`` is monotonic time.
    """

    def __init__(self, probe, now=None, clock=time.monotonic):
        self.probe = probe
        self.clock = clock
        self.started = clock() if now is None else now
        self.deadline = self.started + probe.timeout
        self.sock = None
        self.events = selectors.EVENT_READ
        self.result = None
        self._ctx = None
        self._buf = b""
        self._sent = False
        self._selector = None
        try:
            self._start()
        except OSError as exc:
            self._finish(False, _errno_reason(exc, probe.transport == socket.SOCK_STREAM))
        except Exception as exc:  # pylint: disable=broad-except
            self._finish(False, "internal error: %r" % (exc,))

    def register(self, selector, data):
        """Watch the socket; close() unregisters it again, before the fd is
        closed (a closed fd cannot be looked up, and its number is reused)."""
        selector.register(self.sock, self.events, data)
        self._selector = selector

    def rearm(self, data):
        self._selector.modify(self.sock, self.events, data)

    def _start(self):
        p = self.probe
        sock = socket.socket(p.family, p.transport)
        self.sock = sock
        sock.setblocking(False)
        if p.source:
            sock.bind(p.source)
        if p.transport == socket.SOCK_DGRAM:
            # connect() makes the kernel deliver only this peer's datagrams and
            # turns an ICMP port unreachable into ECONNREFUSED on recv().
            sock.connect(p.address)
            payload, self._ctx = p.build_request(sock.getsockname())
            sock.send(payload)
            self.events = selectors.EVENT_READ
        else:
            err = sock.connect_ex(p.address)
            if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
                raise OSError(err, os.strerror(err))
            self.events = selectors.EVENT_WRITE

    def _finish(self, ok, reason):
        if self.result is None:
            self.result = ProbeResult(bool(ok), reason, round(self.clock() - self.started, 6))
        self.close()
        return self.result

    def close(self):
        if self.sock is not None:
            if self._selector is not None:
                try:
                    self._selector.unregister(self.sock)
                except (KeyError, ValueError):
                    pass
                self._selector = None
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def on_timeout(self):
        if self.probe.transport == socket.SOCK_STREAM and not self._sent:
            return self._finish(False, "timed out after %.3gs connecting" % self.probe.timeout)
        return self._finish(False, "timed out after %.3gs without a valid reply" % self.probe.timeout)

    def on_event(self, mask):
        """Returns a ProbeResult when done, None to keep waiting, "rearm"
        when ``events`` changed (TCP connected, now reading).  Any
        exception is turned into a failure: a probe must not kill the loop."""
        if self.result is not None:
            return self.result
        try:
            if self.probe.transport == socket.SOCK_DGRAM:
                return self._on_udp()
            return self._on_tcp(mask)
        except OSError as exc:
            return self._finish(False, _errno_reason(exc, self.probe.transport == socket.SOCK_STREAM))
        except Exception as exc:  # pylint: disable=broad-except
            return self._finish(False, "internal error: %r" % (exc,))

    def _on_udp(self):
        # One datagram per wake-up: the selector is level-triggered, so a
        # second queued datagram (after a SIP 1xx) wakes us again.
        try:
            data = self.sock.recv(MAX_REPLY)
        except (BlockingIOError, InterruptedError):
            return None
        verdict = self.probe.check_reply(data, self._ctx)
        return None if verdict is None else self._finish(*verdict)

    def _on_tcp(self, mask):
        p = self.probe
        if not self._sent:
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err))
            self._sent = True
            if p.type == "tcp":
                return self._finish(True, "TCP connect")
            self.sock.send(p.http_request())
            self.events = selectors.EVENT_READ
            return "rearm"
        while True:
            try:
                chunk = self.sock.recv(8192)
            except (BlockingIOError, InterruptedError):
                return None
            if not chunk:
                verdict = parse_http_status(self._buf, p.expect_status)
                return self._finish(*(verdict or (False, "connection closed before an HTTP status line")))
            self._buf += chunk
            verdict = parse_http_status(self._buf, p.expect_status)
            if verdict is not None:
                return self._finish(*verdict)


def _as_probe(spec):
    return spec if isinstance(spec, Probe) else Probe(spec)


def run_probes(specs, clock=time.monotonic):
    """Run probes concurrently in one selector loop; results in input order."""
    probes = [_as_probe(s) for s in specs]
    sel = selectors.DefaultSelector()
    results = [None] * len(probes)
    pending = {}
    try:
        for i, probe in enumerate(probes):
            task = ProbeTask(probe, clock=clock)
            if task.result is not None:
                results[i] = task.result
                continue
            task.register(sel, (i, task))
            pending[i] = task
        while pending:
            now = clock()
            wait = max(0.0, min(t.deadline for t in pending.values()) - now)
            for key, mask in sel.select(wait):
                i, task = key.data
                res = task.on_event(mask)
                if res == "rearm":
                    task.rearm((i, task))
                elif res is not None:
                    results[i] = res
                    del pending[i]
            now = clock()
            for i, task in list(pending.items()):
                if task.deadline <= now:
                    results[i] = task.on_timeout()
                    del pending[i]
    finally:
        for task in pending.values():
            task.close()
        sel.close()
    return results


def probe_once(spec):
    """Run one probe; returns a ProbeResult."""
    try:
        probe = _as_probe(spec)
    except (ValueError, OSError) as exc:
        return ProbeResult(False, "bad probe: %s" % exc, 0.0)
    return run_probes([probe])[0]


# ---------------------------------------------------------------------------
# State machine
# ---------------------------------------------------------------------------

class ServerState:
    """Rise/fall hysteresis for one real server.

    Starts DOWN: a server gets traffic only after ``rise`` consecutive
    successes.  ``fall`` consecutive failures take it down.  ``drain`` keeps
    the server configured but forces its effective weight to 0.
    """

    def __init__(self, name, weight=1, rise=2, fall=3, drain=False):
        if int(rise) < 1 or int(fall) < 1:
            raise ValueError("rise and fall must be >= 1")
        if int(weight) < 0:
            raise ValueError("weight must be >= 0")
        self.name = name
        self.weight = int(weight)
        self.rise = int(rise)
        self.fall = int(fall)
        self.drain = bool(drain)
        self.up = False
        self.successes = 0
        self.failures = 0
        self.reason = "not checked yet"
        self.rtt = None
        self.checks = 0

    @property
    def effective_weight(self):
        return self.weight if self.up and not self.drain else 0

    def _change(self, before_up, before_weight):
        if before_up == self.up and before_weight == self.effective_weight:
            return None
        return Transition(self.name, self.up, self.effective_weight, self.drain,
                          before_up, before_weight, self.reason, self.rtt)

    def record(self, ok, reason="", rtt=None):
        """Feed one probe result; returns a Transition or None."""
        before = (self.up, self.effective_weight)
        self.checks += 1
        self.reason = reason
        self.rtt = rtt
        if ok:
            self.successes += 1
            self.failures = 0
            if not self.up and self.successes >= self.rise:
                self.up = True
        else:
            self.failures += 1
            self.successes = 0
            if self.up and self.failures >= self.fall:
                self.up = False
        return self._change(*before)

    def set_drain(self, drain):
        before = (self.up, self.effective_weight)
        self.drain = bool(drain)
        return self._change(*before)

    def set_weight(self, weight):
        if int(weight) < 0:
            raise ValueError("weight must be >= 0")
        before = (self.up, self.effective_weight)
        self.weight = int(weight)
        return self._change(*before)


# ---------------------------------------------------------------------------
# Event loop for many servers
# ---------------------------------------------------------------------------

ENGINE_DEFAULTS = {"interval": 1.0, "timeout": None, "rise": 2, "fall": 3}

# First checks are spread over this many start slots per interval: small
# bursts, yet few wake-ups (each wake-up costs a syscall and Python work).
START_SLOT = 0.05


class _Entry:
    __slots__ = ("state", "probe", "interval", "next_due", "task")

    def __init__(self, state, probe, interval, next_due):
        self.state = state
        self.probe = probe
        self.interval = interval
        self.next_due = next_due
        self.task = None


def _server_probe_spec(server, defaults):
    spec = dict(server.get("probe") or {})
    spec.setdefault("host", server.get("host"))
    if server.get("port") is not None:
        spec.setdefault("port", server.get("port"))
    timeout = spec.get("timeout") or server.get("timeout") or defaults["timeout"]
    interval = float(server.get("interval") or defaults["interval"])
    if interval <= 0:
        raise ValueError("interval must be positive")
    spec["timeout"] = float(timeout) if timeout else min(1.0, interval * 0.8)
    if spec["timeout"] > interval:
        raise ValueError("timeout %.3g exceeds interval %.3g for %s" % (spec["timeout"], interval, server.get("name")))
    return spec, interval


class HealthEngine:
    """Checks every configured server every ``interval`` seconds from one
    thread: one selector, one short-lived non-blocking socket per check, two
    heaps (next check, next deadline) so each wake-up costs O(log n).

    config = {"interval": 1, "timeout": 0.8, "rise": 2, "fall": 3,
              "servers": [{"name": "rs1", "host": "198.51.100.10", "port": 53,
                           "weight": 1, "drain": False,
                           "probe": {"type": "dns", "query_name": "example.org"}}]}

    Per-server ``interval``, ``timeout``, ``rise`` and ``fall`` override the
    top-level values.  A fresh socket per check means a late reply or a
    queued ICMP error from an earlier check can never be mistaken for this one.
    """

    def __init__(self, config, on_change=None, clock=time.monotonic):
        defaults = dict(ENGINE_DEFAULTS)
        for key in ENGINE_DEFAULTS:
            if config.get(key) is not None:
                defaults[key] = config[key]
        self.clock = clock
        self.on_change = on_change
        self.selector = selectors.DefaultSelector()
        self.entries = collections.OrderedDict()
        self._due = []        # (next_due, seq, entry)
        self._deadlines = []  # (deadline, seq, entry, task); stale items skipped
        self._seq = 0
        servers = list(config.get("servers") or [])
        now = clock()
        for n, server in enumerate(servers):
            spec, interval = _server_probe_spec(server, defaults)
            probe = Probe(spec)
            name = server.get("name") or probe.label
            if name in self.entries:
                raise ValueError("duplicate server name %r" % name)
            weight = server.get("weight")
            state = ServerState(name, 1 if weight is None else weight,
                                server.get("rise") or defaults["rise"],
                                server.get("fall") or defaults["fall"],
                                server.get("drain", False))
            slots = max(1, min(len(servers), int(interval / START_SLOT)))
            entry = _Entry(state, probe, interval, now + interval * (n % slots) / slots)
            self.entries[name] = entry
            self._push_due(entry)

    def _push_due(self, entry):
        self._seq += 1
        heapq.heappush(self._due, (entry.next_due, self._seq, entry))

    @property
    def states(self):
        return dict((name, e.state) for name, e in self.entries.items())

    def _emit(self, transition):
        if transition is not None and self.on_change is not None:
            self.on_change(transition)
        return transition

    def set_drain(self, name, drain=True):
        """Administrative drain: weight 0, server kept and still checked."""
        return self._emit(self.entries[name].state.set_drain(drain))

    def set_weight(self, name, weight):
        return self._emit(self.entries[name].state.set_weight(weight))

    def _complete(self, entry, result):
        entry.task = None
        self._emit(entry.state.record(result.ok, result.reason, result.rtt))

    def _start_due(self, now):
        due = self._due
        while due and due[0][0] <= now:
            _t, _s, entry = heapq.heappop(due)
            # Fixed rate; after a stall, resume from now instead of bursting.
            entry.next_due = max(entry.next_due + entry.interval, now)
            self._push_due(entry)
            if entry.task is not None:
                continue  # previous check still in flight (timeout == interval)
            task = ProbeTask(entry.probe, now, self.clock)
            if task.result is not None:
                self._complete(entry, task.result)
                continue
            entry.task = task
            task.register(self.selector, entry)
            self._seq += 1
            heapq.heappush(self._deadlines, (task.deadline, self._seq, entry, task))

    def _expire(self, now):
        dl = self._deadlines
        while dl and (dl[0][0] <= now or dl[0][2].task is not dl[0][3]):
            _d, _s, entry, task = heapq.heappop(dl)
            if entry.task is task:
                self._complete(entry, task.on_timeout())

    def step(self, max_wait=1.0):
        """Start due checks, wait for I/O or the next deadline, settle."""
        now = self.clock()
        self._start_due(now)
        self._expire(now)
        wake = now + max_wait
        if self._due:
            wake = min(wake, self._due[0][0])
        if self._deadlines:
            wake = min(wake, self._deadlines[0][0])
        timeout = max(0.0, wake - self.clock())
        if self.selector.get_map():
            events = self.selector.select(timeout)
        else:
            time.sleep(timeout)
            events = ()
        for key, mask in events:
            entry = key.data
            task = entry.task
            if task is None:
                continue
            res = task.on_event(mask)
            if res == "rearm":
                task.rearm(entry)
            elif res is not None:
                self._complete(entry, res)
        self._expire(self.clock())

    def run(self, should_stop=None, duration=None):
        end = None if duration is None else self.clock() + duration
        while not (should_stop and should_stop()):
            if end is not None and self.clock() >= end:
                break
            self.step(1.0 if end is None else max(0.0, min(1.0, end - self.clock())))

    def close(self):
        for entry in self.entries.values():
            if entry.task is not None:
                entry.task.close()
                entry.task = None
        self.selector.close()


def run_forever(config, on_change, should_stop=None, duration=None):
    """Check all servers in ``config`` until ``should_stop()`` is true (or
    ``duration`` seconds passed); call ``on_change(Transition)`` on every
    change of up/down state or effective weight.  Servers start DOWN."""
    engine = HealthEngine(config, on_change)
    try:
        engine.run(should_stop, duration)
    finally:
        engine.close()
    return engine.states
