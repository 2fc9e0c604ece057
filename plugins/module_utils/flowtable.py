# -*- coding: utf-8 -*-
# Copyright (c) datagram.director developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Parse IPVS and conntrack flow tables and find stuck UDP entries.

This file is the single source of truth for
  * the format of ``/proc/net/ip_vs_conn`` and ``/proc/net/ip_vs_conn_sync``,
  * the format of ``conntrack -L`` (default and ``-o extended`` output),
  * what a *stuck* UDP entry is (see ``classify_entry``),
  * the per-service summary shown by the ``stuck_udp`` callback.

Only the Python standard library is used, with syntax valid on Python 3.9+.
"""

from __future__ import annotations

import ipaddress

TABLE_IPVS = 'ipvs'
TABLE_CONNTRACK = 'conntrack'
DATA_PLANES = ('ipvs', 'nftables')
REPLY_REWRITES = ('stateless', 'conntrack_zones')

ROLE_REQUEST = 'request'
ROLE_REPLY = 'reply'

# Reasons for which an entry is stuck.
REASON_IPVS_ENTRY = 'ipvs_entry'
REASON_NAT_PINNED = 'nat_pinned'
REASON_REPLY_NAT_PINNED = 'reply_nat_pinned'
REASON_TRACKED_STATELESS = 'tracked_on_stateless_plane'

REASONS = {
    REASON_IPVS_ENTRY: 'IPVS connection entry for an OPS service (OPS never hashes entries, '
                       'so this one pins the client port to one real server)',
    REASON_NAT_PINNED: 'conntrack entry for VIP:port whose reply source is a real server '
                       '(per-flow DNAT pins the client port to that real server)',
    REASON_REPLY_NAT_PINNED: 'reply conntrack entry SNATed to VIP:port in zone 0 (its reply tuple '
                             'catches the client\'s next datagram and clashes with replies from '
                             'the other real servers)',
    REASON_TRACKED_STATELESS: 'conntrack entry for VIP:port traffic on the stateless nftables data '
                              'plane (notrack is missing)',
}

# ip_vs_conn_seq_show() and ip_vs_conn_sync_seq_show() print this header
# (net/netfilter/ipvs/ip_vs_conn.c), followed by one row per entry.
IPVS_CONN_HEADER = 'Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData'
IPVS_CONN_SYNC_HEADER = 'Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Origin Expires'
IPVS_ORIGINS = ('LOCAL', 'SYNC')

_CONNTRACK_TUPLE_KEYS = frozenset(('src', 'dst', 'sport', 'dport', 'packets', 'bytes', 'type', 'code', 'id'))
_CONNTRACK_L3 = {'ipv4': 'ipv4', 'ipv6': 'ipv6'}
# conntrack-tools writes "conntrack v1.4.7 (conntrack-tools): 3 flow entries
# have been shown." to stderr; accept it if stderr was merged into stdout.
_CONNTRACK_NOTICE_PREFIX = 'conntrack v'


class FlowTableParseError(ValueError):
    """A line of a flow table could not be parsed."""

    def __init__(self, message, source=None, line_number=None, line=None):
        self.reason = message
        self.source = source
        self.line_number = line_number
        self.line = line
        where = []
        if source:
            where.append(str(source))
        if line_number is not None:
            where.append('line %d' % line_number)
        text = message
        if where:
            text = '%s: %s' % (' '.join(where), message)
        if line is not None:
            text = '%s: %r' % (text, line)
        super(FlowTableParseError, self).__init__(text)


class ServiceError(ValueError):
    """A service definition is invalid."""


def _address(text):
    """Return an ipaddress object for a printed IPv4/IPv6 address."""
    return ipaddress.ip_address(text)


def _family(addr):
    return 'ipv%d' % addr.version


def format_endpoint(address, port):
    """``198.51.100.10:7``, ``[2001:db8::10]:7``; the address alone if port is None."""
    if address is None:
        return '-'
    addr = str(address)
    if port is None:
        return addr
    if ':' in addr:
        return '[%s]:%s' % (addr, port)
    return '%s:%s' % (addr, port)


def address_sort_key(text):
    """Addresses in numeric order, IPv4 before IPv6; other text last."""
    try:
        addr = _address(text)
        return (addr.version, int(addr), '')
    except ValueError:
        return (99, 0, str(text))


def _new_entry(table, line_number):
    return {
        'table': table,
        'family': None,
        'protocol': None,
        'client': None,
        'client_port': None,
        'vip': None,
        'vip_port': None,
        'real_server': None,
        'real_server_port': None,
        'reply_dst': None,
        'reply_dst_port': None,
        'state': None,
        'expires': None,
        'zone': None,
        'mark': None,
        'use': None,
        'flags': [],
        'origin': None,
        'pe_name': None,
        'pe_data': None,
        'counters': None,
        'extra': {},
        'line': line_number,
    }


def _record(errors, error):
    if errors is None:
        raise error
    errors.append(str(error))


# ---------------------------------------------------------------------------
# /proc/net/ip_vs_conn
# ---------------------------------------------------------------------------

def _ipvs_address(token):
    """IPv4 is printed as %08X of the host-order address, IPv6 as %pI6."""
    if ':' in token:
        return ipaddress.IPv6Address(token)
    if len(token) != 8:
        raise ValueError('IPv4 address %r is not 8 hex digits' % token)
    return ipaddress.IPv4Address(int(token, 16))


def _ipvs_port(token):
    if len(token) != 4:
        raise ValueError('port %r is not 4 hex digits' % token)
    return int(token, 16)


def parse_ipvs_conn_line(line, sync_format=None, line_number=None, source=None):
    """Parse one row of /proc/net/ip_vs_conn or /proc/net/ip_vs_conn_sync.

    Row formats, from ip_vs_conn_seq_show() and ip_vs_conn_sync_seq_show() in
    the kernel's net/netfilter/ipvs/ip_vs_conn.c::

      ip_vs_conn, IPv4:  "%-3s %08X %04X %08X %04X %s %04X %-11s %7lu%s\\n"
      ip_vs_conn, IPv6:  "%-3s %pI6 %04X %pI6 %04X %s %04X %-11s %7lu%s\\n"
      ip_vs_conn_sync:   the same up to the state, then "%-6s %7lu\\n" (Origin, Expires)

    protocol (ip_vs_proto_name: UDP, TCP, SCTP, ICMP, ICMPv6, IP_<n>), client
    address and port, virtual address and port, destination (real server)
    address and port, state (ip_vs_state_name; "UDP" for every UDP entry),
    seconds until expiry; ip_vs_conn appends " <pe name> <pe data>" when a
    persistence engine (sip) holds data, ip_vs_conn_sync prints the origin
    (LOCAL or SYNC) before the expiry.  The destination is printed with the
    destination's own family (%08X or %pI6), which may differ from the
    service's family for tunnelling real servers.

    ``sync_format`` None guesses the format from the number of fields.
    Raises FlowTableParseError.
    """
    fields = line.split()
    if sync_format is None:
        sync_format = len(fields) == 10 and fields[8] in IPVS_ORIGINS
    if len(fields) < 9:
        raise FlowTableParseError('expected at least 9 fields in an IPVS connection row, got %d' % len(fields),
                                  source, line_number, line)
    if sync_format and len(fields) != 10:
        raise FlowTableParseError('expected 10 fields in an ip_vs_conn_sync row, got %d' % len(fields),
                                  source, line_number, line)
    entry = _new_entry(TABLE_IPVS, line_number)
    try:
        client = _ipvs_address(fields[1])
        vip = _ipvs_address(fields[3])
        dest = _ipvs_address(fields[5])
        entry['client_port'] = _ipvs_port(fields[2])
        entry['vip_port'] = _ipvs_port(fields[4])
        entry['real_server_port'] = _ipvs_port(fields[6])
        if sync_format:
            if fields[8] not in IPVS_ORIGINS:
                raise ValueError('origin %r is neither LOCAL nor SYNC' % fields[8])
            entry['origin'] = fields[8]
            expires = fields[9]
        else:
            expires = fields[8]
        if not expires.isdigit():
            raise ValueError('expiry %r is not a number of seconds' % expires)
        entry['expires'] = int(expires)
    except ValueError as exc:
        raise FlowTableParseError(str(exc), source, line_number, line)
    if client.version != vip.version:
        raise FlowTableParseError('client and virtual address have different families', source, line_number, line)
    if not sync_format and len(fields) > 9:
        entry['pe_name'] = fields[9]
        entry['pe_data'] = ' '.join(fields[10:]) if len(fields) > 10 else ''
    entry['family'] = _family(client)
    entry['protocol'] = fields[0].lower()
    entry['client'] = str(client)
    entry['vip'] = str(vip)
    entry['real_server'] = str(dest)
    # The real server answers the client (NAT: de-NATed by IPVS unless OPS).
    entry['reply_dst'] = str(client)
    entry['reply_dst_port'] = entry['client_port']
    entry['state'] = fields[7]
    if dest.version != client.version:
        entry['extra']['dest_family'] = _family(dest)
    return entry


def parse_ipvs_conn(text, source='/proc/net/ip_vs_conn', errors=None):
    """Parse the content of /proc/net/ip_vs_conn (or ip_vs_conn_sync).

    IPv4 and IPv6 rows share one file.  Returns a list of entry dicts.  A
    garbage line raises FlowTableParseError naming the line, unless ``errors``
    is a list: then the message is appended to it and the line is skipped.
    """
    entries = []
    sync_format = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip('\n')
        if not line.strip():
            continue
        if line.startswith('Pro '):
            header = line.split()
            if header[:8] != ['Pro', 'FromIP', 'FPrt', 'ToIP', 'TPrt', 'DestIP', 'DPrt', 'State']:
                _record(errors, FlowTableParseError('unknown IPVS header', source, number, line))
                continue
            sync_format = 'Origin' in header
            continue
        try:
            entries.append(parse_ipvs_conn_line(line, sync_format, number, source))
        except FlowTableParseError as exc:
            _record(errors, exc)
    return entries


# ---------------------------------------------------------------------------
# conntrack -L
# ---------------------------------------------------------------------------

def _is_int(token):
    return token.isdigit()


def _conntrack_tuple(tuple_fields, which, source, line_number, line):
    if 'src' not in tuple_fields or 'dst' not in tuple_fields:
        raise FlowTableParseError('%s tuple lacks src= or dst=' % which, source, line_number, line)
    try:
        src = _address(tuple_fields['src'])
        dst = _address(tuple_fields['dst'])
        sport = int(tuple_fields['sport']) if 'sport' in tuple_fields else None
        dport = int(tuple_fields['dport']) if 'dport' in tuple_fields else None
    except ValueError as exc:
        raise FlowTableParseError('%s tuple: %s' % (which, exc), source, line_number, line)
    for port in (sport, dport):
        if port is not None and not 0 <= port <= 65535:
            raise FlowTableParseError('%s tuple: port %d out of range' % (which, port), source, line_number, line)
    if src.version != dst.version:
        raise FlowTableParseError('%s tuple mixes IPv4 and IPv6' % which, source, line_number, line)
    return src, dst, sport, dport


def parse_conntrack_line(line, line_number=None, source=None):
    """Parse one line of ``conntrack -L`` output (default or ``-o extended``).

    Layout (conntrack-tools / libnetfilter_conntrack)::

      [ipv4|ipv6 L3NUM] PROTO L4NUM TIMEOUT [STATE] src= dst= sport= dport=
          [packets= bytes=] [[UNREPLIED]] src= dst= sport= dport= [packets= bytes=]
          [[ASSURED]] [mark=] [secctx=] [zone=] [use=] [id=] ...

    The first tuple is the original direction, the second the reply
    direction.  Raises FlowTableParseError.
    """
    tokens = line.split()
    pos = 0
    entry = _new_entry(TABLE_CONNTRACK, line_number)

    def fail(message):
        return FlowTableParseError(message, source, line_number, line)

    l3name = None
    if len(tokens) >= 4 and tokens[0] in _CONNTRACK_L3 and _is_int(tokens[1]):
        l3name = tokens[0]
        pos = 2
    if len(tokens) < pos + 3:
        raise fail('too few fields for a conntrack entry')
    proto = tokens[pos]
    if '=' in proto or not proto.isalnum() or not _is_int(tokens[pos + 1]):
        raise fail('expected "PROTOCOL NUMBER", got %r' % ' '.join(tokens[pos:pos + 2]))
    entry['protocol'] = proto.lower()
    pos += 2
    if pos < len(tokens) and _is_int(tokens[pos]):
        entry['expires'] = int(tokens[pos])
        pos += 1
    proto_state = None
    if pos < len(tokens) and '=' not in tokens[pos] and not tokens[pos].startswith('['):
        if not tokens[pos].replace('_', '').isalpha():
            raise fail('unexpected field %r' % tokens[pos])
        proto_state = tokens[pos]
        pos += 1

    tuples = []
    current = None
    counters = {}
    for token in tokens[pos:]:
        if token.startswith('[') and token.endswith(']') and len(token) > 2:
            entry['flags'].append(token[1:-1])
            current = None
            continue
        if '=' not in token:
            raise fail('unexpected field %r' % token)
        key, value = token.split('=', 1)
        if key == 'src':
            if len(tuples) == 2:
                raise fail('more than two address tuples')
            current = {}
            tuples.append(current)
        if current is not None and key in _CONNTRACK_TUPLE_KEYS and key not in current:
            current[key] = value
            if key in ('packets', 'bytes'):
                if not _is_int(value):
                    raise fail('%s=%r is not a number' % (key, value))
                counters['%s_%s' % ('orig' if len(tuples) == 1 else 'reply', key)] = int(value)
            continue
        current = None
        if key in ('zone', 'mark', 'use'):
            if not _is_int(value):
                raise fail('%s=%r is not a number' % (key, value))
            entry[key] = int(value)
        else:
            entry['extra'][key] = value
    if len(tuples) != 2:
        raise fail('expected an original and a reply tuple, found %d' % len(tuples))
    osrc, odst, osport, odport = _conntrack_tuple(tuples[0], 'original', source, line_number, line)
    rsrc, rdst, rsport, rdport = _conntrack_tuple(tuples[1], 'reply', source, line_number, line)
    family = _family(osrc)
    if l3name is not None and _CONNTRACK_L3[l3name] != family:
        raise fail('layer 3 name %s does not match the addresses' % l3name)
    entry['family'] = family
    entry['client'] = str(osrc)
    entry['client_port'] = osport
    entry['vip'] = str(odst)
    entry['vip_port'] = odport
    entry['real_server'] = str(rsrc)
    entry['real_server_port'] = rsport
    entry['reply_dst'] = str(rdst)
    entry['reply_dst_port'] = rdport
    if entry['zone'] is None:
        entry['zone'] = 0
    if counters:
        entry['counters'] = counters
    if proto_state is not None:
        entry['state'] = proto_state
    elif 'UNREPLIED' in entry['flags']:
        entry['state'] = 'UNREPLIED'
    elif 'ASSURED' in entry['flags']:
        entry['state'] = 'ASSURED'
    else:
        entry['state'] = 'REPLIED'
    return entry


def parse_conntrack(text, source='conntrack', errors=None):
    """Parse ``conntrack -L`` output (default or ``-o extended``), IPv4 and IPv6.

    Returns a list of entry dicts.  A garbage line raises FlowTableParseError
    naming the line, unless ``errors`` is a list: then the message is appended
    and the line skipped.  The conntrack-tools summary line ("conntrack v1.4.7
    (conntrack-tools): N flow entries have been shown.") is ignored.
    """
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(_CONNTRACK_NOTICE_PREFIX):
            continue
        try:
            entries.append(parse_conntrack_line(line, number, source))
        except FlowTableParseError as exc:
            _record(errors, exc)
    return entries


# ---------------------------------------------------------------------------
# Services and the definition of "stuck"
# ---------------------------------------------------------------------------

def _port(value, what):
    if isinstance(value, bool):
        raise ServiceError('%s must be a port number, got %r' % (what, value))
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ServiceError('%s must be a port number, got %r' % (what, value))
    if not 0 < port <= 65535:
        raise ServiceError('%s must be between 1 and 65535, got %d' % (what, port))
    return port


def normalize_services(services):
    """Validate service dicts and add parsed addresses.

    Returns a list of new dicts with ``name``, ``vip`` (normalised string),
    ``port``, ``protocol``, ``reply_rewrite``, ``real_servers`` (each with
    ``address`` and ``port``, defaulting to the service port) and the private
    keys ``_vip`` and ``_real_servers`` (ipaddress objects).  Raises
    ServiceError.
    """
    result = []
    names = set()
    for index, service in enumerate(services or []):
        if not isinstance(service, dict):
            raise ServiceError('service #%d is not a dict' % index)
        name = service.get('name')
        if not name:
            raise ServiceError('service #%d has no name' % index)
        name = str(name)
        if name in names:
            raise ServiceError('service name %s is used twice' % name)
        names.add(name)
        try:
            vip = _address(str(service.get('vip')).strip())
        except ValueError:
            raise ServiceError('service %s: vip %r is not an IP address' % (name, service.get('vip')))
        port = _port(service.get('port'), 'service %s: port' % name)
        protocol = str(service.get('protocol') or 'udp').lower()
        reply_rewrite = service.get('reply_rewrite') or 'stateless'
        if reply_rewrite not in REPLY_REWRITES:
            raise ServiceError('service %s: reply_rewrite must be one of %s, got %r'
                               % (name, ', '.join(REPLY_REWRITES), reply_rewrite))
        real_servers = []
        parsed = []
        for rs_index, rs in enumerate(service.get('real_servers') or []):
            if not isinstance(rs, dict):
                raise ServiceError('service %s: real server #%d is not a dict' % (name, rs_index))
            try:
                address = _address(str(rs.get('address')).strip())
            except ValueError:
                raise ServiceError('service %s: real server address %r is not an IP address'
                                   % (name, rs.get('address')))
            rs_port = port if rs.get('port') is None else _port(rs.get('port'), 'service %s: real server port' % name)
            real_servers.append(dict(rs, address=str(address), port=rs_port))
            parsed.append((address, rs_port))
        result.append({
            'name': name,
            'vip': str(vip),
            'port': port,
            'protocol': protocol,
            'reply_rewrite': reply_rewrite,
            'real_servers': real_servers,
            '_vip': vip,
            '_real_servers': parsed,
        })
    return result


def _same(address_text, address):
    """Compare a printed address with an ipaddress object (normalised)."""
    if address_text is None:
        return False
    try:
        return _address(address_text) == address
    except ValueError:
        return False


def _is_real_server(service, address_text, port):
    if address_text is None:
        return False
    try:
        addr = _address(address_text)
    except ValueError:
        return False
    return (addr, port) in service['_real_servers']


def classify_entry(entry, services, data_plane):
    """Return ``(service, role, reason)`` for one entry; the definition of stuck.

    ``services`` must come from normalize_services().  ``service`` is None
    when the entry belongs to none of the services; ``reason`` is None when
    the entry is not stuck.  Stuck means: a later datagram from that client
    port would not be balanced per packet, because of this entry.

    IPVS table (any data plane):
      * a UDP entry for VIP:port is stuck (``ipvs_entry``): OPS services never
        hash connection entries, so any entry is a non-OPS leftover that pins
        the client port to its destination (e.g. created before ``ops`` was
        set, or kept after ``ipvsadm -C``).
    conntrack table, request role (original destination is VIP:port):
      * reply source is not VIP:port (a real server, known or removed): DNAT
        pins the client port to that real server -> ``nat_pinned``;
      * otherwise (not NATed): stuck on the ``nftables`` data plane, which is
        stateless and must not track VIP traffic
        (``tracked_on_stateless_plane``); not stuck on ``ipvs``.
    conntrack table, reply role (original source is a real server of the
    service, i.e. the entry was created by a reply):
      * zone != 0: the per-real-server SNAT zones of correct reply handling
        -> not stuck;
      * zone 0 and reply tuple destination VIP:port (the reply was SNATed to
        the VIP in the default zone): its reply tuple client -> VIP:port
        captures the client's next request and clashes with the replies of
        the other real servers -> ``reply_nat_pinned``;
      * zone 0, not SNATed: stuck on ``nftables`` (``tracked_on_stateless_plane``),
        not stuck on ``ipvs``.
    """
    if data_plane not in DATA_PLANES:
        raise ValueError('data_plane must be one of %s, got %r' % (', '.join(DATA_PLANES), data_plane))
    protocol = entry.get('protocol')
    # Request role: the entry's original destination is VIP:port.
    for service in services:
        if protocol != service['protocol']:
            continue
        if entry.get('vip_port') == service['port'] and _same(entry.get('vip'), service['_vip']):
            if entry.get('table') == TABLE_IPVS:
                return service, ROLE_REQUEST, REASON_IPVS_ENTRY
            natted = not (entry.get('real_server_port') == service['port']
                          and _same(entry.get('real_server'), service['_vip']))
            if natted:
                return service, ROLE_REQUEST, REASON_NAT_PINNED
            if data_plane == 'nftables':
                return service, ROLE_REQUEST, REASON_TRACKED_STATELESS
            return service, ROLE_REQUEST, None
    if entry.get('table') != TABLE_CONNTRACK:
        return None, None, None
    # Reply role: created by a real server's reply.  Prefer the service the
    # reply was SNATed to; otherwise the first service with that real server.
    candidates = [s for s in services
                  if protocol == s['protocol'] and _is_real_server(s, entry.get('client'), entry.get('client_port'))]
    if not candidates:
        return None, None, None
    service = candidates[0]
    snatted = False
    for candidate in candidates:
        if entry.get('reply_dst_port') == candidate['port'] and _same(entry.get('reply_dst'), candidate['_vip']):
            service = candidate
            snatted = True
            break
    if entry.get('zone'):
        return service, ROLE_REPLY, None
    if snatted:
        return service, ROLE_REPLY, REASON_REPLY_NAT_PINNED
    if data_plane == 'nftables':
        return service, ROLE_REPLY, REASON_TRACKED_STATELESS
    return service, ROLE_REPLY, None


def _stuck_record(entry, service, role, reason):
    if role == ROLE_REQUEST:
        client, client_port = entry.get('client'), entry.get('client_port')
        real_server, real_server_port = entry.get('real_server'), entry.get('real_server_port')
    else:
        # Created by the reply: original source = real server, destination = client.
        client, client_port = entry.get('vip'), entry.get('vip_port')
        real_server, real_server_port = entry.get('client'), entry.get('client_port')
    if reason == REASON_TRACKED_STATELESS:
        # Tracked, but not NATed: it pins the client to no real server.
        real_server = real_server_port = None
    return {
        'service': service['name'],
        'vip': service['vip'],
        'port': service['port'],
        'reason': reason,
        'role': role,
        'table': entry.get('table'),
        'family': entry.get('family'),
        'client': client,
        'client_port': client_port,
        'real_server': real_server,
        'real_server_port': real_server_port,
        'zone': entry.get('zone'),
        'state': entry.get('state'),
        'expires': entry.get('expires'),
        'entry': entry,
    }


def find_stuck(entries, services, data_plane):
    """Return the stuck entries, one record per stuck entry (see classify_entry).

    ``services`` are raw service dicts (validated here; ServiceError).  Each
    record has service, vip, port, reason, role, table, family, client,
    client_port, real_server / real_server_port (what the client port is
    pinned to, None if the entry pins to no real server), zone, state,
    expires and the entry itself.
    """
    normalized = _normalized(services)
    stuck = []
    for entry in entries:
        service, role, reason = classify_entry(entry, normalized, data_plane)
        if reason is not None:
            stuck.append(_stuck_record(entry, service, role, reason))
    return stuck


def count_related(entries, services, data_plane):
    """Per service name: the number of entries belonging to it (stuck or not)."""
    normalized = _normalized(services)
    counts = dict((s['name'], 0) for s in normalized)
    for entry in entries:
        service = classify_entry(entry, normalized, data_plane)[0]
        if service is not None:
            counts[service['name']] += 1
    return counts


def _normalized(services):
    services = list(services or [])
    if services and all('_vip' in s for s in services):
        return services
    return normalize_services(services)


def summarize(stuck, services=None, top_n=5):
    """Summarise stuck records per service.

    Returns a dict keyed by service name (every service in ``services`` is
    present, plus any service named only in ``stuck``)::

      {"echo": {"vip": "198.51.100.10", "port": 7, "stuck": 3,
                "by_reason": {"nat_pinned": 3}, "by_table": {"conntrack": 3},
                "by_real_server": {"203.0.113.21:7": 2, "203.0.113.22:7": 1},
                "clients": 2,
                "top_clients": [{"client": "198.51.100.2", "flows": 2,
                                 "pinned_to": ["203.0.113.21:7", "203.0.113.22:7"],
                                 "max_expires": 119}, ...]}}

    ``top_clients`` holds at most ``top_n`` clients (by address), most stuck
    flows first, then longest remaining expiry, then address.
    """
    top_n = max(0, int(top_n))
    summary = {}
    for service in services or []:
        name = str(service.get('name'))
        summary[name] = _empty_summary(service.get('vip'), service.get('port'))
    clients = {}
    for record in stuck:
        name = record.get('service')
        item = summary.setdefault(name, _empty_summary(record.get('vip'), record.get('port')))
        item['stuck'] += 1
        reason = record.get('reason')
        item['by_reason'][reason] = item['by_reason'].get(reason, 0) + 1
        table = record.get('table')
        item['by_table'][table] = item['by_table'].get(table, 0) + 1
        pinned = None
        if record.get('real_server') is not None:
            pinned = format_endpoint(record.get('real_server'), record.get('real_server_port'))
            item['by_real_server'][pinned] = item['by_real_server'].get(pinned, 0) + 1
        client = clients.setdefault(name, {}).setdefault(
            record.get('client'), {'client': record.get('client'), 'flows': 0, 'pinned_to': set(), 'max_expires': None})
        client['flows'] += 1
        if pinned is not None:
            client['pinned_to'].add(pinned)
        expires = record.get('expires')
        if expires is not None and (client['max_expires'] is None or expires > client['max_expires']):
            client['max_expires'] = expires
    for item in summary.values():
        for key in ('by_reason', 'by_table'):
            item[key] = dict(sorted(item[key].items()))
        item['by_real_server'] = dict(sorted(item['by_real_server'].items(), key=lambda kv: _endpoint_sort_key(kv[0])))
    for name, per_client in clients.items():
        ranked = sorted(per_client.values(),
                        key=lambda c: (-c['flows'], -(c['max_expires'] or 0), address_sort_key(c['client'])))
        summary[name]['clients'] = len(ranked)
        summary[name]['top_clients'] = [
            dict(c, pinned_to=sorted(c['pinned_to'], key=_endpoint_sort_key)) for c in ranked[:top_n]]
    return summary


def _endpoint_sort_key(endpoint):
    address, _sep, port = endpoint.rpartition(':')
    return (address_sort_key(address.strip('[]')), int(port) if port.isdigit() else 0)


def _empty_summary(vip, port):
    return {
        'vip': vip,
        'port': port,
        'stuck': 0,
        'by_reason': {},
        'by_table': {},
        'by_real_server': {},
        'clients': 0,
        'top_clients': [],
    }
