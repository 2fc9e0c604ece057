# -*- coding: utf-8 -*-
# Copyright (c) datagram.director developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""ipvsadm: what ``ipvsadm -S -n`` says, and the argv of the edits.

Pure functions (no I/O), standard library only, syntax valid on Python 3.9+.
Used by the udp_flow_flush module and by health_apply.py; installed flat next
to health_apply.py on a director (``import ipvsadm``).

``ipvsadm -S -n`` (print_service_entry() with FMT_RULE in ipvsadm.c, 1.31)
prints one line per virtual service, then one per real server::

  -A -u 198.51.100.10:7000 -s rr -o
  -a -u 198.51.100.10:7000 -r 203.0.113.21:7000 -m -w 1
  -A -t [2001:db8:51::10]:53 -s wrr -p 300 --pe sip -b flag-1
  -a -t [2001:db8:51::10]:53 -r [2001:db8:113::21]:53 -i -w 0 --tun-type ipip

A service is ``-t|-u|--sctp-service ADDRESS:PORT`` or ``-f MARK [-6]``,
then ``-s SCHEDULER`` and optionally ``-p TIMEOUT [-M NETMASK]``, ``--pe
NAME``, ``-o`` (one-packet scheduling; ipvsadm 1.26 printed ``ops``) and
``-b FLAGS``. A real server is ``-r ADDRESS:PORT``, its forwarding method
(``-m`` masquerading, ``-g`` gatewaying, also for the local node, ``-i``
ipip tunnelling, followed by ``--tun-*`` options) and ``-w WEIGHT``.
"""

from __future__ import absolute_import, division, print_function

import ipaddress

__metaclass__ = type

PROTOCOLS = {"udp": "-u", "tcp": "-t"}
METHODS = {"masq": "-m", "gatewaying": "-g", "ipip": "-i"}
_SWITCHES = {
    "-u": "udp", "--udp-service": "udp", "-t": "tcp", "--tcp-service": "tcp",
    "--sctp-service": "sctp", "-f": "fwmark", "--fwmark-service": "fwmark",
}
_METHOD_SWITCHES = {"-m": "masq", "--masquerading": "masq", "-g": "gatewaying", "--gatewaying": "gatewaying",
                    "-i": "ipip", "--ipip": "ipip"}


class IpvsadmParseError(ValueError):
    """A line of ``ipvsadm -S -n`` could not be parsed."""


def endpoint(address, port):
    """``198.51.100.10:7000`` or ``[2001:db8::10]:7000``, the address
    normalised when it is one (ipvsadm -n prints them the same way)."""
    text = str(address).strip().strip("[]")
    try:
        text = str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if ":" in text:
        return "[%s]:%d" % (text, int(port))
    return "%s:%d" % (text, int(port))


def split_endpoint(text):
    """``ADDRESS:PORT`` or ``[ADDRESS]:PORT`` -> (normalised address, port).
    Raises ValueError."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError("%r is not ADDRESS:PORT" % text)
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError("%r is not [ADDRESS]:PORT" % text)
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("%r: an IPv6 address must be in brackets" % text)
    return str(ipaddress.ip_address(host)), int(port)


def _service_of(tokens):
    """(protocol, (address, port) or None, rest) from the tokens after -A/-a;
    None for a protocol other than UDP and TCP."""
    if len(tokens) < 2 or tokens[0] not in _SWITCHES:
        raise ValueError("no service (-t, -u, --sctp-service or -f) after the command")
    protocol = _SWITCHES[tokens[0]]
    if protocol not in PROTOCOLS:
        return protocol, None, tokens[2:]
    return protocol, split_endpoint(tokens[1]), tokens[2:]


def _value(tokens, index, option):
    if index + 1 >= len(tokens):
        raise ValueError("%s has no value" % option)
    return tokens[index + 1]


def _number(text, option):
    if not text.isdigit():
        raise ValueError("%s %r is not a number" % (option, text))
    return int(text)


def _text(value, _option):
    return value


_SERVICE_FLAGS = {"-o": ("ops", True), "--ops": ("ops", True), "ops": ("ops", True)}
_SERVICE_VALUES = {"-s": ("scheduler", _text), "--scheduler": ("scheduler", _text),
                   "-p": ("persistence", _number), "--persistent": ("persistence", _number)}
_REAL_SERVER_FLAGS = dict((switch, ("method", method)) for switch, method in _METHOD_SWITCHES.items())
_REAL_SERVER_VALUES = {"-w": ("weight", _number), "--weight": ("weight", _number)}


def _read_options(tokens, record, flags, values):
    """Set ``record[key]`` for each token of ``flags`` (``token: (key, value)``)
    and of ``values`` (``token: (key, convert)``, the value is the next token);
    other tokens go to ``record["options"]``."""
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in flags:
            key, value = flags[token]
            record[key] = value
            i += 1
        elif token in values:
            key, convert = values[token]
            record[key] = convert(_value(tokens, i, token), token)
            i += 2
        else:
            record["options"].append(token)
            i += 1
    return record


def _parse_service(protocol, address, port, rest):
    service = _read_options(rest, {"protocol": protocol, "endpoint": endpoint(address, port), "address": address,
                                   "port": port, "scheduler": None, "ops": False, "persistence": None,
                                   "options": [], "real_servers": {}}, _SERVICE_FLAGS, _SERVICE_VALUES)
    if service["scheduler"] is None:
        raise ValueError("the service has no scheduler (-s)")
    return service


def _parse_real_server(rest):
    if not rest or rest[0] not in ("-r", "--real-server"):
        raise ValueError("no real server (-r) after the service")
    address, port = split_endpoint(_value(rest, 0, rest[0]))
    real_server = _read_options(rest[2:], {"endpoint": endpoint(address, port), "address": address, "port": port,
                                           "method": None, "weight": None, "options": []},
                                _REAL_SERVER_FLAGS, _REAL_SERVER_VALUES)
    if real_server["method"] is None or real_server["weight"] is None:
        raise ValueError("the real server lacks its forwarding method (-m, -g, -i) or its weight (-w)")
    return real_server


def parse_save(text, errors=None):
    """Parse ``ipvsadm -S -n`` output.

    Returns ``{(protocol, service endpoint): service}`` for the UDP and TCP
    virtual services (SCTP and firewall-mark services are skipped), in the
    order printed. A service is a dict with ``protocol``, ``endpoint``,
    ``address``, ``port``, ``scheduler``, ``ops`` (one-packet scheduling),
    ``persistence`` (seconds or None), ``options`` (other tokens) and
    ``real_servers``: ``{endpoint: real server}``, each with ``endpoint``,
    ``address``, ``port``, ``method`` (``masq``, ``gatewaying`` or ``ipip``),
    ``weight`` and ``options`` (e.g. ``--tun-type ipip``).

    A line that cannot be parsed raises IpvsadmParseError, unless ``errors``
    is a list: then its message is appended and the line skipped.
    """
    services = {}
    for number, raw in enumerate(text.splitlines(), 1):
        tokens = raw.split()
        if not tokens or tokens[0] not in ("-A", "-a", "--add-service", "--add-server"):
            continue
        try:
            protocol, address_port, rest = _service_of(tokens[1:])
            if address_port is None:
                continue
            key = (protocol, endpoint(*address_port))
            if tokens[0] in ("-A", "--add-service"):
                services[key] = _parse_service(protocol, address_port[0], address_port[1], rest)
            elif key not in services:
                raise ValueError("a real server of a service that was not added before")
            else:
                real_server = _parse_real_server(rest)
                services[key]["real_servers"][real_server["endpoint"]] = real_server
        except ValueError as exc:
            error = IpvsadmParseError("ipvsadm -S -n line %d: %s: %r" % (number, exc, raw))
            if errors is None:
                raise error
            errors.append(str(error))
    return services


def _service_argv(ipvsadm, command, protocol, service_endpoint, real_server_endpoint):
    if protocol not in PROTOCOLS:
        raise ValueError("protocol must be one of %s, got %r" % (", ".join(sorted(PROTOCOLS)), protocol))
    return [ipvsadm, command, PROTOCOLS[protocol], service_endpoint, "-r", real_server_endpoint]


def _method_switch(method):
    if method not in METHODS:
        raise ValueError("method must be one of %s, got %r" % (", ".join(sorted(METHODS)), method))
    return METHODS[method]


def edit_argv(protocol, service_endpoint, real_server_endpoint, method, weight, ipvsadm="ipvsadm"):
    """Set a real server's weight (0 quiesces: no new datagrams). The method
    is given again: ``-e`` without one would switch the server to gatewaying."""
    return _service_argv(ipvsadm, "-e", protocol, service_endpoint, real_server_endpoint) + [
        _method_switch(method), "-w", str(int(weight))]


def delete_argv(protocol, service_endpoint, real_server_endpoint, ipvsadm="ipvsadm"):
    """Remove a real server from a virtual service."""
    return _service_argv(ipvsadm, "-d", protocol, service_endpoint, real_server_endpoint)


def add_argv(protocol, service_endpoint, real_server_endpoint, method, weight, options=(), ipvsadm="ipvsadm"):
    """Add a real server with its method, weight and other options (the
    ``--tun-*`` options of an ipip server) as ``ipvsadm -S -n`` printed them."""
    return _service_argv(ipvsadm, "-a", protocol, service_endpoint, real_server_endpoint) + [
        _method_switch(method), "-w", str(int(weight))] + list(options)
