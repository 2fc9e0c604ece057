# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The spread judgment: per NAMED real server, against the inventory's weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap

import pytest

from ansible_collections.datagram.director.plugins.module_utils import spread
from ansible_collections.datagram.director.plugins.module_utils.model import smooth_wrr

VIP, PORT = "198.51.100.10", 7000
NAMES = {"203.0.113.21": "rs1", "203.0.113.22": "rs2", "203.0.113.23": "rs3", "203.0.113.24": "rs4"}


def service(weights, scheduler="wrr", name="echo", vip=VIP, port=PORT, prefix="203.0.113.2"):
    return {"name": name, "vip": vip, "port": port, "scheduler": scheduler,
            "real_servers": [{"address": "%s%d" % (prefix, i + 1), "port": port, "weight": w}
                             for i, w in enumerate(weights)]}


def judge(per_server, weights, sent=3000, sources=None, **kw):
    received = sum(per_server.values())
    if sources is None:
        sources = {"%s:%d" % (VIP, PORT): received}
    return spread.judge_spread(per_server, spread.expected_weights(service(weights), names=NAMES), sent,
                               received=received, reply_sources=sources, vip=VIP, port=PORT, **kw)


def status(drained, name="echo"):
    """The health program's --status --json document, trimmed to what is read."""
    return {"data_plane": "nftables", "services": [{"name": name, "real_servers": [
        {"index": i, "address": "203.0.113.2%d" % (i + 1), "port": PORT, "up": True, "drained": i in drained}
        for i in range(3)]}]}


# --- exact spreads pass ------------------------------------------------------

def test_1_1_1_with_3000_is_exact_and_passes():
    result = judge({"rs1": 1000, "rs2": 1000, "rs3": 1000}, [1, 1, 1])
    assert result["ok"], result["failures"]
    assert result["servers"]["rs2"] == {"weight": 1, "expected": 1000, "observed": 1000, "diff": 0,
                                        "allowed": [1000, 1000]}
    assert (result["sent"], result["received"], result["lost"], result["cycle"]) == (3000, 3000, 0, 3)


def test_2_1_1_1_with_3000_is_exact_and_passes():
    result = judge({"rs1": 1200, "rs2": 600, "rs3": 600, "rs4": 600}, [2, 1, 1, 1])
    assert result["ok"], result["failures"]
    assert [result["servers"][n]["expected"] for n in ("rs1", "rs2", "rs3", "rs4")] == [1200, 600, 600, 600]


def test_off_by_one_on_an_exact_run_fails():
    # 3000 is a whole number of cycles: nothing may differ, not even by one.
    result = judge({"rs1": 1001, "rs2": 999, "rs3": 1000}, [1, 1, 1])
    assert not result["ok"]
    assert "rs1 got 1001 datagrams, expected 1000 (weight 1 of 3), allowed 1000..1000" in result["failures"]


def test_a_run_that_ends_mid_cycle_gets_at_most_one_cycle_share():
    # 3001 at 2:1:1:1: 600 cycles + 1 slot, which may be anyone's.
    assert judge({"rs1": 1201, "rs2": 600, "rs3": 600, "rs4": 600}, [2, 1, 1, 1], sent=3001)["ok"]
    assert judge({"rs1": 1200, "rs2": 600, "rs3": 601, "rs4": 600}, [2, 1, 1, 1], sent=3001)["ok"]
    assert not judge({"rs1": 1199, "rs2": 601, "rs3": 601, "rs4": 600}, [2, 1, 1, 1], sent=3001)["ok"]


@pytest.mark.parametrize("weights", [[1, 1, 1], [2, 1, 1, 1], [3, 1, 2], [5, 0, 2, 1], [4, 2, 2]])
def test_bounds_hold_every_window_of_real_orders(weights):
    """Every run of consecutive slots of the smooth order (nftables) and of
    IPVS wrr's order (heaviest first) lies within slot_bounds()."""
    ipvs_order = []
    for level in range(max(weights), 0, -1):
        ipvs_order += [i for i, w in enumerate(weights) if w >= level]
    for order in (smooth_wrr(weights), ipvs_order):
        cycle = len(order)
        reduced = [order.count(i) for i in range(len(weights))]
        for start in range(cycle):
            for sent in range(0, 3 * cycle + 1):
                slots = [order[(start + k) % cycle] for k in range(sent)]
                for i, w in enumerate(reduced):
                    low, high = spread.slot_bounds(sent, w, cycle)
                    assert low <= slots.count(i) <= high, (order, start, sent, i)


def test_a_lost_datagram_lowers_every_lower_bound_by_one():
    ok = judge({"rs1": 999, "rs2": 1000, "rs3": 1000}, [1, 1, 1], max_lost=1)
    assert ok["ok"], ok["failures"]
    assert ok["servers"]["rs1"]["allowed"] == [999, 1000]
    lost = judge({"rs1": 999, "rs2": 1000, "rs3": 1000}, [1, 1, 1])
    assert lost["failures"] == ["1 of 3000 datagrams were not answered (at most 0 may be)"]


# --- what it rejects -----------------------------------------------------------

def test_per_flow_balancing_fails_naming_every_server():
    result = judge({"rs2": 3000}, [1, 1, 1])
    assert not result["ok"]
    assert result["failures"] == [
        "rs1 (weight 1) is missing: no datagram counted, expected 1000",
        "rs2 got 3000 datagrams, expected 1000 (weight 1 of 3), allowed 1000..1000",
        "rs3 (weight 1) is missing: no datagram counted, expected 1000",
    ]
    assert result["servers"]["rs2"]["diff"] == 2000


def test_weights_on_the_wrong_server_fail():
    # The same sorted counts as 2:1:1:1, but the double share on rs3.
    result = judge({"rs1": 600, "rs2": 600, "rs3": 1200, "rs4": 600}, [2, 1, 1, 1])
    assert not result["ok"]
    assert result["failures"] == [
        "rs1 got 600 datagrams, expected 1200 (weight 2 of 5), allowed 1200..1200",
        "rs3 got 1200 datagrams, expected 600 (weight 1 of 5), allowed 600..600",
    ]


def test_a_missing_server_fails():
    result = judge({"rs1": 1500, "rs2": 1500}, [1, 1, 1])
    assert not result["ok"]
    assert "rs3 (weight 1) is missing: no datagram counted, expected 1000" in result["failures"]


def test_an_unknown_server_fails():
    result = judge({"rs1": 1000, "rs2": 1000, "rs3": 999, "stranger": 1}, [1, 1, 1])
    assert not result["ok"]
    assert "stranger got 1 datagrams but is not a real server of the service in the inventory" in result["failures"]
    assert result["servers"]["stranger"]["weight"] is None


def test_replies_from_a_wrong_source_fail():
    sources = {"198.51.100.10:7000": 2990, "203.0.113.21:7000": 10}
    result = judge({"rs1": 1000, "rs2": 1000, "rs3": 990}, [1, 1, 1], sources=sources, max_lost=10)
    assert not result["ok"]
    assert result["failures"] == ["10 replies not from VIP:port 198.51.100.10:7000: {'203.0.113.21:7000': 10}"]


def test_ipv6_reply_sources_are_compared_normalised():
    svc = service([1, 1], vip="2001:db8:51::10", prefix="2001:db8:113::2")
    weights = spread.expected_weights(svc)
    assert sorted(weights) == ["[2001:db8:113::21]:7000", "[2001:db8:113::22]:7000"]
    counts = dict((k, 1500) for k in weights)
    ok = spread.judge_spread(counts, weights, 3000, reply_sources={"[2001:DB8:51:0::10]:7000": 3000},
                             vip="2001:db8:51::10", port=7000)
    assert ok["ok"], ok["failures"]
    bad = spread.judge_spread(counts, weights, 3000, reply_sources={"[2001:db8:51::10]:7001": 3000},
                              vip="2001:db8:51::10", port=7000)
    assert not bad["ok"]


def test_a_drained_server_expects_zero_and_fails_with_traffic():
    weights = spread.expected_weights(service([1, 1, 1], scheduler="rr"), status({0}), NAMES)
    assert weights == {"rs1": 0, "rs2": 1, "rs3": 1}
    sources = {"%s:%d" % (VIP, PORT): 3000}
    drained = spread.judge_spread({"rs2": 1500, "rs3": 1500}, weights, 3000, 3000, sources, VIP, PORT)
    assert drained["ok"], drained["failures"]
    undrained = spread.judge_spread({"rs1": 1000, "rs2": 1000, "rs3": 1000}, weights, 3000, 3000, sources, VIP, PORT)
    assert not undrained["ok"]
    assert "rs1 has weight 0 (drained, or 0 in the inventory) but got 1000 datagrams" in undrained["failures"]


def test_more_counted_than_sent_fails():
    result = spread.judge_spread({"a": 1001, "b": 1000, "c": 1000}, {"a": 1, "b": 1, "c": 1}, 3000)
    assert "3001 datagrams counted for 3000 sent: other traffic reached the service during the run" \
        in result["failures"]


def test_nothing_sent_or_nothing_weighted_fails():
    assert spread.judge_spread({}, {"a": 1}, 0)["failures"][0] == "no datagram was sent"
    assert spread.judge_spread({}, {"a": 0}, 10)["failures"][0].startswith("no real server with weight > 0")


# --- the expectation comes from the inventory, as the README defines it ---------

def test_expected_weights_from_the_inventory():
    assert spread.expected_weights(service([2, 1, 0], scheduler="wrr")) == {
        "203.0.113.21:7000": 2, "203.0.113.22:7000": 1, "203.0.113.23:7000": 0}
    # rr ignores weights but drains weight 0; weight defaults to 1; scheduler defaults to rr.
    svc = service([5, 0, 3], scheduler="rr")
    del svc["real_servers"][2]["weight"]
    del svc["scheduler"]
    assert spread.expected_weights(svc, names=NAMES) == {"rs1": 1, "rs2": 0, "rs3": 1}


def test_drains_of_another_service_do_not_count():
    assert spread.expected_weights(service([1, 1, 1]), status({0}, name="other")) == {
        "203.0.113.21:7000": 1, "203.0.113.22:7000": 1, "203.0.113.23:7000": 1}


def test_one_host_serving_two_ports_adds_up():
    svc = service([1, 1])
    svc["real_servers"][1]["address"] = "203.0.113.21"
    svc["real_servers"][1]["port"] = 7001
    assert spread.expected_weights(svc, names=NAMES) == {"rs1": 2}


# --- the directors' counters ------------------------------------------------------

# nft 1.0.6, `nft --json list counters table netdev datagram_director` after
# 3000 datagrams through a table shaped like dataplane.nft.j2 (lo ingress).
NFT_AFTER = (
    '{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, '
    '{"counter": {"family": "netdev", "name": "fwd_echo_0", "table": "datagram_director", "handle": 6, '
    '"comment": "echo to 203.0.113.21:7000", "packets": 1000, "bytes": 29000}}, '
    '{"counter": {"family": "netdev", "name": "reply_echo_0", "table": "datagram_director", "handle": 7, '
    '"comment": "echo replies from 203.0.113.21:7000", "packets": 0, "bytes": 0}}, '
    '{"counter": {"family": "netdev", "name": "fwd_echo_1", "table": "datagram_director", "handle": 8, '
    '"comment": "echo to 203.0.113.22:7000", "packets": 1000, "bytes": 29000}}, '
    '{"counter": {"family": "netdev", "name": "reply_echo_1", "table": "datagram_director", "handle": 9, '
    '"comment": "echo replies from 203.0.113.22:7000", "packets": 0, "bytes": 0}}, '
    '{"counter": {"family": "netdev", "name": "fwd_echo_2", "table": "datagram_director", "handle": 10, '
    '"comment": "echo to 203.0.113.23:7000", "packets": 1000, "bytes": 29000}}, '
    '{"counter": {"family": "netdev", "name": "reply_echo_2", "table": "datagram_director", "handle": 11, '
    '"comment": "echo replies from 203.0.113.23:7000", "packets": 0, "bytes": 0}}, '
    '{"counter": {"family": "netdev", "name": "fragments_echo", "table": "datagram_director", "handle": 12, '
    '"comment": "echo: fragmented datagrams, which a stateless rewrite cannot forward", "packets": 0, "bytes": 0}}]}')


def nft_reading(packets):
    doc = json.loads(NFT_AFTER)
    for item in doc["nftables"][1:]:
        name = item["counter"]["name"]
        item["counter"]["packets"] = packets.get(name, 0)
    return json.dumps(doc)


def test_nft_counters_per_endpoint():
    svc = service([1, 1, 1])
    before = spread.nft_service_packets(nft_reading({"fwd_echo_0": 7, "fwd_echo_1": 7, "fwd_echo_2": 6}), svc)
    after = spread.nft_service_packets(NFT_AFTER, svc)
    assert after == {"203.0.113.21:7000": 1000, "203.0.113.22:7000": 1000, "203.0.113.23:7000": 1000}
    delta = spread.counter_delta(before, after)
    assert delta == {"203.0.113.21:7000": 993, "203.0.113.22:7000": 993, "203.0.113.23:7000": 994}
    result = spread.judge_spread(delta, spread.expected_weights(svc), 2980)
    assert result["ok"], result["failures"]


def test_nft_counter_missing_or_reset():
    with pytest.raises(ValueError, match="no counter fwd_echo_3"):
        spread.nft_service_packets(NFT_AFTER, service([1, 1, 1, 1]))
    with pytest.raises(ValueError, match="reset during the run"):
        spread.counter_delta({"a": 10}, {"a": 3})


# Laid out as ipvsadm 1.31 prints `-L -n --stats --exact` (print_title,
# print_service_entry with FMT_STATS and print_largenum with FMT_EXACT).
IPVS_STATS = textwrap.dedent("""\
    IP Virtual Server version 1.2.1 (size=4096)
    Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
      -> RemoteAddress:Port
    UDP  198.51.100.10:53                   40       40        0     2400        0
      -> 203.0.113.31:53                    40       40        0     2400        0
    UDP  198.51.100.10:2055               3000     3000        0   177000        0
      -> 203.0.113.21:2055                1200     1200        0    70800        0
      -> 203.0.113.22:2055                 600      600        0    35400        0
      -> 203.0.113.23:2055                 600      600        0    35400        0
      -> 203.0.113.24:2055                 600      600        0    35400        0
    UDP  [2001:db8:51::10]:514             750      750        0    44250        0
      -> [2001:db8:113::21]:514            375      375        0    22125        0
      -> [2001:db8:113::22]:514            375      375        0    22125        0
    """)


def test_ipvsadm_stats_per_endpoint():
    svc = service([2, 1, 1, 1], port=2055)
    counts = spread.ipvs_service_packets(IPVS_STATS, svc)
    assert counts == {"203.0.113.21:2055": 1200, "203.0.113.22:2055": 600,
                      "203.0.113.23:2055": 600, "203.0.113.24:2055": 600}
    assert spread.judge_spread(counts, spread.expected_weights(svc), 3000)["ok"]
    v6 = service([1, 1], vip="2001:db8:51::10", port=514, prefix="2001:db8:113::2")
    assert spread.ipvs_service_packets(IPVS_STATS, v6) == {"[2001:db8:113::21]:514": 375,
                                                           "[2001:db8:113::22]:514": 375}


def test_ipvsadm_stats_without_exact_are_refused():
    with pytest.raises(ValueError, match="without --exact rounds"):
        spread.ipvs_service_packets(IPVS_STATS.replace("  177000", "    177K").replace("   70800", "     70K"),
                                    service([2, 1, 1, 1], port=2055))


def test_nft_counters_on_the_real_kernel():
    """A table shaped like dataplane.nft.j2 (numgen inc round robin into named
    counters) on lo ingress in a network namespace: 3001 datagrams, read back
    with the same nft --json command verify.yml runs."""
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("nft", "unshare", "ip")):
        pytest.skip("needs root, nftables and unshare")
    ruleset = textwrap.dedent("""\
        table netdev datagram_director {
            counter fwd_echo_0 { comment "echo to 203.0.113.21:7000"; }
            counter fwd_echo_1 { comment "echo to 203.0.113.22:7000"; }
            counter fwd_echo_2 { comment "echo to 203.0.113.23:7000"; }
            chain frontend {
                type filter hook ingress device "lo" priority filter; policy accept;
                ip daddr 127.0.0.1 udp dport 7000 goto svc_echo
            }
            chain svc_echo { numgen inc mod 4 vmap { 0 : goto rs_echo_0, 1 : goto rs_echo_1, 2 : goto rs_echo_0, 3 : goto rs_echo_2 }; }
            chain rs_echo_0 { counter name "fwd_echo_0" accept; }
            chain rs_echo_1 { counter name "fwd_echo_1" accept; }
            chain rs_echo_2 { counter name "fwd_echo_2" accept; }
        }
        """)
    script = ("ip link set lo up && nft -f - && nft --json list counters table netdev datagram_director && "
              "python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
              "[s.sendto(b\"x\", (\"127.0.0.1\", 7000)) for _ in range(3001)]' && echo && "
              "nft --json list counters table netdev datagram_director")
    out = subprocess.run(["unshare", "-n", "sh", "-c", script], input=ruleset, capture_output=True, text=True,
                         check=True).stdout.strip().split("\n")
    svc = service([2, 1, 1])
    readings = [spread.nft_service_packets(text, svc) for text in (out[0], out[-1])]
    delta = spread.counter_delta(*readings)
    assert sum(delta.values()) == 3001
    result = spread.judge_spread(delta, spread.expected_weights(svc), 3001)
    assert result["ok"], result
    assert delta["203.0.113.21:7000"] in (1500, 1501)
    # The same counters against weights on the wrong server.
    swapped = spread.judge_spread(delta, spread.expected_weights(service([1, 2, 1])), 3001)
    assert not swapped["ok"]
