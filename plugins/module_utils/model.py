# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The director data model: validation and the derived plan.

One source of truth for what an inventory means. The ``director_plan`` action
plugin calls :func:`build_plan` on the controller before any host is touched;
the unit tests call it directly; every template renders only the plan.

Only the standard library and the health engine (``health.py``, for the DNS
probe options) are used: the health role installs this file flat on each
director next to ``health.py``, where Ansible is not installed.
"""

from __future__ import annotations

import ipaddress
import re
from functools import reduce
from math import gcd

try:
    from ansible_collections.datagram.director.plugins.module_utils.health import (
        dns_rcode_code, dns_type_code, encode_dns_name)
except ImportError:  # installed flat on a director
    from health import dns_rcode_code, dns_type_code, encode_dns_name  # pylint: disable=import-error

DATA_PLANES = ("auto", "ipvs", "nftables")
SCHEDULERS = ("rr", "wrr")
REPLY_REWRITES = ("stateless", "conntrack_zones")
# Flow export protocols whose template sets a service copies to every real
# server (the data sets are decodable only with them); "none" is the default.
FLOW_TEMPLATES = ("none", "netflow_v9", "ipfix")
# nftables match of a packet whose FIRST set is a template or options template
# (@th: from the UDP header, 8 bytes). The version field comes first in both;
# NetFlow v9 (RFC 3954): 20-byte header, flowset 0 or 1; IPFIX (RFC 7011):
# 16-byte header, set 2 or 3. The data plane template and the health program
# both render it from the plan.
TEMPLATE_MATCH = {
    "netflow_v9": "@th,64,16 9 @th,224,16 { 0, 1 }",
    "ipfix": "@th,64,16 10 @th,192,16 { 2, 3 }",
}
HEALTH_CHECK_TYPES = ("none", "udp", "dns", "radius", "ntp", "sip", "tcp", "http", "misc")
# Probe parameters per health check type (run by the health role's program with
# plugins/module_utils/health.py); "port" defaults to the real server's port.
HEALTH_CHECK_OPTIONS = {
    "udp": ("payload", "payload_hex", "expect", "expect_hex", "min_length", "max_length"),
    "dns": ("query_name", "query_type", "expect_rcode", "expect_answer"),
    "radius": ("secret", "nas_identifier"),
    "ntp": (),
    "sip": ("sip_uri",),
    "tcp": (),
    "http": ("http_path", "http_host", "expect_status"),
    "misc": ("script",),
    "none": (),
}
HEALTH_CHECK_COMMON = ("type", "interval", "timeout", "fall", "rise", "port")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,23}$")
IFACE_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
# A per-packet round robin with weights is a sequence of this many slots at most
# (one nftables map element per slot); weights are reduced by their gcd first.
MAX_SEQUENCE = 1024
# Ansible's boolean words (ansible.module_utils.parsing.convert_bool), copied
# because this file also runs where Ansible is not installed; a unit test keeps
# them equal. bool("false") would be True.
BOOLEANS_TRUE = frozenset(("y", "yes", "on", "1", "true", "t", 1, 1.0, True))
BOOLEANS_FALSE = frozenset(("n", "no", "off", "0", "false", "f", 0, 0.0, False))
# Probe options sent as text (str() of a mapping would be sent as it is); the
# LINE_OPTIONS end up in a request line or header: no spaces or line breaks.
TEXT_OPTIONS = ("payload", "query_name", "nas_identifier", "sip_uri", "http_path", "http_host")
LINE_OPTIONS = ("query_name", "sip_uri", "http_path", "http_host")


def _opt(kind="str", **spec):
    """One input in Ansible's argument-spec form (type, choices, default, required, ...)."""
    spec["type"] = kind
    return spec


# The inputs, in Ansible's argument-spec form. The validator below takes its
# defaults, choices and known keys from here; roles/preflight/meta/
# argument_specs.yml declares the same for Ansible and ansible-doc (a unit
# test holds them equal). Ranges and relations between keys are checked by
# the validator only (an argument spec cannot say them).
HEALTH_CHECK_SPEC = {
    "type": _opt(choices=list(HEALTH_CHECK_TYPES), default="udp"),
    "interval": _opt("int", default=1),
    "timeout": _opt("int", default=1),
    "fall": _opt("int", default=2),
    "rise": _opt("int", default=1),
    "port": _opt("int"),  # default: the real server's port
    "payload": _opt(), "payload_hex": _opt(), "expect": _opt(), "expect_hex": _opt(),
    "min_length": _opt("int"), "max_length": _opt("int"),
    "query_name": _opt(), "query_type": _opt("raw"), "expect_rcode": _opt("raw"), "expect_answer": _opt("bool"),
    "secret": _opt(no_log=True), "nas_identifier": _opt(),
    "sip_uri": _opt(),
    "http_path": _opt(), "http_host": _opt(), "expect_status": _opt("list", elements="int"),
    "script": _opt(),
}
REAL_SERVER_SPEC = {
    "address": _opt(required=True),
    "port": _opt("int"),  # default: the service port
    "weight": _opt("int", default=1),
}
MIRROR_SPEC = {
    "address": _opt(required=True),
    "port": _opt("int"),  # default: the service port
}
# Keys without a default here take the director_* variable of the same name
# (reply_rewrite, health_check, panic_threshold).
SERVICE_SPEC = {
    "name": _opt(required=True),
    "vip": _opt(required=True),
    "port": _opt("int", required=True),
    "protocol": _opt(choices=["udp"], default="udp"),
    "scheduler": _opt(choices=list(SCHEDULERS), default="rr"),
    "ops": _opt("bool", default=True),  # must stay true
    "persistence_timeout": _opt("int"),  # refused unless 0
    "reply_rewrite": _opt(choices=list(REPLY_REWRITES)),
    "health_check": _opt("dict", options=HEALTH_CHECK_SPEC),
    "panic_threshold": _opt("int"),
    "quorum": _opt("int", default=1),
    "alpha": _opt("bool", default=True),
    "inhibit_on_failure": _opt("bool", default=True),
    "flow_templates": _opt(choices=list(FLOW_TEMPLATES), default="none"),
    "mirrors": _opt("list", elements="dict", default=[], options=MIRROR_SPEC),
    "real_servers": _opt("list", elements="dict", required=True, options=REAL_SERVER_SPEC),
}
VRRP_NOTIFY_SPEC = dict((event, _opt()) for event in ("master", "backup", "fault", "stop"))
# Host variables of each director.
HOST_SPEC = {
    "director_vrrp_priority": _opt("int", required=True),
    "director_frontend_address": _opt(required=True),
    "director_backend_address": _opt(required=True),
}
# Group variables of the pair.
GROUP_SPEC = {
    "director_data_plane": _opt(choices=list(DATA_PLANES), default="auto"),
    "director_vrrp_version": _opt("int", choices=[2, 3], default=3),
    "director_vrrp_advert_int": _opt("float", default=1),
    "director_vrrp_preempt": _opt("bool", default=True),
    "director_vrrp_preempt_delay": _opt("int", default=0),
    "director_vrrp_sync_group": _opt(default="datagram_director"),
    "director_vrrp_notify": _opt("dict", default={}, options=VRRP_NOTIFY_SPEC),
    "director_frontend_interface": _opt(required=True),
    "director_frontend_vrid": _opt("int", required=True),
    "director_frontend_vips": _opt("list", elements="str", required=True),
    "director_frontend_gateways": _opt("list", elements="str", default=[]),
    "director_backend_interface": _opt(required=True),
    "director_backend_vrid": _opt("int", required=True),
    "director_backend_gateway_vips": _opt("list", elements="str", required=True),
    "director_services": _opt("list", elements="dict", required=True, options=SERVICE_SPEC),
    "director_reply_rewrite": _opt(choices=list(REPLY_REWRITES), default="stateless"),
    "director_reply_zone_base": _opt("int", default=1000),
    "director_health_check": _opt("dict", default={"type": "none"}, options=HEALTH_CHECK_SPEC),
    # Healthy panic threshold (percent of a service's weight): below it the
    # service spreads over every configured real server instead of dropping.
    # 1: only when (practically) none passes; 0: never (drop).
    "director_panic_threshold": _opt("int", default=1),
}
# What the preflight role takes (its argument_specs.yml).
INPUTS = dict(GROUP_SPEC, **HOST_SPEC)
# The group variables' defaults, without the director_ prefix (build_plan's model keys).
DEFAULTS = dict((name[len("director_"):], spec["default"]) for name, spec in GROUP_SPEC.items() if "default" in spec)


def _default(spec, key):
    """A copy of the default of ``key`` in ``spec`` (a list or mapping is never shared)."""
    value = spec[key].get("default")
    return type(value)(value) if isinstance(value, (list, dict)) else value


class ModelError(ValueError):
    """Raised with every problem found, one per line."""

    def __init__(self, errors):
        self.errors = list(errors)
        super(ModelError, self).__init__("\n".join(self.errors))


class _Checker(object):
    def __init__(self):
        self.errors = []

    def fail(self, path, value, expected):
        self.errors.append("%s: got %r, expected %s" % (path, value, expected))

    def address(self, path, value, family=None):
        try:
            addr = ipaddress.ip_address(str(value).strip())
        except ValueError:
            self.fail(path, value, "an IPv4 or IPv6 address")
            return None
        if family and addr.version != family:
            self.fail(path, value, "an IPv%d address (same family as %s)" % (family, "the VIP"))
            return None
        return addr

    def interface(self, path, value):
        try:
            addr = ipaddress.ip_interface(str(value).strip())
        except ValueError:
            self.fail(path, value, "an address with prefix length, like 198.51.100.10/24")
            return None
        if "/" not in str(value):
            self.fail(path, value, "an address with prefix length, like 198.51.100.10/24")
            return None
        return addr

    def integer(self, path, value, low, high, why=""):
        expected = "an integer from %d to %d%s" % (low, high, why)
        if isinstance(value, bool) or not isinstance(value, int):
            try:
                if isinstance(value, bool) or str(int(str(value))) != str(value).strip():
                    raise ValueError
                value = int(str(value))
            except ValueError:
                self.fail(path, value, expected)
                return None
        if not low <= value <= high:
            self.fail(path, value, expected)
            return None
        return value

    def number(self, path, value, low, high, expected):
        """A float from low to high; float() alone would take true as 1.0."""
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not low <= number <= high:  # also refuses nan
                raise ValueError
        except (TypeError, ValueError):
            self.fail(path, value, expected)
            return None
        return number

    def boolean(self, path, value):
        """Ansible's rules: "false", "no", "off", "0" are false, unknown words an error."""
        if isinstance(value, bool):
            return value
        key = value.strip().lower() if isinstance(value, str) else value
        try:
            if key in BOOLEANS_TRUE:
                return True
            if key in BOOLEANS_FALSE:
                return False
        except TypeError:  # unhashable: a list or a mapping
            pass
        self.fail(path, value, "a boolean: true/false, yes/no, on/off or 1/0")
        return None

    def choice(self, path, value, choices):
        if value not in choices:
            self.fail(path, value, "one of %s" % ", ".join(choices))
            return None
        return value

    def name(self, path, value):
        if not isinstance(value, str) or not NAME_RE.match(value):
            self.fail(path, value, "a name of lower-case letters, digits and _ (at most 24, starting with a letter)")
            return None
        return value


def smooth_wrr(weights):
    """Return the order of slots for a per-packet weighted round robin.

    nginx's smooth weighted round robin: weights 2:1:1 give A B A C, not A A B C,
    so the heavy server's datagrams are interleaved. Weights are reduced by their
    gcd; zero weights get no slot.
    """
    live = [(i, w) for i, w in enumerate(weights) if w > 0]
    if not live:
        return []
    div = reduce(gcd, [w for _i, w in live])
    live = [(i, w // div) for i, w in live]
    total = sum(w for _i, w in live)
    current = dict((i, 0) for i, _w in live)
    order = []
    for _step in range(total):
        for i, w in live:
            current[i] += w
        best = max(live, key=lambda item: (current[item[0]], -item[0]))[0]
        current[best] -= total
        order.append(best)
    return order


def _health_check(c, path, hc):
    """The normalised health check of a service: type, timings and probe options."""
    if not isinstance(hc, dict):
        c.fail(path, hc, "a mapping with a type")
        hc = {"type": "none"}
    hc = dict(hc)
    hc["type"] = c.choice(path + ".type", hc.get("type", _default(HEALTH_CHECK_SPEC, "type")), HEALTH_CHECK_TYPES)
    for key, low, high in (("interval", 1, 3600), ("timeout", 1, 60), ("fall", 1, 100), ("rise", 1, 100)):
        hc[key] = c.integer("%s.%s" % (path, key), hc.get(key, _default(HEALTH_CHECK_SPEC, key)), low, high)
    if hc["type"] == "misc" and not str(hc.get("script", "")).startswith("/"):
        c.fail(path + ".script", hc.get("script"), "an absolute path for a misc health check")
    _health_check_options(c, path, hc)
    return hc


def _health_check_options(c, path, hc):
    """Probe parameters: known for the type, and the checks the engine would fail on at run time."""
    allowed = HEALTH_CHECK_OPTIONS.get(hc["type"])
    if allowed is None:
        return
    for key in sorted(hc):
        if key not in HEALTH_CHECK_COMMON and key not in allowed:
            c.fail("%s.%s" % (path, key), "(hidden)" if key == "secret" else hc[key], "no such option for a %s health check (options: %s)"
                   % (hc["type"], ", ".join(sorted(HEALTH_CHECK_COMMON + allowed))))
    if hc.get("port") is not None:
        hc["port"] = c.integer(path + ".port", hc["port"], 1, 65535)
    if None not in (hc["interval"], hc["timeout"]) and hc["timeout"] > hc["interval"]:
        c.fail(path + ".timeout", hc["timeout"], "at most health_check.interval (%s)" % hc["interval"])
    if hc["type"] == "radius" and not hc.get("secret"):
        c.fail(path + ".secret", "(not set)", "the RADIUS shared secret (from a vaulted variable) for a radius health check")
    _text_options(c, path, hc)
    _udp_options(c, path, hc)
    if hc["type"] == "dns":
        _dns_options(c, path, hc)
    if hc["type"] == "http" and hc.get("expect_status") is not None:
        codes = _listify(hc["expect_status"])
        if not all(str(code).isdigit() and 100 <= int(str(code)) <= 599 for code in codes):
            c.fail(path + ".expect_status", hc["expect_status"], "HTTP status codes from 100 to 599")


def _text_options(c, path, hc):
    """Text the probes put on the wire."""
    for key in TEXT_OPTIONS:
        value = hc.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            c.fail("%s.%s" % (path, key), value, "a string")
        elif key in LINE_OPTIONS and re.search(r"[\s\x00-\x1f\x7f]", value):
            c.fail("%s.%s" % (path, key), value, "text without spaces or control characters")
    if isinstance(hc.get("http_path"), str) and not hc["http_path"].startswith("/"):
        c.fail(path + ".http_path", hc["http_path"], "a path starting with /")
    if isinstance(hc.get("sip_uri"), str) and not re.match(r"^sips?:", hc["sip_uri"]):
        c.fail(path + ".sip_uri", hc["sip_uri"], "a SIP URI (sip:host or sips:host)")
    if isinstance(hc.get("nas_identifier"), str) and len(hc["nas_identifier"].encode("utf-8")) > 253:
        c.fail(path + ".nas_identifier", hc["nas_identifier"], "at most 253 bytes (a RADIUS attribute)")


def _udp_options(c, path, hc):
    if hc["type"] == "udp" and hc.get("payload") is not None and hc.get("payload_hex") is not None:
        c.fail(path + ".payload_hex", hc["payload_hex"], "either payload or payload_hex, not both")
    for key in ("payload_hex", "expect_hex"):
        if hc.get(key) is not None:
            try:
                bytes.fromhex(re.sub(r"[\s:]", "", str(hc[key])))
            except ValueError:
                c.fail("%s.%s" % (path, key), hc[key], "hexadecimal bytes, like 0a1b2c")
    if hc.get("expect") is not None:
        try:
            re.compile(str(hc["expect"]))
        except re.error as exc:
            c.fail(path + ".expect", hc["expect"], "a regular expression (%s)" % exc)
    for key in ("min_length", "max_length"):
        if hc.get(key) is not None:
            hc[key] = c.integer("%s.%s" % (path, key), hc[key], 0, 65535)
    if None not in (hc.get("min_length"), hc.get("max_length")) and hc["min_length"] > hc["max_length"]:
        c.fail(path + ".max_length", hc["max_length"], "at least min_length (%s)" % hc["min_length"])


def _dns_options(c, path, hc):
    """The engine's own parsers judge the DNS options (it would fail on them at start)."""
    checks = [("query_type", dns_type_code, "a DNS type like A, AAAA, SOA or a number from 1 to 65535"),
              ("expect_rcode", dns_rcode_code, "a DNS rcode like NOERROR, NXDOMAIN or a number from 0 to 15")]
    if isinstance(hc.get("query_name"), str):  # not a string: _text_options said so
        checks.append(("query_name", encode_dns_name, "a DNS name, like example.org"))
    for key, parse, expected in checks:
        if hc.get(key) is None:
            continue
        try:
            if isinstance(hc[key], bool):
                raise ValueError
            parse(hc[key])
        except ValueError:  # UnicodeError (idna) is one
            c.fail("%s.%s" % (path, key), hc[key], expected)
    if hc.get("expect_answer") is not None:
        hc["expect_answer"] = c.boolean(path + ".expect_answer", hc["expect_answer"])


def _option(mapping, key, default):
    """A service option; null means the default, as for the director_* variables."""
    value = mapping.get(key)
    return default if value is None else value


def _keepalived_options(c, path, svc, real_servers):
    """quorum, alpha and inhibit_on_failure of the keepalived virtual server (ipvs data plane).

    ``real_servers`` is None when some of them were invalid (their total weight is unknown).
    """
    opts = dict((key, c.boolean("%s.%s" % (path, key), _option(svc, key, _default(SERVICE_SPEC, key))))
                for key in ("alpha", "inhibit_on_failure"))
    # keepalived compares quorum with the summed configured weight of the real
    # servers it sees alive (and turns 0 into 1 silently). Above the weight of
    # all of them it can never be met: keepalived would report the service
    # "quorum down" with every server healthy. Refused, not clamped: a mistake.
    total = sum(rs["weight"] for rs in real_servers or [])
    quorum = _option(svc, "quorum", _default(SERVICE_SPEC, "quorum"))
    if total:
        opts["quorum"] = c.integer(path + ".quorum", quorum, 1, total,
                                   " (the total weight of its real servers: a higher quorum is never met)")
    else:
        opts["quorum"] = c.integer(path + ".quorum", quorum, 1, 2 ** 31 - 1)
    return opts


def _panic_threshold(c, path, svc, hc, default):
    """The service's healthy panic threshold; ``default`` is None when
    director_panic_threshold itself was invalid (already reported)."""
    if svc.get("panic_threshold") is None:
        if hc.get("type") == "misc":
            return 0  # keepalived runs misc checks and has no panic mode
        return default if default is not None else DEFAULTS["panic_threshold"]
    threshold = c.integer(path + ".panic_threshold", svc["panic_threshold"], 0, 100,
                          " (percent of the service's weight; 0 turns panic off)")
    if threshold and hc.get("type") == "misc":
        c.fail(path + ".panic_threshold", threshold,
               "0 with a misc health check: keepalived runs it and has no panic mode")
    return threshold


def _flow_templates(c, path, svc):
    """The service's flow_templates protocol, or None (off)."""
    value = _option(svc, "flow_templates", "none")
    value = c.choice(path + ".flow_templates", value, FLOW_TEMPLATES)
    return None if value in (None, "none") else value


def _mirrors(c, path, svc, family, port, taken, sides):
    """Receivers that get a copy of every datagram of the service.

    Each one on a frontend or backend network (``sides``: side -> networks),
    where the data plane forwards the copy on link; ``taken`` holds the VIPs
    and the directors' own addresses."""
    raw = _option(svc, "mirrors", [])
    if not isinstance(raw, list):
        c.fail(path + ".mirrors", raw, "a list of receivers (address and port)")
        return []
    mirrors = []
    for j, item in enumerate(raw):
        mp = "%s.mirrors[%d]" % (path, j)
        if not isinstance(item, dict):
            c.fail(mp, item, "a mapping with address and port")
            continue
        addr = c.address(mp + ".address", item.get("address"), family)
        mport = c.integer(mp + ".port", item.get("port", port), 1, 65535)
        if addr is None or mport is None:
            continue
        if addr in taken:
            c.fail(mp + ".address", str(addr), "a receiver address, not a VIP or a director's own address")
            continue
        side = next((s for s, nets in sides if any(addr in n for n in nets)), None)
        if side is None:
            c.fail(mp + ".address", str(addr), "an address on a frontend or backend network (%s): "
                   "the copy is forwarded on link" % ", ".join(str(n) for _s, nets in sides for n in nets))
            continue
        if any(m["address"] == str(addr) and m["port"] == mport for m in mirrors):
            c.fail(mp, "%s:%s" % (addr, mport), "each mirror listed once per service")
            continue
        mirrors.append({"address": str(addr), "port": mport, "side": side})
    return mirrors


def _networks(vips):
    """The on-link networks of VIPs, by family: {"ipv4": ["198.51.100.0/24"]}."""
    nets = {}
    for vip in vips:
        key = "ipv%d" % vip.version
        if str(vip.network) not in nets.setdefault(key, []):
            nets[key].append(str(vip.network))
    return nets


def _unknown_keys(c, path, mapping, spec):
    """Keys the spec does not know (a misspelt key would silently take its default)."""
    for key in sorted(set(mapping) - set(spec), key=str):
        c.fail("%s.%s" % (path, key), "(hidden)" if "secret" in str(key) else mapping[key],
               "no such key (keys: %s)" % ", ".join(sorted(spec)))


def _listify(value):
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def build_plan(model):
    """Validate ``model`` and return the plan for every director.

    ``model`` holds the ``director_*`` variables without their prefix (see
    DEFAULTS), with per-host values under ``directors``:
    ``{"host": {"vrrp_priority": 150, "frontend_address": ..., "backend_address": ...}}``.

    Returns ``{"directors": {host: {...}}, "services": [...], ...}``.
    Raises ModelError listing every problem found.
    """
    c = _Checker()
    m = dict(DEFAULTS)
    m.update(dict((k, v) for k, v in model.items() if v is not None))
    data_plane = c.choice("director_data_plane", m["data_plane"], DATA_PLANES)
    vrrp = _vrrp_settings(c, m)
    pair = _pair(c, m, vrrp["preempt"])
    section = _services(c, m, data_plane, pair)
    _mirrors_not_real_servers(c, section["services"], section["rs_owner"])
    if c.errors:
        raise ModelError(c.errors)
    return _plan(data_plane, vrrp, pair, section)


# --- VRRP ----------------------------------------------------------------------

def _vrrp_settings(c, m):
    """The pair's VRRP settings: the plan's ``vrrp``."""
    versions = GROUP_SPEC["director_vrrp_version"]["choices"]
    version = c.integer("director_vrrp_version", m["vrrp_version"], min(versions), max(versions))
    advert = c.number("director_vrrp_advert_int", m["vrrp_advert_int"], 0.01, 255, "seconds from 0.01 to 255")
    if advert is not None and version == 2 and advert != int(advert):
        c.fail("director_vrrp_advert_int", m["vrrp_advert_int"],
               "whole seconds with director_vrrp_version 2 (VRRPv2 rounds it up); use version 3 for sub-second adverts")
    return {"version": version, "advert_int": advert,
            "preempt": c.boolean("director_vrrp_preempt", m["vrrp_preempt"]),
            "preempt_delay": c.integer("director_vrrp_preempt_delay", m["vrrp_preempt_delay"], 0, 1000),
            "sync_group": c.name("director_vrrp_sync_group", m["vrrp_sync_group"]),
            "notify": _vrrp_notify(c, m["vrrp_notify"] or {})}


def _vrrp_notify(c, notify):
    if not isinstance(notify, dict):
        c.fail("director_vrrp_notify", notify, "a mapping of master/backup/fault/stop to script paths")
        return {}
    for key, script in notify.items():
        if key not in VRRP_NOTIFY_SPEC:
            c.fail("director_vrrp_notify.%s" % key, key, "one of %s" % ", ".join(VRRP_NOTIFY_SPEC))
        elif not isinstance(script, str) or not script.startswith("/"):
            c.fail("director_vrrp_notify.%s" % key, script, "an absolute path to a script")
    return notify


def _vrrp_instances(pair, sync_group):
    """Per director: its peer, priority, own addresses and its two VRRP instances."""
    def split(vips, family):
        return [str(v) for v in vips if v.version == family], [str(v) for v in vips if v.version != family]

    hosts = pair["hosts"]
    plan_hosts = {}
    for host in sorted(hosts):
        peer = [h for h in sorted(hosts) if h != host][0]
        me, other = hosts[host], hosts[peer]
        instances = []
        for role in ("frontend", "backend"):
            src, peer_src = me[role + "_address"], other[role + "_address"]
            same, excluded = split(pair[role + "_vips"], src.version)
            instances.append({
                "name": "%s_%s" % (sync_group, role), "role": role, "interface": pair[role + "_interface"],
                "virtual_router_id": pair[role + "_vrid"], "priority": me["priority"], "family": src.version,
                "unicast_src_ip": str(src), "unicast_peer": str(peer_src),
                "vips": same, "vips_excluded": excluded,
            })
        plan_hosts[host] = {
            "peer": peer, "priority": me["priority"],
            "frontend_address": str(me["frontend_address"]), "backend_address": str(me["backend_address"]),
            "instances": instances,
        }
    return plan_hosts


# --- addresses: the pair, its interfaces, VIPs and own addresses ---------------

def _pair(c, m, preempt):
    """Interfaces, VRIDs, VIPs, gateways and the directors' own addresses."""
    directors = m.get("directors") or {}
    if len(directors) != 2:
        c.fail("directors (inventory group)", sorted(directors), "exactly two director hosts")
    pair = _interfaces(c, m)
    pair.update(_vips(c, m))
    pair["gateways"] = _gateways(c, m)
    pair["hosts"], pair["own"] = _director_hosts(c, directors, pair["all_vips"], preempt)
    return pair


def _interfaces(c, m):
    frontend, backend = m.get("frontend_interface"), m.get("backend_interface")
    for path, value in (("director_frontend_interface", frontend), ("director_backend_interface", backend)):
        if not isinstance(value, str) or not IFACE_RE.match(value):
            c.fail(path, value, "a network interface name (1-15 characters)")
    fvrid = c.integer("director_frontend_vrid", m.get("frontend_vrid"), 1, 255)
    bvrid = c.integer("director_backend_vrid", m.get("backend_vrid"), 1, 255)
    if fvrid is not None and fvrid == bvrid and frontend == backend:
        c.fail("director_backend_vrid", bvrid,
               "a virtual router id different from director_frontend_vrid on the same interface %s" % backend)
    return {"frontend_interface": frontend, "backend_interface": backend,
            "frontend_vrid": fvrid, "backend_vrid": bvrid}


def _vips(c, m):
    """The frontend VIPs and the backend gateway VIPs (ip_interface, with their networks)."""
    fvips = [c.interface("director_frontend_vips[%d]" % i, v) for i, v in enumerate(_listify(m.get("frontend_vips")))]
    bvips = [c.interface("director_backend_gateway_vips[%d]" % i, v)
             for i, v in enumerate(_listify(m.get("backend_gateway_vips")))]
    if not _listify(m.get("frontend_vips")):
        c.fail("director_frontend_vips", m.get("frontend_vips"), "at least one VIP with prefix length")
    if not _listify(m.get("backend_gateway_vips")):
        c.fail("director_backend_gateway_vips", m.get("backend_gateway_vips"),
               "at least one gateway VIP: NAT-mode real servers route their replies through it")
    fvips = [v for v in fvips if v is not None]
    bvips = [v for v in bvips if v is not None]
    all_vips = set(v.ip for v in fvips) | set(v.ip for v in bvips)
    if len(all_vips) != len(fvips) + len(bvips):
        c.fail("director_frontend_vips/director_backend_gateway_vips", [str(v) for v in fvips + bvips],
               "every VIP listed once")
    return {"frontend_vips": fvips, "backend_vips": bvips, "all_vips": all_vips}


def _gateways(c, m):
    fgws = [c.address("director_frontend_gateways[%d]" % i, v)
            for i, v in enumerate(_listify(m.get("frontend_gateways")))]
    fgws = [g for g in fgws if g is not None]
    if len(set(g.version for g in fgws)) != len(fgws):
        c.fail("director_frontend_gateways", [str(g) for g in fgws], "at most one gateway per address family")
    return fgws


def _director_hosts(c, directors, all_vips, preempt):
    """Each director's own addresses and priority; and every own address."""
    hosts = {}
    for host in sorted(directors):
        hv = directors[host] or {}
        fa = c.address("%s: director_frontend_address" % host, hv.get("frontend_address"))
        ba = c.address("%s: director_backend_address" % host, hv.get("backend_address"))
        prio = c.integer("%s: director_vrrp_priority" % host, hv.get("vrrp_priority"), 1, 254)
        for path, addr in (("director_frontend_address", fa), ("director_backend_address", ba)):
            if addr is not None and addr in all_vips:
                c.fail("%s: %s" % (host, path), str(addr), "the director's own address, not a VIP")
        hosts[host] = {"frontend_address": fa, "backend_address": ba, "priority": prio}
    if preempt:
        _distinct_priorities(c, hosts)
    own = [h[k] for h in hosts.values() for k in ("frontend_address", "backend_address") if h[k] is not None]
    if len(own) != len(set(own)):
        c.fail("director_frontend_address/director_backend_address", sorted(str(a) for a in own),
               "a distinct address per director and interface")
    return hosts, own


def _distinct_priorities(c, hosts):
    priorities = {}
    for host in sorted(hosts):
        if hosts[host]["priority"] is not None:
            priorities.setdefault(hosts[host]["priority"], []).append(host)
    for prio, names in priorities.items():
        if len(names) > 1:
            c.fail("director_vrrp_priority", prio,
                   "distinct priorities on %s (or director_vrrp_preempt: false for nopreempt)" % ", ".join(names))


# --- services ------------------------------------------------------------------

def _services(c, m, data_plane, pair):
    """Every service, normalised; and what the plan derives from all of them."""
    raw_services = m.get("services")
    if not isinstance(raw_services, list) or not raw_services:
        c.fail("director_services", raw_services, "a non-empty list of UDP services")
        raw_services = []
    defaults = _service_defaults(c, m)
    seen = {"names": set(), "endpoints": set(), "rs_addresses": set(), "rs_owner": {}}
    services = []
    for i, svc in enumerate(raw_services):
        service = _service(c, "director_services[%d]" % i, svc, defaults, data_plane, pair, seen)
        if service is not None:
            services.append(service)
    return {"services": services, "zone_base": defaults["zone_base"],
            "rs_addresses": seen["rs_addresses"], "rs_owner": seen["rs_owner"]}


def _service_defaults(c, m):
    """The director_* variables a service inherits."""
    defaults = {
        "reply_rewrite": c.choice("director_reply_rewrite", m["reply_rewrite"], REPLY_REWRITES),
        "zone_base": c.integer("director_reply_zone_base", m["reply_zone_base"], 1, 60000),
        "panic_threshold": c.integer("director_panic_threshold", m["panic_threshold"], 0, 100,
                                     " (percent of a service's weight; 0 turns panic off)"),
        "health_check": m["health_check"] or {"type": "none"},
    }
    if not isinstance(defaults["health_check"], dict):
        c.fail("director_health_check", defaults["health_check"], "a mapping with a type")
        defaults["health_check"] = {"type": "none"}
    return defaults


def _service(c, p, svc, defaults, data_plane, pair, seen):
    """One service of the plan, or None when it is too broken to plan (reported)."""
    if not isinstance(svc, dict):
        c.fail(p, svc, "a mapping with name, vip, port and real_servers")
        return None
    _unknown_keys(c, p, svc, SERVICE_SPEC)
    name, vip, port = _service_endpoint(c, p, svc, pair, seen)
    scheduler = c.choice(p + ".scheduler", svc.get("scheduler", _default(SERVICE_SPEC, "scheduler")), SCHEDULERS)
    _per_packet_udp(c, p, svc)
    rewrite = c.choice(p + ".reply_rewrite", svc.get("reply_rewrite", defaults["reply_rewrite"]), REPLY_REWRITES)
    hc = _health_check(c, p + ".health_check", svc.get("health_check", defaults["health_check"]) or {"type": "none"})
    panic = _panic_threshold(c, p, svc, hc, defaults["panic_threshold"])
    flow_templates, mirrors = _service_copies(c, p, svc, vip, port, data_plane, pair)
    rss = svc.get("real_servers")
    if not isinstance(rss, list) or not rss:
        c.fail(p + ".real_servers", rss, "a non-empty list of real servers")
        rss = []
    real_servers = _real_servers(c, p, rss, vip, port, pair, seen)
    keepalived = _keepalived_options(c, p, svc, real_servers if len(real_servers) == len(rss) else None)
    if vip is None or port is None or name is None:
        return None
    return {
        "name": name, "family": vip.version, "vip": str(vip), "port": port,
        "prefixlen": _prefixlen(vip, pair["frontend_vips"]),
        "scheduler": scheduler, "reply_rewrite": rewrite, "health_check": hc,
        "quorum": keepalived["quorum"], "alpha": keepalived["alpha"],
        "inhibit_on_failure": keepalived["inhibit_on_failure"],
        "panic_threshold": panic, "real_servers": real_servers,
        "sequence": _sequence(c, p, scheduler, real_servers),
        "flow_templates": flow_templates, "template_match": TEMPLATE_MATCH.get(flow_templates),
        "mirrors": mirrors,
    }


def _service_endpoint(c, p, svc, pair, seen):
    """name, VIP and port, each used once."""
    name = c.name(p + ".name", svc.get("name"))
    if name is not None:
        if name in seen["names"]:
            c.fail(p + ".name", name, "a service name used once")
        seen["names"].add(name)
    fvips = pair["frontend_vips"]
    vip = c.address(p + ".vip", svc.get("vip"))
    if vip is not None and fvips and _prefixlen(vip, fvips) is None:
        c.fail(p + ".vip", str(vip), "one of director_frontend_vips (%s)" % ", ".join(str(v.ip) for v in fvips))
    port = c.integer(p + ".port", svc.get("port"), 1, 65535)
    if vip is not None and port is not None:
        if (vip, port) in seen["endpoints"]:
            c.fail(p, "%s:%s" % (vip, port), "each VIP and port used by one service only")
        seen["endpoints"].add((vip, port))
    return name, vip, port


def _prefixlen(vip, fvips):
    """The prefix length of the frontend VIP that is ``vip``, or None."""
    return next((v.network.prefixlen for v in fvips if v.ip == vip), None)


def _per_packet_udp(c, p, svc):
    """ops on, no persistence, UDP: what this collection balances."""
    if c.boolean(p + ".ops", _option(svc, "ops", _default(SERVICE_SPEC, "ops"))) is False:
        c.fail(p + ".ops", svc["ops"], "true: per-packet scheduling is what this collection provides")
    if svc.get("persistence_timeout") not in (None, 0):
        c.fail(p + ".persistence_timeout", svc.get("persistence_timeout"),
               "no persistence: one-packet scheduling never pins a client (keepalived forbids ops with persistence)")
    if svc.get("protocol", _default(SERVICE_SPEC, "protocol")) != "udp":
        c.fail(p + ".protocol", svc.get("protocol"), "udp")


def _service_copies(c, p, svc, vip, port, data_plane, pair):
    """flow_templates and mirrors of a service: (protocol or None, [mirrors])."""
    fvips, bvips = pair["frontend_vips"], pair["backend_vips"]
    flow_templates = _flow_templates(c, p, svc)
    for j, item in enumerate(svc["mirrors"] if isinstance(svc.get("mirrors"), list) else []):
        if isinstance(item, dict):
            _unknown_keys(c, "%s.mirrors[%d]" % (p, j), item, MIRROR_SPEC)
    mirrors = _mirrors(c, p, svc, vip.version if vip is not None else None, port, pair["all_vips"] | set(pair["own"]),
                       (("frontend", [v.network for v in fvips]), ("backend", [v.network for v in bvips])))
    if (flow_templates or mirrors) and data_plane not in (None, "nftables"):
        c.fail(p + (".flow_templates" if flow_templates else ".mirrors"), flow_templates or svc.get("mirrors"),
               "director_data_plane nftables for template copies and mirrors (the ipvs data plane has neither yet)")
    return flow_templates, mirrors


def _real_servers(c, p, rss, vip, port, pair, seen):
    """The valid real servers of a service (each problem reported)."""
    real_servers = []
    seen_rs = set()
    for j, rs in enumerate(rss):
        rp = "%s.real_servers[%d]" % (p, j)
        item = _real_server(c, rp, rs, vip, port, pair)
        if item is None:
            continue
        addr, rport, weight = item
        if (addr, rport) in seen_rs:
            c.fail(rp, "%s:%s" % (addr, rport), "each real server listed once per service")
            continue
        seen_rs.add((addr, rport))
        if (addr, rport) in seen["rs_owner"]:
            c.fail(rp, "%s:%s" % (addr, rport),
                   "a real server address and port used by one service only (also in %s): "
                   "its replies must map back to one VIP:port" % seen["rs_owner"][(addr, rport)])
        seen["rs_owner"].setdefault((addr, rport), p)
        _on_backend_network(c, rp, addr, pair["backend_vips"])
        seen["rs_addresses"].add(addr)
        real_servers.append({"address": str(addr), "port": rport, "weight": weight})
    return real_servers


def _real_server(c, rp, rs, vip, port, pair):
    """(address, port, weight) of one real server, or None when it is invalid (reported)."""
    if not isinstance(rs, dict):
        c.fail(rp, rs, "a mapping with address, port and weight")
        return None
    _unknown_keys(c, rp, rs, REAL_SERVER_SPEC)
    addr = c.address(rp + ".address", rs.get("address"), vip.version if vip is not None else None)
    rport = c.integer(rp + ".port", rs.get("port", port), 1, 65535)
    weight = c.integer(rp + ".weight", rs.get("weight", _default(REAL_SERVER_SPEC, "weight")), 0, 65535)
    if addr is None or rport is None or weight is None:
        return None
    if addr in pair["all_vips"] or addr in pair["own"]:
        c.fail(rp + ".address", str(addr), "a real server address, not a VIP or a director's own address")
        return None
    return addr, rport, weight


def _on_backend_network(c, rp, addr, bvips):
    if not any(addr in g.network for g in bvips if g.version == addr.version):
        c.fail(rp + ".address", str(addr),
               "an address on a backend network (%s): NAT-mode real servers reply through the backend gateway VIP"
               % (", ".join(str(g.network) for g in bvips) or "none configured"))


def _sequence(c, p, scheduler, real_servers):
    """The per-packet order of real-server indices (rr: weight 0 drains, other weights count 1)."""
    weights = [rs["weight"] if scheduler == "wrr" else (1 if rs["weight"] > 0 else 0) for rs in real_servers]
    sequence = smooth_wrr(weights)
    if len(sequence) > MAX_SEQUENCE:
        c.fail(p + ".real_servers", weights,
               "weights whose sum (after dividing by their gcd) is at most %d" % MAX_SEQUENCE)
    if real_servers and not sequence:
        c.fail(p + ".real_servers", weights, "at least one real server with weight > 0")
    return sequence


def _mirrors_not_real_servers(c, services, rs_owner):
    """A real server answers what reaches it, and its answers leave as its
    service's replies (VIP:port): a mirror on a real server's own address
    and port would send clients a second answer to every datagram."""
    for i, svc in enumerate(services):
        for j, m in enumerate(svc["mirrors"]):
            owner = rs_owner.get((ipaddress.ip_address(m["address"]), m["port"]))
            if owner:
                c.fail("director_services[%d].mirrors[%d]" % (i, j), "%s:%s" % (m["address"], m["port"]),
                       "a receiver that is not a real server (it is one of %s, and would answer the copies)" % owner)


# --- the plan ------------------------------------------------------------------

def _plan(data_plane, vrrp, pair, section):
    """The plan of a valid model."""
    services = section["services"]
    fvips, bvips = pair["frontend_vips"], pair["backend_vips"]
    zones = _zones(services, section["rs_addresses"], section["zone_base"])
    return {
        "data_plane": data_plane,
        "vrrp": vrrp,
        "frontend": {"interface": pair["frontend_interface"], "vips": [str(v) for v in fvips],
                     "gateways": dict(("ipv%d" % g.version, str(g)) for g in pair["gateways"]),
                     "networks": _networks(fvips)},
        "backend": {"interface": pair["backend_interface"], "gateway_vips": [str(v) for v in bvips],
                    "networks": _networks(bvips)},
        "directors": _vrrp_instances(pair, vrrp["sync_group"]),
        "director_addresses": sorted(str(a) for a in pair["own"]),
        "services": services,
        "families": sorted(set(s["family"] for s in services)),
        "copies": _copies(services, pair),
        "zones": zones,
    }


def _zones(services, rs_addresses, zone_base):
    """One conntrack zone per real-server address, in address order; each real server gets its own."""
    zones = dict((str(a), zone_base + n) for n, a in enumerate(sorted(rs_addresses, key=lambda a: (a.version, a))))
    for svc in services:
        for rs in svc["real_servers"]:
            rs["zone"] = zones[rs["address"]]
    return zones


def _copies(services, pair):
    """Receivers of copies: each gets one forward rule on the loopback device."""
    copies = []
    for svc in services:
        receivers = [dict(rs, side="backend") for rs in svc["real_servers"] if svc["flow_templates"]]
        for rcv in receivers + svc["mirrors"]:
            item = {"family": svc["family"], "address": rcv["address"], "port": rcv["port"],
                    "interface": pair["backend_interface"] if rcv["side"] == "backend" else pair["frontend_interface"]}
            if item not in copies:
                copies.append(item)
    return copies
