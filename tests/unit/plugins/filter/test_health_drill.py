# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The health drill's figures from samples of the victim's counter: a missing
observation is reported as missing, never as a perfect figure."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.datagram.director.plugins.filter.health_drill import FilterModule, health_drill

STOP = 100.0
START = 106.0


def series(points):
    """Lines as the drill's sampler prints them: "TIME COUNT"."""
    return ["%.3f %d" % point for point in points]


# 40 datagrams/s to the victim; it is out of the pool 1.8 s after the stop and
# gets datagrams again 2.1 s after the start.
DRILL = series([(99.0, 500), (99.95, 538), (100.5, 560), (101.8, 612), (102.2, 612),
                (105.9, 612), (108.1, 612), (108.15, 614), (109.0, 650)])


def test_a_complete_drill():
    assert health_drill(DRILL, STOP, START) == {
        "at_stop": 538, "at_start": 612, "detection_s": 1.8, "lost_to_dead_server": 74,
        "recovery_s": 2.15, "missing": []}


def test_pairs_and_numbers_as_strings():
    pairs = [line.split() for line in DRILL]
    assert health_drill(pairs, str(STOP), str(START)) == health_drill(DRILL, STOP, START)


def test_no_growth_after_the_stop_is_missing_not_zero():
    """The bug this filter replaces: no increase seen gave detection 0 s."""
    flat = series([(99.0, 500), (99.95, 538), (100.5, 538), (105.9, 538), (108.1, 538)])
    result = health_drill(flat, STOP, START)
    assert result["detection_s"] is None and result["recovery_s"] is None
    assert result["missing"] == ["detection_s", "recovery_s"]
    assert result["lost_to_dead_server"] == 0


def test_no_sample_before_the_stop():
    result = health_drill(series([(100.5, 10), (101.0, 12), (107.0, 12), (107.5, 15)]), STOP, START)
    assert result["at_stop"] is None and result["lost_to_dead_server"] is None
    assert result["missing"] == ["at_stop", "lost_to_dead_server"]


def test_no_samples_at_all():
    assert health_drill([], STOP, START)["missing"] == [
        "at_stop", "at_start", "detection_s", "lost_to_dead_server", "recovery_s"]


def test_growth_in_the_first_sample_after_the_stop_counts():
    """The comparison is with the sample before, even across the stop."""
    result = health_drill(series([(99.9, 5), (100.05, 6), (107.0, 6), (107.1, 7)]), STOP, START)
    assert result["detection_s"] == 0.05 and result["lost_to_dead_server"] == 1


@pytest.mark.parametrize("bad", [["1.0"], ["x 3"], [None], [[1.0]]])
def test_a_bad_sample_is_an_error(bad):
    with pytest.raises(AnsibleFilterError, match="TIME COUNT"):
        health_drill(bad, STOP, START)


def test_start_must_follow_stop():
    with pytest.raises(AnsibleFilterError, match="later than stop"):
        health_drill(DRILL, START, STOP)


def test_registered_by_its_name():
    assert FilterModule().filters()["health_drill"] is health_drill
