# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Templates rendered from the sample inventories, then checked by the real
tools: `keepalived --config-test` and `nft --check` (in a network namespace
with the interfaces the ruleset binds to)."""

from __future__ import annotations

import os
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
    """The validate: step works: a bad keyword fails the check (FIELD-NOTES 6)."""
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
        for svc in plan["services"]:
            assert "numgen inc mod %d" % len(svc["sequence"]) in ruleset
        assert "hook ingress" in ruleset and "conntrack" not in ruleset.split("table netdev")[-1].split("{", 1)[0]
    else:
        assert "notrack" in ruleset and "hook ingress" not in ruleset
    res = nft_check(netns, ruleset, {plan["frontend"]["interface"], plan["backend"]["interface"]})
    assert res.returncode == 0, res.stderr + ruleset


def test_nft_check_catches_a_missing_interface(netns):
    """The validate: step works: a ruleset bound to an absent device is refused."""
    plan = build_plan(load_model("lab"))
    ruleset = render("nftables", "dataplane.nft.j2", plan, "nftables", "dd-director1")
    res = nft_check(netns, ruleset, ["front"])  # no "back"
    assert res.returncode != 0 and "back" in res.stderr
