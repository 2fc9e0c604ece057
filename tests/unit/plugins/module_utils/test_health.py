# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure tests of the health engine: request builders, reply parsers (with
property tests on arbitrary and mutated bytes) and the rise/fall state machine.
No sockets are opened here; tests/integration/test_health_servers.py does that."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.datagram.director.plugins.module_utils import health as h

ANY_BYTES = st.binary(min_size=0, max_size=600)
SECRET = b"testing123"


def _is_verdict(v, allow_none=False):
    if v is None:
        return allow_none
    return isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], bool) and isinstance(v[1], str)


def _mutations():
    """(truncate_at, [(index, xor)]) applied to a valid reply."""
    return st.tuples(st.integers(min_value=0, max_value=700),
                     st.lists(st.tuples(st.integers(min_value=0, max_value=700),
                                        st.integers(min_value=1, max_value=255)), max_size=6))


def _mutate(data, mutation):
    cut, flips = mutation
    out = bytearray(data[:cut])
    for i, x in flips:
        if out:
            out[i % len(out)] ^= x
    return bytes(out)


# --------------------------------------------------------------------------- DNS

def dns_reply(query, rcode=0, answers=1, qr=True, rid=None, tc=False, rtype=1):
    qid = struct.unpack("!H", query[:2])[0] if rid is None else rid
    flags = (0x8000 if qr else 0) | 0x0100 | 0x0080 | (0x0200 if tc else 0) | rcode
    out = struct.pack("!HHHHHH", qid, flags, 1, answers, 0, 0) + query[12:]
    for i in range(answers):
        # owner name as a compression pointer to the question (offset 12)
        out += b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, 60, 4) + bytes([198, 51, 100, 10 + i])
    return out


class TestDns:
    def test_query_layout(self):
        q = h.build_dns_query(0x1234, "Example.org", "AAAA")
        assert q[:2] == b"\x12\x34"
        assert struct.unpack("!HHHHHH", q[:12])[1:] == (0x0100, 1, 0, 0, 0)
        assert q[12:] == b"\x07Example\x03org\x00" + struct.pack("!HH", 28, 1)

    def test_root_query(self):
        assert h.build_dns_query(1, ".", "SOA")[12:] == b"\x00" + struct.pack("!HH", 6, 1)

    def test_ok(self):
        q = h.build_dns_query(7, "example.org", "A")
        ok, reason = h.parse_dns_reply(dns_reply(q, answers=2), 7, "example.org", "A")
        assert ok, reason
        assert "2 answer" in reason

    def test_name_compare_is_case_insensitive(self):
        q = h.build_dns_query(7, "EXAMPLE.org", "A")
        assert h.parse_dns_reply(dns_reply(q), 7, "example.ORG", "A")[0]

    @pytest.mark.parametrize("kwargs, fragment", [
        (dict(rid=8), "does not match query ID"),
        (dict(qr=False), "QR bit"),
        (dict(rcode=3), "NXDOMAIN"),
        (dict(answers=0), "no answer"),
        (dict(answers=0, tc=True), "truncated (TC)"),
    ])
    def test_failures(self, kwargs, fragment):
        q = h.build_dns_query(7, "example.org", "A")
        ok, reason = h.parse_dns_reply(dns_reply(q, **kwargs), 7, "example.org", "A")
        assert not ok
        assert fragment in reason

    def test_expected_nxdomain_without_answer(self):
        q = h.build_dns_query(9, "nope.example.org", "A")
        ok, reason = h.parse_dns_reply(dns_reply(q, rcode=3, answers=0), 9, "nope.example.org", "A",
                                       expect_rcode="NXDOMAIN", expect_answer=False)
        assert ok, reason

    def test_other_question(self):
        q = h.build_dns_query(7, "example.com", "A")
        ok, reason = h.parse_dns_reply(dns_reply(q), 7, "example.org", "A")
        assert not ok and "another question" in reason

    def test_truncated_header_and_answer(self):
        q = h.build_dns_query(7, "example.org", "A")
        r = dns_reply(q)
        assert "truncated DNS reply" in h.parse_dns_reply(r[:11], 7, "example.org")[1]
        assert not h.parse_dns_reply(r[:-2], 7, "example.org")[0]
        assert not h.parse_dns_reply(r[:len(q) + 5], 7, "example.org")[0]

    def test_compression_loop_does_not_hang(self):
        # the answer's owner points at itself
        q = h.build_dns_query(7, "example.org", "A")
        r = dns_reply(q, answers=0)
        loop_at = len(r)
        r = r[:6] + b"\x00\x01" + r[8:] + struct.pack("!H", 0xC000 | loop_at) + b"\x00" * 10
        ok, reason = h.parse_dns_reply(r, 7, "example.org")
        assert not ok and "loop" in reason

    @pytest.mark.parametrize("bad", ["NOPE", "0", "70000"])
    def test_bad_type(self, bad):
        with pytest.raises(ValueError):
            h.dns_type_code(bad)

    def test_bad_name(self):
        with pytest.raises(ValueError):
            h.encode_dns_name("a" * 64 + ".org")
        with pytest.raises(ValueError):
            h.encode_dns_name("a..b")

    @settings(max_examples=400, deadline=None, database=None)
    @given(ANY_BYTES, st.integers(min_value=0, max_value=0xFFFF))
    def test_arbitrary_bytes_never_raise(self, data, qid):
        assert _is_verdict(h.parse_dns_reply(data, qid, "example.org", "A"))

    @settings(max_examples=400, deadline=None, database=None)
    @given(ANY_BYTES)
    def test_arbitrary_bytes_after_valid_header(self, tail):
        # get past the ID/QR checks so the name and record walkers see garbage
        data = struct.pack("!HHHHHH", 7, 0x8180, 1, 3, 0, 0) + tail
        assert _is_verdict(h.parse_dns_reply(data, 7, "example.org", "A"))

    @settings(max_examples=400, deadline=None, database=None)
    @given(_mutations())
    def test_mutated_replies_never_raise(self, mutation):
        q = h.build_dns_query(7, "example.org", "A")
        assert _is_verdict(h.parse_dns_reply(_mutate(dns_reply(q, answers=3), mutation), 7, "example.org"))


# --------------------------------------------------------------------------- RADIUS

def radius_reply(request, secret=SECRET, code=2, ident=None, with_ma=True, bad_ma=False, pad=b""):
    rid = request[1] if ident is None else ident
    req_auth = request[4:20]
    attrs = b""
    ma_at = None
    if with_ma:
        ma_at = 20 + len(attrs)
        attrs += b"\x50\x12" + b"\x00" * 16
    attrs += b"\x12\x07" + b"alive"  # Reply-Message
    length = 20 + len(attrs)
    pkt = bytearray(struct.pack("!BBH", code, rid, length) + req_auth + attrs)
    if with_ma:
        mac = hmac.new(secret, bytes(pkt), hashlib.md5).digest()
        if bad_ma:
            mac = bytes(16)
        pkt[ma_at + 2:ma_at + 18] = mac
    pkt[4:20] = hashlib.md5(bytes(pkt[:4]) + req_auth + bytes(pkt[20:]) + secret).digest()
    return bytes(pkt) + pad


class TestRadius:
    def _request(self):
        return h.build_radius_status_server(0x42, b"A" * 16, SECRET, "nas1")

    def test_request_layout_and_message_authenticator(self):
        req = self._request()
        code, ident, length = struct.unpack("!BBH", req[:4])
        assert (code, ident, length) == (12, 0x42, len(req))
        assert req[4:20] == b"A" * 16
        i = req.index(b"\x50\x12")
        zeroed = req[:i + 2] + b"\x00" * 16 + req[i + 18:]
        assert hmac.new(SECRET, zeroed, hashlib.md5).digest() == req[i + 2:i + 18]
        assert b"\x20\x06nas1" in req

    def test_accept(self):
        req = self._request()
        ok, reason = h.parse_radius_reply(radius_reply(req), 0x42, b"A" * 16, SECRET)
        assert ok and "Access-Accept" in reason

    def test_accounting_response_and_padding(self):
        req = self._request()
        assert h.parse_radius_reply(radius_reply(req, code=5, pad=b"\x00\x00"), 0x42, b"A" * 16, SECRET)[0]

    def test_secret_as_text(self):
        req = self._request()
        assert h.parse_radius_reply(radius_reply(req), 0x42, b"A" * 16, "testing123")[0]

    @pytest.mark.parametrize("kwargs, fragment", [
        (dict(secret=b"wrong"), "Response Authenticator mismatch"),
        (dict(code=3), "Access-Reject"),
        (dict(code=11), "unexpected RADIUS code 11"),
        (dict(ident=0x43), "identifier"),
        (dict(bad_ma=True), "Message-Authenticator mismatch"),
    ])
    def test_failures(self, kwargs, fragment):
        req = self._request()
        ok, reason = h.parse_radius_reply(radius_reply(req, **kwargs), 0x42, b"A" * 16, SECRET)
        assert not ok
        assert fragment in reason

    def test_length_field_larger_than_datagram(self):
        r = bytearray(radius_reply(self._request()))
        r[2:4] = struct.pack("!H", len(r) + 1)
        assert "length field" in h.parse_radius_reply(bytes(r), 0x42, b"A" * 16, SECRET)[1]

    def test_truncated(self):
        assert not h.parse_radius_reply(b"\x02\x42\x00", 0x42, b"A" * 16, SECRET)[0]

    @settings(max_examples=400, deadline=None, database=None)
    @given(ANY_BYTES)
    def test_arbitrary_bytes_never_raise(self, data):
        assert _is_verdict(h.parse_radius_reply(data, 0x42, b"A" * 16, SECRET))

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.binary(max_size=100))
    def test_authentic_garbage_attributes_never_raise(self, attrs):
        # a correct Response Authenticator over garbage attributes reaches the attribute walker
        req_auth = b"A" * 16
        head = struct.pack("!BBH", 2, 0x42, 20 + len(attrs))
        auth = hashlib.md5(head + req_auth + attrs + SECRET).digest()
        assert _is_verdict(h.parse_radius_reply(head + auth + attrs, 0x42, req_auth, SECRET))

    @settings(max_examples=300, deadline=None, database=None)
    @given(_mutations())
    def test_mutated_replies_never_raise(self, mutation):
        data = _mutate(radius_reply(self._request()), mutation)
        assert _is_verdict(h.parse_radius_reply(data, 0x42, b"A" * 16, SECRET))


# --------------------------------------------------------------------------- NTP

XMT = b"\x01\x02\x03\x04\x05\x06\x07\x08"


def ntp_reply(xmt=XMT, mode=4, version=4, stratum=2, leap=0, refid=b"GPS\x00"):
    return (struct.pack("!BBbb", (leap << 6) | (version << 3) | mode, stratum, 6, -20)
            + b"\x00" * 8 + refid + b"\x00" * 8 + xmt + b"\x11" * 16)


class TestNtp:
    def test_request(self):
        req = h.build_ntp_request(XMT)
        assert len(req) == 48 and req[0] == 0x23 and req[40:48] == XMT

    def test_ok(self):
        ok, reason = h.parse_ntp_reply(ntp_reply(), XMT)
        assert ok and "stratum 2" in reason

    @pytest.mark.parametrize("kwargs, fragment", [
        (dict(mode=3), "mode 3"),
        (dict(mode=5), "mode 5"),
        (dict(version=0), "version 0"),
        (dict(stratum=0, refid=b"RATE"), "kiss-o'-death 'RATE'"),
        (dict(stratum=16), "stratum 16"),
        (dict(leap=3), "leap indicator 3"),
        (dict(xmt=b"\x00" * 8), "origin timestamp"),
    ])
    def test_failures(self, kwargs, fragment):
        ok, reason = h.parse_ntp_reply(ntp_reply(**kwargs), XMT)
        assert not ok
        assert fragment in reason

    def test_truncated(self):
        assert "truncated" in h.parse_ntp_reply(ntp_reply()[:47], XMT)[1]

    @settings(max_examples=400, deadline=None, database=None)
    @given(ANY_BYTES)
    def test_arbitrary_bytes_never_raise(self, data):
        assert _is_verdict(h.parse_ntp_reply(data, XMT))

    @settings(max_examples=300, deadline=None, database=None)
    @given(_mutations())
    def test_mutated_replies_never_raise(self, mutation):
        assert _is_verdict(h.parse_ntp_reply(_mutate(ntp_reply(), mutation), XMT))


# --------------------------------------------------------------------------- SIP

def sip_reply(call_id, status=200, cseq="1 OPTIONS"):
    return ("SIP/2.0 %d Whatever\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKx\r\n"
            "From: <sip:health@198.51.100.1>;tag=a\r\nTo: <sip:198.51.100.10>;tag=b\r\n"
            "Call-ID: %s\r\nCSeq: %s\r\nContent-Length: 0\r\n\r\n" % (status, call_id, cseq)).encode()


class TestSip:
    def test_request(self):
        req = h.build_sip_options(("198.51.100.1", 40000), ("198.51.100.10", 5060), "abc@x", "br", "tg")
        text = req.decode()
        assert text.startswith("OPTIONS sip:198.51.100.10:5060 SIP/2.0\r\n")
        assert "Via: SIP/2.0/UDP 198.51.100.1:40000;branch=z9hG4bKbr;rport\r\n" in text
        assert "Call-ID: abc@x\r\n" in text and "CSeq: 1 OPTIONS\r\n" in text
        assert text.endswith("Content-Length: 0\r\n\r\n")

    def test_request_ipv6(self):
        req = h.build_sip_options(("2001:db8::1", 5), ("2001:db8::2", 5060), "c", "b", "t")
        assert req.startswith(b"OPTIONS sip:[2001:db8::2]:5060 SIP/2.0")

    @pytest.mark.parametrize("status", [200, 404, 405, 486, 503, 603])
    def test_any_final_response_is_ok(self, status):
        ok, reason = h.parse_sip_reply(sip_reply("c1", status), "c1")
        assert ok and str(status) in reason

    def test_provisional_keeps_waiting(self):
        assert h.parse_sip_reply(sip_reply("c1", 100), "c1") is None

    def test_compact_call_id(self):
        r = sip_reply("c1").replace(b"Call-ID:", b"i:")
        assert h.parse_sip_reply(r, "c1")[0]

    @pytest.mark.parametrize("data, fragment", [
        (sip_reply("other"), "Call-ID"),
        (sip_reply("c1", cseq="1 INVITE"), "CSeq"),
        (b"OPTIONS sip:x SIP/2.0\r\n\r\n", "not a SIP response"),
        (b"SIP/2.0 2", "not a SIP response"),
        (b"", "not a SIP response"),
    ])
    def test_failures(self, data, fragment):
        ok, reason = h.parse_sip_reply(data, "c1")
        assert not ok and fragment in reason

    @settings(max_examples=400, deadline=None, database=None)
    @given(ANY_BYTES)
    def test_arbitrary_bytes_never_raise(self, data):
        assert _is_verdict(h.parse_sip_reply(data, "c1"), allow_none=True)

    @settings(max_examples=300, deadline=None, database=None)
    @given(_mutations())
    def test_mutated_replies_never_raise(self, mutation):
        assert _is_verdict(h.parse_sip_reply(_mutate(sip_reply("c1"), mutation), "c1"), allow_none=True)


# --------------------------------------------------------------------------- HTTP, generic UDP

class TestHttpStatus:
    def test_incomplete_then_complete(self):
        assert h.parse_http_status(b"HTTP/1.0 20") is None
        assert h.parse_http_status(b"HTTP/1.0 200 OK\r\n") == (True, "HTTP 200 OK")

    def test_status_sets(self):
        assert not h.parse_http_status(b"HTTP/1.1 500 Oops\r\n")[0]
        assert h.parse_http_status(b"HTTP/1.1 301 Moved\r\n")[0]
        assert h.parse_http_status(b"HTTP/1.1 503 x\r\n", [503])[0]
        assert not h.parse_http_status(b"HTTP/1.1 200 x\r\n", [204])[0]

    def test_garbage(self):
        assert not h.parse_http_status(b"SSH-2.0-OpenSSH\r\n")[0]
        assert not h.parse_http_status(b"x" * 9000)[0]

    @settings(max_examples=300, deadline=None, database=None)
    @given(ANY_BYTES)
    def test_arbitrary_bytes_never_raise(self, data):
        assert _is_verdict(h.parse_http_status(data), allow_none=True)


class TestUdpReply:
    def test_any_reply(self):
        assert h.check_udp_reply(b"")[0]
        assert h.check_udp_reply(b"x")[0]

    def test_checks(self):
        import re
        assert h.check_udp_reply(b"PONG 1", expect=re.compile(b"^PONG"))[0]
        assert not h.check_udp_reply(b"PING", expect=re.compile(b"^PONG"))[0]
        assert h.check_udp_reply(b"\xde\xad\xbe\xef!", expect_hex=b"\xde\xad")[0]
        assert "does not start" in h.check_udp_reply(b"\x00", expect_hex=b"\xde")[1]
        assert "too short" in h.check_udp_reply(b"ab", min_length=3)[1]
        assert "too long" in h.check_udp_reply(b"abcd", max_length=3)[1]

    @settings(max_examples=300, deadline=None, database=None)
    @given(ANY_BYTES, st.one_of(st.none(), st.integers(0, 100)), st.one_of(st.none(), st.integers(0, 100)))
    def test_arbitrary_bytes_never_raise(self, data, lo, hi):
        import re
        assert _is_verdict(h.check_udp_reply(data, re.compile(b"a+b"), b"\x01", lo, hi))


# --------------------------------------------------------------------------- probe configuration

class TestProbeConfig:
    def test_defaults(self):
        p = h.Probe({"type": "dns", "host": "198.51.100.10"})
        assert (p.port, p.timeout, p.label) == (53, 1.0, "dns 198.51.100.10:53")
        query, _qid = p.build_request(("198.51.100.1", 1))
        assert query[12:] == b"\x00" + struct.pack("!HH", 6, 1)   # SOA of the root, as keepalived's DNS_CHECK

    def test_ipv6_label(self):
        assert h.Probe({"type": "ntp", "host": "2001:db8::10"}).label == "ntp [2001:db8::10]:123"

    def test_hex_payload(self):
        p = h.Probe({"host": "198.51.100.10", "port": 7, "payload_hex": "de:ad be ef", "expect_hex": "DEAD"})
        assert p.payload == b"\xde\xad\xbe\xef" and p.expect_hex == b"\xde\xad"
        assert p.build_request(("198.51.100.1", 1)) == (b"\xde\xad\xbe\xef", None)

    @pytest.mark.parametrize("spec", [
        {"host": "198.51.100.10"},                                   # udp needs a port
        {"type": "tcp", "host": "198.51.100.10"},
        {"type": "radius", "host": "198.51.100.10"},                 # no secret
        {"type": "bogus", "host": "198.51.100.10", "port": 1},
        {"host": "198.51.100.10", "port": 1, "payload": "a", "payload_hex": "61"},
        {"host": "198.51.100.10", "port": 1, "payload_hex": "zz"},
        {"host": "198.51.100.10", "port": 1, "colour": "red"},
        {"type": "dns", "host": "198.51.100.10", "query_type": "BOGUS"},
        {"host": "198.51.100.10", "port": 70000},
        {"host": "198.51.100.10", "port": 1, "timeout": 0},
        {"port": 1},
    ])
    def test_invalid(self, spec):
        with pytest.raises(ValueError):
            h.Probe(spec)

    def test_probe_once_reports_bad_config(self):
        res = h.probe_once({"type": "radius", "host": "198.51.100.10"})
        assert not res.ok and "secret" in res.reason

    def test_requests_carry_fresh_nonces(self):
        p = h.Probe({"type": "ntp", "host": "198.51.100.10"})
        (r1, x1), (r2, x2) = p.build_request(("198.51.100.1", 1)), p.build_request(("198.51.100.1", 1))
        assert x1 != x2 and r1[40:] == x1 and r2[40:] == x2


# --------------------------------------------------------------------------- state machine

class TestServerState:
    def test_starts_down_with_zero_weight(self):
        s = h.ServerState("rs1", weight=5)
        assert not s.up and s.effective_weight == 0

    def test_rise(self):
        s = h.ServerState("rs1", weight=5, rise=3, fall=2)
        assert s.record(True, "ok") is None
        assert s.record(True, "ok") is None
        t = s.record(True, "ok", 0.001)
        assert t == h.Transition("rs1", True, 5, False, False, 0, "ok", 0.001)

    def test_rise_counter_resets_on_failure(self):
        s = h.ServerState("rs1", rise=2, fall=2)
        for ok in (True, False, True, False, True):
            assert s.record(ok) is None
        assert not s.up
        assert s.record(True) is not None and s.up

    def test_fall_with_hysteresis(self):
        s = h.ServerState("rs1", rise=1, fall=3)
        assert s.record(True).up
        # alternating failures never reach three in a row
        for ok in (False, False, True, False, False, True):
            assert s.record(ok) is None
            assert s.up
        assert s.record(False) is None
        assert s.record(False) is None
        t = s.record(False, "timeout")
        assert t.up is False and t.weight == 0 and t.previous_up is True and t.reason == "timeout"

    def test_drain_keeps_server_but_zero_weight(self):
        s = h.ServerState("rs1", weight=3, rise=1)
        s.record(True)
        t = s.set_drain(True)
        assert t.up is True and t.weight == 0 and t.drain is True and t.previous_weight == 3
        assert s.set_drain(True) is None                 # no change, no event
        assert s.record(True) is None                    # checks go on while drained
        t = s.set_drain(False)
        assert t.weight == 3 and not t.drain

    def test_drain_while_down_is_silent(self):
        s = h.ServerState("rs1", rise=1)
        assert s.set_drain(True) is None
        t = s.record(True)
        assert t.up and t.weight == 0                    # up, but drained

    def test_weight_change(self):
        s = h.ServerState("rs1", weight=1, rise=1)
        assert s.set_weight(4) is None                   # down: effective weight stays 0
        t = s.record(True)
        assert t.weight == 4
        assert s.set_weight(2).weight == 2
        with pytest.raises(ValueError):
            s.set_weight(-1)

    @pytest.mark.parametrize("kwargs", [dict(rise=0), dict(fall=0), dict(weight=-1)])
    def test_invalid(self, kwargs):
        with pytest.raises(ValueError):
            h.ServerState("x", **kwargs)

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.integers(1, 5), st.integers(1, 5), st.lists(st.booleans(), max_size=60))
    def test_matches_reference_model(self, rise, fall, results):
        s = h.ServerState("rs", weight=2, rise=rise, fall=fall)
        up = False
        for i, ok in enumerate(results):
            t = s.record(ok)
            # reference: the last `rise` results all ok brings it up, last `fall` all failed takes it down
            window = results[:i + 1]
            before = up
            if not up and len(window) >= rise and all(window[-rise:]):
                up = True
            elif up and len(window) >= fall and not any(window[-fall:]):
                up = False
            assert s.up == up
            assert (t is not None) == (before != up)
            assert s.effective_weight == (2 if up else 0)


# --------------------------------------------------------------------------- portability

def test_stdlib_only_and_python39_syntax():
    """The director daemon imports this file with Debian's python3 and nothing else."""
    import ast
    import sys

    with open(h.__file__) as f:
        tree = ast.parse(f.read(), feature_version=(3, 9))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    assert names <= set(sys.stdlib_module_names), names - set(sys.stdlib_module_names)
