#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: udp_probe
short_description: Probe UDP (and TCP/HTTP) real servers from the director
version_added: 0.1.0
description:
  - Sends one health probe, or a list of probes, from the managed host and reports
    for each target whether it is healthy, why, and the round-trip time.
  - Uses the same health engine as the director's health daemon
    (C(plugins/module_utils/health.py)), so a play sees exactly the verdict the
    daemon would reach for one check.
  - All probes of one call run concurrently in one event loop, so the call takes
    about as long as the slowest probe, not the sum.
  - Probe types are C(udp) (any payload, optional reply checks), C(dns), C(radius)
    (Status-Server, RFC 5997), C(ntp) (mode 3 client request), C(sip) (OPTIONS),
    and C(tcp) / C(http) for receivers of one-way UDP protocols (syslog, NetFlow,
    StatsD) that never answer over UDP.
  - An ICMP port unreachable answer fails a UDP probe at once, without waiting
    for the timeout.
author:
  - datagram.director developers (!UNKNOWN)
attributes:
  check_mode:
    support: full
    description: Probes only read; they run in check mode too.
  diff_mode:
    support: none
    description: Nothing is changed.
options:
  probes:
    description:
      - A list of probes. Each item takes the same keys as the top-level probe
        options; top-level options are the defaults for every item.
      - When omitted, the top-level options describe a single probe.
      - Option defaults are applied after merging, so an item inherits any
        top-level value that it does not set itself.
    type: list
    elements: dict
    suboptions:
      name:
        description: Label of this probe; overrides the top-level O(name).
        type: str
      type:
        description: Probe type of this probe; overrides the top-level O(type).
        type: str
        choices: [udp, dns, radius, ntp, sip, tcp, http]
      host:
        description: Real server of this probe; overrides the top-level O(host).
        type: str
      port:
        description: Port of this probe; overrides the top-level O(port).
        type: int
      timeout:
        description: Timeout of this probe in seconds; overrides the top-level O(timeout).
        type: float
      source:
        description: Local address to send from; overrides the top-level O(source).
        type: str
      payload:
        description: Text to send; overrides the top-level O(payload).
        type: str
      payload_hex:
        description: Bytes to send, as hex; overrides the top-level O(payload_hex).
        type: str
      expect:
        description: Regular expression the reply must contain; overrides the top-level O(expect).
        type: str
      expect_hex:
        description: Hex bytes the reply must start with; overrides the top-level O(expect_hex).
        type: str
      min_length:
        description: Shortest acceptable reply in bytes; overrides the top-level O(min_length).
        type: int
      max_length:
        description: Longest acceptable reply in bytes; overrides the top-level O(max_length).
        type: int
      query_name:
        description: DNS name to query; overrides the top-level O(query_name).
        type: str
      query_type:
        description: DNS record type to query; overrides the top-level O(query_type).
        type: str
      expect_rcode:
        description: DNS response code the reply must carry; overrides the top-level O(expect_rcode).
        type: str
      expect_answer:
        description: Require a DNS answer record; overrides the top-level O(expect_answer).
        type: bool
      secret:
        description: RADIUS shared secret; overrides the top-level O(secret).
        type: str
      nas_identifier:
        description: RADIUS NAS-Identifier; overrides the top-level O(nas_identifier).
        type: str
      sip_uri:
        description: Request-URI of the SIP OPTIONS request; overrides the top-level O(sip_uri).
        type: str
      http_path:
        description: Path to GET; overrides the top-level O(http_path).
        type: str
      http_host:
        description: HTTP Host header; overrides the top-level O(http_host).
        type: str
      expect_status:
        description: Acceptable HTTP status codes; overrides the top-level O(expect_status).
        type: list
        elements: int
  name:
    description:
      - A label returned with the result. Defaults to C(TYPE HOST:PORT).
    type: str
  type:
    description: The probe type. When not set, V(udp).
    type: str
    choices: [udp, dns, radius, ntp, sip, tcp, http]
  host:
    description: Address (or resolvable name) of the real server.
    type: str
  port:
    description:
      - Port of the real server.
      - Defaults to 53 (dns), 1812 (radius), 123 (ntp), 5060 (sip) or 80 (http);
        required for C(udp) and C(tcp).
    type: int
  timeout:
    description: Seconds to wait for a valid reply or a connection. When not set, V(1.0).
    type: float
  source:
    description: Local address to send from (for example the director's backend address).
    type: str
  payload:
    description: Text to send (C(udp) only). Mutually exclusive with O(payload_hex).
    type: str
  payload_hex:
    description: Bytes to send, as hex (C(udp) only). Spaces and colons are ignored.
    type: str
  expect:
    description:
      - A regular expression that the reply must contain (C(udp) only). Without
        O(expect) and O(expect_hex) any reply is a success.
    type: str
  expect_hex:
    description: Hex bytes that the reply must start with (C(udp) only).
    type: str
  min_length:
    description: Shortest acceptable reply in bytes (C(udp) only).
    type: int
  max_length:
    description: Longest acceptable reply in bytes (C(udp) only).
    type: int
  query_name:
    description: Name to query (C(dns) only). When not set, the root V(.).
    type: str
  query_type:
    description:
      - Record type to query, by name (V(A), V(AAAA), V(SOA) ...) or number (C(dns) only).
        When not set, V(SOA) (with the default O(query_name), the same check as keepalived's C(DNS_CHECK)).
    type: str
  expect_rcode:
    description: Response code the reply must carry (C(dns) only). When not set, V(NOERROR).
    type: str
  expect_answer:
    description:
      - Require at least one record in the answer section (C(dns) only). When not set, V(true).
    type: bool
  secret:
    description:
      - RADIUS shared secret (C(radius) only). Signs the Message-Authenticator and
        verifies the Response Authenticator of the reply.
    type: str
  nas_identifier:
    description:
      - NAS-Identifier sent in the Status-Server request (C(radius) only).
        When not set, V(datagram-director-health).
    type: str
  sip_uri:
    description: Request-URI of the OPTIONS request (C(sip) only). Defaults to C(sip:HOST:PORT).
    type: str
  http_path:
    description: Path to GET (C(http) only). When not set, V(/).
    type: str
  http_host:
    description: Host header (C(http) only). Defaults to O(host).
    type: str
  expect_status:
    description:
      - Acceptable HTTP status codes (C(http) only). Default is any 2xx or 3xx.
    type: list
    elements: int
  require_ok:
    description:
      - Fail the task when any probe fails. By default the task reports the results
        and leaves the decision to the play (for example with C(until)).
    type: bool
    default: false
notes:
  - Probes are sent from the managed host, so run this on a director (or any
    host that can reach the real servers).
  - The module needs no Python library beyond the standard library.
seealso:
  - name: RFC 5997 (RADIUS Status-Server)
    description: Why a Status-Server must carry a Message-Authenticator.
    link: https://www.rfc-editor.org/rfc/rfc5997
"""

EXAMPLES = r"""
- name: Check a DNS real server
  datagram.director.udp_probe:
    type: dns
    host: 198.51.100.11
    query_name: example.org
    query_type: A

- name: Check all real servers of a RADIUS service, wait until every one is up
  datagram.director.udp_probe:
    type: radius
    secret: "{{ vault_radius_secret }}"
    probes:
      - host: 198.51.100.21
      - host: 198.51.100.22
    require_ok: true
  register: __radius_probe
  retries: 10
  delay: 2
  until: __radius_probe is succeeded

- name: Echo service with a hex payload and reply check
  datagram.director.udp_probe:
    host: 198.51.100.31
    port: 7777
    payload_hex: "de ad be ef"
    expect_hex: "deadbeef"
    min_length: 4

- name: A syslog receiver does not answer over UDP, so check its TCP port
  datagram.director.udp_probe:
    type: tcp
    host: 198.51.100.41
    port: 601
"""

RETURN = r"""
ok:
  description: True when every probe succeeded.
  returned: always
  type: bool
  sample: true
results:
  description: One entry per probe, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The probe's label.
      type: str
      sample: dns 198.51.100.11:53
    type:
      description: The probe type.
      type: str
      sample: dns
    host:
      description: The probed host.
      type: str
      sample: 198.51.100.11
    port:
      description: The probed port.
      type: int
      sample: 53
    ok:
      description: Whether the probe succeeded.
      type: bool
      sample: true
    reason:
      description: What was seen, in words (reply summary or the cause of failure).
      type: str
      sample: DNS NOERROR, 1 answer(s)
    rtt:
      description: Seconds from sending the probe to the verdict.
      type: float
      sample: 0.00042
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.datagram.director.plugins.module_utils.health import (
    PROBE_TYPES,
    Probe,
    ProbeResult,
    run_probes,
)

PROBE_ARGS = dict(
    name=dict(type="str"),
    type=dict(type="str", choices=list(PROBE_TYPES)),
    host=dict(type="str"),
    port=dict(type="int"),
    timeout=dict(type="float"),
    source=dict(type="str"),
    payload=dict(type="str"),
    payload_hex=dict(type="str"),
    expect=dict(type="str"),
    expect_hex=dict(type="str"),
    min_length=dict(type="int"),
    max_length=dict(type="int"),
    query_name=dict(type="str"),
    query_type=dict(type="str"),
    expect_rcode=dict(type="str"),
    expect_answer=dict(type="bool"),
    secret=dict(type="str", no_log=True),
    nas_identifier=dict(type="str"),
    sip_uri=dict(type="str"),
    http_path=dict(type="str"),
    http_host=dict(type="str"),
    expect_status=dict(type="list", elements="int"),
)

# Defaults live in the engine (PROBE_OPTION_DEFAULTS), not in the argument
# spec: a spec default would be filled into every probes item and mask the
# top-level value that the item should inherit.


def main():
    argument_spec = dict(PROBE_ARGS)
    argument_spec.update(
        probes=dict(type="list", elements="dict", options=PROBE_ARGS),
        require_ok=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params

    base = {}
    base.update((k, v) for k, v in params.items() if k in PROBE_ARGS and v is not None)
    items = params["probes"] or [{}]

    specs, labels, errors = [], [], []
    for index, item in enumerate(items):
        spec = dict(base)
        spec.update((k, v) for k, v in item.items() if v is not None)
        label = spec.pop("name", None)
        try:
            probe = Probe(spec)
        except (ValueError, OSError) as exc:
            errors.append("probe %d (%s): %s" % (index, spec.get("host"), exc))
            continue
        specs.append(probe)
        labels.append(label or probe.label)
    if errors:
        module.fail_json(msg="invalid probe configuration: %s" % "; ".join(errors))

    results = []
    for probe, label, res in zip(specs, labels, run_probes(specs)):
        res = res or ProbeResult(False, "no result", 0.0)
        results.append(dict(name=label, type=probe.type, host=probe.host, port=probe.port,
                            ok=res.ok, reason=res.reason, rtt=res.rtt))
    all_ok = all(r["ok"] for r in results)
    if params["require_ok"] and not all_ok:
        failed = ["%s: %s" % (r["name"], r["reason"]) for r in results if not r["ok"]]
        module.fail_json(msg="probe failed: %s" % "; ".join(failed), ok=False, results=results)
    module.exit_json(changed=False, ok=all_ok, results=results)


if __name__ == "__main__":
    main()
