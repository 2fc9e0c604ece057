#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: udp_spread
short_description: Send datagrams from one source port to a VIP and count who answers, and from where
version_added: 0.1.0
description:
  - Sends O(count) datagrams to O(vip):O(port) from ONE source port on a connected UDP
    socket, as a real client does, and counts the replies per real server (the lab echo
    answers C(<name> <request>)).
  - A second, unconnected socket bound to the same port (C(SO_REUSEPORT)) receives every
    reply whose source is not VIP:port, so replies from a real server's own address are
    reported in RV(reply_sources) instead of being dropped silently by the connected socket.
  - With O(interval) it sends a paced stream and reports the longest stretch without
    answered datagrams, which is the takeover time a client sees during a failover.
  - With O(expect_reply=false), for one-way services (NetFlow, syslog), it sends exactly
    O(count) datagrams at O(rate) and neither waits for replies nor gives up without them;
    judge such a run from the directors' counters
    (P(datagram.director.spread_counters#filter)).
  - Only sends traffic; changes nothing on the host.
author:
  - datagram.director developers (!UNKNOWN)
attributes:
  check_mode:
    support: full
    description: Sends the datagrams in check mode too; it changes nothing.
  diff_mode:
    support: none
    description: Nothing is changed.
options:
  vip:
    description: The service address (IPv4 or IPv6).
    type: str
    required: true
  port:
    description: The service port.
    type: int
    required: true
  count:
    description: How many datagrams to send.
    type: int
    default: 3000
  interval:
    description:
      - Seconds between datagrams for a paced stream. V(0) sends a burst with at most
        O(window) datagrams in flight (or paces at O(rate)).
    type: float
    default: 0
  rate:
    description:
      - Datagrams per second for a paced stream (the same as O(interval) = 1 / O(rate));
        O(interval) wins when both are set. Needed with O(expect_reply=false).
    type: float
    default: 0
    version_added: 0.2.0
  expect_reply:
    description:
      - V(true) for a service that answers. The run gives up when nothing at all answers
        within O(timeout) of the first datagram (RV(aborted)).
      - V(false) for a one-way service. Exactly O(count) datagrams at O(rate) (or
        O(interval)), no window, never aborted for lack of replies.
    type: bool
    default: true
    version_added: 0.2.0
  window:
    description: Datagrams in flight at most in a burst.
    type: int
    default: 32
  timeout:
    description: Seconds after which an unanswered datagram counts as lost.
    type: float
    default: 1.0
  source_port:
    description: The one source port; V(0) takes an ephemeral port.
    type: int
    default: 0
  max_seconds:
    description: Upper bound of the whole run, whatever happens.
    type: float
    default: 120
notes:
  - The logic lives in C(plugins/module_utils/udpgen.py), the project's one traffic generator,
    which also runs as a standalone script on any python3 (C(python3 udpgen.py --help)).
"""

EXAMPLES = r"""
- name: 3000 datagrams from one source port
  datagram.director.udp_spread:
    vip: 198.51.100.10
    port: 7000
    count: 3000
  register: spread

- name: A paced stream for a failover drill (5 ms apart, 10 s)
  datagram.director.udp_spread:
    vip: 198.51.100.10
    port: 7000
    count: 2000
    interval: 0.005
  async: 60
  poll: 0

- name: A one-way service (NetFlow), 3000 datagrams at 1000/s, judged from the directors' counters
  datagram.director.udp_spread:
    vip: 198.51.100.10
    port: 2055
    count: 3000
    rate: 1000
    expect_reply: false
"""

RETURN = r"""
requested:
  description: O(count).
  returned: always
  type: int
  sample: 3000
aborted:
  description: Why the run gave up early (no reply at all within O(timeout) when O(expect_reply)), or null.
  returned: always
  type: str
  sample: null
sent:
  description: Datagrams sent.
  returned: always
  type: int
  sample: 3000
received:
  description: Replies from VIP:port matched to a datagram of this run.
  returned: always
  type: int
  sample: 3000
lost:
  description:
    - RV(requested) minus RV(received) (with O(expect_reply=false) every datagram the
      one-way service did not answer).
  returned: always
  type: int
  sample: 0
per_server:
  description: Replies per real server name.
  returned: always
  type: dict
  sample: {"dd-rs1": 1000, "dd-rs2": 1000, "dd-rs3": 1000}
reply_sources:
  description: Replies per source address and port; anything but VIP:port is a de-NAT failure.
  returned: always
  type: dict
  sample: {"198.51.100.10:7000": 3000}
stray_replies:
  description: Replies whose source was not VIP:port.
  returned: always
  type: int
  sample: 0
source_port:
  description: The single source port used.
  returned: always
  type: int
  sample: 40112
longest_gap_seconds:
  description: The longest stretch of unanswered datagrams, in seconds of send time.
  returned: always
  type: float
  sample: 0.105
order:
  description: The real server of the first 30 answered datagrams, in order.
  returned: always
  type: list
  elements: str
expect_reply:
  description: O(expect_reply).
  returned: always
  type: bool
  sample: true
  version_added: 0.2.0
stray_per_server:
  description: Replies per real server name whose source was not VIP:port.
  returned: always
  type: dict
  sample: {}
  version_added: 0.2.0
stopped_by:
  description: What ended the run before O(count) (V(max_seconds)), or null.
  returned: always
  type: str
  sample: null
  version_added: 0.2.0
seconds:
  description: Duration of the run.
  returned: always
  type: float
  sample: 3.2
vip:
  description: O(vip) as given.
  returned: always
  type: str
  sample: 198.51.100.10
  version_added: 0.2.0
port:
  description: O(port).
  returned: always
  type: int
  sample: 7000
  version_added: 0.2.0
source_ports:
  description: The client source ports used (one for this module).
  returned: always
  type: list
  elements: int
  sample: [39464]
  version_added: 0.2.0
duplicates:
  description: Replies received more than once for the same datagram.
  returned: always
  type: int
  sample: 0
  version_added: 0.2.0
refused:
  description: ICMP port unreachable errors seen on the socket (nothing listened).
  returned: always
  type: int
  sample: 0
  version_added: 0.2.0
send_errors:
  description: Datagrams the kernel did not take after a retry (send buffer full, or an error).
  returned: always
  type: int
  sample: 0
  version_added: 0.2.0
start_epoch:
  description: When the run started, seconds since the epoch.
  returned: always
  type: float
  sample: 1764554400.123
  version_added: 0.2.0
stopped_at_s:
  description: Seconds from the start to the stop that ended the run early, or null.
  returned: always
  type: float
  sample: null
  version_added: 0.2.0
longest_gap_between:
  description: The sequence numbers of the answered datagrams around the longest gap (-1 is the start, RV(sent) the end), or null.
  returned: always
  type: list
  elements: int
  sample: [1200, 1261]
  version_added: 0.2.0
first_answered_seq:
  description: Sequence number of the first datagram answered, or null.
  returned: always
  type: int
  sample: 0
  version_added: 0.2.0
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.datagram.director.plugins.module_utils.udpgen import run


def main():
    module = AnsibleModule(
        argument_spec=dict(
            vip=dict(type="str", required=True),
            port=dict(type="int", required=True),
            count=dict(type="int", default=3000),
            interval=dict(type="float", default=0.0),
            window=dict(type="int", default=32),
            timeout=dict(type="float", default=1.0),
            source_port=dict(type="int", default=0),
            max_seconds=dict(type="float", default=120.0),
            rate=dict(type="float", default=0.0),
            expect_reply=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if not 1 <= p["port"] <= 65535 or not 0 <= p["source_port"] <= 65535:
        module.fail_json(msg="port and source_port must be from 1 (0 for source_port) to 65535")
    if p["count"] < 1 or p["window"] < 1:
        module.fail_json(msg="count and window must be at least 1")
    if not p["expect_reply"] and p["rate"] <= 0 and p["interval"] <= 0:
        module.fail_json(msg="expect_reply=false needs rate or interval: without replies nothing paces the run")
    try:
        result = run(p["vip"], p["port"], p["count"], interval=p["interval"], window=p["window"],
                     timeout=p["timeout"], source_port=p["source_port"], max_seconds=p["max_seconds"],
                     expect_reply=p["expect_reply"], rate=p["rate"])
    except OSError as exc:
        module.fail_json(msg="cannot send to %s:%s: %s" % (p["vip"], p["port"], exc))
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
