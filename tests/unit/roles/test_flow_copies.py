# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Template copies (flow_templates) and mirrors: the model's checks, the
nftables rules they add (and nothing when they are off), the health
program's refill of the same rules."""

from __future__ import annotations

import copy
import difflib
import subprocess

import pytest

from ansible_collections.datagram.director.plugins.module_utils import health_apply as ha
from ansible_collections.datagram.director.plugins.module_utils.model import ModelError, build_plan

from ..plugins.module_utils.test_model import load_model
from .test_templates import nft_check, render, stateful_rules, table_rules
from .test_templates import netns  # pylint: disable=unused-import

TABLE = "datagram_director"


def lab(**options):
    """The lab model on the nftables plane, ``options`` set on its IPv4 service."""
    model = load_model("lab")
    model["data_plane"] = "nftables"
    model["services"][0].update(options)
    return model


def ruleset(model):
    return render("nftables", "dataplane.nft.j2", build_plan(model), "nftables", "dd-director1")


def test_off_by_default():
    svc = build_plan(lab())["services"][0]
    assert (svc["flow_templates"], svc["template_match"], svc["mirrors"]) == (None, None, [])
    assert build_plan(lab())["copies"] == []


def test_off_renders_the_same_ruleset():
    """flow_templates none and no mirrors: the same bytes as without the keys."""
    assert ruleset(lab(flow_templates="none", mirrors=[])) == ruleset(lab())
    for word in ("tmpl_", "mirror_", "chain copies", "dup to", "@th"):
        assert word not in ruleset(lab())


@pytest.mark.parametrize("options", [{"flow_templates": "netflow_v9"}, {"flow_templates": "ipfix"},
                                     {"mirrors": [{"address": "203.0.113.30"}]}])
def test_on_only_adds_lines(options):
    """Turning an option on inserts lines; no line of the plain ruleset
    changes, but for mirrors: a mirror's copy rewrites the datagram's port
    first, so the real servers' chains of that service set theirs back."""
    plain, rich = ruleset(lab()).splitlines(), ruleset(lab(**options)).splitlines()
    ops = difflib.SequenceMatcher(a=plain, b=rich, autojunk=False).get_opcodes()
    replaced = [(plain[i1:i2], rich[j1:j2]) for op, i1, i2, j1, j2 in ops if op == "replace"]
    assert set(op[0] for op in ops) - {"replace"} == {"equal", "insert"}
    restored = [(a.replace(" counter", " udp dport set 7000 counter"), b) for old, new in replaced
                for a, b in zip(old, new)]
    name = lab()["services"][0]["name"]
    expected = len(lab()["services"][0]["real_servers"]) if "mirrors" in options else 0
    assert all('counter name "fwd_%s_' % name in b for a, b in restored)
    assert sum(len(old) for old, new in replaced) == sum(len(new) for old, new in replaced) == expected
    assert all(a == b for a, b in restored)


BAD = {
    "unknown protocol": ({"flow_templates": "sflow"},
                         "director_services[0].flow_templates: got 'sflow', expected one of none, netflow_v9, ipfix"),
    "mirrors not a list": ({"mirrors": "203.0.113.30"}, "director_services[0].mirrors: got '203.0.113.30'"),
    "mirror off link": ({"mirrors": [{"address": "198.18.0.1"}]},
                        "director_services[0].mirrors[0].address: got '198.18.0.1', expected an address on a frontend"),
    "mirror is the VIP": ({"mirrors": [{"address": "198.51.100.10"}]}, "not a VIP or a director's own address"),
    "mirror other family": ({"mirrors": [{"address": "2001:db8:113::30"}]}, "expected an IPv4 address"),
    "mirror twice": ({"mirrors": [{"address": "203.0.113.30"}, {"address": "203.0.113.30", "port": 7000}]},
                     "each mirror listed once per service"),
    "mirror port": ({"mirrors": [{"address": "203.0.113.30", "port": 0}]}, "from 1 to 65535"),
    "mirror is a real server": ({"mirrors": [{"address": "203.0.113.21"}]},
                                "director_services[0].mirrors[0]: got '203.0.113.21:7000', expected a receiver that "
                                "is not a real server (it is one of director_services[0]"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_options_are_refused(case):
    options, message = BAD[case]
    with pytest.raises(ModelError) as err:
        build_plan(lab(**options))
    assert message in str(err.value)


@pytest.mark.parametrize("data_plane", ["auto", "ipvs"])
def test_only_the_nftables_plane(data_plane):
    model = lab(flow_templates="ipfix")
    model["data_plane"] = data_plane
    with pytest.raises(ModelError) as err:
        build_plan(model)
    assert "director_data_plane nftables for template copies and mirrors" in str(err.value)


def test_rules_of_a_flow_service():
    model = lab(flow_templates="netflow_v9", mirrors=[{"address": "203.0.113.30", "port": 9995},
                                                      {"address": "198.51.100.50"}])
    model["services"][1]["flow_templates"] = "ipfix"
    rules = table_rules(ruleset(model), "netdev", TABLE)
    assert "@th,64,16 9 @th,224,16 { 0, 1 } goto tmpl_echo" in rules
    assert "@th,64,16 10 @th,192,16 { 2, 3 } goto tmpl_echo6" in rules
    assert 'ip daddr set 203.0.113.30 udp dport set 9995 counter name "mirror_echo_0" dup to "lo"' in rules
    assert 'ip daddr set 198.51.100.50 udp dport set 7000 counter name "mirror_echo_1" dup to "lo"' in rules
    assert sum(r.endswith('dup to "lo"') and r.startswith("ip daddr set 203.0.113.2") for r in rules) == 3
    assert sum(r.endswith('dup to "lo"') and r.startswith("ip6 daddr set 2001:db8:113::2") for r in rules) == 3
    # every receiver once on the loopback device, forwarded on its own side
    assert 'ip daddr 198.51.100.50 udp dport 7000 fwd ip to 198.51.100.50 device "front"' in rules
    assert 'ip daddr 203.0.113.30 udp dport 9995 fwd ip to 203.0.113.30 device "back"' in rules
    assert sum(" fwd ip6 to 2001:db8:113::2" in r and r.startswith("ip6 daddr 2001") for r in rules) == 3
    assert sum('hook ingress device "lo"' in r for r in rules) == 1
    assert stateful_rules(ruleset(model)) == []


def test_weight_zero_gets_no_template_copy():
    model = lab(flow_templates="ipfix")
    model["services"][0]["real_servers"][1]["weight"] = 0
    rules = table_rules(ruleset(model), "netdev", TABLE)
    assert not any(r.startswith("ip daddr set 203.0.113.22") and "dup" in r for r in rules)
    assert 'ip daddr 203.0.113.22 udp dport 7000 fwd ip to 203.0.113.22 device "back"' in rules


def test_nft_check_accepts_the_rules(netns):  # pylint: disable=redefined-outer-name
    model = lab(flow_templates="netflow_v9", mirrors=[{"address": "203.0.113.30"}])
    model["services"][1]["flow_templates"] = "ipfix"
    res = nft_check(netns, ruleset(model), {"front", "back"})
    assert res.returncode == 0, res.stderr


def _chain(ruleset_text, name):
    """The rules of one chain of the netdev table."""
    rules = table_rules(ruleset_text, "netdev", TABLE)
    start = rules.index("chain %s {" % name)
    return rules[start + 1:rules.index("}", start)]


def test_health_refill_is_the_rendered_chains():
    """All up, the health program writes the rules the template rendered; a
    real server down loses its template copy, the others keep theirs."""
    model = lab(flow_templates="netflow_v9", mirrors=[{"address": "203.0.113.30"}])
    text = ruleset(model)
    svc = build_plan(model)["services"][0]
    script = ha.nft_dispatch(TABLE, svc, [1, 1, 1]).splitlines()
    svc_rules = [line.split(" svc_echo ", 1)[1] for line in script if line.startswith("add rule netdev %s svc_echo " % TABLE)]
    tmpl_rules = [line.split(" tmpl_echo ", 1)[1] for line in script if line.startswith("add rule netdev %s tmpl_echo " % TABLE)]
    assert svc_rules[:2] == _chain(text, "svc_echo")[:2]
    assert svc_rules[2].startswith(_chain(text, "svc_echo")[2])  # + the health program's comment
    assert tmpl_rules == _chain(text, "tmpl_echo")
    down = ha.nft_dispatch(TABLE, svc, [1, 0, 1])
    assert "flush chain netdev %s tmpl_echo" % TABLE in down
    assert "203.0.113.21 udp dport set 7000 dup" in down and "203.0.113.23 udp dport set 7000 dup" in down
    assert "203.0.113.22 udp dport set 7000 dup" not in down


def test_health_refill_of_a_plain_service_is_unchanged():
    svc = build_plan(lab())["services"][0]
    lines = ha.nft_dispatch(TABLE, svc, [1, 1, 1]).splitlines()
    assert len(lines) == 2 and lines[0] == "flush chain netdev %s svc_echo" % TABLE


def test_plan_copies_are_unique():
    """One forward rule per receiver: a mirror of two services is one copy target."""
    model = lab(flow_templates="ipfix", mirrors=[{"address": "203.0.113.30"}])
    model["services"].append({"name": "echo2", "vip": "198.51.100.10", "port": 7001,
                              "real_servers": [{"address": "203.0.113.21"}],
                              "mirrors": [{"address": "203.0.113.30", "port": 7000}]})
    copies = build_plan(copy.deepcopy(model))["copies"]
    assert [c["address"] for c in copies] == ["203.0.113.21", "203.0.113.22", "203.0.113.23", "203.0.113.30"]


def test_health_refill_applies_with_nft(netns):  # pylint: disable=redefined-outer-name
    """The refill is a transaction real nft takes on the rendered ruleset; the
    real server with weight 0 loses its template copy."""
    model = lab(flow_templates="ipfix", mirrors=[{"address": "203.0.113.30"}])
    res = nft_check(netns, ruleset(model), {"front", "back"})
    assert res.returncode == 0, res.stderr
    subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=ruleset(model), text=True, check=True)
    svc = build_plan(model)["services"][0]
    subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=ha.nft_dispatch(TABLE, svc, [1, 0, 1]),
                   text=True, check=True)

    def listing(chain):
        return subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "chain", "netdev", TABLE, chain],
                              capture_output=True, text=True, check=True).stdout
    tmpl = listing("tmpl_echo")
    assert tmpl.count('dup to "lo"') == 2 and "203.0.113.22" not in tmpl
    head = listing("svc_echo")
    assert "jump mirror_echo" in head and "goto tmpl_echo" in head and "numgen inc mod 2" in head
