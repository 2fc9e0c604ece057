# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The traffic generator's bookkeeping, its CLI's checks, and the judgment of
a run that stopped early (no network here: tests/integration/test_udpgen.py
sends for real)."""

from __future__ import annotations

import ast
import os
import struct

import pytest
import yaml

from ansible_collections.datagram.director.plugins.module_utils import spread, udpgen

from .test_model import REPO

VIP, PORT = "198.51.100.10", 7000


def booked(answers, ports=(41000,), rate=1000.0, stopped_by=None, requested=None):
    """A Run as if ``answers`` (one real-server name or None per datagram)
    had come back, one datagram every 1/rate s."""
    run = udpgen.Run(VIP, PORT, requested or len(answers), list(ports), True)
    run.rate = rate
    run.sent_at = [run.start + i / rate for i in range(len(answers))]
    run.got = dict((i, name) for i, name in enumerate(answers) if name)
    run.stopped_by = stopped_by
    return run


def test_the_generator_needs_nothing_but_the_standard_library():
    """Script use on any python3: no ansible (or other non-stdlib) import."""
    with open(os.path.join(REPO, "plugins", "module_utils", "udpgen.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add((node.module or "").split(".")[0])
    assert names <= {"__future__", "argparse", "errno", "json", "os", "selectors", "signal", "socket",
                     "struct", "sys", "time"}, names


def test_a_reply_is_booked_by_run_id_and_sequence():
    run = booked([None] * 5)
    run.got = {}
    reply = b"rs2 " + run.run_id + struct.pack("!Q", 3) + udpgen.PAD
    run.take(reply, (VIP, PORT), True)
    run.take(reply, (VIP, PORT), True)                                      # the same again
    run.take(b"rs1 " + b"XXXX" + struct.pack("!Q", 1) + udpgen.PAD, (VIP, PORT), True)  # another run's
    run.take(b"rs3 " + run.run_id + struct.pack("!Q", 4) + udpgen.PAD, ("203.0.113.23", 7000), False)
    assert run.got == {3: "rs2"}
    assert run.duplicates == 1
    assert run.stray == {4: "rs3"} and run.stray_sources == {"203.0.113.23:7000": 1}
    summary = udpgen.summary(run)
    assert summary["reply_sources"] == {"198.51.100.10:7000": 1, "203.0.113.23:7000": 1}
    assert summary["stray_per_server"] == {"rs3": 1}


def test_the_stop_datagram_ends_the_run_and_owes_nothing_after_it():
    run = booked(["rs1", "rs2", None, "rs1"], requested=1000)
    run.take(udpgen.STOP, ("198.51.100.11", 40000), False)
    summary = udpgen.summary(run)
    assert summary["stopped_by"] == "datagram from 198.51.100.11"
    assert (summary["requested"], summary["sent"], summary["received"], summary["lost"]) == (1000, 4, 3, 1)
    assert summary["stray_replies"] == 0


def test_a_run_that_ended_by_itself_owes_the_requested_count():
    run = booked(["rs1"] * 32, requested=3000)
    run.aborted = "no reply within 1.0 s of the first datagram"
    assert udpgen.summary(run)["lost"] == 3000 - 32


def test_trace_slices_by_sequence_and_finds_pinned_ports_and_gaps():
    # two ports at 100/s; port 41001 answered by rs1 for its first 60
    # datagrams; port 41000 (rs2, rs3) unanswered for 35 (0.7 s)
    answers = []
    for i in range(200):
        if i % 2:
            answers.append("rs1" if i < 120 else ("rs2", "rs3")[i // 2 % 2])
        else:
            answers.append(None if 20 <= i < 90 else ("rs2", "rs3")[i // 2 % 2])
    run = booked(answers, ports=(41000, 41001), rate=100.0)
    out = udpgen.trace(run)
    assert len(out["trace"]) == 200 and out["trace"][20:90:2] == "." * 35
    assert out["trace_keys"] == {"rs1": "A", "rs2": "B", "rs3": "C"}
    assert out["long_run_threshold"] == 250      # 5 s of one port's datagrams at 100/s over 2 ports
    assert out["long_runs"] == [] and out["pinned_datagrams"] == 0
    assert out["per_port"]["41001"]["longest_run"] == 60
    assert out["loss_runs"] == [{"port": 41000, "first_seq": 20, "at_s": 0.2, "datagrams": 35}]
    assert len(out["lost_at_s"]) == 35
    assert out["gaps_by_server"] == {"rs2": [{"last_before_s": 0.16, "first_after_s": 0.92}],
                                     "rs3": [{"last_before_s": 0.18, "first_after_s": 0.9}]}
    assert out["last_seq_by_server"]["rs1"] == 119
    assert out["answered_after_last_by_server"]["rs1"] == 80


def test_a_long_run_on_one_port_is_reported_pinned():
    run = booked(["rs1"] * 300, rate=40.0)                # threshold max(20, 5 x 40) = 200
    out = udpgen.trace(run)
    assert out["long_runs"] == [{"port": 41000, "real_server": "rs1", "first_seq": 0, "datagrams": 300}]
    assert out["pinned_datagrams"] == 300


@pytest.mark.parametrize("kwargs, message", [
    (dict(count=0), "at least 1"),
    (dict(expect_reply=False), "needs a rate"),
    (dict(ports=3), "first source port"),
])
def test_bad_arguments_fail_before_a_socket_is_opened(kwargs, message):
    args = dict(vip=VIP, port=PORT, count=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        udpgen.generate(**args)


def test_cli_rejects_bad_ports(capsys):
    with pytest.raises(SystemExit):
        udpgen.main([VIP, "70000"])
    assert "port must be" in capsys.readouterr().err


def test_cli_no_reply_without_rate_is_an_error(capsys):
    assert udpgen.main([VIP, "7000", "--no-reply"]) == 2
    assert "needs a rate" in capsys.readouterr().err


# --- the judgment of a run that stopped early ------------------------------

def test_an_aborted_tiny_run_passed_before_and_fails_now():
    """The defect: counters mode stopped after 33 datagrams when nothing
    answered, and 11/11/11 on the counters judged 'ok' against sent=33.
    The negative control is the first assertion (without requested/aborted)."""
    weights = {"203.0.113.21:7000": 1, "203.0.113.22:7000": 1, "203.0.113.23:7000": 1}
    counts = {"203.0.113.21:7000": 11, "203.0.113.22:7000": 11, "203.0.113.23:7000": 11}
    assert spread.judge_spread(counts, weights, 33)["ok"]
    result = spread.judge_spread(counts, weights, 33, requested=3000,
                                 aborted="no reply within 1.0 s of the first datagram")
    assert not result["ok"]
    assert result["failures"] == ["the run stopped early: no reply within 1.0 s of the first datagram",
                                  "33 of 3000 requested datagrams were sent"]


def test_a_complete_one_way_run_passes_on_counters():
    weights = {"203.0.113.21:7000": 2, "203.0.113.22:7000": 1}
    counts = {"203.0.113.21:7000": 2000, "203.0.113.22:7000": 1000}
    result = spread.judge_spread(counts, weights, 3000, reply_sources={"198.51.100.10:7000": 0}, vip=VIP,
                                 port=PORT, requested=3000, aborted=None)
    assert result["ok"], result["failures"]


def test_udp_spread_documents_every_key_the_run_returns():
    """The module returns udpgen.summary(): its RETURN documents each key."""
    with open(os.path.join(REPO, "plugins", "modules", "udp_spread.py"), encoding="utf-8") as f:
        source = f.read()
    documented = yaml.safe_load(source.split('RETURN = r"""', 1)[1].split('"""', 1)[0])
    returned = udpgen.summary(booked(["rs1"], requested=1))
    assert sorted(set(returned) - set(documented)) == []
