# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The drill suite's figures (takeover from the new master's own counter,
duplicate VIPs, a killed director's samples ending) and its table."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.datagram.director.plugins.filter.drill_figures import drill_figures
from ansible_collections.datagram.director.plugins.filter.drill_table import drill_table

FAULT = 100.0
ALL = 3  # two VIPs


def lines(points):
    """Samples as the sampler writes them: "TIME MASK FORWARDED"."""
    return ["%.3f %d %d" % point for point in points]


def test_clean_takeover():
    old = lines([(99.9, ALL, 5000), (100.0, ALL, 5020), (100.05, 0, 5020), (100.5, 0, 5020)])
    new = lines([(99.92, 0, 0), (100.02, 0, 0), (100.12, ALL, 0), (100.22, ALL, 0), (100.27, ALL, 18)])
    fig = drill_figures({"d1": old, "d2": new}, FAULT, "d1", "d2", 2)
    assert fig["takeover_s"] == 0.27
    assert fig["vip_takeover_s"] == 0.12
    assert fig["released_s"] == 0.05
    assert fig["back_s"] is None
    assert fig["duplicate_s"] == 0.0
    assert fig["forwarded"] == {"d1": 20, "d2": 18}
    assert fig["forwarded_after"] == {"d1": 0, "d2": 18}
    assert fig["missing"] == ["back_s"]
    assert fig["samples"] == {"d1": 4, "d2": 5}
    assert fig["holding_all"] == {"d1": 2, "d2": 3}
    assert fig["holding_any"] == {"d1": 2, "d2": 3}


def test_counter_that_never_grows_is_missing_not_zero():
    """The negative control of a takeover: the new master's data plane forwards nothing."""
    old = lines([(99.9, ALL, 10), (100.1, 0, 10)])
    new = lines([(99.9, 0, 0), (100.2, ALL, 0), (103.0, ALL, 0)])
    fig = drill_figures({"d1": old, "d2": new}, FAULT, "d1", "d2", 2)
    assert fig["takeover_s"] is None
    assert "takeover_s" in fig["missing"]
    assert fig["forwarded"]["d2"] == 0


def test_growth_before_the_fault_does_not_count():
    new = lines([(99.5, 0, 0), (99.9, 0, 7), (100.3, ALL, 7), (100.4, ALL, 9)])
    old = lines([(99.5, ALL, 0), (100.3, 0, 0)])
    assert drill_figures({"d1": old, "d2": new}, FAULT, "d1", "d2", 2)["takeover_s"] == 0.4


def test_duplicate_while_a_crashed_master_keeps_its_vips():
    old = lines([(100.0 + i / 10.0, ALL if i < 15 else 0, 0) for i in range(30)])
    new = lines([(100.05 + i / 10.0, ALL if i >= 4 else 0, i) for i in range(30)])
    fig = drill_figures({"d1": old, "d2": new}, FAULT, "d1", "d2", 2)
    # d2 holds from 100.45, d1 until its sample at 101.5
    assert fig["duplicate_s"] == pytest.approx(1.05, abs=0.001)
    assert fig["duplicate_windows"] == [[0.45, 1.5]]
    assert fig["released_s"] == 1.5


def test_one_shared_vip_of_two_is_a_duplicate():
    old = lines([(100.0, 1, 0), (100.1, 1, 0), (100.2, 0, 0)])
    new = lines([(100.0, 2, 0), (100.1, 3, 0), (100.2, 3, 0)])
    fig = drill_figures({"d1": old, "d2": new}, FAULT, "d1", "d2", 2)
    assert fig["duplicate_s"] == pytest.approx(0.1)


def test_a_killed_director_holds_nothing_after_its_last_sample():
    old = lines([(99.8, ALL, 0), (99.9, ALL, 0), (100.0, ALL, 0)])  # killed after 100.0
    new = lines([(100.0 + i / 10.0, ALL if i >= 3 else 0, i) for i in range(40)])
    fig = drill_figures({"d1": old, "d2": new}, FAULT, "d1", "d2", 2, stale=0.2)
    # stale 0.2 s: d1 counts as holding until 100.2, d2 holds from 100.3
    assert fig["duplicate_s"] == 0.0
    assert fig["released_s"] is None


def test_failback_back_s():
    old = lines([(100.0, ALL, 0), (100.1, 0, 0), (102.0, 0, 0), (102.1, ALL, 0)])
    new = lines([(100.0, 0, 0), (100.2, ALL, 5)])
    assert drill_figures({"d1": old, "d2": new}, FAULT, "d1", "d2", 2)["back_s"] == 2.1


def test_unreadable_counter():
    old = lines([(100.0, ALL, -1), (100.1, 0, -1)])
    new = lines([(100.0, 0, -1), (100.2, ALL, -1)])
    fig = drill_figures({"d1": old, "d2": new}, FAULT, "d1", "d2", 2)
    assert fig["forwarded"] == {"d1": None, "d2": None}
    assert fig["takeover_s"] is None


@pytest.mark.parametrize("bad", [{"d1": ["1 2"], "d2": []}, {"d1": ["x 1 2"], "d2": []}, {"d2": []}, ["1 1 1"]])
def test_bad_samples(bad):
    with pytest.raises(AnsibleFilterError):
        drill_figures(bad, FAULT, "d1", "d2", 2)


def test_table():
    records = [
        {"scenario": "a clean stop", "load": "200/s 1 port", "sent": 1200, "lost": 0, "lost_s": 0.0,
         "longest_gap_s": 0.0, "takeover_s": 0.12, "forwarded": {"d2": 800, "d1": 400}, "duplicate_s": 0.0, "ok": True},
        {"scenario": "j rogue", "load": "200/s 1 port", "sent": 1000, "lost": 3, "lost_s": 0.015,
         "longest_gap_s": 0.015, "takeover_s": None, "forwarded": {}, "duplicate_s": 0.0, "ok": False},
    ]
    text = drill_table(records).splitlines()
    assert len(text) == 3
    assert text[0].split("  ")[0] == "scenario"
    assert "d1=400 d2=800" in text[1] and text[1].endswith("ok")
    assert text[2].endswith("FAILED")
    assert " - " in text[2]  # no takeover, no forwarded
    # columns line up
    assert text[1].index("200/s") == text[0].index("load") == text[2].index("200/s")


def test_table_refuses_bad_records():
    with pytest.raises(AnsibleFilterError):
        drill_table("not a list")
    with pytest.raises(AnsibleFilterError):
        drill_table([{"load": 1}])


def test_a_director_that_boots_after_the_fault_counts_from_zero():
    """The rejoin of a crashed host: its sampler starts with it, its ruleset from 0."""
    master = lines([(99.9, ALL, 900), (100.5, ALL, 1000), (101.5, 0, 1100), (102.0, 0, 1100)])
    back = lines([(100.8, 0, -1), (101.0, 0, 0), (101.4, ALL, 0), (101.6, ALL, 40)])
    fig = drill_figures({"d2": master, "d1": back}, FAULT, "d2", "d1", 2)
    assert fig["takeover_s"] == 1.6
    assert fig["forwarded_after"] == {"d2": 200, "d1": 40}
