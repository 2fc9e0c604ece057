# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The filters spread_check, spread_weights and spread_counters, called
directly and from a real playbook (FQCN, keyword arguments, YAML types)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.datagram.director.plugins.filter.spread import FilterModule as CheckFilters
from ansible_collections.datagram.director.plugins.filter.spread_counters import FilterModule as CounterFilters
from ansible_collections.datagram.director.plugins.filter.spread_weights import FilterModule as WeightFilters

CHECK = CheckFilters().filters()["spread_check"]
WEIGHTS = WeightFilters().filters()["spread_weights"]
COUNTERS = CounterFilters().filters()["spread_counters"]

NETFLOW = {"name": "netflow", "vip": "198.51.100.10", "port": 2055, "scheduler": "wrr",
           "real_servers": [{"address": "203.0.113.21", "port": 2055, "weight": 2},
                            {"address": "203.0.113.22", "port": 2055},
                            {"address": "203.0.113.23", "port": 2055, "weight": 1},
                            {"address": "203.0.113.24", "port": 2055, "weight": 1}]}


def nft_reading(packets):
    """`nft --json list counters table netdev datagram_director` as nft 1.0.6 prints it."""
    return json.dumps({"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}] + [
        {"counter": {"family": "netdev", "name": "fwd_echo_%d" % i, "table": "datagram_director", "handle": 6 + i,
                     "comment": "echo to 203.0.113.2%d:7000" % (i + 1), "packets": packets.get(i, 0), "bytes": 0}}
        for i in range(3)]})


NFT_AFTER = nft_reading({0: 1000, 1: 1000, 2: 1000})
NAMES = {"203.0.113.21": "rs1", "203.0.113.22": "rs2", "203.0.113.23": "rs3", "203.0.113.24": "rs4"}


def test_check_takes_strings_as_ansible_passes_them():
    weights = WEIGHTS(NETFLOW, None, NAMES)
    assert weights == {"rs1": 2, "rs2": 1, "rs3": 1, "rs4": 1}
    result = CHECK({"rs1": 1200, "rs2": 600, "rs3": 600, "rs4": 600}, weights, "3000", received="3000",
                   reply_sources={"198.51.100.10:2055": 3000}, vip="198.51.100.10", port="2055")
    assert result["ok"], result["failures"]


def test_check_rejects_the_double_share_on_the_wrong_server():
    result = CHECK({"rs1": 600, "rs2": 1200, "rs3": 600, "rs4": 600}, WEIGHTS(NETFLOW, None, NAMES), 3000)
    assert result["failures"] == [
        "rs1 got 600 datagrams, expected 1200 (weight 2 of 5), allowed 1200..1200",
        "rs2 got 1200 datagrams, expected 600 (weight 1 of 5), allowed 600..600"]


def test_check_needs_vip_and_port_for_reply_sources():
    with pytest.raises(AnsibleFilterError, match="needs vip and port"):
        CHECK({"rs1": 1}, {"rs1": 1}, 1, reply_sources={"x:1": 1})


def test_counters_filter_and_its_errors():
    echo = {"name": "echo", "vip": "198.51.100.10", "port": 7000,
            "real_servers": [{"address": "203.0.113.2%d" % i, "port": 7000} for i in (1, 2, 3)]}
    delta = COUNTERS(NFT_AFTER, nft_reading({0: 1}), echo, "nftables")
    assert delta == {"203.0.113.21:7000": 999, "203.0.113.22:7000": 1000, "203.0.113.23:7000": 1000}
    with pytest.raises(AnsibleFilterError, match="reset during the run"):
        COUNTERS(nft_reading({}), NFT_AFTER, echo, "nftables")
    with pytest.raises(AnsibleFilterError, match="data_plane must be nftables or ipvs"):
        COUNTERS(NFT_AFTER, NFT_AFTER, echo, "auto")


PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  vars:
    svc: {svc}
    drained: {{services: [{{name: netflow, real_servers: [{{address: 203.0.113.22, port: 2055, drained: true}}]}}]}}
    names: {names}
  tasks:
    - name: Judge
      ansible.builtin.set_fact:
        good: "{{{{ {{'rs1': 1500, 'rs3': 750, 'rs4': 750}} | datagram.director.spread_check(w, 3000,
                    reply_sources={{'198.51.100.10:2055': 3000}}, vip=svc.vip, port=svc.port) }}}}"
        bad: "{{{{ {{'rs1': 1200, 'rs2': 600, 'rs3': 600, 'rs4': 600}} | datagram.director.spread_check(w, 3000) }}}}"
      vars:
        w: "{{{{ svc | datagram.director.spread_weights(drained, names) }}}}"
    - name: Print
      ansible.builtin.debug:
        msg: "RESULT {{{{ {{'good': good, 'bad': bad}} | to_json }}}}"
"""


@pytest.mark.skipif(shutil.which("ansible-playbook", path=os.path.dirname(sys.executable)) is None,
                    reason="ansible-playbook is not installed next to this python")
def test_filters_from_a_real_playbook(tmp_path, collections_path):
    (tmp_path / "play.yml").write_text(PLAYBOOK.format(svc=json.dumps(NETFLOW), names=json.dumps(NAMES)))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path, ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"), ANSIBLE_HOME=str(tmp_path / "home"),
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    env.pop("ANSIBLE_CONFIG", None)
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), str(tmp_path / "play.yml")],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if "RESULT " in x)
    result = json.loads(json.loads("{%s}" % line.strip())["msg"][len("RESULT "):])
    # rs2 drained: 2:0:1:1, so 1500/0/750/750 is exact.
    assert result["good"]["ok"], result["good"]["failures"]
    assert result["good"]["servers"]["rs2"] == {"weight": 0, "expected": 0, "observed": 0, "diff": 0,
                                                "allowed": [0, 0]}
    assert "rs2 has weight 0 (drained, or 0 in the inventory) but got 600 datagrams" in result["bad"]["failures"]
