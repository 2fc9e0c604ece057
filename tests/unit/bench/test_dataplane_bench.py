# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pure parts of the data-plane benchmark (benchmarks/): ratios, loss,
the lean ruleset, the chart's PNG; and the shipped template rendered as the
bench loads it."""

from __future__ import annotations

import os
import struct
import sys
import zlib

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "..", "benchmarks")
sys.path.insert(0, os.path.abspath(BENCH))
# pylint: disable=wrong-import-position,import-error
import chart  # noqa: E402
import paths  # noqa: E402
import report  # noqa: E402
import stats  # noqa: E402


def test_director_ratio_subtracts_each_baseline():
    # routing: 9000 - 8000 = 1000 ns; the path: 9500 over its own 7500 baseline
    assert stats.director_ratio(9500, 7500, 9000, 8000) == pytest.approx(2.0)
    # the same path judged against the wrong (spread) baseline would read 1.5
    assert stats.director_ratio(9500, 8000, 9000, 8000) == pytest.approx(1.5)


def test_director_ratio_refuses_a_routing_that_cost_nothing():
    with pytest.raises(ValueError, match="no reference"):
        stats.director_ratio(9500, 7500, 8000, 8000)


def test_per_datagram_adds_a_peer_cpu():
    assert stats.per_datagram_ns({"sent": 100, "cpu_ns": 50000}) == 500
    assert stats.per_datagram_ns({"sent": 100, "cpu_ns": 50000, "extra_ns": 150000}) == 2000
    with pytest.raises(ValueError):
        stats.per_datagram_ns({"sent": 0, "cpu_ns": 1})


def test_summary_and_median():
    assert stats.summary([3, 1, 2]) == (2, 1, 3)
    assert stats.median([4, 1, 3, 2]) == 2.5
    assert stats.fmt_range([2.0, 1.0, 3.0]) == "2.00 (1.00-3.00)"
    with pytest.raises(ValueError):
        stats.median([])


def sample(sent, **received):
    return {"sent": sent, "cpu_ns": 1000, "received": received}


def test_problems_names_the_unmeasured_and_the_lossy_path():
    runs = [{"route": sample(96, rs1=32, rs2=32, rs3=32), "nft": sample(96, rs1=32, rs2=31, rs3=32)},
            {"route": sample(96, rs1=32, rs2=32, rs3=32)}]
    assert stats.problems(runs, ["route", "nft"]) == ["run 0: nft lost 1 of 96", "run 1: nft not measured"]
    assert stats.problems(runs[:1], ["route"]) == []
    assert stats.problems([], ["route"]) == ["no run"]


def test_per_packet_is_judged_per_named_real_server():
    assert stats.per_packet({"rs1": 1000, "rs2": 1000, "rs3": 1000}, 3000)
    # per flow: one real server got all of one port's datagrams
    assert not stats.per_packet({"rs1": 0, "rs2": 3000, "rs3": 0}, 3000)
    # same total, one server short: not equal shares
    assert not stats.per_packet({"rs1": 1200, "rs2": 1000, "rs3": 800}, 3000)


def test_lean_ruleset_drops_counters_and_fragment_rules_only():
    shipped = paths.render()
    lean = stats.lean_ruleset(shipped)
    assert "frag-off" in shipped and "counter name" in shipped
    assert "frag-off" not in lean and "counter" not in lean
    # dispatch, rewrite, fwd and the reply rewrite stay
    for kept in ("numgen inc mod 3 vmap", "ip daddr set 203.0.113.21 ",
                 'fwd ip to 203.0.113.21 device "eth1"', "ip saddr set 198.51.100.10 "):
        assert kept in lean


def test_rendered_plan_puts_the_measured_service_last():
    text = paths.render(services=16)
    assert text.count(" goto svc_") == 16
    vmap, = [line.strip() for line in text.splitlines() if "daddr . udp dport vmap" in line]
    assert vmap.endswith("198.51.100.10 . 7000 : goto svc_bench }")


def test_lean_ruleset_loads_without_the_fragment_counters():
    """The fragment rule picks its counter from a map: without_counters
    takes that map out too (a missing counter would fail the load)."""
    text = stats.without_counters(paths.render(services=2))
    assert "fragments_" not in text and "ip frag-off & 0x3fff != 0 drop" in text


def png_pixels(data):
    """(width, height, rows of RGB bytes) of a PNG written by chart.py."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4:idat])[0]
    raw = zlib.decompress(data[idat + 4:idat + 4 + length])
    stride = width * 3 + 1
    return width, height, [raw[y * stride + 1:(y + 1) * stride] for y in range(height)]


def test_chart_bars_end_at_their_median():
    rows = [("route", 1.0, 1.0, 1.0), ("nft", 2.0, 1.8, 2.4), ("nginx", 20.0, 15.0, 30.0)]
    canvas = chart.draw(rows)
    width, height, pixels = png_pixels(canvas.png())
    assert (width, height) == (canvas.width, canvas.height)
    low, high = chart.axis(rows)
    assert (low, high) == (0.5, 50)
    label_w = max(len(r[0]) for r in rows) * 4 * chart.SCALE + 20

    def bar_end(row):
        line = pixels[row]
        return max(x for x in range(width) if line[x * 3:x * 3 + 3] == bytes(chart.BAR)) + 1
    ends = [bar_end(40 + n * 28 + 2) for n in range(1, 3)]
    for end, (name, mid, lo, hi) in zip(ends, rows[1:]):
        assert end == pytest.approx(chart.position(mid, low, high, label_w, 640), abs=1), name
    assert ends[0] < ends[1]


def synthetic_run(size, ports, **ns):
    """One run whose paths cost ``ns`` per datagram (100 sent, all received)."""
    return {"size": size, "ports": ports, "round": 0,
            "samples": dict((name, {"sent": 100, "cpu_ns": cost * 100, "received": {"rs1": 100}})
                            for name, cost in ns.items())}


def test_each_path_subtracts_the_baseline_of_its_own_pattern():
    run = synthetic_run(64, 1, direct_spread=8000, direct_flow=7000, route=9000, nft=9500, dnat=9000)
    by_name = dict((p.name, p) for p in paths.registry(scale=False))
    nft, = [r for s, p, r in report.ratios(by_name["nft"], [run])[0]]
    dnat, = [r for s, p, r in report.ratios(by_name["dnat"], [run])[0]]
    # nft: (9500 - 8000) / (9000 - 8000); dnat (per flow): (9000 - 7000) / 1000
    assert (nft, dnat) == (pytest.approx(1.5), pytest.approx(2.0))
    assert by_name["dnat"].pattern == "flow" and by_name["nft"].pattern == "spread"


def test_paired_compares_each_run_with_dnat_of_the_same_run():
    """nft costs 1.5, 1.0, 2.0 and dnat 2.0, 1.0, 1.2 in the same three runs:
    the differences -0.5, 0, +0.8 (cheaper once, median 0), where the medians
    alone (1.5 against 1.2) would say +0.3; routing rows (not for a VIP) are
    left out."""
    runs = [synthetic_run(64, 1, direct_spread=8000, direct_flow=7000, route=9000, nft=nft, dnat=dnat)
            for nft, dnat in ((9500, 9000), (9000, 8000), (10000, 8200))]
    by_name = dict((p.name, p) for p in paths.registry(scale=False))
    text = report.paired([by_name[n] for n in ("route", "nft", "dnat")], {"runs": runs})
    assert text.splitlines()[2:] == ["| `nft` | +0.00 (-0.50 to +0.80) | 1 of 3 |"]
    assert report.paired([by_name["nft"]], {"runs": runs}) is None


def test_same_port_rewrite_is_added_to_each_real_server_chain_only():
    shipped = paths.render()
    assert "udp dport set" not in shipped
    old = stats.with_same_port_rewrite(shipped, 7000)
    assert old.count("udp dport set 7000 counter name \"fwd_bench_") == 3
    assert old.replace(" udp dport set 7000", "") == shipped
