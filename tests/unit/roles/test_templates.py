# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Templates rendered from the sample inventories, then checked by the real
tools: `keepalived --config-test` and `nft --check` (in a network namespace
with the interfaces the ruleset binds to)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid

import jinja2
import pytest
import yaml

from ansible_collections.datagram.director.plugins.module_utils.model import build_plan

from ..plugins.module_utils.test_model import REPO, load_model

ROLES = os.path.join(REPO, "roles")


def render(role, template, plan, data_plane, host):
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.path.join(ROLES, role, "templates")),
        trim_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    with open(os.path.join(ROLES, role, "defaults", "main.yml")) as f:
        context = yaml.safe_load(f)
    context.update(__director_plan=plan, __director_data_plane=data_plane, inventory_hostname=host,
                   ansible_managed="Ansible managed (test)")
    return env.get_template(template).render(**context)


INVENTORIES = ["lab", "example"]

# Statements and expressions that need or create connection state: none
# belongs in the stateless netdev data plane.
STATEFUL = re.compile(r"\b(ct|notrack|conntrack|snat|dnat|masquerade|redirect|tproxy|synproxy|flow)\b")


def nft_table_name():
    with open(os.path.join(ROLES, "nftables", "defaults", "main.yml")) as f:
        return yaml.safe_load(f)["nftables_table"]


def table_rules(ruleset, family, name):
    """The statement lines inside ``table FAMILY NAME { ... }`` without comments
    (``# ...`` and ``comment "..."``); the bodiless ``table``/``delete table``
    lines before it are not the table."""
    start = re.search(r"^table %s %s \{$" % (family, re.escape(name)), ruleset, re.M)
    assert start, "no table %s %s in the ruleset" % (family, name)
    depth, end = 1, start.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(ruleset[end], 0)
        end += 1
    body = re.sub(r'comment "[^"]*"', "", ruleset[start.end():end - 1])
    return [line.split("#", 1)[0].strip() for line in body.splitlines() if line.split("#", 1)[0].strip()]


def stateful_rules(ruleset):
    """The rules of the nftables data plane's netdev table that use connection state."""
    return [rule for rule in table_rules(ruleset, "netdev", nft_table_name()) if STATEFUL.search(rule)]


@pytest.mark.parametrize("inventory", INVENTORIES)
@pytest.mark.parametrize("data_plane", ["ipvs", "nftables"])
def test_keepalived_config(tmp_path, netns, inventory, data_plane):
    plan = build_plan(load_model(inventory))
    host = sorted(plan["directors"])[0]
    conf = render("vrrp", "keepalived.conf.j2", plan, data_plane, host)
    assert "vrrp_version 3" in conf and "enable_script_security" in conf
    assert "unicast_peer" in conf and plan["directors"][host]["instances"][0]["unicast_peer"] in conf
    vs = render("ipvs", "virtual_servers.conf.j2", plan, data_plane, host)
    assert vs.count("    ops\n") == len(plan["services"])
    directives = "\n".join(line for line in vs.splitlines() if not line.lstrip().startswith("#"))
    assert "quorum_up" not in directives and "persistence_timeout" not in directives
    if shutil.which("keepalived") is None:
        pytest.skip("keepalived is not installed (apt-get install keepalived)")
    # keepalived -t also checks that the interfaces exist: give it them.
    add_veths(netns, {plan["frontend"]["interface"], plan["backend"]["interface"]})
    (tmp_path / "keepalived.conf").write_text(conf.replace("/etc/keepalived/conf.d", str(tmp_path / "conf.d")))
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "virtual_servers.conf").write_text(vs)
    for path in (tmp_path / "keepalived.conf", tmp_path / "conf.d" / "virtual_servers.conf"):
        res = subprocess.run(["ip", "netns", "exec", netns, "keepalived", "--config-test", "--use-file", str(path)],
                             capture_output=True, text=True, check=False)
        assert res.returncode == 0, res.stdout + res.stderr


def test_keepalived_rejects_unknown_keyword(tmp_path):
    """The validate: step works: a bad keyword fails the check (keepalived -t exits 5)."""
    if shutil.which("keepalived") is None:
        pytest.skip("keepalived is not installed (apt-get install keepalived)")
    (tmp_path / "bad.conf").write_text("vrrp_instance x {\n    interface front\n    no_such_keyword 1\n}\n")
    res = subprocess.run(["keepalived", "--config-test", "--use-file", str(tmp_path / "bad.conf")],
                         capture_output=True, text=True, check=False)
    assert res.returncode != 0


@pytest.fixture
def netns():
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nft") is None:
        pytest.skip("nft --check needs root, iproute2 and nftables in a network namespace")
    name = "ddt-%s" % uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def add_veths(netns, ifaces):
    for iface in ifaces:
        subprocess.run(["ip", "-n", netns, "link", "add", iface, "type", "veth", "peer", "name", iface + "p"],
                       check=True)


def nft_check(netns, ruleset, ifaces):
    add_veths(netns, ifaces)
    return subprocess.run(["ip", "netns", "exec", netns, "nft", "--check", "--file", "-"],
                          input=ruleset, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("inventory", INVENTORIES)
@pytest.mark.parametrize("data_plane", ["ipvs", "nftables"])
def test_nft_ruleset(netns, inventory, data_plane):
    plan = build_plan(load_model(inventory))
    ruleset = render("nftables", "dataplane.nft.j2", plan, data_plane, sorted(plan["directors"])[0])
    if data_plane == "nftables":
        rules = table_rules(ruleset, "netdev", nft_table_name())
        # the rules inspected are the data plane's: dispatch, rewrite and fwd of every service
        for svc in plan["services"]:
            assert sum(r.startswith("numgen inc mod %d vmap" % len(svc["sequence"]))
                       and "goto rs_%s_" % svc["name"] in r for r in rules) == 1
            assert sum(" fwd " in r and "fwd_%s_" % svc["name"] in r for r in rules) == len(svc["real_servers"])
        assert sum("hook ingress" in r for r in rules) == 2
        assert stateful_rules(ruleset) == []
    else:
        assert "notrack" in ruleset and "hook ingress" not in ruleset
    res = nft_check(netns, ruleset, {plan["frontend"]["interface"], plan["backend"]["interface"]})
    assert res.returncode == 0, res.stderr + ruleset


def chain_rules(ruleset, name):
    """The rules of ``chain NAME { ... }`` (hook line included), comments dropped."""
    lines = ruleset[ruleset.index("    chain %s {\n" % name):].splitlines()[1:]
    body = [re.sub(r'comment "[^"]*"', "", line.split("#", 1)[0]).strip() for line in lines[:lines.index("    }")]]
    return [line for line in body if line]


def map_elements(rule):
    """The elements of the one anonymous map or verdict map in ``rule``."""
    return [e.strip() for e in rule[rule.index("{") + 1:rule.rindex("}")].split(",")]


def scaled_lab_plan(services):
    """The lab's plan with its IPv4 service repeated ``services`` times (own
    port, own real-server ports), the IPv6 one kept."""
    model = load_model("lab")
    v4, v6 = model["services"]
    model["services"] = [dict(v4, name="svc%d" % k, port=7000 + k,
                              real_servers=[dict(rs, port=7000 + k) for rs in v4["real_servers"]])
                         for k in range(services)] + [v6]
    return build_plan(model)


FAMILY = {4: "ip", 6: "ip6"}


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_frontend_dispatches_every_service_through_one_map(inventory):
    """Per family: one fragment rule and one daddr . dport verdict map with an
    element per service of the inventory; no rule of its own for any service."""
    plan = build_plan(load_model(inventory))
    ruleset = render("nftables", "dataplane.nft.j2", plan, "nftables", sorted(plan["directors"])[0])
    rules = chain_rules(ruleset, "frontend")
    assert rules[1] == "meta pkttype != host accept"
    families = sorted(set(svc["family"] for svc in plan["services"]))
    assert len(rules) == 2 + 2 * len(families), rules
    for family in families:
        svcs = [svc for svc in plan["services"] if svc["family"] == family]
        vmap, = [r for r in rules if r.startswith("%s daddr . udp dport vmap" % FAMILY[family])]
        assert sorted(map_elements(vmap)) == sorted("%s . %d : goto svc_%s" % (svc["vip"], svc["port"], svc["name"])
                                                    for svc in svcs)
        frag, = [r for r in rules if "fragments_" in r and ("%s daddr map" % FAMILY[family]) in r]
        assert frag.endswith(" drop")
        assert sorted(map_elements(frag)) == sorted('%s : "fragments_%s"' % (svc["vip"], svc["name"]) for svc in svcs)


def test_backend_picks_the_real_server_through_one_map():
    """Per family one saddr . sport verdict map, an element per real server
    of the lab inventory; its chain rewrites to VIP:port and counts reply_*."""
    plan = build_plan(load_model("lab"))
    ruleset = render("nftables", "dataplane.nft.j2", plan, "nftables", "dd-director1")
    rules = chain_rules(ruleset, "backend")
    assert len(rules) == 2 + 2, rules  # hook, pkttype, one map per family (lab: IPv4 and IPv6)
    elements = sum((map_elements(r) for r in rules if "saddr . udp sport vmap" in r), [])
    expected = []
    for svc in plan["services"]:
        for i, rs in enumerate(svc["real_servers"]):
            expected.append("%s . %d : goto back_%s_%d" % (rs["address"], rs["port"], svc["name"], i))
            back, = chain_rules(ruleset, "back_%s_%d" % (svc["name"], i))
            assert ('%s saddr set %s counter name "reply_%s_%d"'
                    % (FAMILY[svc["family"]], svc["vip"], svc["name"], i)) in back
    assert sorted(elements) == sorted(expected)


def test_port_is_rewritten_only_when_it_changes():
    """A real server on another port than the service's gets its port set
    on the way in and the service's on the way back; the others keep theirs
    (a rewrite to the same port costs CPU and changes nothing)."""
    model = load_model("lab")
    svc = model["services"][0]
    svc["real_servers"][1] = dict(svc["real_servers"][1], port=7100)
    plan = build_plan(model)
    ruleset = render("nftables", "dataplane.nft.j2", plan, "nftables", "dd-director1")
    for i, rs in enumerate(svc["real_servers"]):
        inbound, = chain_rules(ruleset, "rs_%s_%d" % (svc["name"], i))
        back, = chain_rules(ruleset, "back_%s_%d" % (svc["name"], i))
        moved = rs["port"] != svc["port"]
        assert ("udp dport set %d " % rs["port"] in inbound) == moved, inbound
        assert ("udp sport set %d " % svc["port"] in back) == moved, back
        assert inbound.count(" set ") == 1 + moved and back.count(" set ") == 1 + moved


def test_fragments_of_a_shared_vip_count_under_its_first_service():
    model = load_model("lab")
    v4 = model["services"][0]
    model["services"] = [v4, dict(v4, name="second", port=7001,
                                  real_servers=[dict(rs, port=7001) for rs in v4["real_servers"]])]
    plan = build_plan(model)
    ruleset = render("nftables", "dataplane.nft.j2", plan, "nftables", "dd-director1")
    frag, = [r for r in chain_rules(ruleset, "frontend") if "fragments_" in r]
    assert map_elements(frag) == ['%s : "fragments_echo"' % v4["vip"]]


@pytest.mark.parametrize("chain", ["frontend", "backend"])
def test_hook_chains_do_not_grow_with_the_services(netns, chain):
    """1 and 256 IPv4 services: the same number of rules in the hook chains
    (a rule per service there is evaluated for every datagram); both load."""
    small, large = scaled_lab_plan(1), scaled_lab_plan(256)
    rulesets = [render("nftables", "dataplane.nft.j2", p, "nftables", "dd-director1") for p in (small, large)]
    assert len(chain_rules(rulesets[0], chain)) == len(chain_rules(rulesets[1], chain))
    assert sum("svc_svc255" in r for r in chain_rules(rulesets[1], "frontend")) == 1
    res = nft_check(netns, rulesets[1], {large["frontend"]["interface"], large["backend"]["interface"]})
    assert res.returncode == 0, res.stderr


def test_nft_check_catches_a_missing_interface(netns):
    """The validate: step works: a ruleset bound to an absent device is refused."""
    plan = build_plan(load_model("lab"))
    ruleset = render("nftables", "dataplane.nft.j2", plan, "nftables", "dd-director1")
    res = nft_check(netns, ruleset, ["front"])  # no "back"
    assert res.returncode != 0 and "back" in res.stderr


FRONTEND_HOOK = 'type filter hook ingress device "front" priority filter; policy accept;\n'


@pytest.mark.parametrize("rule", ["ct state established,related accept", "ip daddr 198.51.100.10 notrack",
                                  "ct zone set 7", "ip daddr 198.51.100.10 dnat ip to 203.0.113.21",
                                  "flow add @ft"])
def test_stateful_rule_in_the_netdev_table_is_caught(rule):
    """The stateless check inspects the rules: one stateful rule fails it."""
    plan = build_plan(load_model("lab"))
    ruleset = render("nftables", "dataplane.nft.j2", plan, "nftables", "dd-director1")
    assert stateful_rules(ruleset) == [] and FRONTEND_HOOK in ruleset
    broken = ruleset.replace(FRONTEND_HOOK, FRONTEND_HOOK + "        %s\n" % rule, 1)
    assert stateful_rules(broken) == [rule]


def test_state_beside_ipvs_is_not_the_netdev_table():
    """ct zones and notrack of the ipvs plane live in the inet table; the
    netdev table of the nftables plane is absent there."""
    plan = build_plan(load_model("lab"))
    ruleset = render("nftables", "dataplane.nft.j2", plan, "ipvs", "dd-director1")
    assert any("notrack" in r for r in table_rules(ruleset, "inet", nft_table_name()))
    with pytest.raises(AssertionError, match="no table netdev"):
        stateful_rules(ruleset)


def ipv6_lab_plan(reply_rewrite):
    """The lab's plan with its IPv6 service (echo6) rewriting replies by ``reply_rewrite``."""
    model = load_model("lab")
    for svc in model["services"]:
        svc["reply_rewrite"] = reply_rewrite
    plan = build_plan(model)
    return plan, next(s for s in plan["services"] if s["family"] == 6)


def block(text, opening):
    """The lines of the ``opening {`` block of a keepalived config, up to its closing brace."""
    lines = text[text.index(opening + " {\n"):].splitlines()
    depth = 0
    for count, line in enumerate(lines, 1):
        depth += line.count("{") - line.count("}")
        if depth == 0:
            return lines[:count]
    raise AssertionError("unclosed block " + opening)


@pytest.mark.parametrize("reply_rewrite", ["stateless", "conntrack_zones"])
def test_ipvs_templates_ipv6(netns, tmp_path, reply_rewrite):
    """The ipvs data plane's templates for an IPv6 service: no scenario runs
    IPv6 through real IPVS (molecule/ipvs has none, the podman scenario runs
    the nftables plane), so the rendering is checked here."""
    plan, svc = ipv6_lab_plan(reply_rewrite)
    vs = render("ipvs", "virtual_servers.conf.j2", plan, "ipvs", "dd-director1")
    lines = [line.strip() for line in block(vs, "virtual_server %s %d" % (svc["vip"], svc["port"]))]
    assert "ops" in lines and "lvs_method NAT" in lines and "protocol UDP" in lines
    assert [line for line in lines if line.startswith("real_server ")] == [
        "real_server %s %d {" % (rs["address"], rs["port"]) for rs in svc["real_servers"]]
    ruleset = render("nftables", "dataplane.nft.j2", plan, "ipvs", "dd-director1")
    rules = table_rules(ruleset, "inet", nft_table_name())
    vip_port = "[%s]:%d" % (svc["vip"], svc["port"])
    assert "ip6 daddr %s udp dport %d notrack" % (svc["vip"], svc["port"]) in rules
    for rs in svc["real_servers"]:
        reply = "ip6 saddr %s udp sport %d" % (rs["address"], rs["port"])
        if reply_rewrite == "stateless":
            assert reply + " notrack" in rules
            assert any(r.startswith(reply + " ip6 daddr != { 2001:db8:113::/64 } ip6 saddr set %s udp sport set %d"
                                    % (svc["vip"], svc["port"])) for r in rules)
        else:
            assert reply + " ct zone set %d" % plan["zones"][rs["address"]] in rules
            assert any(r.startswith(reply) and r.endswith("snat ip6 to " + vip_port) for r in rules)
    res = nft_check(netns, ruleset, {plan["frontend"]["interface"], plan["backend"]["interface"]})
    assert res.returncode == 0, res.stderr + ruleset
    if shutil.which("keepalived") is None:
        pytest.skip("keepalived is not installed (apt-get install keepalived)")
    (tmp_path / "virtual_servers.conf").write_text(vs)
    res = subprocess.run(["ip", "netns", "exec", netns, "keepalived", "--config-test", "--use-file",
                          str(tmp_path / "virtual_servers.conf")], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
